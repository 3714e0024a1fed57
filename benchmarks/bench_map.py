"""COCO mAP: coursepkg.evaluation.MeanAveragePrecision against pycocotools and faster-coco-eval.

The problem is COCO-val-sized by default: 5,000 images, 80 classes, about 7 ground-truth objects
and 100 detections per image (jittered copies of the ground truth, mostly of the right class,
plus random false positives), 1% crowd regions, object sizes spread over the small, medium and
large ranges, scores rounded to 3 decimals so that ties happen. Every implementation gets the
same data; the twelve statistics of pycocotools are the reference, and ours must equal them
(|Δ| <= 1e-9). Times are seconds of one run each, wall clock and CPU time of this process
(``time.process_time``, all threads; steadier than the wall clock on a shared machine):

* ours: ``update()`` on the list of per-image tensor dicts, then ``compute()``;
* pycocotools / faster-coco-eval: ``COCO`` and ``loadRes`` from ready-made COCO-style dicts,
  then ``evaluate()``, ``accumulate()``, ``summarize()`` (building those dicts from the tensors is
  timed separately, as "to COCO dicts", and not charged to them).

    python benchmarks/bench_map.py            # 5,000 images (pycocotools alone takes minutes)
    python benchmarks/bench_map.py --small    # 500 images, well under a minute
    python benchmarks/bench_map.py --images 1000 --skip pycocotools
"""

from __future__ import annotations

import argparse
import contextlib
import io
import platform
import time

import numpy as np
import torch

from coursepkg.evaluation import COCO_STAT_NAMES, MeanAveragePrecision

IMPLEMENTATIONS = ("coursepkg", "pycocotools", "faster-coco-eval")


def make_dataset(
    num_images: int = 5000,
    num_classes: int = 80,
    gt_per_image: float = 7.0,
    dets_per_image: int = 100,
    seed: int = 0,
) -> tuple[list[dict], list[dict]]:
    """Seeded synthetic ground truth and detections, one dict of tensors per image (640x480).

    Ground truth: ``Poisson(gt_per_image)`` objects per image, class frequencies falling like
    ``1 / (k + 1)`` (a few frequent classes, a long tail), square-root area log-uniform between 6
    and 400 pixels, 1% crowd. Detections: each object is found with probability 0.9 by 1 to 4
    jittered boxes (jitter proportional to the object's size; the class is wrong 5% of the time;
    score higher for smaller jitter), and random boxes of random classes fill the image up to
    ``dets_per_image`` detections. Scores are rounded to 3 decimals, so many tie.
    """
    g = torch.Generator().manual_seed(seed)
    width, height = 640.0, 480.0
    class_p = 1.0 / torch.arange(1, num_classes + 1, dtype=torch.float64)
    num_gt = torch.poisson(torch.full((num_images,), gt_per_image), generator=g).long()
    total_gt = int(num_gt.sum())
    gt_labels = torch.multinomial(class_p, total_gt, replacement=True, generator=g)
    side = torch.exp(torch.empty(total_gt).uniform_(np.log(6), np.log(400), generator=g))
    aspect = torch.exp(torch.empty(total_gt).uniform_(-0.7, 0.7, generator=g))
    wh = torch.stack([side * aspect.sqrt(), side / aspect.sqrt()], 1).clamp(
        max=torch.tensor([width, height])
    )
    xy = torch.rand(total_gt, 2, generator=g) * (torch.tensor([width, height]) - wh)
    gt_boxes = torch.cat([xy, xy + wh], 1).float()
    crowd = torch.rand(total_gt, generator=g) < 0.01

    # Detections of the objects: 0 (missed, 10%) to 4 copies each.
    copies = torch.where(
        torch.rand(total_gt, generator=g) < 0.9, torch.randint(1, 5, (total_gt,), generator=g), 0
    )
    source = torch.repeat_interleave(torch.arange(total_gt), copies)
    noise = torch.randn(len(source), 4, generator=g) * 0.12
    jittered = gt_boxes[source] + noise * wh[source].repeat(1, 2).float()
    jittered = torch.cat(
        [jittered[:, :2].minimum(jittered[:, 2:]), jittered[:, :2].maximum(jittered[:, 2:])], 1
    )
    wrong = torch.rand(len(source), generator=g) < 0.05
    random_labels = torch.randint(0, num_classes, (len(source),), generator=g)
    det_labels = torch.where(wrong, random_labels, gt_labels[source])
    quality = torch.exp(-noise.abs().mean(1) * 5)  # 1 for a perfect box
    det_scores = (0.6 * quality + 0.4 * torch.rand(len(source), generator=g)).float()
    det_image_of_gt = torch.repeat_interleave(torch.arange(num_images), num_gt)
    det_image = det_image_of_gt[source]

    # Random false positives up to dets_per_image per image.
    per_image_tp = torch.bincount(det_image, minlength=num_images)
    num_fp = (dets_per_image - per_image_tp).clamp(min=0)
    fp_image = torch.repeat_interleave(torch.arange(num_images), num_fp)
    fp_side = torch.exp(torch.empty(len(fp_image)).uniform_(np.log(6), np.log(300), generator=g))
    fp_wh = torch.stack(
        [fp_side, fp_side * torch.exp(torch.empty(len(fp_image)).uniform_(-0.5, 0.5, generator=g))],
        1,
    )
    fp_wh = fp_wh.clamp(max=torch.tensor([width, height]))
    fp_xy = torch.rand(len(fp_image), 2, generator=g) * (torch.tensor([width, height]) - fp_wh)
    fp_boxes = torch.cat([fp_xy, fp_xy + fp_wh], 1).float()
    fp_labels = torch.multinomial(class_p, len(fp_image), replacement=True, generator=g)
    fp_scores = (torch.rand(len(fp_image), generator=g) * 0.7).float()

    boxes = torch.cat([jittered.float(), fp_boxes])
    labels = torch.cat([det_labels, fp_labels])
    scores = torch.round(torch.cat([det_scores, fp_scores]) * 1000) / 1000
    image = torch.cat([det_image, fp_image])
    order = torch.sort(image, stable=True).indices  # group by image, keep generation order
    boxes, labels, scores = boxes[order], labels[order], scores[order]
    num_dets = torch.bincount(image, minlength=num_images)

    preds = [
        {"boxes": b, "scores": s, "labels": lab}
        for b, s, lab in zip(
            boxes.split(num_dets.tolist()),
            scores.split(num_dets.tolist()),
            labels.split(num_dets.tolist()),
            strict=True,
        )
    ]
    targets = [
        {"boxes": b, "labels": lab, "iscrowd": c}
        for b, lab, c in zip(
            gt_boxes.split(num_gt.tolist()),
            gt_labels.split(num_gt.tolist()),
            crowd.split(num_gt.tolist()),
            strict=True,
        )
    ]
    return preds, targets


def to_coco_dicts(preds: list[dict], targets: list[dict]) -> tuple[dict, list[dict]]:
    """The same data as a COCO ground-truth dataset dict and a list of results, boxes as xywh.

    Image ``i`` gets id ``i + 1`` (ids in list order, as coursepkg orders images) and annotation
    ids start at 1 (pycocotools treats id 0 as "unmatched"). Categories: every label seen in the
    targets or the predictions, as coursepkg evaluates them.
    """
    labels = [t["labels"] for t in targets] + [p["labels"] for p in preds]
    categories = [
        {"id": int(c), "name": str(int(c))} for c in torch.unique(torch.cat(labels)).tolist()
    ]
    images, annotations, results = [], [], []
    for i, (pred, target) in enumerate(zip(preds, targets, strict=True)):
        images.append({"id": i + 1, "width": 640, "height": 480})
        crowd = target.get("iscrowd")
        crowd = crowd.tolist() if crowd is not None else [0] * len(target["labels"])
        area = target.get("area")
        area = area.tolist() if area is not None else [None] * len(target["labels"])
        for (x1, y1, x2, y2), label, c, a in zip(
            target["boxes"].tolist(), target["labels"].tolist(), crowd, area, strict=True
        ):
            w, h = x2 - x1, y2 - y1
            annotations.append({
                "id": len(annotations) + 1, "image_id": i + 1, "category_id": label,
                "bbox": [x1, y1, w, h], "area": w * h if a is None else a, "iscrowd": int(c),
            })  # fmt: skip
        for (x1, y1, x2, y2), score, label in zip(
            pred["boxes"].tolist(), pred["scores"].tolist(), pred["labels"].tolist(), strict=True
        ):
            results.append(
                {
                    "image_id": i + 1,
                    "category_id": label,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": score,
                }
            )
    return {"images": images, "annotations": annotations, "categories": categories}, results


def _copy(dataset: dict, results: list[dict]) -> tuple[dict, list[dict]]:
    """Fresh dicts: loadRes writes into the result dicts, so each tool gets its own copy."""
    dataset = {k: [dict(x) for x in v] for k, v in dataset.items()}
    return dataset, [dict(r) for r in results]


def run_coursepkg(preds: list[dict], targets: list[dict]) -> np.ndarray:
    metric = MeanAveragePrecision()
    metric.update(preds, targets)
    out = metric.compute()
    return np.array([out[name] for name in COCO_STAT_NAMES])


def run_pycocotools(dataset: dict, results: list[dict]) -> np.ndarray:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        gt = COCO()
        gt.dataset = dataset
        gt.createIndex()
        dt = gt.loadRes(results)
        evaluator = COCOeval(gt, dt, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return np.array(evaluator.stats)


def run_faster_coco_eval(dataset: dict, results: list[dict]) -> np.ndarray:
    from faster_coco_eval import COCO, COCOeval_faster

    quiet = lambda *args, **kwargs: None  # noqa: E731
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(dataset, print_function=quiet)
        dt = gt.loadRes(results)
        evaluator = COCOeval_faster(gt, dt, "bbox", print_function=quiet)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return np.array(evaluator.stats[:12])


def benchmark_rows(
    num_images: int = 5000,
    num_classes: int = 80,
    dets_per_image: int = 100,
    seed: int = 0,
    skip: tuple[str, ...] = (),
) -> list[dict]:
    """Time each implementation once on the same data; one dict per row of the table.

    Every row has ``implementation``, ``wall_s``, ``cpu_s``, ``speedup_wall`` and
    ``speedup_cpu`` (pycocotools' time / this time; None when pycocotools is skipped),
    ``max_abs_diff`` of the twelve statistics against pycocotools (None when skipped) and
    ``map``. The first row, "to COCO dicts", is the conversion the COCO tools need (wall time
    only) and is not included in their times. Raises AssertionError if coursepkg's statistics
    differ from pycocotools' by more than 1e-9.
    """
    preds, targets = make_dataset(num_images, num_classes, dets_per_image=dets_per_image, seed=seed)
    start = time.perf_counter()
    dataset, results = to_coco_dicts(preds, targets)
    convert_wall = time.perf_counter() - start

    wall: dict[str, float] = {}
    cpu: dict[str, float] = {}
    stats: dict[str, np.ndarray] = {}
    for name in IMPLEMENTATIONS:
        if name in skip:
            continue
        args = (preds, targets) if name == "coursepkg" else _copy(dataset, results)
        run = {
            "coursepkg": run_coursepkg,
            "pycocotools": run_pycocotools,
            "faster-coco-eval": run_faster_coco_eval,
        }[name]
        start, start_cpu = time.perf_counter(), time.process_time()
        stats[name] = run(*args)
        wall[name] = time.perf_counter() - start
        cpu[name] = time.process_time() - start_cpu

    reference = stats.get("pycocotools")
    diff = None  # no reference to compare with when pycocotools is skipped
    if reference is not None and "coursepkg" in stats:
        diff = float(np.abs(stats["coursepkg"] - reference).max())
        assert diff <= 1e-9, (
            f"coursepkg differs from pycocotools by {diff}: {stats['coursepkg']} vs {reference}"
        )
    rows = [
        {"implementation": "to COCO dicts (not charged to the COCO tools)", "wall_s": convert_wall}
    ]
    for name in wall:
        rows.append({
            "implementation": name,
            "wall_s": wall[name],
            "cpu_s": cpu[name],
            "speedup_wall": wall["pycocotools"] / wall[name] if reference is not None else None,
            "speedup_cpu": cpu["pycocotools"] / cpu[name] if reference is not None else None,
            "max_abs_diff": diff,
            "map": float(stats[name][0]),
        })  # fmt: skip
    return rows


def format_table(rows: list[dict]) -> str:
    """A Markdown table of :func:`benchmark_rows`' output."""
    columns = [
        ("implementation", "implementation", "{}"),
        ("wall s", "wall_s", "{:.2f}"),
        ("CPU s", "cpu_s", "{:.2f}"),
        ("speedup (wall)", "speedup_wall", "{:.1f}x"),
        ("speedup (CPU)", "speedup_cpu", "{:.1f}x"),
        ("max abs diff vs pycocotools", "max_abs_diff", "{:.1e}"),
        ("mAP", "map", "{:.4f}"),
    ]
    lines = [
        "| " + " | ".join(title for title, _, _ in columns) + " |",
        "| --- |" + " ---: |" * (len(columns) - 1),
    ]
    for row in rows:
        cells = [
            fmt.format(row[key]) if row.get(key) is not None else "" for _, key, fmt in columns
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="500 images instead of 5,000")
    parser.add_argument("--images", type=int, default=None, help="number of images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip", nargs="*", default=[], choices=IMPLEMENTATIONS)
    args = parser.parse_args()
    num_images = args.images or (500 if args.small else 5000)
    print(
        f"{num_images} images x 80 classes x ~100 detections | "
        f"python {platform.python_version()} | "
        f"torch {torch.__version__} | numpy {np.__version__} | threads {torch.get_num_threads()}"
    )
    print(format_table(benchmark_rows(num_images, seed=args.seed, skip=tuple(args.skip))))


if __name__ == "__main__":
    main()
