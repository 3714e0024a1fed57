"""Time decode_dense_detections against torchvision's RetinaNet.postprocess_detections, in one run.

Run it as a script::

    python benchmarks/bench_dense_decoding.py [--repeats 20] [--threads 1]

or import it and call :func:`measure`, which returns the table as a list of dicts.

The case is RetinaNet's at inference: a batch of 2 images of 736 × 736 pixels, five pyramid
levels (92², 46², 23², 12², 6² locations, 9 anchors each: 101,601 anchors) and K = 20 classes,
so 2 million (anchor, class) scores per image. Three score distributions:

* ``trained``: logits ``N(-6, 1.5)``, about 2% of the pairs above ``score_thresh`` = 0.05, so the
  large levels hit ``topk_candidates`` = 1000 (what a trained detector gives);
* ``confident``: logits ``N(-9, 1.5)``, a few hundred pairs above the threshold in all, no top-k;
* ``untrained``: logits ``N(0, 1)``, nearly every pair above the threshold (the worst case).

Both sides get the same logits, deltas and anchors; ours includes the sigmoid (torchvision
applies it inside). The results are checked equal first; then the two are called alternately
(``_time_pair`` of bench_boxes_nms) and the medians and their ratio ours / torchvision reported.
"""

from __future__ import annotations

import argparse

import torch
import torchvision
from torch import nn
from torchvision.models.detection.retinanet import RetinaNet

from benchmarks.bench_boxes_nms import _time_pair
from coursepkg.models.anchors import multilevel_anchors
from coursepkg.models.dense_decoding import decode_dense_detections
from coursepkg.models.fpn import fpn_level_sizes

TARGET = 1.0
IMAGE_SIZE = (736, 736)
CASES = {"trained": (-6.0, 1.5), "confident": (-9.0, 1.5), "untrained": (0.0, 1.0)}


class _Features(nn.Module):
    """The smallest backbone torchvision's RetinaNet accepts; postprocess_detections never runs it."""

    out_channels = 8

    def forward(self, x):
        return x


def _inputs(generator, batch, num_classes, logit_mean, logit_std):
    sizes = fpn_level_sizes(IMAGE_SIZE)
    anchors = multilevel_anchors(sizes, (8, 16, 32, 64, 128))
    logits = [
        torch.randn(batch, len(a), num_classes, generator=generator) * logit_std + logit_mean
        for a in anchors
    ]
    deltas = [torch.randn(batch, len(a), 4, generator=generator) * 0.2 for a in anchors]
    return logits, deltas, anchors


def measure(
    repeats: int = 20, threads: int | None = 1, seed: int = 0, batch: int = 2, num_classes: int = 20
) -> list[dict]:
    """One row per score distribution: medians (ms) of both and the ratio ours / torchvision."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        generator = torch.Generator().manual_seed(seed)
        model = RetinaNet(_Features(), num_classes=num_classes, detections_per_img=100)
        rows = []
        for case, (mean, std) in CASES.items():
            logits, deltas, anchors = _inputs(generator, batch, num_classes, mean, std)
            image_sizes = [IMAGE_SIZE] * batch
            outputs = {"cls_logits": logits, "bbox_regression": deltas}

            def ours(logits=logits, deltas=deltas, anchors=anchors, image_sizes=image_sizes):
                scores = [x.sigmoid() for x in logits]
                return decode_dense_detections(scores, deltas, anchors, image_sizes)

            def theirs(outputs=outputs, anchors=anchors, image_sizes=image_sizes):
                return model.postprocess_detections(outputs, [anchors] * batch, image_sizes)

            for a, b in zip(ours(), theirs(), strict=True):
                torch.testing.assert_close(a["scores"], b["scores"], rtol=0, atol=1e-6)
                torch.testing.assert_close(a["boxes"], b["boxes"], rtol=0, atol=1e-4)
            times_ours, times_theirs = _time_pair(ours, theirs, repeats)
            ours_ms = sorted(times_ours)[len(times_ours) // 2] * 1e3
            theirs_ms = sorted(times_theirs)[len(times_theirs) // 2] * 1e3
            above = sum(int((x.sigmoid() > 0.05).sum()) for x in logits) // batch
            rows.append(
                {
                    "case": case,
                    "pairs_above_thresh_per_image": above,
                    "ours_ms": round(ours_ms, 2),
                    "torchvision_ms": round(theirs_ms, 2),
                    "ratio": round(ours_ms / theirs_ms, 2),
                    "ratio_best": round(min(times_ours) / min(times_theirs), 2),
                    "target": TARGET,
                }
            )
        return rows
    finally:
        torch.set_num_threads(previous)


def format_table(rows: list[dict]) -> str:
    """The rows as a Markdown table."""
    lines = [
        "| case | pairs > 0.05 per image | ours (ms) | torchvision (ms) | ratio | ratio of best | target |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['pairs_above_thresh_per_image']} | {r['ours_ms']:.2f} "
            f"| {r['torchvision_ms']:.2f} | {r['ratio']:.2f} | {r['ratio_best']:.2f} "
            f"| <= {r['target']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="0 keeps torch's default")
    args = parser.parse_args()
    rows = measure(repeats=args.repeats, threads=args.threads or None)
    print(
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, threads "
        f"{args.threads or torch.get_num_threads()}, {args.repeats} repeats (medians), "
        f"batch 2, 101,601 anchors, K = 20"
    )
    print(format_table(rows))


if __name__ == "__main__":
    main()
