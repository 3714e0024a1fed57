"""Faster R-CNN training throughput: coursepkg.models.faster_rcnn against torchvision's FasterRCNN.

Both detectors are the same network: torchvision's ``FasterRCNN`` is built around a copy of *our*
backbone, with an RPN head, RoI Align, two-FC head and predictor of the same sizes, the same anchor
sizes, proposal counts, sampling budgets and image size, and a transform that neither normalises
(mean 0, std 1) nor resizes (``min_size = max_size`` = the image size). So the comparison is
coursepkg's plain-PyTorch pieces (anchors, matching, sampling, NMS, RoI Align, losses, all in
Python and tensor ops) against torchvision's (C++ NMS and RoI Align kernels). ``tests/
test_faster_rcnn.py`` checks that the two compute the same detections and losses.

One training step is ``losses(images, targets)``, the backward pass and an AdamW step, on a batch
of shapes images. The steps alternate between the two models, so both see the same machine load;
we report the median and best wall-clock time per step, images per second (from the median) and
the ratio ours / torchvision of throughputs (> 1: ours is faster), plus CPU time per step
(``time.process_time``, all threads: steadier than wall time on a shared machine).

    python benchmarks/bench_faster_rcnn.py               # the default rows
    python benchmarks/bench_faster_rcnn.py --threads 2 --steps 10

Importable: :func:`measure` returns the table as a list of dicts; :func:`bench_row` one row.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses

import torch
import torchvision
from torchvision.models.detection import FasterRCNN as TorchvisionFasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.rpn import RPNHead as TorchvisionRPNHead
from torchvision.ops import MultiScaleRoIAlign

from coursepkg.data import ShapesDataset, collate_detection
from coursepkg.engine.recipes import faster_rcnn_recipe
from coursepkg.engine.runtime import compare_step_times
from coursepkg.models.faster_rcnn import FasterRCNN, FasterRCNNConfig

#: The throughput ratio ours / torchvision we aim for.
TARGET_RATIO = 1.0


def torchvision_model(model: FasterRCNN, image_size: tuple[int, int]) -> TorchvisionFasterRCNN:
    """torchvision's FasterRCNN with ``model``'s architecture and settings (a copy of its backbone)."""
    c = model.config
    sizes = tuple(c.anchor_base_size * s for s in c.anchor_scales)
    channels = model.backbone.out_channels
    return TorchvisionFasterRCNN(
        # Our backbone keeps its weights channels-last (coursepkg.models.faster_rcnn.FasterRCNN.forward);
        # torchvision batches images in the default layout, so its copy gets the default layout too.
        copy.deepcopy(model.backbone).to(memory_format=torch.contiguous_format),
        min_size=min(image_size),
        max_size=max(image_size),
        image_mean=[0.0, 0.0, 0.0],
        image_std=[1.0, 1.0, 1.0],
        rpn_anchor_generator=AnchorGenerator(sizes=(sizes,), aspect_ratios=(c.anchor_ratios,)),
        rpn_head=TorchvisionRPNHead(channels, c.num_anchors),
        rpn_pre_nms_top_n_train=c.rpn_pre_nms_top_n_train,
        rpn_post_nms_top_n_train=c.rpn_post_nms_top_n_train,
        rpn_pre_nms_top_n_test=c.rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_test=c.rpn_post_nms_top_n_test,
        rpn_nms_thresh=c.rpn_nms_thresh,
        rpn_fg_iou_thresh=c.rpn_fg_iou_thresh,
        rpn_bg_iou_thresh=c.rpn_bg_iou_thresh,
        rpn_batch_size_per_image=c.rpn_batch_size_per_image,
        rpn_positive_fraction=c.rpn_positive_fraction,
        box_roi_pool=MultiScaleRoIAlign(["0"], c.roi_size, c.roi_sampling_ratio),
        box_head=TwoMLPHead(channels * c.roi_size**2, c.representation_size),
        box_predictor=FastRCNNPredictor(c.representation_size, c.num_classes + 1),
        box_score_thresh=c.score_thresh,
        box_nms_thresh=c.nms_thresh,
        box_detections_per_img=c.detections_per_img,
        box_fg_iou_thresh=c.roi_fg_iou_thresh,
        box_bg_iou_thresh=c.roi_fg_iou_thresh,
        box_batch_size_per_image=c.roi_batch_size_per_image,
        box_positive_fraction=c.roi_positive_fraction,
        bbox_reg_weights=c.box_weights,
    )


def bench_row(
    config: FasterRCNNConfig | None = None,
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
        config: our model's settings (default: the "cpu" recipe's); torchvision's mirrors them.
        batch_size: images per step.
        image_size: ``(height, width)`` of the shapes images.
        steps: timed steps per model (alternating); ``warmup`` untimed ones come first.
        seed: seeds the weights and the data.
        label: a name for the row.

    Returns:
        A dict with the settings, ``ours_ms`` / ``torchvision_ms`` (median wall time per step),
        ``ours_best_ms`` / ``torchvision_best_ms``, ``ours_cpu_ms`` / ``torchvision_cpu_ms``,
        ``ours_img_s`` / ``torchvision_img_s`` and ``ratio`` = ours_img_s / torchvision_img_s.
    """
    config = config or faster_rcnn_recipe("cpu").config
    data = ShapesDataset(batch_size, image_size=image_size, seed=seed, classes=_classes(config))
    images, targets = collate_detection([data[i] for i in range(batch_size)])
    tv_targets = [{"boxes": t["boxes"], "labels": t["labels"] + 1} for t in targets]

    torch.manual_seed(seed)
    ours = FasterRCNN(config).train()
    theirs = torchvision_model(ours, image_size).train()
    ours_opt = torch.optim.AdamW(ours.parameters(), lr=1e-4)
    theirs_opt = torch.optim.AdamW(theirs.parameters(), lr=1e-4)

    def ours_step() -> None:
        loss = sum(ours.losses(images, targets).values())
        ours_opt.zero_grad(set_to_none=True)
        loss.backward()
        ours_opt.step()

    def theirs_step() -> None:
        loss = sum(theirs(list(images), tv_targets).values())
        theirs_opt.zero_grad(set_to_none=True)
        loss.backward()
        theirs_opt.step()

    row: dict = {
        "label": label,
        "image_size": f"{image_size[0]}x{image_size[1]}",
        "batch": batch_size,
        "post_nms_train": config.rpn_post_nms_top_n_train,
        "batch_size_per_image": config.roi_batch_size_per_image,
        "threads": torch.get_num_threads(),
    }
    row.update(compare_step_times({"ours": ours_step, "torchvision": theirs_step}, repeats=steps,
                                  warmup=warmup, images_per_step=batch_size))
    row["ratio"] = row["ours_img_s"] / row["torchvision_img_s"]
    row["cpu_ratio"] = row["torchvision_cpu_ms"] / row["ours_cpu_ms"]
    return row


def _classes(config: FasterRCNNConfig) -> tuple[str, ...]:
    from coursepkg.data.shapes import SHAPE_CLASSES

    return SHAPE_CLASSES[: config.num_classes]


def measure(steps: int = 6, warmup: int = 2) -> list[dict]:
    """The default table: the "cpu" recipe's model, then the torchvision-sized RoI budget."""
    cpu = faster_rcnn_recipe("cpu").config
    rows = [
        dict(config=cpu, label="cpu recipe"),
        dict(config=cpu, batch_size=2, label="cpu recipe, batch 2"),
        dict(
            config=dataclasses.replace(
                cpu, rpn_pre_nms_top_n_train=2000, rpn_post_nms_top_n_train=2000, roi_batch_size_per_image=512
            ),
            label="torchvision proposal budget",
        ),
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
