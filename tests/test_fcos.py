"""Tests for coursepkg.models.fcos: FCOS targets, centerness, losses and detections.

The oracle is torchvision's ``FCOS``: under ``FCOSConfig.torchvision_like`` our matcher gives the
same ``matched_idxs`` element for element, and our losses, gradients and detections equal
torchvision's with copied head weights and the same backbone, up to float32 rounding (losses and
gradients compared with rtol 1e-5, atol 1e-6; boxes with atol 1e-4 px). The paper's rules (closed
level ranges, points at ``floor(s / 2) + x s``) are checked against a slow loop written here.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from coursepkg.data import ShapesDataset
from coursepkg.models.anchors import multilevel_points
from coursepkg.models.fcos import (
    FCOS,
    PAPER_SIZE_BOUNDS,
    FCOSConfig,
    centerness_targets,
    fcos_targets,
    level_size_ranges,
)

torchvision = pytest.importorskip("torchvision")
from torchvision.models.detection import FCOS as TorchvisionFCOS  # noqa: E402
from torchvision.models.detection.anchor_utils import AnchorGenerator  # noqa: E402
from torchvision.models.detection.fcos import FCOSHead as TorchvisionFCOSHead  # noqa: E402

RTOL, ATOL = 1e-5, 1e-6


def _empty():
    return {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}


def _one(points, boxes, labels=None, **kwargs):
    """fcos_targets for one image and one level of points."""
    boxes = torch.tensor(boxes, dtype=torch.float32)
    labels = torch.arange(len(boxes)) if labels is None else torch.tensor(labels)
    return fcos_targets([torch.tensor(points, dtype=torch.float32)], [8], [boxes], [labels],
                        (0.0, math.inf), **kwargs)


# ---------------------------------------------------------------------------- the notes' numbers


def test_location_23_30_at_stride_8_is_the_notes_image_point():
    points = multilevel_points([(40, 40)], [8])[0]  # offset 0.5: floor(8 / 2) + x * 8
    assert points[30 * 40 + 23].tolist() == [188.0, 244.0]


def test_regression_targets_and_the_smallest_area_rule():
    # The point (20, 20) lies in a big box and a small one; the small one wins.
    t = _one([[20.0, 20.0], [50.0, 50.0], [200.0, 10.0]],
             [[0.0, 0.0, 100.0, 100.0], [10.0, 12.0, 30.0, 26.0]], labels=[3, 1])
    assert t.matched_idxs[0].tolist() == [1, 0, -1]
    assert t.labels[0].tolist() == [1, 3, -1]
    assert t.box_targets[0, 0].tolist() == [10.0, 8.0, 10.0, 6.0]  # l*, t*, r*, b*
    assert t.box_targets[0, 1].tolist() == [50.0, 50.0, 50.0, 50.0]
    assert t.box_targets[0, 2].tolist() == [0.0, 0.0, 0.0, 0.0]  # background
    torch.testing.assert_close(t.centerness[0], torch.tensor([math.sqrt(6 / 8), 1.0, 0.0]))


def test_equal_areas_go_to_the_box_listed_first():
    t = _one([[20.0, 20.0]], [[0.0, 0.0, 40.0, 30.0], [10.0, 5.0, 40.0, 45.0]])
    assert t.matched_idxs.tolist() == [[0]]


# ----------------------------------------------------------------- inclusive and exclusive rules


def test_a_point_on_a_box_edge_is_not_inside():
    box = [[10.0, 10.0, 30.0, 30.0]]
    on_edges = [[10.0, 20.0], [30.0, 20.0], [20.0, 10.0], [20.0, 30.0], [10.0, 10.0]]
    assert _one(on_edges, box).matched_idxs.tolist() == [[-1] * 5]
    just_inside = [[10.001, 20.0], [29.999, 20.0], [20.0, 10.001], [20.0, 29.999]]
    assert _one(just_inside, box).matched_idxs.tolist() == [[0] * 4]


@pytest.mark.parametrize(("closed", "expected"), [(True, [0, 0]), (False, [-1, -1])])
def test_a_largest_distance_exactly_on_a_level_bound(closed, expected):
    # P3 point at x = 4 and P4 point at x = 8: both are 64 px from the right edge of the box.
    box = torch.tensor([[1.0, 1.0, 68.0, 6.0]]), torch.tensor([[-56.0, 1.0, 72.0, 15.0]])
    for level, (points, b) in enumerate(zip(([[4.0, 4.0]], [[8.0, 8.0]]), box, strict=True)):
        points_per_level = [torch.zeros(0, 2), torch.zeros(0, 2)]
        points_per_level[level] = torch.tensor(points)
        t = fcos_targets(points_per_level, [8, 16], [b], [torch.tensor([0])], (0.0, 64.0, 128.0),
                         closed_ranges=closed)
        assert t.box_targets.amax().item() in (64.0, 0.0)
        assert t.matched_idxs.tolist() == [[expected[level]]]


def test_centre_sampling_is_strict_and_clipped_to_the_box():
    box = [[0.0, 0.0, 100.0, 100.0]]  # centre (50, 50); r s = 1.5 * 8 = 12
    points = [[61.9, 50.0], [62.0, 50.0], [50.0, 38.0], [50.0, 38.1], [80.0, 80.0]]
    assert _one(points, box, center_sampling_radius=1.5).matched_idxs.tolist() == [[0, -1, -1, 0, -1]]
    assert _one(points, box).matched_idxs.tolist() == [[0] * 5]  # off: every point inside
    # the region is clipped to the box: a thin box keeps only points strictly inside it
    thin = [[40.0, 48.0, 60.0, 52.0]]
    assert _one([[50.0, 53.0], [50.0, 51.0]], thin, center_sampling_radius=1.5).matched_idxs.tolist() == [[-1, 0]]


def test_level_ranges_are_the_papers_and_the_notes_list_is_refused():
    assert level_size_ranges(PAPER_SIZE_BOUNDS, 5) == [
        (0, 64), (64, 128), (128, 256), (256, 512), (512, math.inf)
    ]
    with pytest.raises(ValueError, match="size_bounds must have one more value"):
        FCOSConfig(size_bounds=(0.0, 64.0, 128.0, 256.0, math.inf))  # the notes drop 512


# ------------------------------------------------------------------------------- slow reference


def _slow_targets(points_per_level, strides, boxes, bounds, radius, closed):
    """One point and one box at a time, as the paper states the rules."""
    matched = []
    for level, points in enumerate(points_per_level):
        low, high = bounds[level], bounds[level + 1]
        for x, y in points.tolist():
            best, best_area = -1, math.inf
            for g, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
                ltrb = (x - x0, y - y0, x1 - x, y1 - y)
                if min(ltrb) <= 0:
                    continue
                if radius > 0:
                    reach = radius * strides[level]
                    if abs(x - (x0 + x1) / 2) >= reach or abs(y - (y0 + y1) / 2) >= reach:
                        continue
                m = max(ltrb)
                if not (low <= m <= high if closed else low < m < high):
                    continue
                area = (x1 - x0) * (y1 - y0)
                if area < best_area:
                    best, best_area = g, area
            matched.append(best)
    return matched


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(("radius", "closed"), [(0.0, True), (1.5, True), (1.5, False)])
def test_vectorised_targets_equal_the_slow_loop(seed, radius, closed):
    g = torch.Generator().manual_seed(seed)
    strides = [8, 16, 32]
    points = multilevel_points([(16, 16), (8, 8), (4, 4)], strides)
    corner = torch.randint(0, 100, (12, 2), generator=g).float()
    size = torch.randint(4, 80, (12, 2), generator=g).float()  # integer corners: exact ties happen
    boxes = torch.cat([corner, corner + size], dim=1)
    bounds = (0.0, 16.0, 32.0, math.inf)
    t = fcos_targets(points, strides, [boxes], [torch.zeros(12, dtype=torch.int64)], bounds,
                     center_sampling_radius=radius, closed_ranges=closed)
    assert t.matched_idxs[0].tolist() == _slow_targets(points, strides, boxes, bounds, radius, closed)
    fg = t.matched_idxs[0] >= 0
    flat = torch.cat(points)
    picked = boxes[t.matched_idxs[0, fg]]
    ltrb = torch.cat([flat[fg] - picked[:, :2], picked[:, 2:] - flat[fg]], dim=1)
    torch.testing.assert_close(t.box_targets[0, fg], ltrb)
    assert bool((t.box_targets[0, fg].amin(dim=1) > 0).all())


# ------------------------------------------------------------------------------------ centerness


def test_centerness_formula():
    d = torch.tensor([[5.0, 5.0, 5.0, 5.0], [2.0, 3.0, 8.0, 1.0], [0.0, 4.0, 4.0, 4.0],
                      [0.0, 1.0, 0.0, 1.0]])
    torch.testing.assert_close(
        centerness_targets(d), torch.tensor([1.0, math.sqrt(2 / 8 * 1 / 3), 0.0, 0.0])
    )
    assert centerness_targets(torch.zeros(2, 3, 4)).shape == (2, 3)


@pytest.mark.parametrize(
    ("distances", "error", "match"),
    [
        ([[1.0, -1.0, 2.0, 2.0]], ValueError, "distances must be >= 0"),
        ([[1.0, 1.0, 2.0]], ValueError, r"distances must be \[\.\.\., 4\]"),
        ([[1.0, math.nan, 2.0, 2.0]], ValueError, "distances must be finite"),
        ([[1, 2, 3, 4]], TypeError, "distances must be"),
    ],
)
def test_centerness_refuses_bad_distances(distances, error, match):
    with pytest.raises(error, match=match):
        centerness_targets(torch.tensor(distances))


# ------------------------------------------------------------------------- torchvision's FCOS


class _Features(nn.Module):
    """Our backbone + FPN as torchvision's backbone: the same features for both detectors."""

    def __init__(self, model: FCOS) -> None:
        super().__init__()
        self.model, self.out_channels = model, model.config.fpn_channels

    def forward(self, x):
        return self.model.fpn(self.model.backbone(x))


def _copy_head(ours, theirs) -> None:
    def layers(module, kind):
        return [m for m in module.modules() if isinstance(m, kind)]

    with torch.no_grad():
        pairs = [(ours.classification.tower, theirs.classification_head.conv),
                 (ours.box_tower, theirs.regression_head.conv)]
        for src, dst in pairs:
            for kind in (nn.Conv2d, nn.GroupNorm):
                for a, b in zip(layers(src, kind), layers(dst, kind), strict=True):
                    b.weight.copy_(a.weight)
                    b.bias.copy_(a.bias) if a.bias is not None else b.bias.zero_()
        for a, b in ((ours.classification.predictor, theirs.classification_head.cls_logits),
                     (ours.box_regression, theirs.regression_head.bbox_reg),
                     (ours.centerness, theirs.regression_head.bbox_ctrness)):
            b.weight.copy_(a.weight)
            b.bias.copy_(a.bias)


def _pair(levels):
    torch.manual_seed(0)
    config = FCOSConfig.torchvision_like(levels=levels, fpn_channels=32, num_convs=2)
    ours = FCOS(config)
    with torch.no_grad():  # move the head away from its initialisation (the scales stay 1)
        for name, p in ours.head.named_parameters():
            if name != "scales":
                p.add_(0.05 * torch.randn_like(p))
    strides = config.strides
    theirs = TorchvisionFCOS(
        _Features(ours), config.num_classes, min_size=128, max_size=128,
        image_mean=[0.0, 0.0, 0.0], image_std=[1.0, 1.0, 1.0],
        anchor_generator=AnchorGenerator(tuple((s,) for s in strides), ((1.0,),) * len(strides)),
        head=TorchvisionFCOSHead(config.fpn_channels, 1, config.num_classes, num_convs=2),
        center_sampling_radius=config.center_sampling_radius, score_thresh=config.score_thresh,
        nms_thresh=config.nms_thresh,
    )
    _copy_head(ours.head, theirs.head)
    data = ShapesDataset(4, (128, 128), seed=5, max_objects=6)
    images = torch.stack([data[i][0] for i in range(4)])
    targets = [dict(data[i][1]) for i in range(4)]
    targets[2] = _empty()  # an image without objects
    return ours, theirs, images, targets


@pytest.mark.parametrize("levels", [(3, 4, 5), (3, 4, 5, 6, 7)])
def test_matcher_losses_and_gradients_equal_torchvision(levels):
    ours, theirs, images, targets = _pair(levels)
    captured = {}
    compute_loss = theirs.head.compute_loss

    def spy(targets_, head_outputs, anchors, matched_idxs):
        captured["matched_idxs"], captured["anchors"] = matched_idxs, anchors
        return compute_loss(targets_, head_outputs, anchors, matched_idxs)

    theirs.head.compute_loss = spy
    ours.train(), theirs.train()
    expected = theirs(list(images), [dict(t) for t in targets])
    sum(expected.values()).backward()
    expected_grads = {
        "cls": theirs.head.classification_head.cls_logits.weight.grad.clone(),
        "reg": theirs.head.regression_head.bbox_reg.weight.grad.clone(),
        "ctr": theirs.head.regression_head.bbox_ctrness.weight.grad.clone(),
    }
    got = ours.losses(images, targets)
    assert list(got) == list(expected)  # torchvision's names
    for name in got:
        torch.testing.assert_close(got[name], expected[name], rtol=RTOL, atol=ATOL)
    sum(got.values()).backward()
    torch.testing.assert_close(ours.head.classification.predictor.weight.grad, expected_grads["cls"],
                               rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(ours.head.box_regression.weight.grad, expected_grads["reg"],
                               rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(ours.head.centerness.weight.grad, expected_grads["ctr"],
                               rtol=RTOL, atol=ATOL)

    out = ours(images)
    assert torch.equal(torch.cat(out.points), (captured["anchors"][0][:, :2] + captured["anchors"][0][:, 2:]) / 2)
    with torch.no_grad():
        t = ours.targets(out.points, targets)
    assert torch.equal(t.matched_idxs, torch.stack(captured["matched_idxs"]))
    assert int((t.matched_idxs >= 0).sum()) > 10 and bool((t.matched_idxs[2] == -1).all())


def test_detections_equal_torchvision():
    ours, theirs, images, _ = _pair((3, 4, 5))
    ours.eval(), theirs.eval()
    with torch.no_grad():
        got, expected = ours.detect(images), theirs(list(images))
    assert sum(len(d["scores"]) for d in got) > 0
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a["scores"], b["scores"], rtol=RTOL, atol=ATOL)
        torch.testing.assert_close(a["boxes"], b["boxes"], rtol=0, atol=1e-4)
        assert torch.equal(a["labels"], b["labels"])


# ----------------------------------------------------------------- the paper's model and inputs


def _small(**changes):
    torch.manual_seed(0)
    config = FCOSConfig(levels=(3, 4, 5), size_bounds=(0.0, 16.0, 32.0, math.inf),
                        backbone_channels=(8, 16, 32), fpn_channels=32, num_convs=1, **changes)
    return FCOS(config)


def test_images_without_objects_give_finite_losses_and_gradients():
    model = _small()
    images = torch.rand(2, 3, 64, 64)
    losses = model.losses(images, [_empty(), _empty()])
    assert set(losses) == {"classification", "bbox_regression", "bbox_ctrness"}
    assert losses["bbox_regression"].item() == 0.0 and losses["classification"].item() > 0
    sum(losses.values()).backward()
    assert torch.isfinite(model.head.classification.predictor.weight.grad).all()


def test_each_level_has_a_learnable_scale():
    model = _small()
    data = ShapesDataset(2, (64, 64), seed=3, min_size=8, max_size=48)
    images = torch.stack([data[i][0] for i in range(2)])
    losses = model.losses(images, [data[i][1] for i in range(2)])
    losses["bbox_regression"].backward()
    assert model.head.scales.shape == (3,) and model.head.scales.grad.abs().sum() > 0


@pytest.mark.parametrize("changes", [{}, {"centerness": False, "box_loss": "giou",
                                          "regression": "relu_stride", "center_sampling_radius": 1.5}])
def test_training_lowers_the_loss(changes):
    model = _small(**changes)
    data = ShapesDataset(4, (64, 64), seed=7, min_size=8, max_size=48)
    images = torch.stack([data[i][0] for i in range(4)])
    targets = [data[i][1] for i in range(4)]
    assert ("bbox_ctrness" in model.losses(images, targets)) == model.config.centerness
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    totals = []
    for _ in range(20):
        loss = sum(model.losses(images, targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        totals.append(loss.item())
    assert all(math.isfinite(v) for v in totals)
    assert sum(totals[-5:]) < 0.7 * sum(totals[:5])
    model.eval()
    with torch.no_grad():
        detections = model.detect(images)
    assert len(detections) == 4


# ------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"boxes": torch.zeros(1, 4)}, TypeError, "boxes must be a list of tensors"),
        ({"labels": [torch.zeros(1, dtype=torch.int64)] * 2}, ValueError, "labels must have one tensor per image"),
        ({"boxes": [torch.tensor([[5.0, 5.0, 1.0, 9.0]])]}, ValueError, r"boxes\[0\]"),
        ({"boxes": [torch.tensor([[0.0, 0.0, math.nan, 9.0]])]}, ValueError, r"boxes\[0\]"),
        ({"labels": [torch.tensor([-2])]}, ValueError, r"labels\[0\]"),
        ({"strides": [8]}, ValueError, "strides must have one value per level"),
        ({"size_bounds": (0.0, 64.0, 32.0)}, ValueError, "size_bounds must be non-decreasing"),
        ({"size_bounds": (0.0, math.inf)}, ValueError, "size_bounds must have one more value"),
        ({"center_sampling_radius": -1.0}, ValueError, "center_sampling_radius"),
        ({"closed_ranges": 1}, TypeError, "closed_ranges must be a bool"),
        ({"points_per_level": [torch.zeros(3, 3)]}, ValueError, r"points_per_level\[0\]"),
    ],
)
def test_fcos_targets_names_the_bad_argument(kwargs, error, match):
    args = {
        "points_per_level": [torch.zeros(3, 2), torch.ones(2, 2)],
        "strides": [8, 16],
        "boxes": [torch.tensor([[0.0, 0.0, 4.0, 4.0]])],
        "labels": [torch.tensor([1])],
        "size_bounds": (0.0, 64.0, math.inf),
    }
    args.update(kwargs)
    if "points_per_level" in kwargs:
        args["strides"], args["size_bounds"] = [8], (0.0, math.inf)
    with pytest.raises(error, match=match):
        fcos_targets(**args)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"levels": (3, 4)}, "levels must be"),
        ({"regression": "linear"}, "regression must be"),
        ({"box_loss": "l1"}, "box_loss must be"),
        ({"center_sampling_radius": -0.5}, "center_sampling_radius"),
        ({"num_classes": 0}, "num_classes"),
        ({"score_thresh": 1.5}, "score_thresh"),
    ],
)
def test_config_names_the_bad_setting(changes, match):
    with pytest.raises(ValueError, match=match):
        FCOSConfig(**changes)


def test_losses_name_the_bad_target():
    model = _small()
    images = torch.rand(1, 3, 64, 64)
    with pytest.raises(ValueError, match=r"targets\[0\]\['labels'\]"):
        model.losses(images, [{"boxes": torch.tensor([[0.0, 0.0, 9.0, 9.0]]), "labels": torch.tensor([7])}])
    with pytest.raises(ValueError, match=r"targets\[0\]\['boxes'\]"):
        model.losses(images, [{"boxes": torch.tensor([[9.0, 0.0, 1.0, 9.0]]), "labels": torch.tensor([0])}])
    with pytest.raises(ValueError, match="targets must have one dict per image"):
        model.losses(images, [_empty(), _empty()])
