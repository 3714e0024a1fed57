"""Tests for coursepkg.data.formats on small VOC and COCO fixtures written into tmp_path."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from coursepkg.data import (
    VOC_CLASSES,
    CocoDetection,
    VOCDetection,
    parse_voc_xml,
    read_image,
)


def _write_image(path: Path, height: int, width: int, colour=(200, 30, 60)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((height, width, 3), colour, dtype=np.uint8)).save(path)


def _voc_xml(filename, height, width, objects) -> str:
    parts = [
        f"<annotation><folder>VOC2007</folder><filename>{filename}</filename>",
        f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>",
    ]
    for name, (xmin, ymin, xmax, ymax), difficult in objects:
        parts.append(
            f"<object><name>{name}</name><pose>Left</pose><truncated>0</truncated>"
            f"<difficult>{difficult}</difficult><bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin>"
            f"<xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object>"
        )
    return "".join(parts) + "</annotation>"


# Three images: two objects (one difficult), a box touching every border, no objects.
VOC_FIXTURE = {
    "000001": (20, 30, [("dog", (1, 2, 10, 12), 0), ("person", (5, 5, 6, 9), 1)]),
    "000002": (16, 24, [("cat", (1, 1, 24, 16), 0)]),
    "000003": (10, 10, []),
}


def make_voc(root: Path, image_set: str = "train") -> Path:
    for image_id, (height, width, objects) in VOC_FIXTURE.items():
        _write_image(root / "JPEGImages" / f"{image_id}.jpg", height, width)
        xml = root / "Annotations" / f"{image_id}.xml"
        xml.parent.mkdir(parents=True, exist_ok=True)
        xml.write_text(_voc_xml(f"{image_id}.jpg", height, width, objects))
    split = root / "ImageSets" / "Main" / f"{image_set}.txt"
    split.parent.mkdir(parents=True, exist_ok=True)
    split.write_text("\n".join(VOC_FIXTURE) + "\n")
    return root


def test_read_image(tmp_path):
    _write_image(tmp_path / "a.png", 3, 5, colour=(255, 0, 51))
    image = read_image(tmp_path / "a.png")
    assert image.shape == (3, 3, 5) and image.dtype == torch.float32
    torch.testing.assert_close(image[:, 0, 0], torch.tensor([1.0, 0.0, 0.2]))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_image(tmp_path / "missing.png")
    (tmp_path / "bad.jpg").write_text("not an image")
    with pytest.raises(ValueError, match="could not read image"):
        read_image(tmp_path / "bad.jpg")


def test_parse_voc_xml_converts_one_based_inclusive_boxes(tmp_path):
    root = make_voc(tmp_path / "VOC2007")
    ann = parse_voc_xml(root / "Annotations" / "000001.xml")
    assert ann.filename == "000001.jpg" and ann.image_size == (20, 30)
    # (xmin - 1, ymin - 1, xmax, ymax): pixel 1 (1-based) is column 0, covering [0, 1).
    torch.testing.assert_close(ann.boxes, torch.tensor([[0.0, 1, 10, 12], [4, 4, 6, 9]]))
    # The VOC devkit's width xmax - xmin + 1 is the continuous width x2 - x1.
    torch.testing.assert_close(ann.boxes[:, 2] - ann.boxes[:, 0], torch.tensor([10.0, 2.0]))
    torch.testing.assert_close(ann.labels, torch.tensor([VOC_CLASSES.index("dog"), 14]))
    torch.testing.assert_close(ann.difficult, torch.tensor([False, True]))
    empty = parse_voc_xml(root / "Annotations" / "000003.xml")
    assert empty.boxes.shape == (0, 4) and empty.labels.shape == (0,)


def test_voc_dataset_items(tmp_path):
    root = make_voc(tmp_path / "VOC2007")
    data = VOCDetection(root, "train")
    assert len(data) == 3 and data.ids == ["000001", "000002", "000003"]
    image, target = data[1]
    assert image.shape == (3, 16, 24)
    # A box covering the whole image, 1..24 x 1..16 in VOC, is exactly [0, 24] x [0, 16].
    torch.testing.assert_close(target["boxes"], torch.tensor([[0.0, 0, 24, 16]]))
    assert target["image_id"] == 1 and target["labels"].tolist() == [VOC_CLASSES.index("cat")]
    torch.testing.assert_close(image[:, 0, 0], torch.tensor([200, 30, 60]) / 255, atol=0.03, rtol=0)
    _, target = data[0]
    assert target["difficult"].tolist() == [False, True]
    _, target = VOCDetection(root, "train", keep_difficult=False)[0]
    assert target["labels"].tolist() == [VOC_CLASSES.index("dog")]
    assert target["difficult"].tolist() == [False]
    _, target = data[2]
    assert target["boxes"].shape == (0, 4)


def test_voc_custom_classes_and_transforms(tmp_path):
    root = make_voc(tmp_path / "VOC2007")

    def flip(image, target):
        return image.flip(-1), {**target, "flipped": True}

    data = VOCDetection(root, "train", classes=("cat", "dog", "person"), transforms=flip)
    _, target = data[0]
    assert target["labels"].tolist() == [1, 2] and target["flipped"]


def test_voc_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        VOCDetection(tmp_path / "nowhere")
    root = make_voc(tmp_path / "VOC2007")
    with pytest.raises(FileNotFoundError, match=r"ImageSets/Main/val.txt"):
        VOCDetection(root, "val")
    with pytest.raises(ValueError, match=r"000001.xml: unknown class name 'dog'"):
        VOCDetection(root, "train", classes=("cat", "person"))
    (root / "Annotations" / "000002.xml").write_text("<annotation><size>")
    with pytest.raises(ValueError, match="000002.xml is not valid XML"):
        VOCDetection(root, "train")
    (root / "Annotations" / "000002.xml").write_text(
        _voc_xml("x.jpg", 5, 5, [("cat", (4, 1, 2, 3), 0)])
    )
    with pytest.raises(ValueError, match="xmax < xmin"):
        VOCDetection(root, "train")
    (root / "Annotations" / "000002.xml").write_text(
        "<annotation><size><width>5</width><height>x</height></size></annotation>"
    )
    with pytest.raises(ValueError, match="<height> must be a number"):
        VOCDetection(root, "train")
    (root / "Annotations" / "000002.xml").write_text(
        "<annotation><size><width>5</width><height>5</height></size>"
        "<object><name>cat</name></object></annotation>"
    )
    with pytest.raises(ValueError, match="has no <bndbox>"):
        VOCDetection(root, "train")
    (root / "Annotations" / "000002.xml").unlink()
    with pytest.raises(FileNotFoundError, match="000002.xml does not exist"):
        VOCDetection(root, "train")
    shutil.rmtree(root / "JPEGImages")
    with pytest.raises(FileNotFoundError, match="JPEGImages"):
        VOCDetection(root, "train")


# --- COCO -----------------------------------------------------------------------------------

COCO_FIXTURE = {
    "images": [
        {"id": 42, "file_name": "a.png", "height": 20, "width": 30},
        {"id": 7, "file_name": "b.png", "height": 10, "width": 12},
        {"id": 9, "file_name": "c.png", "height": 8, "width": 8},  # no annotations
    ],
    # Ids are not contiguous and not sorted: labels follow the sorted ids.
    "categories": [
        {"id": 18, "name": "dog"},
        {"id": 1, "name": "person"},
        {"id": 3, "name": "car"},
    ],
    "annotations": [
        {"id": 1, "image_id": 42, "category_id": 18, "bbox": [2.5, 3, 10, 5.5], "area": 40.0,
         "iscrowd": 0},
        {"id": 2, "image_id": 42, "category_id": 1, "bbox": [0, 0, 30, 20], "area": 600.0,
         "iscrowd": 1},
        {"id": 3, "image_id": 7, "category_id": 3, "bbox": [1, 2, 3, 4], "area": 11.0,
         "iscrowd": 0},
    ],
}  # fmt: skip


def make_coco(tmp_path: Path, data=COCO_FIXTURE) -> tuple[Path, Path]:
    for img in data["images"]:
        _write_image(tmp_path / "images" / img["file_name"], img["height"], img["width"])
    ann = tmp_path / "instances.json"
    ann.write_text(json.dumps(data))
    return tmp_path / "images", ann


def test_coco_dataset_against_pycocotools(tmp_path):
    from pycocotools.coco import COCO

    image_dir, ann_file = make_coco(tmp_path)
    data = CocoDetection(image_dir, ann_file)
    assert data.classes == ("person", "car", "dog") and data.category_ids == (1, 3, 18)
    assert len(data) == 3
    coco = COCO(str(ann_file))
    for index, img in enumerate(COCO_FIXTURE["images"]):
        image, target = data[index]
        assert image.shape == (3, img["height"], img["width"])
        assert target["image_id"] == img["id"]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[img["id"]]))
        expected = torch.tensor(
            [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
             for a in anns], dtype=torch.float32,
        ).reshape(-1, 4)  # fmt: skip
        torch.testing.assert_close(target["boxes"], expected)
        ids = [data.category_ids[k] for k in target["labels"].tolist()]
        assert ids == [a["category_id"] for a in anns]
        assert target["iscrowd"].tolist() == [a["iscrowd"] for a in anns]
        torch.testing.assert_close(target["area"], torch.tensor([a["area"] for a in anns]))
    _, empty = data[2]
    assert empty["boxes"].shape == (0, 4) and empty["labels"].dtype == torch.int64


def test_coco_exact_values_and_fresh_targets(tmp_path):
    data = CocoDetection(*make_coco(tmp_path))
    _, target = data[0]
    torch.testing.assert_close(target["boxes"], torch.tensor([[2.5, 3, 12.5, 8.5], [0, 0, 30, 20]]))
    assert target["labels"].tolist() == [2, 0]
    target["extra"] = 1
    assert "extra" not in data[0][1]


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda d: d.pop("categories"), r"missing keys \['categories'\]"),
        (lambda d: d["annotations"][0].update(image_id=5), "annotation 1 has unknown image_id 5"),
        (lambda d: d["annotations"][2].update(category_id=2), "unknown category_id 2"),
        (lambda d: d["annotations"][1].update(bbox=[1, 2, 3]), r"bbox must be \[x, y, w, h\]"),
        (lambda d: d["annotations"][1].update(bbox=[1, 2, -3, 4]), "negative size"),
    ],
)
def test_coco_bad_annotations(tmp_path, mutate, match):
    data = json.loads(json.dumps(COCO_FIXTURE))
    mutate(data)
    with pytest.raises(ValueError, match=match):
        CocoDetection(*make_coco(tmp_path, data))


def test_coco_missing_or_invalid_files(tmp_path):
    image_dir, ann_file = make_coco(tmp_path)
    with pytest.raises(FileNotFoundError, match="annotation_file"):
        CocoDetection(image_dir, tmp_path / "none.json")
    with pytest.raises(FileNotFoundError, match="image_dir"):
        CocoDetection(tmp_path / "no_images", ann_file)
    ann_file.write_text("{not json")
    with pytest.raises(ValueError, match="is not valid JSON"):
        CocoDetection(image_dir, ann_file)
    ann_file.write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a COCO file"):
        CocoDetection(image_dir, ann_file)
