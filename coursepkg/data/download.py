"""Downloading a real dataset (for Colab or your own machine): fetch, verify, extract.

Nothing in the course downloads while the book is built or the tests run; these helpers are for
the optional exercises on real photographs (Pascal VOC 2007). Every download is checked against a
SHA-256 checksum and only then moved into place, so an interrupted or corrupted download never
looks like a finished one.

The VOC 2007 checksums below were not computed here (this project builds offline). They are the
values published independently by TensorFlow Datasets (``url_checksums/voc.txt``, for the
pjreddie.com mirror, with the file sizes) and by torchvision's prototype VOC dataset (for the
Oxford host); the two agree, and a third-party report of a download from the Oxford host gives the
same values. If the host ever serves a different file, the download stops with a checksum error.

Chapter: book/data_and_conventions
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse


@dataclass(frozen=True)
class RemoteFile:
    """A file published at one or more URLs (mirrors), with its checksum and size.

    Attributes:
        filename: the local file name.
        urls: where to get it, tried in order.
        sha256: hex SHA-256 of the file.
        size: size in bytes (for information; the checksum is what is verified).
    """

    filename: str
    urls: tuple[str, ...]
    sha256: str
    size: int


#: Pascal VOC 2007 archives (see the module docstring for where the checksums come from).
VOC2007_ARCHIVES = {
    "trainval": RemoteFile(
        filename="VOCtrainval_06-Nov-2007.tar",
        urls=(
            "http://host.robots.ox.ac.uk/pascal/VOC/voc2007/VOCtrainval_06-Nov-2007.tar",
            "https://pjreddie.com/media/files/VOCtrainval_06-Nov-2007.tar",
        ),
        sha256="7d8cd951101b0957ddfd7a530bdc8a94f06121cfc1e511bb5937e973020c7508",
        size=460_032_000,
    ),
    "test": RemoteFile(
        filename="VOCtest_06-Nov-2007.tar",
        urls=(
            "http://host.robots.ox.ac.uk/pascal/VOC/voc2007/VOCtest_06-Nov-2007.tar",
            "https://pjreddie.com/media/files/VOCtest_06-Nov-2007.tar",
        ),
        sha256="6836888e2e01dca84577a849d339fa4f73e1e4f135d312430c4856b5609b4892",
        size=451_020_800,
    ),
}


def sha256sum(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """The hex SHA-256 of a file, read in chunks.

    Chapter: book/data_and_conventions
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def download_url(
    url: str,
    dest: str | Path,
    sha256: str | None,
    *,
    progress: bool = True,
    timeout: float = 60.0,
    chunk_size: int = 1 << 20,
) -> Path:
    """Download ``url`` to ``dest``, verify its SHA-256, and move it into place atomically.

    The file is streamed into a temporary ``*.part`` file beside ``dest`` while its hash is
    computed; only a file with the expected checksum is renamed to ``dest``. If ``dest`` already
    exists with the expected checksum, nothing is downloaded.

    Args:
        url: ``http(s)://``, ``ftp://`` or ``file://`` URL.
        dest: the file to write, or an existing folder (the URL's file name is used).
        sha256: expected hex SHA-256. Pass ``None`` only for a file you trust: it is then not
            verified (an existing ``dest`` is kept as it is).
        progress: show a tqdm progress bar.
        timeout: seconds to wait for the server before giving up.
        chunk_size: bytes read at a time.

    Returns:
        The path of the downloaded file.

    Raises:
        ConnectionError: if the URL cannot be reached or read ("could not download ... (are you
            offline?)"); no file is left behind.
        ValueError: if the checksum does not match (the bad file is deleted) or ``sha256`` is
            not a 64-digit hex string.

    Chapter: book/data_and_conventions
    """
    from tqdm.auto import tqdm  # imported here: only downloads need a progress bar

    expected = None if sha256 is None else _check_sha256(sha256)
    dest = Path(dest)
    if dest.is_dir():
        dest = dest / (PurePosixPath(urlparse(url).path).name or "download")
    if dest.is_file() and (expected is None or sha256sum(dest) == expected):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, part_name = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".part")
    part = Path(part_name)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    total = response.headers.get("Content-Length")
                    with tqdm(
                        total=int(total) if total else None,
                        unit="B",
                        unit_scale=True,
                        desc=dest.name,
                        disable=not progress,
                    ) as bar:
                        while chunk := response.read(chunk_size):
                            out.write(chunk)
                            digest.update(chunk)
                            bar.update(len(chunk))
            except urllib.error.HTTPError as err:
                raise ConnectionError(
                    f"could not download {url}: the server answered {err.code} {err.reason}"
                ) from None
            except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
                reason = getattr(err, "reason", err)
                raise ConnectionError(
                    f"could not download {url}: {reason} (are you offline?)"
                ) from None
        actual = digest.hexdigest()
        if expected is not None and actual != expected:
            raise ValueError(
                f"checksum mismatch for {url}: expected sha256 {expected}, got {actual}; "
                f"the downloaded file was deleted"
            )
        os.replace(part, dest)  # atomic on one file system: dest is complete or absent
    finally:
        part.unlink(missing_ok=True)
    return dest


def _check_sha256(sha256: str) -> str:
    value = str(sha256).strip().lower()
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise ValueError(f"sha256 must be 64 hex digits, got {sha256!r}")
    return value


def _inside(root: Path, name: str) -> bool:
    target = (root / name).resolve()
    return target == root or root in target.parents


def extract_archive(path: str | Path, dest: str | Path) -> Path:
    """Extract a tar (plain, gz, bz2, xz) or zip archive into ``dest``, refusing unsafe entries.

    An entry whose path would land outside ``dest`` (``../x``, an absolute path) or a link that
    points outside it is refused before anything is written.

    Args:
        path: the archive.
        dest: the folder to extract into (created if missing).

    Returns:
        ``dest``.

    Raises:
        FileNotFoundError: if the archive does not exist.
        ValueError: if it is neither a tar nor a zip file, or an entry would escape ``dest``
            (the message names the entry).

    Chapter: book/data_and_conventions
    """
    path, dest = Path(path), Path(dest)
    if not path.is_file():
        raise FileNotFoundError(f"archive {path} does not exist")
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    if tarfile.is_tarfile(path):
        with tarfile.open(path) as tar:
            members = tar.getmembers()
            for member in members:
                unsafe = not _inside(root, member.name)
                if member.issym() or member.islnk():
                    # A symlink's target is relative to its own folder; a hard link's to the root.
                    base = (root / member.name).parent if member.issym() else root
                    unsafe = unsafe or not _inside(root, str(base / member.linkname))
                if unsafe or member.isdev():
                    raise ValueError(f"refusing to extract {member.name!r}: it escapes {dest}")
            if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4: a second line of defence
                tar.extractall(root, members=members, filter="data")
            else:
                tar.extractall(root, members=members)
    elif zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                if not _inside(root, name):
                    raise ValueError(f"refusing to extract {name!r}: it escapes {dest}")
            archive.extractall(root)
    else:
        raise ValueError(f"{path} is neither a tar nor a zip archive")
    return dest


def download_voc2007(
    root: str | Path,
    image_sets: Sequence[str] = ("trainval", "test"),
    *,
    keep_archives: bool = False,
    progress: bool = True,
) -> Path:
    """Download and extract Pascal VOC 2007 (about 460 MB per archive) into ``root``.

    Both archives extract into ``root/VOCdevkit/VOC2007``, the folder
    :class:`coursepkg.data.VOCDetection` reads. A part already extracted is skipped; each
    archive is tried at its mirrors in order and verified against its SHA-256.

    Args:
        root: where to put ``VOCdevkit``.
        image_sets: which archives: ``"trainval"`` (5,011 images) and/or ``"test"`` (4,952).
        keep_archives: keep the ``.tar`` files after extraction (default: delete them).
        progress: show progress bars.

    Returns:
        ``root/VOCdevkit/VOC2007``.

    Raises:
        ValueError: for an unknown image set or a checksum mismatch.
        ConnectionError: if no mirror can be reached.

    Chapter: book/data_and_conventions
    """
    unknown = [s for s in image_sets if s not in VOC2007_ARCHIVES]
    if unknown:
        raise ValueError(f"image_sets must be among {tuple(VOC2007_ARCHIVES)}, got {unknown}")
    root = Path(root)
    voc = root / "VOCdevkit" / "VOC2007"
    for image_set in image_sets:
        if (voc / "ImageSets" / "Main" / f"{image_set}.txt").is_file():
            continue
        remote = VOC2007_ARCHIVES[image_set]
        errors = []
        for url in remote.urls:
            try:
                archive = download_url(
                    url, root / remote.filename, remote.sha256, progress=progress
                )
                break
            except ConnectionError as err:
                errors.append(str(err))
        else:
            raise ConnectionError("; ".join(errors))
        extract_archive(archive, root)
        if not keep_archives:
            archive.unlink()
    return voc
