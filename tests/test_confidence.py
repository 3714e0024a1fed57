"""Tests of coursepkg.ops.confidence and the notes' 100-anchor scenario (coursepkg.data.confidence_scenario).

The notes' numbers to three decimals; agreement with torch's binary_cross_entropy_with_logits
(values and gradients) on random and extreme logits; ignored anchors; the two normalisations;
empty inputs; bad inputs.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from coursepkg.data.confidence_scenario import NOTES_ANCHORS, notes_confidence_scenario
from coursepkg.ops.confidence import (
    binary_cross_entropy_naive,
    confidence_loss,
    normalize_by_boxes,
    objectness_from_class_probs,
)


def _logit(p: float | torch.Tensor) -> torch.Tensor:
    return torch.logit(torch.as_tensor(p, dtype=torch.float64))


def _slow_bce(p: float, y: int) -> float:
    """The notes' formula with Python floats, one anchor at a time."""
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


# --------------------------------------------------------------------------- the notes' numbers


@pytest.mark.parametrize(("p", "y", "expected"), [(0.85, 1, 0.163), (0.1, 0, 0.105)])
def test_single_anchor_numbers_of_the_notes(p, y, expected):
    naive = binary_cross_entropy_naive(torch.tensor([p], dtype=torch.float64), torch.tensor([y]))
    from_logits = confidence_loss(_logit([p]), torch.tensor([y]), reduction="none")
    assert round(float(naive), 3) == expected
    assert round(float(from_logits), 3) == expected
    torch.testing.assert_close(naive, from_logits)


def test_0105_is_minus_log_09():
    assert round(-math.log(0.9), 4) == 0.1054
    loss = binary_cross_entropy_naive(torch.tensor([0.1], dtype=torch.float64), torch.tensor([0]))
    assert float(loss) == pytest.approx(-math.log(0.9), rel=1e-12)


WORKED = {5: 0.357, 15: 0.511, 50: 0.051, 70: 0.223}


def test_scenario_worked_anchors():
    s = notes_confidence_scenario()
    objectness = objectness_from_class_probs(s.probs)
    per_anchor = confidence_loss(_logit(objectness), s.labels, reduction="none")
    for anchor, expected in WORKED.items():
        assert round(float(per_anchor[anchor - 1]), 3) == expected, anchor
        assert s.probs[anchor - 1].tolist() == list(NOTES_ANCHORS[anchor])
    assert s.from_notes.nonzero().flatten().tolist() == [4, 14, 49, 69]


def test_scenario_mean_over_the_80_participating_anchors_matches_a_slow_loop():
    s = notes_confidence_scenario()
    objectness = objectness_from_class_probs(s.probs)
    losses = [
        _slow_bce(max(row[1:]), int(label))
        for row, label in zip(s.probs.tolist(), s.labels.tolist(), strict=True)
        if label >= 0
    ]
    assert len(losses) == 80
    mean = confidence_loss(_logit(objectness), s.labels)
    assert float(mean) == pytest.approx(sum(losses) / 80, rel=1e-12)
    # Not the mean over all 100 anchors, nor over 80 with the ignored ones' losses counted.
    assert float(mean) != pytest.approx(sum(losses) / 100, rel=1e-3)


def test_scenario_ignored_anchors_do_not_matter():
    s = notes_confidence_scenario()
    probs = s.probs.clone()
    probs[80:] = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)  # wild, and exactly 1
    logits = _logit(objectness_from_class_probs(probs)).clamp(-50, 50)
    reference = confidence_loss(_logit(objectness_from_class_probs(s.probs)), s.labels)
    torch.testing.assert_close(confidence_loss(logits, s.labels), reference)


def test_scenario_rows_and_labels():
    s = notes_confidence_scenario()
    assert s.probs.shape == (100, 3) and s.probs.dtype == torch.float64
    torch.testing.assert_close(s.probs.sum(dim=1), torch.ones(100, dtype=torch.float64))
    assert float(s.probs.min()) >= 0.01 - 1e-12
    # two decimals, like the note's rows
    torch.testing.assert_close(s.probs, (s.probs * 100).round() / 100, rtol=0, atol=1e-12)
    assert s.labels.tolist() == [1] * 20 + [0] * 60 + [-1] * 20
    # positives lean to a foreground class, negatives to the background
    leans = s.probs.argmax(dim=1)
    assert bool((leans[:20] > 0).float().mean() > 0.8)
    assert bool((leans[20:80] == 0).float().mean() > 0.8)


def test_scenario_is_seeded():
    a, b = notes_confidence_scenario(3), notes_confidence_scenario(3)
    torch.testing.assert_close(a.probs, b.probs, rtol=0, atol=0)
    c = notes_confidence_scenario(4)
    assert not torch.equal(a.probs, c.probs)
    torch.testing.assert_close(a.probs[a.from_notes], c.probs[c.from_notes], rtol=0, atol=0)


# --------------------------------------------------------------------------- objectness


def test_objectness_is_the_largest_foreground_probability_not_one_minus_background():
    probs = torch.tensor([[0.1, 0.3, 0.6], [0.8, 0.02, 0.1], [0.2, 0.7, 0.1]])
    objectness = objectness_from_class_probs(probs)
    torch.testing.assert_close(objectness, torch.tensor([0.6, 0.1, 0.7]))
    one_minus_background = 1 - probs[:, 0]
    torch.testing.assert_close(one_minus_background, torch.tensor([0.9, 0.2, 0.8]))


def test_objectness_background_index_and_the_notes_first_table():
    # the note's first table: four sigmoid confidences, no background column among them
    scores = torch.tensor([[0.1, 0.4, 0.7, 0.85], [0.8, 0.02, 0.1, 0.04]])
    torch.testing.assert_close(
        objectness_from_class_probs(scores), torch.tensor([0.85, 0.1])
    )  # background at 0
    probs = torch.tensor([[0.6, 0.3, 0.1], [0.05, 0.15, 0.8]], dtype=torch.float64)
    torch.testing.assert_close(
        objectness_from_class_probs(probs, background_index=2),
        torch.tensor([0.6, 0.15], dtype=torch.float64),
    )
    assert objectness_from_class_probs(torch.zeros(0, 3)).shape == (0,)


def test_objectness_gradient_flows_to_the_winning_class_only():
    probs = torch.tensor([[0.2, 0.7, 0.1]], dtype=torch.float64, requires_grad=True)
    objectness_from_class_probs(probs).sum().backward()
    assert probs.grad.tolist() == [[0.0, 1.0, 0.0]]


# --------------------------------------------------------------------------- against torch


def _random(n: int, seed: int, scale: float = 3.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, generator=g, dtype=dtype) * scale
    labels = torch.randint(-1, 2, (n,), generator=g)
    return logits, labels


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_equals_torch_on_random_logits(seed, dtype):
    logits, labels = _random(500, seed, dtype=dtype)
    keep = labels >= 0
    expected = F.binary_cross_entropy_with_logits(
        logits[keep], labels[keep].to(dtype), reduction="none"
    )
    none = confidence_loss(logits, labels, reduction="none")
    assert none.dtype == dtype
    torch.testing.assert_close(none[keep], expected)
    assert bool((none[~keep] == 0).all())
    torch.testing.assert_close(confidence_loss(logits, labels, reduction="sum"), expected.sum())
    torch.testing.assert_close(confidence_loss(logits, labels), expected.mean())


def test_equals_torch_on_extreme_logits_and_stays_finite():
    logits = torch.tensor([-100.0, -100.0, 100.0, 100.0, -30.0, 30.0, 0.0])
    labels = torch.tensor([1, 0, 1, 0, 1, 0, 1])
    got = confidence_loss(logits, labels, reduction="none")
    expected = F.binary_cross_entropy_with_logits(logits, labels.float(), reduction="none")
    torch.testing.assert_close(got, expected)
    assert bool(torch.isfinite(got).all())
    torch.testing.assert_close(got[[0, 3]], torch.tensor([100.0, 100.0]))  # confidently wrong
    assert float(got[[1, 2]].max()) < 1e-40  # confidently right
    # the naive form of the same predictions breaks: log(0) -> inf, 0 * log(0) -> nan
    naive = binary_cross_entropy_naive(torch.sigmoid(logits), labels)
    assert naive[0].item() == math.inf and naive[3].item() == math.inf
    assert math.isnan(naive[1].item()) and math.isnan(naive[2].item())


def test_naive_equals_logits_form_away_from_zero_and_one():
    logits, labels = _random(300, 7, scale=4.0)
    labels = labels.clamp(min=0)
    torch.testing.assert_close(
        binary_cross_entropy_naive(torch.sigmoid(logits), labels),
        confidence_loss(logits, labels, reduction="none"),
    )


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_gradients_equal_torch(reduction):
    logits, labels = _random(200, 11, scale=30.0)  # many saturated logits
    logits[:4] = torch.tensor([-100.0, 100.0, -100.0, 100.0], dtype=torch.float64)
    labels[:4] = torch.tensor([1, 0, 0, 1])
    ours = logits.clone().requires_grad_(True)
    theirs = logits.clone().requires_grad_(True)
    out = confidence_loss(ours, labels, reduction=reduction)
    (out if out.dim() == 0 else out.sum()).backward()
    keep = labels >= 0
    ref = F.binary_cross_entropy_with_logits(theirs, labels.clamp(min=0).double(), reduction="none")
    ref = (ref * keep).sum() / (int(keep.sum()) if reduction == "mean" else 1)
    ref.backward()
    torch.testing.assert_close(ours.grad, theirs.grad)
    assert bool((ours.grad[~keep] == 0).all())
    assert bool(torch.isfinite(ours.grad).all())


def test_gradcheck_float64():
    logits, labels = _random(12, 5)
    logits.requires_grad_(True)
    for reduction in ("none", "sum", "mean"):
        assert torch.autograd.gradcheck(
            lambda x, r=reduction: confidence_loss(x, labels, reduction=r), (logits,)
        )


def test_gradient_is_sigmoid_minus_label_over_the_count():
    logits, labels = _random(50, 13)
    x = logits.clone().requires_grad_(True)
    confidence_loss(x, labels).backward()
    keep = labels >= 0
    expected = torch.where(keep, torch.sigmoid(logits) - labels.clamp(min=0), 0.0) / keep.sum()
    torch.testing.assert_close(x.grad, expected)


def test_any_shape_and_dtype_of_labels():
    logits, labels = _random(24, 17)
    grid = confidence_loss(logits.reshape(2, 3, 4), labels.reshape(2, 3, 4).int(), reduction="none")
    assert grid.shape == (2, 3, 4)
    torch.testing.assert_close(grid.flatten(), confidence_loss(logits, labels, reduction="none"))


# --------------------------------------------------------------------------- normalisation


def test_mean_divides_by_participating_anchors_not_all():
    logits, labels = _random(100, 19)
    total = confidence_loss(logits, labels, reduction="sum")
    num_participating = int((labels >= 0).sum())
    assert num_participating < 100
    torch.testing.assert_close(confidence_loss(logits, labels), total / num_participating)


def test_normalize_by_boxes():
    logits, labels = _random(100, 23)
    total = confidence_loss(logits, labels, reduction="sum")
    torch.testing.assert_close(normalize_by_boxes(total, 4), total / 4)
    torch.testing.assert_close(normalize_by_boxes(total, torch.tensor(4)), total / 4)
    torch.testing.assert_close(normalize_by_boxes(total, 0), total)  # max(N, 1)


def test_adding_negatives_changes_the_anchor_mean_but_not_the_per_box_gradient():
    logits, labels = _random(40, 29)
    extra = torch.full((60,), -2.0, dtype=torch.float64)  # 60 more easy negatives
    both = torch.cat([logits, extra]).requires_grad_(True)
    both_labels = torch.cat([labels, torch.zeros(60, dtype=torch.int64)])
    alone = logits.clone().requires_grad_(True)
    normalize_by_boxes(confidence_loss(alone, labels, reduction="sum"), 3).backward()
    normalize_by_boxes(confidence_loss(both, both_labels, reduction="sum"), 3).backward()
    torch.testing.assert_close(both.grad[:40], alone.grad)
    a = logits.clone().requires_grad_(True)
    b = torch.cat([logits, extra]).requires_grad_(True)
    confidence_loss(a, labels).backward()
    confidence_loss(b, both_labels).backward()
    n = int((labels >= 0).sum())
    torch.testing.assert_close(b.grad[:40], a.grad * n / (n + 60))


def test_image_without_objects_all_negatives_is_finite():
    logits = torch.tensor([-3.0, 0.5, 2.0, -0.1])
    labels = torch.zeros(4, dtype=torch.int64)
    total = confidence_loss(logits, labels, reduction="sum")
    per_box = normalize_by_boxes(total, 0)  # no objects: / max(0, 1)
    assert bool(torch.isfinite(per_box)) and float(per_box) > 0
    torch.testing.assert_close(per_box, total)
    torch.testing.assert_close(confidence_loss(logits, labels), total / 4)


@pytest.mark.parametrize(
    "labels", [torch.full((5,), -1, dtype=torch.int64), torch.zeros(0, dtype=torch.int64)]
)
def test_nothing_participates_gives_zero_not_nan(labels):
    logits = torch.linspace(-3, 3, labels.numel()).requires_grad_(True)
    for reduction in ("sum", "mean"):
        out = confidence_loss(logits, labels, reduction=reduction)
        assert out.item() == 0.0
        out.backward()
        assert bool(torch.isfinite(logits.grad).all()) and bool((logits.grad == 0).all())
        logits.grad = None
    assert F.binary_cross_entropy_with_logits(torch.zeros(0), torch.zeros(0)).isnan()  # torch's


# --------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_logits_are_refused(bad):
    logits = torch.tensor([0.0, bad, 1.0])
    with pytest.raises(ValueError, match="logits must be finite.*element 1"):
        confidence_loss(logits, torch.tensor([1, 0, -1]))


@pytest.mark.parametrize("values", [[1, 2, 0], [-2, 0, 1]])
def test_labels_outside_minus_one_zero_one_are_refused(values):
    with pytest.raises(ValueError, match="labels must be 1 .positive., 0 .negative. or -1"):
        confidence_loss(torch.zeros(3), torch.tensor(values))


def test_float_labels_and_float_logits_types():
    with pytest.raises(TypeError, match="labels must be an integer tensor"):
        confidence_loss(torch.zeros(3), torch.tensor([1.0, 0.0, 1.0]))
    with pytest.raises(TypeError, match="logits must be a floating-point tensor"):
        confidence_loss(torch.zeros(3, dtype=torch.int64), torch.tensor([1, 0, 1]))
    with pytest.raises(TypeError, match="logits must be a torch.Tensor"):
        confidence_loss([0.0, 1.0], torch.tensor([1, 0]))


def test_shape_mismatch_and_reduction():
    with pytest.raises(ValueError, match=r"labels must have the shape of logits, \[3\], got \[4\]"):
        confidence_loss(torch.zeros(3), torch.tensor([1, 0, 1, 0]))
    with pytest.raises(ValueError, match="reduction must be one of"):
        confidence_loss(torch.zeros(3), torch.tensor([1, 0, 1]), reduction="batchmean")


def test_objectness_bad_inputs():
    with pytest.raises(ValueError, match=r"probs must be \[N, C\]"):
        objectness_from_class_probs(torch.rand(3))
    with pytest.raises(ValueError, match="probs must have C >= 2"):
        objectness_from_class_probs(torch.rand(3, 1))
    with pytest.raises(ValueError, match="probs must hold probabilities in"):
        objectness_from_class_probs(torch.tensor([[0.2, 1.3, 0.1]]))
    with pytest.raises(ValueError, match="probs must be finite"):
        objectness_from_class_probs(torch.tensor([[0.2, math.nan, 0.1]]))
    with pytest.raises(ValueError, match="background_index must be an int in"):
        objectness_from_class_probs(torch.rand(2, 3), background_index=3)
    with pytest.raises(TypeError, match="background_index must be an int"):
        objectness_from_class_probs(torch.rand(2, 3), background_index=0.0)


def test_naive_bad_inputs():
    with pytest.raises(ValueError, match="p must hold probabilities"):
        binary_cross_entropy_naive(torch.tensor([1.5]), torch.tensor([1]))
    with pytest.raises(ValueError, match="y must hold labels 0 or 1"):
        binary_cross_entropy_naive(torch.tensor([0.5]), torch.tensor([-1]))
    with pytest.raises(ValueError, match="y must have the shape of p"):
        binary_cross_entropy_naive(torch.tensor([0.5]), torch.tensor([1, 0]))


def test_normalize_by_boxes_bad_inputs():
    with pytest.raises(ValueError, match="num_boxes must be an int >= 0"):
        normalize_by_boxes(torch.tensor(1.0), -1)
    with pytest.raises(TypeError, match="num_boxes must be an int"):
        normalize_by_boxes(torch.tensor(1.0), 2.0)
    with pytest.raises(ValueError, match=r"loss_sum must be \[\]"):
        normalize_by_boxes(torch.ones(3), 2)


def test_scenario_bad_inputs():
    with pytest.raises(ValueError, match="seed must be an int >= 0"):
        notes_confidence_scenario(-1)
    with pytest.raises(ValueError, match="boost must be a finite number >= 0"):
        notes_confidence_scenario(0, boost=math.inf)
