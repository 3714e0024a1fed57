"""Tests for coursepkg.data.download. Nothing here touches the network: the URLs are file://
fixtures in tmp_path and a closed port on 127.0.0.1."""

import hashlib
import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from coursepkg.data import (
    COCO2017_ARCHIVES,
    VOC2007_ARCHIVES,
    Coco2017,
    CocoDetection,
    RemoteFile,
    VOCDetection,
    download_coco2017,
    download_url,
    download_voc2007,
    extract_archive,
    md5sum,
    sha256sum,
)
from coursepkg.data import download as download_module

UNREACHABLE = "http://127.0.0.1:9/archive.tar"  # the discard port, closed: connection refused


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _make_tar(path: Path, files: dict[str, bytes], mode: str = "w") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, mode) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_sha256sum_and_md5sum_match_hashlib(tmp_path):
    data = bytes(range(256)) * 5000
    (tmp_path / "f").write_bytes(data)
    assert sha256sum(tmp_path / "f", chunk_size=1000) == _sha(data)
    assert md5sum(tmp_path / "f", chunk_size=1000) == _md5(data)


def test_download_verifies_and_reuses(tmp_path):
    source = _make_tar(tmp_path / "src" / "data.tar", {"a/b.txt": b"hello"})
    checksum = sha256sum(source)
    dest = download_url(source.as_uri(), tmp_path / "out" / "copy.tar", checksum, progress=False)
    assert dest == tmp_path / "out" / "copy.tar"
    assert dest.read_bytes() == source.read_bytes()
    assert [p.name for p in dest.parent.iterdir()] == ["copy.tar"]  # no .part left behind
    # A verified file is not downloaded again (the source is gone now).
    source.unlink()
    again = download_url(source.as_uri(), dest, checksum.upper(), progress=False)
    assert again == dest


def test_download_into_a_folder_uses_the_url_name(tmp_path):
    (tmp_path / "f.bin").write_bytes(b"xyz")
    (tmp_path / "out").mkdir()
    dest = download_url((tmp_path / "f.bin").as_uri(), tmp_path / "out", _sha(b"xyz"),
                        progress=False)  # fmt: skip
    assert dest == tmp_path / "out" / "f.bin" and dest.read_bytes() == b"xyz"


def test_checksum_mismatch_deletes_the_file(tmp_path):
    (tmp_path / "f.bin").write_bytes(b"real content")
    dest = tmp_path / "out" / "f.bin"
    with pytest.raises(ValueError, match=r"checksum mismatch.*expected sha256 0{64}.*deleted"):
        download_url((tmp_path / "f.bin").as_uri(), dest, "0" * 64, progress=False)
    assert not dest.exists()
    assert list((tmp_path / "out").iterdir()) == []


def test_existing_file_with_wrong_checksum_is_replaced(tmp_path):
    (tmp_path / "f.bin").write_bytes(b"good")
    dest = tmp_path / "copy.bin"
    dest.write_bytes(b"corrupted")
    download_url((tmp_path / "f.bin").as_uri(), dest, _sha(b"good"), progress=False)
    assert dest.read_bytes() == b"good"


def test_unreachable_and_missing_urls(tmp_path):
    with pytest.raises(ConnectionError, match=r"could not download http://127.0.0.1:9.*offline"):
        download_url(UNREACHABLE, tmp_path / "x.tar", "0" * 64, progress=False, timeout=5)
    with pytest.raises(ConnectionError, match="could not download file://"):
        download_url((tmp_path / "missing").as_uri(), tmp_path / "y", None, progress=False)
    assert list(tmp_path.iterdir()) == []  # nothing left behind


def test_bad_checksum_argument(tmp_path):
    with pytest.raises(ValueError, match="sha256 must be 64 hex digits"):
        download_url(UNREACHABLE, tmp_path / "x", "abc", progress=False)
    with pytest.raises(ValueError, match="sha256 must be 64 hex digits"):
        download_url(UNREACHABLE, tmp_path / "x", "sha256:" + "0" * 32, progress=False)
    with pytest.raises(ValueError, match="md5 must be 32 hex digits"):
        download_url(UNREACHABLE, tmp_path / "x", "md5:" + "0" * 64, progress=False)
    with pytest.raises(
        ValueError, match=r"algorithm must be one of \('sha256', 'md5'\), got 'sha1'"
    ):
        download_url(UNREACHABLE, tmp_path / "x", "sha1:" + "0" * 40, progress=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("algorithm", ["md5", "sha256"])
def test_md5_and_sha256_both_refuse_a_wrong_file(tmp_path, algorithm):
    hexdigest = {"md5": _md5, "sha256": _sha}[algorithm]
    (tmp_path / "f.bin").write_bytes(b"what the server sends")
    url, dest = (tmp_path / "f.bin").as_uri(), tmp_path / "out" / "f.bin"
    wrong = f"{algorithm}:{hexdigest(b'what the publisher hashed')}"
    with pytest.raises(
        ValueError, match=rf"checksum mismatch for f\.bin .*expected {algorithm} .*deleted"
    ):
        download_url(url, dest, wrong, progress=False)
    assert list((tmp_path / "out").iterdir()) == []
    # The right digest, upper-case and with the algorithm's name in capitals, is accepted...
    right = f"{algorithm.upper()}:{hexdigest(b'what the server sends').upper()}"
    assert download_url(url, dest, right, progress=False).read_bytes() == b"what the server sends"
    # ...and a file already there that does not match is replaced, not trusted.
    dest.write_bytes(b"truncated")
    download_url(url, dest, right, progress=False)
    assert dest.read_bytes() == b"what the server sends"


def test_extract_tar_gz_and_zip(tmp_path):
    tar = _make_tar(tmp_path / "a.tar.gz", {"top/x.txt": b"1", "top/sub/y.txt": b"2"}, "w:gz")
    out = extract_archive(tar, tmp_path / "out")
    assert (out / "top" / "x.txt").read_bytes() == b"1"
    assert (out / "top" / "sub" / "y.txt").read_bytes() == b"2"
    with zipfile.ZipFile(tmp_path / "b.zip", "w") as archive:
        archive.writestr("z/w.txt", b"3")
    extract_archive(tmp_path / "b.zip", tmp_path / "out2")
    assert (tmp_path / "out2" / "z" / "w.txt").read_bytes() == b"3"


@pytest.mark.parametrize("name", ["../escape.txt", "ok/../../escape.txt", "/tmp/abs_escape.txt"])
def test_extract_refuses_paths_outside_dest(tmp_path, name):
    tar = _make_tar(tmp_path / "evil.tar", {"fine.txt": b"ok", name: b"bad"})
    with pytest.raises(ValueError, match="refusing to extract"):
        extract_archive(tar, tmp_path / "out")
    assert not (tmp_path / "escape.txt").exists()
    assert not (tmp_path / "out" / "fine.txt").exists()  # checked before anything is written
    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as archive:
        archive.writestr(name, b"bad")
    with pytest.raises(ValueError, match="refusing to extract"):
        extract_archive(tmp_path / "evil.zip", tmp_path / "out")


def test_extract_refuses_links_outside_dest(tmp_path):
    with tarfile.open(tmp_path / "link.tar", "w") as tar:
        info = tarfile.TarInfo("inside/link")
        info.type = tarfile.SYMTYPE
        info.linkname = "../../outside"
        tar.addfile(info)
    with pytest.raises(ValueError, match="refusing to extract 'inside/link'"):
        extract_archive(tmp_path / "link.tar", tmp_path / "out")


def test_extract_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        extract_archive(tmp_path / "none.tar", tmp_path / "out")
    (tmp_path / "plain.txt").write_text("not an archive")
    with pytest.raises(ValueError, match="neither a tar nor a zip"):
        extract_archive(tmp_path / "plain.txt", tmp_path / "out")


def test_voc2007_table():
    assert set(VOC2007_ARCHIVES) == {"trainval", "test"}
    for remote in VOC2007_ARCHIVES.values():
        algorithm, digest = remote.checksum.split(":")
        assert algorithm == "sha256" and len(digest) == 64 and int(digest, 16) >= 0
        assert all(url.endswith(remote.filename) for url in remote.urls)
        assert remote.urls[0].startswith("http://host.robots.ox.ac.uk/pascal/VOC/voc2007/")


def test_download_voc2007_falls_back_to_a_mirror_and_extracts(tmp_path, monkeypatch):
    xml = (
        "<annotation><filename>000005.jpg</filename><size><width>4</width><height>3</height>"
        "</size><object><name>cat</name><difficult>0</difficult><bndbox><xmin>1</xmin>"
        "<ymin>1</ymin><xmax>4</xmax><ymax>3</ymax></bndbox></object></annotation>"
    )
    from PIL import Image

    jpg = io.BytesIO()
    Image.new("RGB", (4, 3), (10, 20, 30)).save(jpg, format="JPEG")
    base = "VOCdevkit/VOC2007/"
    tar = _make_tar(
        tmp_path / "mirror" / "VOCtrainval_06-Nov-2007.tar",
        {
            base + "Annotations/000005.xml": xml.encode(),
            base + "JPEGImages/000005.jpg": jpg.getvalue(),
            base + "ImageSets/Main/trainval.txt": b"000005\n",
        },
    )
    fake = download_module.RemoteFile(
        filename=tar.name, urls=(UNREACHABLE, tar.as_uri()), checksum=sha256sum(tar), size=0
    )
    monkeypatch.setitem(download_module.VOC2007_ARCHIVES, "trainval", fake)
    voc = download_voc2007(tmp_path / "data", ["trainval"], progress=False)
    assert voc == tmp_path / "data" / "VOCdevkit" / "VOC2007"
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["VOCdevkit"]  # archive gone
    image, target = VOCDetection(voc, "trainval")[0]
    assert image.shape == (3, 3, 4) and target["boxes"].tolist() == [[0.0, 0.0, 4.0, 3.0]]
    # Already extracted: nothing is downloaded again, even with every mirror gone.
    tar.unlink()
    assert download_voc2007(tmp_path / "data", ["trainval"], progress=False) == voc


def test_download_voc2007_errors(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="image_sets"):
        download_voc2007(tmp_path, ["train"])
    fake = download_module.RemoteFile("x.tar", (UNREACHABLE,), "0" * 64, 0)
    monkeypatch.setitem(download_module.VOC2007_ARCHIVES, "test", fake)
    with pytest.raises(ConnectionError, match="offline"):
        download_voc2007(tmp_path, ["test"], progress=False)


# ---------------------------------------------------------------------------------------------
# COCO 2017: archives built here in the official layout, served from file:// URLs.

# fmt: off
COCO_JSON = {
    "images": [
        {"id": 139, "file_name": "000000000139.jpg", "width": 8, "height": 6},
        {"id": 285, "file_name": "000000000285.png", "width": 5, "height": 4},
    ],
    "categories": [  # not in id order, ids not contiguous, like COCO's 80 of 1..90
        {"id": 18, "name": "dog", "supercategory": "animal"},
        {"id": 1, "name": "person", "supercategory": "person"},
    ],
    "annotations": [
        {"id": 1, "image_id": 139, "category_id": 18, "bbox": [1, 2, 3, 4], "area": 10.5,
         "iscrowd": 0, "segmentation": [[1, 2, 4, 2, 4, 6]]},
        {"id": 2, "image_id": 139, "category_id": 1, "bbox": [0.5, 0, 7.5, 6], "area": 40.0,
         "iscrowd": 1, "segmentation": {"counts": [0, 48], "size": [6, 8]}},
        {"id": 3, "image_id": 285, "category_id": 1, "bbox": [2, 1, 3, 3], "area": 9.0,
         "iscrowd": 0, "segmentation": [[2, 1, 5, 1, 5, 4]]},
    ],
}
# fmt: on


def _image_bytes(width: int, height: int, fmt: str) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 100, 50)).save(buffer, format=fmt)
    return buffer.getvalue()


def _make_zip(path: Path, files: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


@pytest.fixture
def coco_host(tmp_path, monkeypatch):
    """COCO2017_ARCHIVES pointed at fixture zips: an unreachable host first, then file:// ones."""
    import json

    host = tmp_path / "host"
    val = _make_zip(host / "val2017.zip", {
        "val2017/000000000139.jpg": _image_bytes(8, 6, "JPEG"),
        "val2017/000000000285.png": _image_bytes(5, 4, "PNG"),
    })  # fmt: skip
    empty = {"images": [], "annotations": [], "categories": COCO_JSON["categories"]}
    annotations = _make_zip(host / "annotations_trainval2017.zip", {
        "annotations/instances_val2017.json": json.dumps(COCO_JSON).encode(),
        "annotations/instances_train2017.json": json.dumps(empty).encode(),
        "annotations/captions_val2017.json": b"{}",
    })  # fmt: skip
    for key, archive in {"val": val, "annotations": annotations}.items():
        fake = RemoteFile(
            filename=archive.name,
            urls=(UNREACHABLE, archive.as_uri()),
            checksum="md5:" + md5sum(archive),
            size=archive.stat().st_size,
        )
        monkeypatch.setitem(download_module.COCO2017_ARCHIVES, key, fake)
    return host


def test_coco2017_table():
    assert set(COCO2017_ARCHIVES) == {"train", "val", "annotations"}
    for remote in COCO2017_ARCHIVES.values():
        algorithm, digest = remote.checksum.split(":")
        assert algorithm == "md5" and len(digest) == 32 and int(digest, 16) >= 0
        assert all(url.endswith("/" + remote.filename) for url in remote.urls)
        assert remote.urls[0].startswith("http://images.cocodataset.org/")
    assert COCO2017_ARCHIVES["val"].checksum == "md5:442b8da7639aecaf257c1dceb8ba8c80"
    assert COCO2017_ARCHIVES["annotations"].filename == "annotations_trainval2017.zip"


def test_download_coco2017_extracts_and_loads_with_coco_detection(tmp_path, coco_host):
    root = tmp_path / "coco"
    coco = download_coco2017(root, "val", progress=False)  # a single string is one split
    assert coco == Coco2017(root)
    assert coco.images("val") == root / "val2017"
    assert coco.annotations("val") == root / "annotations" / "instances_val2017.json"
    # The archives are deleted and no staging folder is left: only the official layout remains.
    assert sorted(p.name for p in root.iterdir()) == ["annotations", "val2017"]
    assert sorted(p.name for p in (root / "annotations").iterdir()) == [
        "captions_val2017.json", "instances_train2017.json", "instances_val2017.json"]  # fmt: skip

    dataset = CocoDetection(coco.images("val"), coco.annotations("val"))
    assert len(dataset) == 2 and dataset.classes == ("person", "dog")
    assert dataset.category_ids == (1, 18)
    image, target = dataset[0]
    assert image.shape == (3, 6, 8) and target["image_id"] == 139
    assert target["boxes"].tolist() == [[1.0, 2.0, 4.0, 6.0], [0.5, 0.0, 8.0, 6.0]]  # xyxy
    assert target["labels"].tolist() == [1, 0] and target["iscrowd"].tolist() == [0, 1]
    image, target = coco.dataset("val")[1]  # the same reader, through the paths object
    assert image.shape == (3, 4, 5) and target["boxes"].tolist() == [[2.0, 1.0, 5.0, 4.0]]


def test_download_coco2017_skips_what_is_there(tmp_path, coco_host):
    root = tmp_path / "coco"
    download_coco2017(root, ["val"], keep_archives=True, progress=False)
    assert (root / "val2017.zip").is_file() and (root / "annotations_trainval2017.zip").is_file()
    # Everything is extracted: nothing is fetched again, even with the host gone.
    for archive in coco_host.iterdir():
        archive.unlink()
    (root / "val2017.zip").unlink()
    (root / "annotations_trainval2017.zip").unlink()
    assert download_coco2017(root, ["val", "val"], progress=False) == Coco2017(root)
    assert sorted(p.name for p in root.iterdir()) == ["annotations", "val2017"]
    # Annotations missing: only they are fetched (the images' archive is not there to fetch).
    (root / "annotations" / "instances_val2017.json").unlink()
    with pytest.raises(ConnectionError, match="annotations_trainval2017.zip"):
        download_coco2017(root, ["val"], progress=False)
    assert download_coco2017(root, ["val"], annotations=False, progress=False) == Coco2017(root)


def test_download_coco2017_resumes_after_an_interrupted_extraction(tmp_path, coco_host):
    root = tmp_path / "coco"
    staging = root / ".val2017.zip.extracting" / "val2017"
    staging.mkdir(parents=True)
    (staging / "half.jpg").write_bytes(b"cut off")  # a run killed while unzipping
    coco = download_coco2017(root, ["val"], progress=False)
    assert sorted(p.name for p in root.iterdir()) == ["annotations", "val2017"]
    assert sorted(p.name for p in coco.images("val").iterdir()) == [
        "000000000139.jpg", "000000000285.png"]  # fmt: skip


def test_download_coco2017_checksum_mismatch(tmp_path, coco_host, monkeypatch):
    bad = RemoteFile("val2017.zip", ((coco_host / "val2017.zip").as_uri(),), "md5:" + "0" * 32, 0)
    monkeypatch.setitem(download_module.COCO2017_ARCHIVES, "val", bad)
    root = tmp_path / "coco"
    with pytest.raises(
        ValueError, match=r"checksum mismatch for val2017\.zip .*md5 0{32}.*deleted"
    ):
        download_coco2017(root, ["val"], progress=False)
    assert list(root.iterdir()) == []


def test_download_coco2017_archive_without_its_folder(tmp_path, coco_host, monkeypatch):
    wrong = _make_zip(tmp_path / "host2" / "val2017.zip", {"train2017/x.jpg": b"x"})
    fake = RemoteFile(wrong.name, (wrong.as_uri(),), "md5:" + md5sum(wrong), 0)
    monkeypatch.setitem(download_module.COCO2017_ARCHIVES, "val", fake)
    root = tmp_path / "coco"
    with pytest.raises(ValueError, match="val2017.zip has no val2017/ folder"):
        download_coco2017(root, ["val"], progress=False)
    assert list(root.iterdir()) == [root / "val2017.zip"]  # verified, kept; nothing extracted


def test_download_coco2017_errors(tmp_path, monkeypatch):
    with pytest.raises(
        ValueError, match=r"splits must be among \('train', 'val'\), got \['test'\]"
    ):
        download_coco2017(tmp_path, ["val", "test"])
    with pytest.raises(ValueError, match="split must be one of"):
        Coco2017(tmp_path).images("val2017")
    assert Coco2017(str(tmp_path)).annotations("train") == (
        tmp_path / "annotations" / "instances_train2017.json"
    )
    fake = RemoteFile(
        "val2017.zip", (UNREACHABLE, "http://127.0.0.1:9/mirror.zip"), "md5:" + "0" * 32, 0
    )
    monkeypatch.setitem(download_module.COCO2017_ARCHIVES, "val", fake)
    with pytest.raises(ConnectionError, match=r"127.0.0.1:9/archive.tar.*; .*mirror.zip.*offline"):
        download_coco2017(tmp_path / "coco", ["val"], progress=False)
    assert list((tmp_path / "coco").iterdir()) == []
