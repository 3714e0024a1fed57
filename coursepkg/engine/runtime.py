"""Where the course runs: the device and the run profile (smoke, cpu, gpu).

Every chapter reads one profile at its top and sizes its experiments from it::

    from coursepkg.engine.runtime import get_profile
    PROFILE = get_profile()
    epochs = PROFILE.pick(smoke=1, cpu=6, gpu=30)

* ``smoke``: what CI runs, every notebook in about a minute on 2 CPU cores. Results are rough but
  still asserted (a loss that goes down, an mAP above a floor the profile can reach).
* ``cpu``: the default without a GPU and what the website shows; each chapter in about 3 minutes
  on 2 cores.
* ``gpu``: chosen automatically when CUDA is available; more data and epochs, better results.

The switch is the environment variable ``COURSE_PROFILE`` (``smoke``, ``cpu`` or ``gpu``); without
it the profile follows the hardware.

Chapter: book/data_and_conventions (section "Run profiles").
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import torch

T = TypeVar("T")

PROFILES = ("smoke", "cpu", "gpu")
PROFILE_ENV_VAR = "COURSE_PROFILE"


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return mps is not None and mps.is_available()


def default_device() -> torch.device:
    """The best device on this machine: CUDA, then Apple's MPS, then the CPU.

    Only notebooks and the training loop call this; every math function follows its inputs.
    """
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_device(device: torch.device | str | None, name: str = "device") -> torch.device:
    """``device`` as a ``torch.device`` that exists on this machine; None means :func:`default_device`.

    Checked before any work starts, so that ``fit(..., device="cuda")`` on a machine without a GPU
    fails at once with advice rather than after building the data and the optimizer.

    Args:
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``, a ``torch.device``, or None.
        name: the argument's name, for the messages.

    Raises:
        TypeError: if ``device`` is neither a string, a ``torch.device`` nor None.
        ValueError: if the string is not a device, or names a CUDA / MPS device this machine
            does not have.

    Chapter: book/data_and_conventions (section "Run profiles").
    """
    if device is None:
        return default_device()
    if not isinstance(device, str | torch.device):
        raise TypeError(
            f"{name} must be a str such as 'cpu' or 'cuda', a torch.device or None, "
            f"got {type(device).__name__}"
        )
    try:
        resolved = torch.device(device)
    except RuntimeError as error:
        raise ValueError(
            f"{name} must be a device such as 'cpu', 'cuda', 'cuda:0' or 'mps', got {device!r}"
        ) from error
    advice = f"pass {name}='cpu', or {name}=None for the best device this machine has"
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"{name}={str(device)!r} but CUDA is not available on this machine "
                f"(torch.cuda.is_available() is False); {advice}"
            )
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            raise ValueError(
                f"{name}={str(device)!r} but this machine has {count} CUDA device(s), "
                f"cuda:0 to cuda:{count - 1}"
            )
    if resolved.type == "mps" and not _mps_available():
        raise ValueError(
            f"{name}={str(device)!r} but Apple's MPS is not available on this machine; {advice}"
        )
    return resolved


@dataclass(frozen=True)
class Profile:
    """A run profile: its name and a helper that picks the setting for it."""

    name: str

    def pick(self, *, smoke: T, cpu: T, gpu: T) -> T:
        """Return the value given for this profile, e.g. ``PROFILE.pick(smoke=1, cpu=5, gpu=40)``."""
        return {"smoke": smoke, "cpu": cpu, "gpu": gpu}[self.name]

    @property
    def is_smoke(self) -> bool:
        return self.name == "smoke"


def get_profile(name: str | None = None) -> Profile:
    """The run profile: ``name`` if given, else ``$COURSE_PROFILE``, else ``gpu`` on CUDA or ``cpu``.

    Raises:
        ValueError: if the name (or the environment variable) is not one of smoke, cpu, gpu.
    """
    chosen = name if name is not None else os.environ.get(PROFILE_ENV_VAR, "").strip().lower()
    if not chosen:
        chosen = "gpu" if torch.cuda.is_available() else "cpu"
    if chosen not in PROFILES:
        source = "name" if name is not None else f"${PROFILE_ENV_VAR}"
        raise ValueError(f"{source} must be one of {', '.join(PROFILES)}; got {chosen!r}")
    return Profile(chosen)


def describe_runtime(profile: Profile | None = None) -> str:
    """Print (and return) one line: the device found, the profile, and the versions in use.

    This is the last line of every chapter's setup cell. On Colab it is how a learner sees that
    the GPU runtime is on and that the course kept Colab's own torch; without a GPU it says how to
    switch one on there. Example::

        GPU found: cuda (Tesla T4) | profile: gpu | torch 2.8.0+cu126 | coursepkg 0.1.0 | python 3.12.11 | numpy 2.0.2 | 2 cpu threads

    Chapter: every chapter's setup cell.
    """
    import sys

    import numpy

    import coursepkg

    profile = profile or get_profile()
    device = default_device()
    if device.type == "cuda":
        found = f"GPU found: cuda ({torch.cuda.get_device_name(0)})"
    elif device.type == "mps":
        found = "GPU found: mps (Apple)"
    elif "google.colab" in sys.modules:
        found = "no GPU found (Colab: Runtime > Change runtime type > GPU), running on cpu"
    else:
        found = "no GPU found, running on cpu"
    text = (
        f"{found} | profile: {profile.name} | torch {torch.__version__} | coursepkg "
        f"{coursepkg.__version__} | python {platform.python_version()} | numpy {numpy.__version__}"
        f" | {torch.get_num_threads()} cpu threads"
    )
    print(text)
    return text


def best_time_ms(fn: Callable[[], T], repeats: int = 3) -> tuple[T, float]:
    """Run ``fn()`` ``repeats`` times; return its last result and the fastest run in milliseconds.

    The fastest of a few runs is the one least disturbed by other programs: enough for a chapter's
    quick comparison of two implementations. The benchmarks in ``benchmarks/`` measure properly
    (medians of several runs, ratios against torchvision in the same run).

    Raises:
        TypeError, ValueError: if ``repeats`` is not an int >= 1.

    Chapter: book/02_boxes_iou, book/03_nms.
    """
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an int >= 1, got {repeats!r}")
    fastest = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        fastest = min(fastest, time.perf_counter() - start)
    return result, fastest * 1e3


def compare_step_times(
    steps: Mapping[str, Callable[[], object]],
    *,
    repeats: int,
    warmup: int,
    images_per_step: int,
) -> dict[str, float]:
    """Time several step functions alternately; medians per name, as one row of a benchmark table.

    Each round runs every function once, in order, so that all of them see the same machine load;
    ``warmup`` untimed rounds come first. For each ``name`` the row has ``{name}_ms`` (median wall
    time of a step), ``{name}_best_ms`` (the fastest), ``{name}_cpu_ms`` (median CPU time of this
    process) and ``{name}_img_s`` (``images_per_step`` over the median wall time).

    Raises:
        TypeError, ValueError: if ``steps`` is empty or not a mapping of names to callables, or
            ``repeats``, ``warmup`` or ``images_per_step`` is not an int in range.

    Used by: benchmarks/bench_faster_rcnn.py, benchmarks/bench_retinanet.py.
    """
    if not isinstance(steps, Mapping) or not steps:
        raise ValueError(f"steps must be a non-empty mapping of names to step functions, got {steps!r}")
    for name, fn in steps.items():
        if not isinstance(name, str) or not callable(fn):
            raise TypeError(f"steps must map names (str) to callables, got {name!r}: {fn!r}")
    for name, value, low in (("repeats", repeats, 1), ("warmup", warmup, 0), ("images_per_step", images_per_step, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    for _ in range(warmup):
        for fn in steps.values():
            fn()
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, fn in steps.items():
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            times[name].append((time.perf_counter() - wall, time.process_time() - cpu))
    row: dict[str, float] = {}
    for name, pairs in times.items():
        walls = [w for w, _ in pairs]
        row[f"{name}_ms"] = 1e3 * statistics.median(walls)
        row[f"{name}_best_ms"] = 1e3 * min(walls)
        row[f"{name}_cpu_ms"] = 1e3 * statistics.median(c for _, c in pairs)
        row[f"{name}_img_s"] = images_per_step / statistics.median(walls)
    return row
