"""Training checkpoints that survive a disconnect: atomic writes, a fallback, clear errors, exact RNG.

A checkpoint is one ``torch.save`` file holding a plain dict (tensors, numbers, strings, lists and
dicts only, so it loads with ``torch.load(..., weights_only=True)``). The training engine
(:mod:`coursepkg.engine.training`) decides what goes in it; this module makes writing and reading it
safe. What it guarantees:

* **A failed save changes nothing.** :func:`save_checkpoint` first checks that every entry is of a
  type a checkpoint may hold (naming the first one that is not), serialises the whole dict in
  memory and loads it back, and only then touches the disk: it writes a temporary file in the
  target's folder, flushes and ``fsync``s it, and ``os.replace``s it over the target. A state that
  cannot be saved, a crash, a full disk, a ``SIGKILL`` or a ``KeyboardInterrupt`` at any moment
  leaves the previous checkpoint untouched and loadable; a reader only ever sees a complete old
  file or a complete new one.
* **One step back.** With ``previous=`` (the engine passes ``previous.pt`` beside ``last.pt``), the
  file being replaced is first renamed to ``previous``, so the two newest checkpoints are kept.
  :func:`load_latest_checkpoint` reads the newest and, if it is truncated, corrupt or missing (a
  save killed between its two renames), falls back to the previous one with a
  :class:`CheckpointWarning` that names both files and says why the newest was refused.
* **No litter.** A save killed before its rename leaves a hidden temporary file
  (``.last.pt.<random>.tmp``); the next save to the same path removes such files (only names of
  that exact pattern). Two processes must not save to the same path at the same time.
* **Clear errors.** :func:`load_checkpoint` turns every way a file can be unreadable (empty,
  truncated, not a checkpoint, another format version) into a :class:`CheckpointError` that names
  the file, says what is wrong and what to do; :func:`verify_model` does the same for a checkpoint
  written by a different architecture, comparing parameter names and shapes.
* **Exact resumption.** :func:`get_rng_state` / :func:`set_rng_state` capture and restore every
  global random generator (Python, NumPy, torch CPU and CUDA), so a resumed run draws the same
  random numbers as an uninterrupted one; :func:`isolated_rng` runs a block (the engine's training
  loop) on those generators and gives the caller's states back afterwards.

Chapter: book/training (section "Checkpoints and resuming").
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import pickle
import random
import re
import tempfile
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

__all__ = [
    "CHECKPOINT_FORMAT_VERSION",
    "CheckpointError",
    "CheckpointWarning",
    "LoadedCheckpoint",
    "get_rng_state",
    "isolated_rng",
    "load_checkpoint",
    "load_latest_checkpoint",
    "model_fingerprint",
    "model_shapes",
    "remove_stale_temp_files",
    "save_checkpoint",
    "set_rng_state",
    "verify_model",
]

# Bump when the layout written by coursepkg.engine.training changes; older files are then refused.
CHECKPOINT_FORMAT_VERSION = 1

_ADVICE = "delete it or pass resume=False to start from scratch"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: unreadable, another format, or another model.

    Attributes:
        path: the offending file.
        problem: what is wrong with it, without the file name and the advice.
    """

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"checkpoint {self.path}: {problem}; {_ADVICE}")


class CheckpointWarning(UserWarning):
    """The newest checkpoint was refused and the previous one is used instead."""


class LoadedCheckpoint(NamedTuple):
    """What :func:`load_latest_checkpoint` read, and from where.

    Attributes:
        state: the checkpoint dict, tensors on the CPU.
        path: the file it came from: the newest checkpoint, or the fallback.
        refused: why the newest file was not used (None when it was).
    """

    state: dict[str, Any]
    path: Path
    refused: str | None


def save_checkpoint(
    state: Mapping[str, Any],
    path: str | os.PathLike[str],
    *,
    previous: str | os.PathLike[str] | None = None,
) -> Path:
    """Write ``state`` to ``path`` atomically, keeping the file it replaces as ``previous``.

    Steps: check every entry's type; serialise the dict in memory and load it back with
    ``weights_only=True``; remove temporary files that an earlier, killed save to ``path`` left
    behind; write a temporary file beside ``path``, flush and ``fsync`` it; rename the current
    ``path`` (if any) to ``previous``; rename the temporary file to ``path``. The folder is created
    if needed. If anything fails (including a ``KeyboardInterrupt``), the temporary file is
    removed, ``path`` keeps its previous contents, and the exception propagates.

    Args:
        state: the checkpoint dict; tensors, numbers, strings, None, lists, tuples and dicts only.
        path: the destination file, e.g. ``checkpoints/last.pt``.
        previous: where the file being replaced goes, e.g. ``checkpoints/previous.pt``; None
            overwrites it. A process killed between the two renames leaves only ``previous``,
            which :func:`load_latest_checkpoint` then reads.

    Returns:
        ``path`` as a ``Path``.

    Raises:
        TypeError: if ``state`` is not a dict with string keys, or an entry has a type that a
            checkpoint may not hold (the message names the entry, e.g. ``state['config']['fn']``).
        ValueError: if ``previous`` is ``path`` itself.

    Chapter: book/training (section "Checkpoints and resuming").
    """
    path = Path(path)
    if previous is not None and Path(previous) == path:
        raise ValueError(f"previous must be another file than path, got {path} for both")
    data = _serialise(state)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(path)
    # Same folder as the target, so os.replace is a rename within one file system (atomic on POSIX
    # and Windows). The leading dot hides it from directory listings while it exists.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        if previous is not None and path.exists():
            os.replace(path, previous)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)
    return path


# What torch.load(weights_only=True) accepts, and so what a checkpoint may hold.
_LEAF_TYPES = (bool, int, float, complex, str, bytes, type(None), torch.Size, torch.dtype,
               torch.device)  # fmt: skip


def _check_entry(value: object, where: str) -> None:
    """Raise a TypeError naming the first entry below ``where`` that a checkpoint may not hold."""
    if isinstance(value, torch.Tensor):
        if type(value) not in (torch.Tensor, nn.Parameter):
            raise TypeError(f"{where} is a {type(value).__name__}; save a plain tensor instead")
    elif isinstance(value, dict | OrderedDict):
        for key, item in value.items():
            if not isinstance(key, str | int):
                raise TypeError(f"{where} has the key {key!r}; keys must be strings or ints")
            _check_entry(item, f"{where}[{key!r}]")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_entry(item, f"{where}[{index}]")
    elif type(value) not in _LEAF_TYPES:
        raise TypeError(
            f"{where} is a {type(value).__module__}.{type(value).__qualname__}; a checkpoint "
            "holds only tensors, numbers, strings, None, lists, tuples and dicts (so that it "
            "loads with torch.load(weights_only=True))"
        )


def _serialise(state: Mapping[str, Any]) -> bytes:
    """The bytes of ``torch.save(dict(state))``, checked to load back with ``weights_only=True``."""
    if not isinstance(state, Mapping):
        raise TypeError(f"state must be a dict, got {type(state).__name__}")
    state = dict(state)
    for key in state:
        if not isinstance(key, str):
            raise TypeError(f"state keys must be strings, got {key!r}")
    _check_entry(state, "state")
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    try:  # what the types above cannot rule out (a custom pickler hook, a torch bug) shows here
        torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as error:
        raise TypeError(
            f"state does not load back with torch.load(weights_only=True): {_first_sentence(error)}"
        ) from error
    return data


def _temp_pattern(path: Path) -> re.Pattern[str]:
    """Names of the temporary files :func:`save_checkpoint` creates for ``path``."""
    return re.compile(rf"\.{re.escape(path.name)}\.[A-Za-z0-9_]+\.tmp")


def remove_stale_temp_files(path: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files that killed saves to ``path`` left in its folder.

    Only names of the pattern :func:`save_checkpoint` uses (``.last.pt.<random>.tmp`` for
    ``last.pt``) are touched. Do not call it while another process is saving to ``path``.

    Returns:
        The files removed.

    Chapter: book/training (section "Checkpoints and resuming").
    """
    path = Path(path)
    if not path.parent.is_dir():
        return []
    pattern = _temp_pattern(path)
    removed = []
    for candidate in path.parent.iterdir():
        if pattern.fullmatch(candidate.name) and candidate.is_file():
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


def _fsync_directory(folder: Path) -> None:
    """Persist the rename itself (POSIX); a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`, on the CPU.

    Args:
        path: the checkpoint file.

    Returns:
        The checkpoint dict; tensors are on the CPU.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        CheckpointError: if the file is truncated or corrupt, is not a checkpoint dict, or has
            another ``format_version`` than :data:`CHECKPOINT_FORMAT_VERSION`.

    Chapter: book/training (section "Checkpoints and resuming").
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises many types for a damaged file
        raise CheckpointError(path, _unreadable(path, error)) from error
    if not isinstance(state, dict) or "format_version" not in state:
        raise CheckpointError(path, "is not a coursepkg training checkpoint (no format_version)")
    if state["format_version"] != CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(
            path,
            f"has format version {state['format_version']!r}, this coursepkg reads version "
            f"{CHECKPOINT_FORMAT_VERSION}",
        )
    return state


def _first_sentence(error: BaseException) -> str:
    """``Type: first sentence`` of an exception's message, whole (torch's go on for lines)."""
    text = " ".join(str(error).split())
    sentence = re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0].rstrip(".") if text else "no details"
    return f"{type(error).__name__}: {sentence}"


def _unreadable(path: Path, error: BaseException) -> str:
    """The complete problem statement for a file that ``torch.load`` could not read."""
    size = path.stat().st_size
    if size == 0:
        return "cannot be read: the file is empty (0 bytes), a save never wrote it"
    if not zipfile.is_zipfile(path):
        # torch.save writes a zip archive, whose directory is the last thing written.
        return (
            f"cannot be read: the file ({size:,} bytes) is truncated or is not a torch.save file "
            "(it does not end with the zip directory that ends every torch.save file)"
        )
    if isinstance(error, pickle.UnpicklingError):
        # torch's own message suggests weights_only=False, which is unsafe and no help here:
        # save_checkpoint writes only types that load with weights_only=True.
        found = re.search(r"WeightsUnpickler error:\s*([^\n]+)", str(error))
        reason = found.group(1).strip().rstrip(".") if found else _first_sentence(error)
        return (
            f"cannot be read: the file ({size:,} bytes) is corrupt or holds objects other than "
            "tensors, numbers, strings, lists and dicts (torch.load with weights_only=True: "
            f"{reason})"
        )
    return (
        f"cannot be read: the file ({size:,} bytes) is corrupt "
        f"(torch.load raised {_first_sentence(error)})"
    )


def load_latest_checkpoint(
    path: str | os.PathLike[str], previous: str | os.PathLike[str]
) -> LoadedCheckpoint:
    """Read ``path``, or ``previous`` if ``path`` is unreadable or missing.

    Falling back emits a :class:`CheckpointWarning` naming both files and why ``path`` was refused.
    Only unreadable files are refused (:func:`load_checkpoint` errors); a readable checkpoint of
    another model or run is the caller's to refuse.

    Args:
        path: the newest checkpoint, e.g. ``checkpoints/last.pt``.
        previous: the one it replaced, as passed to :func:`save_checkpoint`.

    Returns:
        A :class:`LoadedCheckpoint`: the state, the file it came from, and why ``path`` was
        refused (None when it was used).

    Raises:
        FileNotFoundError: if neither file exists.
        CheckpointError: if ``path`` is unreadable and ``previous`` is missing or unreadable
            too; the message names both files and both problems.

    Chapter: book/training (section "Checkpoints and resuming").
    """
    path, previous = Path(path), Path(previous)
    if path.exists():
        try:
            return LoadedCheckpoint(load_checkpoint(path), path, None)
        except CheckpointError as error:
            refused = error.problem
            if not previous.exists():
                raise CheckpointError(
                    path,
                    f"{refused}, and there is no previous checkpoint {previous} to fall back on",
                ) from error
    elif previous.exists():
        refused = "is missing (a save was interrupted between its two renames)"
    else:
        raise FileNotFoundError(f"no checkpoint at {path} nor at {previous}")
    try:
        state = load_checkpoint(previous)
    except CheckpointError as error:
        raise CheckpointError(
            path, f"{refused}; the previous checkpoint {previous} {error.problem} too"
        ) from error
    warnings.warn(
        f"checkpoint {path} {refused}; using the previous checkpoint {previous} "
        f"(epoch {state.get('epoch', '?')}) instead",
        CheckpointWarning,
        stacklevel=2,
    )
    return LoadedCheckpoint(state, previous, refused)


def model_shapes(model: nn.Module) -> dict[str, list[int]]:
    """Name and shape of every parameter and buffer in ``model.state_dict()``, in order."""
    return {name: list(tensor.shape) for name, tensor in model.state_dict().items()}


def model_fingerprint(model: nn.Module) -> str:
    """A short hash of the architecture: the names and shapes of the parameters and buffers.

    Two models with the same layers have the same fingerprint whatever their weights, device or
    dtype; adding, renaming or resizing a layer changes it.

    Returns:
        16 hexadecimal characters.

    Chapter: book/training (section "Checkpoints and resuming").
    """
    text = "\n".join(f"{name}:{shape}" for name, shape in model_shapes(model).items())
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def verify_model(
    checkpoint: Mapping[str, Any], model: nn.Module, path: str | os.PathLike[str]
) -> None:
    """Raise a :class:`CheckpointError` unless ``checkpoint`` was written for ``model``'s architecture.

    Args:
        checkpoint: a dict from :func:`load_checkpoint` with ``"model_fingerprint"`` and
            ``"model_shapes"`` entries (written by the training engine).
        model: the model about to receive the checkpoint's weights.
        path: the checkpoint file, for the message.

    Raises:
        CheckpointError: naming the first missing, unexpected and resized entries.

    Chapter: book/training (section "Checkpoints and resuming").
    """
    if checkpoint.get("model_fingerprint") == model_fingerprint(model):
        return
    saved = checkpoint.get("model_shapes", {})
    current = model_shapes(model)
    missing = [name for name in current if name not in saved]
    unexpected = [name for name in saved if name not in current]
    resized = [
        f"{name} {saved[name]} in the file vs {shape} in the model"
        for name, shape in current.items()
        if name in saved and list(saved[name]) != shape
    ]
    details = []
    for label, names in (("missing", missing), ("unexpected", unexpected), ("resized", resized)):
        if names:
            more = f" (+{len(names) - 3} more)" if len(names) > 3 else ""
            details.append(f"{label}: {', '.join(names[:3])}{more}")
    saved_class = checkpoint.get("model_class", "?")
    raise CheckpointError(
        path,
        f"was written for a different model ({saved_class}, this is {type(model).__name__}; "
        + ("; ".join(details) or "fingerprints differ")
        + ")",
    )


def get_rng_state() -> dict[str, Any]:
    """The state of every global random generator: Python, NumPy, torch CPU and (if any) CUDA.

    The NumPy state is stored as plain lists and numbers, so the result can be saved in a
    checkpoint that loads with ``weights_only=True``.

    Chapter: book/training (section "Checkpoints and resuming").
    """
    numpy_state = np.random.get_state(legacy=False)
    return {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": numpy_state["bit_generator"],
            "key": numpy_state["state"]["key"].tolist(),
            "pos": int(numpy_state["state"]["pos"]),
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore the generators captured by :func:`get_rng_state`.

    The CUDA states are restored only when CUDA is available and has as many devices as when they
    were captured (a checkpoint from a GPU machine resumes on a CPU without them).

    Args:
        state: a dict with the keys ``"python"``, ``"numpy"``, ``"torch"`` and optionally
            ``"cuda"``, as :func:`get_rng_state` returns it.

    Raises:
        TypeError: if ``state`` is not a mapping.
        ValueError: if a key is missing.

    Chapter: book/training (section "Checkpoints and resuming").
    """
    if not isinstance(state, Mapping):
        raise TypeError(f"state must be a dict from get_rng_state(), got {type(state).__name__}")
    missing = [key for key in ("python", "numpy", "torch") if key not in state]
    if missing:
        raise ValueError(
            f"state must have the keys ['python', 'numpy', 'torch'] (and optionally 'cuda') "
            f"from get_rng_state(); it is missing {missing} (it has {sorted(state)})"
        )
    python_state = state["python"]
    random.setstate((python_state[0], tuple(python_state[1]), python_state[2]))
    numpy_state = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": numpy_state["bit_generator"],
            "state": {
                "key": np.asarray(numpy_state["key"], dtype=np.uint32),
                "pos": numpy_state["pos"],
            },
            "has_gauss": numpy_state["has_gauss"],
            "gauss": numpy_state["gauss"],
        }
    )
    torch.set_rng_state(state["torch"])
    cuda_states = state.get("cuda")
    if (
        cuda_states is not None
        and torch.cuda.is_available()
        and len(cuda_states) == torch.cuda.device_count()
    ):
        torch.cuda.set_rng_state_all(cuda_states)


@contextlib.contextmanager
def isolated_rng() -> Iterator[None]:
    """Run a block on the global generators, then give the caller back the states it had.

    Python's ``random``, NumPy's legacy generator and torch's CPU and accelerator (CUDA, MPS)
    generators are saved on entry and restored on exit, also when the block raises. The engine
    seeds (or restores from a checkpoint) the generators inside the block, so a model's own
    randomness (dropout, random sampling in ``losses``) is reproducible without the caller's
    random stream being reseeded or consumed.

    Chapter: book/training (section "Checkpoints and resuming").
    """
    python_state, numpy_state = random.getstate(), np.random.get_state()
    accelerator = getattr(torch, "accelerator", None)
    current = accelerator.current_accelerator() if accelerator is not None else None
    device_type = current.type if current is not None else "cuda"
    module = torch.get_device_module(device_type)
    devices = list(range(module.device_count())) if module.is_available() else []
    with torch.random.fork_rng(devices=devices, device_type=device_type):
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)
