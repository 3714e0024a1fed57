"""Tests for coursepkg.ops.labels: the softmax label shift and its inverse."""

import pytest
import torch

from coursepkg.ops.labels import from_softmax_labels, one_hot_labels, to_softmax_labels


def test_softmax_label_shift_and_inverse():
    labels = torch.tensor([0, 4, 2, 0], dtype=torch.int64)
    shifted = to_softmax_labels(labels)
    torch.testing.assert_close(shifted, torch.tensor([1, 5, 3, 1]))
    torch.testing.assert_close(from_softmax_labels(shifted), labels)
    small = torch.tensor([[1, 2]], dtype=torch.int32)
    assert to_softmax_labels(small).dtype == torch.int32
    assert to_softmax_labels(small).shape == (1, 2)
    empty = torch.zeros(0, dtype=torch.int64)
    assert to_softmax_labels(empty).shape == from_softmax_labels(empty).shape == (0,)


def test_softmax_label_errors():
    with pytest.raises(ValueError, match="background"):
        from_softmax_labels(torch.tensor([1, 0]))
    with pytest.raises(ValueError, match=">= 0"):
        to_softmax_labels(torch.tensor([-1, 0]))
    for fn in (to_softmax_labels, from_softmax_labels):
        with pytest.raises(TypeError, match="integer tensor"):
            fn(torch.tensor([1.0]))
        with pytest.raises(TypeError, match="integer tensor"):
            fn(torch.tensor([True]))
        with pytest.raises(TypeError, match="torch.Tensor"):
            fn([1, 2])


@pytest.mark.parametrize("shape", [(7,), (2, 5), (0,), (3, 0)])
def test_one_hot_labels_equal_torch_one_hot_and_background_is_a_row_of_zeros(shape):
    g = torch.Generator().manual_seed(sum(shape))
    labels = torch.randint(-1, 4, shape, generator=g)
    got = one_hot_labels(labels, 4)
    expected = torch.nn.functional.one_hot(labels.clamp(min=0), 4).float()
    expected[labels < 0] = 0.0
    torch.testing.assert_close(got, expected)
    assert got.dtype == torch.float32 and got.shape == (*shape, 4)
    assert one_hot_labels(labels, 4, torch.bool).dtype == torch.bool
    torch.testing.assert_close(one_hot_labels(labels, 4, torch.float64), expected.double())


def test_one_hot_labels_refuses_what_it_cannot_encode():
    with pytest.raises(ValueError, match=r"labels must be in -1\.\.2 .* got 3"):
        one_hot_labels(torch.tensor([0, 3]), 3)
    with pytest.raises(ValueError, match="got -2"):
        one_hot_labels(torch.tensor([-2, 0]), 3)
    with pytest.raises(ValueError, match="num_classes"):
        one_hot_labels(torch.tensor([0]), 0)
    with pytest.raises(TypeError, match="integer tensor"):
        one_hot_labels(torch.tensor([0.0]), 3)
