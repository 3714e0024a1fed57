"""``coursepkg.models``: the learnable parts and whole detectors, built on ``ops`` and ``data``.

The anatomy of a detector, one module per piece: :mod:`~coursepkg.models.detector` (the contract
every detector and the training loop share), :mod:`~coursepkg.models.backbones`,
:mod:`~coursepkg.models.anchors`, :mod:`~coursepkg.models.assignment` (matching and sampling),
:mod:`~coursepkg.models.rpn`, :mod:`~coursepkg.models.roi_heads`, and one module per detector
(:mod:`~coursepkg.models.rcnn`, :mod:`~coursepkg.models.fast_rcnn`,
:mod:`~coursepkg.models.faster_rcnn`). :mod:`~coursepkg.models.selective_search` is R-CNN's
proposal method. This ``__init__`` re-exports nothing.
"""
