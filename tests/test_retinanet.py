"""Tests for coursepkg.models.retinanet, with torchvision's RetinaNet as the oracle.

The oracle is ``torchvision.models.detection.RetinaNet`` built around *our* backbone and FPN
(a wrapper with ``out_channels``), with its head's weights copied from ours, its
``AnchorGenerator`` set to our sizes, ratios and scales, and a transform that leaves the images
alone (mean 0, std 1, min and max size = the image size). Our model uses torchvision's anchor
convention here (``anchor_offset=0``, ``round_base_anchors=True``) and its L1 box loss
(``box_loss_beta=0``). Everything runs in float64, and every comparison holds to 1e-9 (relative)
unless stated otherwise: the only differences are the order of floating-point sums.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.detection._utils import BoxCoder, _box_loss
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from benchmarks.bench_host_sync import SyncCounter, counting
from coursepkg.data import ShapesDataset
from coursepkg.models.dense_heads import prior_bias
from coursepkg.models.retinanet import (
    BOX_LOSSES,
    RetinaNet,
    RetinaNetConfig,
    _retinanet_loss,
    retinanet_loss,
    retinanet_targets,
)
from coursepkg.ops.box_coding import decode_boxes, encode_boxes
from coursepkg.ops.boxes import box_iou
from coursepkg.ops.iou_losses import giou_loss, iou_loss, rectified_iou_loss

TOL = {"rtol": 1e-9, "atol": 1e-9}
SIZE = (128, 128)


def _config(**changes) -> RetinaNetConfig:
    base = {
        "backbone_channels": (8, 16, 16),
        "stem_channels": 8,
        "fpn_channels": 16,
        "head_convs": 4,  # torchvision's head has four convolutions per tower
        "head_norm": None,  # and no normalisation (RetinaNet v1)
        "anchor_offset": 0.0,
        "round_base_anchors": True,
        "detections_per_img": 50,
    }
    return RetinaNetConfig(**{**base, **changes})


class _Backbone(nn.Module):
    """Our backbone + FPN as torchvision's detection backbone: images -> OrderedDict, out_channels."""

    def __init__(self, model: RetinaNet) -> None:
        super().__init__()
        self.body, self.fpn = model.backbone, model.fpn
        self.out_channels = model.config.fpn_channels

    def forward(self, x):
        return OrderedDict(self.fpn(self.body(x)))


def _copy_head(ours: RetinaNet, head: RetinaNetHead) -> None:
    pairs = [
        (ours.classification_head, head.classification_head.conv, head.classification_head.cls_logits),
        (ours.regression_head, head.regression_head.conv, head.regression_head.bbox_reg),
    ]
    with torch.no_grad():
        for mine, tower, predictor in pairs:
            for block, theirs in zip(mine.tower, tower, strict=True):
                theirs[0].weight.copy_(block[0].weight)
                theirs[0].bias.copy_(block[0].bias)
            predictor.weight.copy_(mine.predictor.weight)
            predictor.bias.copy_(mine.predictor.bias)


def _pair(config: RetinaNetConfig, seed: int = 0, spread: float = 0.0):
    """Our model and torchvision's around the same backbone and FPN, in float64.

    ``spread`` > 0 adds N(0, spread) noise to every parameter so that the untrained model scores
    anchors above 0.05 and the post-processing has something to do.
    """
    torch.manual_seed(seed)
    ours = RetinaNet(config).double()
    if spread:
        with torch.no_grad():
            for p in ours.parameters():
                p.add_(torch.randn_like(p) * spread)
    c = config
    sizes = tuple(tuple(s * k for k in c.anchor_scales) for s in c.anchor_sizes)
    anchor_generator = AnchorGenerator(sizes, (tuple(c.anchor_ratios),) * len(sizes))
    head = RetinaNetHead(c.fpn_channels, c.num_anchors, c.num_classes)
    theirs = torchvision.models.detection.RetinaNet(
        _Backbone(ours), c.num_classes, anchor_generator=anchor_generator, head=head,
        score_thresh=c.score_thresh, nms_thresh=c.nms_thresh,
        detections_per_img=c.detections_per_img, fg_iou_thresh=c.fg_iou_thresh,
        bg_iou_thresh=c.bg_iou_thresh, topk_candidates=c.topk_candidates,
    ).double()
    theirs.transform = GeneralizedRCNNTransform(
        min(SIZE), max(SIZE), image_mean=[0.0, 0.0, 0.0], image_std=[1.0, 1.0, 1.0]
    )
    _copy_head(ours, theirs.head)
    return ours, theirs


def _batch(n: int = 3, seed: int = 5, empty: tuple[int, ...] = ()):
    data = ShapesDataset(n, SIZE, seed=seed)
    images = torch.stack([data[i][0] for i in range(n)]).double()
    targets = []
    for i in range(n):
        t = data[i][1]
        boxes, labels = t["boxes"].double(), t["labels"]
        if i in empty:
            boxes, labels = boxes[:0], labels[:0]
        targets.append({"boxes": boxes, "labels": labels})
    return images, targets


def _tv_matches(theirs, anchors, target):
    if target["boxes"].numel() == 0:
        return torch.full((anchors.shape[0],), -1, dtype=torch.int64)
    return theirs.proposal_matcher(box_iou(target["boxes"], anchors))


# ------------------------------------------------------------------------ torchvision equality


def test_head_outputs_and_anchors_equal_torchvision():
    ours, theirs = _pair(_config(), spread=0.05)
    images, _ = _batch()
    out = ours(images)
    features = list(theirs.backbone(images).values())
    tv = theirs.head(features)
    torch.testing.assert_close(out.cls_logits, tv["cls_logits"], **TOL)
    torch.testing.assert_close(out.box_regression, tv["bbox_regression"], **TOL)
    tv_anchors = theirs.anchor_generator(ImageList(images, [SIZE] * len(images)), features)
    assert len(tv_anchors) == len(images)
    torch.testing.assert_close(out.anchors, tv_anchors[0], rtol=0, atol=0)
    assert out.num_per_level == [f.shape[-2] * f.shape[-1] * 9 for f in features]
    assert out.num_per_level == [16 * 16 * 9, 8 * 8 * 9, 4 * 4 * 9, 2 * 2 * 9, 1 * 9]


def test_matched_targets_equal_torchvision_matcher():
    config = _config()
    ours, theirs = _pair(config)
    images, targets = _batch(n=6, seed=11, empty=(2,))
    anchors = ours(images).anchors
    total_pos = 0
    for target in targets:
        got = retinanet_targets(anchors, target["boxes"], target["labels"])
        matches = _tv_matches(theirs, anchors, target)
        expected_labels = torch.where(matches >= 0, 1, torch.where(matches == -1, 0, -1))
        torch.testing.assert_close(got.labels, expected_labels, rtol=0, atol=0)
        pos = matches >= 0
        torch.testing.assert_close(got.matched_gt[pos], matches[pos], rtol=0, atol=0)
        if target["boxes"].numel():
            torch.testing.assert_close(got.classes[pos], target["labels"][matches[pos]], rtol=0, atol=0)
            deltas = theirs.box_coder.encode_single(target["boxes"][matches[pos]], anchors[pos])
            torch.testing.assert_close(got.target_deltas[pos], deltas, **TOL)
        assert bool((got.target_deltas[~pos] == 0).all()) and bool((got.classes[~pos] == -1).all())
        total_pos += int(pos.sum())
    assert total_pos > 10  # the comparison saw positives, ignored anchors and negatives
    assert int((got.labels == -1).sum()) > 0


@pytest.mark.parametrize("empty", [(), (1,), (0, 1, 2)])
def test_losses_equal_torchvision(empty):
    ours, theirs = _pair(_config(), spread=0.02)
    images, targets = _batch(n=3, seed=21, empty=empty)
    ours.train(), theirs.train()
    got = ours.losses(images, targets)
    expected = theirs(list(images), [dict(t) for t in targets])
    assert set(got) == set(expected) == {"classification", "bbox_regression"}
    for key in got:
        torch.testing.assert_close(got[key], expected[key], **TOL)
        assert torch.isfinite(got[key])
    if len(empty) == 3:
        assert float(got["bbox_regression"].detach()) == 0.0
        assert float(got["classification"].detach()) > 0


def test_smooth_l1_option_equals_torchvision_smooth_l1():
    """box_loss_beta = 1 is torchvision's "smooth_l1" box loss (RetinaNet passes no beta: 1)."""
    config = _config(box_loss_beta=1.0)
    ours, theirs = _pair(config, spread=0.02)
    theirs.head.regression_head._loss_type = "smooth_l1"
    images, targets = _batch(seed=22)
    ours.train(), theirs.train()
    got = ours.losses(images, targets)["bbox_regression"]
    expected = theirs(list(images), [dict(t) for t in targets])["bbox_regression"]
    torch.testing.assert_close(got, expected, **TOL)


@pytest.mark.parametrize("score_thresh", [0.05, 0.3])
def test_detections_equal_torchvision(score_thresh):
    ours, theirs = _pair(_config(score_thresh=score_thresh), seed=3, spread=0.08)
    with torch.no_grad():  # scores spread around 0.2 instead of the prior's 0.01
        bias = ours.classification_head.predictor.bias
        bias.copy_(torch.randn_like(bias) - 1.5)
    _copy_head(ours, theirs.head)
    images, _ = _batch(n=2, seed=31)
    ours.eval(), theirs.eval()
    with torch.no_grad():
        got = ours.detect(images)
        expected = theirs(list(images))
    assert sum(len(d["scores"]) for d in got) > 5  # the thresholds, top-k and NMS had work to do
    for mine, tv in zip(got, expected, strict=True):
        torch.testing.assert_close(mine["scores"], tv["scores"], **TOL)
        torch.testing.assert_close(mine["boxes"], tv["boxes"], **TOL)
        torch.testing.assert_close(mine["labels"], tv["labels"], rtol=0, atol=0)


# ------------------------------------------------------------------------------- the loss


def test_loss_is_focal_sum_over_non_ignored_divided_by_positives_per_image():
    g = torch.Generator().manual_seed(0)
    b, n, k = 2, 7, 3
    logits = torch.randn(b, n, k, generator=g, dtype=torch.float64)
    deltas = torch.randn(b, n, 4, generator=g, dtype=torch.float64)
    labels = torch.tensor([[1, 0, -1, 1, 0, 0, 1], [0, 0, -1, -1, 0, 0, 0]])
    classes = torch.tensor([[2, -1, -1, 0, -1, -1, 1], [-1] * 7])
    targets = torch.randn(b, n, 4, generator=g, dtype=torch.float64) * (labels == 1)[..., None]
    per_image = retinanet_loss(logits, deltas, labels, classes, targets, reduction="none")
    for i in range(b):
        cls, box = 0.0, 0.0
        for a in range(n):
            if labels[i, a] < 0:
                continue
            for c in range(k):
                y = 1.0 if (labels[i, a] == 1 and classes[i, a] == c) else 0.0
                p = 1 / (1 + math.exp(-float(logits[i, a, c])))
                p_t = p if y else 1 - p
                cls += -(0.25 if y else 0.75) * (1 - p_t) ** 2 * math.log(p_t)
            if labels[i, a] == 1:
                box += float((deltas[i, a] - targets[i, a]).abs().sum())
        num_pos = max(int((labels[i] == 1).sum()), 1)
        assert math.isclose(float(per_image.classification[i]), cls / num_pos, rel_tol=1e-12)
        assert math.isclose(float(per_image.box_regression[i]), box / num_pos, rel_tol=1e-12, abs_tol=1e-15)
    mean = retinanet_loss(logits, deltas, labels, classes, targets)
    torch.testing.assert_close(mean.classification, per_image.classification.mean())
    assert float(per_image.box_regression[1]) == 0.0  # no positives: no box loss, not NaN


def test_prior_makes_the_initial_loss_small_on_background():
    """§3.3: with b = -log((1 - π) / π), an all-background image starts near -log(1 - π) per pair."""
    assert math.isclose(prior_bias(0.01), -4.59511985, rel_tol=1e-8)
    model = RetinaNet(RetinaNetConfig(backbone_channels=(8, 16, 16), stem_channels=8, fpn_channels=16,
                                      head_norm=None))
    images = torch.rand(2, 3, *SIZE)
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}] * 2
    with_prior = float(model.losses(images, empty)["classification"].detach())
    with torch.no_grad():
        model.classification_head.predictor.bias.zero_()
    without = float(model.losses(images, empty)["classification"].detach())
    num_pairs = model(images).cls_logits[0].numel()
    assert with_prior < 0.05 * without
    # near the prior the focal loss of a negative is (1 - α) π^γ (-log(1 - π)) per pair
    assert with_prior == pytest.approx(num_pairs * 0.75 * 0.01**2 * -math.log(0.99), rel=0.2)


# ------------------------------------------------------------- the box loss: smooth-L1 or IoU


def _box_problem(b: int = 3, n: int = 40, seed: int = 0, weights=(1.0, 1.0, 1.0, 1.0)):
    """Anchors, matched ground truths near them, labels (last image: no positive), deltas; float64."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * 60
    anchors = torch.cat([xy, xy + 8 + torch.rand(n, 2, generator=g, dtype=torch.float64) * 30], dim=1)
    matched = anchors + 4 * torch.randn(b, n, 4, generator=g, dtype=torch.float64)
    matched[..., 2:] = torch.maximum(matched[..., 2:], matched[..., :2] + 1)
    labels = torch.randint(-1, 2, (b, n), generator=g)
    labels[-1] = torch.where(labels[-1] == 1, 0, labels[-1])  # an image without positives
    classes = torch.where(labels == 1, torch.randint(0, 3, (b, n), generator=g), -1)
    target_deltas = encode_boxes(matched.reshape(-1, 4), anchors.repeat(b, 1), weights).reshape(b, n, 4)
    return {
        "cls_logits": torch.randn(b, n, 3, generator=g, dtype=torch.float64),
        "box_regression": 0.3 * torch.randn(b, n, 4, generator=g, dtype=torch.float64),
        "labels": labels,
        "classes": classes,
        "target_deltas": target_deltas * (labels == 1)[..., None],
        "anchors": anchors,
        "matched_boxes": matched,
    }


def _box_term(p: dict, box_loss: str, **kwargs) -> torch.Tensor:
    """The per-image box term [B] of retinanet_loss, differentiable in p["box_regression"]."""
    return retinanet_loss(
        p["cls_logits"], p["box_regression"], p["labels"], p["classes"], p["target_deltas"],
        box_loss=box_loss, anchors=p["anchors"], matched_boxes=p["matched_boxes"],
        reduction="none", **kwargs,
    ).box_regression


@pytest.mark.parametrize(("box_loss", "tv_type", "beta"), [
    ("giou", "giou", None), ("smooth_l1", "l1", 0.0), ("smooth_l1", "smooth_l1", 0.5),
])  # fmt: skip
@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
def test_box_loss_equals_torchvision_box_loss_in_values_and_gradients(box_loss, tv_type, beta, weights):
    """torchvision's ``_box_loss`` per image over its positives (decoded with the same BoxCoder
    weights for GIoU), divided by N_pos: values and gradients with respect to the deltas."""
    p = _box_problem(weights=weights)
    deltas = p["box_regression"].requires_grad_()
    got = _box_term(p, box_loss, beta=beta or 0.0, box_weights=weights)
    (got_grad,) = torch.autograd.grad(got.sum(), deltas)
    coder = BoxCoder(weights)
    expected = []
    for i in range(len(deltas)):
        pos = p["labels"][i] == 1
        loss = _box_loss(tv_type, coder, p["anchors"][pos], p["matched_boxes"][i][pos], deltas[i][pos],
                         cnf=None if beta is None else {"beta": beta})
        expected.append(loss / max(1, int(pos.sum())))
    expected = torch.stack(expected)
    (expected_grad,) = torch.autograd.grad(expected.sum(), deltas)
    torch.testing.assert_close(got, expected, **TOL)
    torch.testing.assert_close(got_grad, expected_grad, **TOL)
    assert float(got[-1].detach()) == 0.0 and float(got[0].detach()) > 0.1  # no positives: 0; positives: a real loss


def test_iou_losses_equal_torchvision_retinanet_with_bbox_reg_type_giou():
    """The whole model: our RetinaNet with box_loss="giou" against torchvision's "giou" head."""
    ours, theirs = _pair(_config(box_loss="giou"), spread=0.02)
    theirs.head.regression_head._loss_type = "giou"
    images, targets = _batch(seed=23, empty=(1,))
    ours.train(), theirs.train()
    got = ours.losses(images, targets)["bbox_regression"]
    expected = theirs(list(images), [dict(t) for t in targets])["bbox_regression"]
    torch.testing.assert_close(got, expected, **TOL)
    (got_grad,) = torch.autograd.grad(got, ours.regression_head.predictor.weight)
    (tv_grad,) = torch.autograd.grad(expected, theirs.head.regression_head.bbox_reg.weight)
    torch.testing.assert_close(got_grad, tv_grad, **TOL)
    assert float(got_grad.abs().max()) > 0


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
def test_iou_and_rectified_box_losses_are_the_ops_applied_to_the_decoded_positives(weights):
    p = _box_problem(weights=weights)
    for box_loss, op in (("iou", iou_loss), ("rectified", rectified_iou_loss)):
        deltas = p["box_regression"].detach().requires_grad_()
        p["box_regression"] = deltas
        got = _box_term(p, box_loss, box_weights=weights)
        (got_grad,) = torch.autograd.grad(got.sum(), deltas)
        expected = []
        for i in range(len(deltas)):
            pos = p["labels"][i] == 1
            boxes = decode_boxes(deltas[i][pos], p["anchors"][pos], weights)
            expected.append(op(boxes, p["matched_boxes"][i][pos], reduction="sum") / max(1, int(pos.sum())))
        expected = torch.stack(expected)
        (expected_grad,) = torch.autograd.grad(expected.sum(), deltas)
        torch.testing.assert_close(got, expected, **TOL)
        torch.testing.assert_close(got_grad, expected_grad, **TOL)
    # 1 - IoU by torchvision's box_iou too (ours adds eps = 1e-7 to the union: ~1e-9 apart)
    pos = p["labels"][0] == 1
    boxes = BoxCoder(weights).decode_single(p["box_regression"][0][pos].detach(), p["anchors"][pos])
    tv = (1 - box_iou(boxes, p["matched_boxes"][0][pos]).diagonal()).sum() / int(pos.sum())
    torch.testing.assert_close(_box_term(p, "iou", box_weights=weights)[0].detach(), tv, rtol=1e-6, atol=0)


@pytest.mark.parametrize("box_loss", ["iou", "giou", "rectified"])
def test_iou_box_losses_compare_decoded_boxes_not_deltas(box_loss):
    """Deltas that decode exactly onto the ground truths cost 0; zero deltas cost the anchors' loss.

    A loss that skipped the decoding (deltas read as boxes, or the anchors compared unchanged)
    fails one of the two.
    """
    weights = (10.0, 10.0, 5.0, 5.0)
    p = _box_problem(weights=weights)
    p["box_regression"] = p["target_deltas"].clone()  # the encoded ground truths of the positives
    perfect = _box_term(p, box_loss, box_weights=weights)
    torch.testing.assert_close(perfect, torch.zeros_like(perfect), rtol=0, atol=1e-6)
    p["box_regression"] = torch.zeros_like(p["target_deltas"])  # the boxes are the anchors
    op = {"iou": iou_loss, "giou": giou_loss, "rectified": rectified_iou_loss}[box_loss]
    pos = p["labels"][0] == 1
    expected = op(p["anchors"][pos], p["matched_boxes"][0][pos], reduction="mean")
    got = _box_term(p, box_loss, box_weights=weights)
    torch.testing.assert_close(got[0], expected, **TOL)
    assert float(got[0]) > 0.05


@pytest.mark.parametrize("box_loss", BOX_LOSSES)
def test_every_box_loss_is_finite_without_positives_and_trains_the_model(box_loss):
    torch.manual_seed(0)
    model = RetinaNet(_config(box_loss=box_loss, anchor_offset=0.5, round_base_anchors=False))
    images, targets = _batch(n=2, seed=24, empty=(0, 1))
    losses = model.losses(images.float(), [{k: v.float() if k == "boxes" else v for k, v in t.items()}
                                           for t in targets])
    assert float(losses["bbox_regression"].detach()) == 0.0 and torch.isfinite(losses["classification"])
    sum(losses.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    images, targets = _batch(n=2, seed=24)
    model.zero_grad()
    losses = model.losses(images.float(), [{k: v.float() if k == "boxes" else v for k, v in t.items()}
                                           for t in targets])
    losses["bbox_regression"].backward()
    grad = model.regression_head.predictor.weight.grad
    assert float(losses["bbox_regression"].detach()) > 0 and torch.isfinite(grad).all() and grad.abs().max() > 0


def _loss_syncs(box_loss: str) -> int:
    p = _box_problem()
    counter = SyncCounter()
    with counting(counter):
        _retinanet_loss(p["cls_logits"], p["box_regression"], p["labels"], p["classes"], p["target_deltas"],
                        alpha=0.25, gamma=2.0, beta=0.0, reduction="mean", box_loss=box_loss,
                        anchors=p["anchors"], matched_boxes=p["matched_boxes"], box_weights=(1.0,) * 4)
    return sum(counter.events.values())


@pytest.mark.parametrize("box_loss", ["iou", "giou", "rectified"])
def test_the_iou_box_losses_add_no_host_synchronisation(box_loss):
    """The IoU losses decode every anchor instead of selecting the positives (a boolean selection
    would read the mask on the host): the training step's loss syncs no more than with smooth-L1."""
    assert _loss_syncs(box_loss) == _loss_syncs("smooth_l1")


def test_smooth_l1_stays_the_default_box_loss():
    assert RetinaNetConfig().box_loss == "smooth_l1" and RetinaNetConfig().box_loss_beta == 0.0
    p = _box_problem()
    default = retinanet_loss(p["cls_logits"], p["box_regression"], p["labels"], p["classes"],
                             p["target_deltas"], reduction="none").box_regression
    torch.testing.assert_close(default, _box_term(p, "smooth_l1"), rtol=0, atol=0)
    assert not torch.allclose(default, _box_term(p, "giou"))


def test_iou_box_loss_refuses_missing_or_bad_boxes_by_name():
    p = _box_problem()
    args = (p["cls_logits"], p["box_regression"], p["labels"], p["classes"], p["target_deltas"])
    with pytest.raises(ValueError, match="box_loss must be one of 'smooth_l1', 'iou', 'giou', 'rectified', got 'l2'"):
        retinanet_loss(*args, box_loss="l2")
    with pytest.raises(ValueError, match="box_loss='giou' compares boxes: pass anchors and matched_boxes"):
        retinanet_loss(*args, box_loss="giou", anchors=p["anchors"])
    with pytest.raises(ValueError, match=r"anchors must be \[40, 4\]"):
        retinanet_loss(*args, box_loss="iou", anchors=p["anchors"][:5], matched_boxes=p["matched_boxes"])
    flipped = p["matched_boxes"].clone()
    flipped[p["labels"] == 1] = flipped[p["labels"] == 1][:, [2, 3, 0, 1]]
    with pytest.raises(ValueError, match="matched_boxes"):
        retinanet_loss(*args, box_loss="rectified", anchors=p["anchors"], matched_boxes=flipped)


# ------------------------------------------------------------------------------ bad inputs


def test_bad_inputs_are_refused_by_name():
    model = RetinaNet(_config(anchor_offset=0.5, round_base_anchors=False))
    images, targets = _batch(n=2)
    images = images.float()
    targets = [{"boxes": t["boxes"].float(), "labels": t["labels"]} for t in targets]
    nan_images = images.clone()
    nan_images[1, 0, 3, 4] = float("nan")
    with pytest.raises(ValueError, match="images must be finite"):
        model.losses(nan_images, targets)
    with pytest.raises(ValueError, match="images must be finite"):
        model.detect(nan_images)
    bad = [dict(t) for t in targets]
    bad[1] = {"boxes": torch.tensor([[10.0, 10.0, 5.0, 20.0]]), "labels": torch.tensor([0])}
    with pytest.raises(ValueError, match=r"targets\[1\]\['boxes'\].*x2 >= x1"):
        model.losses(images, bad)
    bad[1] = {"boxes": torch.tensor([[10.0, 10.0, 10.0, 20.0]]), "labels": torch.tensor([0])}
    with pytest.raises(ValueError, match=r"targets\[1\]\['boxes'\] must have positive widths"):
        model.losses(images, bad)
    bad[1] = {"boxes": torch.tensor([[1.0, 1.0, 9.0, 9.0]]), "labels": torch.tensor([5])}
    with pytest.raises(ValueError, match=r"targets\[1\]\['labels'\] must be in 0..4"):
        model.losses(images, bad)
    with pytest.raises(ValueError, match=r"images must be \[B, 3, H, W\]"):
        model.detect(images[:, :1])
    with pytest.raises(ValueError, match="targets must have one dict per image"):
        model.losses(images, targets[:1])


def test_loss_refuses_bad_logits_labels_and_shapes():
    logits, deltas = torch.zeros(1, 4, 2), torch.zeros(1, 4, 4)
    labels, classes = torch.tensor([[1, 0, -1, 0]]), torch.tensor([[1, -1, -1, -1]])
    bad = logits.clone()
    bad[0, 2, 1] = float("inf")
    with pytest.raises(ValueError, match="cls_logits must be finite"):
        retinanet_loss(bad, deltas, labels, classes, deltas)
    with pytest.raises(ValueError, match="box_regression must be finite"):
        retinanet_loss(logits, deltas.clone().fill_(float("nan")), labels, classes, deltas)
    with pytest.raises(ValueError, match="labels must only contain"):
        retinanet_loss(logits, deltas, labels + 1, classes, deltas)
    with pytest.raises(ValueError, match=r"classes of positive anchors must be in 0..1"):
        retinanet_loss(logits, deltas, labels, torch.tensor([[2, -1, -1, -1]]), deltas)
    with pytest.raises(ValueError, match=r"box_regression must be \[1, 4, 4\]"):
        retinanet_loss(logits, deltas[:, :3], labels, classes, deltas)
    with pytest.raises(ValueError, match="reduction must be one of"):
        retinanet_loss(logits, deltas, labels, classes, deltas, reduction="avg")


@pytest.mark.parametrize(("changes", "message"), [
    ({"bg_iou_thresh": 0.6}, "bg_iou_thresh must be <= fg_iou_thresh"),
    ({"fg_iou_thresh": 1.5}, "fg_iou_thresh must be a finite number in"),
    ({"anchor_sizes": (16.0, 32.0)}, "anchor_sizes must have one size per level"),
    ({"prior": 0.0}, "prior must be a finite number in"),
    ({"num_classes": 0}, "num_classes must be an int >= 1"),
    ({"focal_gamma": -1.0}, "focal_gamma must be a finite number >= 0"),
    ({"box_weights": (1.0, 1.0, 0.0, 1.0)}, r"box_weights\[2\]"),
    ({"box_loss": "diou"}, "box_loss must be one of 'smooth_l1', 'iou', 'giou', 'rectified', got 'diou'"),
    ({"box_loss": None}, "box_loss must be one of"),
])
def test_config_refuses_bad_settings_by_name(changes, message):
    with pytest.raises(ValueError, match=message):
        RetinaNetConfig(**changes)


def test_targets_refuse_bad_inputs_by_name():
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    with pytest.raises(ValueError, match="gt_boxes must have positive widths"):
        retinanet_targets(anchors, torch.tensor([[1.0, 1.0, 1.0, 5.0]]), torch.tensor([0]))
    with pytest.raises(ValueError, match=r"gt_labels must be \[1\]"):
        retinanet_targets(anchors, torch.tensor([[1.0, 1.0, 4.0, 5.0]]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="anchors must be finite"):
        retinanet_targets(anchors * float("nan"), anchors, torch.tensor([0]))


# --------------------------------------------------------------------------------- training


def test_a_few_training_steps_lower_the_loss_and_detect_keeps_the_contract():
    torch.manual_seed(0)
    config = RetinaNetConfig(backbone_channels=(16, 32, 32), stem_channels=8, fpn_channels=32)
    model = RetinaNet(config)
    images, targets = _batch(n=4, seed=41)
    images = images.float()
    targets = [{"boxes": t["boxes"].float(), "labels": t["labels"]} for t in targets]
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    totals = []
    for _ in range(12):
        loss = sum(model.losses(images, targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        totals.append(float(loss))
    assert all(math.isfinite(t) for t in totals)
    assert sum(totals[-3:]) / 3 < 0.7 * sum(totals[:3]) / 3
    model.eval()
    with torch.no_grad():
        detections = model.detect(images)
    from coursepkg.models.detector import check_detections

    check_detections(detections, len(images), num_classes=config.num_classes)
