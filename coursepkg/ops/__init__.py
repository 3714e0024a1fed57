"""``coursepkg.ops``: the pure tensor math of detection, imported by every layer above it.

Boxes and IoU (:mod:`~coursepkg.ops.boxes`), sliding windows, non-maximum suppression, box
coding, RoI pooling, the label shift of softmax heads and the checks every public function runs
on its inputs (:mod:`~coursepkg.ops.validation`). Nothing here imports another part of the
course, and nothing here holds learnable parameters: functions take tensors and return tensors on
the same device.

Import the functions from their modules (``from coursepkg.ops.boxes import box_iou``): this
``__init__`` re-exports nothing, so ``from coursepkg.ops import nms`` is the module ``nms``.
"""
