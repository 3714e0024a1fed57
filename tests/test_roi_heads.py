"""Tests for coursepkg.models.roi_heads against torchvision's RoIHeads and fastrcnn_loss."""

import pytest
import torch
from torch.testing import assert_close
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.roi_heads import fastrcnn_loss as tv_fastrcnn_loss

from coursepkg.models.roi_heads import (
    ROI_BOX_WEIGHTS,
    FastRCNNHead,
    FastRCNNOutput,
    fastrcnn_loss,
    postprocess_batch,
    postprocess_detections,
    sample_rois,
)
from coursepkg.ops.box_coding import decode_boxes
from coursepkg.ops.boxes import box_iou


def random_boxes(n, generator, size=100.0, min_side=1.0, dtype=torch.float32):
    xy = torch.rand(n, 2, generator=generator, dtype=dtype) * size
    wh = torch.rand(n, 2, generator=generator, dtype=dtype) * size / 3 + min_side
    return torch.cat([xy, xy + wh], dim=1)


def jitter(boxes, generator, amount):
    """Proposals near each box: corners moved by up to ``amount`` times the box size."""
    wh = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
    noise = (torch.rand(boxes.shape, generator=generator) * 2 - 1) * amount * wh
    out = boxes + noise
    x1, x2 = torch.minimum(out[:, 0], out[:, 2]), torch.maximum(out[:, 0], out[:, 2])
    y1, y2 = torch.minimum(out[:, 1], out[:, 3]), torch.maximum(out[:, 1], out[:, 3])
    return torch.stack([x1, y1, x2, y2], dim=1)


def torchvision_roi_heads(score_thresh=0.05, nms_thresh=0.5, detections_per_img=100, **kw):
    options = dict(
        fg_iou_thresh=0.5,
        bg_iou_thresh=0.5,
        batch_size_per_image=512,
        positive_fraction=0.25,
        bbox_reg_weights=None,
    )
    options.update(kw)
    return RoIHeads(
        None, None, None, score_thresh=score_thresh, nms_thresh=nms_thresh,
        detections_per_img=detections_per_img, **options,
    )


# --------------------------------------------------------------------------- fastrcnn_loss


@pytest.mark.parametrize("num_rois", [1, 5, 64, 512])
@pytest.mark.parametrize("num_classes", [1, 5])
def test_fastrcnn_loss_matches_torchvision(num_rois, num_classes):
    g = torch.Generator().manual_seed(num_rois * 10 + num_classes)
    logits = torch.randn(num_rois, num_classes + 1, generator=g) * 3
    deltas = torch.randn(num_rois, 4 * (num_classes + 1), generator=g)
    labels = torch.randint(0, num_classes + 1, (num_rois,), generator=g)
    targets = torch.randn(num_rois, 4, generator=g) * 0.5  # some |x| < 1/9, most above
    ours = fastrcnn_loss(logits, deltas, labels, targets)
    cls, box = tv_fastrcnn_loss(logits, deltas, [labels], [targets])
    assert_close(ours.classification, cls)
    assert_close(ours.box_regression, box)


def test_fastrcnn_loss_only_true_class_deltas_and_all_rois_normaliser():
    # Two RoIs, K = 2: RoI 0 is class 2, RoI 1 background. Only deltas[0, 8:12] may matter.
    logits = torch.zeros(2, 3)
    deltas = torch.zeros(2, 12)
    deltas[0, 8:12] = torch.tensor([1.0, 0.0, 0.0, 0.0])  # |x| = 1 > beta: 1 - beta / 2
    deltas[1] = 100.0  # background rows never count
    deltas[0, :8] = -50.0  # nor the other classes of a foreground row
    labels = torch.tensor([2, 0])
    targets = torch.zeros(2, 4)
    loss = fastrcnn_loss(logits, deltas, labels, targets, beta=0.5)
    assert_close(loss.classification, torch.log(torch.tensor(3.0)))
    assert_close(loss.box_regression, torch.tensor((1 - 0.25) / 2))  # divided by N = 2, not 1


def test_fastrcnn_loss_background_only_and_empty():
    logits = torch.randn(4, 3, requires_grad=True)
    deltas = torch.randn(4, 12, requires_grad=True)
    loss = fastrcnn_loss(logits, deltas, torch.zeros(4, dtype=torch.int64), torch.zeros(4, 4))
    assert loss.box_regression.item() == 0.0
    assert torch.isfinite(loss.classification)
    empty = fastrcnn_loss(logits[:0], deltas[:0], torch.zeros(0, dtype=torch.int64), torch.zeros(0, 4))
    assert empty.classification.item() == 0.0 and empty.box_regression.item() == 0.0
    (empty.classification + empty.box_regression).backward()  # attached to the graph
    assert logits.grad is not None


def test_fastrcnn_loss_errors():
    logits, deltas = torch.zeros(3, 3), torch.zeros(3, 12)
    labels, targets = torch.zeros(3, dtype=torch.int64), torch.zeros(3, 4)
    with pytest.raises(ValueError, match="class_logits must be"):
        fastrcnn_loss(torch.zeros(3), deltas, labels, targets)
    with pytest.raises(ValueError, match=r"box_regression must be \[3, 12\]"):
        fastrcnn_loss(logits, torch.zeros(3, 8), labels, targets)
    with pytest.raises(TypeError, match="labels must be an int64"):
        fastrcnn_loss(logits, deltas, labels.float(), targets)
    with pytest.raises(ValueError, match=r"labels must be \[3\]"):
        fastrcnn_loss(logits, deltas, labels[:2], targets)
    with pytest.raises(ValueError, match=r"regression_targets must be \[3, 4\]"):
        fastrcnn_loss(logits, deltas, labels, targets[:, :2])
    with pytest.raises(ValueError, match="labels must be in 0..2"):
        fastrcnn_loss(logits, deltas, torch.tensor([0, 3, 1]), targets)


# --------------------------------------------------------------------------- postprocess


@pytest.mark.parametrize("num_rois", [1, 30, 300])
@pytest.mark.parametrize("num_classes", [1, 4])
@pytest.mark.parametrize("detections_per_img", [100, 7])
def test_postprocess_matches_torchvision(num_rois, num_classes, detections_per_img):
    g = torch.Generator().manual_seed(num_rois + 7 * num_classes + detections_per_img)
    image_size = (90, 120)
    proposals = random_boxes(num_rois, g, size=110.0)  # some cross the border: clipping matters
    logits = torch.randn(num_rois, num_classes + 1, generator=g) * 2
    deltas = torch.randn(num_rois, 4 * (num_classes + 1), generator=g) * 2
    # A few proposals shrink to (almost) nothing: remove_small_boxes matters.
    deltas[5::11, 2::4] = -60.0
    got = postprocess_detections(
        logits, deltas, proposals, image_size, detections_per_img=detections_per_img
    )
    heads = torchvision_roi_heads(detections_per_img=detections_per_img)
    boxes, scores, labels = heads.postprocess_detections(logits, deltas, [proposals], [image_size])
    assert got["boxes"].shape[0] > 0
    assert_close(got["boxes"], boxes[0])
    assert_close(got["scores"], scores[0])
    assert torch.equal(got["labels"], labels[0] - 1)  # torchvision's labels are 1..K
    assert got["labels"].dtype == torch.int64


def test_postprocess_thresholds_and_sorting():
    proposals = torch.tensor([[10.0, 10.0, 30.0, 30.0], [11.0, 11.0, 31.0, 31.0], [60.0, 60.0, 90.0, 80.0]])
    # K = 2. Proposal 0: class 0 (index 1) at p ~ 0.97; proposal 1 overlaps it with class 0
    # slightly lower (suppressed) and class 1 (kept: other class); proposal 2: all background.
    logits = torch.tensor([[0.0, 5.0, 0.0], [0.0, 4.0, 3.0], [9.0, 0.0, 0.0]])
    deltas = torch.zeros(3, 12)
    out = postprocess_detections(logits, deltas, proposals, (100, 100))
    assert out["labels"].tolist() == [0, 1]
    assert_close(out["boxes"], proposals[[0, 1]])
    assert bool((out["scores"][:-1] >= out["scores"][1:]).all())
    strict = postprocess_detections(logits, deltas, proposals, (100, 100), score_thresh=0.99)
    assert strict["boxes"].shape == (0, 4) and strict["labels"].dtype == torch.int64
    top1 = postprocess_detections(logits, deltas, proposals, (100, 100), detections_per_img=1)
    assert top1["labels"].tolist() == [0]


def test_postprocess_batch_splits_rows_per_image_and_computes_in_float32():
    g = torch.Generator().manual_seed(0)
    proposals = [_random_boxes(n, g) for n in (3, 0, 5)]
    logits = torch.randn(8, 4, generator=g)
    deltas = torch.randn(8, 16, generator=g) * 0.1
    settings = dict(score_thresh=0.1, nms_thresh=0.5, detections_per_img=10, box_weights=ROI_BOX_WEIGHTS)
    batch = postprocess_batch(logits.half(), deltas.half(), proposals, (64, 64), **settings)
    rows = [slice(0, 3), slice(3, 3), slice(3, 8)]
    assert len(batch) == 3 and batch[1]["boxes"].shape == (0, 4)
    for out, p, r in zip(batch, proposals, rows, strict=True):
        alone = postprocess_detections(logits[r].half().float(), deltas[r].half().float(), p, (64, 64), **settings)
        assert out["boxes"].dtype == torch.float32
        for key in ("boxes", "scores", "labels"):
            assert_close(out[key], alone[key])
    with pytest.raises(ValueError, match="8 class rows and 8 box rows for 7 proposals"):
        postprocess_batch(logits, deltas, [proposals[0], proposals[2][:4]], (64, 64))


def _random_boxes(n: int, g: torch.Generator) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=g) * 40
    return torch.cat([xy, xy + 4 + torch.rand(n, 2, generator=g) * 20], dim=1)


def test_postprocess_empty_and_errors():
    out = postprocess_detections(torch.zeros(0, 3), torch.zeros(0, 12), torch.zeros(0, 4), (10, 10))
    assert out["boxes"].shape == (0, 4) and out["scores"].shape == (0,) and out["labels"].shape == (0,)
    with pytest.raises(ValueError, match=r"class_logits must be \[2, K \+ 1\]"):
        postprocess_detections(torch.zeros(3, 3), torch.zeros(2, 12), torch.zeros(2, 4), (10, 10))
    with pytest.raises(ValueError, match=r"box_regression must be \[2, 12\]"):
        postprocess_detections(torch.zeros(2, 3), torch.zeros(2, 8), torch.zeros(2, 4), (10, 10))
    with pytest.raises(TypeError, match="proposals"):
        postprocess_detections(torch.zeros(2, 3), torch.zeros(2, 12), torch.zeros(2, 4, dtype=torch.int64), (10, 10))


# --------------------------------------------------------------------------- sample_rois


@pytest.mark.parametrize("num_gt", [1, 3, 8])
def test_sample_rois_matches_torchvision_when_everything_is_kept(num_gt):
    """With a budget larger than the proposals, nothing is sampled away: compare to torchvision."""
    g = torch.Generator().manual_seed(num_gt)
    gt = random_boxes(num_gt, g)
    gt_labels = torch.randint(0, 4, (num_gt,), generator=g)
    proposals = torch.cat([jitter(gt.repeat(20, 1), g, 0.4), random_boxes(50, g)])
    ours = sample_rois(proposals, gt, gt_labels, batch_size_per_image=10_000, positive_fraction=1.0)

    heads = torchvision_roi_heads(batch_size_per_image=10_000, positive_fraction=1.0)
    tv_props, _, tv_labels, tv_targets = heads.select_training_samples(
        [proposals], [{"boxes": gt, "labels": gt_labels + 1}]
    )
    assert ours.proposals.shape[0] == proposals.shape[0] + num_gt  # ground truth appended
    # Same set of RoIs (in another order: foreground first here, index order there).
    ours_order = torch.argsort(ours.proposals @ torch.tensor([1e6, 1e3, 1.0, 1e-3]))
    tv_order = torch.argsort(tv_props[0] @ torch.tensor([1e6, 1e3, 1.0, 1e-3]))
    assert_close(ours.proposals[ours_order], tv_props[0][tv_order])
    assert torch.equal(ours.labels[ours_order], tv_labels[0][tv_order])
    fg = ours.labels[ours_order] > 0
    assert_close(ours.regression_targets[ours_order][fg], tv_targets[0][tv_order][fg])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sample_rois_budget_fraction_and_labels(seed):
    g = torch.Generator().manual_seed(seed)
    gt = random_boxes(4, g)
    gt_labels = torch.tensor([0, 1, 2, 1])
    proposals = torch.cat([jitter(gt.repeat(100, 1), g, 0.2), random_boxes(800, g)])
    out = sample_rois(proposals, gt, gt_labels, batch_size_per_image=512, positive_fraction=0.25, generator=g)
    num_fg = int((out.labels > 0).sum())
    assert out.proposals.shape[0] == 512  # enough negatives to fill the batch
    assert num_fg == 128  # 400 candidates, capped at 25 %
    assert bool((out.labels[:num_fg] > 0).all()) and bool((out.labels[num_fg:] == 0).all())
    # Every label follows the rule, checked against a brute-force max over the ground truths.
    best_iou, best_gt = box_iou(out.proposals, gt).max(dim=1)
    expected = torch.where(best_iou >= 0.5, gt_labels[best_gt] + 1, torch.zeros_like(best_gt))
    assert torch.equal(out.labels, expected)
    # Foreground targets decode back onto the matched ground truth.
    decoded = decode_boxes(out.regression_targets[:num_fg], out.proposals[:num_fg], ROI_BOX_WEIGHTS)
    assert_close(decoded, gt[out.matched_gt[:num_fg]], atol=1e-3, rtol=1e-4)


def test_sample_rois_threshold_is_inclusive():
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    # IoU exactly 0.5 (area 50 inside a 100 box) and just below.
    proposals = torch.tensor([[0.0, 0.0, 10.0, 5.0], [0.0, 0.0, 10.0, 4.99]])
    out = sample_rois(proposals, gt, torch.tensor([3]), add_gt_boxes=False, positive_fraction=1.0)
    # Foreground comes first: the 0.5 box, then the background one.
    assert_close(out.proposals, proposals)
    assert out.labels.tolist() == [4, 0]


def test_sample_rois_without_objects_and_tiny_objects():
    g = torch.Generator().manual_seed(0)
    proposals = random_boxes(30, g)
    none = sample_rois(proposals, torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64))
    assert bool((none.labels == 0).all()) and none.labels.shape[0] == 30
    assert bool(torch.isfinite(none.regression_targets).all())
    # A ground truth smaller than a pixel still yields a finite foreground target (its own copy).
    tiny = torch.tensor([[10.0, 10.0, 10.4, 10.3]])
    out = sample_rois(proposals, tiny, torch.tensor([0]))
    assert int((out.labels == 1).sum()) >= 1
    assert bool(torch.isfinite(out.regression_targets).all())


def test_sample_rois_errors():
    proposals, gt, labels = torch.zeros(2, 4), torch.tensor([[0.0, 0.0, 5.0, 5.0]]), torch.tensor([0])
    with pytest.raises(ValueError, match="gt_boxes must have positive widths and heights"):
        sample_rois(proposals, torch.tensor([[1.0, 1.0, 1.0, 5.0]]), labels)
    with pytest.raises(TypeError, match="gt_labels must be an int64 tensor"):
        sample_rois(proposals, gt, labels.int())
    with pytest.raises(ValueError, match=r"gt_labels must be \[1\]"):
        sample_rois(proposals, gt, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="proposals must be"):
        sample_rois(torch.zeros(2, 5), gt, labels)
    with pytest.raises(ValueError, match="fg_iou_thresh"):
        sample_rois(proposals, gt, labels, fg_iou_thresh=0.0)


# --------------------------------------------------------------------------- head


def test_head_shapes_and_initial_outputs():
    head = FastRCNNHead(in_channels=8, roi_size=7, representation_size=32, num_classes=3)
    with torch.no_grad():
        out = head(torch.randn(5, 8, 7, 7))
    assert isinstance(out, FastRCNNOutput)
    assert out.class_logits.shape == (5, 4) and out.box_regression.shape == (5, 16)
    # Small initialisation: nearly uniform probabilities, nearly zero deltas.
    assert float(out.class_logits.softmax(-1).sub(0.25).abs().max()) < 0.1
    assert float(out.box_regression.abs().max()) < 0.05
    with pytest.raises(ValueError, match=r"roi_features must be \[R, 8, 7, 7\]"):
        head(torch.randn(5, 8, 6, 6))
    with pytest.raises(ValueError, match="num_classes must be >= 1"):
        FastRCNNHead(8, 7, 32, 0)
