"""RoIAlign and RoI pooling: coursepkg.ops.roi_pool against torchvision.ops on the CPU.

Each row builds one seeded problem (feature maps, random proposals partly outside the image),
asserts that both implementations give the same output (and the same input gradient when
``backward=True``), then times them alternately and reports the best of ``repeats`` runs and the
ratio ours / torchvision measured in the same run.

    python benchmarks/bench_roi.py            # the default table
    python benchmarks/bench_roi.py --threads 1
"""

from __future__ import annotations

import argparse
import time

import torch
import torchvision.ops
from torch.testing import assert_close

from coursepkg.ops.roi_pool import roi_align, roi_pool


def make_problem(
    num_rois: int,
    channels: int,
    feature_size: tuple[int, int],
    stride: int,
    num_images: int = 2,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Feature maps [N, C, H, W] and RoIs [K, 5] in image pixels, sizes 8 px to half the image."""
    g = torch.Generator().manual_seed(seed)
    height, width = feature_size
    image = torch.tensor([width * stride, height * stride], dtype=torch.float32)
    features = torch.randn(num_images, channels, height, width, generator=g)
    batch = torch.randint(0, num_images, (num_rois, 1), generator=g).float()
    xy = torch.rand(num_rois, 2, generator=g) * image * 1.1 - 0.05 * image
    wh = 8 + torch.rand(num_rois, 2, generator=g) * (image / 2 - 8)
    return features, torch.cat([batch, xy, xy + wh], dim=1)


def _best_time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def bench_row(
    op: str,
    num_rois: int = 512,
    channels: int = 256,
    feature_size: tuple[int, int] = (50, 68),
    stride: int = 16,
    output_size: int = 7,
    sampling_ratio: int = 2,
    aligned: bool = False,
    backward: bool = False,
    repeats: int = 5,
) -> dict:
    """Time one configuration; returns a dict with both times (ms) and the ratio ours / torchvision.

    Args:
        op: ``"roi_align"`` or ``"roi_pool"``.
        backward: time forward + backward (``output.sum().backward()``) instead of forward only.
    """
    features, rois = make_problem(num_rois, channels, feature_size, stride)
    scale = 1.0 / stride
    if op == "roi_align":
        args = (rois, output_size, scale, sampling_ratio, aligned)
        ours_op, theirs_op = roi_align, torchvision.ops.roi_align
    elif op == "roi_pool":
        args = (rois, output_size, scale)
        ours_op, theirs_op = roi_pool, torchvision.ops.roi_pool
    else:
        raise ValueError(f"op must be 'roi_align' or 'roi_pool', got {op!r}")

    def run(fn):
        x = features.clone().requires_grad_(backward)
        out = fn(x, *args)
        if backward:
            out.sum().backward()
        return out.detach(), x.grad

    ours_out, ours_grad = run(ours_op)
    theirs_out, theirs_grad = run(theirs_op)
    assert_close(ours_out, theirs_out)
    if backward:
        assert_close(ours_grad, theirs_grad)

    ours_t, theirs_t = float("inf"), float("inf")
    for _ in range(repeats):  # alternate, so both see the same machine load
        ours_t = min(ours_t, _best_time(lambda: run(ours_op), 1))
        theirs_t = min(theirs_t, _best_time(lambda: run(theirs_op), 1))
    return {
        "op": op,
        "rois": num_rois,
        "channels": channels,
        "feature": f"{feature_size[0]}x{feature_size[1]}",
        "sampling_ratio": sampling_ratio if op == "roi_align" else "-",
        "aligned": aligned if op == "roi_align" else "-",
        "pass": "fwd+bwd" if backward else "fwd",
        "ours_ms": 1e3 * ours_t,
        "torchvision_ms": 1e3 * theirs_t,
        "ratio": ours_t / theirs_t,
    }


DEFAULT_ROWS = [
    dict(op="roi_align", sampling_ratio=2),
    dict(op="roi_align", sampling_ratio=-1),
    dict(op="roi_align", sampling_ratio=2, aligned=True),
    dict(op="roi_align", sampling_ratio=2, backward=True),
    dict(op="roi_align", sampling_ratio=2, num_rois=128, feature_size=(100, 136), stride=8),
    dict(op="roi_pool"),
    dict(op="roi_pool", backward=True),
    dict(op="roi_pool", num_rois=128, feature_size=(100, 136), stride=8),
    # Fast R-CNN's training mini-batch: 128 RoIs from 2 images on VGG-16's conv5 (512 channels).
    dict(op="roi_pool", num_rois=128, channels=512, backward=True),
    dict(op="roi_pool", num_rois=128, feature_size=(100, 136), stride=8, backward=True),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--threads", type=int, default=None, help="torch.set_num_threads for this run"
    )
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, threads {torch.get_num_threads()}"
    )
    header = f"{'op':<10}{'rois':>6}{'C':>5}{'feature':>9}{'sr':>4}{'aligned':>8}{'pass':>9}{'ours ms':>10}{'tv ms':>9}{'ratio':>7}"
    print(header)
    for row in DEFAULT_ROWS:
        r = bench_row(repeats=args.repeats, **row)
        print(
            f"{r['op']:<10}{r['rois']:>6}{r['channels']:>5}{r['feature']:>9}{r['sampling_ratio']!s:>4}"
            f"{r['aligned']!s:>8}{r['pass']:>9}{r['ours_ms']:>10.1f}{r['torchvision_ms']:>9.1f}{r['ratio']:>7.2f}"
        )


if __name__ == "__main__":
    main()
