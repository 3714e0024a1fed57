"""Training checkpoints that survive a disconnect: atomic writes, clear errors, exact RNG state.

A checkpoint is one ``torch.save`` file holding a plain dict (tensors, numbers, strings, lists and
dicts only, so it loads with ``torch.load(..., weights_only=True)``). The training engine
(:mod:`coursepkg.engine.training`) decides what goes in it; this module makes writing and reading it safe:

* **Atomic writes.** :func:`save_checkpoint` writes to a temporary file in the target's folder,
  flushes and ``fsync``s it, then ``os.replace``s it over the target. A crash, a full disk or a
  ``KeyboardInterrupt`` in the middle leaves the previous checkpoint untouched and no temporary
  file behind: a reader only ever sees a complete old file or a complete new one.
* **Clear errors.** :func:`load_checkpoint` turns every way a file can be unreadable (truncated,
  not a checkpoint, another format version) into a :class:`CheckpointError` that names the file,
  says what is wrong and what to do; :func:`verify_model` does the same for a checkpoint written
  by a different architecture, comparing parameter names and shapes.
* **Exact resumption.** :func:`get_rng_state` / :func:`set_rng_state` capture and restore every
  global random generator (Python, NumPy, torch CPU and CUDA), so a resumed run draws the same
  random numbers as an uninterrupted one.

Chapter: book/training (section "Checkpoints and resuming").
"""

from __future__ import annotations

import hashlib
import os
import pickle
import random
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "CHECKPOINT_FORMAT_VERSION",
    "CheckpointError",
    "get_rng_state",
    "load_checkpoint",
    "model_fingerprint",
    "model_shapes",
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
    """

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = Path(path)
        super().__init__(f"checkpoint {self.path}: {problem}; {_ADVICE}")


def save_checkpoint(state: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``state`` to ``path`` atomically (temporary file, flush, fsync, ``os.replace``).

    The folder is created if needed. If anything fails before the final rename (including a
    ``KeyboardInterrupt``), the temporary file is removed, ``path`` keeps its previous contents,
    and the exception propagates.

    Args:
        state: the checkpoint dict; tensors, numbers, strings, lists, tuples and dicts only.
        path: the destination file, e.g. ``checkpoints/last.pt``.

    Returns:
        ``path`` as a ``Path``.

    Chapter: book/training (section "Checkpoints and resuming").
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same folder as the target, so os.replace is a rename within one file system (atomic on POSIX
    # and Windows). The leading dot hides it from directory listings while it exists.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            torch.save(dict(state), file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)
    return path


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
        if isinstance(error, pickle.UnpicklingError):
            # torch's own message suggests weights_only=False, which is unsafe and no help here:
            # save_checkpoint writes only types that load with weights_only=True.
            detail = "its contents are not loadable with weights_only=True"
        else:
            detail = (
                str(error).strip().splitlines()[0][:200] if str(error).strip() else "no details"
            )
        raise CheckpointError(
            path,
            f"cannot be read, it is probably truncated or corrupt ({type(error).__name__}: {detail})",
        ) from error
    if not isinstance(state, dict) or "format_version" not in state:
        raise CheckpointError(path, "is not a coursepkg training checkpoint (no format_version)")
    if state["format_version"] != CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(
            path,
            f"has format version {state['format_version']!r}, this coursepkg reads version "
            f"{CHECKPOINT_FORMAT_VERSION}",
        )
    return state


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

    Chapter: book/training (section "Checkpoints and resuming").
    """
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
