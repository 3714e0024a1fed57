"""RetinaNet training throughput: coursepkg.models.retinanet against torchvision's RetinaNet.

Both detectors are the same network: torchvision's ``RetinaNet`` is built around a copy of *our*
backbone and FPN (wrapped to return the pyramid with an ``out_channels`` attribute), with a
``RetinaNetHead`` of the same width, an ``AnchorGenerator`` with our sizes, ratios and scales, the
same thresholds, and a transform that neither normalises (mean 0, std 1) nor resizes (``min_size =
max_size`` = the image size). torchvision's head has four convolutions per tower; ours is given
four too here (the course's default is ``head_convs`` of the recipe). So the comparison is
coursepkg's batched assignment and loss (one focal-loss call for the whole batch, no host
synchronisation) against torchvision's per-image loops. ``tests/test_retinanet.py`` checks that the
two compute the same losses and detections.

One training step is ``losses(images, targets)``, the backward pass and an AdamW step, on a batch
of shapes images. The steps alternate between the two models, so both see the same machine load;
we report the median wall-clock time per step, images per second and the ratio ours / torchvision
of throughputs (> 1: ours is faster), plus the ratio of CPU time per step (``time.process_time``,
all threads: steadier than wall time on a shared machine).

    python benchmarks/bench_retinanet.py               # the default rows
    python benchmarks/bench_retinanet.py --threads 2 --steps 10

Importable: :func:`measure` returns the table as a list of dicts; :func:`bench_row` one row.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
from collections import OrderedDict

import torch
import torchvision
from torch import nn
from torchvision.models.detection import RetinaNet as TorchvisionRetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.retinanet import RetinaNetHead

from coursepkg.data import ShapesDataset, collate_detection
from coursepkg.data.shapes import SHAPE_CLASSES
from coursepkg.engine.recipes import retinanet_recipe
from coursepkg.engine.runtime import compare_step_times
from coursepkg.models.retinanet import RetinaNet, RetinaNetConfig

#: The throughput ratio ours / torchvision we aim for.
TARGET_RATIO = 1.0


class _Pyramid(nn.Module):
    """A copy of our backbone + FPN as torchvision's detection backbone (OrderedDict, out_channels)."""

    def __init__(self, model: RetinaNet) -> None:
        super().__init__()
        self.body, self.fpn = copy.deepcopy(model.backbone), copy.deepcopy(model.fpn)
        self.out_channels = model.config.fpn_channels

    def forward(self, images: torch.Tensor) -> OrderedDict:
        return OrderedDict(self.fpn(self.body(images)))


def torchvision_model(model: RetinaNet, image_size: tuple[int, int]) -> TorchvisionRetinaNet:
    """torchvision's RetinaNet with ``model``'s architecture and settings (copies of its layers)."""
    c = model.config
    sizes = tuple(tuple(s * k for k in c.anchor_scales) for s in c.anchor_sizes)
    head = RetinaNetHead(c.fpn_channels, c.num_anchors, c.num_classes)
    return TorchvisionRetinaNet(
        _Pyramid(model),
        c.num_classes,
        min_size=min(image_size),
        max_size=max(image_size),
        image_mean=[0.0, 0.0, 0.0],
        image_std=[1.0, 1.0, 1.0],
        anchor_generator=AnchorGenerator(sizes, (tuple(c.anchor_ratios),) * len(sizes)),
        head=head,
        score_thresh=c.score_thresh,
        nms_thresh=c.nms_thresh,
        detections_per_img=c.detections_per_img,
        fg_iou_thresh=c.fg_iou_thresh,
        bg_iou_thresh=c.bg_iou_thresh,
        topk_candidates=c.topk_candidates,
    )


def bench_row(
    config: RetinaNetConfig | None = None,
    *,
    batch_size: int = 8,
    image_size: tuple[int, int] = (128, 128),
    steps: int = 6,
    warmup: int = 2,
    seed: int = 0,
    label: str = "",
) -> dict:
    """Time ``steps`` training steps of each model on the same batch; return one table row.

    Args:
        config: our model's settings (default: the "cpu" recipe's with torchvision's four head
            convolutions); torchvision's mirrors them.
        batch_size: images per step.
        image_size: ``(height, width)`` of the shapes images.
        steps: timed steps per model (alternating); ``warmup`` untimed ones come first.
        seed: seeds the weights and the data.
        label: a name for the row.

    Returns:
        A dict with the settings, ``ours_ms`` / ``torchvision_ms`` (median wall time per step),
        ``ours_cpu_ms`` / ``torchvision_cpu_ms``, ``ours_img_s`` / ``torchvision_img_s``,
        ``ratio`` = ours_img_s / torchvision_img_s and ``cpu_ratio`` from CPU times.
    """
    config = config or dataclasses.replace(retinanet_recipe("cpu").config, head_convs=4, head_norm=None)
    if config.head_convs != 4 or config.head_norm is not None:
        raise ValueError("torchvision's RetinaNetHead has 4 convolutions per tower and no norm")
    data = ShapesDataset(batch_size, image_size=image_size, seed=seed, classes=SHAPE_CLASSES[: config.num_classes])
    images, targets = collate_detection([data[i] for i in range(batch_size)])

    torch.manual_seed(seed)
    ours = RetinaNet(config).train()
    theirs = torchvision_model(ours, image_size).train()
    ours_opt = torch.optim.AdamW(ours.parameters(), lr=1e-4)
    theirs_opt = torch.optim.AdamW(theirs.parameters(), lr=1e-4)

    def ours_step() -> None:
        loss = sum(ours.losses(images, targets).values())
        ours_opt.zero_grad(set_to_none=True)
        loss.backward()
        ours_opt.step()

    def theirs_step() -> None:
        loss = sum(theirs(list(images), targets).values())
        theirs_opt.zero_grad(set_to_none=True)
        loss.backward()
        theirs_opt.step()

    row: dict = {
        "label": label,
        "image_size": f"{image_size[0]}x{image_size[1]}",
        "batch": batch_size,
        "fpn_channels": config.fpn_channels,
        "threads": torch.get_num_threads(),
    }
    row.update(compare_step_times({"ours": ours_step, "torchvision": theirs_step}, repeats=steps,
                                  warmup=warmup, images_per_step=batch_size))
    row["ratio"] = row["ours_img_s"] / row["torchvision_img_s"]
    row["cpu_ratio"] = row["torchvision_cpu_ms"] / row["ours_cpu_ms"]
    return row


def measure(steps: int = 6, warmup: int = 2) -> list[dict]:
    """The default table: the "cpu" recipe's model (four head convolutions), batch 8 and 2."""
    cpu = dataclasses.replace(retinanet_recipe("cpu").config, head_convs=4, head_norm=None)
    rows = [
        dict(config=cpu, label="cpu recipe, 4 head convs"),
        dict(config=cpu, batch_size=2, label="cpu recipe, batch 2"),
    ]
    return [bench_row(steps=steps, warmup=warmup, **row) for row in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads for this run")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, threads {torch.get_num_threads()}")
    print(
        f"{'row':<28}{'batch':>6}{'ours ms':>9}{'tv ms':>8}{'ours img/s':>11}{'tv img/s':>9}"
        f"{'ratio':>7}{'cpu ratio':>10}"
    )
    for r in measure(args.steps, args.warmup):
        print(
            f"{r['label']:<28}{r['batch']:>6}{r['ours_ms']:>9.0f}{r['torchvision_ms']:>8.0f}"
            f"{r['ours_img_s']:>11.1f}{r['torchvision_img_s']:>9.1f}{r['ratio']:>7.2f}{r['cpu_ratio']:>10.2f}"
        )
    print(f"ratio = ours img/s / torchvision img/s (target >= {TARGET_RATIO}); cpu ratio from CPU time")


if __name__ == "__main__":
    main()
