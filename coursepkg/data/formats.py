"""Readers for the two annotation formats of real detection datasets: Pascal VOC and COCO.

Both return items in the course's format (see :mod:`coursepkg.data.targets`): an image
``[3, H, W]`` float32 in ``[0, 1]`` and a target with ``"boxes"`` ``[G, 4]`` float32 xyxy in
continuous pixel coordinates and ``"labels"`` ``[G]`` int64 in ``0..K-1``.

**Pascal VOC** stores one XML file per image. Its ``<bndbox>`` holds the 1-based indices of the
first and last pixel *inside* the box (``xmin = 1`` is the leftmost column). Pixel ``i`` (1-based)
is column ``i - 1`` (0-based), which covers ``[i - 1, i)``, so the continuous box is::

    (x1, y1, x2, y2) = (xmin - 1, ymin - 1, xmax, ymax)

and the width ``xmax - xmin + 1`` of the VOC devkit (the notes' "+1") becomes ``x2 - x1``.

**COCO** stores one JSON file for a whole split; ``bbox`` is ``[x, y, width, height]`` already in
continuous coordinates, so ``(x1, y1, x2, y2) = (x, y, x + width, y + height)``. Category ids are
not contiguous (COCO's 80 classes use ids 1..90); they are sorted and mapped to labels ``0..K-1``.

Chapter: book/data_and_conventions
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from coursepkg.ops.boxes import box_convert

#: The 20 Pascal VOC classes in the devkit's (alphabetical) order: label k is VOC_CLASSES[k].
VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip

Transforms = Callable[[Tensor, dict], tuple[Tensor, dict]]


def read_image(path: str | Path) -> Tensor:
    """Read an image file as an RGB ``[3, H, W]`` float32 tensor in ``[0, 1]`` (with Pillow).

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: if Pillow cannot decode it.

    Chapter: book/data_and_conventions
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file {path} does not exist")
    try:
        with Image.open(path) as img:
            array = np.asarray(img.convert("RGB"), dtype=np.uint8)  # [H, W, 3]
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"could not read image {path}: {err}") from None
    return torch.from_numpy(array.copy()).permute(2, 0, 1).to(torch.float32) / 255.0


@dataclass(frozen=True)
class VOCAnnotation:
    """One parsed VOC XML file.

    Attributes:
        filename: the image file name given in the XML.
        image_size: ``(height, width)`` from ``<size>``.
        boxes: ``[G, 4]`` float32, continuous xyxy (``xmin - 1, ymin - 1, xmax, ymax``).
        labels: ``[G]`` int64, indices into the class list.
        difficult: ``[G]`` bool, the ``<difficult>`` flag (ignored by the VOC evaluation).
    """

    filename: str
    image_size: tuple[int, int]
    boxes: Tensor
    labels: Tensor
    difficult: Tensor


def _text(element: ET.Element, tag: str, path: Path) -> str:
    found = element.find(tag)
    if found is None or found.text is None:
        raise ValueError(f"{path}: <{element.tag}> has no <{tag}>")
    return found.text.strip()


def _number(element: ET.Element, tag: str, path: Path) -> float:
    text = _text(element, tag, path)
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{path}: <{tag}> must be a number, got {text!r}") from None


def parse_voc_xml(path: str | Path, classes: Sequence[str] = VOC_CLASSES) -> VOCAnnotation:
    """Parse one Pascal VOC annotation file into continuous-coordinate boxes.

    Args:
        path: the XML file.
        classes: the class names; an object named ``classes[k]`` gets label ``k``.

    Returns:
        A :class:`VOCAnnotation`.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: if the XML is malformed, a required tag is missing or not a number, the size
            is not two positive integers, a box has ``xmax < xmin``, NaN or inf, or leaves the
            image (``1 <= xmin``, ``xmax <= width``), or an object's class is not in ``classes``
            (the message names the file).

    Chapter: book/data_and_conventions
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"VOC annotation {path} does not exist")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise ValueError(f"{path} is not valid XML: {err}") from None
    size = root.find("size")
    if size is None:
        raise ValueError(f"{path}: <annotation> has no <size>")
    height, width = _number(size, "height", path), _number(size, "width", path)
    whole = all(math.isfinite(v) and v == int(v) >= 1 for v in (height, width))
    if not whole:
        raise ValueError(
            f"{path}: <size> height and width must be positive integers, got {(height, width)}"
        )
    image_size = (int(height), int(width))
    filename = root.findtext("filename", default="").strip()
    boxes, labels, difficult = [], [], []
    for obj in root.iter("object"):
        name = _text(obj, "name", path)
        if name not in classes:
            raise ValueError(f"{path}: unknown class name {name!r}; classes are {tuple(classes)}")
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise ValueError(f"{path}: object {name!r} has no <bndbox>")
        xmin, ymin, xmax, ymax = (
            _number(bndbox, t, path) for t in ("xmin", "ymin", "xmax", "ymax")
        )
        corners = (xmin, ymin, xmax, ymax)
        if not all(math.isfinite(v) for v in corners):
            raise ValueError(f"{path}: object {name!r} <bndbox> must be finite, got {corners}")
        if xmax < xmin or ymax < ymin:
            raise ValueError(f"{path}: object {name!r} has xmax < xmin or ymax < ymin: {corners}")
        # VOC pixel indices are 1-based and inclusive: 1 <= xmin, xmax <= width.
        height, width = image_size
        if xmin < 1 or ymin < 1 or xmax > width or ymax > height:
            raise ValueError(
                f"{path}: object {name!r} <bndbox> must lie inside the image (1 <= xmin, "
                f"xmax <= width = {width}, 1 <= ymin, ymax <= height = {height}), got {corners}"
            )
        # 1-based inclusive pixel indices -> continuous coordinates (see the module docstring).
        boxes.append((xmin - 1, ymin - 1, xmax, ymax))
        labels.append(classes.index(name))
        difficult.append(obj.findtext("difficult", default="0").strip() == "1")
    return VOCAnnotation(
        filename=filename,
        image_size=image_size,
        boxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        labels=torch.tensor(labels, dtype=torch.int64),
        difficult=torch.tensor(difficult, dtype=torch.bool),
    )


class VOCDetection(Dataset):
    """A Pascal VOC detection split read from the devkit's folder layout.

    ``root`` is a ``VOC<year>`` folder (for example ``.../VOCdevkit/VOC2007``) holding::

        Annotations/<id>.xml   JPEGImages/<id>.jpg   ImageSets/Main/<image_set>.txt

    Items are ``(image, target)`` with ``target = {"boxes": [G, 4], "labels": [G],
    "difficult": [G] bool, "image_id": index}``; ``dataset.ids[index]`` is the VOC image id.
    Annotations are parsed when the dataset is built, so a bad file fails early.

    Args:
        root: the ``VOC<year>`` folder.
        image_set: the split file's name in ``ImageSets/Main`` (``"train"``, ``"val"``,
            ``"trainval"``, ``"test"``).
        classes: class names; label ``k`` is ``classes[k]``.
        keep_difficult: keep objects flagged difficult (with ``difficult=True``, as the VOC
            evaluation expects) or drop them.
        transforms: optional ``(image, target) -> (image, target)`` applied to every item.

    Raises:
        FileNotFoundError: if ``root``, a sub-folder or the split file is missing.
        ValueError: if an annotation is malformed or names an unknown class.

    Chapter: book/data_and_conventions
    """

    def __init__(
        self,
        root: str | Path,
        image_set: str = "trainval",
        classes: Sequence[str] = VOC_CLASSES,
        *,
        keep_difficult: bool = True,
        transforms: Transforms | None = None,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"VOC root {self.root} does not exist or is not a folder")
        split_file = self.root / "ImageSets" / "Main" / f"{image_set}.txt"
        missing = [
            str(p)
            for p in (self.root / "Annotations", self.root / "JPEGImages", split_file)
            if not p.exists()
        ]
        if missing:
            raise FileNotFoundError(
                f"not a VOC folder (expected Annotations/, JPEGImages/ and "
                f"ImageSets/Main/{image_set}.txt under {self.root}); missing: {missing}"
            )
        self.image_set = image_set
        self.classes = tuple(classes)
        self.keep_difficult = keep_difficult
        self.transforms = transforms
        self.ids = [line.strip() for line in split_file.read_text().splitlines() if line.strip()]
        self.annotations = [
            parse_voc_xml(self.root / "Annotations" / f"{i}.xml", self.classes) for i in self.ids
        ]

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[Tensor, dict]:
        ann = self.annotations[index]
        image = read_image(self.root / "JPEGImages" / f"{self.ids[index]}.jpg")
        keep = slice(None) if self.keep_difficult else ~ann.difficult
        target = {
            "boxes": ann.boxes[keep],
            "labels": ann.labels[keep],
            "difficult": ann.difficult[keep],
            "image_id": index % len(self),
        }
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target


class CocoDetection(Dataset):
    """A COCO-format detection set: a folder of images and one JSON annotation file.

    Every image listed in the JSON is an item, including images without annotations (their
    targets have ``[0, 4]`` boxes). Items are ``(image, target)`` with ``target = {"boxes":
    [G, 4] xyxy, "labels": [G] in 0..K-1, "image_id": the COCO image id, "iscrowd": [G] int64,
    "area": [G] float32 (COCO's segment area)}``. ``classes[k]`` is label ``k``'s name and
    ``category_ids[k]`` its COCO category id (to write results back in COCO's ids).

    Args:
        image_dir: folder holding the images' ``file_name``s.
        annotation_file: the COCO JSON file (keys ``images``, ``annotations``, ``categories``).
        transforms: optional ``(image, target) -> (image, target)`` applied to every item.

    Raises:
        FileNotFoundError: if the folder or the file is missing.
        ValueError: if the JSON is invalid or inconsistent (missing keys, an annotation pointing
            to an unknown image or category, a bbox that is not 4 finite numbers with ``w, h >= 0``,
            two images with the same id).

    Chapter: book/data_and_conventions
    """

    def __init__(
        self,
        image_dir: str | Path,
        annotation_file: str | Path,
        *,
        transforms: Transforms | None = None,
    ) -> None:
        self.image_dir = Path(image_dir)
        annotation_file = Path(annotation_file)
        if not self.image_dir.is_dir():
            raise FileNotFoundError(f"image_dir {self.image_dir} does not exist or is not a folder")
        if not annotation_file.is_file():
            raise FileNotFoundError(f"annotation_file {annotation_file} does not exist")
        try:
            data = json.loads(annotation_file.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{annotation_file} is not valid JSON: {err}") from None
        if not isinstance(data, dict):
            raise ValueError(
                f"{annotation_file} is not a COCO file: the top level is not an object"
            )
        missing = [k for k in ("images", "annotations", "categories") if k not in data]
        if missing:
            raise ValueError(f"{annotation_file} is not a COCO file: missing keys {missing}")
        categories = sorted(data["categories"], key=lambda c: c["id"])
        self.category_ids = tuple(int(c["id"]) for c in categories)
        self.classes = tuple(str(c["name"]) for c in categories)
        label_of = {cid: k for k, cid in enumerate(self.category_ids)}
        self.images = list(data["images"])
        self.transforms = transforms
        per_image: dict[int, list[dict]] = {}
        for img in self.images:
            if int(img["id"]) in per_image:
                raise ValueError(
                    f"{annotation_file}: image ids must be unique, image id {img['id']} appears "
                    "twice (its annotations could not be told apart)"
                )
            per_image[int(img["id"])] = []
        for ann in data["annotations"]:
            _check_coco_annotation(ann, per_image, label_of, annotation_file)
            per_image[int(ann["image_id"])].append(ann)
        self._targets = [
            _coco_target(per_image[int(img["id"])], int(img["id"]), label_of) for img in self.images
        ]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, dict]:
        image = read_image(self.image_dir / self.images[index]["file_name"])
        target = {key: value for key, value in self._targets[index].items()}  # a fresh dict
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target


def _check_coco_annotation(
    ann: dict, per_image: dict[int, list], label_of: dict[int, int], path: Path
) -> None:
    ann_id = ann.get("id", "?")
    if ann.get("image_id") not in per_image:
        raise ValueError(f"{path}: annotation {ann_id} has unknown image_id {ann.get('image_id')}")
    if ann.get("category_id") not in label_of:
        raise ValueError(
            f"{path}: annotation {ann_id} has unknown category_id {ann.get('category_id')}"
        )
    bbox = ann.get("bbox")
    if not (
        isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)
    ):
        raise ValueError(f"{path}: annotation {ann_id} bbox must be [x, y, w, h], got {bbox!r}")
    if not all(math.isfinite(v) for v in bbox):
        raise ValueError(f"{path}: annotation {ann_id} bbox must be finite, got {bbox}")
    if bbox[2] < 0 or bbox[3] < 0:
        raise ValueError(f"{path}: annotation {ann_id} bbox has a negative size: {bbox}")


def _coco_target(anns: list[dict], image_id: int, label_of: dict[int, int]) -> dict:
    xywh = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
    return {
        "boxes": box_convert(xywh, "xywh", "xyxy"),  # [G, 4]
        "labels": torch.tensor([label_of[a["category_id"]] for a in anns], dtype=torch.int64),
        "image_id": image_id,
        "iscrowd": torch.tensor([int(a.get("iscrowd", 0)) for a in anns], dtype=torch.int64),
        "area": torch.tensor(
            [float(a.get("area", a["bbox"][2] * a["bbox"][3])) for a in anns], dtype=torch.float32
        ),
    }
