"""The capstone comparison: every detector of the course, same data, one table.

Each detector trains with its chapter's recipe (model settings, epochs, batch size, learning
rate: :data:`coursepkg.engine.train_shapes.DETECTORS`) on a prefix of one stream of shapes
images, so every detector sees the first images of the same training set and as many of them as
its chapter uses, and is scored on one held-out set that no detector trained on::

    python -m coursepkg.engine.capstone --profile cpu            # writes book/capstone_cpu.json
    python -m coursepkg.engine.capstone --profile gpu            # on a GPU: the gpu recipes
    python -m coursepkg.engine.capstone --detectors retinanet fcos --profile smoke --out /tmp/c.json

The table has, per detector: COCO-style AP, AP50, AP75 and AP small/medium/large (from
:class:`coursepkg.evaluation.MeanAveragePrecision`), TIDE's six ΔAP at IoU 0.5
(:func:`coursepkg.evaluation.error_breakdown`), the parameter count, the training time and the
inference speed (images per second through ``detect``, batches of 8, after one warm-up batch, on
``TIMING_IMAGES`` images in neither the training nor the held-out set, so that Fast R-CNN's time
includes its selective search), all measured on this machine in one run; and the distribution of
the final IoUs (:func:`final_iou_distribution`: the IoU of every held-out object found at IoU
0.5, as a histogram and quantiles). Rows written before that column existed lack it
(:data:`LATER_ROW_KEYS`). The RetinaNet box-loss variants
(:data:`coursepkg.engine.train_shapes.RETINANET_BOX_LOSSES`) are detectors like the others here;
book/12_iou_losses reads their rows.

Interrupted runs resume. After each detector the results file is rewritten (atomically) and a
detector already in it, for the same profile and settings, is skipped; the detector being
trained resumes from its last finished epoch in ``--checkpoint-dir/<detector>/`` (see
:func:`coursepkg.engine.training.fit`). A run of some detectors (``--detectors``) keeps the rows
of the others. One line per detector reports progress, and a progress bar with the live loss
follows each epoch of the detectors that train with ``fit`` (``--no-progress`` turns it off).

The sliding-window baseline and R-CNN do not train with ``fit`` (R-CNN fine-tunes on warped
regions, then fits SVMs and box regressors one class at a time):
:mod:`coursepkg.engine.classic_detectors` trains them with their chapters' recipes on the first
images of the same stream and wraps them as detectors, so that their rows are measured by the same
code. Their ``train_seconds`` include everything (R-CNN: selective search on the training images,
fine-tuning, features, SVMs and regressors); R-CNN's ``epochs`` are its fine-tuning steps; the
sliding windows classify background and every class (their chapter finds circles only). They
come last in the table, train in one go (no checkpoints) and resume per detector like the rest::

    python -m coursepkg.engine.capstone --detectors sliding_windows rcnn --profile smoke --out /tmp/c.json

Chapter: book/14_capstone.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset

from coursepkg.data import ShapesDataset
from coursepkg.engine.classic_detectors import CLASSIC_DETECTORS, classic_num_train, train_classic
from coursepkg.engine.runtime import PROFILES, get_profile
from coursepkg.engine.train_shapes import DETECTORS, ShapesJob
from coursepkg.engine.training import evaluate, fit, predict
from coursepkg.evaluation import error_breakdown, match_detections
from coursepkg.evaluation.inputs import images_from_dicts
from coursepkg.ops.validation import check_int

__all__ = [
    "CAPSTONE_DATA",
    "FINAL_IOU_BINS",
    "FINAL_IOU_QUANTILES",
    "LATER_ROW_KEYS",
    "ROW_KEYS",
    "CapstoneData",
    "capstone_data",
    "capstone_detectors",
    "final_iou_distribution",
    "measure_detector",
    "run_capstone",
    "main",
]

#: Images of the inference-speed measurement (fresh ones: neither training nor held-out images).
TIMING_IMAGES = 32

#: Fields every detector's row of the results has.
ROW_KEYS = (
    "detector", "map", "map_50", "map_75", "map_small", "map_medium", "map_large", "delta_ap",
    "parameters", "train_images", "epochs", "train_seconds", "inference_images_per_second",
)  # fmt: skip

#: Fields added to the rows later: every row measured now has them, rows stored before may not.
LATER_ROW_KEYS = ("final_iou",)

#: Edges of the final-IoU histogram: 0.5 to 1 in steps of 0.05 (a true positive's IoU is >= 0.5).
FINAL_IOU_BINS = tuple(round(0.5 + 0.05 * i, 2) for i in range(11))

#: Quantiles of the found objects' IoUs stored in a row.
FINAL_IOU_QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


class CapstoneData:
    """The shared split of one profile: ``num_val`` held-out images and the training stream.

    Attributes:
        num_val: held-out images (seed ``val_seed``), the same for every detector.
        train_seed, val_seed: the seeds of the two streams (different: no image is in both).
    """

    def __init__(self, num_val: int, train_seed: int = 0, val_seed: int = 1) -> None:
        self.num_val = check_int(num_val, "num_val", low=1)
        self.train_seed = check_int(train_seed, "train_seed", low=0)
        self.val_seed = check_int(val_seed, "val_seed", low=0)
        if train_seed == val_seed:
            raise ValueError(f"train_seed and val_seed must differ, both are {train_seed}")

    def as_dict(self) -> dict[str, int]:
        return {"num_val": self.num_val, "train_seed": self.train_seed, "val_seed": self.val_seed}


#: The held-out set of every profile (the training sets are each recipe's own size).
CAPSTONE_DATA: dict[str, CapstoneData] = {
    "smoke": CapstoneData(num_val=16),
    "cpu": CapstoneData(num_val=200),
    "gpu": CapstoneData(num_val=500),
}


def capstone_data(profile: str) -> CapstoneData:
    """The shared split of a run profile.

    Raises:
        ValueError: for an unknown profile name.
    """
    if profile not in CAPSTONE_DATA:
        raise ValueError(f"profile must be one of {', '.join(PROFILES)}; got {profile!r}")
    return CAPSTONE_DATA[profile]


def _image_size(dataset: Dataset) -> tuple[int, int]:
    image = dataset[0][0]
    return int(image.shape[-2]), int(image.shape[-1])


def _shared_split(job: ShapesJob, data: CapstoneData) -> tuple[Dataset, Dataset]:
    """The job's training set re-drawn as a prefix of the shared stream, and the shared val set.

    Items of a ``ShapesDataset`` are drawn from their own seeds, so the first ``n`` images of the
    stream are the same for every detector that trains on ``n`` or more.
    """
    size = _image_size(job.train_set)
    train = ShapesDataset(len(job.train_set), size, seed=data.train_seed)
    val = ShapesDataset(data.num_val, size, seed=data.val_seed)
    return train, val


def _timing_images(val_set: Dataset, data: CapstoneData) -> list[torch.Tensor]:
    """``TIMING_IMAGES`` images no detector has seen, for the inference speed."""
    fresh = ShapesDataset(TIMING_IMAGES, _image_size(val_set), seed=data.val_seed + data.train_seed + 7919)
    return [fresh[i][0] for i in range(len(fresh))]


def _inference_speed(
    model: torch.nn.Module,
    warmup: Sequence[torch.Tensor],
    images: Sequence[torch.Tensor],
    batch_size: int = 8,
) -> float:
    """Images per second through ``predict`` on ``images``, after one batch of ``warmup`` ones.

    ``images`` must be images the model has not seen: Fast R-CNN caches each image's selective
    search proposals, and its speed must include the search, as on a new photograph.
    """
    predict(model, list(warmup[:batch_size]))  # warm-up: caches (anchors, points), allocator
    start = time.perf_counter()
    for i in range(0, len(images), batch_size):
        predict(model, list(images[i : i + batch_size]))
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return len(images) / (time.perf_counter() - start)


def capstone_detectors() -> list[str]:
    """Every detector of the table, in its order: the ``fit``-trained ones, then the classic ones.

    The keys of :data:`coursepkg.engine.train_shapes.DETECTORS`, then ``"sliding_windows"`` and
    ``"rcnn"`` (:data:`coursepkg.engine.classic_detectors.CLASSIC_DETECTORS`).
    """
    return [*DETECTORS, *CLASSIC_DETECTORS]


def _check_detector_name(name: str) -> None:
    if name not in capstone_detectors():
        raise ValueError(f"detector must be one of {', '.join(sorted(capstone_detectors()))}; got {name!r}")


def _train_classic(name: str, profile: str, data: CapstoneData, seed: int) -> tuple:
    """Sliding windows or R-CNN on the shared split: (model, train set, val set, epochs, seconds).

    The training set is the first images of the shared stream (128 x 128, as many as the
    chapter's recipe), and the seconds cover everything: selective search on the training images,
    fine-tuning, features, SVMs and box regressors for R-CNN; cutting windows and training the
    classifier for the sliding windows.
    """
    train_set = ShapesDataset(classic_num_train(name, profile), (128, 128), seed=data.train_seed)
    val_set = ShapesDataset(data.num_val, (128, 128), seed=data.val_seed)
    start = time.perf_counter()
    run = train_classic(name, profile, train_set, seed=seed)
    return run.model, train_set, val_set, run.epochs, time.perf_counter() - start


def final_iou_distribution(
    preds: Sequence[Mapping[str, torch.Tensor]], targets: Sequence[Mapping[str, torch.Tensor]]
) -> dict[str, object]:
    """How tightly a detector's boxes fit the objects it finds: their IoUs at the 0.5 matching.

    Per image and class, the detections (all that ``detect`` returned) are matched to the
    objects as PASCAL VOC does at IoU 0.5 (:func:`coursepkg.evaluation.match_detections`: highest
    score first, each object claimed by at most one detection). Each object a detection claims is
    *found*, and its final IoU is that detection's IoU with it; the other objects are missed.

    Args:
        preds: one dict per image, ``"boxes"`` [D, 4], ``"scores"`` [D], ``"labels"`` [D].
        targets: one dict per image, ``"boxes"`` [G, 4], ``"labels"`` [G].

    Returns:
        ``{"iou_threshold": 0.5, "objects": G, "found": M, "mean": ..., "quantiles": {"0.1":
        ..., "0.5": ..., ...}, "bins": FINAL_IOU_BINS, "histogram": [counts of the M IoUs per
        bin]}`` (mean and quantiles None when nothing is found), plain Python numbers for JSON.

    Raises:
        TypeError, ValueError: as the metrics, for lists of different lengths, a missing key, or
            bad boxes, scores or labels (naming the image, e.g. ``preds[3]['boxes']``).

    Chapter: book/12_iou_losses (section "With a detector").
    """
    images_from_dicts(preds, targets)  # the metrics' checks
    ious, objects = [], 0
    for pred, target in zip(preds, targets, strict=True):
        gt_boxes, gt_labels = target["boxes"].to(torch.float64), target["labels"]
        objects += len(gt_labels)
        for label in gt_labels.unique().tolist():
            mine = pred["labels"] == label
            match = match_detections(
                pred["boxes"][mine].to(torch.float64), pred["scores"][mine].to(torch.float64),
                gt_boxes[gt_labels == label], 0.5,
            )  # fmt: skip
            ious.append(match.ious[match.tp])  # [T] in descending score order
    found = torch.cat(ious) if ious else torch.zeros(0, dtype=torch.float64)  # [M]
    bins = torch.tensor(FINAL_IOU_BINS, dtype=torch.float64)
    counts = torch.histogram(found, bins).hist  # [10]; the last bin includes IoU 1
    quantiles = [None] * len(FINAL_IOU_QUANTILES)
    if len(found):
        quantiles = torch.quantile(found, torch.tensor(FINAL_IOU_QUANTILES, dtype=torch.float64)).tolist()
    return {
        "iou_threshold": 0.5,
        "objects": objects,
        "found": len(found),
        "mean": float(found.mean()) if len(found) else None,
        "quantiles": dict(zip(map(str, FINAL_IOU_QUANTILES), quantiles, strict=True)),
        "bins": list(FINAL_IOU_BINS),
        "histogram": [int(c) for c in counts.tolist()],
    }


def measure_detector(
    name: str,
    profile: str,
    *,
    checkpoint_dir: Path | None = None,
    seed: int = 0,
    data: CapstoneData | None = None,
    progress: bool = False,
) -> dict[str, object]:
    """Train one detector with its chapter's recipe on the shared split and measure it.

    Args:
        name: a key of :data:`coursepkg.engine.train_shapes.DETECTORS`, or ``"sliding_windows"``
            or ``"rcnn"`` (:mod:`coursepkg.engine.classic_detectors`; no checkpoints: they
            train in one go, and their ``epochs`` is R-CNN's fine-tuning steps).
        profile: ``"smoke"``, ``"cpu"`` or ``"gpu"``.
        checkpoint_dir: where ``fit`` keeps this detector's checkpoints (resume); None: none.
        seed: initial weights and data order.
        data: the shared split; default :func:`capstone_data` of the profile.
        progress: show ``fit``'s progress bar (one per epoch, with the live loss).

    Returns:
        The detector's row: the keys of :data:`ROW_KEYS` and :data:`LATER_ROW_KEYS`, ``delta_ap``
        a dict of TIDE's six types, ``final_iou`` :func:`final_iou_distribution`'s summary.

    Raises:
        ValueError: for an unknown detector or profile.
    """
    _check_detector_name(name)
    data = data or capstone_data(profile)
    torch.manual_seed(seed)
    if name in CLASSIC_DETECTORS:
        model, train_set, val_set, epochs, train_seconds = _train_classic(name, profile, data, seed)
    else:
        job = DETECTORS[name](profile)
        train_set, val_set = _shared_split(job, data)
        model, epochs = job.model, job.epochs
        start = time.perf_counter()
        fit(
            model, train_set, epochs=job.epochs, batch_size=job.batch_size, lr=job.lr,
            weight_decay=job.weight_decay, checkpoint_dir=checkpoint_dir, seed=seed, progress=progress,
        )  # fmt: skip
        train_seconds = time.perf_counter() - start
    val_items = [val_set[i] for i in range(len(val_set))]
    images = [image for image, _ in val_items]
    metrics = evaluate(model, val_set)
    preds = predict(model, images)
    targets = [target for _, target in val_items]
    breakdown = error_breakdown(preds, targets)
    return {
        "detector": name,
        **{key: float(metrics[key]) for key in ROW_KEYS[1:7]},
        "delta_ap": {kind: float(v) for kind, v in breakdown.delta_ap.items()},
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_images": len(train_set),
        "epochs": epochs,
        "train_seconds": train_seconds,
        "inference_images_per_second": _inference_speed(model, images, _timing_images(val_set, data)),
        "final_iou": final_iou_distribution(preds, targets),
    }


def _write_atomically(path: Path, payload: Mapping[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(partial, path)


def _header(profile: str, data: CapstoneData, seed: int) -> dict[str, object]:
    """What must match for stored rows to be reused: profile, split and seed."""
    return {"profile": profile, "data": data.as_dict(), "seed": seed}


def run_capstone(
    profile: str,
    out: Path,
    *,
    detectors: Sequence[str] | None = None,
    checkpoint_dir: Path | None = None,
    seed: int = 0,
    log: Callable[[str], None] = print,
    progress: bool = False,
) -> dict[str, object]:
    """Measure every detector (or ``detectors``) and write the results to ``out`` after each.

    A results file for the same profile, split and seed is resumed: its detectors are kept and not
    trained again, named in ``detectors`` or not. A file for other settings is not mixed in: it
    raises. Rows are in :func:`capstone_detectors`' order. ``log`` gets one line before and one
    after each detector; ``progress`` adds ``fit``'s progress bar while a detector trains.

    Returns:
        ``{"profile", "data", "seed", "machine", "torch", "device", "rows": [...]}``, as written.

    Raises:
        ValueError: for an unknown profile or detector, or if ``out`` holds other settings'
            results (delete it or choose another ``out``).
    """
    names = list(detectors) if detectors is not None else capstone_detectors()
    for name in names:
        _check_detector_name(name)
    data = capstone_data(profile)
    header = _header(profile, data, seed)
    results: dict[str, object] = {
        **header,
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus, torch on {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "rows": [],
    }
    out = Path(out)
    if out.exists():
        stored = json.loads(out.read_text())
        if {key: stored.get(key) for key in header} != header:
            raise ValueError(
                f"{out} holds results for other settings ({ {k: stored.get(k) for k in header} }), "
                f"not {header}: delete it or pass another --out"
            )
        results["rows"] = list(stored.get("rows", []))
    done = {row["detector"] for row in results["rows"]}
    position = {name: i for i, name in enumerate(capstone_detectors())}  # unknown names go last
    for i, name in enumerate(names, start=1):
        if name in done:
            log(f"[{i}/{len(names)}] {name}: already in {out}, skipped")
            continue
        log(f"[{i}/{len(names)}] {name}: training ({profile} recipe) ...")
        row = measure_detector(
            name, profile, seed=seed, data=data, progress=progress,
            checkpoint_dir=None if checkpoint_dir is None else Path(checkpoint_dir) / name,
        )  # fmt: skip
        results["rows"].append(row)
        results["rows"].sort(key=lambda r: position.get(r["detector"], len(position)))
        _write_atomically(out, results)
        log(
            f"[{i}/{len(names)}] {name}: mAP@0.5 {row['map_50']:.3f}, AP {row['map']:.3f}, "
            f"{row['train_seconds']:.0f} s training, {row['inference_images_per_second']:.0f} images/s"
        )
    _write_atomically(out, results)
    return results


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m coursepkg.engine.capstone",
        description="Train every detector of the course on the same data and write one table.",
    )
    parser.add_argument("--profile", choices=PROFILES, default=None,
                        help="run profile (default: $COURSE_PROFILE, else by hardware)")
    parser.add_argument("--out", type=Path, default=None,
                        help="results file (default: book/capstone_<profile>.json)")
    parser.add_argument("--detectors", nargs="+", choices=sorted(capstone_detectors()), default=None)
    parser.add_argument("--checkpoint-dir", type=Path, default=Path("checkpoints/capstone"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar while training")
    return parser  # fmt: skip


def main(argv: Sequence[str] | None = None) -> dict[str, object]:
    """The command line; returns the results it wrote."""
    args = _parser().parse_args(argv)
    profile = args.profile or get_profile().name
    out = args.out or Path("book") / f"capstone_{profile}.json"
    return run_capstone(
        profile, out, detectors=args.detectors, checkpoint_dir=args.checkpoint_dir, seed=args.seed,
        progress=not args.no_progress,
    )


if __name__ == "__main__":
    main()
