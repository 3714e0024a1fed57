"""How long each page of the book takes to run, as measured by a real build of the website.

Jupyter Book times every page it executes. ``python scripts/exec_times.py _build --record cpu``
(after ``bash scripts/build_book.sh``) copies those times into ``chapter_times.json`` beside this
module, with the machine they were measured on; ``--record gpu`` does the same for a build on a
GPU machine (the "gpu" profile). The file ships inside the package, so a chapter opened in Colab
reads the same numbers as the website. Each chapter's opener shows them through
:func:`chapter_time_text`; a device with no recorded build says so instead of guessing.

Chapter: every chapter's opener (see also book/performance).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

__all__ = [
    "DEVICES",
    "TIMES_FILE",
    "ChapterTime",
    "chapter_time",
    "chapter_time_text",
    "format_duration",
    "load_chapter_times",
    "record_chapter_times",
]

#: The devices a build can be recorded for: "cpu" (the cpu profile) and "gpu" (the gpu profile).
DEVICES = ("cpu", "gpu")

#: The recorded times, inside the package so that Colab has them too.
TIMES_FILE = "chapter_times.json"


@dataclass(frozen=True)
class ChapterTime:
    """One page's execution time in one recorded build.

    Attributes:
        page: the page's name, e.g. ``"10_retinanet"``.
        device: ``"cpu"`` or ``"gpu"``.
        seconds: wall time of the whole page, every cell, as Jupyter Book measured it.
        machine: the machine of that build, in words (e.g. ``"2 CPU cores, 1 torch thread"``).
        recorded: the date of the build, ``YYYY-MM-DD``.
    """

    page: str
    device: str
    seconds: float
    machine: str
    recorded: str


def _times_path() -> Path:
    return Path(str(resources.files("coursepkg.engine").joinpath(TIMES_FILE)))


def _check_device(device: str) -> str:
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}; got {device!r}")
    return device


def load_chapter_times(path: Path | str | None = None) -> dict[str, dict]:
    """The recorded builds: ``{device: {"machine", "recorded", "seconds": {page: s}}}``.

    A device with no recorded build is absent. ``path`` defaults to the file in the package.
    """
    path = _times_path() if path is None else Path(path)
    if not path.exists():
        return {}
    with path.open() as f:
        data = json.load(f)
    if not isinstance(data, dict) or any(device not in DEVICES for device in data):
        raise ValueError(f"{path} is not a chapter-times file (keys must be among {DEVICES})")
    return data


def chapter_time(page: str, device: str = "cpu", path: Path | str | None = None) -> ChapterTime | None:
    """The recorded time of ``page`` on ``device``, or None when no build recorded it."""
    _check_device(device)
    build = load_chapter_times(path).get(device)
    if not build or page not in build.get("seconds", {}):
        return None
    return ChapterTime(page, device, float(build["seconds"][page]), build["machine"], build["recorded"])


def format_duration(seconds: float) -> str:
    """A duration as a reader says it: ``"40 s"``, ``"2 min 30 s"``, ``"1 h 05 min"``.

    Seconds are rounded to 5 s above a minute, minutes shown alone above an hour.
    """
    if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds >= 0):
        raise ValueError(f"seconds must be a finite number >= 0, got {seconds!r}")
    if seconds < 60:
        return f"{max(1, round(seconds))} s"
    total = 5 * round(seconds / 5)
    if total < 3600:
        minutes, rest = divmod(total, 60)
        return f"{minutes} min" if rest == 0 else f"{minutes} min {rest:02d} s"
    minutes = round(seconds / 60)
    hours, rest = divmod(minutes, 60)
    return f"{hours} h {rest:02d} min"


def chapter_time_text(page: str, device: str = "cpu", path: Path | str | None = None) -> str:
    """The opener's phrase for one device, e.g. ``"2 min 35 s (2 CPU cores, 1 torch thread)"``.

    Without a recorded build it says ``"not measured yet"``: the book never shows a guessed time.
    """
    timing = chapter_time(page, device, path)
    if timing is None:
        return "not measured yet"
    return f"{format_duration(timing.seconds)} ({timing.machine}, build of {timing.recorded})"


def record_chapter_times(
    seconds: dict[str, float],
    device: str,
    machine: str,
    recorded: str,
    path: Path | str | None = None,
) -> Path:
    """Store one build's page times for ``device``, keeping the other device's build.

    Args:
        seconds: page name -> execution seconds (see scripts/exec_times.py).
        device: ``"cpu"`` or ``"gpu"``.
        machine: the build's machine in words.
        recorded: the build's date, ``YYYY-MM-DD``.
        path: the file to write; defaults to the package's own.

    Raises:
        ValueError: unknown device, an empty ``machine``, a ``recorded`` that is not YYYY-MM-DD,
            no pages, or a time that is not a finite number >= 0.
    """
    _check_device(device)
    if not isinstance(machine, str) or not machine.strip():
        raise ValueError(f"machine must describe the build's machine in words, got {machine!r}")
    if not isinstance(recorded, str) or not re.fullmatch(r"\d{4}-\d\d-\d\d", recorded):
        raise ValueError(f"recorded must be a date YYYY-MM-DD, got {recorded!r}")
    if not seconds:
        raise ValueError("seconds is empty: the build executed no page")
    for page, value in seconds.items():
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise ValueError(f"seconds[{page!r}] must be a finite number >= 0, got {value!r}")
    path = _times_path() if path is None else Path(path)
    data = load_chapter_times(path)
    data[device] = {
        "machine": machine,
        "recorded": recorded,
        "seconds": {page: round(float(value), 1) for page, value in sorted(seconds.items())},
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    tmp.replace(path)
    return path
