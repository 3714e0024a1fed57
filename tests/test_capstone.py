"""The capstone runner: shared split, one row per detector, resume, refusal to mix settings."""

from __future__ import annotations

import json

import pytest
import torch

from coursepkg.data import ShapesDataset
from coursepkg.engine import capstone
from coursepkg.engine.capstone import (
    FINAL_IOU_BINS,
    LATER_ROW_KEYS,
    ROW_KEYS,
    CapstoneData,
    capstone_data,
    final_iou_distribution,
    run_capstone,
)
from coursepkg.engine.recipes import fcos_recipe
from coursepkg.engine.train_shapes import DETECTORS, ShapesJob
from coursepkg.evaluation.error_analysis import ERROR_TYPES
from coursepkg.models.fcos import FCOS


def _tiny_job(num_train: int):
    def job(profile: str) -> ShapesJob:
        return ShapesJob(
            model=FCOS(fcos_recipe("smoke").config),
            train_set=ShapesDataset(num_train, (64, 64), seed=5),
            val_set=ShapesDataset(2, (64, 64), seed=6),
            epochs=1, batch_size=4, lr=1e-3, weight_decay=1e-4,
        )  # fmt: skip

    return job


@pytest.fixture
def tiny(monkeypatch):
    """Two cheap detectors and a 4-image held-out set in place of the course's."""
    monkeypatch.setattr(capstone, "DETECTORS", {"a": _tiny_job(4), "b": _tiny_job(8)})
    monkeypatch.setattr(capstone, "CLASSIC_DETECTORS", ())  # tests/test_classic_detectors.py
    monkeypatch.setitem(capstone.CAPSTONE_DATA, "smoke", CapstoneData(num_val=4))


def test_every_detector_of_the_course_is_in_the_table_by_default():
    assert set(capstone.DETECTORS) == set(DETECTORS) and len(DETECTORS) >= 5
    assert capstone.capstone_detectors() == [*DETECTORS, "sliding_windows", "rcnn"]


def test_unknown_profile_and_detector_are_refused(tmp_path, tiny):
    with pytest.raises(ValueError, match="profile must be one of"):
        capstone_data("laptop")
    with pytest.raises(ValueError, match="detector must be one of"):
        run_capstone("smoke", tmp_path / "r.json", detectors=["a", "yolo9000"])
    with pytest.raises(ValueError, match="must differ"):
        CapstoneData(num_val=4, train_seed=3, val_seed=3)
    with pytest.raises(ValueError, match="num_val"):
        CapstoneData(num_val=0)


def test_shared_split_is_a_prefix_of_one_stream_and_one_held_out_set():
    data = CapstoneData(num_val=3)
    short_train, val_1 = capstone._shared_split(_tiny_job(4)("smoke"), data)
    long_train, val_2 = capstone._shared_split(_tiny_job(8)("smoke"), data)
    assert len(short_train) == 4 and len(long_train) == 8 and len(val_1) == 3
    for i in range(4):  # the shorter training set is the start of the longer one
        assert torch.equal(short_train[i][0], long_train[i][0])
    for i in range(3):
        assert torch.equal(val_1[i][0], val_2[i][0])
    # no held-out image is a training image
    train_images = [long_train[i][0] for i in range(8)]
    assert not any(torch.equal(val_1[j][0], x) for j in range(3) for x in train_images)
    assert tuple(short_train[0][0].shape[-2:]) == (64, 64)  # the job's image size is kept


def test_rows_have_every_column_and_sane_values(tmp_path, tiny):
    out = tmp_path / "results.json"
    results = run_capstone("smoke", out, log=lambda line: None)
    assert json.loads(out.read_text()) == json.loads(json.dumps(results))
    assert [row["detector"] for row in results["rows"]] == ["a", "b"]
    for row in results["rows"]:
        assert set(row) == set(ROW_KEYS) | set(LATER_ROW_KEYS)
        final = row["final_iou"]
        assert final["objects"] > 0 and sum(final["histogram"]) == final["found"] <= final["objects"]
        assert final["bins"] == list(FINAL_IOU_BINS) and len(final["histogram"]) == len(FINAL_IOU_BINS) - 1
        for key in ("map", "map_50", "map_75"):
            assert 0.0 <= row[key] <= 1.0
        assert row["map_50"] >= row["map"] - 1e-9  # AP over IoU 0.5:0.95 cannot exceed AP50
        assert list(row["delta_ap"]) == list(ERROR_TYPES)
        assert all(v >= 0 for v in row["delta_ap"].values())
        assert row["parameters"] > 1000 and row["epochs"] == 1
        assert row["train_seconds"] > 0 and row["inference_images_per_second"] > 0
    assert [row["train_images"] for row in results["rows"]] == [4, 8]
    assert results["profile"] == "smoke" and results["data"]["num_val"] == 4


def test_an_interrupted_run_resumes_without_training_finished_detectors(tmp_path, tiny, monkeypatch):
    out = tmp_path / "results.json"
    calls = []
    real = capstone.measure_detector

    def crash_on_b(name, *args, **kwargs):
        calls.append(name)
        if name == "b":
            raise KeyboardInterrupt  # the learner's Colab disconnects during the second detector
        return real(name, *args, **kwargs)

    monkeypatch.setattr(capstone, "measure_detector", crash_on_b)
    with pytest.raises(KeyboardInterrupt):
        run_capstone("smoke", out, log=lambda line: None)
    assert [row["detector"] for row in json.loads(out.read_text())["rows"]] == ["a"]

    monkeypatch.setattr(capstone, "measure_detector", real)
    lines = []
    results = run_capstone("smoke", out, log=lines.append)
    assert [row["detector"] for row in results["rows"]] == ["a", "b"]
    assert any("a: already in" in line for line in lines)
    assert not any(line.startswith("[1/2] a: training") for line in lines)


def test_a_run_of_some_detectors_keeps_the_rows_of_the_others(tmp_path, tiny, monkeypatch):
    out = tmp_path / "results.json"
    run_capstone("smoke", out, detectors=["b"], log=lambda line: None)
    stored_b = json.loads(out.read_text())["rows"][0]
    results = run_capstone("smoke", out, detectors=["a"], log=lambda line: None)
    assert [row["detector"] for row in results["rows"]] == ["a", "b"]  # DETECTORS' order
    assert results["rows"][1] == stored_b  # kept, not trained again
    assert json.loads(out.read_text())["rows"] == results["rows"]


def _box(x1, y1, x2, y2):
    return [float(x1), float(y1), float(x2), float(y2)]


def test_final_iou_distribution_is_the_iou_of_each_object_found_at_05():
    targets = [
        {"boxes": torch.tensor([_box(0, 0, 10, 10), _box(20, 20, 30, 30), _box(50, 50, 60, 60)]),
         "labels": torch.tensor([0, 0, 1])},
        {"boxes": torch.tensor([_box(0, 0, 20, 20)]), "labels": torch.tensor([2])},
    ]  # fmt: skip
    preds = [
        {"boxes": torch.tensor([_box(0, 0, 10, 10),   # object 0, IoU 1 (top bin)
                                _box(0, 0, 10, 8),    # object 0 again, lower score: a duplicate
                                _box(20, 20, 30, 36),  # object 1, IoU 100 / 160 = 0.625
                                _box(50, 50, 60, 60)]),  # object 2's box with the wrong class
         "scores": torch.tensor([0.9, 0.95, 0.5, 0.8]) * torch.tensor([1.0, 0.5, 1.0, 1.0]),
         "labels": torch.tensor([0, 0, 0, 2])},
        {"boxes": torch.tensor([_box(0, 0, 20, 9)]),  # IoU 0.45: below 0.5, the object is missed
         "scores": torch.tensor([0.7]), "labels": torch.tensor([2])},
    ]  # fmt: skip
    got = final_iou_distribution(preds, targets)
    assert got["objects"] == 4 and got["found"] == 2 and got["iou_threshold"] == 0.5
    assert got["mean"] == pytest.approx((1.0 + 0.625) / 2)
    expected = [0] * (len(FINAL_IOU_BINS) - 1)
    expected[2] += 1  # 0.625 in [0.6, 0.65)
    expected[-1] += 1  # 1.0 in the last bin, [0.95, 1]
    assert got["histogram"] == expected
    assert got["quantiles"]["0.5"] == pytest.approx((1.0 + 0.625) / 2)
    assert json.loads(json.dumps(got)) == got  # plain numbers for the results file
    nothing = final_iou_distribution([{k: v[:0] for k, v in p.items()} for p in preds], targets)
    assert nothing["found"] == 0 and nothing["mean"] is None and sum(nothing["histogram"]) == 0
    with pytest.raises(ValueError, match="preds and targets must have one entry per image, got 2 and 1"):
        final_iou_distribution(preds, targets[:1])
    with pytest.raises(ValueError, match=r"preds\[1\] is missing \['scores'\]"):
        final_iou_distribution([preds[0], {"boxes": preds[1]["boxes"], "labels": preds[1]["labels"]}], targets)


def test_results_of_other_settings_are_not_mixed_in(tmp_path, tiny):
    out = tmp_path / "results.json"
    run_capstone("smoke", out, detectors=["a"], log=lambda line: None)
    with pytest.raises(ValueError, match="other settings"):
        run_capstone("smoke", out, detectors=["a"], seed=1, log=lambda line: None)


def test_command_line_writes_the_named_file(tmp_path, tiny):
    out = tmp_path / "cli.json"
    results = capstone.main(["--profile", "smoke", "--detectors", "a", "--out", str(out),
                             "--checkpoint-dir", str(tmp_path / "ckpt")])  # fmt: skip
    assert out.is_file() and [row["detector"] for row in results["rows"]] == ["a"]
    assert (tmp_path / "ckpt" / "a" / "last.pt").is_file()  # resumable mid-detector too


def test_command_line_shows_fit_progress_unless_told_not_to(tmp_path, tiny, monkeypatch):
    seen = []
    real_fit = capstone.fit

    def spy(*args, **kwargs):
        seen.append(kwargs["progress"])
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(capstone, "fit", spy)
    common = ["--profile", "smoke", "--detectors", "a", "--checkpoint-dir", str(tmp_path / "ckpt")]
    capstone.main([*common, "--out", str(tmp_path / "one.json")])
    capstone.main([*common, "--out", str(tmp_path / "two.json"), "--no-progress"])
    assert seen == [True, False]
    run_capstone("smoke", tmp_path / "three.json", detectors=["a"], log=lambda line: None)
    assert seen == [True, False, False]  # the library default stays quiet (tests, notebooks)
