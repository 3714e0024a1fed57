"""Tests for coursepkg.models.assignment against torchvision's Matcher and BalancedPositiveNegativeSampler."""

import pytest
import torch
from torch.testing import assert_close
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler, Matcher
from torchvision.ops import box_iou

from coursepkg.models.assignment import match_anchors, sample_balanced


def torchvision_match(iou, high=0.7, low=0.3, allow_low_quality_matches=True):
    """torchvision's single `matches` tensor split into (matched index, label 1/0/-1)."""
    matches = Matcher(high, low, allow_low_quality_matches)(iou.clone())
    labels = torch.full_like(matches, -1)
    labels[matches >= 0] = 1
    labels[matches == Matcher.BELOW_LOW_THRESHOLD] = 0
    labels[matches == Matcher.BETWEEN_THRESHOLDS] = -1
    return matches, labels


def random_boxes(n, generator, size=200.0):
    xy = torch.rand(n, 2, generator=generator) * size
    wh = torch.rand(n, 2, generator=generator) * size / 3 + 1
    return torch.cat([xy, xy + wh], dim=1)


def check_against_torchvision(iou, **kwargs):
    ours = match_anchors(iou, **kwargs)
    matches, labels = torchvision_match(
        iou,
        kwargs.get("fg_iou_thresh", 0.7),
        kwargs.get("bg_iou_thresh", 0.3),
        kwargs.get("allow_low_quality_matches", True),
    )
    assert ours.labels.dtype == torch.int64 and ours.matched_gt.dtype == torch.int64
    assert torch.equal(ours.labels, labels)
    positive = labels == 1
    assert torch.equal(ours.matched_gt[positive], matches[positive])
    assert torch.equal(ours.matched_gt, iou.max(dim=0).indices)


@pytest.mark.parametrize("num_gt, num_anchors", [(1, 1), (1, 50), (3, 200), (10, 1000)])
@pytest.mark.parametrize("allow_low_quality_matches", [True, False])
def test_matches_torchvision_on_box_ious(num_gt, num_anchors, allow_low_quality_matches):
    g = torch.Generator().manual_seed(num_gt * 1000 + num_anchors)
    gt, anchors = random_boxes(num_gt, g), random_boxes(num_anchors, g)
    iou = box_iou(gt, anchors)
    if (iou.max(dim=1).values == 0).any():  # keep to the cases where both libraries agree
        iou[:, 0] += 0.01
    check_against_torchvision(iou, allow_low_quality_matches=allow_low_quality_matches)


@pytest.mark.parametrize("seed", range(5))
def test_matches_torchvision_with_many_ties_and_exact_thresholds(seed):
    """IoUs on a 0.1 grid: many ties per ground truth and values exactly at 0.3 and 0.7."""
    g = torch.Generator().manual_seed(seed)
    iou = (torch.randint(1, 10, (4, 60), generator=g) / 10.0).float()
    check_against_torchvision(iou)
    check_against_torchvision(iou, fg_iou_thresh=0.5, bg_iou_thresh=0.4)


def test_thresholds_are_inclusive_above_exclusive_below():
    iou = torch.tensor([[0.7, 0.69999, 0.3, 0.29999, 0.95]])
    result = match_anchors(iou, allow_low_quality_matches=False)
    assert result.labels.tolist() == [1, -1, -1, 0, 1]


def test_low_quality_matches_include_ties():
    # Ground truth 1 is covered badly: its best IoU 0.4 is reached by anchors 1 and 3 (a tie).
    iou = torch.tensor(
        [
            [0.8, 0.1, 0.0, 0.1, 0.2],
            [0.1, 0.4, 0.35, 0.4, 0.25],
        ]
    )
    result = match_anchors(iou)
    assert result.labels.tolist() == [1, 1, -1, 1, 0]
    assert result.matched_gt.tolist()[:4] == [0, 1, 1, 1]
    assert match_anchors(iou, allow_low_quality_matches=False).labels.tolist() == [1, -1, -1, -1, 0]
    check_against_torchvision(iou)


def test_low_quality_match_keeps_the_anchors_own_best_ground_truth():
    # Anchor 0 is the best anchor of ground truth 1 (0.5), but its own best ground truth is 0 (0.6).
    iou = torch.tensor([[0.6, 0.9], [0.5, 0.1]])
    result = match_anchors(iou)
    assert result.labels.tolist() == [1, 1]
    assert result.matched_gt.tolist() == [0, 0]
    check_against_torchvision(iou)


def test_ground_truth_with_zero_best_iou_makes_nothing_positive():
    """torchvision's quirk: a ground truth with IoU 0 everywhere makes every anchor positive."""
    iou = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.2, 0.75]])  # ground truth 0 is degenerate
    result = match_anchors(iou)
    assert result.labels.tolist() == [0, 0, 1]
    _, tv_labels = torchvision_match(iou)
    assert tv_labels.tolist() == [1, 1, 1]


def test_subpixel_ground_truth_still_gets_an_anchor():
    anchors = torch.tensor(
        [[0.0, 0.0, 16.0, 16.0], [8.0, 8.0, 24.0, 24.0], [100.0, 100.0, 116.0, 116.0]]
    )
    gt = torch.tensor([[10.0, 10.0, 10.5, 10.25]])  # 0.125 square pixels
    result = match_anchors(box_iou(gt, anchors))
    assert result.labels.tolist() == [1, 1, 0]  # the tie 0.125 / 256 is shared by anchors 0 and 1


def test_no_ground_truth_means_all_negative():
    result = match_anchors(torch.zeros(0, 7))
    assert result.labels.tolist() == [0] * 7
    assert result.matched_gt.tolist() == [-1] * 7


def test_no_anchors():
    result = match_anchors(torch.rand(3, 0))
    assert result.labels.shape == (0,) and result.matched_gt.shape == (0,)


@pytest.mark.parametrize(
    "call, match, error",
    [
        (
            lambda: match_anchors(torch.rand(5)),
            r"iou_matrix must be \[G, A\], got \[5\]",
            ValueError,
        ),
        (lambda: match_anchors(torch.ones(2, 2, dtype=torch.int64)), "floating", TypeError),
        (lambda: match_anchors(torch.tensor([[float("nan")]])), "NaN", ValueError),
        (
            lambda: match_anchors(torch.rand(2, 2), 0.3, 0.7),
            "bg_iou_thresh must be <= fg_iou_thresh",
            ValueError,
        ),
        (lambda: match_anchors([[0.5]]), "must be a torch.Tensor", TypeError),
        (lambda: sample_balanced(torch.zeros(2, 2)), r"labels must be \[A\]", ValueError),
        (lambda: sample_balanced(torch.tensor([0, 1, 2])), "only contain", ValueError),
        (lambda: sample_balanced(torch.tensor([0, 1]), batch_size_per_image=-1), "batch_size_per_image", ValueError),
        (
            lambda: sample_balanced(torch.tensor([0, 1]), positive_fraction=1.5),
            "positive_fraction",
            ValueError,
        ),
        (lambda: sample_balanced([0, 1]), "must be a torch.Tensor", TypeError),
    ],
)
def test_errors(call, match, error):
    with pytest.raises(error, match=match):
        call()


def make_labels(num_pos, num_neg, num_ignored, generator):
    labels = torch.tensor([1] * num_pos + [0] * num_neg + [-1] * num_ignored)
    return labels[torch.randperm(labels.numel(), generator=generator)]


@pytest.mark.parametrize(
    "num_pos, num_neg, num_ignored",
    [(0, 500, 10), (10, 500, 0), (200, 500, 30), (200, 50, 0), (0, 0, 5), (3, 2, 0), (128, 128, 0)],
)
@pytest.mark.parametrize("batch_size_per_image, fraction", [(256, 0.5), (512, 0.25), (64, 1.0), (10, 0.0)])
def test_sample_counts_match_torchvision(num_pos, num_neg, num_ignored, batch_size_per_image, fraction):
    g = torch.Generator().manual_seed(num_pos + 7 * num_neg)
    labels = make_labels(num_pos, num_neg, num_ignored, g)
    ours = sample_balanced(labels, batch_size_per_image, fraction, generator=g)
    pos_mask, neg_mask = BalancedPositiveNegativeSampler(batch_size_per_image, fraction)([labels.float()])
    assert ours.pos_idx.numel() == int(pos_mask[0].sum())
    assert ours.neg_idx.numel() == int(neg_mask[0].sum())
    # Valid, distinct, sorted subsets of the right anchors.
    assert (labels[ours.pos_idx] == 1).all() and (labels[ours.neg_idx] == 0).all()
    assert ours.pos_idx.unique().numel() == ours.pos_idx.numel()
    assert ours.neg_idx.unique().numel() == ours.neg_idx.numel()
    assert torch.equal(ours.pos_idx, ours.pos_idx.sort().values)


def test_notes_bug_product_instead_of_difference():
    """With 128 positives the notes' budget is 256 * 128 = 32,768 negatives; it must be 128."""
    g = torch.Generator().manual_seed(0)
    labels = make_labels(300, 5000, 0, g)
    sampled = sample_balanced(labels, generator=g)
    n_sample, n_pos = 256, sampled.pos_idx.numel()
    assert n_pos == 128
    assert n_sample * n_pos == 32_768  # the notes' formula keeps every one of the 5,000 negatives
    assert sampled.neg_idx.numel() == n_sample - n_pos == 128


def test_generator_makes_draws_reproducible():
    labels = make_labels(50, 400, 20, torch.Generator().manual_seed(1))
    a = sample_balanced(labels, generator=torch.Generator().manual_seed(5))
    b = sample_balanced(labels, generator=torch.Generator().manual_seed(5))
    c = sample_balanced(labels, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a.pos_idx, b.pos_idx) and torch.equal(a.neg_idx, b.neg_idx)
    assert not torch.equal(a.neg_idx, c.neg_idx)


def test_each_candidate_is_equally_likely_like_torchvision():
    """Distribution-level check: every positive is kept with probability 3/10 by both samplers."""
    labels = torch.tensor([1] * 10 + [0] * 10)
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    draws = 3000
    ours, theirs = torch.zeros(20), torch.zeros(20)
    sampler = BalancedPositiveNegativeSampler(6, 0.5)
    for _ in range(draws):
        s = sample_balanced(labels, 6, 0.5, generator=g)
        ours[s.pos_idx] += 1
        ours[s.neg_idx] += 1
        pos_mask, neg_mask = sampler([labels])
        theirs += pos_mask[0] + neg_mask[0]
    expected = torch.full((20,), 0.3)
    # Binomial(3000, 0.3): standard deviation of the frequency ~0.0084; allow 5 of them.
    assert_close(ours / draws, expected, atol=0.042, rtol=0)
    assert_close(theirs / draws, expected, atol=0.042, rtol=0)
