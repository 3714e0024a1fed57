"""The course's datasets and the detection item format.

* :class:`ShapesDataset` (:mod:`.shapes`): coloured geometric shapes on cluttered backgrounds,
  generated on the fly, sizes from 8 px to half the image.
* :class:`DigitsDetectionDataset` (:mod:`.digits`): scikit-learn's handwritten digits scattered
  over a canvas, with disjoint ``"train"`` and ``"test"`` digit images.
* :class:`VOCDetection` and :class:`CocoDetection` (:mod:`.formats`): readers for real datasets in
  the Pascal VOC and COCO annotation formats; :func:`download_voc2007` (:mod:`.download`) fetches
  VOC 2007 for the optional exercises on real photographs, :func:`download_coco2017` COCO 2017
  for the GPU profile.
* :class:`TreeCrowns` (:mod:`.tree_crowns`): real aerial photographs with every tree crown boxed,
  read from the ``deepforest`` package's data files (no network), cut into tiles and split by
  photograph.
* :mod:`.targets`: the item format (``image [3, H, W]``, ``target = {"boxes", "labels", ...}``),
  :func:`check_target` and :func:`collate_detection` (the label shift of softmax heads lives in
  :mod:`coursepkg.ops.labels`).

Every synthetic item is drawn from its own generator seeded from ``(seed, index)``, so the data do
not depend on the number of DataLoader workers or the order items are read in.

Chapter: book/data_and_conventions
"""

from coursepkg.data.digits import DIGIT_CLASSES, DigitsDetectionDataset, digit_split_indices
from coursepkg.data.download import (
    COCO2017_ARCHIVES,
    COCO2017_SPLITS,
    VOC2007_ARCHIVES,
    Coco2017,
    RemoteFile,
    download_coco2017,
    download_url,
    download_voc2007,
    extract_archive,
    md5sum,
    sha256sum,
)
from coursepkg.data.formats import (
    VOC_CLASSES,
    CocoDetection,
    VOCAnnotation,
    VOCDetection,
    parse_voc_xml,
    read_image,
)
from coursepkg.data.shapes import (
    DEFAULT_SHAPE_CLASSES,
    SHAPE_CLASSES,
    ShapesDataset,
    shape_mask,
)
from coursepkg.data.synthetic import (
    SyntheticDetection,
    SyntheticSample,
    cluttered_background,
    item_generator,
    masks_to_tight_boxes,
)
from coursepkg.data.targets import (
    check_target,
    collate_detection,
)
from coursepkg.data.tree_crowns import (
    TREE_CROWN_CLASSES,
    TREE_CROWN_PHOTOGRAPHS,
    TREE_CROWN_SPLITS,
    TreeCrowns,
    deepforest_data_dir,
)

__all__ = [
    "COCO2017_ARCHIVES",
    "COCO2017_SPLITS",
    "DEFAULT_SHAPE_CLASSES",
    "DIGIT_CLASSES",
    "SHAPE_CLASSES",
    "TREE_CROWN_CLASSES",
    "TREE_CROWN_PHOTOGRAPHS",
    "TREE_CROWN_SPLITS",
    "VOC2007_ARCHIVES",
    "VOC_CLASSES",
    "Coco2017",
    "CocoDetection",
    "DigitsDetectionDataset",
    "RemoteFile",
    "ShapesDataset",
    "SyntheticDetection",
    "SyntheticSample",
    "TreeCrowns",
    "VOCAnnotation",
    "VOCDetection",
    "check_target",
    "cluttered_background",
    "deepforest_data_dir",
    "collate_detection",
    "digit_split_indices",
    "download_coco2017",
    "download_url",
    "download_voc2007",
    "extract_archive",
    "item_generator",
    "masks_to_tight_boxes",
    "md5sum",
    "parse_voc_xml",
    "read_image",
    "sha256sum",
    "shape_mask",
]
