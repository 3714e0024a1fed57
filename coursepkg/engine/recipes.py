"""Training recipes: how each chapter trains its detector in each run profile, in one place.

A recipe is a frozen dataclass of the hyper-parameters a chapter needs beyond the model's own
config (data sizes and seeds, epochs, batch size, optimiser settings, the mAP floor the chapter
asserts), one function per detector that returns it for a profile name (``"smoke"``, ``"cpu"``,
``"gpu"``; see :mod:`coursepkg.engine.runtime`).

Chapter: book/05_rcnn, book/06_fast_rcnn, book/07_faster_rcnn.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from coursepkg.engine.runtime import PROFILES
from coursepkg.models.faster_rcnn import FasterRCNNConfig

__all__ = [
    "RCNNRecipe",
    "rcnn_recipe",
    "FastRCNNRecipe",
    "fast_rcnn_recipe",
    "FasterRCNNRecipe",
    "faster_rcnn_recipe",
]

def _check_profile(profile: str) -> str:
    """The profile name, or a ValueError naming the three run profiles of the course."""
    if not isinstance(profile, str) or profile not in PROFILES:
        raise ValueError(f"profile must be one of {', '.join(PROFILES)}; got {profile!r}")
    return profile


# ----------------------------------------------------------------------------------- R-CNN


@dataclass(frozen=True)
class RCNNRecipe:
    """How the R-CNN chapter trains on the shapes data in one run profile.

    Attributes:
        profile: ``"smoke"``, ``"cpu"`` or ``"gpu"``.
        num_train, num_test: ShapesDataset images for training and for the held-out test.
        train_seed, test_seed: the datasets' seeds (the Fast R-CNN chapter reuses both).
        finetune_steps: steps of fine-tuning the region network (mini-batches of warped regions).
        max_loss_ratio: the chapter asserts that the last fifth of fine-tuning has a mean loss
            below this fraction of the first fifth's.
        min_map_50: the mAP@0.5 (with box regression) on the held-out set that the chapter
            asserts; measured values are comfortably above it.
    """

    profile: str
    num_train: int
    num_test: int
    finetune_steps: int
    max_loss_ratio: float
    min_map_50: float
    train_seed: int = 1
    test_seed: int = 2


def rcnn_recipe(profile: str) -> RCNNRecipe:
    """The training settings of the R-CNN chapter for a run profile (smoke, cpu or gpu).

    Raises:
        ValueError: for an unknown profile name.

    Chapter: book/05_rcnn
    """
    return {
        "smoke": RCNNRecipe("smoke", 16, 8, finetune_steps=30, max_loss_ratio=1.0, min_map_50=0.1),
        "cpu": RCNNRecipe("cpu", 120, 40, finetune_steps=500, max_loss_ratio=0.8, min_map_50=0.45),
        "gpu": RCNNRecipe("gpu", 600, 200, finetune_steps=3000, max_loss_ratio=0.8, min_map_50=0.6),
    }[_check_profile(profile)]


# ------------------------------------------------------------------------------ Fast R-CNN


@dataclass(frozen=True)
class FastRCNNRecipe:
    """How the Fast R-CNN chapter trains on the shapes data in one run profile.

    Attributes:
        profile: ``"smoke"``, ``"cpu"`` or ``"gpu"``.
        num_train, num_test, train_seed, test_seed: the R-CNN chapter's data and seeds, so that
            the two chapters' mAP compare on the same held-out images and proposals.
        epochs, batch_size, lr: arguments of :func:`coursepkg.engine.training.fit`.
        max_loss_ratio: the chapter asserts that the last fifth of training has a mean loss below
            this fraction of the first fifth's.
        min_map_50: the mAP@0.5 on the held-out set that the chapter asserts; None where the run
            is too short to expect detections.
    """

    profile: str
    num_train: int
    num_test: int
    epochs: int
    batch_size: int
    lr: float
    max_loss_ratio: float
    min_map_50: float | None
    train_seed: int = 1
    test_seed: int = 2


def fast_rcnn_recipe(profile: str) -> FastRCNNRecipe:
    """The training settings of the Fast R-CNN chapter for a run profile (smoke, cpu or gpu).

    Raises:
        ValueError: for an unknown profile name.

    Chapter: book/06_fast_rcnn
    """
    common = {"batch_size": 2, "lr": 1e-3}
    return {
        "smoke": FastRCNNRecipe("smoke", 16, 8, epochs=2, max_loss_ratio=1.0, min_map_50=None, **common),
        "cpu": FastRCNNRecipe("cpu", 120, 40, epochs=10, max_loss_ratio=0.7, min_map_50=0.3, **common),
        "gpu": FastRCNNRecipe("gpu", 600, 200, epochs=40, max_loss_ratio=0.7, min_map_50=0.5, **common),
    }[_check_profile(profile)]


# ---------------------------------------------------------------------------- Faster R-CNN


@dataclass(frozen=True)
class FasterRCNNRecipe:
    """How the Faster R-CNN chapter trains on the shapes data in one run profile.

    Attributes:
        profile: ``"smoke"``, ``"cpu"`` or ``"gpu"``.
        image_size: ``(height, width)`` of the ShapesDataset images.
        num_train, num_val: images in the training and held-out sets.
        train_seed, val_seed: the datasets' seeds (different: the validation images are unseen).
        epochs, batch_size, lr, weight_decay: arguments of :func:`coursepkg.engine.training.fit`
            (AdamW).
        config: the model's :class:`FasterRCNNConfig`.
        min_map_50: the mAP@0.5 on the held-out set that the chapter asserts (measured values are
            comfortably above it); None where the run is too short to expect detections (the
            smoke profile, which checks that training runs and its loss falls).
    """

    profile: str
    image_size: tuple[int, int]
    num_train: int
    num_val: int
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    config: FasterRCNNConfig = field(default_factory=FasterRCNNConfig)
    min_map_50: float | None = None
    train_seed: int = 0
    val_seed: int = 1


def faster_rcnn_recipe(profile: str) -> FasterRCNNRecipe:
    """The training settings of the Faster R-CNN chapter for a run profile.

    Args:
        profile: ``"smoke"`` (CI, about a minute), ``"cpu"`` (the website, about 3 minutes for
            the whole chapter on 2 cores) or ``"gpu"``; a :class:`coursepkg.engine.runtime.Profile`'s
            ``name``.

    Returns:
        The :class:`FasterRCNNRecipe`.

    Raises:
        ValueError: for an unknown profile name.

    Chapter: book/07_faster_rcnn (section "Training on the shapes").
    """
    common = {"image_size": (128, 128), "weight_decay": 1e-4}
    return {
        "smoke": FasterRCNNRecipe(
            profile="smoke", num_train=96, num_val=32, epochs=2, batch_size=8, lr=4e-3,
            min_map_50=None, **common,
        ),
        "cpu": FasterRCNNRecipe(
            profile="cpu", num_train=1000, num_val=200, epochs=8, batch_size=8, lr=4e-3,
            min_map_50=0.6, **common,
        ),
        "gpu": FasterRCNNRecipe(
            profile="gpu", num_train=4000, num_val=500, epochs=12, batch_size=16, lr=6e-3,
            min_map_50=0.8, **common,
        ),
    }[_check_profile(profile)]
