import contextlib
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from coursepkg.engine import checkpoint as ckpt
from coursepkg.engine.checkpoint import (
    CHECKPOINT_FORMAT_VERSION,
    CheckpointError,
    CheckpointWarning,
    get_rng_state,
    isolated_rng,
    load_checkpoint,
    load_latest_checkpoint,
    model_fingerprint,
    remove_stale_temp_files,
    save_checkpoint,
    set_rng_state,
    verify_model,
)


def _state(value: float = 1.0) -> dict:
    return {
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "weights": torch.full((3, 2), value),
        "nested": {"step": 12, "history": [0.5, 0.25], "name": "adamw", "none": None},
        "rng": get_rng_state(),
    }


def _files(folder):
    return sorted(p.name for p in folder.iterdir())


def test_round_trip_loads_with_weights_only(tmp_path):
    path = save_checkpoint(_state(2.0), tmp_path / "sub" / "last.pt")
    assert path == tmp_path / "sub" / "last.pt"
    loaded = load_checkpoint(path)
    torch.testing.assert_close(loaded["weights"], torch.full((3, 2), 2.0), rtol=0, atol=0)
    assert loaded["nested"] == {"step": 12, "history": [0.5, 0.25], "name": "adamw", "none": None}
    # Loadable by plain torch.load in its safe mode (the default since torch 2.6).
    torch.load(path, weights_only=True)
    assert _files(path.parent) == ["last.pt"]


def test_overwrite_replaces_the_file(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(_state(1.0), path)
    save_checkpoint(_state(5.0), path)
    assert load_checkpoint(path)["weights"][0, 0].item() == 5.0
    assert _files(tmp_path) == ["last.pt"]


@pytest.mark.parametrize("exception", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_failed_write_keeps_the_previous_checkpoint_and_no_temp_file(
    tmp_path, monkeypatch, exception
):
    path = tmp_path / "last.pt"
    save_checkpoint(_state(1.0), path)
    before = path.read_bytes()
    real_save = torch.save

    def save_half_then_fail(obj, file, *args, **kwargs):
        real_save(obj, file, *args, **kwargs)
        file.truncate(file.tell() // 2)  # half a file is on disk when the failure hits
        raise exception

    monkeypatch.setattr(ckpt.torch, "save", save_half_then_fail)
    with pytest.raises(type(exception)):
        save_checkpoint(_state(9.0), path)
    assert path.read_bytes() == before
    assert _files(tmp_path) == ["last.pt"]
    assert load_checkpoint(path)["weights"][0, 0].item() == 1.0


def test_failed_rename_leaves_no_temp_file(tmp_path, monkeypatch):
    def fail(*args):
        raise PermissionError("locked")

    monkeypatch.setattr(ckpt.os, "replace", fail)
    with pytest.raises(PermissionError):
        save_checkpoint(_state(), tmp_path / "last.pt")
    assert _files(tmp_path) == []


def test_truncated_file_is_a_checkpoint_error_with_a_complete_message(tmp_path):
    path = save_checkpoint(_state(), tmp_path / "last.pt")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert isinstance(info.value, ValueError)
    assert info.value.path == path
    # The whole message, so that nothing is cut off mid-sentence.
    assert str(info.value) == (
        f"checkpoint {path}: cannot be read: the file ({len(data) // 2:,} bytes) is truncated or "
        "is not a torch.save file (it does not end with the zip directory that ends every "
        "torch.save file); delete it or pass resume=False to start from scratch"
    )


def test_garbage_and_foreign_files_are_checkpoint_errors(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a zip file at all")
    with pytest.raises(CheckpointError, match=r"\(21 bytes\) is truncated or is not a torch.save"):
        load_checkpoint(garbage)
    zeros = tmp_path / "zeros.pt"
    zeros.write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match=r"\(100 bytes\) is truncated or is not a torch.save"):
        load_checkpoint(zeros)
    inside = tmp_path / "inside.pt"  # a complete zip archive whose pickle is damaged
    data = bytearray(save_checkpoint(_state(), inside).read_bytes())
    start = data.index(b"data.pkl") + 60
    data[start : start + 40] = b"\x07" * 40
    inside.write_bytes(bytes(data))
    with pytest.raises(
        CheckpointError,
        match=rf"cannot be read: the file \({len(data):,} bytes\) is corrupt or holds objects other "
        r"than tensors, numbers, strings, lists and dicts \(torch.load with weights_only=True: "
        r"Unsupported operand \d+\); delete it",
    ):
        load_checkpoint(inside)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"cannot be read: the file is empty \(0 bytes\)"):
        load_checkpoint(empty)
    foreign = tmp_path / "weights.pt"
    torch.save({"conv.weight": torch.zeros(2)}, foreign)
    with pytest.raises(
        CheckpointError, match=r"is not a coursepkg training checkpoint \(no format_version\)"
    ):
        load_checkpoint(foreign)
    old = tmp_path / "old.pt"
    save_checkpoint({**_state(), "format_version": 0}, old)
    with pytest.raises(
        CheckpointError,
        match=rf"has format version 0, this coursepkg reads version {CHECKPOINT_FORMAT_VERSION}",
    ):
        load_checkpoint(old)
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "missing.pt")


def test_fingerprint_depends_on_architecture_only():
    a, b = (
        nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)),
        nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)),
    )
    assert model_fingerprint(a) == model_fingerprint(b)  # different random weights
    assert model_fingerprint(a) == model_fingerprint(b.double())  # dtype does not matter
    assert len(model_fingerprint(a)) == 16
    assert model_fingerprint(a) != model_fingerprint(
        nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5))
    )
    assert model_fingerprint(a) != model_fingerprint(
        nn.Sequential(nn.Linear(3, 4))
    )  # no BN buffers


def test_verify_model_names_the_differences(tmp_path):
    saved = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    checkpoint = {
        "model_class": "Sequential",
        "model_fingerprint": model_fingerprint(saved),
        "model_shapes": {k: list(v.shape) for k, v in saved.state_dict().items()},
    }
    verify_model(checkpoint, nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)), tmp_path / "last.pt")
    other = nn.Sequential(nn.Linear(3, 8), nn.Linear(8, 2), nn.ReLU(), nn.Linear(2, 1))
    with pytest.raises(CheckpointError) as info:
        verify_model(checkpoint, other, tmp_path / "last.pt")
    message = str(info.value)
    assert "was written for a different model (Sequential, this is Sequential" in message
    assert "missing: 3.weight, 3.bias" in message
    assert "resized: 0.weight [4, 3] in the file vs [8, 3] in the model" in message
    assert "resume=False" in message


def _draws():
    return random.random(), np.random.rand(3).tolist(), np.random.randn(), torch.rand(4).tolist()


def test_rng_state_round_trip_through_a_file(tmp_path):
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    np.random.randn()  # leaves a cached Gaussian in NumPy's legacy state
    state = get_rng_state()
    expected = _draws()
    save_checkpoint(
        {"format_version": CHECKPOINT_FORMAT_VERSION, "rng": state}, tmp_path / "rng.pt"
    )
    _draws()
    set_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"])
    assert _draws() == expected


# --------------------------------------------------------------------------- never lose work


@pytest.mark.parametrize(
    ("entry", "where"),
    [
        (np.zeros(3), r"state\['nested'\]\['bad'\] is a numpy.ndarray"),
        (Path("runs"), r"state\['nested'\]\['bad'\] is a pathlib\.\w*Path"),
        (lambda: 0, r"state\['nested'\]\['bad'\] is a builtins.function"),
    ],
)
def test_unsaveable_state_keeps_the_old_file(tmp_path, entry, where):
    path = save_checkpoint(_state(1.0), tmp_path / "last.pt", previous=tmp_path / "previous.pt")
    before = path.read_bytes()
    state = _state(9.0)
    state["nested"]["bad"] = entry
    with pytest.raises(TypeError, match=where + ".*loads with torch.load"):
        save_checkpoint(state, path, previous=tmp_path / "previous.pt")
    assert path.read_bytes() == before
    assert _files(tmp_path) == ["last.pt"]  # no temporary file, and nothing rotated
    assert load_checkpoint(path)["weights"][0, 0].item() == 1.0


def test_state_that_does_not_load_back_keeps_the_old_file(tmp_path, monkeypatch):
    path = save_checkpoint(_state(1.0), tmp_path / "last.pt")
    before = path.read_bytes()
    real_save = torch.save

    def save_a_path_too(obj, file, *args, **kwargs):  # slips past the type check
        real_save({**obj, "sneaky": Path("x")}, file, *args, **kwargs)

    monkeypatch.setattr(ckpt.torch, "save", save_a_path_too)
    with pytest.raises(TypeError, match=r"state does not load back with torch.load\(weights_only"):
        save_checkpoint(_state(9.0), path)
    assert path.read_bytes() == before
    assert _files(tmp_path) == ["last.pt"]


def test_the_replaced_checkpoint_is_kept_as_previous(tmp_path):
    path, previous = tmp_path / "last.pt", tmp_path / "previous.pt"
    for value in (1.0, 2.0, 3.0):
        save_checkpoint(_state(value), path, previous=previous)
    assert _files(tmp_path) == ["last.pt", "previous.pt"]
    assert load_checkpoint(path)["weights"][0, 0].item() == 3.0
    assert load_checkpoint(previous)["weights"][0, 0].item() == 2.0
    with pytest.raises(ValueError, match="previous must be another file than path"):
        save_checkpoint(_state(), path, previous=path)


def _two_checkpoints(tmp_path):
    path, previous = tmp_path / "last.pt", tmp_path / "previous.pt"
    save_checkpoint({**_state(1.0), "epoch": 1}, path, previous=previous)
    save_checkpoint({**_state(2.0), "epoch": 2}, path, previous=previous)
    return path, previous


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def test_latest_is_used_when_readable(tmp_path):
    path, previous = _two_checkpoints(tmp_path)
    loaded = load_latest_checkpoint(path, previous)
    assert (loaded.path, loaded.refused, loaded.state["epoch"]) == (path, None, 2)


@pytest.mark.parametrize("damage", ["truncate", "zeros", "delete"])
def test_unreadable_newest_falls_back_to_previous_with_a_warning(tmp_path, damage):
    path, previous = _two_checkpoints(tmp_path)
    if damage == "truncate":
        _truncate(path)
        why = r"cannot be read: the file \([\d,]+ bytes\) is truncated"
    elif damage == "zeros":
        path.write_bytes(b"\x00" * 64)
        why = r"cannot be read: the file \(64 bytes\) is truncated or is not a torch.save file"
    else:  # killed between the two renames of save_checkpoint
        path.unlink()
        why = r"is missing \(a save was interrupted between its two renames\)"
    with pytest.warns(CheckpointWarning) as record:
        loaded = load_latest_checkpoint(path, previous)
    message = str(record[0].message)
    assert re.match(rf"checkpoint {re.escape(str(path))} {why}", message), message
    assert f"using the previous checkpoint {previous} (epoch 1) instead" in message
    assert (loaded.path, loaded.state["epoch"]) == (previous, 1)
    assert re.match(why, loaded.refused)


def test_both_checkpoints_unreadable_is_an_error_naming_both(tmp_path):
    path, previous = _two_checkpoints(tmp_path)
    _truncate(path)
    previous.write_bytes(b"")
    with pytest.raises(CheckpointError) as info:
        load_latest_checkpoint(path, previous)
    message = str(info.value)
    assert message.startswith(f"checkpoint {path}: cannot be read: the file (")
    assert "is truncated or is not a torch.save file" in message
    assert f"; the previous checkpoint {previous} cannot be read: the file is empty" in message
    assert message.endswith("too; delete it or pass resume=False to start from scratch")
    previous.unlink()
    with pytest.raises(CheckpointError, match=r"and there is no previous checkpoint .*previous.pt"):
        load_latest_checkpoint(path, previous)
    path.unlink()
    with pytest.raises(FileNotFoundError, match="no checkpoint at .*last.pt nor at .*previous.pt"):
        load_latest_checkpoint(path, previous)


def test_orphaned_temp_files_are_removed_and_nothing_else(tmp_path):
    orphans = [tmp_path / ".last.pt.a1b2c3d4.tmp", tmp_path / ".last.pt.zz_9xyqe.tmp"]
    others = ["notes.tmp", ".other.pt.a1b2c3d4.tmp", ".last.pt.a1b2c3d4.tmp.bak", "last.pt.old"]
    for file in [*orphans, *(tmp_path / name for name in others)]:
        file.write_bytes(b"half a checkpoint")
    save_checkpoint(_state(), tmp_path / "last.pt")
    assert _files(tmp_path) == sorted(["last.pt", *others])
    assert remove_stale_temp_files(tmp_path / "last.pt") == []
    assert remove_stale_temp_files(tmp_path / "missing" / "last.pt") == []


_SAVE_FOREVER = """
import sys, torch
from coursepkg.engine.checkpoint import save_checkpoint
folder = sys.argv[1]
state = {"format_version": 1, "weights": torch.zeros(256, 1024), "epoch": 0}
while True:
    state["epoch"] += 1
    state["weights"] += 1
    save_checkpoint(state, folder + "/last.pt", previous=folder + "/previous.pt")
    print(state["epoch"], flush=True)
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
def test_sigkill_during_saves_leaves_a_loadable_checkpoint(tmp_path):
    root = Path(__file__).resolve().parents[1]
    child = subprocess.Popen(
        [sys.executable, "-c", _SAVE_FOREVER, str(tmp_path)],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"},
    )
    try:
        for _ in range(5):  # let it save a few times, then kill it wherever it is
            assert child.stdout.readline(), "the saving process died"
        time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
    loaded = load_latest_checkpoint(tmp_path / "last.pt", tmp_path / "previous.pt")
    epoch = loaded.state["epoch"]
    assert epoch >= 4
    torch.testing.assert_close(loaded.state["weights"], torch.full((256, 1024), float(epoch)))
    save_checkpoint(loaded.state, tmp_path / "last.pt", previous=tmp_path / "previous.pt")
    assert _files(tmp_path) == ["last.pt", "previous.pt"]  # any orphaned temp file is gone


def test_set_rng_state_names_missing_keys():
    with pytest.raises(
        ValueError,
        match=r"state must have the keys .* it is missing \['python', 'numpy', 'torch'\]",
    ):
        set_rng_state({})
    with pytest.raises(
        ValueError, match=r"it is missing \['torch'\] \(it has \['numpy', 'python'\]"
    ):
        state = get_rng_state()
        set_rng_state({"python": state["python"], "numpy": state["numpy"]})
    with pytest.raises(TypeError, match="state must be a dict from get_rng_state"):
        set_rng_state([1, 2])


def _global_states():
    return random.getstate(), np.random.get_state(), torch.get_rng_state()


def _assert_same_states(a, b):
    assert a[0] == b[0]
    assert all(np.array_equal(x, y) for x, y in zip(a[1], b[1], strict=True))
    assert torch.equal(a[2], b[2])


@pytest.mark.parametrize("raises", [False, True])
def test_isolated_rng_gives_the_callers_states_back(raises):
    random.seed(3)
    np.random.seed(3)
    torch.manual_seed(3)
    before = _global_states()
    with pytest.raises(RuntimeError) if raises else contextlib.nullcontext():
        with isolated_rng():
            random.seed(0)
            np.random.seed(0)
            torch.manual_seed(0)
            inside = _draws()
            if raises:
                raise RuntimeError("stop")
    _assert_same_states(_global_states(), before)
    assert _draws() != inside
