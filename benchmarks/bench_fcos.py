"""Time FCOS target assignment and a training step against torchvision's FCOS, in one run.

Run it as a script::

    python benchmarks/bench_fcos.py [--repeats 10] [--steps 5]

or import it and call :func:`measure`, which returns the table as a list of dicts.

* ``assignment``: a batch of 8 images of 800 × 800 with 20 random boxes each, points on P3..P7
  (100², 50², 25², 13², 7² = 13,343 per image). Ours is :func:`coursepkg.models.fcos.fcos_targets`
  (public, inputs validated) under torchvision's rules; theirs is the matcher inside
  ``torchvision.models.detection.FCOS.compute_loss`` (one image at a time), run up to the
  ``head.compute_loss`` call. The two assignments are checked identical first. Goal: ratio <= 1.0.
* ``train_step``: one forward, loss and backward of a batch of 8 images of 128 × 128 shapes, with
  the same backbone and FPN (ours, shared) and heads of the same shape; ours is
  ``FCOS.losses`` under ``FCOSConfig.torchvision_like``, theirs ``FCOS(images, targets)`` in train
  mode (with its transform set to identity scaling). Reported as throughput ours / torchvision.
  Goal: >= 1.0.

The two sides are called alternately and the medians compared (``_time_pair`` of
bench_boxes_nms).
"""

from __future__ import annotations

import argparse
import statistics

import torch
from torchvision.models.detection import FCOS as TorchvisionFCOS
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.fcos import FCOSHead as TorchvisionFCOSHead

from benchmarks.bench_boxes_nms import _time_pair
from coursepkg.data import ShapesDataset
from coursepkg.models.anchors import multilevel_points
from coursepkg.models.fcos import FCOS, FCOSConfig, fcos_targets
from coursepkg.models.fpn import fpn_level_sizes

STRIDES = (8, 16, 32, 64, 128)


class _Features(torch.nn.Module):
    """Our backbone + FPN, as torchvision's backbone."""

    def __init__(self, model: FCOS) -> None:
        super().__init__()
        self.model, self.out_channels = model, model.config.fpn_channels

    def forward(self, x):
        return self.model.fpn(self.model.backbone(x))


def _random_targets(g: torch.Generator, batch: int, num_boxes: int, size: int) -> list[dict]:
    targets = []
    for _ in range(batch):
        corner = torch.rand(num_boxes, 2, generator=g) * size * 0.8
        wh = 8 + torch.rand(num_boxes, 2, generator=g) * size * 0.5
        boxes = torch.cat([corner, (corner + wh).clamp(max=size)], dim=1)
        labels = torch.randint(0, 5, (num_boxes,), generator=g)
        targets.append({"boxes": boxes, "labels": labels})
    return targets


def _assignment(repeats: int) -> dict:
    config = FCOSConfig.torchvision_like()
    sizes = fpn_level_sizes((800, 800), STRIDES)
    points = multilevel_points(sizes, STRIDES, offset=0.0)
    targets = _random_targets(torch.Generator().manual_seed(0), 8, 20, 800)
    boxes, labels = [t["boxes"] for t in targets], [t["labels"] for t in targets]

    tv = TorchvisionFCOS(_Features(FCOS(config)), 5, min_size=800, max_size=800)
    # torchvision's anchors for FCOS: one square of side s centred on every point (AnchorGenerator)
    per_image = torch.cat([torch.cat([p - s / 2, p + s / 2], 1) for p, s in zip(points, STRIDES, strict=True)])
    tv_anchors = [per_image] * 8
    counts = [len(p) for p in points]
    captured = {}

    class _Stop(Exception):
        pass

    def capture(targets_, head_outputs, anchors_, matched_idxs):
        captured["matched"] = matched_idxs
        raise _Stop

    tv.head.compute_loss = capture

    def theirs():
        try:
            tv.compute_loss(targets, {}, tv_anchors, counts)
        except _Stop:
            pass
        return captured["matched"]

    def ours():
        return fcos_targets(points, STRIDES, boxes, labels, config.size_bounds,
                            center_sampling_radius=1.5, closed_ranges=False).matched_idxs

    expected, got = torch.stack(theirs()), ours()
    if not torch.equal(expected, got):
        raise AssertionError(f"assignments differ at {int((expected != got).sum())} points")
    times_ours, times_theirs = _time_pair(ours, theirs, repeats)
    ratio = statistics.median(times_ours) / statistics.median(times_theirs)
    return {"case": "assignment 8 x 20 boxes, 800 px, P3-P7", "identical": True,
            "ours_ms": round(1e3 * statistics.median(times_ours), 2),
            "torchvision_ms": round(1e3 * statistics.median(times_theirs), 2),
            "ratio": round(ratio, 2), "goal": "<= 1.0 (time)"}


def _train_step(steps: int) -> dict:
    torch.manual_seed(0)
    config = FCOSConfig.torchvision_like(levels=(3, 4, 5), fpn_channels=32, num_convs=2)
    ours = FCOS(config)
    tv = TorchvisionFCOS(
        _Features(ours), config.num_classes, min_size=128, max_size=128,
        image_mean=[0.0] * 3, image_std=[1.0] * 3,
        anchor_generator=AnchorGenerator(((8,), (16,), (32,)), ((1.0,),) * 3),
        head=TorchvisionFCOSHead(config.fpn_channels, 1, config.num_classes, num_convs=2),
    )
    data = ShapesDataset(8, (128, 128), seed=0)
    images = torch.stack([data[i][0] for i in range(8)])
    targets = [data[i][1] for i in range(8)]
    ours.train(), tv.train()

    def step_ours():
        ours.zero_grad(set_to_none=True)
        sum(ours.losses(images, targets).values()).backward()

    def step_theirs():
        tv.zero_grad(set_to_none=True)
        sum(tv(list(images), [dict(t) for t in targets]).values()).backward()

    times_ours, times_theirs = _time_pair(step_ours, step_theirs, steps)
    throughput = statistics.median(times_theirs) / statistics.median(times_ours)
    return {"case": "training step, 8 x 128 px shapes, same backbone",
            "ours_ms": round(1e3 * statistics.median(times_ours), 1),
            "torchvision_ms": round(1e3 * statistics.median(times_theirs), 1),
            "ratio": round(throughput, 2), "goal": ">= 1.0 (throughput)"}


def measure(repeats: int = 10, steps: int = 5) -> list[dict]:
    """Both rows of the table: the assignment time ratio and the training throughput ratio."""
    return [_assignment(repeats), _train_step(steps)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for row in measure(args.repeats, args.steps):
        print(row)


if __name__ == "__main__":
    main()
