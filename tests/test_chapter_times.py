"""coursepkg.engine.chapter_times: the recorded page times that every chapter's opener shows."""

import json
import math
import re
from pathlib import Path

import pytest

from coursepkg.engine import chapter_times as ct

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted(p.stem for p in (ROOT / "book").glob("[0-9][0-9]_*.md")) + ["real_photographs"]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.2, "1 s"), (42.4, "42 s"), (59.4, "59 s"), (60, "1 min"), (151, "2 min 30 s"),
     (179.9, "3 min"), (3599, "1 h 00 min"), (3725, "1 h 02 min")],
)
def test_format_duration(seconds, text):
    assert ct.format_duration(seconds) == text


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf, "12"])
def test_format_duration_refuses_what_is_not_a_duration(bad):
    with pytest.raises(ValueError, match="seconds"):
        ct.format_duration(bad)


def test_record_then_read_keeps_the_other_device(tmp_path):
    path = tmp_path / "times.json"
    ct.record_chapter_times({"10_retinanet": 151.04, "01_x": 12.0}, "cpu", "2 CPU cores", "2026-12-07", path)
    assert ct.chapter_time_text("10_retinanet", "cpu", path) == "2 min 30 s (2 CPU cores, build of 2026-12-07)"
    assert ct.chapter_time_text("10_retinanet", "gpu", path) == "not measured yet"
    ct.record_chapter_times({"10_retinanet": 20.0}, "gpu", "1 NVIDIA H100", "2026-12-08", path)
    timing = ct.chapter_time("10_retinanet", "gpu", path)
    assert timing == ct.ChapterTime("10_retinanet", "gpu", 20.0, "1 NVIDIA H100", "2026-12-08")
    assert ct.chapter_time("01_x", "cpu", path).seconds == 12.0  # the cpu build is kept
    assert ct.chapter_time("missing_page", "cpu", path) is None
    assert json.loads(path.read_text())["cpu"]["seconds"] == {"01_x": 12.0, "10_retinanet": 151.0}


def test_bad_arguments_name_the_problem(tmp_path):
    path = tmp_path / "times.json"
    with pytest.raises(ValueError, match="device"):
        ct.chapter_time("10_retinanet", "tpu", path)
    with pytest.raises(ValueError, match="empty"):
        ct.record_chapter_times({}, "cpu", "m", "2026-12-07", path)
    with pytest.raises(ValueError, match="machine"):
        ct.record_chapter_times({"a": 1.0}, "cpu", "  ", "2026-12-07", path)
    with pytest.raises(ValueError, match="recorded must be a date"):
        ct.record_chapter_times({"a": 1.0}, "cpu", "m", "7 Dec 2026", path)
    assert not path.exists()  # nothing written for a refused record
    with pytest.raises(ValueError, match=r"seconds\['a'\]"):
        ct.record_chapter_times({"a": math.nan}, "cpu", "m", "2026-12-07", path)
    path.write_text(json.dumps({"cuda": {}}))
    with pytest.raises(ValueError, match="not a chapter-times file"):
        ct.load_chapter_times(path)


def test_missing_file_means_nothing_measured(tmp_path):
    assert ct.chapter_time_text("10_retinanet", "cpu", tmp_path / "none.json") == "not measured yet"


def test_the_package_records_a_cpu_build_of_every_chapter():
    """The openers read these: a chapter missing here would say 'not measured yet' on the website."""
    build = ct.load_chapter_times()["cpu"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d", build["recorded"])
    missing = [page for page in CHAPTERS if page not in build["seconds"]]
    assert not missing, f"no recorded cpu time for {missing}: rebuild and run scripts/exec_times.py --record cpu"
    assert all(0 < s < 3600 for s in build["seconds"].values())


def test_the_times_file_ships_in_the_package():
    text = (ROOT / "pyproject.toml").read_text()
    assert f"engine/{ct.TIMES_FILE}" in text
