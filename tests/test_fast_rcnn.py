"""Tests for coursepkg.models.fast_rcnn: the multi-task loss against a hand computation and torchvision's
fastrcnn_loss, the paper's background range, target statistics, and the detector contract
(including images without objects and proposals passed in the targets)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from coursepkg.models.detector import check_detections
from coursepkg.models.fast_rcnn import (
    FastRCNN,
    FastRCNNConfig,
    drop_easy_background,
    multi_task_loss,
    regression_target_stats,
)
from coursepkg.models.rcnn import ProposalCache
from coursepkg.models.roi_heads import sample_rois
from coursepkg.ops.box_coding import encode_boxes
from coursepkg.ops.boxes import box_iou
from coursepkg.ops.roi_pool import roi_pool


def test_config_defaults_are_the_papers():
    c = FastRCNNConfig()
    assert (c.roi_size, c.representation_size, c.batch_size_per_image, c.positive_fraction) == (
        7,
        4096,
        64,
        0.25,
    )
    assert (c.fg_iou_thresh, c.bg_iou_thresh_lo, c.box_loss_weight, c.beta, c.nms_thresh) == (
        0.5,
        0.1,
        1.0,
        1.0,
        0.3,
    )
    assert c.box_weights == pytest.approx((10.0, 10.0, 5.0, 5.0))
    course = FastRCNNConfig.for_course(3)
    assert (course.num_classes, course.roi_size, course.representation_size) == (3, 4, 256)
    with pytest.raises(ValueError, match="bg_iou_thresh_lo < fg_iou_thresh"):
        FastRCNNConfig(bg_iou_thresh_lo=0.5)
    with pytest.raises(ValueError, match="num_classes must be >= 1"):
        FastRCNNConfig(num_classes=0)
    with pytest.raises(ValueError, match="box_target_stds"):
        FastRCNNConfig(box_target_stds=(0.1, 0.1, 0.2, 0.0))
    with pytest.raises(ValueError, match="image_min_size <= image_max_size"):
        FastRCNNConfig(image_min_size=1200)


def test_image_scale_follows_the_papers_rule():
    paper = FastRCNNConfig()
    assert paper.image_scale((375, 500)) == pytest.approx(600 / 375)  # shorter side to 600
    # The longer side is capped at 1000.
    assert paper.image_scale((300, 1200)) == pytest.approx(1000 / 1200)
    assert FastRCNNConfig.for_course().image_scale((128, 128)) == 2.0


def test_features_are_computed_once_on_the_resized_image_and_pooled_in_input_pixels():
    torch.manual_seed(0)
    model = FastRCNN(
        _tiny_config(image_min_size=128, image_max_size=256), lambda image: None
    ).eval()
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        features = model(images)
        assert features.shape == (1, 16, 16, 16)  # 64 px resized to 128, then stride 8
        box = torch.tensor([[8.0, 16.0, 40.0, 48.0]])  # input pixels
        pooled = model.pool(features, [box], (64, 64))
        # spatial_scale = 2 / 8: the box covers feature cells 2..10 x 4..12, pooled into 2 x 2 bins.
        assert_close(pooled, roi_pool(features, [box * 0.25], 2, spatial_scale=1.0))


# ---------------------------------------------------------------------------------------------
# The multi-task loss


def test_multi_task_loss_equals_a_hand_computation():
    class_logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0]])
    labels = torch.tensor([0, 1, 2])
    targets = torch.tensor([[9.0, 9.0, 9.0, 9.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    box_regression = torch.zeros(3, 12)
    box_regression[0, 0:4] = 5.0  # background RoI: its deltas never count
    box_regression[1, 4:8] = torch.tensor([0.5, -2.0, 0.0, 1.0])  # class 1 of RoI 1
    box_regression[1, 8:12] = 7.0  # class 2 of RoI 1: not its class, never counts
    box_regression[2, 8:12] = torch.tensor([0.2, 0.0, 0.0, 0.0])  # class 2 of RoI 2
    # -log p_u per RoI: log(e^2 + 2) - 2, log(e + 2) - 1, log(e^3 + 2) - 3.
    ce = [math.log(math.e**2 + 2) - 2, math.log(math.e + 2) - 1, math.log(math.e**3 + 2) - 3]
    # smooth-L1 (beta = 1): 0.5*0.25 + (2 - 0.5) + 0 + 0.5*1 = 2.125 and 0.5*0.04 = 0.02.
    loss = multi_task_loss(class_logits, box_regression, labels, targets)
    assert_close(loss.classification, torch.tensor(sum(ce) / 3))
    assert_close(loss.box_regression, torch.tensor((2.125 + 0.02) / 3))
    doubled = multi_task_loss(class_logits, box_regression, labels, targets, box_loss_weight=2.0)
    assert_close(doubled.box_regression, torch.tensor(2 * (2.125 + 0.02) / 3))
    assert_close(doubled.classification, loss.classification)


@pytest.mark.parametrize("seed, num_rois, num_classes", [(0, 1, 1), (1, 16, 3), (2, 128, 20)])
def test_multi_task_loss_matches_torchvision_fastrcnn_loss(seed, num_rois, num_classes):
    roi_heads = pytest.importorskip("torchvision.models.detection.roi_heads")
    g = torch.Generator().manual_seed(seed)
    class_logits = torch.randn(num_rois, num_classes + 1, generator=g, dtype=torch.float64)
    box_regression = torch.randn(num_rois, 4 * (num_classes + 1), generator=g, dtype=torch.float64)
    labels = torch.randint(0, num_classes + 1, (num_rois,), generator=g)
    targets = torch.randn(num_rois, 4, generator=g, dtype=torch.float64)
    ours = multi_task_loss(class_logits, box_regression, labels, targets, beta=1.0 / 9)
    cls, box = roi_heads.fastrcnn_loss(class_logits, box_regression, [labels], [targets])
    assert_close(ours.classification, cls)
    assert_close(ours.box_regression, box)


def test_multi_task_loss_without_rois_is_zero_and_differentiable():
    logits = torch.zeros(0, 3, requires_grad=True)
    deltas = torch.zeros(0, 12, requires_grad=True)
    loss = multi_task_loss(logits, deltas, torch.zeros(0, dtype=torch.int64), torch.zeros(0, 4))
    assert loss.classification.item() == 0.0 and loss.box_regression.item() == 0.0
    (loss.classification + loss.box_regression).backward()
    assert logits.grad is not None and deltas.grad is not None


def test_multi_task_loss_errors():
    logits, deltas, targets = torch.zeros(2, 3), torch.zeros(2, 12), torch.zeros(2, 4)
    with pytest.raises(ValueError, match="box_loss_weight must be >= 0 and beta > 0"):
        multi_task_loss(logits, deltas, torch.tensor([0, 1]), targets, box_loss_weight=-1.0)
    with pytest.raises(ValueError, match="box_loss_weight must be >= 0 and beta > 0"):
        multi_task_loss(logits, deltas, torch.tensor([0, 1]), targets, beta=0.0)
    with pytest.raises(TypeError, match="labels must be an int64"):
        multi_task_loss(logits, deltas, torch.tensor([0.0, 1.0]), targets)
    with pytest.raises(ValueError, match="labels must be in 0..2"):
        multi_task_loss(logits, deltas, torch.tensor([0, 3]), targets)
    with pytest.raises(ValueError, match="box_regression must be \\[2, 12\\]"):
        multi_task_loss(logits, deltas[:, :8], torch.tensor([0, 1]), targets)


# ---------------------------------------------------------------------------------------------
# Sampling and target statistics


def test_drop_easy_background_keeps_iou_at_least_the_lower_bound():
    gt = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    proposals = torch.tensor(
        [
            [0.0, 0.0, 10.0, 1.0],  # IoU exactly 1 / 10 = 0.1: kept
            [0.0, 0.0, 11.0, 1.0],  # IoU 1 / 11 < 0.1: dropped
            [0.0, 0.0, 1.0, 1.0],  # the ground truth itself
            [5.0, 5.0, 6.0, 6.0],  # no overlap
        ]
    )
    assert drop_easy_background(proposals, gt, 0.1).tolist() == proposals[[0, 2]].tolist()
    assert drop_easy_background(proposals, gt, 0.0).tolist() == proposals.tolist()
    assert drop_easy_background(proposals, torch.zeros(0, 4), 0.1).shape == (0, 4)
    assert drop_easy_background(torch.zeros(0, 4), gt, 0.1).shape == (0, 4)


def test_sampled_background_lies_in_the_papers_iou_range():
    g = torch.Generator().manual_seed(0)
    gt = torch.tensor([[20.0, 20.0, 50.0, 60.0], [70.0, 10.0, 100.0, 30.0]])
    xy = torch.rand(400, 2, generator=g) * 100
    proposals = torch.cat([xy, xy + 5 + torch.rand(400, 2, generator=g) * 40], dim=1)
    kept = drop_easy_background(proposals, gt, 0.1)
    sample = sample_rois(
        kept, gt, torch.tensor([0, 1]), batch_size_per_image=64, positive_fraction=0.25, generator=g
    )
    iou = box_iou(sample.proposals, gt).amax(dim=1)
    background = sample.labels == 0
    assert sample.proposals.shape[0] == 64 and int((~background).sum()) <= 16
    assert bool((iou[background] >= 0.1).all()) and bool((iou[background] < 0.5).all())
    assert bool((iou[~background] >= 0.5).all())


def test_regression_target_stats_by_hand():
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    # Shifted by +-1 px in x: t_x = -0.1 and +0.1; the third is the ground truth itself (t = 0).
    proposals = torch.tensor(
        [
            [1.0, 0.0, 11.0, 10.0],
            [-1.0, 0.0, 9.0, 10.0],
            [0.0, 0.0, 10.0, 10.0],
            [40.0, 40.0, 50.0, 50.0],
        ]
    )
    stats = regression_target_stats([proposals, torch.zeros(0, 4)], [gt, torch.zeros(0, 4)])
    assert stats.count == 3
    assert_close(stats.means, torch.zeros(4))
    assert_close(stats.stds, torch.tensor([0.1, 0.0, 0.0, 0.0]))  # sample std of (-0.1, 0.1, 0)
    expected = encode_boxes(gt.expand(3, 4), proposals[:3])
    assert_close(stats.stds, expected.std(dim=0))
    empty = regression_target_stats([proposals], [torch.zeros(0, 4)])
    assert empty.count == 0 and empty.stds.tolist() == [1.0] * 4
    with pytest.raises(ValueError, match="one entry per image"):
        regression_target_stats([proposals], [])


# ---------------------------------------------------------------------------------------------
# The detector


def _proposals_around(gt: torch.Tensor, g: torch.Generator, count: int = 60) -> torch.Tensor:
    """Jittered copies of the ground truth plus random boxes, like a proposal method would give."""
    jitter = gt.repeat(count // max(len(gt), 1) + 1, 1)[:count] if len(gt) else torch.zeros(0, 4)
    jitter = jitter + torch.randn(jitter.shape, generator=g) * 2
    xy = torch.rand(count, 2, generator=g) * 40
    random = torch.cat([xy, xy + 4 + torch.rand(count, 2, generator=g) * 20], dim=1)
    boxes = torch.cat([jitter, random])
    x1y1 = torch.minimum(boxes[:, :2], boxes[:, 2:]).clamp(0, 63)
    x2y2 = torch.maximum(boxes[:, :2], boxes[:, 2:]).clamp(1, 64)
    return torch.cat([x1y1, torch.maximum(x2y2, x1y1 + 1)], dim=1)


def _toy_batch():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 64, 64, generator=g) * 0.2
    images[0, 0, 10:30, 12:40] = 1.0
    images[1, 1, 30:50, 20:36] = 1.0
    targets = [
        {"boxes": torch.tensor([[12.0, 10.0, 40.0, 30.0]]), "labels": torch.tensor([0])},
        {"boxes": torch.tensor([[20.0, 30.0, 36.0, 50.0]]), "labels": torch.tensor([1])},
    ]
    return images, targets, g


def _tiny_config(**changes) -> FastRCNNConfig:
    base = dict(
        num_classes=2, backbone_width=4, roi_size=2, representation_size=16, image_min_size=64
    )
    return FastRCNNConfig(**(base | changes))


def test_fast_rcnn_losses_and_detect_follow_the_contract():
    torch.manual_seed(0)
    images, targets, g = _toy_batch()
    calls = []

    def search(image):
        calls.append(1)
        return _proposals_around(targets[len(calls) - 1]["boxes"], g)

    cache = ProposalCache(search)
    model = FastRCNN(_tiny_config(), cache)
    losses = model.losses(images, targets, generator=torch.Generator().manual_seed(0))
    assert set(losses) == {"cls", "box"}
    sum(losses.values()).backward()
    assert all(
        p.grad is not None and bool(torch.isfinite(p.grad).all()) for p in model.parameters()
    )
    model.eval()
    with torch.no_grad():
        detections = model.detect(images)
    check_detections(detections, 2, num_classes=2)
    assert len(calls) == 2  # one search per image, shared by training and detection


def test_mixed_precision_losses_are_float32():
    """Under autocast (float16 on CUDA in `fit`; bfloat16 here) RoIs follow the features' dtype."""
    torch.manual_seed(0)
    images, targets, g = _toy_batch()
    proposals = [_proposals_around(t["boxes"], g) for t in targets]
    with_proposals = [t | {"proposals": p} for t, p in zip(targets, proposals, strict=True)]
    model = FastRCNN(_tiny_config(), lambda image: None)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model.losses(images, with_proposals, generator=torch.Generator().manual_seed(0))
    assert all(loss.dtype == torch.float32 and bool(torch.isfinite(loss)) for loss in losses.values())
    sum(losses.values()).backward()


def test_fast_rcnn_learns_the_toy_batch():
    torch.manual_seed(0)
    images, targets, g = _toy_batch()
    proposals = [_proposals_around(t["boxes"], g) for t in targets]
    with_proposals = [t | {"proposals": p} for t, p in zip(targets, proposals, strict=True)]

    def must_not_search(image):
        raise AssertionError("the targets carry proposals: the model must use them")

    config = _tiny_config(
        bg_iou_thresh_lo=0.0, batch_size_per_image=16, backbone_width=8, roi_size=4, representation_size=64
    )
    model = FastRCNN(config, must_not_search)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    history = []
    for _ in range(20):
        # The same sampled RoIs every step: the loss of a fixed mini-batch must fall.
        losses = model.losses(images, with_proposals, generator=torch.Generator().manual_seed(0))
        loss = losses["cls"] + losses["box"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    assert history[-1] < 0.5 * history[0]


def test_fast_rcnn_images_without_objects_and_without_proposals():
    images, _, _ = _toy_batch()
    empty = [
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)} for _ in range(2)
    ]
    model = FastRCNN(_tiny_config(), lambda image: torch.tensor([[0.0, 0.0, 20.0, 20.0]]))
    losses = model.losses(images, empty)
    assert all(bool(torch.isfinite(v)) for v in losses.values())
    sum(losses.values()).backward()
    # With bg_iou_thresh_lo = 0 the object-free images give background RoIs and a positive loss.
    model0 = FastRCNN(
        _tiny_config(bg_iou_thresh_lo=0.0), lambda image: torch.tensor([[0.0, 0.0, 20.0, 20.0]])
    )
    assert model0.losses(images, empty)["cls"].item() > 0
    no_proposals = FastRCNN(_tiny_config(), lambda image: torch.zeros(0, 4)).eval()
    with torch.no_grad():
        detections = no_proposals.detect(images)
    check_detections(detections, 2)
    assert all(d["boxes"].shape == (0, 4) for d in detections)


def test_fast_rcnn_errors():
    images, targets, _ = _toy_batch()
    with pytest.raises(TypeError, match="proposal_fn must be callable"):
        FastRCNN(_tiny_config(), proposal_fn=None)  # type: ignore[arg-type]
    model = FastRCNN(_tiny_config(), lambda image: torch.tensor([[0.0, 0.0, 20.0, 20.0]]))
    with pytest.raises(ValueError, match="images must be \\[B, 3, H, W\\]"):
        model.losses(images[0], targets)
    with pytest.raises(ValueError, match="one dict per image"):
        model.losses(images, targets[:1])
    with pytest.raises(ValueError, match="targets\\[0\\]\\['proposals'\\]"):
        model.losses(
            images, [targets[0] | {"proposals": torch.tensor([[5.0, 0.0, 1.0, 4.0]])}, targets[1]]
        )
    bad = FastRCNN(_tiny_config(), lambda image: torch.zeros(3, 5))
    with pytest.raises(ValueError, match="proposal_fn\\(image\\) must be \\[N, 4\\]"):
        bad.eval().detect(images)
