"""Tests for coursepkg.data.tree_crowns: tiling, clipping and the split by photograph.

The first tests build tiny photographs with VOC annotations in a temporary folder (``root=``), so
they run without ``deepforest``; the last ones read the real files and are skipped when the
package's data are not installed (``pip install --no-deps deepforest``).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from coursepkg.data import TREE_CROWN_SPLITS, TreeCrowns, deepforest_data_dir
from coursepkg.data.tree_crowns import tile_boxes, tile_origins
from coursepkg.ops.validation import check_target


def _write_photo(folder: Path, name: str, size: tuple[int, int], boxes: list[tuple[int, ...]],
                 names: list[str] | None = None) -> None:
    """A PNG whose pixel (y, x) has red x, green y (so a tile's origin is readable) + its VOC XML."""
    height, width = size
    ys, xs = np.mgrid[0:height, 0:width]
    pixels = np.stack([xs % 256, ys % 256, np.full_like(xs, 7)], axis=-1).astype(np.uint8)
    Image.fromarray(pixels).save(folder / f"{name}.png")
    root = ET.Element("annotation")
    ET.SubElement(root, "filename").text = f"{name}.png"
    sz = ET.SubElement(root, "size")
    ET.SubElement(sz, "width").text = str(width)
    ET.SubElement(sz, "height").text = str(height)
    for i, (xmin, ymin, xmax, ymax) in enumerate(boxes):
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = names[i] if names else "Tree"
        bb = ET.SubElement(obj, "bndbox")
        for tag, v in zip(("xmin", "ymin", "xmax", "ymax"), (xmin, ymin, xmax, ymax), strict=True):
            ET.SubElement(bb, tag).text = str(v)
    ET.ElementTree(root).write(folder / f"{name}.xml")


@pytest.fixture
def photos(tmp_path):
    # VOC (1-based, inclusive) -> continuous: (xmin - 1, ymin - 1, xmax, ymax)
    _write_photo(tmp_path, "a", (40, 50), [(1, 1, 10, 10), (16, 1, 25, 10), (18, 31, 27, 40)])
    _write_photo(tmp_path, "b", (30, 30), [(6, 6, 15, 15)], names=["Dead"])
    _write_photo(tmp_path, "c", (20, 20), [(3, 3, 12, 12)], names=["Alive"])
    return tmp_path


SPLITS = {"train": ("a", "b"), "test": ("c",)}


def test_tile_origins_cover_the_axis():
    assert tile_origins(50, 20, 20) == [0, 20, 30]  # the last tile moved back to end at 50
    assert tile_origins(40, 20, 20) == [0, 20]
    assert tile_origins(20, 20, 20) == [0]
    assert tile_origins(50, 20, 15) == [0, 15, 30]
    for length, tile, step in [(50, 20, 20), (37, 8, 5), (128, 128, 64), (401, 128, 100)]:
        covered = np.zeros(length, bool)
        for o in tile_origins(length, tile, step):
            assert 0 <= o and o + tile <= length
            covered[o : o + tile] = True
        assert covered.all()
    with pytest.raises(ValueError, match="tile_size"):
        tile_origins(10, 20, 20)


def test_tile_boxes_clips_and_drops_boxes_mostly_outside():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [15.0, 0.0, 25.0, 10.0], [12.0, 0.0, 22.0, 10.0],
                          [30.0, 30.0, 40.0, 40.0]])
    clipped, kept = tile_boxes(boxes, 0, 0, 20)
    # box 1 keeps half its area (exactly the threshold), box 2 keeps 0.8, box 3 is outside
    assert kept.tolist() == [0, 1, 2]
    assert torch.equal(clipped, torch.tensor([[0.0, 0, 10, 10], [15, 0, 20, 10], [12, 0, 20, 10]]))
    clipped, kept = tile_boxes(boxes, 0, 0, 20, min_visible=0.6)
    assert kept.tolist() == [0, 2]
    # shifted into the tile's coordinates
    clipped, kept = tile_boxes(boxes, 10, 0, 20)
    assert kept.tolist() == [1, 2]
    assert torch.equal(clipped, torch.tensor([[5.0, 0, 15, 10], [2, 0, 12, 10]]))


def test_items_are_tiles_with_their_boxes_in_tile_coordinates(photos):
    data = TreeCrowns("train", tile_size=20, root=photos, splits=SPLITS)
    # a: 40 x 50 -> rows [0, 20], columns [0, 20, 30]: 6 tiles; b: 30 x 30 -> [0, 10]^2: 4 tiles
    assert len(data) == 10
    assert data.photographs == ("a", "b")
    assert data.num_boxes() == {"a": 3, "b": 1}
    assert data.tiles[:6] == [("a", 0, 0), ("a", 20, 0), ("a", 30, 0), ("a", 0, 20), ("a", 20, 20),
                              ("a", 30, 20)]
    for i in range(len(data)):
        image, target = data[i]
        photo, x0, y0 = data.tiles[i]
        assert image.shape == (3, 20, 20) and image.dtype == torch.float32
        assert 0.0 <= image.min() and image.max() <= 1.0
        # the pixels come from the tile's place in the photograph (red = x, green = y)
        assert round(float(image[0, 0, 0]) * 255) == x0 and round(float(image[1, 0, 0]) * 255) == y0
        check_target(target, image_size=(20, 20), num_classes=1, positive_size=True)
        assert target["labels"].dtype == torch.int64 and (target["labels"] == 0).all()
    # tile (a, 0, 0): box 0 whole, box 1 (15..25) keeps half of its width -> kept, clipped
    assert torch.equal(data[0][1]["boxes"], torch.tensor([[0.0, 0, 10, 10], [15, 0, 20, 10]]))
    # tile (a, 20, 0) sees box 1 from x 20: (15..25) -> (0..5)
    assert torch.equal(data[1][1]["boxes"], torch.tensor([[0.0, 0, 5, 10]]))
    # tile (a, 30, 20) holds none of box 2 (17..27 x 30..40) but 0 columns -> none
    assert data[5][1]["boxes"].shape == (0, 4)
    # tile (a, 0, 20): box 2 (17..27) keeps 3/10 of its width: dropped; tile (a, 20, 20) keeps 7/10
    assert data[3][1]["boxes"].shape == (0, 4)
    assert torch.equal(data[4][1]["boxes"], torch.tensor([[0.0, 10, 7, 20]]))
    # "Dead" and "Alive" crowns are trees: label 0
    assert data.annotations["b"].labels.tolist() == [0]


def test_every_annotated_box_appears_whole_in_some_tile_when_tiles_overlap(photos):
    data = TreeCrowns("train", tile_size=20, overlap=10, root=photos, splits=SPLITS)
    for photo, ann in data.annotations.items():
        for box in ann.boxes:
            found = False
            for i, (p, x0, y0) in enumerate(data.tiles):
                if p != photo:
                    continue
                shifted = box - torch.tensor([x0, y0, x0, y0], dtype=torch.float32)
                found |= bool((data[i][1]["boxes"] == shifted).all(dim=1).any())
            assert found, (photo, box)


def test_splits_are_disjoint_by_photograph(photos):
    train = TreeCrowns("train", tile_size=20, root=photos, splits=SPLITS)
    test = TreeCrowns("test", tile_size=20, root=photos, splits=SPLITS)
    assert not set(train.photographs) & set(test.photographs)
    assert {t[0] for t in test.tiles} == {"c"} and len(test) == 1
    assert not set(TREE_CROWN_SPLITS["train"]) & set(TREE_CROWN_SPLITS["test"])
    with pytest.raises(ValueError, match="splits must not share"):
        TreeCrowns("train", tile_size=20, root=photos, splits={"train": ("a",), "test": ("a", "c")})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"split": "val"}, "split"),
        ({"tile_size": 0}, "tile_size"),
        ({"tile_size": 25.0}, "tile_size"),
        ({"tile_size": 31}, "tile_size"),  # larger than photograph b (30 x 30)
        ({"overlap": 20}, "overlap"),
        ({"overlap": -1}, "overlap"),
        ({"min_visible": 0.0}, "min_visible"),
        ({"min_visible": 1.5}, "min_visible"),
        ({"splits": {}}, "splits"),
        ({"splits": {"train": "ab"}}, "splits"),
        ({"root": 3}, "root"),
    ],
)
def test_bad_arguments_are_refused_by_name(photos, kwargs, match):
    args = {"split": "train", "tile_size": 20, "root": photos, "splits": SPLITS} | kwargs
    split = args.pop("split")
    with pytest.raises(ValueError, match=match):
        TreeCrowns(split, **args)


def test_a_missing_root_or_file_is_named(photos, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        TreeCrowns("train", tile_size=20, root=tmp_path / "nowhere", splits=SPLITS)
    with pytest.raises(FileNotFoundError, match="zz"):
        TreeCrowns("train", tile_size=20, root=photos, splits={"train": ("zz",)})


def test_without_deepforest_the_error_names_the_fix(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps deepforest"):
        deepforest_data_dir()


# ------------------------------------------------------------------ the real files of deepforest


def _real_dir() -> Path:
    try:
        return deepforest_data_dir()
    except FileNotFoundError:
        pytest.skip("deepforest's data are not installed (pip install --no-deps deepforest)")


def test_reading_the_data_does_not_import_deepforest():
    _real_dir()
    import sys

    TreeCrowns("test", tile_size=128)
    assert "deepforest" not in sys.modules


@pytest.mark.parametrize("split", ["train", "test"])
def test_real_photographs_parse_every_object_and_tiles_cover_them(split):
    folder = _real_dir()
    data = TreeCrowns(split, tile_size=128)
    assert data.photographs == TREE_CROWN_SPLITS[split]
    for photo, ann in data.annotations.items():
        text = (folder / f"{photo}.xml").read_text()
        assert ann.boxes.shape[0] == text.count("<object>") > 0
        height, width = ann.image_size
        assert tuple(data.images[photo].shape) == (3, height, width)
        covered = torch.zeros(height, width, dtype=torch.bool)
        for p, x0, y0 in data.tiles:
            if p == photo:
                covered[y0 : y0 + 128, x0 : x0 + 128] = True
        assert covered.all(), photo
    total = 0
    for i in range(len(data)):
        image, target = data[i]
        assert image.shape == (3, 128, 128)
        check_target(target, image_size=(128, 128), num_classes=1, positive_size=True)
        total += target["boxes"].shape[0]
    assert total >= 0.9 * sum(data.num_boxes().values())  # most crowns are kept somewhere
