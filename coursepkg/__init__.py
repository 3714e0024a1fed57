"""coursepkg: the companion package of the object-detection course.

Every reference implementation the chapters teach lives here, one concept per module, in layers
whose imports flow one way (the book's page "How the package is organised" draws them):

* ``coursepkg.ops`` — pure tensor math: boxes and IoU, sliding windows, NMS, box coding, RoI
  pooling, the softmax label shift, input validation. Imports nothing else of the course.
* ``coursepkg.data`` — datasets, the target format, batching, readers and downloads (on ``ops``).
* ``coursepkg.models`` — the detector contract, backbones, anchors, assignment, RPN, RoI heads and
  one module per detector (on ``ops`` and ``data``).
* ``coursepkg.engine`` — training loop, checkpoints, run profiles and devices, recipes.
* ``coursepkg.evaluation`` (AP, VOC, COCO) and ``coursepkg.viz`` (plots), on ``ops`` only.
* ``coursepkg.grading`` — the exercise grader, apart from the rest.

Conventions (the "Data and conventions" page of the book explains them with pictures):

* Boxes are ``(x1, y1, x2, y2)`` floats in absolute pixels, continuous coordinates: width is
  ``x2 - x1``, an image of width ``W`` spans ``[0, W]`` and pixel column ``j`` covers ``[j, j + 1)``.
  Zero-area boxes are legal; ``x2 < x1`` is an error. Other formats appear only at the edges,
  through :func:`coursepkg.ops.boxes.box_convert`.
* The lecture notes' pixel-inclusive "+1" convention exists only behind the keyword-only flag
  ``legacy_plus_one=False``, with that name everywhere.
* ``image_size`` is always ``(height, width)``.
* Dataset labels are ``0..K-1``. Softmax heads put background at index 0 (see
  :func:`coursepkg.ops.labels.to_softmax_labels`).

Importing the package has no side effects.
"""

__version__ = "0.1.0"
