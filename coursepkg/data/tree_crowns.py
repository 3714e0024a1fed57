"""Real photographs: aerial images of forest with every tree crown boxed, cut into tiles.

The course's other datasets are drawn on the fly; this one is four annotated photographs that ship
inside the ``deepforest`` package (Weinstein et al., DeepForest), read from its ``data/`` folder
with no network access:

==============================================  ============  =======  ======================
photograph                                      size (W x H)  crowns   site (NEON)
==============================================  ============  =======  ======================
``2019_YELL_2_528000_4978000_image_crop2``      2299 x 2472       574  Yellowstone (YELL)
``2019_YELL_2_541000_4977000_image_crop``       1249 x 1035       279  Yellowstone (YELL)
``SOAP_061``                                     400 x 400         37  Soaproot Saddle (SOAP)
``OSBS_029``                                     400 x 400         61  Ordway-Swisher (OSBS)
==============================================  ============  =======  ======================

Each photograph is a ``.png`` with a Pascal VOC ``.xml`` next to it, parsed with
:func:`coursepkg.data.formats.parse_voc_xml` and read with :func:`coursepkg.data.formats.read_image`.
Objects are named ``"Tree"``, except in SOAP_061, whose crowns are ``"Alive"`` (9) or ``"Dead"``
(28); the dataset has one class, every crown is label 0.

**Licence and provenance.** ``deepforest`` is released under the MIT licence (copyright (c) 2019
Ben Weinstein; ``LICENSE`` in the wheel's ``.dist-info``). The images are crops of the airborne
RGB orthophotos of the US National Ecological Observatory Network (NEON; the site codes YELL,
SOAP and OSBS and the ``2019_YELL_2_<easting>_<northing>`` tile names are NEON's), with crowns
annotated by the DeepForest authors. The package states no licence for the images apart from the
package's MIT licence, and its metadata say nothing about their source: whether NEON's own data
policy adds terms (citation of the NEON data product) is not stated in the package. Its README
asks users to cite Weinstein et al. (2020), "DeepForest: A Python package for RGB deep learning
tree crown delineation", Methods in Ecology and Evolution 11(12). Cite DeepForest and NEON when
you reuse the images.

**Only the data files are used.** ``import deepforest`` runs its ``__init__``, which imports
PyTorch Lightning and the rest of its heavy dependencies. The course installs the wheel with
``pip install --no-deps deepforest`` and never imports it: :func:`deepforest_data_dir` finds the
folder with :func:`importlib.util.find_spec`, which locates a top-level package without executing
it (``importlib.resources.files("deepforest")`` would import it).

**Tiles.** A photograph is cut into square tiles of ``tile_size`` pixels on a grid with step
``tile_size - overlap``; the last row and column are moved back to end at the border, so the
tiles cover the whole photograph. A box is clipped to each tile it overlaps and kept when the
clipped part holds at least ``min_visible`` of its area (default one half): a crown cut to a
sliver is not an object a detector should be asked to find, and nor is it background, so it
would be better ignored; dropping it is the simple choice.

**Split by photograph.** Tiles of one photograph overlap and neighbouring crowns look alike, so a
split by tile would leak; :data:`TREE_CROWN_SPLITS` puts the two Yellowstone crops and SOAP_061
(890 crowns) in ``"train"`` and holds out OSBS_029 (61 crowns), a site in Florida that training
never sees. Holding out a Yellowstone crop instead would leave too few crowns to learn from, and
SOAP_061's 37 crowns are too few for a stable mAP.

Chapter: book/real_photographs
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset

from coursepkg.data.formats import VOCAnnotation, parse_voc_xml, read_image

__all__ = [
    "TREE_CROWN_CLASSES",
    "TREE_CROWN_PHOTOGRAPHS",
    "TREE_CROWN_SPLITS",
    "TreeCrowns",
    "deepforest_data_dir",
    "tile_origins",
    "tile_boxes",
]

#: The one class of the dataset: label 0 is ``"Tree"``.
TREE_CROWN_CLASSES = ("Tree",)

# Object names in the XML files; every one is a tree crown (label 0). SOAP_061 marks its crowns
# "Alive" (9) or "Dead" (28) instead of "Tree".
_CROWN_NAMES = ("Tree", "Alive", "Dead")

#: The annotated photographs of ``deepforest/data`` (file stems of the ``.png`` / ``.xml`` pairs).
TREE_CROWN_PHOTOGRAPHS = (
    "2019_YELL_2_528000_4978000_image_crop2",
    "2019_YELL_2_541000_4977000_image_crop",
    "SOAP_061",
    "OSBS_029",
)

#: Which photographs each split reads (see the module docstring for why OSBS_029 is held out).
TREE_CROWN_SPLITS: Mapping[str, tuple[str, ...]] = {
    "train": TREE_CROWN_PHOTOGRAPHS[:3],
    "test": ("OSBS_029",),
}

_INSTALL_HINT = "pip install --no-deps deepforest"


def deepforest_data_dir() -> Path:
    """The ``data/`` folder of the installed ``deepforest`` package, found without importing it.

    Raises:
        FileNotFoundError: if ``deepforest`` is not installed or has no ``data/`` folder; the
            message names the fix, ``pip install --no-deps deepforest``.

    Chapter: book/real_photographs
    """
    try:
        spec = importlib.util.find_spec("deepforest")
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        folder = Path(location) / "data"
        if folder.is_dir():
            return folder
    raise FileNotFoundError(
        "the tree-crown photographs ship in the 'deepforest' package, which is not installed "
        f"(or has no data/ folder). Install its files only, without its dependencies: "
        f"`{_INSTALL_HINT}`"
    )


def tile_origins(length: int, tile_size: int, step: int) -> list[int]:
    """Start coordinates of tiles of ``tile_size`` along an axis of ``length`` pixels.

    Tiles start every ``step`` pixels; when they do not reach the end, one more tile ends exactly
    at ``length``, so the tiles cover ``[0, length)``.

    Raises:
        ValueError: if ``tile_size`` exceeds ``length`` or an argument is not a positive integer.

    Chapter: book/real_photographs
    """
    for name, value in (("length", length), ("tile_size", tile_size), ("step", step)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if tile_size > length:
        raise ValueError(f"tile_size ({tile_size}) must not exceed the image side ({length} px)")
    origins = list(range(0, length - tile_size + 1, step))
    if origins[-1] + tile_size < length:
        origins.append(length - tile_size)
    return origins


def tile_boxes(
    boxes: Tensor, x0: int, y0: int, tile_size: int, min_visible: float = 0.5
) -> tuple[Tensor, Tensor]:
    """The boxes seen in the tile ``[x0, x0 + tile_size) x [y0, y0 + tile_size)``, in its coordinates.

    Each box is clipped to the tile; it is kept when the clipped box has a positive width and
    height and at least ``min_visible`` of the box's area.

    Args:
        boxes: ``[G, 4]`` xyxy in the photograph's continuous pixel coordinates.
        x0, y0: the tile's top-left corner in the photograph.
        tile_size: the tile's side.
        min_visible: the smallest fraction of a box's area that must lie in the tile.

    Returns:
        ``(clipped [M, 4] float32 in the tile's coordinates, kept [M] int64 indices into boxes)``.

    Chapter: book/real_photographs
    """
    boxes = boxes.to(torch.float32).reshape(-1, 4)
    shifted = boxes - torch.tensor([x0, y0, x0, y0], dtype=torch.float32)
    clipped = shifted.clamp(0.0, float(tile_size))
    width, height = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = (width > 0) & (height > 0) & (width * height >= min_visible * area)
    kept = torch.nonzero(keep).flatten()
    return clipped[kept], kept


class TreeCrowns(Dataset):
    """Square tiles of annotated aerial photographs of forest; one class, ``"Tree"`` (label 0).

    Items are ``(image [3, tile_size, tile_size] float32 in [0, 1], {"boxes": [G, 4] float32 xyxy,
    "labels": [G] int64 zeros})``. Tiles are listed photograph by photograph, row by row;
    ``dataset.tiles[i]`` is ``(photograph, x0, y0)`` of item ``i``. The photographs are read when
    the dataset is built (the largest is 2299 x 2472 pixels, 68 MB as float32).

    Args:
        split: ``"train"`` or ``"test"``, a key of ``splits``.
        tile_size: side of the square tiles in pixels; at most the smallest photograph's side.
        overlap: pixels shared by neighbouring tiles, ``0 <= overlap < tile_size``.
        min_visible: a box clipped to a tile is kept when at least this fraction of its area is
            inside, in ``(0, 1]``.
        root: folder holding ``<photograph>.png`` and ``<photograph>.xml`` for every photograph
            of ``splits``; default :func:`deepforest_data_dir`.
        splits: photographs per split, no photograph in two splits; default
            :data:`TREE_CROWN_SPLITS`.

    Attributes:
        photographs: the split's photograph names.
        annotations: ``{name: VOCAnnotation}`` of the whole photographs, every label 0.
        images: ``{name: [3, H, W] float32}`` of the whole photographs.
        tiles: ``[(name, x0, y0), ...]``, one per item.

    Raises:
        ValueError: for a bad argument (the message names it), or an annotation whose size
            differs from its image's.
        FileNotFoundError: if ``root`` or a file is missing; without ``root``, if ``deepforest``
            is not installed (the message names ``pip install --no-deps deepforest``).

    Chapter: book/real_photographs
    """

    def __init__(
        self,
        split: str = "train",
        *,
        tile_size: int = 128,
        overlap: int = 0,
        min_visible: float = 0.5,
        root: str | Path | None = None,
        splits: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        splits = TREE_CROWN_SPLITS if splits is None else splits
        if not isinstance(splits, Mapping) or not splits:
            raise ValueError(f"splits must be a non-empty mapping of split -> photographs, got {splits!r}")
        seen: dict[str, str] = {}
        for name, photos in splits.items():
            if isinstance(photos, str) or not isinstance(photos, Sequence) or not photos:
                raise ValueError(f"splits[{name!r}] must be a non-empty sequence of names, got {photos!r}")
            for photo in photos:
                if photo in seen:
                    raise ValueError(
                        f"splits must not share a photograph: {photo!r} is in {seen[photo]!r} and {name!r}"
                    )
                seen[photo] = name
        if not isinstance(split, str) or split not in splits:
            raise ValueError(f"split must be one of {tuple(splits)}, got {split!r}")
        if isinstance(tile_size, bool) or not isinstance(tile_size, int) or tile_size < 1:
            raise ValueError(f"tile_size must be a positive integer, got {tile_size!r}")
        if isinstance(overlap, bool) or not isinstance(overlap, int) or not 0 <= overlap < tile_size:
            raise ValueError(f"overlap must be an integer in [0, tile_size={tile_size}), got {overlap!r}")
        if (
            isinstance(min_visible, bool)
            or not isinstance(min_visible, (int, float))
            or not 0.0 < min_visible <= 1.0
        ):
            raise ValueError(f"min_visible must be a number in (0, 1], got {min_visible!r}")
        if root is None:
            folder = deepforest_data_dir()
        else:
            if not isinstance(root, (str, Path)):
                raise ValueError(f"root must be a path, got {type(root).__name__}")
            folder = Path(root)
            if not folder.is_dir():
                raise FileNotFoundError(f"root {folder} is not a folder")
        self.split = split
        self.tile_size = tile_size
        self.overlap = overlap
        self.min_visible = float(min_visible)
        self.root = folder
        self.photographs: tuple[str, ...] = tuple(splits[split])
        self.annotations: dict[str, VOCAnnotation] = {}
        self.images: dict[str, Tensor] = {}
        self.tiles: list[tuple[str, int, int]] = []
        self._targets: list[dict[str, Tensor]] = []
        step = tile_size - overlap
        for photo in self.photographs:
            parsed = parse_voc_xml(folder / f"{photo}.xml", classes=_CROWN_NAMES)
            # one class: "Alive" and "Dead" crowns are trees too
            annotation = dataclasses.replace(parsed, labels=torch.zeros_like(parsed.labels))
            image = read_image(folder / f"{photo}.png")
            if tuple(image.shape[1:]) != annotation.image_size:
                raise ValueError(
                    f"{photo}: the annotation's size {annotation.image_size} differs from the "
                    f"image's {tuple(image.shape[1:])}"
                )
            height, width = annotation.image_size
            if tile_size > min(height, width):
                raise ValueError(
                    f"tile_size ({tile_size}) must not exceed the smaller side of photograph "
                    f"{photo!r} ({height} x {width})"
                )
            self.annotations[photo] = annotation
            self.images[photo] = image
            for y0 in tile_origins(height, tile_size, step):
                for x0 in tile_origins(width, tile_size, step):
                    boxes, kept = tile_boxes(annotation.boxes, x0, y0, tile_size, self.min_visible)
                    self.tiles.append((photo, x0, y0))
                    self._targets.append({"boxes": boxes, "labels": annotation.labels[kept].clone()})

    def __len__(self) -> int:
        return len(self.tiles)

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        if isinstance(index, bool) or not isinstance(index, int):
            raise ValueError(f"index must be an integer, got {index!r}")
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} tiles")
        photo, x0, y0 = self.tiles[index]
        s = self.tile_size
        image = self.images[photo][:, y0 : y0 + s, x0 : x0 + s].clone()
        target = self._targets[index]
        return image, {"boxes": target["boxes"].clone(), "labels": target["labels"].clone()}

    def num_boxes(self) -> dict[str, int]:
        """Crowns annotated in each whole photograph of the split."""
        return {photo: int(a.boxes.shape[0]) for photo, a in self.annotations.items()}
