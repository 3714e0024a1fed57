"""Tests for coursepkg.ops.labels: the softmax label shift and its inverse."""

import pytest
import torch

from coursepkg.ops.labels import from_softmax_labels, to_softmax_labels


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
