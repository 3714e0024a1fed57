"""Tests for coursepkg.models.dense_decoding: equal to torchvision's RetinaNet.postprocess_detections."""

import math

import pytest
import torch
from torch import nn
from torch.testing import assert_close
from torchvision.models.detection.retinanet import RetinaNet

from coursepkg.models.anchors import multilevel_anchors, multilevel_points
from coursepkg.models.dense_decoding import decode_dense_detections
from coursepkg.models.fpn import fpn_level_sizes
from coursepkg.ops.box_coding import distances_to_boxes

STRIDES = (8, 16, 32, 64, 128)


class _Features(nn.Module):
    """The smallest backbone torchvision's RetinaNet accepts; postprocess_detections never runs it."""

    out_channels = 8

    def forward(self, x):
        return x


def torchvision_detections(logits, deltas, anchors, image_sizes, **settings):
    model = RetinaNet(_Features(), num_classes=logits[0].shape[-1], **settings)
    outputs = {"cls_logits": logits, "bbox_regression": deltas}
    return model.postprocess_detections(outputs, [anchors] * len(image_sizes), image_sizes)


def random_outputs(seed, batch, image_size, num_classes, logit_mean=-3.0, logit_std=2.0):
    generator = torch.Generator().manual_seed(seed)
    sizes = fpn_level_sizes(image_size)
    anchors = multilevel_anchors(sizes, STRIDES)
    logits = [
        torch.randn(batch, len(a), num_classes, generator=generator) * logit_std + logit_mean
        for a in anchors
    ]
    deltas = [torch.randn(batch, len(a), 4, generator=generator) * 0.3 for a in anchors]
    return logits, deltas, anchors


def canonical(detections):
    """Decreasing score, equal scores ordered by label then box: the two orders of ties differ."""
    order = torch.arange(len(detections["scores"]))
    keys = [detections["boxes"][:, i] for i in (3, 2, 1, 0)] + [detections["labels"]]
    for key in keys:
        order = order[torch.sort(key[order], stable=True).indices]
    order = order[torch.sort(detections["scores"][order], descending=True, stable=True).indices]
    return {name: value[order] for name, value in detections.items()}


def assert_same_detections(ours, theirs):
    assert len(ours) == len(theirs)
    for o, t in zip(ours, theirs, strict=True):
        assert o["boxes"].shape == t["boxes"].shape
        assert (o["scores"][1:] <= o["scores"][:-1]).all()
        o, t = canonical(o), canonical(t)
        assert_close(o["scores"], t["scores"], rtol=0, atol=1e-5)
        assert_close(o["boxes"], t["boxes"], rtol=0, atol=1e-5)
        assert torch.equal(o["labels"], t["labels"])
        assert o["labels"].dtype == torch.int64


@pytest.mark.parametrize(
    "seed, batch, image_size, num_classes, settings",
    [
        (0, 2, (128, 128), 5, {}),
        (1, 3, (100, 130), 3, {"topk_candidates": 50}),  # sides not divisible by 32
        (2, 1, (96, 64), 1, {"nms_thresh": 0.3, "detections_per_img": 20}),  # K = 1
        (3, 2, (160, 96), 20, {"score_thresh": 0.2, "topk_candidates": 300}),
    ],
)
def test_equals_torchvision(seed, batch, image_size, num_classes, settings):
    logits, deltas, anchors = random_outputs(seed, batch, image_size, num_classes)
    settings = {"detections_per_img": 100, **settings}  # torchvision's RetinaNet defaults to 300
    image_sizes = [image_size] * batch
    if batch > 1:  # images of one padded batch can have smaller true sizes
        image_sizes[-1] = (image_size[0] - 17, image_size[1] - 9)
    theirs = torchvision_detections(logits, deltas, anchors, image_sizes, **settings)
    ours = decode_dense_detections(
        [x.sigmoid() for x in logits], deltas, anchors, image_sizes, **settings
    )
    assert_same_detections(ours, theirs)
    assert any(len(o["boxes"]) > 0 for o in ours)


def test_topk_path_and_keep_all_path_agree():
    """With many pairs above the threshold, the top-k path; with few, no sort: both torchvision's."""
    for logit_mean in (1.0, -6.0):
        logits, deltas, anchors = random_outputs(5, 2, (128, 192), 4, logit_mean=logit_mean)
        theirs = torchvision_detections(
            logits, deltas, anchors, [(128, 192)] * 2, detections_per_img=100
        )
        ours = decode_dense_detections([x.sigmoid() for x in logits], deltas, anchors, (128, 192))
        assert_same_detections(ours, theirs)


def test_no_detections_above_threshold():
    logits, deltas, anchors = random_outputs(0, 2, (64, 64), 3, logit_mean=-20.0, logit_std=0.1)
    out = decode_dense_detections([x.sigmoid() for x in logits], deltas, anchors, (64, 64))
    assert len(out) == 2
    for detections in out:
        assert detections["boxes"].shape == (0, 4)
        assert detections["scores"].shape == (0,) and detections["labels"].shape == (0,)


def test_one_image_empty_the_other_not():
    logits, deltas, anchors = random_outputs(1, 2, (64, 64), 3)
    logits = [torch.stack((x[0], torch.full_like(x[1], -30.0))) for x in logits]
    out = decode_dense_detections([x.sigmoid() for x in logits], deltas, anchors, (64, 64))
    assert len(out[0]["boxes"]) > 0 and out[1]["boxes"].shape == (0, 4)


def test_boxes_clipped_scores_sorted_and_capped():
    logits, deltas, anchors = random_outputs(4, 2, (128, 128), 6, logit_mean=0.0)
    deltas = [d * 5 for d in deltas]  # wild boxes, many crossing the border
    out = decode_dense_detections(
        [x.sigmoid() for x in logits],
        deltas,
        anchors,
        [(128, 128), (90, 70)],
        detections_per_img=37,
    )
    for detections, (height, width) in zip(out, [(128, 128), (90, 70)], strict=True):
        boxes, scores = detections["boxes"], detections["scores"]
        assert len(boxes) == 37
        assert boxes.min() >= 0
        assert (boxes[:, 0::2] <= width).all() and (boxes[:, 1::2] <= height).all()
        assert (scores[1:] <= scores[:-1]).all()


def test_point_distances_decode_fcos_boxes():
    """FCOS: boxes are points minus / plus the distances, then the same NMS path."""
    image_size = (64, 96)
    sizes = fpn_level_sizes(image_size, STRIDES[:3])
    points = multilevel_points(sizes, STRIDES[:3])
    generator = torch.Generator().manual_seed(0)
    scores = [torch.rand(1, len(p), 2, generator=generator) * 0.3 for p in points]
    distances = [torch.rand(1, len(p), 4, generator=generator) * 20 for p in points]
    out = decode_dense_detections(
        scores,
        distances,
        points,
        image_size,
        decode="point_distances",
        nms_thresh=1.0,
        detections_per_img=10_000,
    )[0]
    # With NMS off and everything kept, the detections are every (point, class) pair above 0.05.
    all_boxes = torch.cat(
        [distances_to_boxes(p, d[0]) for p, d in zip(points, distances, strict=True)]
    )
    all_boxes[:, 0::2] = all_boxes[:, 0::2].clamp(0, image_size[1])
    all_boxes[:, 1::2] = all_boxes[:, 1::2].clamp(0, image_size[0])
    flat = torch.cat([s[0] for s in scores])  # [N, 2]
    point, label = (flat > 0.05).nonzero(as_tuple=True)
    order = flat[point, label].argsort(descending=True)
    assert_close(out["scores"], flat[point, label][order])
    assert_close(out["boxes"], all_boxes[point][order])
    assert torch.equal(out["labels"], label[order])


def test_callable_decoder_equals_named_one():
    logits, deltas, anchors = random_outputs(7, 1, (64, 64), 2)
    scores = [x.sigmoid() for x in logits]
    points = [(a[:, :2] + a[:, 2:]) / 2 for a in anchors]
    ltrb = [d.abs() * 10 for d in deltas]
    named = decode_dense_detections(scores, ltrb, points, (64, 64), decode="point_distances")
    called = decode_dense_detections(
        scores,
        ltrb,
        points,
        (64, 64),
        decode=lambda d, p: torch.cat((p - d[:, :2], p + d[:, 2:]), 1),
    )
    assert_close(named[0]["boxes"], called[0]["boxes"])


def test_box_weights():
    """Deltas scaled by the weights decode to the same boxes as unscaled ones with weights 1."""
    logits, deltas, anchors = random_outputs(8, 1, (64, 64), 2)
    scores = [x.sigmoid() for x in logits]
    weights = (10.0, 10.0, 5.0, 5.0)
    scaled = [d * torch.tensor(weights) for d in deltas]
    a = decode_dense_detections(scores, deltas, anchors, (64, 64))
    b = decode_dense_detections(scores, scaled, anchors, (64, 64), box_weights=weights)
    assert_close(a[0]["boxes"], b[0]["boxes"], rtol=1e-5, atol=1e-4)


def _inputs():
    logits, deltas, anchors = random_outputs(0, 2, (64, 64), 3)
    return [x.sigmoid() for x in logits], deltas, anchors


def _with(level_list, level, value):
    out = list(level_list)
    out[level] = value
    return out


@pytest.mark.parametrize(
    "change, error, match",
    [
        (
            lambda s, d, a: (
                _with(s, 2, s[2].clone().index_fill_(1, torch.tensor([3]), math.nan)),
                d,
                a,
                {},
            ),
            ValueError,
            r"scores_per_level\[2\] must be finite",
        ),
        (
            lambda s, d, a: (_with(s, 0, s[0] * 3), d, a, {}),
            ValueError,
            r"scores_per_level\[0\] must be probabilities",
        ),
        (
            lambda s, d, a: (s, _with(d, 1, d[1].clone().fill_(math.inf)), a, {}),
            ValueError,
            r"box_regression_per_level\[1\] must be finite",
        ),
        (
            lambda s, d, a: (s, _with(d, 1, d[1][:, :-1]), a, {}),
            ValueError,
            r"box_regression_per_level\[1\] must be \[2, ",
        ),
        (
            lambda s, d, a: (s, d, _with(a, 3, a[3][:, :2]), {}),
            ValueError,
            r"references_per_level\[3\] must be \[N, 4\]",
        ),
        (
            lambda s, d, a: (s, d, a, {"decode": "point_distances"}),
            ValueError,
            r"references_per_level\[0\] must be \[N, 2\]",
        ),
        (
            lambda s, d, a: (_with(s, 4, s[4][..., :2]), d, a, {}),
            ValueError,
            r"scores_per_level\[4\] must be \[2, ",
        ),
        (lambda s, d, a: (s[:4], d, a, {}), ValueError, "one tensor per level"),
        (lambda s, d, a: (s[0], d, a, {}), TypeError, "scores_per_level must be a non-empty list"),
        (lambda s, d, a: (s, d, a, {"decode": "deltas"}), ValueError, "decode must be one of"),
        (
            lambda s, d, a: (s, d, a, {"decode": 3}),
            TypeError,
            "decode must be a name or a callable",
        ),
        (lambda s, d, a: (s, d, a, {"score_thresh": 1.5}), ValueError, "score_thresh must be"),
        (lambda s, d, a: (s, d, a, {"nms_thresh": -0.1}), ValueError, "nms_thresh must be"),
        (lambda s, d, a: (s, d, a, {"topk_candidates": 0}), ValueError, "topk_candidates must be"),
        (
            lambda s, d, a: (s, d, a, {"detections_per_img": -1}),
            ValueError,
            "detections_per_img must be",
        ),
        (
            lambda s, d, a: (s, d, a, {"box_weights": (1, 1, 1)}),
            ValueError,
            "box_weights must be 4",
        ),
        (
            lambda s, d, a: (s, d, a, {"image_size": [(64, 64)] * 3}),
            ValueError,
            "image_size must be one",
        ),
        (
            lambda s, d, a: (s, d, a, {"image_size": (0, 64)}),
            ValueError,
            "image_size must be positive",
        ),
    ],
)
def test_errors(change, error, match):
    scores, deltas, anchors, settings = change(*_inputs())
    image_size = settings.pop("image_size", (64, 64))
    with pytest.raises(error, match=match):
        decode_dense_detections(scores, deltas, anchors, image_size, **settings)


@pytest.mark.parametrize("seed, groups, n", [(0, 40, 2000), (1, 3, 500), (2, 1, 300), (3, 200, 50)])
def test_grouped_nms_equals_core_and_torchvision(seed, groups, n):
    """The decoding's NMS (IoUs inside each group only) keeps what _nms_core and torchvision keep."""
    import torchvision

    from coursepkg.ops.nms import _nms_core, _nms_grouped

    generator = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=generator) * 200
    boxes = torch.cat((xy, xy + 5 + torch.rand(n, 2, generator=generator) * 60), 1)
    scores = torch.rand(n, generator=generator)
    labels = torch.randint(0, groups, (n,), generator=generator)
    keep = _nms_grouped(boxes, scores, labels, 0.5)
    assert torch.equal(keep, _nms_core(boxes, scores, 0.5, labels))
    assert torch.equal(keep, torchvision.ops.batched_nms(boxes, scores, labels, 0.5))
    assert _nms_grouped(boxes[:0], scores[:0], labels[:0], 0.5).shape == (0,)
