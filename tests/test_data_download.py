"""Tests for coursepkg.data.download. Nothing here touches the network: the URLs are file://
fixtures in tmp_path and a closed port on 127.0.0.1."""

import hashlib
import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from coursepkg.data import (
    VOC2007_ARCHIVES,
    VOCDetection,
    download_url,
    download_voc2007,
    extract_archive,
    sha256sum,
)
from coursepkg.data import download as download_module

UNREACHABLE = "http://127.0.0.1:9/archive.tar"  # the discard port, closed: connection refused


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _make_tar(path: Path, files: dict[str, bytes], mode: str = "w") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, mode) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_sha256sum_matches_hashlib(tmp_path):
    data = bytes(range(256)) * 5000
    (tmp_path / "f").write_bytes(data)
    assert sha256sum(tmp_path / "f", chunk_size=1000) == _sha(data)


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
        assert len(remote.sha256) == 64 and int(remote.sha256, 16) >= 0
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
        filename=tar.name, urls=(UNREACHABLE, tar.as_uri()), sha256=sha256sum(tar), size=0
    )
    monkeypatch.setitem(download_module.VOC2007_ARCHIVES, "trainval", fake)
    voc = download_voc2007(tmp_path / "data", ["trainval"], progress=False)
    assert voc == tmp_path / "data" / "VOCdevkit" / "VOC2007"
    assert not (tmp_path / "data" / tar.name).exists()  # the archive was deleted
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
