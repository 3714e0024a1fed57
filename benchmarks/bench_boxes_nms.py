"""Time coursepkg's box_iou and nms against torchvision.ops, in one run, on the same inputs.

Run it as a script::

    python benchmarks/bench_boxes_nms.py [--repeats 50] [--threads 1]

or import it and call :func:`measure`, which returns the table as a list of dicts (a book page
renders it with ``pandas.DataFrame(rows)`` or a Markdown table).

Each case checks first that both implementations return identical results, then calls them
alternately ``repeats`` times (so both see the same machine load; which one goes first alternates
too, so neither always runs right after the other) and reports the median time of each and the
ratio ours / torchvision. Because the machine may be busy, the ratio of the best (minimum) times
is reported too, and the spread: the quartiles of the ratios of the two calls of each repeat.

By default torch runs on one thread: torchvision's CPU ``nms`` is single-threaded C++, and a
box-IoU matrix of this size gains little from more threads on a shared machine.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torchvision.ops

from coursepkg.ops.boxes import box_iou
from coursepkg.ops.nms import nms

TARGETS = {"box_iou": 1.1, "nms": 1.5}


def random_boxes(n: int, generator: torch.Generator, image_size: int = 800) -> torch.Tensor:
    """``n`` boxes with positive area, uniform in a square image (for the IoU matrix)."""
    xy = torch.rand(n, 2, generator=generator) * (image_size - 100)
    wh = 1 + torch.rand(n, 2, generator=generator) * 99
    return torch.cat([xy, xy + wh], dim=1)


def clustered_boxes(
    n: int, generator: torch.Generator, image_size: int = 800, boxes_per_object: int = 50
) -> tuple[torch.Tensor, torch.Tensor]:
    """Detector-like output: ``n`` boxes jittered around ``n // boxes_per_object`` objects.

    Each object has a random centre and a size between 32 and 256 pixels; each box moves its
    centre by 10% of the size (standard deviation) and scales its sides by ``exp(N(0, 0.1))``.
    Scores are uniform in ``[0, 1)``, independent of the box.
    """
    objects = max(1, n // boxes_per_object)
    centres = torch.rand(objects, 2, generator=generator) * image_size
    sizes = 32 * 2 ** (torch.rand(objects, 2, generator=generator) * 3)
    which = torch.randint(0, objects, (n,), generator=generator)
    ctr = centres[which] + torch.randn(n, 2, generator=generator) * sizes[which] * 0.1
    wh = sizes[which] * torch.exp(torch.randn(n, 2, generator=generator) * 0.1)
    scores = torch.rand(n, generator=generator)
    return torch.cat([ctr - wh / 2, ctr + wh / 2], dim=1), scores


def _time_pair(ours: Callable[[], object], theirs: Callable[[], object], repeats: int):
    """Times (seconds) of both, called alternately after one warm-up call each.

    Each repeat times one call of each, ours first on even repeats and theirs first on odd ones:
    on a busy machine the call that follows the other can find the caches in a different state.
    """
    ours(), theirs()
    times_ours, times_theirs = [], []
    for i in range(repeats):
        pair = [(ours, times_ours), (theirs, times_theirs)]
        for fn, times in pair if i % 2 == 0 else pair[::-1]:
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return times_ours, times_theirs


def _row(case: str, kind: str, times_ours: list[float], times_theirs: list[float]) -> dict:
    ours_ms, theirs_ms = statistics.median(times_ours) * 1e3, statistics.median(times_theirs) * 1e3
    paired = [a / b for a, b in zip(times_ours, times_theirs, strict=True)]  # one per repeat
    q1, _, q3 = statistics.quantiles(paired, n=4) if len(paired) > 1 else paired * 3
    return {
        "case": case,
        "ours_ms": round(ours_ms, 3),
        "torchvision_ms": round(theirs_ms, 3),
        "ratio": round(ours_ms / theirs_ms, 2),
        "ratio_best": round(min(times_ours) / min(times_theirs), 2),
        "ratio_q1": round(q1, 2),
        "ratio_q3": round(q3, 2),
        "target": TARGETS[kind],
    }


def measure(repeats: int = 50, threads: int | None = 1, seed: int = 0) -> list[dict]:
    """Run every case; returns one dict per case (the table printed by :func:`main`).

    Keys: ``case``, ``ours_ms`` and ``torchvision_ms`` (medians), ``ratio`` (of the medians),
    ``ratio_best`` (of the minimum times), ``ratio_q1`` and ``ratio_q3`` (quartiles of the
    ratios of the two calls of each repeat: the spread) and ``target`` (the largest acceptable
    ratio).

    Args:
        repeats: timed calls per implementation and case.
        threads: torch's intra-op threads during the run (restored afterwards); ``None`` keeps
            the current setting.
        seed: seed of the random inputs.
    """
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        generator = torch.Generator().manual_seed(seed)
        rows = []
        for n, m in [(1000, 1000), (20000, 20)]:
            boxes1, boxes2 = random_boxes(n, generator), random_boxes(m, generator)
            torch.testing.assert_close(
                box_iou(boxes1, boxes2), torchvision.ops.box_iou(boxes1, boxes2), rtol=0, atol=0
            )
            times = _time_pair(
                lambda b1=boxes1, b2=boxes2: box_iou(b1, b2),
                lambda b1=boxes1, b2=boxes2: torchvision.ops.box_iou(b1, b2),
                repeats,
            )
            rows.append(_row(f"box_iou {n} x {m}", "box_iou", *times))
        for n in (1000, 5000):
            boxes, scores = clustered_boxes(n, generator)
            keep = nms(boxes, scores, 0.5)
            assert torch.equal(keep, torchvision.ops.nms(boxes, scores, 0.5)), "nms differs"
            times = _time_pair(
                lambda b=boxes, s=scores: nms(b, s, 0.5),
                lambda b=boxes, s=scores: torchvision.ops.nms(b, s, 0.5),
                repeats,
            )
            rows.append(_row(f"nms {n} clustered boxes (keeps {len(keep)})", "nms", *times))
        return rows
    finally:
        torch.set_num_threads(previous)


def format_table(rows: list[dict]) -> str:
    """The rows as a Markdown table."""
    header = (
        "| case | ours (ms) | torchvision (ms) | ratio | ratio of best | ratio quartiles | target |"
    )
    lines = [header, "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['ours_ms']:.3f} | {r['torchvision_ms']:.3f} | {r['ratio']:.2f} "
            f"| {r['ratio_best']:.2f} | {r['ratio_q1']:.2f}-{r['ratio_q3']:.2f} "
            f"| <= {r['target']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1, help="0 keeps torch's default")
    args = parser.parse_args()
    rows = measure(repeats=args.repeats, threads=args.threads or None)
    print(
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, threads "
        f"{args.threads or torch.get_num_threads()}, {args.repeats} repeats (medians)"
    )
    print(format_table(rows))


if __name__ == "__main__":
    main()
