"""Tests for coursepkg.models.rcnn: every R-CNN step on hand-made cases with exact numbers, plus oracles
(torchvision's roi_align for the warp, scikit-learn's LinearSVC and Ridge for the SVM and the
box regressor)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from coursepkg.models.backbones import PIXEL_MEAN
from coursepkg.models.rcnn import (
    IGNORED,
    NEGATIVE,
    POSITIVE,
    RCNN,
    BoxRegressor,
    ProposalCache,
    RCNNConfig,
    RegionFeatureNet,
    apply_box_regressor,
    extract_features,
    feature_scale,
    finetune_labels,
    fit_box_regressor,
    fit_linear_svm,
    mine_hard_negatives,
    rcnn_detect,
    select_box_regression_pairs,
    svm_labels,
    svm_objective,
    train_linear_svms,
    train_region_net,
    warp_regions,
)
from coursepkg.ops.box_coding import decode_boxes


def _random_boxes(
    n: int, height: int, width: int, g: torch.Generator, dtype=torch.float64
) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=g, dtype=dtype) * torch.tensor(
        [width - 2, height - 2], dtype=dtype
    )
    wh = 1 + torch.rand(n, 2, generator=g, dtype=dtype) * (
        torch.tensor([width, height], dtype=dtype) - xy - 1
    )
    return torch.cat([xy, xy + wh], dim=1)


# ---------------------------------------------------------------------------------------------
# Config


def test_config_defaults_are_the_papers_and_course_values_are_scaled():
    paper = RCNNConfig()
    assert (paper.warp_size, paper.context_padding, paper.svm_bg_iou_thresh) == (227, 16, 0.3)
    assert (paper.bbox_reg_fg_iou_thresh, paper.bbox_reg_ridge_penalty, paper.nms_thresh) == (
        0.6,
        1000.0,
        0.3,
    )
    assert (paper.svm_c, paper.svm_pos_weight, paper.svm_bias_mult) == (1e-3, 2.0, 10.0)
    course = RCNNConfig.for_course()
    assert (course.warp_size, course.context_padding) == (32, 2)
    assert course.context_padding == round(16 * 32 / 227)
    with pytest.raises(ValueError, match="warp_size must exceed 2 \\* context_padding"):
        RCNNConfig(warp_size=32, context_padding=16)


# ---------------------------------------------------------------------------------------------
# warp_regions


def test_warp_whole_image_at_its_own_size_is_the_identity():
    image = torch.rand(3, 5, 8, generator=torch.Generator().manual_seed(0))
    out = warp_regions(image, torch.tensor([[0.0, 0.0, 8.0, 5.0]]), (5, 8))
    assert out.shape == (1, 3, 5, 8)
    assert_close(out[0], image)


def test_warp_pixel_aligned_box_copies_the_pixels():
    image = torch.rand(3, 6, 7, generator=torch.Generator().manual_seed(1))
    out = warp_regions(image, torch.tensor([[2.0, 1.0, 5.0, 4.0]]), 3)
    assert_close(out[0], image[:, 1:4, 2:5])


def test_warp_context_padding_dilates_the_box():
    # Box (2, 1, 5, 4) warped to 5 x 5 with p = 1: the box fills the central 3 x 3 output pixels, so
    # one output pixel is one input pixel and the dilated box is (1, 0, 6, 5).
    image = torch.rand(3, 6, 7, generator=torch.Generator().manual_seed(2))
    out = warp_regions(image, torch.tensor([[2.0, 1.0, 5.0, 4.0]]), 5, context_padding=1)
    assert_close(out[0], image[:, 0:5, 1:6])


def test_warp_fills_context_outside_the_image():
    image = torch.rand(3, 4, 4, generator=torch.Generator().manual_seed(3))
    # Dilated box (-1, -1, 3, 3): first output row and column lie outside the image.
    out = warp_regions(
        image, torch.tensor([[0.0, 0.0, 2.0, 2.0]]), 4, context_padding=1, fill_value=0.5
    )
    assert_close(out[0, :, 1:, 1:], image[:, 0:3, 0:3])
    assert bool((out[0, :, 0, :] == 0.5).all()) and bool((out[0, :, :, 0] == 0.5).all())


def test_warp_interpolates_bilinearly_and_clamps_at_the_border():
    # One row whose pixel j holds its centre's x coordinate j + 0.5; stretching (0, 0, 4, 1) to 8
    # columns samples at x = 0.25, 0.75, ..., 3.75: linear inside, clamped to the border pixels.
    image = (torch.arange(4.0) + 0.5).reshape(1, 1, 4).expand(3, 1, 4)
    out = warp_regions(image, torch.tensor([[0.0, 0.0, 4.0, 1.0]]), (1, 8))
    expected = torch.tensor([0.5, 0.75, 1.25, 1.75, 2.25, 2.75, 3.25, 3.5])
    assert_close(out[0, 0, 0], expected)


@pytest.mark.parametrize("seed, num, size", [(0, 1, 4), (1, 7, (6, 9)), (2, 20, 16)])
def test_warp_matches_torchvision_roi_align_inside_the_image(seed, num, size):
    torchvision = pytest.importorskip("torchvision")
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(3, 23, 31, generator=g, dtype=torch.float64)
    boxes = _random_boxes(num, 23, 31, g)
    ours = warp_regions(image, boxes, size)
    theirs = torchvision.ops.roi_align(image[None], [boxes], size, aligned=True, sampling_ratio=1)
    assert_close(ours, theirs)


def test_warp_is_anisotropic():
    # A wide, flat box becomes a square region: its columns are sampled 5x further apart than rows.
    image = torch.arange(40.0).repeat(10, 1).expand(3, 10, 40)  # value = column index
    out = warp_regions(image, torch.tensor([[0.0, 0.0, 40.0, 8.0]]), 8)
    assert out.shape == (1, 3, 8, 8)
    # Column j samples x = 5 j + 2.5, i.e. between pixels 5j + 1 and 5j + 2: value 5 j + 2.
    assert_close(out[0, 0, 0], torch.arange(8.0) * 5 + 2)


def test_warp_empty_and_zero_area_boxes_and_dtype():
    image = torch.rand(3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    empty = warp_regions(image, torch.zeros(0, 4, dtype=torch.float64), 5, context_padding=1)
    assert empty.shape == (0, 3, 5, 5) and empty.dtype == torch.float64
    point = warp_regions(image, torch.tensor([[3.5, 2.5, 3.5, 2.5]], dtype=torch.float64), 4)
    assert_close(point[0], image[:, 2:3, 3:4].expand(3, 4, 4))  # the centre of pixel (2, 3)


def test_warp_errors():
    image, boxes = torch.rand(3, 8, 8), torch.tensor([[0.0, 0.0, 4.0, 4.0]])
    with pytest.raises(ValueError, match="image must be \\[C, H, W\\]"):
        warp_regions(torch.rand(8, 8), boxes, 4)
    with pytest.raises(TypeError, match="image must be a floating-point"):
        warp_regions(torch.zeros(3, 8, 8, dtype=torch.uint8), boxes, 4)
    with pytest.raises(TypeError, match="boxes must be a floating-point"):
        warp_regions(image, boxes.long(), 4)
    with pytest.raises(ValueError, match="x2 >= x1"):
        warp_regions(image, torch.tensor([[4.0, 0.0, 2.0, 4.0]]), 4)
    with pytest.raises(ValueError, match="size must be a positive int"):
        warp_regions(image, boxes, 0)
    with pytest.raises(ValueError, match="context_padding must be"):
        warp_regions(image, boxes, 4, context_padding=2)


# ---------------------------------------------------------------------------------------------
# The feature CNN and its fine-tuning labels


def test_region_feature_net_shapes_and_errors():
    net = RegionFeatureNet(num_classes=3, input_size=16, width=4, representation_size=10).eval()
    regions = torch.rand(5, 3, 16, 16)
    features = net.extract(regions)
    assert features.pool5.shape == (5, 16 * 2 * 2) and features.fc7.shape == (5, 10)
    assert net(regions).shape == (5, 4)
    assert net(torch.rand(0, 3, 16, 16)).shape == (0, 4)
    with pytest.raises(ValueError, match="regions must be \\[R, 3, 16, 16\\]"):
        net(torch.rand(5, 3, 32, 32))
    with pytest.raises(ValueError, match="num_classes must be >= 1"):
        RegionFeatureNet(num_classes=0)
    with pytest.raises(ValueError, match="multiple of 8"):
        RegionFeatureNet(num_classes=2, input_size=20)


def test_finetune_labels_thresholds_and_shift_to_softmax_numbering():
    gt_boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0]])
    gt_labels = torch.tensor([2, 0])
    proposals = torch.tensor(
        [
            [0.0, 0.0, 10.0, 20.0],  # IoU exactly 0.5 with box 0: foreground
            [0.0, 0.0, 10.0, 21.0],  # IoU 100 / 210 < 0.5: background
            [50.0, 50.0, 60.0, 60.0],  # box 1 itself
            [30.0, 30.0, 40.0, 40.0],  # nothing
        ]
    )
    assert finetune_labels(proposals, gt_boxes, gt_labels).tolist() == [3, 0, 1, 0]
    no_gt = finetune_labels(proposals, torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64))
    assert no_gt.tolist() == [0, 0, 0, 0]
    assert finetune_labels(torch.zeros(0, 4), gt_boxes, gt_labels).shape == (0,)
    with pytest.raises(TypeError, match="gt_labels must be an int64 tensor"):
        finetune_labels(proposals, gt_boxes, gt_labels.int())
    with pytest.raises(ValueError, match="gt_labels must be \\[2\\]"):
        finetune_labels(proposals, gt_boxes, torch.tensor([0]))


def test_train_region_net_learns_a_separable_toy_problem():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    # Background regions are dark, class-1 regions red, class-2 regions green.
    regions = torch.rand(60, 3, 8, 8, generator=g) * 0.2
    labels = torch.arange(60) % 3
    regions[labels == 1, 0] += 0.8
    regions[labels == 2, 1] += 0.8
    net = RegionFeatureNet(num_classes=2, input_size=8, width=4, representation_size=16, dropout=0.0)
    history = train_region_net(
        net, regions, labels, steps=50, fg_per_batch=8, bg_per_batch=8, lr=1e-2, generator=g
    )
    assert len(history) == 50 and all(math.isfinite(v) for v in history)
    assert sum(history[-10:]) / 10 < 0.5 * sum(history[:5]) / 5
    assert not net.training
    with torch.no_grad():
        assert (net(regions).argmax(dim=1) == labels).float().mean() > 0.95


def test_train_region_net_without_foreground_and_errors():
    net = RegionFeatureNet(num_classes=2, input_size=8, width=2, representation_size=4)
    history = train_region_net(
        net, torch.rand(6, 3, 8, 8), torch.zeros(6, dtype=torch.int64), steps=2
    )
    assert len(history) == 2 and all(math.isfinite(v) for v in history)
    with pytest.raises(ValueError, match="regions is empty"):
        train_region_net(net, torch.rand(0, 3, 8, 8), torch.zeros(0, dtype=torch.int64), steps=1)
    with pytest.raises(ValueError, match="labels must be int64 in 0..2"):
        train_region_net(net, torch.rand(2, 3, 8, 8), torch.tensor([0, 3]), steps=1)
    with pytest.raises(ValueError, match="labels \\[N\\]"):
        train_region_net(net, torch.rand(2, 3, 8, 8), torch.tensor([0]), steps=1)


def test_extract_features_equals_warp_then_net_in_chunks():
    net = RegionFeatureNet(num_classes=2, input_size=8, width=2, representation_size=4).eval()
    g = torch.Generator().manual_seed(5)
    image = torch.rand(3, 20, 20, generator=g)
    boxes = _random_boxes(7, 20, 20, g, dtype=torch.float32)
    features = extract_features(net, image, boxes, context_padding=1, chunk_size=3)
    with torch.no_grad():
        expected = net.extract(
            warp_regions(image, boxes, 8, context_padding=1, fill_value=PIXEL_MEAN)
        )
    assert_close(features.fc7, expected.fc7)
    assert_close(features.pool5, expected.pool5)
    empty = extract_features(net, image, torch.zeros(0, 4), context_padding=1)
    assert empty.fc7.shape == (0, 4) and empty.pool5.shape == (0, 8)


def test_feature_scale():
    features = torch.tensor([[3.0, 4.0], [0.0, 10.0]])  # norms 5 and 10, mean 7.5
    assert feature_scale(features, 20.0) == pytest.approx(20 / 7.5)
    assert feature_scale(torch.zeros(0, 2)) == 1.0
    assert feature_scale(torch.zeros(3, 2)) == 1.0


# ---------------------------------------------------------------------------------------------
# Per-class SVMs


def test_svm_labels_positives_negatives_and_ignored():
    gt_boxes = torch.tensor([[0.0, 0.0, 3.0, 1.0], [20.0, 0.0, 30.0, 10.0]])
    gt_labels = torch.tensor([0, 1])
    proposals = torch.tensor(
        [
            [0.0, 0.0, 10.0, 1.0],  # IoU with gt 0 exactly 3 / 10 = 0.3: ignored for class 0
            [0.0, 0.0, 11.0, 1.0],  # IoU 3 / 11 < 0.3: negative for class 0
            [0.0, 0.0, 3.0, 1.0],  # identical to gt 0: a positive
            [20.0, 0.0, 30.0, 20.0],  # IoU 0.5 with gt 1: ignored for class 1, never positive
        ]
    )
    labels = svm_labels(torch.cat([gt_boxes, proposals]), gt_boxes, gt_labels, 3)
    pos, neg, ign = POSITIVE, NEGATIVE, IGNORED
    assert labels.tolist() == [
        [pos, neg, neg],  # gt 0 (class 0): a negative for class 1, whose box it does not overlap
        [neg, pos, neg],  # gt 1 (class 1)
        [ign, neg, neg],
        [neg, neg, neg],
        [pos, neg, neg],
        [neg, ign, neg],
    ]
    no_gt = svm_labels(proposals, torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), 2)
    assert bool((no_gt == NEGATIVE).all()) and no_gt.shape == (4, 2)
    with pytest.raises(ValueError, match=r"gt_labels must be in 0..0 \(dataset labels 0..K-1\)"):
        svm_labels(proposals, gt_boxes, gt_labels, 1)


def test_fit_linear_svm_hard_margin_toy_problems_exactly():
    # Two points at x = +1 and x = -1: the maximum-margin separator is w = 1, b = 0.
    svm = fit_linear_svm(
        torch.tensor([[1.0], [-1.0]], dtype=torch.float64),
        torch.tensor([1.0, -1.0]),
        c=10.0,
        tol=1e-12,
    )
    assert_close(svm.weight, torch.tensor([1.0], dtype=torch.float64), atol=1e-7, rtol=0)
    assert_close(svm.bias, torch.tensor(0.0, dtype=torch.float64), atol=1e-7, rtol=0)
    # Points at x = 2 (positive) and x = 0 (negative), bias feature 1: w = 1, b = -1 (margins +-1).
    x = torch.tensor([[2.0], [0.0]], dtype=torch.float64)
    svm = fit_linear_svm(x, torch.tensor([1.0, -1.0]), c=10.0, bias_mult=1.0, tol=1e-12)
    assert_close(svm.weight, torch.tensor([1.0], dtype=torch.float64), atol=1e-7, rtol=0)
    assert_close(svm.bias, torch.tensor(-1.0, dtype=torch.float64), atol=1e-6, rtol=0)


def test_fit_linear_svm_separates_a_separable_set():
    g = torch.Generator().manual_seed(0)
    pos = torch.randn(40, 5, generator=g) + torch.tensor([4.0, 0, 0, 0, 0])
    neg = torch.randn(60, 5, generator=g) - torch.tensor([4.0, 0, 0, 0, 0])
    x, y = torch.cat([pos, neg]), torch.cat([torch.ones(40), -torch.ones(60)])
    svm = fit_linear_svm(x, y, c=1.0, tol=1e-3, generator=g)
    margins = y * (x @ svm.weight + svm.bias)
    # Separable and C large enough: every point on or beyond its side's margin, some exactly on it.
    assert margins.min() > 1 - 1e-2
    assert margins.min() < 1 + 1e-2


@pytest.mark.parametrize(
    "seed, num, dim, c", [(0, 60, 4, 0.1), (1, 200, 16, 1e-2), (2, 300, 32, 1e-3)]
)
def test_fit_linear_svm_matches_liblinear(seed, num, dim, c):
    svm_mod = pytest.importorskip("sklearn.svm")
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(num, dim, generator=g, dtype=torch.float64)
    x = x / x.norm(dim=1, keepdim=True) * 20  # R-CNN's feature scale
    y = torch.where(x[:, 0] + 4 * torch.randn(num, generator=g, dtype=torch.float64) > 5, 1.0, -1.0)
    ours = fit_linear_svm(x, y, c=c, pos_weight=2.0, bias_mult=10.0, tol=1e-6, generator=g)
    ref = svm_mod.LinearSVC(
        C=c,
        loss="hinge",
        class_weight={1: 2.0, -1: 1.0},
        intercept_scaling=10.0,
        tol=1e-8,
        max_iter=200_000,
    ).fit(x.numpy(), y.numpy())
    assert_close(ours.weight, torch.from_numpy(ref.coef_[0]), atol=2e-4, rtol=1e-3)
    assert_close(
        ours.bias, torch.tensor(float(ref.intercept_[0]), dtype=torch.float64), atol=2e-3, rtol=1e-3
    )
    args = dict(c=c, pos_weight=2.0, bias_mult=10.0)
    # Our objective is never worse than liblinear's (both minimise the same function).
    ref_svm = type(ours)(torch.from_numpy(ref.coef_[0]), torch.tensor(float(ref.intercept_[0])))
    assert svm_objective(ours, x, y, **args) <= svm_objective(ref_svm, x, y, **args) + 1e-6


def test_fit_linear_svm_empty_and_errors():
    svm = fit_linear_svm(torch.zeros(0, 3), torch.zeros(0))
    assert svm.weight.tolist() == [0.0, 0.0, 0.0] and float(svm.bias) == 0.0
    x = torch.rand(4, 2)
    with pytest.raises(ValueError, match="targets must be \\[4\\] with values \\+1 or -1"):
        fit_linear_svm(x, torch.tensor([1.0, 0.0, 1.0, -1.0]))
    with pytest.raises(ValueError, match="targets must be \\[4\\]"):
        fit_linear_svm(x, torch.tensor([1.0, -1.0]))
    with pytest.raises(TypeError, match="features must be a floating-point"):
        fit_linear_svm(x.long(), torch.tensor([1, 1, -1, -1]))
    with pytest.raises(ValueError, match="features contains NaN"):
        fit_linear_svm(torch.tensor([[math.nan, 0.0]]), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="c, pos_weight and bias_mult must be > 0"):
        fit_linear_svm(x, torch.tensor([1.0, 1.0, -1.0, -1.0]), c=0.0)


def test_mine_hard_negatives_adds_the_highest_scoring_uncached_ones():
    scores = torch.tensor([-2.0, 0.5, -0.9, 3.0, -1.0001, -0.5, 0.5])
    cached = torch.tensor([False, False, False, True, False, False, False])
    # 3.0 is cached; -1.0001 is not strictly above the threshold; the tie 0.5 keeps input order.
    assert mine_hard_negatives(scores, cached).tolist() == [1, 6, 5, 2]
    assert mine_hard_negatives(scores, cached, max_new=2).tolist() == [1, 6]
    assert mine_hard_negatives(scores, cached, hard_thresh=0.0).tolist() == [1, 6]
    assert mine_hard_negatives(scores, cached, max_new=0).tolist() == []
    assert mine_hard_negatives(torch.zeros(0), torch.zeros(0, dtype=torch.bool)).tolist() == []
    with pytest.raises(ValueError, match="cached a bool"):
        mine_hard_negatives(scores, cached.long())
    with pytest.raises(ValueError, match="max_new must be >= 0"):
        mine_hard_negatives(scores, cached, max_new=-1)


def test_hard_negative_mining_reaches_the_svm_trained_on_every_negative():
    g = torch.Generator().manual_seed(0)
    num_pos, num_neg, dim = 20, 300, 4
    x = torch.randn(num_pos + num_neg, dim, generator=g, dtype=torch.float64)
    x[:num_pos, 0] += 4.0
    x = x / x.norm(dim=1, keepdim=True).mean() * 20
    labels = torch.full((num_pos + num_neg, 1), NEGATIVE, dtype=torch.int64)
    labels[:num_pos] = POSITIVE
    args = dict(c=1e-2, pos_weight=2.0, bias_mult=10.0)
    result = train_linear_svms(
        x, labels, initial_negatives=10, mining_rounds=20, tol=1e-4, generator=g, **args
    )
    sizes = result.cache_sizes[0]
    assert sizes[0] == 10 and len(sizes) >= 2
    targets = torch.where(labels[:, 0] == POSITIVE, 1.0, -1.0).double()
    full = fit_linear_svm(x, targets, tol=1e-4, **args)
    mined = type(full)(result.weight[0], result.bias[0])
    # Same minimiser of the same objective over all negatives, from a fraction of them.
    assert svm_objective(mined, x, targets, **args) == pytest.approx(
        svm_objective(full, x, targets, **args), rel=1e-4
    )
    assert float((mined.weight - full.weight).norm() / full.weight.norm()) < 1e-3
    assert sizes[-1] < num_neg
    assert result.objectives[0][-1] < result.objectives[0][0]


def test_train_linear_svms_one_round_per_class_and_a_class_without_positives():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(50, 3, generator=g)
    labels = torch.full((50, 2), NEGATIVE, dtype=torch.int64)
    labels[:5, 0] = POSITIVE
    labels[5:10, 0] = IGNORED
    result = train_linear_svms(x, labels, initial_negatives=7, mining_rounds=0, generator=g)
    assert result.weight.shape == (2, 3) and result.bias.shape == (2,)
    assert result.cache_sizes == [[7], [7]]
    # Class 1 has no positive: its SVM rejects every sample.
    assert bool((x @ result.weight[1] + result.bias[1] < 0).all())
    with pytest.raises(ValueError, match="labels must be int64 \\[50, K\\]"):
        train_linear_svms(x, labels[:10])
    with pytest.raises(ValueError, match="labels must hold 1"):
        train_linear_svms(x, labels + 1)


# ---------------------------------------------------------------------------------------------
# Bounding-box regression


def test_select_box_regression_pairs_is_strictly_above_the_threshold():
    gt_boxes = torch.tensor([[0.0, 0.0, 3.0, 1.0], [10.0, 0.0, 14.0, 1.0]])
    gt_labels = torch.tensor([1, 0])
    proposals = torch.tensor(
        [
            [0.0, 0.0, 5.0, 1.0],  # IoU exactly 3 / 5 = 0.6 with gt 0: left out (> 0.6 is required)
            [0.0, 0.0, 4.0, 1.0],  # IoU 0.75 with gt 0
            [10.0, 0.0, 15.0, 1.0],  # IoU 0.8 with gt 1
            [20.0, 0.0, 25.0, 1.0],  # nothing
        ]
    )
    pairs = select_box_regression_pairs(proposals, gt_boxes, gt_labels)
    assert pairs.index.tolist() == [1, 2]
    assert_close(pairs.gt_boxes, gt_boxes[[0, 1]])
    assert pairs.labels.tolist() == [1, 0]
    empty = select_box_regression_pairs(
        proposals, torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64)
    )
    assert empty.index.shape == (0,) and empty.gt_boxes.shape == (0, 4)


def test_ridge_regressor_recovers_known_deltas():
    g = torch.Generator().manual_seed(0)
    features = torch.randn(200, 6, generator=g, dtype=torch.float64)
    true_w = 0.05 * torch.randn(6, 4, generator=g, dtype=torch.float64)
    true_b = torch.tensor([0.1, -0.05, 0.2, -0.1], dtype=torch.float64)
    proposals = _random_boxes(200, 100, 100, g)
    gt_boxes = decode_boxes(features @ true_w + true_b, proposals)
    fitted = fit_box_regressor(features, proposals, gt_boxes, ridge_penalty=0.0)
    assert_close(fitted.weight, true_w)
    assert_close(fitted.bias, true_b)
    assert_close(apply_box_regressor(fitted, features, proposals), gt_boxes)


@pytest.mark.parametrize("ridge_penalty", [1.0, 1000.0])
def test_ridge_regressor_matches_sklearn_ridge(ridge_penalty):
    linear_model = pytest.importorskip("sklearn.linear_model")
    from coursepkg.ops.box_coding import encode_boxes

    g = torch.Generator().manual_seed(1)
    features = torch.randn(80, 10, generator=g, dtype=torch.float64) * 3
    proposals = _random_boxes(80, 64, 64, g)
    gt_boxes = proposals + torch.randn(80, 4, generator=g, dtype=torch.float64).clamp(-0.4, 0.4)
    fitted = fit_box_regressor(features, proposals, gt_boxes, ridge_penalty=ridge_penalty)
    targets = encode_boxes(gt_boxes, proposals)
    ref = linear_model.Ridge(alpha=ridge_penalty, fit_intercept=True).fit(features.numpy(), targets.numpy())
    assert_close(fitted.weight, torch.from_numpy(ref.coef_.T))
    assert_close(fitted.bias, torch.from_numpy(ref.intercept_))


def test_apply_box_regressor_exact_deltas_and_identity():
    proposals = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    features = torch.zeros(1, 3)
    shift = BoxRegressor(torch.zeros(3, 4), torch.tensor([0.5, 0.0, math.log(2.0), 0.0]))
    # ĝ_x = p_w d_x + p_x = 10 * 0.5 + 5 = 10, ĝ_w = 10 * 2 = 20.
    assert_close(
        apply_box_regressor(shift, features, proposals), torch.tensor([[0.0, 0.0, 20.0, 10.0]])
    )
    empty = fit_box_regressor(torch.zeros(0, 3), torch.zeros(0, 4), torch.zeros(0, 4))
    assert float(empty.weight.abs().sum() + empty.bias.abs().sum()) == 0.0
    assert_close(apply_box_regressor(empty, torch.rand(1, 3), proposals), proposals)


def test_box_regression_errors():
    f, p = torch.rand(2, 3), torch.tensor([[0.0, 0.0, 4.0, 4.0], [1.0, 1.0, 5.0, 5.0]])
    with pytest.raises(ValueError, match="same length"):
        fit_box_regressor(f, p, p[:1])
    with pytest.raises(ValueError, match="ridge_penalty must be a finite number >= 0, got -1.0"):
        fit_box_regressor(f, p, p, ridge_penalty=-1.0)
    with pytest.raises(ValueError, match="positive widths and heights"):
        fit_box_regressor(f, p, torch.tensor([[0.0, 0.0, 0.0, 4.0], [1.0, 1.0, 5.0, 5.0]]))
    with pytest.raises(ValueError, match="features must be \\[2, 3\\]"):
        apply_box_regressor(BoxRegressor(torch.zeros(3, 4), torch.zeros(4)), torch.rand(2, 5), p)


# ---------------------------------------------------------------------------------------------
# Proposals cache and the whole detector


def test_proposal_cache_calls_once_per_image_and_truncates():
    calls = []

    def fn(image):
        calls.append(1)
        return torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 3.0, 3.0]])

    cache = ProposalCache(fn, max_proposals=2)
    a, b = torch.zeros(3, 4, 4), torch.ones(3, 4, 4)
    assert cache(a).shape == (2, 4)
    assert_close(cache(a.clone()), cache(a))
    cache(b)
    assert len(calls) == 2 and len(cache) == 2
    with pytest.raises(ValueError, match="image must be a \\[3, H, W\\]"):
        cache(torch.zeros(4, 4))
    with pytest.raises(TypeError, match="proposal_fn\\(image\\) must be a floating-point"):
        ProposalCache(lambda image: torch.zeros(1, 4, dtype=torch.int64))(a)
    with pytest.raises(ValueError, match="max_proposals must be >= 0"):
        ProposalCache(fn, max_proposals=-1)


def test_proposal_cache_never_shares_between_different_images_with_equal_keys():
    """Two images whose fingerprints agree (two values swapped at positions with the same weight)
    still get their own proposals: the exact comparison decides, not the key."""
    calls = []

    def fn(image):
        calls.append(1)
        return torch.tensor([[0.0, 0.0, float(len(calls)), 1.0]])

    a = torch.rand(3, 150, 150, generator=torch.Generator().manual_seed(0))
    b = a.clone().flatten()
    b[[5, 5 + 65521]] = b[[5 + 65521, 5]]  # same sum, same weight i mod 65521 + 1
    b = b.reshape(a.shape)
    assert not torch.equal(a, b)
    assert ProposalCache.fingerprint(a) == ProposalCache.fingerprint(b)
    cache = ProposalCache(fn)
    assert cache(a)[0, 2] == 1 and cache(b)[0, 2] == 2
    assert len(calls) == 2 and len(cache) == 2
    assert cache(a)[0, 2] == 1 and cache(b)[0, 2] == 2 and len(calls) == 2


def test_proposal_cache_finds_an_image_inside_a_fresh_batch_without_numpy(monkeypatch):
    """The chapters' use: proposals computed for dataset items, then asked for by a model that sees
    the same images as rows of a new batch tensor every epoch. No host round trip through numpy."""
    calls = []

    def fn(image):
        calls.append(1)
        return torch.tensor([[0.0, 0.0, 2.0, 2.0]])

    def no_numpy(*args, **kwargs):
        raise AssertionError("ProposalCache must not go through numpy")

    items = [torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    monkeypatch.setattr(torch.Tensor, "numpy", no_numpy)
    cache = ProposalCache(fn)
    for image in items:
        cache(image)
    for _ in range(2):  # two "epochs"
        batch = torch.stack(items[::-1])  # a fresh tensor
        for image in batch:
            cache(image)
    assert len(calls) == 3 and len(cache) == 3
    items[0].mul_(0.5)  # edited in place: now a different image
    cache(items[0])
    assert len(calls) == 4


def _tiny_model(num_classes: int = 2) -> RCNN:
    torch.manual_seed(0)
    net = RegionFeatureNet(num_classes, input_size=8, width=2, representation_size=6).eval()
    g = torch.Generator().manual_seed(0)
    return RCNN(
        net=net,
        svm_weight=torch.randn(num_classes, 6, generator=g),
        svm_bias=torch.randn(num_classes, generator=g),
        regressors=[BoxRegressor(torch.zeros(8, 4), torch.zeros(4)) for _ in range(num_classes)],
        fc7_scale=2.0,
        pool5_scale=1.0,
        config=RCNNConfig(warp_size=8, context_padding=1, detections_per_img=100),
    )


def test_rcnn_detect_scores_every_proposal_and_class_then_nms():
    model = _tiny_model()
    g = torch.Generator().manual_seed(1)
    image = torch.rand(3, 24, 24, generator=g)
    far_apart = torch.tensor(
        [[0.0, 0.0, 6.0, 6.0], [12.0, 12.0, 20.0, 22.0], [2.0, 14.0, 9.0, 20.0]]
    )
    stages: dict[str, float] = {}
    out = rcnn_detect(model, image, far_apart, stage_seconds=stages)
    assert set(stages) == {"warp + CNN", "SVM", "box regression", "NMS"}
    fc7 = extract_features(model.net, image, far_apart, context_padding=1).fc7
    scores = 2.0 * fc7 @ model.svm_weight.T + model.svm_bias  # [3, 2]
    # No two proposals overlap, so NMS keeps all 3 x 2 (box, class) pairs, by decreasing score.
    assert_close(out["scores"], scores.flatten().sort(descending=True).values)
    assert out["labels"].dtype == torch.int64 and out["boxes"].shape == (6, 4)
    # Two identical proposals: per class only one survives NMS.
    twice = torch.cat([far_apart[:1], far_apart[:1]])
    assert rcnn_detect(model, image, twice)["boxes"].shape == (2, 4)
    # Only the best proposal per class goes on to NMS with pre_nms_top_n = 1.
    model.config = RCNNConfig(warp_size=8, context_padding=1, pre_nms_top_n=1)
    best = rcnn_detect(model, image, far_apart)
    assert_close(best["scores"], scores.amax(dim=0).sort(descending=True).values)
    assert_close(best["boxes"], far_apart[scores.argmax(dim=0)][best["labels"]])


def test_rcnn_detect_clips_regressed_boxes_and_handles_no_proposals():
    model = _tiny_model()
    model.regressors[0] = BoxRegressor(
        torch.zeros(8, 4), torch.tensor([0.0, 0.0, math.log(10.0), 0.0])
    )
    image = torch.rand(3, 16, 16)
    out = rcnn_detect(model, image, torch.tensor([[4.0, 4.0, 8.0, 8.0]]))
    assert float(out["boxes"][:, 0::2].min()) >= 0 and float(out["boxes"][:, 0::2].max()) <= 16
    empty = rcnn_detect(model, image, torch.zeros(0, 4))
    assert (
        empty["boxes"].shape == (0, 4)
        and empty["scores"].shape == (0,)
        and empty["labels"].shape == (0,)
    )
    with pytest.raises(ValueError, match="proposals must be \\[N, 4\\]"):
        rcnn_detect(model, image, torch.zeros(3))


def test_training_steps_on_an_image_without_objects_give_no_nan():
    net = RegionFeatureNet(2, input_size=8, width=2, representation_size=6).eval()
    image = torch.rand(3, 16, 16)
    proposals = torch.tensor([[0.0, 0.0, 8.0, 8.0], [4.0, 4.0, 12.0, 16.0]])
    no_boxes, no_labels = torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64)
    assert finetune_labels(proposals, no_boxes, no_labels).tolist() == [0, 0]
    labels = svm_labels(proposals, no_boxes, no_labels, 2)
    features = extract_features(net, image, proposals, context_padding=1)
    svms = train_linear_svms(
        features.fc7, labels, initial_negatives=10, generator=torch.Generator().manual_seed(0)
    )
    assert bool(torch.isfinite(svms.weight).all()) and bool(torch.isfinite(svms.bias).all())
    pairs = select_box_regression_pairs(proposals, no_boxes, no_labels)
    reg = fit_box_regressor(features.pool5[pairs.index], proposals[pairs.index], pairs.gt_boxes)
    assert bool(torch.isfinite(reg.weight).all())
