"""Downloading a real dataset (for Colab or your own machine): fetch, verify, extract.

Nothing in the course downloads while the book is built or the tests run; these helpers are for
the optional exercises on real photographs (Pascal VOC 2007) and for the GPU profile's data
(COCO 2017). Every download is checked against a checksum and only then moved into place, and
every archive is extracted into a temporary folder beside its destination and only then moved
into place, so an interrupted or corrupted download or extraction never looks like a finished one.

Checksums are written ``"algorithm:hex"`` (:class:`RemoteFile`'s ``checksum``): ``"sha256:..."``
or ``"md5:..."``; a bare 64-digit hex string is a SHA-256.

The VOC 2007 checksums below were not computed here (this project builds offline). They are the
values published independently by TensorFlow Datasets (``url_checksums/voc.txt``, for the
pjreddie.com mirror, with the file sizes) and by torchvision's prototype VOC dataset (for the
Oxford host); the two agree, and a third-party report of a download from the Oxford host gives the
same values. If the host ever serves a different file, the download stops with a checksum error.

COCO publishes no checksums at all. The COCO 2017 MD5s below are the values that several
independent public download scripts agree on (among them PaddleDetection's dataset table, the R
``torchvision`` package's COCO dataset, MLCommons' CM automation and several training repositories'
setup scripts that run ``md5sum -c`` on the files from ``images.cocodataset.org``); none of them
gives a SHA-256 that others confirm. MD5 is broken against a deliberate forger, so here it only
guards against a truncated or corrupted download, not against tampering (the host is plain
``http://`` anyway). The sizes of ``val2017.zip`` (815,585,330 bytes) and of the annotations
(252,907,541 bytes) come from one third-party report of a download; ``train2017.zip``'s (about
19.3 GB, i.e. 18 GiB) is approximate. Sizes are for information only: the checksum is verified.

Chapter: book/data_and_conventions
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

from coursepkg.data.formats import CocoDetection, Transforms


@dataclass(frozen=True)
class RemoteFile:
    """A file published at one or more URLs (mirrors), with its checksum and size.

    Attributes:
        filename: the local file name.
        urls: where to get it, tried in order.
        checksum: ``"sha256:<64 hex digits>"`` or ``"md5:<32 hex digits>"`` (a bare 64-digit hex
            string is a SHA-256).
        size: size in bytes (for information; the checksum is what is verified).
    """

    filename: str
    urls: tuple[str, ...]
    checksum: str
    size: int


#: Pascal VOC 2007 archives (see the module docstring for where the checksums come from).
VOC2007_ARCHIVES = {
    "trainval": RemoteFile(
        filename="VOCtrainval_06-Nov-2007.tar",
        urls=(
            "http://host.robots.ox.ac.uk/pascal/VOC/voc2007/VOCtrainval_06-Nov-2007.tar",
            "https://pjreddie.com/media/files/VOCtrainval_06-Nov-2007.tar",
        ),
        checksum="sha256:7d8cd951101b0957ddfd7a530bdc8a94f06121cfc1e511bb5937e973020c7508",
        size=460_032_000,
    ),
    "test": RemoteFile(
        filename="VOCtest_06-Nov-2007.tar",
        urls=(
            "http://host.robots.ox.ac.uk/pascal/VOC/voc2007/VOCtest_06-Nov-2007.tar",
            "https://pjreddie.com/media/files/VOCtest_06-Nov-2007.tar",
        ),
        checksum="sha256:6836888e2e01dca84577a849d339fa4f73e1e4f135d312430c4856b5609b4892",
        size=451_020_800,
    ),
}

#: COCO 2017 archives: the images of each split and the train/val annotations (see the module
#: docstring for where the MD5s and sizes come from; ``train``'s size is approximate).
COCO2017_ARCHIVES = {
    "train": RemoteFile(
        filename="train2017.zip",
        urls=("http://images.cocodataset.org/zips/train2017.zip",),
        checksum="md5:cced6f7f71b7629ddf16f17bbcfab6b2",
        size=19_336_861_798,
    ),
    "val": RemoteFile(
        filename="val2017.zip",
        urls=("http://images.cocodataset.org/zips/val2017.zip",),
        checksum="md5:442b8da7639aecaf257c1dceb8ba8c80",
        size=815_585_330,
    ),
    "annotations": RemoteFile(
        filename="annotations_trainval2017.zip",
        urls=("http://images.cocodataset.org/annotations/annotations_trainval2017.zip",),
        checksum="md5:f4bbac642086de4f52a3fdda2de5fa2c",
        size=252_907_541,
    ),
}

#: The COCO 2017 splits :func:`download_coco2017` knows (``test2017`` has no public boxes).
COCO2017_SPLITS = ("train", "val")

_HEX_DIGITS = {"sha256": 64, "md5": 32}


def _new_hash(algorithm: str):
    # MD5 is only an integrity check here; saying so keeps it usable on FIPS-mode Pythons.
    return hashlib.new(algorithm, usedforsecurity=algorithm != "md5")


def _file_digest(path: str | Path, algorithm: str, chunk_size: int) -> str:
    digest = _new_hash(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def sha256sum(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """The hex SHA-256 of a file, read in chunks.

    Chapter: book/data_and_conventions
    """
    return _file_digest(path, "sha256", chunk_size)


def md5sum(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """The hex MD5 of a file, read in chunks (an integrity check only: see the module docstring).

    Chapter: book/data_and_conventions
    """
    return _file_digest(path, "md5", chunk_size)


def download_url(
    url: str,
    dest: str | Path,
    checksum: str | None,
    *,
    progress: bool = True,
    timeout: float = 60.0,
    chunk_size: int = 1 << 20,
) -> Path:
    """Download ``url`` to ``dest``, verify its checksum, and move it into place atomically.

    The file is streamed into a temporary ``*.part`` file beside ``dest`` while its hash is
    computed; only a file with the expected checksum is renamed to ``dest``. If ``dest`` already
    exists with the expected checksum, nothing is downloaded.

    Args:
        url: ``http(s)://``, ``ftp://`` or ``file://`` URL.
        dest: the file to write, or an existing folder (the URL's file name is used).
        checksum: the expected hash, ``"sha256:<64 hex digits>"`` or ``"md5:<32 hex digits>"``;
            a bare 64-digit hex string is a SHA-256. Pass ``None`` only for a file you trust: it
            is then not verified (an existing ``dest`` is kept as it is).
        progress: show a tqdm progress bar.
        timeout: seconds to wait for the server before giving up.
        chunk_size: bytes read at a time.

    Returns:
        The path of the downloaded file.

    Raises:
        ConnectionError: if the URL cannot be reached or read ("could not download ... (are you
            offline?)"); no file is left behind.
        ValueError: if the checksum does not match (the message names the file, which is
            deleted), or ``checksum`` is malformed (an unknown algorithm, the wrong number of
            hex digits).

    Chapter: book/data_and_conventions
    """
    from tqdm.auto import tqdm  # imported here: only downloads need a progress bar

    algorithm, expected = ("sha256", None) if checksum is None else _parse_checksum(checksum)
    dest = Path(dest)
    if dest.is_dir():
        dest = dest / (PurePosixPath(urlparse(url).path).name or "download")
    if dest.is_file() and (
        expected is None or _file_digest(dest, algorithm, chunk_size) == expected
    ):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, part_name = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".part")
    part = Path(part_name)
    try:
        digest = _new_hash(algorithm)
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
                f"checksum mismatch for {dest.name} from {url}: expected {algorithm} {expected}, "
                f"got {actual}; the downloaded file was deleted"
            )
        os.replace(part, dest)  # atomic on one file system: dest is complete or absent
    finally:
        part.unlink(missing_ok=True)
    return dest


def _parse_checksum(checksum: str) -> tuple[str, str]:
    """``"md5:ABC..."`` -> ``("md5", "abc...")``; a bare hex string is a SHA-256."""
    text = str(checksum).strip()
    algorithm, sep, value = text.partition(":")
    if not sep:
        algorithm, value = "sha256", text
    algorithm = algorithm.strip().lower()
    if algorithm not in _HEX_DIGITS:
        raise ValueError(
            f"checksum's algorithm must be one of {tuple(_HEX_DIGITS)}, got {algorithm!r} "
            f"(in {checksum!r})"
        )
    value = value.strip().lower()
    digits = _HEX_DIGITS[algorithm]
    if len(value) != digits or any(c not in "0123456789abcdef" for c in value):
        hint = "" if sep else " (or pass 'md5:<32 hex digits>' for an MD5)"
        raise ValueError(f"{algorithm} must be {digits} hex digits, got {checksum!r}{hint}")
    return algorithm, value


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


def _download_from_mirrors(remote: RemoteFile, folder: Path, *, progress: bool) -> Path:
    """``folder / remote.filename``, fetched from the first of ``remote.urls`` that answers."""
    errors = []
    for url in remote.urls:
        try:
            return download_url(url, folder / remote.filename, remote.checksum, progress=progress)
        except ConnectionError as err:
            errors.append(str(err))
    raise ConnectionError("; ".join(errors))


def _move_into(src: Path, dst: Path) -> None:
    """Move ``src`` to ``dst``, merging into folders that already exist (files are replaced)."""
    if src.is_dir() and dst.is_dir():
        for child in sorted(src.iterdir()):
            _move_into(child, dst / child.name)
    else:
        os.replace(src, dst)


def _fetch_and_extract(
    remote: RemoteFile,
    root: Path,
    tops: Iterable[str],
    *,
    keep_archives: bool,
    progress: bool,
) -> None:
    """Download ``remote`` into ``root``, extract it and move its top folders ``tops`` into ``root``.

    The archive is extracted into a temporary folder inside ``root`` first (same file system, so
    the moves are renames): a half-extracted archive never shows up under ``tops``.
    """
    root.mkdir(parents=True, exist_ok=True)
    archive = _download_from_mirrors(remote, root, progress=progress)
    staging = root / f".{remote.filename}.extracting"
    shutil.rmtree(staging, ignore_errors=True)  # left over from an interrupted run
    try:
        extract_archive(archive, staging)
        for top in tops:
            if not (staging / top).is_dir():
                raise ValueError(
                    f"{remote.filename} has no {top}/ folder: is it the right archive?"
                )
        for top in tops:
            _move_into(staging / top, root / top)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if not keep_archives:
        archive.unlink()


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
        _fetch_and_extract(
            VOC2007_ARCHIVES[image_set],
            root,
            ["VOCdevkit"],
            keep_archives=keep_archives,
            progress=progress,
        )
    return voc


@dataclass(frozen=True)
class Coco2017:
    """Where :func:`download_coco2017` puts COCO 2017 under ``root``.

    The layout is the one the official archives unpack to: ``root/{split}2017/*.jpg`` (the
    images) and ``root/annotations/instances_{split}2017.json`` (the boxes), for ``split`` in
    ``"train"``, ``"val"``.

    Attributes:
        root: the folder holding ``train2017/``, ``val2017/`` and ``annotations/``.

    Chapter: book/data_and_conventions
    """

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))  # a str works too

    def images(self, split: str) -> Path:
        """The folder of ``split``'s images, ``root/{split}2017``."""
        return self.root / f"{_check_coco_split(split)}2017"

    def annotations(self, split: str) -> Path:
        """``split``'s instances file, ``root/annotations/instances_{split}2017.json``."""
        return self.root / "annotations" / f"instances_{_check_coco_split(split)}2017.json"

    def dataset(self, split: str, *, transforms: Transforms | None = None) -> CocoDetection:
        """``split`` as a :class:`coursepkg.data.CocoDetection` (80 classes, xyxy boxes)."""
        return CocoDetection(self.images(split), self.annotations(split), transforms=transforms)


def _check_coco_split(split: str) -> str:
    if split not in COCO2017_SPLITS:
        raise ValueError(f"split must be one of {COCO2017_SPLITS}, got {split!r}")
    return split


def download_coco2017(
    root: str | Path,
    splits: Sequence[str] = ("val",),
    *,
    annotations: bool = True,
    keep_archives: bool = False,
    progress: bool = True,
) -> Coco2017:
    """Download and extract COCO 2017's images and instance annotations into ``root``.

    ``"val"`` is 5,000 images (``val2017.zip``, about 815 MB), ``"train"`` 118,287 images
    (``train2017.zip``, about 19 GB); the annotations of both come in one archive
    (``annotations_trainval2017.zip``, about 253 MB). Each archive is verified against its MD5
    (the only checksum COCO's users publish; it catches a truncated or corrupted download) and
    extracted into a temporary folder before it is moved into place, so a split whose folder
    exists is complete and is skipped, like annotations already there: running the function
    again after an interruption downloads only what is missing.

    Args:
        root: where to put ``{split}2017/`` and ``annotations/``.
        splits: which images, among ``"train"`` and ``"val"`` (a single string is one split).
        annotations: also fetch the annotations (``instances_{split}2017.json``) unless present.
        keep_archives: keep the ``.zip`` files after extraction (default: delete them).
        progress: show progress bars.

    Returns:
        A :class:`Coco2017` with the paths; ``download_coco2017(root).dataset("val")`` is the
        validation set as a :class:`coursepkg.data.CocoDetection`.

    Raises:
        ValueError: for an unknown split (naming ``splits``) or a checksum mismatch (naming the
            file, which is deleted).
        ConnectionError: if the host cannot be reached.

    Chapter: book/data_and_conventions
    """
    if isinstance(splits, str):
        splits = (splits,)
    unknown = [s for s in splits if s not in COCO2017_SPLITS]
    if unknown:
        raise ValueError(f"splits must be among {COCO2017_SPLITS}, got {unknown}")
    coco = Coco2017(Path(root))
    splits = tuple(dict.fromkeys(splits))  # in order, once each
    for split in splits:
        if not coco.images(split).is_dir():
            _fetch_and_extract(
                COCO2017_ARCHIVES[split],
                coco.root,
                [coco.images(split).name],
                keep_archives=keep_archives,
                progress=progress,
            )
    wanted = splits or COCO2017_SPLITS
    if annotations and not all(coco.annotations(s).is_file() for s in wanted):
        _fetch_and_extract(
            COCO2017_ARCHIVES["annotations"],
            coco.root,
            ["annotations"],
            keep_archives=keep_archives,
            progress=progress,
        )
    return coco
