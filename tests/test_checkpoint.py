import random

import numpy as np
import pytest
import torch
from torch import nn

from coursepkg.engine import checkpoint as ckpt
from coursepkg.engine.checkpoint import (
    CHECKPOINT_FORMAT_VERSION,
    CheckpointError,
    get_rng_state,
    load_checkpoint,
    model_fingerprint,
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


def test_truncated_file_is_a_checkpoint_error(tmp_path):
    path = save_checkpoint(_state(), tmp_path / "last.pt")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(
        CheckpointError, match=r"cannot be read, it is probably truncated or corrupt"
    ) as info:
        load_checkpoint(path)
    assert isinstance(info.value, ValueError)
    assert info.value.path == path
    assert str(path) in str(info.value) and "resume=False" in str(info.value)


def test_garbage_and_foreign_files_are_checkpoint_errors(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a zip file at all")
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(garbage)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
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
