"""Train a chapter's detector on the shapes data from the command line, on one process or many.

The same command runs on one process, or under torchrun on several (CPU processes on gloo, or
one process per GPU on NCCL); :func:`coursepkg.engine.training.fit` notices the process group::

    python -m coursepkg.engine.train_shapes --detector faster_rcnn --profile smoke
    torchrun --nproc-per-node 2 -m coursepkg.engine.train_shapes --detector faster_rcnn --profile smoke

    # two machines with 8 GPUs each: run on each machine, with its --node-rank (0 or 1)
    torchrun --nnodes 2 --nproc-per-node 8 --node-rank 0 --master-addr HOST0 --master-port 29500 \\
        -m coursepkg.engine.train_shapes --detector faster_rcnn --profile gpu

Each detector is one entry of :data:`DETECTORS`: a function from a run profile to a
:class:`ShapesJob` (the model, the data and the chapter's training settings, from
:mod:`coursepkg.engine.recipes`). Adding a detector is adding its function to the table.
``--batch-size`` is per process, so N processes train with batches of N times as many images.
Rank 0 prints one JSON line with the measured throughput (and writes it to ``--report``).

Chapter: book/training (section "Scaling out: several processes with torchrun").
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from functools import partial
from pathlib import Path

import torch
from torch.utils.data import Dataset, Subset

from coursepkg.data import DEFAULT_SHAPE_CLASSES, ShapesDataset
from coursepkg.engine.distributed import (
    DEFAULT_TIMEOUT,
    get_world_size,
    init_distributed_from_env,
    is_main_process,
)
from coursepkg.engine.recipes import (
    FCOSRecipe,
    RetinaNetRecipe,
    YOLOv1Recipe,
    fast_rcnn_recipe,
    faster_rcnn_recipe,
    fcos_recipe,
    iou_aware_retinanet_recipe,
    retinanet_recipe,
    yolo_v1_recipe,
)
from coursepkg.engine.runtime import PROFILES, get_profile
from coursepkg.engine.training import fit
from coursepkg.models.detector import Detector

__all__ = [
    "DETECTORS",
    "RETINANET_BOX_LOSSES",
    "ShapesJob",
    "fast_rcnn_job",
    "faster_rcnn_job",
    "fcos_job",
    "iou_aware_retinanet_job",
    "main",
    "retinanet_job",
    "yolo_v1_job",
]


@dataclass
class ShapesJob:
    """What one detector needs to train on the shapes data in one profile.

    Attributes:
        model: a fresh :class:`coursepkg.models.detector.Detector`.
        train_set, val_set: map-style datasets of ``(image [3, H, W], target)``.
        epochs, batch_size, lr, weight_decay: the chapter's ``fit`` settings (batch per process).
    """

    model: Detector
    train_set: Dataset
    val_set: Dataset
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float | None = None


def faster_rcnn_job(profile: str) -> ShapesJob:
    """Faster R-CNN as book/07_faster_rcnn trains it (:func:`faster_rcnn_recipe`)."""
    from coursepkg.models.faster_rcnn import FasterRCNN

    recipe = faster_rcnn_recipe(profile)
    return ShapesJob(
        model=FasterRCNN(recipe.config),
        train_set=ShapesDataset(recipe.num_train, recipe.image_size, seed=recipe.train_seed),
        val_set=ShapesDataset(recipe.num_val, recipe.image_size, seed=recipe.val_seed),
        epochs=recipe.epochs,
        batch_size=recipe.batch_size,
        lr=recipe.lr,
        weight_decay=recipe.weight_decay,
    )


def _selective_search(image: torch.Tensor) -> torch.Tensor:
    """Selective search in its "fast" mode with a fixed seed, best first (book/06_fast_rcnn)."""
    from coursepkg.models.selective_search import selective_search

    return selective_search(image, mode="fast", generator=torch.Generator().manual_seed(0)).boxes


def fast_rcnn_job(profile: str) -> ShapesJob:
    """Fast R-CNN on selective-search proposals as book/06_fast_rcnn trains it.

    Every process keeps its own proposal cache, so each searches only the images it reads.
    """
    from coursepkg.models.fast_rcnn import FastRCNN, FastRCNNConfig
    from coursepkg.models.rcnn import ProposalCache, RCNNConfig

    recipe = fast_rcnn_recipe(profile)
    cache = ProposalCache(_selective_search, max_proposals=RCNNConfig.for_course().max_proposals)
    return ShapesJob(
        model=FastRCNN(FastRCNNConfig.for_course(len(DEFAULT_SHAPE_CLASSES)), cache),
        train_set=ShapesDataset(recipe.num_train, seed=recipe.train_seed),
        val_set=ShapesDataset(recipe.num_test, seed=recipe.test_seed),
        epochs=recipe.epochs,
        batch_size=recipe.batch_size,
        lr=recipe.lr,
    )


def _one_stage_job(model: Detector, recipe: YOLOv1Recipe | RetinaNetRecipe | FCOSRecipe) -> ShapesJob:
    """The one-stage detectors' recipes share their data and ``fit`` fields."""
    return ShapesJob(
        model=model,
        train_set=ShapesDataset(recipe.num_train, recipe.image_size, seed=recipe.train_seed),
        val_set=ShapesDataset(recipe.num_val, recipe.image_size, seed=recipe.val_seed),
        epochs=recipe.epochs,
        batch_size=recipe.batch_size,
        lr=recipe.lr,
        weight_decay=recipe.weight_decay,
    )


def yolo_v1_job(profile: str) -> ShapesJob:
    """YOLOv1 as book/08_yolo trains it (:func:`yolo_v1_recipe`)."""
    from coursepkg.models.yolo import YOLOv1

    recipe = yolo_v1_recipe(profile)
    return _one_stage_job(YOLOv1(recipe.config), recipe)


def retinanet_job(profile: str, box_loss: str | None = None) -> ShapesJob:
    """RetinaNet as book/10_retinanet trains it (:func:`retinanet_recipe`).

    ``box_loss`` replaces the recipe's box loss (``RetinaNetConfig.box_loss``) and nothing else:
    book/12_iou_losses compares RetinaNets that differ only in it. None: the recipe's (smooth-L1).
    """
    from coursepkg.models.retinanet import RetinaNet

    recipe = retinanet_recipe(profile)
    config = recipe.config if box_loss is None else replace(recipe.config, box_loss=box_loss)
    return _one_stage_job(RetinaNet(config), recipe)


def iou_aware_retinanet_job(profile: str) -> ShapesJob:
    """IoU-aware RetinaNet as book/11_iou_aware_retinanet trains it (RetinaNet's recipe)."""
    from coursepkg.models.iou_aware_retinanet import IoUAwareRetinaNet

    recipe = iou_aware_retinanet_recipe(profile)
    return _one_stage_job(IoUAwareRetinaNet(recipe.config), recipe)


def fcos_job(profile: str) -> ShapesJob:
    """FCOS as book/13_fcos trains it (:func:`fcos_recipe`)."""
    from coursepkg.models.fcos import FCOS

    recipe = fcos_recipe(profile)
    return _one_stage_job(FCOS(recipe.config), recipe)


#: RetinaNet trained with an IoU box loss instead of smooth-L1, everything else its recipe's:
#: detector name -> ``RetinaNetConfig.box_loss`` (book/12_iou_losses, section "With a detector").
RETINANET_BOX_LOSSES: dict[str, str] = {
    "retinanet_iou": "iou",
    "retinanet_giou": "giou",
    "retinanet_rectified": "rectified",
}

#: Detector name -> the function that builds its job for a profile. One entry per detector, and
#: one per RetinaNet box-loss variant (:data:`RETINANET_BOX_LOSSES`).
DETECTORS: dict[str, Callable[[str], ShapesJob]] = {
    "fast_rcnn": fast_rcnn_job,
    "faster_rcnn": faster_rcnn_job,
    "yolo_v1": yolo_v1_job,
    "retinanet": retinanet_job,
    "iou_aware_retinanet": iou_aware_retinanet_job,
    "fcos": fcos_job,
    **{name: partial(retinanet_job, box_loss=loss) for name, loss in RETINANET_BOX_LOSSES.items()},
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m coursepkg.engine.train_shapes",
        description="Train a chapter's detector on the shapes data (one process, or torchrun).",
    )
    parser.add_argument("--detector", required=True, choices=sorted(DETECTORS))
    parser.add_argument(
        "--profile",
        choices=PROFILES,
        default=None,
        help="run profile (default: $COURSE_PROFILE, else by hardware)",
    )
    parser.add_argument("--epochs", type=int, default=None, help="override the recipe's")
    parser.add_argument("--batch-size", type=int, default=None, help="per process")
    parser.add_argument(
        "--num-train",
        type=int,
        default=None,
        help="train on the first N images of the recipe's training set",
    )
    parser.add_argument("--no-val", action="store_true", help="skip validation (throughput runs)")
    parser.add_argument("--checkpoint-dir", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sync-batchnorm", action="store_true", help="SyncBatchNorm (GPUs)")
    parser.add_argument(
        "--timeout-s",
        type=float,
        default=DEFAULT_TIMEOUT.total_seconds(),
        help="process group timeout in seconds",
    )
    parser.add_argument("--report", type=Path, default=None, help="write rank 0's JSON here")
    return parser  # fmt: skip


def main(argv: Sequence[str] | None = None) -> dict[str, object]:
    """Parse the command line, train, and return (rank 0 also prints) the report.

    Returns:
        ``{"detector", "profile", "world_size", "batch_size" (per process), "epochs",
        "images" (per epoch, all processes), "image_size" ([H, W] of the first training image),
        "train_seconds", "images_per_second", "val_map_50"}`` (``val_map_50`` is None without
        validation).
    """
    args = _parser().parse_args(argv)
    profile = args.profile or get_profile().name
    started_group = init_distributed_from_env(timeout=timedelta(seconds=args.timeout_s))
    torch.manual_seed(args.seed)  # the initial weights (DDP then copies rank 0's everywhere)
    job = DETECTORS[args.detector](profile)
    train_set = job.train_set
    if args.num_train is not None:  # items are drawn from their own seeds: a prefix is a subset
        train_set = Subset(train_set, range(min(args.num_train, len(train_set))))
    epochs = args.epochs or job.epochs
    batch_size = args.batch_size or job.batch_size
    start = time.perf_counter()
    history = fit(
        job.model, train_set, val_data=None if args.no_val else job.val_set, epochs=epochs,
        batch_size=batch_size, lr=job.lr, weight_decay=job.weight_decay,
        checkpoint_dir=args.checkpoint_dir, seed=args.seed, sync_batchnorm=args.sync_batchnorm,
        progress=False,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    report = {
        "detector": args.detector,
        "profile": profile,
        "world_size": get_world_size(),
        "batch_size": batch_size,
        "epochs": epochs,
        "images": len(train_set),
        "image_size": list(train_set[0][0].shape[-2:]),
        "train_seconds": seconds,
        "images_per_second": epochs * len(train_set) / seconds,
        "val_map_50": None if args.no_val else history["val_map_50"][-1],
    }
    if is_main_process():
        print(json.dumps(report))
        if args.report is not None:
            args.report.write_text(json.dumps(report))
    if started_group:
        torch.distributed.destroy_process_group()
    return report


if __name__ == "__main__":
    main()
