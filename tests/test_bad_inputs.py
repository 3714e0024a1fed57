"""A census of bad inputs across the public API: each must raise a clear error, never answer wrong.

Every case names a public callable, arguments that are wrong in one way, the exception type and a
regular expression that the message must match. The expression names the argument and, where it
makes sense, what was expected and what came instead (``"score_thresh must be a finite number in
[0, 1], got nan"``). Issue 12, section 4, listed the silent wrong answers and vague errors of a
first sweep; they are all here, with the cases like them (NaN, inf, negative and out-of-range
numbers, wrong shapes and dtypes, empty inputs where they are invalid). A few unusual but valid
inputs at the end check the right answer instead of an error.

``test_census_size`` prints the count (``bad-input census: N cases``).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from typing import NamedTuple

import pytest
import torch

from coursepkg.data.digits import DigitsDetectionDataset
from coursepkg.data.download import download_url, extract_archive
from coursepkg.data.formats import CocoDetection, VOCDetection, parse_voc_xml
from coursepkg.data.shapes import ShapesDataset
from coursepkg.data.targets import check_target, collate_detection
from coursepkg.evaluation.ap import average_precision
from coursepkg.evaluation.coco import MeanAveragePrecision
from coursepkg.evaluation.voc import match_detections, voc_average_precision
from coursepkg.models.anchors import anchors_inside, generate_anchors
from coursepkg.models.assignment import match_anchors, sample_balanced
from coursepkg.models.backbones import conv_body
from coursepkg.models.detector import check_detections, check_targets
from coursepkg.models.faster_rcnn import FasterRCNN, FasterRCNNConfig
from coursepkg.models.iou_aware_retinanet import (
    IoUAwareRetinaNetConfig,
    iou_aware_score,
    iou_targets,
)
from coursepkg.models.rcnn import fit_box_regressor, svm_labels
from coursepkg.models.roi_heads import (
    FastRCNNHead,
    fastrcnn_loss,
    postprocess_detections,
    sample_rois,
)
from coursepkg.models.rpn import (
    RPNHead,
    assign_rpn_targets,
    flatten_predictions,
    generate_proposals,
    rpn_loss,
)
from coursepkg.models.selective_search import Strategy, selective_search
from coursepkg.ops.box_coding import decode_boxes, encode_boxes
from coursepkg.ops.boxes import (
    box_area,
    box_convert,
    clip_boxes_to_image,
    convert_to_absolute_values,
    remove_small_boxes,
    yolo_to_xyxy,
)
from coursepkg.ops.labels import from_softmax_labels, to_softmax_labels
from coursepkg.ops.nms import batched_nms, nms, soft_nms
from coursepkg.ops.roi_pool import roi_align, roi_pool
from coursepkg.ops.sliding_windows import (
    count_windows,
    image_pyramid,
    sliding_windows,
    window_positions,
)
from coursepkg.ops.validation import (
    check_boxes,
    check_image_size,
    check_int,
    check_number,
    check_probability,
    check_tensor,
)
from coursepkg.viz import class_color

NAN, INF = math.nan, math.inf


class Case(NamedTuple):
    id: str
    call: Callable[..., object]
    error: type[Exception]
    match: str


def _boxes(n: int = 3) -> torch.Tensor:
    """``n`` valid xyxy boxes inside a 100 x 100 image."""
    base = torch.tensor([[10.0, 10.0, 50.0, 60.0], [20.0, 5.0, 90.0, 40.0], [0.0, 0.0, 30.0, 30.0]])
    return base.repeat((n + 2) // 3, 1)[:n]


def _anchors_and_outputs(n: int = 6):
    anchors = _boxes(n)
    return anchors, torch.zeros(n), torch.zeros(n, 4)


def _proposal_kwargs(**change):
    anchors, objectness, deltas = _anchors_and_outputs()
    kwargs = {
        "objectness": objectness,
        "deltas": deltas,
        "anchors": anchors,
        "image_size": (100, 100),
        "pre_nms_top_n": 10,
        "post_nms_top_n": 5,
    }
    kwargs.update(change)
    return kwargs


def _postprocess_kwargs(**change):
    kwargs = {
        "class_logits": torch.zeros(3, 3),
        "box_regression": torch.zeros(3, 12),
        "proposals": _boxes(3),
        "image_size": (100, 100),
    }
    kwargs.update(change)
    return kwargs


def _loss_args(m: int = 4, **change):
    kwargs = {
        "objectness": torch.zeros(m),
        "deltas": torch.zeros(m, 4),
        "labels": torch.tensor([1, 0, -1, 0])[:m],
        "target_deltas": torch.zeros(m, 4),
    }
    kwargs.update(change)
    return kwargs


def _fastrcnn_args(**change):
    kwargs = {
        "class_logits": torch.zeros(2, 3),
        "box_regression": torch.zeros(2, 12),
        "labels": torch.tensor([0, 1]),
        "regression_targets": torch.zeros(2, 4),
    }
    kwargs.update(change)
    return kwargs


def _target(boxes=None, labels=None):
    boxes = _boxes(2) if boxes is None else torch.tensor(boxes, dtype=torch.float32)
    labels = torch.zeros(len(boxes), dtype=torch.int64) if labels is None else labels
    return {"boxes": boxes, "labels": labels}


def _det(**change):
    det = {"boxes": _boxes(2), "scores": torch.tensor([0.9, 0.1]), "labels": torch.tensor([0, 1])}
    det.update(change)
    return det


def _small_faster_rcnn() -> FasterRCNN:
    torch.manual_seed(0)
    return FasterRCNN(FasterRCNNConfig(num_classes=3))


def _write_voc(tmp, xmin="10", ymin="10", xmax="20", ymax="20", width="50", height="40"):
    path = tmp / "a.xml"
    path.write_text(
        f"<annotation><filename>a.jpg</filename><size><width>{width}</width>"
        f"<height>{height}</height><depth>3</depth></size><object><name>cat</name>"
        f"<bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax>"
        f"<ymax>{ymax}</ymax></bndbox></object></annotation>"
    )
    return path


def _write_coco(tmp, images, annotations):
    (tmp / "images").mkdir(exist_ok=True)
    path = tmp / "ann.json"
    data = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "a"}]}
    path.write_text(json.dumps(data))
    return tmp / "images", path


# Cases that need files take ``tmp_path``: their ``call`` has one parameter.
def _voc(tmp_path, **fields):
    return parse_voc_xml(_write_voc(tmp_path, **fields), classes=("cat",))


def _coco(tmp_path, images, annotations):
    image_dir, path = _write_coco(tmp_path, images, annotations)
    return CocoDetection(image_dir, path)


_IMAGE = {"id": 1, "file_name": "1.jpg", "width": 10, "height": 10}
_ANN = {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 4, 4]}

# One case per line, so that the table reads as a table.
# fmt: off
# ------------------------------------------------------------------------------------- ops
OPS = [
    # validation helpers themselves
    Case("check_number-nan", lambda: check_number(NAN, "x", low=0), ValueError, r"x must be a finite number >= 0, got nan"),
    Case("check_number-str", lambda: check_number("1", "x"), TypeError, r"x must be a number, got str"),
    Case("check_number-bool", lambda: check_number(True, "x"), TypeError, r"x must be a number, got bool"),
    Case("check_probability-1.5", lambda: check_probability(1.5, "p"), ValueError, r"p must be a finite number in \[0, 1\], got 1.5"),
    Case("check_int-float", lambda: check_int(2.0, "n"), TypeError, r"n must be an int, got float 2.0"),
    Case("check_int-range", lambda: check_int(0, "n", low=1), ValueError, r"n must be an int >= 1, got 0"),
    Case("check_tensor-shape", lambda: check_tensor(torch.zeros(3, 5), "t", shape=("N", 4)), ValueError, r"t must be \[N, 4\], got \[3, 5\]"),
    Case("check_tensor-dtype", lambda: check_tensor(torch.zeros(3), "t", dtype="int"), TypeError, r"t must be an integer tensor, got torch.float32"),
    Case("check_boxes-inverted", lambda: check_boxes(torch.tensor([[5.0, 0, 4, 4]])), ValueError, r"boxes \(xyxy\) must have x2 >= x1 and y2 >= y1, row 0 is"),
    Case("check_image_size-zero", lambda: check_image_size((0, 5)), ValueError, r"image_size must be positive \(height, width\), got \(0, 5\)"),
    # boxes
    Case("convert_to_absolute_values-negative-width", lambda: convert_to_absolute_values((640, 480), (0.5, 0.5, -0.2, 0.1)), ValueError, r"box\[2\] must be a finite number >= 0, got -0.2"),
    Case("convert_to_absolute_values-negative-height", lambda: convert_to_absolute_values((640, 480), (0.5, 0.5, 0.2, -0.1)), ValueError, r"box\[3\] must be a finite number >= 0, got -0.1"),
    Case("convert_to_absolute_values-inf", lambda: convert_to_absolute_values((640, 480), (INF, 0.5, 0.2, 0.1)), ValueError, r"box\[0\] must be a finite number, got inf"),
    Case("convert_to_absolute_values-size", lambda: convert_to_absolute_values((640, -1), (0.5, 0.5, 0.2, 0.1)), ValueError, r"size must be positive \(width, height\), got \(640, -1\)"),
    Case("box_convert-format", lambda: box_convert(_boxes(), "xyxy", "yolo"), ValueError, r"out_fmt must be one of xyxy, xywh, cxcywh; got 'yolo'"),
    Case("box_convert-negative-width", lambda: box_convert(torch.tensor([[0.0, 0, -1, 1]]), "xywh", "xyxy"), ValueError, r"boxes \(xywh\) must have non-negative width and height"),
    Case("box_area-int", lambda: box_area(torch.zeros(2, 4, dtype=torch.int64)), TypeError, r"boxes must be a floating-point tensor, got torch.int64"),
    Case("box_area-nan", lambda: box_area(torch.tensor([[0.0, 0, NAN, 1]])), ValueError, r"boxes must be finite, row 0"),
    Case("yolo_to_xyxy-image_size", lambda: yolo_to_xyxy(torch.zeros(1, 4), (10,)), TypeError, r"image_size must be a \(height, width\) pair, got \(10,\)"),
    Case("clip_boxes_to_image-shape", lambda: clip_boxes_to_image(torch.zeros(4), (10, 10)), ValueError, r"boxes must be \[N, 4\], got \[4\]"),
    Case("remove_small_boxes-nan", lambda: remove_small_boxes(_boxes(), NAN), ValueError, r"min_size must be a finite number >= 0, got nan"),
    Case("remove_small_boxes-negative", lambda: remove_small_boxes(_boxes(), -1), ValueError, r"min_size must be a finite number >= 0, got -1"),
    # box coding
    Case("encode_boxes-weights-nan", lambda: encode_boxes(_boxes(), _boxes(), (NAN, 1, 1, 1)), ValueError, r"weights\[0\] must be a finite number > 0, got nan"),
    Case("encode_boxes-weights-inf", lambda: encode_boxes(_boxes(), _boxes(), (1, 1, INF, 1)), ValueError, r"weights\[2\] must be a finite number > 0, got inf"),
    Case("encode_boxes-weights-3", lambda: encode_boxes(_boxes(), _boxes(), (1, 1, 1)), ValueError, r"weights must be 4 numbers \(w_x, w_y, w_w, w_h\), got \(1, 1, 1\)"),
    Case("encode_boxes-length", lambda: encode_boxes(_boxes(3), _boxes(2)), ValueError, r"reference_boxes and proposals must have the same length, got 3 and 2"),
    Case("decode_boxes-plus-inf", lambda: decode_boxes(torch.tensor([[INF, 0, 0, 0]]), _boxes(1)), ValueError, r"deltas must be finite \(no NaN or inf\), element \[0, 0\] is inf"),
    Case("decode_boxes-clip-nan", lambda: decode_boxes(torch.zeros(1, 4), _boxes(1), bbox_xform_clip=NAN), ValueError, r"bbox_xform_clip must be a finite number > 0, got nan"),
    Case("decode_boxes-clip-negative", lambda: decode_boxes(torch.zeros(1, 4), _boxes(1), bbox_xform_clip=-1), ValueError, r"bbox_xform_clip must be a finite number > 0, got -1"),
    Case("decode_boxes-shape", lambda: decode_boxes(torch.zeros(1, 5), _boxes(1)), ValueError, r"deltas must be \[N, 4 \* C\] with C >= 1, got \[1, 5\]"),
    Case("decode_boxes-int", lambda: decode_boxes(torch.zeros(1, 4, dtype=torch.int64), _boxes(1)), TypeError, r"deltas must be a floating-point tensor, got torch.int64"),
    # sliding windows
    Case("sliding_windows-float16-collide", lambda: sliding_windows((3000, 3000), (64, 64), 1, dtype=torch.float16), ValueError, r"dtype torch.float16 holds the integers up to 2048 exactly"),
    Case("sliding_windows-int-dtype", lambda: sliding_windows((100, 100), (64, 64), 8, dtype=torch.int64), TypeError, r"dtype must be a floating-point torch.dtype, got torch.int64"),
    Case("sliding_windows-step-zero", lambda: sliding_windows((100, 100), (64, 64), 0), ValueError, r"step must be an int >= 1, got 0"),
    Case("sliding_windows-window-too-big", lambda: sliding_windows((10, 10), (64, 64), 1), ValueError, r"window_size \(64, 64\) must fit in image_size \(10, 10\)"),
    Case("window_positions-float", lambda: window_positions(100.0, 10, 1), TypeError, r"length must be an int, got float 100.0"),
    Case("image_pyramid-int64-image", lambda: next(image_pyramid(torch.full((3, 40, 40), 300))), TypeError, r"image must be a floating-point tensor in \[0, 1\], got torch.int64"),
    Case("image_pyramid-0-255-float", lambda: next(image_pyramid(torch.full((3, 40, 40), 200.0))), ValueError, r"image must hold values in \[0, 1\], got min 200.0 and max 200.0"),
    Case("image_pyramid-nan", lambda: next(image_pyramid(torch.full((3, 40, 40), NAN))), ValueError, r"image must hold values in \[0, 1\]"),
    Case("image_pyramid-scale", lambda: next(image_pyramid(torch.rand(3, 40, 40), scale=NAN)), ValueError, r"scale must be > 1 .*got nan"),
    Case("count_windows-scale", lambda: count_windows((100, 100), (10, 10), 1, scale=1.0), ValueError, r"scale must be > 1 .*got 1.0"),
    # nms (ops/nms.py is rewritten by another helper: these pin today's messages)
    Case("nms-threshold-1.5", lambda: nms(_boxes(), torch.rand(3), 1.5), ValueError, r"iou_threshold must be in \[0, 1\], got 1.5"),
    Case("nms-threshold-nan", lambda: nms(_boxes(), torch.rand(3), NAN), ValueError, r"iou_threshold must be in \[0, 1\], got nan"),
    Case("nms-scores-nan", lambda: nms(_boxes(), torch.tensor([0.1, NAN, 0.2]), 0.5), ValueError, r"scores must be finite"),
    Case("nms-scores-length", lambda: nms(_boxes(), torch.rand(2), 0.5), ValueError, r"scores must be \[N\] with N = len\(boxes\) = 3, got \[2\]"),
    Case("batched_nms-idxs-float", lambda: batched_nms(_boxes(), torch.rand(3), torch.zeros(3), 0.5), TypeError, r"idxs must be an integer tensor, got torch.float32"),
    Case("soft_nms-sigma-zero", lambda: soft_nms(_boxes(), torch.rand(3), sigma=0), ValueError, r"sigma must be a finite number > 0, got 0"),
    Case("soft_nms-score-thresh-nan", lambda: soft_nms(_boxes(), torch.rand(3), score_thresh=NAN), ValueError, r"score_thresh must be a number >= 0, got nan"),
    Case("soft_nms-method", lambda: soft_nms(_boxes(), torch.rand(3), method="hard"), ValueError, r"method must be 'gaussian' or 'linear', got 'hard'"),
    # roi_pool / roi_align
    Case("roi_pool-input-3d", lambda: roi_pool(torch.zeros(1, 4, 4), [_boxes(1)], 2), ValueError, r"input must be \[N, C, H, W\], got \[1, 4, 4\]"),
    Case("roi_pool-output_size", lambda: roi_pool(torch.zeros(1, 1, 4, 4), [_boxes(1)], 0), ValueError, r"output_size must be a positive int or a pair"),
    Case("roi_pool-spatial_scale-nan", lambda: roi_pool(torch.zeros(1, 1, 4, 4), [_boxes(1)], 2, NAN), ValueError, r"spatial_scale must be a positive number, got nan"),
    Case("roi_align-batch-index", lambda: roi_align(torch.zeros(1, 1, 4, 4), torch.tensor([[3.0, 0, 0, 1, 1]]), 2), ValueError, r"boxes' batch index must be an integer in \[0, 1\)"),
    Case("roi_align-boxes-shape", lambda: roi_align(torch.zeros(1, 1, 4, 4), [torch.zeros(1, 5)], 2), ValueError, r"boxes\[0\] must be \[L, 4\]"),
    # labels
    Case("to_softmax_labels-float", lambda: to_softmax_labels(torch.zeros(2)), TypeError, r"labels must be an integer tensor, got torch.float32"),
    Case("to_softmax_labels-negative", lambda: to_softmax_labels(torch.tensor([0, -1])), ValueError, r"labels must be >= 0 \(dataset labels\), got min -1"),
    Case("from_softmax_labels-background", lambda: from_softmax_labels(torch.tensor([0, 1])), ValueError, r"labels must be >= 1 \(0 is the background"),
]

# ------------------------------------------------------------------------------------- data
DATA = [
    Case("ShapesDataset-negative-count", lambda: ShapesDataset(-1), ValueError, r"num_images must be >= 0, got -1"),
    Case("ShapesDataset-image_size", lambda: ShapesDataset(2, (0, 10)), ValueError, r"image_size must be positive"),
    Case("ShapesDataset-max_occlusion", lambda: ShapesDataset(2, max_occlusion=1.5), ValueError, r"max_occlusion must be in \[0, 1\), got 1.5"),
    Case("ShapesDataset-seed", lambda: ShapesDataset(2, seed=1.5), TypeError, r"seed must be an int, got 1.5"),
    Case("DigitsDetectionDataset-split", lambda: DigitsDetectionDataset(2, split="val"), ValueError, r"split must be"),
    Case("DigitsDetectionDataset-min_size", lambda: DigitsDetectionDataset(2, min_size=-3), ValueError, r"min_size must be a positive number of pixels, got -3"),
    Case("parse_voc_xml-nan", lambda tmp_path: _voc(tmp_path, xmin="nan"), ValueError, r"<bndbox> must be finite, got \(nan, 10.0, 20.0, 20.0\)"),
    Case("parse_voc_xml-inf", lambda tmp_path: _voc(tmp_path, xmax="inf"), ValueError, r"<bndbox> must be finite"),
    Case("parse_voc_xml-negative", lambda tmp_path: _voc(tmp_path, xmin="-5"), ValueError, r"<bndbox> must lie inside the image \(1 <= xmin"),
    Case("parse_voc_xml-outside", lambda tmp_path: _voc(tmp_path, ymax="400"), ValueError, r"ymax <= height = 40\), got \(10.0, 10.0, 20.0, 400.0\)"),
    Case("parse_voc_xml-size-nan", lambda tmp_path: _voc(tmp_path, width="nan"), ValueError, r"<size> height and width must be positive integers, got \(40.0, nan\)"),
    Case("parse_voc_xml-size-zero", lambda tmp_path: _voc(tmp_path, height="0"), ValueError, r"<size> height and width must be positive integers"),
    Case("parse_voc_xml-not-a-number", lambda tmp_path: _voc(tmp_path, xmin="ten"), ValueError, r"<xmin> must be a number, got 'ten'"),
    Case("VOCDetection-missing-root", lambda tmp_path: VOCDetection(tmp_path / "nope"), FileNotFoundError, r"VOC root .*nope does not exist"),
    Case("CocoDetection-duplicate-image-ids", lambda tmp_path: _coco(tmp_path, [_IMAGE, dict(_IMAGE, file_name="2.jpg")], []), ValueError, r"image ids must be unique, image id 1 appears twice"),
    Case("CocoDetection-bbox-nan", lambda tmp_path: _coco(tmp_path, [_IMAGE], [dict(_ANN, bbox=[1, 1, float("nan"), 4])]), ValueError, r"annotation 1 bbox must be finite"),
    Case("CocoDetection-bbox-negative", lambda tmp_path: _coco(tmp_path, [_IMAGE], [dict(_ANN, bbox=[1, 1, -4, 4])]), ValueError, r"annotation 1 bbox has a negative size"),
    Case("CocoDetection-unknown-image", lambda tmp_path: _coco(tmp_path, [_IMAGE], [dict(_ANN, image_id=7)]), ValueError, r"annotation 1 has unknown image_id 7"),
    Case("check_target-labels-float", lambda: check_target(_target(labels=torch.zeros(2)), (100, 100)), TypeError, r"target\['labels'\] must be an int64 tensor, got torch.float32"),
    Case("check_target-outside", lambda: check_target(_target([[0, 0, 200, 10]]), (100, 100)), ValueError, r"target\['boxes'\] must lie inside the image \[0, 100\] x \[0, 100\]"),
    Case("check_target-num_classes", lambda: check_target(_target(labels=torch.tensor([0, 5])), (100, 100), 3), ValueError, r"target\['labels'\] must be in 0..2 .*label 1 is 5"),
    Case("collate_detection-empty", lambda: collate_detection([]), ValueError, r"batch must hold at least one \(image, target\) pair"),
    Case("collate_detection-sizes", lambda: collate_detection([(torch.zeros(3, 4, 4), {}), (torch.zeros(3, 5, 5), {})]), ValueError, r"images of one size"),
    Case("download_url-bad-sha", lambda tmp_path: download_url("file:///nonexistent", tmp_path / "x", "xyz"), ValueError, r"sha256"),
    Case("extract_archive-missing", lambda tmp_path: extract_archive(tmp_path / "none.tar", tmp_path), FileNotFoundError, r"none.tar"),
]

# ------------------------------------------------------------------------------------ models
MODELS = [
    # anchors
    Case("generate_anchors-feature_size-1d", lambda: generate_anchors((50,), 16), ValueError, r"feature_size must be \(H, W\) with non-negative integers, got \(50,\)"),
    Case("generate_anchors-feature_size-float", lambda: generate_anchors((5, 2.5), 16), TypeError, r"feature_size must be an int, got float 2.5"),
    Case("generate_anchors-feature_size-none", lambda: generate_anchors(None, 16), ValueError, r"feature_size must be \(H, W\) .*got None"),
    Case("generate_anchors-stride-nan", lambda: generate_anchors((5, 5), NAN), ValueError, r"stride must be a finite number > 0, got nan"),
    Case("generate_anchors-scales-nested", lambda: generate_anchors((5, 5), 16, scales=[[8]]), TypeError, r"scales\[0\] must be a number, got list"),
    Case("generate_anchors-ratios-zero", lambda: generate_anchors((5, 5), 16, ratios=(0,)), ValueError, r"ratios\[0\] must be a finite number > 0, got 0"),
    Case("generate_anchors-base_size-inf", lambda: generate_anchors((5, 5), 16, base_size=INF), ValueError, r"base_size must be a finite number > 0, got inf"),
    Case("anchors_inside-image_size", lambda: anchors_inside(_boxes(), (0, 10)), ValueError, r"image_size must be positive"),
    # assignment
    Case("match_anchors-high-1.5", lambda: match_anchors(torch.rand(2, 3), 1.5, 0.3), ValueError, r"fg_iou_thresh must be a finite number in \[0, 1\], got 1.5"),
    Case("match_anchors-low-negative", lambda: match_anchors(torch.rand(2, 3), 0.7, -0.1), ValueError, r"bg_iou_thresh must be a finite number in \[0, 1\], got -0.1"),
    Case("match_anchors-not-iou", lambda: match_anchors(torch.tensor([[0.5, 2.0]]), 0.7, 0.3), ValueError, r"iou_matrix must hold IoU values in \[0, 1\] \(no NaN\), got min 0.5 and max 2.0"),
    Case("match_anchors-negative-iou", lambda: match_anchors(torch.tensor([[-0.5, 0.2]]), 0.7, 0.3), ValueError, r"iou_matrix must hold IoU values in \[0, 1\]"),
    Case("match_anchors-1d", lambda: match_anchors(torch.rand(3)), ValueError, r"iou_matrix must be \[G, A\], got \[3\]"),
    Case("match_anchors-low-above-high", lambda: match_anchors(torch.rand(2, 3), 0.3, 0.7), ValueError, r"bg_iou_thresh must be <= fg_iou_thresh"),
    Case("sample_balanced-fraction-nan", lambda: sample_balanced(torch.tensor([1, 0]), 2, NAN), ValueError, r"positive_fraction must be a finite number in \[0, 1\], got nan"),
    Case("sample_balanced-batch_size_per_image-float", lambda: sample_balanced(torch.tensor([1, 0]), 2.5), TypeError, r"batch_size_per_image must be an int, got float 2.5"),
    Case("sample_balanced-labels-values", lambda: sample_balanced(torch.tensor([1, 2])), ValueError, r"labels must only contain 1 \(positive\), 0 \(negative\) and -1 \(ignored\), got values \[1, 2\]"),
    # rpn
    Case("RPNHead-in_channels-float", lambda: RPNHead(1.5, 9), TypeError, r"in_channels must be an int, got float 1.5"),
    Case("RPNHead-num_anchors-zero", lambda: RPNHead(8, 0), ValueError, r"num_anchors must be an int >= 1, got 0"),
    Case("RPNHead-features-channels", lambda: RPNHead(8, 9)(torch.zeros(1, 4, 5, 5)), ValueError, r"features must be \[N, 8, H, W\], got \[1, 4, 5, 5\]"),
    Case("RPNHead-features-list", lambda: RPNHead(8, 9)([1, 2]), TypeError, r"features must be a torch.Tensor, got list"),
    Case("flatten_predictions-deltas", lambda: flatten_predictions(torch.zeros(1, 3, 2, 2), torch.zeros(1, 4, 2, 2)), ValueError, r"deltas must be \[1, 12, 2, 2\], got \[1, 4, 2, 2\]"),
    Case("rpn_loss-box_loss_weight-nan", lambda: rpn_loss(**_loss_args(), box_loss_weight=NAN), ValueError, r"box_loss_weight must be a finite number >= 0, got nan"),
    Case("rpn_loss-beta-inf", lambda: rpn_loss(**_loss_args(), beta=INF), ValueError, r"beta must be a finite number >= 0, got inf"),
    Case("rpn_loss-num_locations-float", lambda: rpn_loss(**_loss_args(), normalization="paper", num_locations=2.5), TypeError, r"num_locations must be an int, got float 2.5"),
    Case("rpn_loss-deltas-shape", lambda: rpn_loss(**_loss_args(deltas=torch.zeros(4, 3))), ValueError, r"deltas must be \[4, 4\], got \[4, 3\]"),
    Case("rpn_loss-objectness-list", lambda: rpn_loss(**_loss_args(objectness=[0.0] * 4)), TypeError, r"objectness must be a torch.Tensor, got list"),
    Case("generate_proposals-nan-objectness", lambda: generate_proposals(**_proposal_kwargs(objectness=torch.tensor([0.0, NAN, 0, 0, 0, 0]))), ValueError, r"objectness must be finite \(no NaN or inf\), element 1 is nan"),
    Case("generate_proposals-inf-deltas", lambda: generate_proposals(**_proposal_kwargs(deltas=torch.full((6, 4), INF))), ValueError, r"deltas must be finite"),
    Case("generate_proposals-score_thresh-1.5", lambda: generate_proposals(**_proposal_kwargs(score_thresh=1.5)), ValueError, r"score_thresh must be a finite number in \[0, 1\], got 1.5"),
    Case("generate_proposals-score_thresh-nan", lambda: generate_proposals(**_proposal_kwargs(score_thresh=NAN)), ValueError, r"score_thresh must be a finite number in \[0, 1\], got nan"),
    Case("generate_proposals-nms_thresh-nan", lambda: generate_proposals(**_proposal_kwargs(nms_thresh=NAN)), ValueError, r"nms_thresh must be a finite number in \[0, 1\], got nan"),
    Case("generate_proposals-min_size-inf", lambda: generate_proposals(**_proposal_kwargs(min_size=INF)), ValueError, r"min_size must be a finite number >= 0, got inf"),
    Case("generate_proposals-objectness-shape", lambda: generate_proposals(**_proposal_kwargs(objectness=torch.zeros(5))), ValueError, r"objectness must be \[6\], got \[5\]"),
    Case("assign_rpn_targets-fg-1.5", lambda: assign_rpn_targets(_boxes(), _boxes(1), fg_iou_thresh=1.5), ValueError, r"fg_iou_thresh must be a finite number in \[0, 1\], got 1.5"),
    Case("assign_rpn_targets-bg-above-fg", lambda: assign_rpn_targets(_boxes(), _boxes(1), fg_iou_thresh=0.3, bg_iou_thresh=0.7), ValueError, r"bg_iou_thresh must be <= fg_iou_thresh, got 0.7 > 0.3"),
    Case("assign_rpn_targets-batch_size_per_image-negative", lambda: assign_rpn_targets(_boxes(), _boxes(1), batch_size_per_image=-1), ValueError, r"batch_size_per_image must be an int >= 0, got -1"),
    # roi heads
    Case("sample_rois-fg-0", lambda: sample_rois(_boxes(), _boxes(1), torch.tensor([0]), fg_iou_thresh=0), ValueError, r"fg_iou_thresh must be a finite number in \(0, 1\], got 0"),
    Case("sample_rois-fraction-2", lambda: sample_rois(_boxes(), _boxes(1), torch.tensor([0]), positive_fraction=2), ValueError, r"positive_fraction must be a finite number in \[0, 1\], got 2"),
    Case("sample_rois-negative-label", lambda: sample_rois(_boxes(), _boxes(1), torch.tensor([-1])), ValueError, r"gt_labels must be >= 0 .*label 0 is -1"),
    Case("sample_rois-zero-width-gt", lambda: sample_rois(_boxes(), torch.tensor([[1.0, 1, 1, 5]]), torch.tensor([0])), ValueError, r"gt_boxes must have positive widths and heights"),
    Case("fastrcnn_loss-logits-list", lambda: fastrcnn_loss(**_fastrcnn_args(class_logits=[[0.0, 0.0]])), TypeError, r"class_logits must be a torch.Tensor, got list"),
    Case("fastrcnn_loss-box_regression-shape", lambda: fastrcnn_loss(**_fastrcnn_args(box_regression=torch.zeros(2, 8))), ValueError, r"box_regression must be \[2, 12\], got \[2, 8\]"),
    Case("fastrcnn_loss-targets-shape", lambda: fastrcnn_loss(**_fastrcnn_args(regression_targets=torch.zeros(2))), ValueError, r"regression_targets must be \[2, 4\], got \[2\]"),
    Case("fastrcnn_loss-labels-range", lambda: fastrcnn_loss(**_fastrcnn_args(labels=torch.tensor([0, 3]))), ValueError, r"labels must be in 0..2 \(0 = background\), got min 0 and max 3"),
    Case("fastrcnn_loss-beta-nan", lambda: fastrcnn_loss(**_fastrcnn_args(), beta=NAN), ValueError, r"beta must be a finite number >= 0, got nan"),
    Case("FastRCNNHead-features", lambda: FastRCNNHead(4, 7, 16, 3)(torch.zeros(2, 4, 5, 5)), ValueError, r"roi_features must be \[R, 4, 7, 7\], got \[2, 4, 5, 5\]"),
    Case("postprocess_detections-score_thresh-nan", lambda: postprocess_detections(**_postprocess_kwargs(), score_thresh=NAN), ValueError, r"score_thresh must be a finite number in \[0, 1\], got nan"),
    Case("postprocess_detections-score_thresh-negative", lambda: postprocess_detections(**_postprocess_kwargs(), score_thresh=-0.1), ValueError, r"score_thresh must be a finite number in \[0, 1\], got -0.1"),
    Case("postprocess_detections-nms_thresh-2", lambda: postprocess_detections(**_postprocess_kwargs(), nms_thresh=2), ValueError, r"nms_thresh must be a finite number in \[0, 1\], got 2"),
    Case("postprocess_detections-detections_per_img-float", lambda: postprocess_detections(**_postprocess_kwargs(), detections_per_img=1.5), TypeError, r"detections_per_img must be an int, got float 1.5"),
    Case("postprocess_detections-nan-logits", lambda: postprocess_detections(**_postprocess_kwargs(class_logits=torch.full((3, 3), NAN))), ValueError, r"class_logits must be finite"),
    Case("postprocess_detections-box_regression-shape", lambda: postprocess_detections(**_postprocess_kwargs(box_regression=torch.zeros(3, 4))), ValueError, r"box_regression must be \[3, 12\], got \[3, 4\]"),
    # detector contract and Faster R-CNN
    Case("check_targets-length", lambda: check_targets([_target()], 2), ValueError, r"targets must have one dict per image: expected 2, got 1"),
    Case("check_targets-nan-box", lambda: check_targets([_target([[0, 0, NAN, 1]])], 1), ValueError, r"targets\[0\]\['boxes'\] must be finite, row 0"),
    Case("check_detections-unsorted", lambda: check_detections([_det(scores=torch.tensor([0.1, 0.9]))], 1), ValueError, r"detections\[0\]\['scores'\] must be sorted in decreasing order"),
    Case("FasterRCNN-losses-1-channel", lambda: _small_faster_rcnn().losses(torch.zeros(1, 1, 64, 64), [_target()]), ValueError, r"images must be \[B, 3, H, W\], got \[1, 1, 64, 64\]"),
    Case("FasterRCNN-losses-uint8", lambda: _small_faster_rcnn().losses(torch.zeros(1, 3, 64, 64, dtype=torch.uint8), [_target()]), TypeError, r"images must be a floating tensor, got torch.uint8"),
    Case("FasterRCNN-losses-label-too-big", lambda: _small_faster_rcnn().losses(torch.zeros(1, 3, 64, 64), [_target(labels=torch.tensor([0, 3]))]), ValueError, r"targets\[0\]\['labels'\] must be in 0..2"),
    Case("FasterRCNN-losses-zero-width", lambda: _small_faster_rcnn().losses(torch.zeros(1, 3, 64, 64), [_target([[5, 5, 5, 9]])]), ValueError, r"targets\[0\]\['boxes'\] must have positive widths and heights"),
    Case("FasterRCNN-losses-missing-labels", lambda: _small_faster_rcnn().losses(torch.zeros(1, 3, 64, 64), [{"boxes": _boxes(1)}]), ValueError, r"targets\[0\] is missing key\(s\) \['labels'\]"),
    Case("FasterRCNNConfig-rpn-fg-1.5", lambda: FasterRCNNConfig(rpn_fg_iou_thresh=1.5), ValueError, r"rpn_fg_iou_thresh must be a finite number in \[0, 1\], got 1.5"),
    Case("FasterRCNNConfig-roi-batch-negative", lambda: FasterRCNNConfig(roi_batch_size_per_image=-1), ValueError, r"roi_batch_size_per_image must be an int >= 0, got -1"),
    Case("FasterRCNNConfig-box-weight-zero", lambda: FasterRCNNConfig(box_weights=(10.0, 10.0, 0.0, 5.0)), ValueError, r"box_weights\[2\] must be a finite number > 0, got 0"),
    Case("FasterRCNNConfig-nms-nan", lambda: FasterRCNNConfig(nms_thresh=float("nan")), ValueError, r"nms_thresh must be a finite number in \[0, 1\], got nan"),
    Case("FasterRCNN-detect-2d", lambda: _small_faster_rcnn().detect(torch.zeros(64, 64)), ValueError, r"images must be \[B, 3, H, W\], got \[64, 64\]"),
    # R-CNN, selective search, backbones
    Case("svm_labels-num_classes-zero", lambda: svm_labels(_boxes(), _boxes(1), torch.tensor([0]), 0), ValueError, r"num_classes must be an int >= 1, got 0"),
    Case("svm_labels-label-too-big", lambda: svm_labels(_boxes(), _boxes(1), torch.tensor([4]), 3), ValueError, r"gt_labels must be in 0..2 .*label 0 is 4"),
    Case("fit_box_regressor-ridge_penalty-nan", lambda: fit_box_regressor(torch.rand(3, 2), _boxes(), _boxes(), ridge_penalty=NAN), ValueError, r"ridge_penalty must be a finite number >= 0, got nan"),
    Case("selective_search-2d", lambda: selective_search(torch.rand(8, 8)), ValueError, r"image must be \[3, H, W\], got \[8, 8\]"),
    Case("selective_search-range", lambda: selective_search(torch.full((3, 8, 8), 2.0)), ValueError, r"image"),
    Case("Strategy-k-negative", lambda: Strategy(k=-1), ValueError, r"k must be a positive number, got -1"),
    Case("conv_body-width-zero", lambda: conv_body(0), ValueError, r"width must be >= 1, got 0"),
    # IoU-aware RetinaNet
    Case("iou_aware_score-alpha-nan", lambda: iou_aware_score(torch.rand(3, 2), torch.rand(3), NAN), ValueError, r"alpha must be a finite number in \[0, 1\], got nan"),
    Case("iou_aware_score-alpha-range", lambda: iou_aware_score(torch.rand(3, 2), torch.rand(3), 1.5), ValueError, r"alpha must be a finite number in \[0, 1\], got 1.5"),
    Case("iou_aware_score-iou-shape", lambda: iou_aware_score(torch.rand(3, 2), torch.rand(2), 0.5), ValueError, r"iou_prob must be cls_prob's shape without its last .*iou_prob \[2\]"),
    Case("iou_aware_score-logits", lambda: iou_aware_score(torch.rand(3, 2) + 1, torch.rand(3), 0.5), ValueError, r"cls_prob must hold probabilities in \[0, 1\]"),
    Case("IoUAwareRetinaNetConfig-score_alpha", lambda: IoUAwareRetinaNetConfig(score_alpha=-0.1), ValueError, r"score_alpha must be a finite number in \[0, 1\], got -0.1"),
    Case("iou_targets-anchors-length", lambda: iou_targets(torch.zeros(3, 4), _boxes(2), _boxes(3)), ValueError, r"anchors must be \[3, 4\]"),
    Case("IoUAwareRetinaNetConfig-box_loss", lambda: IoUAwareRetinaNetConfig(box_loss="GIoU"), ValueError, r"box_loss must be one of 'smooth_l1', 'iou', 'giou', 'rectified', got 'GIoU'"),
]

# -------------------------------------------------------------------------- evaluation, viz
EVALUATION = [
    Case("match_detections-iou-nan", lambda: match_detections(_boxes(), torch.rand(3), _boxes(1), NAN), ValueError, r"iou_threshold must be in \[0, 1\], got nan"),
    Case("match_detections-scores-length", lambda: match_detections(_boxes(), torch.rand(2), _boxes(1)), ValueError, r"pred_scores must be \[3\]"),
    Case("match_detections-scores-nan", lambda: match_detections(_boxes(), torch.tensor([0.1, NAN, 0.3]), _boxes(1)), ValueError, r"pred_scores must be finite"),
    Case("voc_average_precision-method", lambda: voc_average_precision([_det()], [_target()], method="12-point"), ValueError, r"method must be one of .*got '12-point'"),
    Case("voc_average_precision-missing-scores", lambda: voc_average_precision([_target()], [_target()]), ValueError, r"preds\[0\] is missing \['scores'\]"),
    Case("MeanAveragePrecision-update-not-list", lambda: MeanAveragePrecision().update(_det(), [_target()]), TypeError, r"preds must be a list of dicts"),
    Case("MeanAveragePrecision-update-lengths", lambda: MeanAveragePrecision().update([_det()], [_target(), _target()]), ValueError, r"preds and targets"),
    Case("MeanAveragePrecision-update-int-boxes", lambda: MeanAveragePrecision().update([_det(boxes=torch.zeros(2, 4, dtype=torch.int64))], [_target()]), TypeError, r"preds\[0\]\['boxes'\] must be a floating-point tensor"),
    Case("MeanAveragePrecision-update-float-labels", lambda: MeanAveragePrecision().update([_det(labels=torch.zeros(2))], [_target()]), TypeError, r"preds\[0\]\['labels'\] must be an integer tensor"),
    Case("average_precision-nan", lambda: average_precision(torch.tensor([0.5, NAN]), torch.tensor([1.0, 0.5])), ValueError, r"recall must not contain NaN"),
    Case("average_precision-method", lambda: average_precision(torch.tensor([0.5]), torch.tensor([1.0]), method="x"), ValueError, r"method must be one of"),
    Case("class_color-negative", lambda: class_color(-1), ValueError, r"label must be an int >= 0, got -1"),
    Case("class_color-float", lambda: class_color(1.5), TypeError, r"label must be an int, got float 1.5"),
]

# fmt: on

CASES = OPS + DATA + MODELS + EVALUATION


def test_census_size(capsys):
    ids = [case.id for case in CASES]
    assert len(set(ids)) == len(ids), "case ids must be unique"
    assert len(CASES) >= 80
    with capsys.disabled():
        print(f"\nbad-input census: {len(CASES)} cases")


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input(case: Case, tmp_path):
    takes_path = case.call.__code__.co_argcount == 1
    with pytest.raises(case.error, match=case.match):
        case.call(tmp_path) if takes_path else case.call()


# ------------------------------------------------------------------ unusual but valid inputs


def test_empty_boxes_give_empty_outputs():
    empty = torch.zeros(0, 4)
    assert clip_boxes_to_image(empty, (10, 10)).shape == (0, 4)
    assert remove_small_boxes(empty, 1.0).shape == (0,)
    assert decode_boxes(torch.zeros(0, 8), empty).shape == (0, 8)
    assert encode_boxes(empty, empty).shape == (0, 4)
    match = match_anchors(torch.zeros(0, 5))
    assert match.labels.tolist() == [0] * 5  # an image without objects: all negative
    proposals = generate_proposals(
        torch.zeros(0), torch.zeros(0, 4), empty, (10, 10), pre_nms_top_n=5, post_nms_top_n=5
    )
    assert proposals.boxes.shape == (0, 4) and proposals.scores.shape == (0,)
    dets = postprocess_detections(torch.zeros(0, 3), torch.zeros(0, 12), empty, (10, 10))
    assert dets["boxes"].shape == (0, 4) and dets["labels"].shape == (0,)


def test_thresholds_at_their_bounds_are_accepted():
    anchors, objectness, deltas = _anchors_and_outputs()
    # score_thresh = 1 keeps only probability-1 scores: none here (sigmoid(0) = 0.5).
    assert generate_proposals(**_proposal_kwargs(score_thresh=1.0)).boxes.shape == (0, 4)
    assert generate_proposals(**_proposal_kwargs(score_thresh=0.0)).boxes.shape[0] >= 1
    # An IoU exactly 0 or 1 is an IoU; thresholds 0 and 1 are thresholds.
    match = match_anchors(torch.tensor([[0.0, 1.0]]), 1.0, 0.0, allow_low_quality_matches=False)
    assert match.labels.tolist() == [-1, 1]
    assert class_color(0) == class_color(10 - 10)
    assert convert_to_absolute_values((640, 480), (0.5, 0.5, 0.0, 0.0)) == (320, 240, 320, 240)


def test_count_windows_closed_form_matches_enumeration():
    for image_size, window, step, scale in [
        ((480, 640), (64, 64), 8, 1.5),
        ((97, 131), (13, 7), (3, 5), 1.3),
        ((64, 64), (64, 64), 1, 2.0),
    ]:
        count = count_windows(image_size, window, step, scale=scale)
        step_y, step_x = (step, step) if isinstance(step, int) else step
        enumerated = [
            len(window_positions(h, window[0], step_y))
            * len(window_positions(w, window[1], step_x))
            for h, w in count.sizes
        ]
        assert count.per_level == enumerated and count.total == sum(enumerated)


def test_count_windows_of_a_gigapixel_image_answers_at_once():
    start = time.perf_counter()
    count = count_windows((31_623, 31_623), (64, 64), 1)  # 10^9 pixels, step 1
    assert time.perf_counter() - start < 0.1
    assert count.per_level[0] == (31_623 - 64 + 1) ** 2


def test_float16_windows_are_exact_up_to_2048_pixels():
    half = sliding_windows((2048, 2048), (64, 64), 16, dtype=torch.float16)
    full = sliding_windows((2048, 2048), (64, 64), 16, dtype=torch.float32)
    assert torch.equal(half.float(), full)
    assert torch.unique(half, dim=0).shape[0] == half.shape[0]  # no two windows collide


def test_bench_map_runs_with_pycocotools_skipped():
    from benchmarks.bench_map import benchmark_rows, format_table

    rows = benchmark_rows(num_images=3, num_classes=80, skip=("pycocotools",))
    assert [row["implementation"] for row in rows][1] == "coursepkg"
    assert all(row.get("max_abs_diff") is None for row in rows)
    assert "coursepkg" in format_table(rows)
