"""One name per idea: no public signature of coursepkg uses a retired synonym; losses reduce alike.

The glossary (book/glossary.md) gives each current name its meaning and paper symbol. This test
walks every public module of the package (no leading underscore in its dotted path) and reads the
parameters of every public function, of every public class's ``__init__``, ``__call__``,
``forward`` and public methods, and the fields of every dataclass and NamedTuple.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
from collections.abc import Callable, Iterator

import pytest
import torch

import coursepkg
from coursepkg.models.fast_rcnn import multi_task_loss
from coursepkg.models.iou_aware_retinanet import iou_aware_retinanet_loss
from coursepkg.models.retinanet import retinanet_loss
from coursepkg.models.roi_heads import fastrcnn_loss
from coursepkg.models.rpn import rpn_loss
from coursepkg.models.yolo import yolo_v1_loss
from coursepkg.ops.confidence import confidence_loss
from coursepkg.ops.focal import sigmoid_focal_loss
from coursepkg.ops.iou_losses import (
    ciou_loss,
    diou_loss,
    giou_loss,
    iou_loss,
    log_iou_loss,
    rectified_iou_loss,
)

# retired -> current. A name is retired on its own and after a config prefix (``rpn_``, ``svm_``...).
RETIRED = {
    # thresholds (torchvision's model names, `_thresh` suffix)
    "score_threshold": "score_thresh",
    "min_score": "score_thresh",
    "nms_threshold": "nms_thresh",
    "nms_iou_threshold": "nms_thresh",
    "nms_iou": "nms_thresh",
    "iou_thresh": "nms_thresh (NMS) or fg_iou_thresh / bg_iou_thresh (matching)",
    "fg_iou_threshold": "fg_iou_thresh",
    "bg_iou_threshold": "bg_iou_thresh",
    "fg_iou": "fg_iou_thresh",
    "bg_iou": "bg_iou_thresh",
    "high_threshold": "fg_iou_thresh",
    "low_threshold": "bg_iou_thresh",
    "pos_iou_thr": "fg_iou_thresh",
    "neg_iou_thr": "bg_iou_thresh",
    "neg_iou": "bg_iou_thresh",
    "min_iou": "fg_iou_thresh",
    "bg_iou_low": "bg_iou_thresh_lo",
    "bg_thresh_lo": "bg_iou_thresh_lo",
    "hard_threshold": "hard_thresh",
    "evict_threshold": "evict_thresh",
    # loss weights
    "lam": "box_loss_weight (a loss's λ) or ridge_penalty (R-CNN's ridge λ)",
    "lambda_": "box_loss_weight",
    "lambda": "box_loss_weight or ridge_penalty",
    "lamda": "box_loss_weight",
    "lmbda": "box_loss_weight",
    "box_weight": "box_loss_weight",
    "reg_weight": "box_loss_weight",
    "smooth_l1_beta": "beta",
    "sigma_l1": "beta",
    # sample counts
    "num_samples": "batch_size_per_image",
    "rois_per_image": "batch_size_per_image",
    "batch_size_per_img": "batch_size_per_image",
    "pos_fraction": "positive_fraction",
    "fg_fraction": "positive_fraction",
    # outputs and sizes
    "detections_per_image": "detections_per_img",
    "max_detections": "detections_per_img",
    "max_per_image": "detections_per_img",
    "min_box_size": "min_size",
    "n_classes": "num_classes",
    "num_class": "num_classes",
    "img_size": "image_size",
    "im_size": "image_size",
    "feat_stride": "stride",
    "rng": "generator",
    "fc_dim": "representation_size",
}
PREFIXES = ("rpn", "roi", "box", "svm", "finetune", "bbox_reg", "anchor")

# Names kept only where the trusted library names them so; elsewhere they are retired.
ONLY_IN = {
    # torchvision.ops' own argument, and the evaluation functions that follow it
    "iou_threshold": (
        {
            "coursepkg.ops.nms.nms",
            "coursepkg.ops.nms.batched_nms",
            "coursepkg.ops.nms.soft_nms",
            "coursepkg.ops.nms.nms_steps",
            "coursepkg.ops.nms.nms_reference",
            "coursepkg.evaluation.voc.match_detections",
            "coursepkg.evaluation.coco_reference.evaluate_image",
            "coursepkg.evaluation.voc.voc_average_precision",
        },
        "nms_thresh",
    ),
    # torchvision's BoxCoder(weights); a model's functions and configs say box_weights
    "weights": (
        {"coursepkg.ops.box_coding.encode_boxes", "coursepkg.ops.box_coding.decode_boxes"},
        "box_weights",
    ),
}


def retired_use(name: str) -> str | None:
    """The current name to use instead of ``name``, or None if ``name`` is not retired."""
    if name in RETIRED:
        return RETIRED[name]
    for prefix in PREFIXES:
        rest = name.removeprefix(prefix + "_")
        if rest != name and rest in RETIRED:
            return f"{prefix}_{RETIRED[rest].split(' ')[0]}"
    return None


def _public_modules() -> Iterator[object]:
    yield coursepkg
    for info in pkgutil.walk_packages(coursepkg.__path__, "coursepkg."):
        if not any(part.startswith("_") for part in info.name.split(".")[1:]):
            yield importlib.import_module(info.name)


def _names_of(owner: str, obj: object) -> Iterator[tuple[str, str]]:
    """``(where, name)`` for every parameter or field name that ``obj`` makes public."""
    if inspect.isfunction(obj):
        for name in inspect.signature(obj).parameters:
            yield owner, name
    elif inspect.isclass(obj):
        if dataclasses.is_dataclass(obj):
            for field in dataclasses.fields(obj):
                yield f"{owner} (field)", field.name
        for field in getattr(obj, "_fields", ()):  # NamedTuple
            yield f"{owner} (field)", field
        for method_name, method in vars(obj).items():
            if isinstance(method, (staticmethod, classmethod)):
                method = method.__func__
            public = not method_name.startswith("_") or method_name in ("__init__", "__call__")
            if public and inspect.isfunction(method):
                for name in inspect.signature(method).parameters:
                    yield f"{owner}.{method_name}", name


def public_names() -> Iterator[tuple[str, str]]:
    """``(qualified owner, name)`` of every public parameter and field of the package."""
    for module in _public_modules():
        for attr, obj in vars(module).items():
            if attr.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
                continue
            yield from _names_of(f"{module.__name__}.{attr}", obj)


def vocabulary_violations(names: Iterator[tuple[str, str]]) -> list[str]:
    problems = []
    for owner, name in names:
        current = retired_use(name)
        if current is not None:
            problems.append(f"{owner}: parameter {name!r} is retired, use {current!r}")
        elif name in ONLY_IN and owner not in ONLY_IN[name][0]:
            problems.append(
                f"{owner}: parameter {name!r} is kept only in {sorted(ONLY_IN[name][0])}, "
                f"use {ONLY_IN[name][1]!r}"
            )
    return problems


def test_the_walk_sees_the_whole_package():
    """Guards the walk itself: it must reach functions, configs, NamedTuples and methods."""
    seen = set(public_names())
    for expected in [
        ("coursepkg.ops.nms.soft_nms", "score_thresh"),
        ("coursepkg.models.faster_rcnn.FasterRCNNConfig (field)", "rpn_nms_thresh"),
        ("coursepkg.models.rpn.RPNLoss (field)", "total"),
        ("coursepkg.models.rcnn.ProposalCache.__call__", "image"),
        ("coursepkg.models.rcnn.RegionFeatureNet.__init__", "representation_size"),
        ("coursepkg.models.fast_rcnn.FastRCNN.losses", "generator"),
        ("coursepkg.viz.show_detections", "score_thresh"),
    ]:
        assert expected in seen, expected


def test_no_public_signature_uses_a_retired_name():
    problems = vocabulary_violations(public_names())
    assert not problems, "\n".join(problems)


def test_the_check_catches_retired_names():
    """Probe: locally defined functions and configs with retired names are all reported."""

    def detect(images, score_threshold=0.05, lam=1.0, iou_threshold=0.5):
        return images

    @dataclasses.dataclass(frozen=True)
    class Config:
        rpn_nms_threshold: float = 0.7
        svm_neg_iou: float = 0.3
        weights: tuple = (10.0, 10.0, 5.0, 5.0)
        nms_thresh: float = 0.5  # current: not reported

    problems = vocabulary_violations(
        [*_names_of("probe.detect", detect), *_names_of("probe.Config", Config)]
    )
    assert problems == [
        "probe.detect: parameter 'score_threshold' is retired, use 'score_thresh'",
        "probe.detect: parameter 'lam' is retired, use "
        + repr(RETIRED["lam"]),
        "probe.detect: parameter 'iou_threshold' is kept only in "
        f"{sorted(ONLY_IN['iou_threshold'][0])}, use 'nms_thresh'",
        "probe.Config (field): parameter 'rpn_nms_threshold' is retired, use 'rpn_nms_thresh'",
        "probe.Config (field): parameter 'svm_neg_iou' is retired, use 'svm_bg_iou_thresh'",
        "probe.Config (field): parameter 'weights' is kept only in "
        f"{sorted(ONLY_IN['weights'][0])}, use 'box_weights'",
        # the dataclass's generated __init__ repeats the fields
        "probe.Config.__init__: parameter 'rpn_nms_threshold' is retired, use 'rpn_nms_thresh'",
        "probe.Config.__init__: parameter 'svm_neg_iou' is retired, use 'svm_bg_iou_thresh'",
        "probe.Config.__init__: parameter 'weights' is kept only in "
        f"{sorted(ONLY_IN['weights'][0])}, use 'box_weights'",
    ]


# ---------------------------------------------------------------------------------------------
# Losses: reduction="none" | "mean" | "sum", like torch.nn.functional


def _rpn_inputs() -> tuple:
    g = torch.Generator().manual_seed(0)
    m = 12
    labels = torch.tensor([1, 0, -1, 1, 0, 0, -1, 1, 0, -1, 0, 1])
    return torch.randn(m, generator=g), torch.randn(m, 4, generator=g), labels, torch.randn(
        m, 4, generator=g
    )


def _roi_inputs() -> tuple:
    g = torch.Generator().manual_seed(1)
    n, k = 10, 3
    labels = torch.tensor([0, 1, 2, 3, 0, 0, 2, 0, 1, 0])
    return (
        torch.randn(n, k + 1, generator=g),
        torch.randn(n, 4 * (k + 1), generator=g),
        labels,
        torch.randn(n, 4, generator=g),
    )


def _yolo_inputs() -> tuple:
    g = torch.Generator().manual_seed(2)
    n, s, b, c = 3, 4, 2, 3
    labels = torch.randint(-1, c, (n, s, s), generator=g)  # -1: a cell without object
    return (
        torch.rand(n, s, s, b * 5 + c, generator=g),
        torch.rand(n, s, s, 4, generator=g),
        labels,
    )


def _confidence_inputs() -> tuple:
    g = torch.Generator().manual_seed(2)
    labels = torch.tensor([1, 0, -1, 1, 0, 0, -1, 1, 0, -1, 0, 1])
    return torch.randn(12, generator=g) * 4, labels


def _box_pairs() -> tuple:
    g = torch.Generator().manual_seed(2)
    xy = torch.rand(9, 2, generator=g) * 50
    boxes1 = torch.cat([xy, xy + torch.rand(9, 2, generator=g) * 30], dim=1)
    xy = torch.rand(9, 2, generator=g) * 50
    return boxes1, torch.cat([xy, xy + torch.rand(9, 2, generator=g) * 30], dim=1)


def _focal_inputs() -> tuple:
    g = torch.Generator().manual_seed(2)
    return torch.randn(9, generator=g), (torch.rand(9, generator=g) < 0.3).float()


def _retinanet_inputs() -> tuple:
    g = torch.Generator().manual_seed(3)
    b, n, k = 4, 6, 3
    labels = torch.tensor([[1, 0, -1, 0, 1, 0], [0, 0, 0, -1, 0, 0], [1, 1, 0, 0, 0, -1], [0] * 6])
    classes = torch.where(labels == 1, torch.randint(0, k, (b, n), generator=g), -1)
    return (
        torch.randn(b, n, k, generator=g),
        torch.randn(b, n, 4, generator=g),
        labels,
        classes,
        torch.randn(b, n, 4, generator=g),
    )


def _iou_aware_retinanet_inputs() -> tuple:
    g = torch.Generator().manual_seed(4)
    cls_logits, box_regression, labels, classes, target_deltas = _retinanet_inputs()
    b, n = labels.shape
    xy = torch.rand(n, 2, generator=g) * 50
    anchors = torch.cat([xy, xy + 10 + torch.rand(n, 2, generator=g) * 30], dim=1)  # [N, 4]
    matched = anchors + torch.randn(b, n, 4, generator=g)  # [B, N, 4] near their anchors
    return (cls_logits, box_regression, torch.randn(b, n, generator=g), labels, classes,
            target_deltas, anchors, matched)


# name -> (loss, inputs, fields); no fields: the loss returns one tensor
LOSSES: dict[str, tuple[Callable, Callable[[], tuple], tuple[str, ...]]] = {
    "confidence_loss": (confidence_loss, _confidence_inputs, ()),
    "rpn_loss": (rpn_loss, _rpn_inputs, ("objectness", "box", "total")),
    "fastrcnn_loss": (fastrcnn_loss, _roi_inputs, ("classification", "box_regression")),
    "multi_task_loss": (multi_task_loss, _roi_inputs, ("classification", "box_regression")),
    "iou_loss": (iou_loss, _box_pairs, ()),
    "log_iou_loss": (log_iou_loss, _box_pairs, ()),
    "giou_loss": (giou_loss, _box_pairs, ()),
    "diou_loss": (diou_loss, _box_pairs, ()),
    "ciou_loss": (ciou_loss, _box_pairs, ()),
    "rectified_iou_loss": (rectified_iou_loss, _box_pairs, ()),
    "yolo_v1_loss": (yolo_v1_loss, _yolo_inputs, ("coord", "size", "obj", "noobj", "cls", "total")),
    "sigmoid_focal_loss": (sigmoid_focal_loss, _focal_inputs, ()),
    # per image ("none": [B]); "mean" over the batch is torchvision's normalisation
    "retinanet_loss": (retinanet_loss, _retinanet_inputs, ("classification", "box_regression")),
    "iou_aware_retinanet_loss": (
        iou_aware_retinanet_loss, _iou_aware_retinanet_inputs, ("classification", "box_regression", "iou")
    ),
}
# The reduction a loss applies when none is asked for: "mean" like torch, except where the trusted
# library defaults otherwise (torchvision.ops.sigmoid_focal_loss: "none").
DEFAULT_REDUCTION = {"sigmoid_focal_loss": "none"}


def _field(result: object, field: str | None) -> torch.Tensor:
    return result if field is None else getattr(result, field)


def test_every_loss_of_the_package_is_listed():
    found = {
        name.split(".")[-1]
        for name, _ in public_names()
        if name.split(".")[-1].endswith("_loss")
        and not name.split(".")[-1].startswith("test_")  # the grader's tests of exercises
        and "(field)" not in name
    }
    assert found == set(LOSSES)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss_reductions_agree_like_torch(name):
    loss, inputs, fields = LOSSES[name]
    args = inputs()
    none, total, mean = (loss(*args, reduction=r) for r in ("none", "sum", "mean"))
    default = loss(*args)
    n = args[0].shape[0]
    for field in fields or (None,):
        per_item = _field(none, field)
        assert per_item.shape == (n,), (field, per_item.shape)
        torch.testing.assert_close(per_item.sum(), _field(total, field))
        assert _field(mean, field).dim() == 0
        expected = {"none": none, "sum": total, "mean": mean}[DEFAULT_REDUCTION.get(name, "mean")]
        torch.testing.assert_close(_field(default, field), _field(expected, field), rtol=0, atol=0)


def test_rpn_and_roi_means_use_the_documented_normalisers():
    objectness, deltas, labels, targets = _rpn_inputs()
    total = rpn_loss(objectness, deltas, labels, targets, reduction="sum")
    mean = rpn_loss(objectness, deltas, labels, targets)  # torchvision: both / sampled anchors
    sampled = int((labels >= 0).sum())
    torch.testing.assert_close(mean.objectness, total.objectness / sampled)
    torch.testing.assert_close(mean.box, total.box / sampled)
    notes = rpn_loss(objectness, deltas, labels, targets, normalization="notes")
    notes_sum = rpn_loss(objectness, deltas, labels, targets, normalization="notes", reduction="sum")
    torch.testing.assert_close(notes.box, notes_sum.box / int((labels == 1).sum()))
    args = _roi_inputs()
    torch.testing.assert_close(
        fastrcnn_loss(*args).box_regression, fastrcnn_loss(*args, reduction="sum").box_regression / 10
    )


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("bad", ["avg", "elementwise_mean", "None", None, 0])
def test_loss_rejects_unknown_reductions(name, bad):
    loss, inputs, _ = LOSSES[name]
    with pytest.raises(ValueError, match="reduction must be one of"):
        loss(*inputs(), reduction=bad)
