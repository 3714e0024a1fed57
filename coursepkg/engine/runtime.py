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
from dataclasses import dataclass
from typing import TypeVar

import torch

T = TypeVar("T")

PROFILES = ("smoke", "cpu", "gpu")
PROFILE_ENV_VAR = "COURSE_PROFILE"


def default_device() -> torch.device:
    """The best device on this machine: CUDA, then Apple's MPS, then the CPU.

    Only notebooks and the training loop call this; every math function follows its inputs.
    """
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


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
    """Print (and return) the versions, device and profile a chapter runs with."""
    import matplotlib
    import numpy

    import coursepkg

    profile = profile or get_profile()
    device = default_device()
    gpu = f" ({torch.cuda.get_device_name(0)})" if device.type == "cuda" else ""
    text = (
        f"python {platform.python_version()} | torch {torch.__version__} | numpy {numpy.__version__}"
        f" | matplotlib {matplotlib.__version__} | coursepkg {coursepkg.__version__}\n"
        f"device: {device}{gpu} | profile: {profile.name} | cpu threads: {torch.get_num_threads()}"
    )
    print(text)
    return text
