"""The training engine: one ``fit`` for every detector in the course, on CPU or GPU.

``fit`` trains any :class:`coursepkg.models.detector.Detector` (it calls only ``losses`` and ``detect``)
with the recipe modern detectors share: AdamW or SGD with momentum, a linear warm-up followed by
a cosine decay of the learning rate, gradient clipping, and mixed precision on CUDA. The same call
runs a two-minute experiment on a laptop CPU and a longer one on a Colab GPU::

    history = fit(model, train_set, val_data=val_set, epochs=PROFILE.pick(smoke=1, cpu=6, gpu=30),
                  checkpoint_dir="checkpoints/fcos")
    plt.plot(history["step"], history["train_loss"])

One optimisation step, for a batch of images ``[B, 3, H, W]`` and B target dicts::

    losses = model.losses(images, targets)     # {"cls": ..., "box": ...}, finite scalars
    loss = sum(losses.values())                # logged per step, with each term
    loss.backward()                            # scaled by GradScaler under mixed precision
    clip_grad_norm_(params, grad_clip)         # logged as "grad_norm" (before clipping)
    optimizer.step(); scheduler.step()         # lr(step) = lr * warmup_cosine(step)

Checkpoints and resuming. With ``checkpoint_dir`` set, ``fit`` writes ``checkpoint_dir/last.pt``
atomically after every epoch, keeping the checkpoint it replaces as ``previous.pt`` (see
:mod:`coursepkg.engine.checkpoint`), and, when called again with the same settings, resumes from
it: a disconnected notebook loses at most one epoch, and rerunning a finished training cell returns
the stored history at once. If ``last.pt`` is truncated or corrupt, ``fit`` resumes from
``previous.pt`` with a ``CheckpointWarning`` that names both files. Resuming is exact: the
checkpoint holds the model, optimizer, scheduler and GradScaler states, the history, and the state
of the random generators the model drew from, and the order of the training set in epoch ``e`` is
drawn from a generator seeded by ``(seed, e)``. On the CPU an interrupted and resumed run ends with
bit-identical weights to an uninterrupted one (the tests check this). Changing a setting that
shapes the run (epochs, learning rate, batch size, ...) and calling ``fit`` again raises a
``CheckpointError`` rather than silently mixing two runs: pass ``resume=False`` or another
``checkpoint_dir``.

What the engine guarantees:

* **The caller's random streams are untouched.** ``fit`` never reseeds the global generators: the
  shuffling has its own ``torch.Generator``, and the model's randomness (dropout, sampling inside
  ``losses``) runs inside :func:`coursepkg.engine.checkpoint.isolated_rng`, on Python's, NumPy's
  and torch's generators seeded from ``seed``; the caller's states are restored when ``fit``
  returns or raises. Two calls with the same ``seed`` and initial weights give the same weights.
* **Bad inputs fail before any training work**, with a ``TypeError`` or ``ValueError`` that names
  the argument and says what was expected and what came: out-of-range numbers, a device this
  machine does not have, a ``checkpoint_dir`` that is a file, and images that are not
  ``[3, H, W]`` (the first item of each data argument is checked up front, every batch again).
* **Training never loses more than the epoch in progress**: a failed save (full disk, a state that
  cannot be saved, a kill) leaves the last good checkpoint in place.

Data. ``train_data`` and ``val_data`` are map-style datasets whose items are ``(image, target)``
pairs (image ``[3, H, W]`` float, target a dict with ``"boxes"`` ``[G, 4]`` and ``"labels"``
``[G]``), batched with :func:`coursepkg.data.collate_detection`; or ready-made DataLoaders that
yield ``(images [B, 3, H, W], targets)`` and are used as they are.

Chapter: book/training; every chapter that trains a detector calls ``fit``.
"""

from __future__ import annotations

import functools
import math
import os
import random
import re
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader
from tqdm import TqdmExperimentalWarning

from coursepkg.engine.checkpoint import (
    CHECKPOINT_FORMAT_VERSION,
    CheckpointError,
    get_rng_state,
    isolated_rng,
    load_latest_checkpoint,
    model_fingerprint,
    model_shapes,
    remove_stale_temp_files,
    save_checkpoint,
    set_rng_state,
    verify_model,
)
from coursepkg.engine.distributed import (
    ShardedSampler,
    all_gather_objects,
    all_reduce_mean,
    barrier,
    broadcast_buffers,
    convert_sync_batchnorm,
    get_rank,
    get_world_size,
    init_distributed_from_env,
    is_distributed,
    is_main_process,
    local_device,
    raise_as_distributed_error,
    wrap_for_training,
)
from coursepkg.engine.runtime import resolve_device
from coursepkg.models.detector import Detector, check_detections, check_losses, check_targets

__all__ = [
    "CHECKPOINT_NAME",
    "PREVIOUS_CHECKPOINT_NAME",
    "History",
    "evaluate",
    "fit",
    "predict",
    "warmup_cosine",
]

OptimizerFactory = Callable[[list[nn.Parameter]], torch.optim.Optimizer]

CHECKPOINT_NAME = "last.pt"
# The checkpoint last.pt replaced, kept as a fallback for a truncated or corrupt last.pt.
PREVIOUS_CHECKPOINT_NAME = "previous.pt"
DEFAULT_BATCH_SIZE = 8
# (lr, weight_decay) when fit chooses the optimizer. SGD: RetinaNet / FCOS (lr 0.01 at 16 images
# per batch, momentum 0.9, weight decay 1e-4). AdamW: the usual choice for small models trained
# from scratch in few epochs, as in the course's chapters.
OPTIMIZER_DEFAULTS = {"adamw": (1e-3, 1e-4), "sgd": (1e-2, 1e-4)}
SGD_MOMENTUM = 0.9
# Linear warm-up over this fraction of all steps when warmup_steps is None.
DEFAULT_WARMUP_FRACTION = 0.05
# History keys the engine writes itself; a loss term must not reuse them.
STEP_KEYS = ("step", "lr", "grad_norm", "train_loss")
EPOCH_KEYS = ("epoch", "epoch_loss", "epoch_time")
_SCHEDULER_ORDER_WARNING = "Detected call of `lr_scheduler.step()` before `optimizer.step()`"


@dataclass(eq=False)
class History(Mapping[str, list[float]]):
    """What ``fit`` logged: per-step and per-epoch series, readable as one mapping.

    ``history["train_loss"]`` returns the list for a key from either table, so plotting is
    ``plt.plot(history["step"], history["train_loss"])`` or
    ``plt.plot(history["epoch"], history["val_map"])``.

    Attributes:
        per_step: one entry per optimisation step: ``"step"`` (1, 2, ...), ``"lr"`` (the learning
            rate the step used), ``"grad_norm"`` (before clipping), ``"train_loss"`` (the sum of
            the terms) and one series per loss term, named as ``losses()`` names them.
        per_epoch: one entry per epoch: ``"epoch"`` (1, 2, ...), ``"epoch_loss"`` (mean
            ``train_loss`` of the epoch), ``"epoch_time"`` (seconds, training plus evaluation)
            and, with validation data, ``"val_<stat>"`` for every statistic of
            :meth:`coursepkg.evaluation.MeanAveragePrecision.compute` (``"val_map"``,
            ``"val_map_50"``, ``"val_map_75"``, ...); NaN in epochs that were not evaluated.

    Chapter: book/training (section "Watching training").
    """

    per_step: dict[str, list[float]] = field(default_factory=dict)
    per_epoch: dict[str, list[float]] = field(default_factory=dict)

    def __getitem__(self, key: str) -> list[float]:
        if key in self.per_step:
            return self.per_step[key]
        if key in self.per_epoch:
            return self.per_epoch[key]
        raise KeyError(f"{key!r} is not in the history; it has {list(self)}")

    def __iter__(self) -> Iterator[str]:
        yield from self.per_step
        yield from self.per_epoch

    def __len__(self) -> int:
        return len(self.per_step) + len(self.per_epoch)

    @property
    def num_steps(self) -> int:
        return len(self.per_step.get("step", []))

    @property
    def num_epochs(self) -> int:
        return len(self.per_epoch.get("epoch", []))

    def to_dict(self) -> dict[str, list[float]]:
        """Every series as ``{key: list}``, per-step keys first (copies, safe to modify)."""
        return {key: list(values) for key, values in self.items()}

    def __repr__(self) -> str:
        last = ""
        if self.num_epochs:
            shown = [k for k in ("epoch_loss", "val_map", "val_map_50") if k in self.per_epoch]
            last = "; last epoch: " + ", ".join(f"{k}={self.per_epoch[k][-1]:.4g}" for k in shown)
        return f"History({self.num_steps} steps, {self.num_epochs} epochs{last})"


def _append_row(table: dict[str, list[float]], row: Mapping[str, float]) -> None:
    """Append one row, padding with NaN so that every series keeps the same length."""
    length = len(next(iter(table.values()))) if table else 0
    for key in row:
        if key not in table:
            table[key] = [math.nan] * length
    for key, values in table.items():
        values.append(row.get(key, math.nan))


def warmup_cosine(step: int, *, warmup_steps: int, total_steps: int) -> float:
    """The learning-rate factor of step ``step``: linear warm-up, then a half cosine down to 0.

    ``f(s) = (s + 1) / warmup_steps`` for ``s < warmup_steps``, then
    ``f(s) = (1 + cos(pi * (s - warmup_steps) / (total_steps - warmup_steps))) / 2``, so the
    first step already learns, the warm-up ends at exactly 1, and the last step (``total_steps -
    1``) uses a small positive rate. Goyal et al. (2017) introduced the warm-up for large batches;
    the cosine decay is SGDR's (Loshchilov & Hutter, 2017) without restarts.

    Args:
        step: 0-based index of the optimisation step (``LambdaLR``'s ``last_epoch``).
        warmup_steps: length of the warm-up, 0 <= warmup_steps <= total_steps.
        total_steps: number of steps of the whole run, >= 1.

    Returns:
        The factor in (0, 1] that multiplies the base learning rate (0 from ``total_steps`` on).

    Raises:
        ValueError: on a negative step or inconsistent lengths.

    Chapter: book/training (section "The learning-rate schedule").
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(
            f"warmup_steps must be in [0, total_steps={total_steps}], got {warmup_steps}"
        )
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


# --------------------------------------------------------------------------- argument checks


def _check_detector(model: object) -> None:
    if not isinstance(model, Detector):
        raise TypeError(
            "model must be a coursepkg.models.detector.Detector (an nn.Module with losses() and detect()), "
            f"got {type(model).__name__}"
        )


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _check_positive(name: str, value: float | None, *, allow_zero: bool = False) -> None:
    if value is None:
        return
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value}")


def _check_bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")


def _check_checkpoint_dir(checkpoint_dir: object) -> Path | None:
    """``checkpoint_dir`` as a Path, refused at once if it is an existing file."""
    if checkpoint_dir is None:
        return None
    if not isinstance(checkpoint_dir, str | os.PathLike):
        raise TypeError(
            f"checkpoint_dir must be a folder path (str or Path) or None, "
            f"got {type(checkpoint_dir).__name__}"
        )
    folder = Path(checkpoint_dir)
    if folder.exists() and not folder.is_dir():
        raise ValueError(
            f"checkpoint_dir must be a folder (fit writes {CHECKPOINT_NAME} and "
            f"{PREVIOUS_CHECKPOINT_NAME} in it), but {folder} is an existing file"
        )
    return folder


def _model_device(model: nn.Module) -> torch.device:
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


# --------------------------------------------------------------------------- data


def _make_loader(
    name: str,
    data: object,
    *,
    batch_size: int,
    num_workers: int,
    pin_memory: bool,
    sampler_for: Callable[[int], ShardedSampler] | None = None,
) -> DataLoader:
    """A DataLoader over ``data`` (a map-style dataset), or ``data`` itself if it is one.

    ``sampler_for(len(data))`` gives the order of the items (default: the dataset's order).
    """
    if isinstance(data, DataLoader):
        loader = data
    else:
        if not (hasattr(data, "__getitem__") and hasattr(data, "__len__")):
            raise TypeError(
                f"{name} must be a map-style Dataset of (image, target) items or a DataLoader, "
                f"got {type(data).__name__}"
            )
        if len(data) == 0:
            raise ValueError(f"{name} is empty (0 items)")
        from coursepkg.data import collate_detection  # the course's batching of (image, target)

        loader = DataLoader(
            data,
            batch_size=batch_size,
            sampler=None if sampler_for is None else sampler_for(len(data)),
            num_workers=num_workers,
            pin_memory=pin_memory,
            collate_fn=collate_detection,
        )
    try:
        num_batches = len(loader)
    except TypeError as error:
        raise TypeError(
            f"{name} must have a length (a map-style dataset), got {type(data).__name__}"
        ) from error
    if num_batches == 0:
        raise ValueError(f"{name} is empty (0 batches)")
    return loader


def _check_batch(batch: object, *, where: str) -> tuple[Tensor, Sequence[Mapping[str, Any]]]:
    """Unpack and validate one ``(images [B, 3, H, W], targets)`` batch; ``where`` names it."""
    if not isinstance(batch, Sequence) or len(batch) != 2:
        raise TypeError(
            f"{where}: the data must yield (images, targets) pairs, got {type(batch).__name__}"
        )
    images, targets = batch
    if not isinstance(images, Tensor):
        raise TypeError(f"{where}: images must be a torch.Tensor, got {type(images).__name__}")
    if images.dim() != 4 or images.shape[1] != 3:
        # The detector contract: 3 colour channels. A grey image becomes one with
        # image.expand(3, -1, -1); a channels-last one with image.permute(2, 0, 1).
        raise ValueError(
            f"{where}: images must be [B, 3, H, W] (each image [3, H, W], three colour "
            f"channels), got {list(images.shape)}; repeat a grey channel with "
            "image.expand(3, -1, -1)"
        )
    if not images.is_floating_point():
        raise TypeError(f"{where}: images must be floating (e.g. uint8 / 255), got {images.dtype}")
    check_targets(targets, images.shape[0])
    return images, targets


def _check_first_batch(name: str, data: object, loader: DataLoader) -> None:
    """Validate the first item of ``data`` (or the first batch of a DataLoader) before training."""
    if isinstance(data, DataLoader):
        batch, where = next(iter(loader)), f"the first batch of {name}"
    else:
        batch, where = loader.collate_fn([data[0]]), f"{name}[0]"
    _check_batch(batch, where=where)


def _to_device(target: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    return {
        key: value.to(device, non_blocking=True) if isinstance(value, Tensor) else value
        for key, value in target.items()
    }


def _seed_everything(seed: int, rank: int = 0) -> None:
    """Seed the global generators; fit calls it only inside :func:`isolated_rng`.

    Process 0 (and a single process) uses ``seed`` itself; process ``r`` > 0 a hash of
    ``(seed, r)``, so that the processes draw different dropout masks and samples.
    """
    if rank > 0:
        seed = int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


# --------------------------------------------------------------------------- optimisation


def _make_optimizer(
    model: nn.Module,
    optimizer: str | OptimizerFactory,
    lr: float | None,
    weight_decay: float | None,
) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no parameters that require grad: there is nothing to train")
    if callable(optimizer):
        if lr is not None or weight_decay is not None:
            raise ValueError(
                "lr and weight_decay must be None when optimizer is a callable; "
                "set them inside your make_optimizer(params)"
            )
        made = optimizer(params)
        if not isinstance(made, torch.optim.Optimizer):
            raise TypeError(
                f"optimizer(params) must return a torch.optim.Optimizer, got {type(made).__name__}"
            )
        return made
    if optimizer not in OPTIMIZER_DEFAULTS:
        raise ValueError(
            f"optimizer must be 'adamw', 'sgd' or a callable make_optimizer(params), got {optimizer!r}"
        )
    default_lr, default_wd = OPTIMIZER_DEFAULTS[optimizer]
    lr = default_lr if lr is None else lr
    weight_decay = default_wd if weight_decay is None else weight_decay
    if optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=SGD_MOMENTUM, weight_decay=weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


@dataclass
class _Run:
    """Everything one training run carries from step to step."""

    model: Detector
    optimizer: torch.optim.Optimizer
    scheduler: LambdaLR
    scaler: torch.amp.GradScaler
    device: torch.device
    use_amp: bool
    grad_clip: float | None
    history: History
    step: int = 0  # optimisation steps done so far
    loss_keys: tuple[str, ...] | None = None
    # Under a process group: DDP(DetectorLossModule(model)), whose forward is model.losses and
    # whose backward averages the gradients over the processes. None in a single process.
    ddp: DistributedDataParallel | None = None


def _train_step(run: _Run, images: Tensor, targets: Sequence[Mapping[str, Any]]) -> float:
    """One optimisation step; appends its row to the per-step history and returns the loss."""
    step = run.step + 1
    images = images.to(run.device, non_blocking=True)
    targets = [_to_device(target, run.device) for target in targets]
    with torch.autocast(run.device.type, dtype=torch.float16, enabled=run.use_amp):
        losses = run.model.losses(images, targets) if run.ddp is None else run.ddp(images, targets)
    values = check_losses(losses, step=step)
    _check_loss_keys(run, tuple(values), step)
    # Sum in float32: under autocast some terms may come back in float16.
    total = torch.stack([value.float() for value in losses.values()]).sum()
    if not total.requires_grad:
        raise ValueError(
            f"losses() at step {step}: no term requires grad; were they computed under "
            "torch.no_grad() or detached?"
        )

    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(total).backward()
    run.scaler.unscale_(run.optimizer)  # clip the true gradients, not the scaled ones
    params = [p for group in run.optimizer.param_groups for p in group["params"]]
    max_norm = run.grad_clip if run.grad_clip is not None else math.inf
    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    if not math.isfinite(grad_norm) and not run.use_amp:
        # Under mixed precision GradScaler skips such steps and lowers its scale; in float32 a
        # non-finite gradient would silently turn the weights into NaN.
        raise FloatingPointError(
            f"non-finite gradient norm ({grad_norm}) at step {step}; losses: {values}"
        )
    lr = run.optimizer.param_groups[0]["lr"]
    run.scaler.step(run.optimizer)
    run.scaler.update()
    with warnings.catch_warnings():
        # Under mixed precision GradScaler skips the optimizer step when the float16 gradients
        # overflowed (typical in the first steps, while it calibrates its scale). The schedule
        # still advances, as intended; torch would warn about the order on the first step.
        warnings.filterwarnings("ignore", message=re.escape(_SCHEDULER_ORDER_WARNING))
        run.scheduler.step()

    run.step = step
    if run.ddp is not None:  # log the mean over the processes: the loss of the whole batch
        means = all_reduce_mean(torch.tensor(list(values.values()), device=run.device)).tolist()
        values = dict(zip(values, means, strict=True))
    train_loss = sum(values.values())
    _append_row(
        run.history.per_step,
        {"step": step, "lr": lr, "grad_norm": grad_norm, "train_loss": train_loss, **values},
    )
    return train_loss


def _check_loss_keys(run: _Run, keys: tuple[str, ...], step: int) -> None:
    if run.loss_keys is None:
        reserved = [
            key for key in keys if key in STEP_KEYS or key in EPOCH_KEYS or key.startswith("val_")
        ]
        if reserved:
            raise ValueError(
                f"losses() at step {step}: term name(s) {reserved} clash with the history's own "
                f"keys {STEP_KEYS + EPOCH_KEYS} or the 'val_' prefix; rename them"
            )
        run.loss_keys = keys
    elif keys != run.loss_keys:
        raise ValueError(
            f"losses() at step {step} returned terms {list(keys)}, earlier steps {list(run.loss_keys)}; "
            "return the same terms at every step (a zero tensor for an absent term)"
        )


# --------------------------------------------------------------------------- checkpoints

# What a checkpoint written by fit holds besides the format_version load_checkpoint checks.
CHECKPOINT_KEYS = (
    "model_class", "model_fingerprint", "model_shapes", "model", "optimizer", "scheduler",
    "scaler", "epoch", "global_step", "complete", "config", "history", "rng",
)  # fmt: skip


def _checkpoint_state(
    run: _Run, *, epoch: int, complete: bool, config: dict[str, Any]
) -> dict[str, Any]:
    return {
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "model_class": type(run.model).__name__,
        "model_fingerprint": model_fingerprint(run.model),
        "model_shapes": model_shapes(run.model),
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "scaler": run.scaler.state_dict(),
        "epoch": epoch,  # epochs completed
        "global_step": run.step,
        "complete": complete,
        "config": config,
        "history": {"per_step": run.history.per_step, "per_epoch": run.history.per_epoch},
        # The sampler's generator is re-seeded from (config["seed"], epoch) at every epoch, so
        # the generators of fit's isolated_rng block are the only random state to carry over.
        "rng": get_rng_state(),
    }


def _load_for(run: _Run, checkpoint: dict[str, Any], path: Path, config: Mapping[str, Any]) -> None:
    """Check ``checkpoint`` (read from ``path``) was written by this model with these settings."""
    missing = [key for key in CHECKPOINT_KEYS if key not in checkpoint]
    if missing:
        raise CheckpointError(path, f"is missing the entries {missing}")
    verify_model(checkpoint, run.model, path)
    saved = checkpoint["config"]
    changed = [
        f"{key}={saved.get(key)!r} there, {value!r} now"
        for key, value in config.items()
        if saved.get(key) != value
    ]
    if changed:
        raise CheckpointError(
            path,
            "was written by a run with other settings (" + "; ".join(changed) + "), and resuming "
            "would mix two runs: call fit with the same settings or another checkpoint_dir",
        )
    run.model.load_state_dict(checkpoint["model"])


def _restore(run: _Run, checkpoint: Mapping[str, Any], path: Path) -> None:
    """Load the optimizer, scheduler, scaler, history, step and RNG states of a checkpoint."""
    try:
        run.optimizer.load_state_dict(checkpoint["optimizer"])
        run.scheduler.load_state_dict(checkpoint["scheduler"])
        if run.use_amp and checkpoint["scaler"]:  # empty when written without mixed precision
            run.scaler.load_state_dict(checkpoint["scaler"])
        run.history = _history_from(checkpoint)
        run.step = int(checkpoint["global_step"])
        # One state per process under a process group (the config's world_size matched).
        set_rng_state(checkpoint.get("rng_per_rank", [checkpoint["rng"]])[get_rank()])
    except (KeyError, ValueError, TypeError, RuntimeError) as error:
        raise CheckpointError(
            path, f"cannot be restored ({type(error).__name__}: {error})"
        ) from error
    run.loss_keys = tuple(k for k in run.history.per_step if k not in STEP_KEYS) or None


def _history_from(checkpoint: Mapping[str, Any]) -> History:
    saved = checkpoint["history"]
    return History(
        per_step={key: list(values) for key, values in saved["per_step"].items()},
        per_epoch={key: list(values) for key, values in saved["per_epoch"].items()},
    )


# --------------------------------------------------------------------------- fit


def _progress_bar(**kwargs: Any) -> Any:
    """``tqdm.auto``: a widget in Jupyter (with ipywidgets), a text bar elsewhere."""
    with warnings.catch_warnings():
        # Without ipywidgets tqdm.auto warns once and falls back to the text bar, which is fine.
        warnings.simplefilter("ignore", TqdmExperimentalWarning)
        from tqdm.auto import tqdm
    return tqdm(**kwargs)


def _check_fit_arguments(
    *,
    model: object,
    train_data: object,
    val_data: object,
    epochs: object,
    batch_size: object,
    lr: float | None,
    weight_decay: float | None,
    warmup_steps: object,
    grad_clip: float | None,
    num_workers: object,
    seed: object,
    evaluate_every: object,
    flags: Mapping[str, object],
) -> None:
    _check_detector(model)
    _check_int("epochs", epochs, 1)
    _check_int("evaluate_every", evaluate_every, 1)
    _check_int("seed", seed, 0)
    if seed > 2**32 - 1:  # NumPy's legacy generator takes 32-bit seeds
        raise ValueError(f"seed must be <= 2**32 - 1 = {2**32 - 1}, got {seed}")
    for name, value in flags.items():
        _check_bool(name, value)
    for name, value, minimum in (
        ("batch_size", batch_size, 1),
        ("warmup_steps", warmup_steps, 0),
        ("num_workers", num_workers, 0),
    ):
        if value is not None:
            _check_int(name, value, minimum)
    _check_positive("lr", lr)
    _check_positive("weight_decay", weight_decay, allow_zero=True)
    _check_positive("grad_clip", grad_clip)
    datasets = [
        d for d in (train_data, val_data) if d is not None and not isinstance(d, DataLoader)
    ]
    if not datasets and (batch_size is not None or num_workers is not None):
        raise ValueError(
            "batch_size and num_workers apply to datasets; set them on your DataLoader instead"
        )


def _train_epoch(
    run: _Run, loader: DataLoader, *, epoch: int, epochs: int, progress: bool
) -> tuple[list[float], Any]:
    """One pass over ``loader``; returns the step losses and the (still open) progress bar."""
    run.model.train()
    losses = []
    bar = _progress_bar(total=len(loader), desc=f"epoch {epoch + 1}/{epochs}", disable=not progress)
    for index, batch in enumerate(loader):
        images, targets = _check_batch(batch, where=f"batch {index + 1} of train_data")
        losses.append(_train_step(run, images, targets))
        bar.update(1)
        bar.set_postfix(loss=f"{losses[-1]:.4f}", lr=f"{run.history['lr'][-1]:.2e}", refresh=False)
    return losses, bar


def fit(
    model: Detector,
    train_data: object,
    *,
    epochs: int,
    val_data: object | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    weight_decay: float | None = None,
    optimizer: str | OptimizerFactory = "adamw",
    warmup_steps: int | None = None,
    grad_clip: float | None = 10.0,
    amp: bool = True,
    device: torch.device | str | None = None,
    num_workers: int | None = None,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    resume: bool = True,
    seed: int = 0,
    progress: bool = True,
    evaluate_every: int = 1,
    sync_batchnorm: bool = False,
) -> History:
    """Train ``model`` on ``train_data`` for ``epochs`` epochs; return what was logged.

    The model is moved to ``device``, trained in place, and left in ``eval()`` mode on it.

    Under ``torchrun --nproc-per-node N`` (or any running process group, see
    :mod:`coursepkg.engine.distributed`) the same call trains on N processes: each runs on its
    ``LOCAL_RANK``'s device, reads its shard of the data (batch ``batch_size`` per process, so
    ``N * batch_size`` per step), and steps through ``DistributedDataParallel``, which averages
    the gradients; the losses in the history are averaged over the processes; validation mAP is
    computed once over the whole validation set; only rank 0 shows progress and writes
    checkpoints (the others wait for it), and every rank resumes from the same file. N processes
    with batch b follow the trajectory of one process with batch N * b (up to float rounding and
    batch norm, whose statistics stay per process unless ``sync_batchnorm``).

    Args:
        model: a :class:`coursepkg.models.detector.Detector` (or one wrapped in
            ``DistributedDataParallel``, which is unwrapped: ``fit`` wraps it itself).
        train_data: a map-style dataset of ``(image [3, H, W], target)`` items, batched with
            :func:`coursepkg.data.collate_detection` and shuffled by an explicit generator
            seeded from ``(seed, epoch)``; or a DataLoader yielding ``(images [B, 3, H, W],
            targets)``, used as it is.
        epochs: number of passes over ``train_data``, >= 1.
        val_data: same forms as ``train_data``; evaluated with :func:`evaluate` (COCO mAP).
        batch_size: images per batch for dataset arguments (default 8). Must stay None when
            every data argument is a DataLoader.
        lr: peak learning rate (default 1e-3 for AdamW, 1e-2 for SGD).
        weight_decay: L2 / decoupled weight decay (default 1e-4).
        optimizer: ``"adamw"``, ``"sgd"`` (momentum 0.9), or a callable ``make_optimizer(params)``
            returning a ``torch.optim.Optimizer`` (then ``lr`` and ``weight_decay`` stay None).
        warmup_steps: steps of linear warm-up before the cosine decay (default 5 % of all steps);
            see :func:`warmup_cosine`.
        grad_clip: maximum gradient norm, or None for no clipping.
        amp: use mixed precision (``torch.autocast`` float16 + ``GradScaler``); only on CUDA,
            ignored elsewhere.
        device: where to train (default :func:`coursepkg.engine.runtime.default_device`); a
            device this machine does not have is refused at once.
        num_workers: DataLoader worker processes for dataset arguments (default 0). Results do
            not depend on it.
        checkpoint_dir: folder for ``last.pt``, written atomically after every epoch (the one
            it replaces is kept as ``previous.pt``); None writes nothing.
        resume: continue from ``checkpoint_dir/last.pt`` if it exists, or from
            ``previous.pt`` if ``last.pt`` is unreadable; False starts afresh and overwrites
            them.
        seed: in ``[0, 2**32 - 1]``; seeds the per-epoch shuffling and, inside
            :func:`coursepkg.engine.checkpoint.isolated_rng`, the generators the model draws
            from. The caller's global generators are left as they were. The model's initial
            weights are the caller's business.
        progress: show a tqdm progress bar per epoch with the live loss.
        evaluate_every: evaluate ``val_data`` every this many epochs, and after the last one.
        sync_batchnorm: under a process group, compute batch-norm statistics over the images of
            all processes (``SyncBatchNorm``, GPUs only; the model's layers are converted in
            place). Ignored in a single process.

    Returns:
        The :class:`History`. If the checkpoint says this run is already complete, its stored
        history (and weights) at once.

    Raises:
        TypeError: if ``model`` is not a Detector, or the data or an argument has the wrong type.
        ValueError: before any training, on an out-of-range argument, a device this machine does
            not have, a ``checkpoint_dir`` that is a file, empty data, or a first item that is
            not an ``[3, H, W]`` float image with a valid target; during training, on a bad batch
            (see :func:`coursepkg.models.detector.check_targets`), or a model whose ``losses``
            returns an empty dict, non-scalars, terms without gradient, or other terms than
            before.
        FloatingPointError: on a NaN or inf loss or gradient norm, naming the step and every term.
        CheckpointError: if ``last.pt`` and ``previous.pt`` are both unreadable, or the
            checkpoint is from another model or from a run with other settings.
        DistributedError: under a process group, when another process stopped or did not
            answer within the group's timeout.

    Chapter: book/training.
    """
    while isinstance(model, DistributedDataParallel):  # fit(DDP(model)): fit wraps it itself
        model = model.module
    _check_fit_arguments(
        model=model, train_data=train_data, val_data=val_data, epochs=epochs,
        batch_size=batch_size, lr=lr, weight_decay=weight_decay, warmup_steps=warmup_steps,
        grad_clip=grad_clip, num_workers=num_workers, seed=seed, evaluate_every=evaluate_every,
        flags={"amp": amp, "resume": resume, "progress": progress,
               "sync_batchnorm": sync_batchnorm},
    )  # fmt: skip
    folder = _check_checkpoint_dir(checkpoint_dir)
    # Under torchrun: join the process group; each process trains on LOCAL_RANK's device.
    distributed = init_distributed_from_env()
    if distributed and (device is None or str(device) == "cuda"):
        device = local_device()
    device = resolve_device(device)
    if distributed and sync_batchnorm and device.type == "cpu":
        raise ValueError(
            "sync_batchnorm=True needs GPUs: torch's SyncBatchNorm does not run on the CPU; "
            "pass sync_batchnorm=False (each process then normalises with its own statistics)"
        )
    use_amp = amp and device.type == "cuda"
    rank, world_size = get_rank(), get_world_size()

    # 1. Data: the order of epoch e is a permutation drawn from (seed, e); process r of N reads
    # every N-th item of it (one process: all of it).
    options = {
        "batch_size": DEFAULT_BATCH_SIZE if batch_size is None else batch_size,
        "num_workers": 0 if num_workers is None else num_workers,
        "pin_memory": device.type == "cuda",
    }
    train_loader = _make_loader(
        "train_data", train_data,
        sampler_for=functools.partial(
            ShardedSampler, num_replicas=world_size, rank=rank, shuffle=True, seed=seed
        ),
        **options,
    )  # fmt: skip
    val_loader = None
    if val_data is not None:
        shard = None  # one process evaluates the dataset in order
        if distributed:  # each process evaluates its share, without padding; evaluate gathers
            shard = functools.partial(
                ShardedSampler, num_replicas=world_size, rank=rank, shuffle=False, pad=False
            )
        val_loader = _make_loader("val_data", val_data, sampler_for=shard, **options)
    total_steps = epochs * len(train_loader)
    if warmup_steps is None:
        warmup_steps = round(DEFAULT_WARMUP_FRACTION * total_steps)
    if warmup_steps > total_steps:
        raise ValueError(
            f"warmup_steps must be <= the {total_steps} steps of the run, got {warmup_steps}"
        )
    if distributed and sync_batchnorm:
        model = convert_sync_batchnorm(model)

    # Everything from here draws from the global generators only inside this block, which gives
    # the caller's states back on the way out.
    with isolated_rng():
        # A DataLoader's own sampler may draw from them: peek before seeding, so that checking
        # does not change the run.
        _check_first_batch("train_data", train_data, train_loader)
        if val_loader is not None:
            _check_first_batch("val_data", val_data, val_loader)
        return _train(
            model, train_loader, val_loader, optimizer=optimizer, lr=lr,
            weight_decay=weight_decay, warmup_steps=warmup_steps, grad_clip=grad_clip,
            epochs=epochs, device=device, use_amp=use_amp, folder=folder, resume=resume,
            seed=seed, progress=progress and is_main_process(), evaluate_every=evaluate_every,
        )  # fmt: skip


def _train(
    model: Detector,
    train_loader: DataLoader,
    val_loader: DataLoader | None,
    *,
    optimizer: str | OptimizerFactory,
    lr: float | None,
    weight_decay: float | None,
    warmup_steps: int,
    grad_clip: float | None,
    epochs: int,
    device: torch.device,
    use_amp: bool,
    folder: Path | None,
    resume: bool,
    seed: int,
    progress: bool,
    evaluate_every: int,
) -> History:
    """The body of :func:`fit` once its arguments are checked, inside :func:`isolated_rng`."""
    # 2. Optimizer, schedule, loss scaler.
    model.to(device)
    optim = _make_optimizer(model, optimizer, lr, weight_decay)
    total_steps = epochs * len(train_loader)
    rank, world_size = get_rank(), get_world_size()
    config = {  # what shapes the trajectory; resuming with other values is refused
        "epochs": epochs,
        "steps_per_epoch": len(train_loader),
        "batch_size": train_loader.batch_size,  # per process
        "world_size": world_size,
        "optimizer": optimizer if isinstance(optimizer, str) else "custom",
        "lr": optim.param_groups[0]["lr"],
        "weight_decay": optim.param_groups[0].get("weight_decay"),
        "warmup_steps": warmup_steps,
        "grad_clip": grad_clip,
        "seed": seed,
    }
    schedule = functools.partial(warmup_cosine, warmup_steps=warmup_steps, total_steps=total_steps)
    run = _Run(
        model=model,
        optimizer=optim,
        scheduler=LambdaLR(optim, schedule),
        scaler=torch.amp.GradScaler("cuda", enabled=use_amp),  # a no-op when disabled
        device=device,
        use_amp=use_amp,
        grad_clip=grad_clip,
        history=History(),
    )

    # 3. Resume (from last.pt, or previous.pt if last.pt is unreadable), or start afresh. Every
    # process reads the same file (onto the CPU, then into its own model); only rank 0 writes.
    path = previous = None
    start_epoch = 0
    # Whether the next save keeps the file it replaces as previous.pt: not when that file is
    # unreadable or belongs to an earlier run; an earlier run's previous.pt goes at that save.
    keep_previous, drop_previous = True, False
    if folder is not None:
        path, previous = folder / CHECKPOINT_NAME, folder / PREVIOUS_CHECKPOINT_NAME
        if is_main_process():
            remove_stale_temp_files(path)
    if path is not None and resume and (path.exists() or previous.exists()):
        loaded = load_latest_checkpoint(path, previous)
        _load_for(run, loaded.state, loaded.path, config)
        checkpoint = loaded.state
        if loaded.refused is not None:
            # last.pt is unreadable: the next save overwrites it instead of turning it into
            # previous.pt, so the good fallback stays until a new good checkpoint exists.
            keep_previous = False
            if progress:
                print(f"{path} {loaded.refused}: resuming from {loaded.path} instead")
        if checkpoint["complete"]:
            if progress:
                print(f"training already complete ({loaded.path}): loaded its weights and history")
            model.eval()
            return _history_from(checkpoint)
        _restore(run, checkpoint, loaded.path)
        start_epoch = int(checkpoint["epoch"])
        if progress:
            print(f"resuming from {loaded.path} after epoch {start_epoch}/{epochs}")
    else:
        _seed_everything(seed, rank)
        keep_previous = False
        drop_previous = previous is not None and previous.exists()
    if world_size > 1:
        run.ddp = wrap_for_training(model, device)  # starts every process from rank 0's weights

    # 4. Train, evaluate, checkpoint.
    for epoch in range(start_epoch, epochs):
        started = time.perf_counter()
        if hasattr(train_loader.sampler, "set_epoch"):  # ours, or a DistributedSampler
            train_loader.sampler.set_epoch(epoch)
        with raise_as_distributed_error(f"epoch {epoch + 1}"):
            losses, bar = _train_epoch(
                run, train_loader, epoch=epoch, epochs=epochs, progress=progress
            )
            broadcast_buffers(model)  # one model: rank 0's batch-norm statistics everywhere
        last = epoch + 1 == epochs
        stats = {}
        if val_loader is not None and ((epoch + 1) % evaluate_every == 0 or last):
            with raise_as_distributed_error(f"the evaluation after epoch {epoch + 1}"):
                stats = evaluate(model, val_loader, device=device)
        row = {
            "epoch": epoch + 1,
            "epoch_loss": sum(losses) / len(losses),
            "epoch_time": time.perf_counter() - started,
            **{f"val_{key}": value for key, value in stats.items()},
        }
        _append_row(run.history.per_epoch, row)
        bar.set_postfix({k: f"{v:.4f}" for k, v in row.items() if k in ("epoch_loss", "val_map")})
        bar.close()
        if path is not None:
            with raise_as_distributed_error(f"the checkpoint after epoch {epoch + 1}"):
                _save(run, path, previous if keep_previous else None, epoch=epoch + 1,
                      complete=last, config=config, drop_previous=drop_previous)  # fmt: skip
            keep_previous, drop_previous = True, False
    model.eval()
    return run.history


def _save(
    run: _Run,
    path: Path,
    previous: Path | None,
    *,
    epoch: int,
    complete: bool,
    config: dict[str, Any],
    drop_previous: bool,
) -> None:
    """Rank 0 writes the checkpoint (with every process's generator states); all wait for it."""
    # A collective: every process sends its states, rank 0 keeps them.
    rng_per_rank = all_gather_objects(get_rng_state()) if is_distributed() else None
    if is_main_process():
        state = _checkpoint_state(run, epoch=epoch, complete=complete, config=config)
        if rng_per_rank is not None:
            state["rng_per_rank"] = rng_per_rank
        save_checkpoint(state, path, previous=previous)
        if drop_previous:
            path.with_name(PREVIOUS_CHECKPOINT_NAME).unlink(missing_ok=True)
    barrier()  # nobody reads or replaces the file before it is complete


# --------------------------------------------------------------------------- inference


def evaluate(
    model: Detector,
    data: object,
    *,
    batch_size: int | None = None,
    device: torch.device | str | None = None,
    num_workers: int | None = None,
    progress: bool = False,
) -> dict[str, float]:
    """COCO-style mAP of ``model`` on ``data``, with :class:`coursepkg.evaluation.MeanAveragePrecision`.

    Runs ``model.detect`` in ``eval()`` mode under ``torch.no_grad()`` (and restores the previous
    mode), checks every batch of detections against the contract, and feeds them, on the CPU,
    with the ground truth to the metric.

    Under a process group (see :mod:`coursepkg.engine.distributed`), a dataset is split between
    the processes (every N-th image each, none twice); the detections and targets are gathered
    in the dataset's order and every process computes the same mAP over the whole dataset, equal
    to one process's. A DataLoader is used as it is, on every process.

    Args:
        model: a :class:`coursepkg.models.detector.Detector`.
        data: a map-style dataset of ``(image, target)`` items or a DataLoader (see :func:`fit`).
        batch_size: images per batch for a dataset (default 8); None for a DataLoader.
        device: where to run (default: where the model is). The model is moved there.
        num_workers: DataLoader workers for a dataset (default 0); None for a DataLoader.
        progress: show a progress bar.

    Returns:
        The scalar entries of ``MeanAveragePrecision.compute()`` as floats: ``"map"``,
        ``"map_50"``, ``"map_75"``, ... (its per-class tensors are left out).

    Raises:
        TypeError, ValueError: as :func:`fit` for the model and the data, and as
            :func:`coursepkg.models.detector.check_detections` for the model's output.

    Chapter: book/04_evaluation; used by :func:`fit` after every epoch.
    """
    # Imported here, not at the top: the metric is its own chapter and module.
    from coursepkg.evaluation import MeanAveragePrecision

    _check_detector(model)
    for name, value, minimum in (("batch_size", batch_size, 1), ("num_workers", num_workers, 0)):
        if value is not None:
            _check_int(name, value, minimum)
    _check_bool("progress", progress)
    if isinstance(data, DataLoader) and (batch_size is not None or num_workers is not None):
        raise ValueError(
            "batch_size and num_workers apply to datasets; set them on your DataLoader instead"
        )
    device = _model_device(model) if device is None else resolve_device(device)
    shard = None
    if is_distributed():  # every N-th image per process, none twice
        shard = functools.partial(
            ShardedSampler, num_replicas=get_world_size(), rank=get_rank(), shuffle=False, pad=False
        )
    loader = _make_loader(
        "data",
        data,
        batch_size=DEFAULT_BATCH_SIZE if batch_size is None else batch_size,
        num_workers=0 if num_workers is None else num_workers,
        pin_memory=device.type == "cuda",
        sampler_for=shard,
    )
    model.to(device)
    metric = MeanAveragePrecision()
    # A process's share of a dataset: keep its results, gather everyone's at the end.
    sharded = isinstance(loader.sampler, ShardedSampler) and loader.sampler.num_replicas > 1
    kept: tuple[list, list] = ([], [])
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for index, batch in enumerate(
                _progress_bar(iterable=loader, desc="evaluate", disable=not progress)
            ):
                images, targets = _check_batch(batch, where=f"batch {index + 1} of data")
                detections = model.detect(images.to(device, non_blocking=True))
                check_detections(detections, images.shape[0])
                detections = [_to_device(det, torch.device("cpu")) for det in detections]
                targets = [_to_device(target, torch.device("cpu")) for target in targets]
                if sharded:
                    kept[0].extend(detections)
                    kept[1].extend(targets)
                else:
                    metric.update(detections, targets)
    finally:
        model.train(was_training)
    if sharded:
        metric.update(*_gather_in_dataset_order(list(loader.sampler), *kept))
    stats = metric.compute()
    return {
        key: float(value)
        for key, value in stats.items()
        if isinstance(value, int | float) or (isinstance(value, Tensor) and value.dim() == 0)
    }


def _gather_in_dataset_order(
    indices: list[int], detections: list[dict[str, Tensor]], targets: list[dict[str, Any]]
) -> tuple[list[dict[str, Tensor]], list[dict[str, Any]]]:
    """Every process's detections and targets (CPU), in the order of the dataset's indices."""
    gathered = all_gather_objects(list(zip(indices, detections, targets, strict=True)))
    merged = sorted((item for part in gathered for item in part), key=lambda item: item[0])
    return [det for _, det, _ in merged], [target for _, _, target in merged]


def predict(model: Detector, images: Tensor | Sequence[Tensor]) -> list[dict[str, Tensor]]:
    """Detections for a few images, on the CPU, ready to plot.

    Runs ``model.detect`` where the model is, in ``eval()`` mode under ``torch.no_grad()``
    (restoring the previous mode), and checks the result against the contract.

    Args:
        images: a batch ``[B, 3, H, W]``, one image ``[3, H, W]``, or a list of ``[3, H, W]``
            images of possibly different sizes (each then runs on its own).

    Returns:
        One dict per image (a list of one for a single image) with ``"boxes"`` [D, 4],
        ``"scores"`` [D] and ``"labels"`` [D] on the CPU, scores in decreasing order.

    Raises:
        TypeError: if ``model`` is not a Detector or the images are not floating tensors.
        ValueError: on a wrong image shape, or detections that break the contract.

    Chapter: book/training (section "Looking at detections").
    """
    _check_detector(model)
    if isinstance(images, Tensor):
        if images.dim() == 3:
            images = images.unsqueeze(0)
        if images.dim() != 4:
            raise ValueError(f"images must be [B, 3, H, W] or [3, H, W], got {list(images.shape)}")
        batches = [images]
    elif isinstance(images, Sequence) and all(isinstance(image, Tensor) for image in images):
        for index, image in enumerate(images):
            if image.dim() != 3:
                raise ValueError(f"images[{index}] must be [3, H, W], got {list(image.shape)}")
        batches = [image.unsqueeze(0) for image in images]
    else:
        raise TypeError(
            f"images must be a tensor or a list of tensors, got {type(images).__name__}"
        )
    if any(not batch.is_floating_point() for batch in batches):
        raise TypeError("images must be floating tensors (e.g. uint8 / 255)")

    device = _model_device(model)
    was_training = model.training
    model.eval()
    results: list[dict[str, Tensor]] = []
    try:
        with torch.no_grad():
            for batch in batches:
                detections = model.detect(batch.to(device))
                check_detections(detections, batch.shape[0])
                results.extend(_to_device(det, torch.device("cpu")) for det in detections)
    finally:
        model.train(was_training)
    return results
