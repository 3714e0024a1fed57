"""Host-device synchronisations in one training step of each detector, counted on the CPU.

On a GPU, Python queues kernels and runs ahead of them; every operation whose *result the host
needs* makes it wait until the GPU has caught up, and the GPU then idles while Python queues the
next kernels. Such a synchronisation costs tens of microseconds to milliseconds per call. They
come from:

* a value read on the host: ``.item()``, ``float(t)``, ``int(t)``, ``bool(t)`` (``if (t > 0).any():``),
  ``.tolist()``, ``.numpy()``, ``.cpu()``, ``.to("cpu")``;
* an output whose *size* depends on the data: ``nonzero``, ``torch.where(mask)``, ``x[mask]`` and
  ``x[mask] = v`` with a boolean mask, ``masked_select``, ``unique``, ``bincount``,
  ``repeat_interleave(counts)``, ``torch.equal``.

No GPU is needed to find them: the benchmark runs the engine's training step
(``coursepkg.engine.training._train_step``: ``losses``, backward, clipping, optimizer step) under
a ``TorchDispatchMode`` that sees every ATen operation, and with ``Tensor.tolist``, ``.numpy``,
``.cpu`` and ``.to`` wrapped (on a CPU tensor these reach no ATen kernel). Each event is
charged to the innermost line of ``coursepkg`` that caused it. The count assumes that every
tensor of the step would live on the GPU, so it is an upper bound; ``.to(device)`` counts only
where the line names the CPU (on this CPU-only run every device is the CPU). The optimizer's ``.item()`` on
its step counters is not counted: torch keeps those counters on the CPU.

    python benchmarks/bench_host_sync.py                  # every detector, table per detector
    python benchmarks/bench_host_sync.py --detector faster_rcnn --batch-size 2

Each detector is one entry of :data:`coursepkg.engine.train_shapes.DETECTORS`: adding it there
adds it here. Measured steps come after one warm-up step (which fills caches such as Fast R-CNN's
proposal cache).

What remains, and why (batch of 2; was 77 for Fast R-CNN and 79 for Faster R-CNN before the
validation, the samplers, the losses and RoI pooling's plan were rewritten; ``tests/test_host_sync.py``
pins each rewrite to the results of the code it replaced):

* **Input validation, one per batch** (``validation._all_true``): the targets of the batch
  (``check_targets``); Fast R-CNN's proposals and ground truths once more (the proposals come from
  ``proposal_fn`` after the targets were checked, and the boxes are converted to the images'
  dtype); the boxes handed to ``roi_pool`` / ``roi_align`` (``_as_rois``: they are converted to
  the features' dtype, float16 under mixed precision, which can overflow). Each check reads one
  flag for everything it tests; only a failing check goes through the slow path that names the
  first bad row.
* **Faster R-CNN's finiteness check of the RPN outputs** (``faster_rcnn.py rpn``, 1): a NaN logit
  would otherwise sort anywhere in top-k and vanish in silence; one read for the whole batch.
* **The samplers, one per batch** (``assignment._sample_balanced_many``; Faster R-CNN has two,
  anchors and RoIs): ``randperm`` draws on the CPU from the generator and needs the numbers of
  positives and negatives, which also size the samples. Drawing on the device (random keys and
  top-k) would avoid it but change the draws that the tests pin against torchvision's sampler.
* **RoI pooling's plan, one per call** (``roi_pool._plan_runs``; ``roi_align``'s ``_chunks``): the
  block sizes of the gather and the sparse table's levels are Python ints (loop bounds and
  shapes). ``roi_align`` with an adaptive ``sampling_ratio`` reads the grids' maxima as well (one
  more; the detectors use 2).
* **Proposals before NMS, one per batch** (``rpn._generate_proposals_batch``): the boxes that
  survive the size and score filters are a data-dependent set.
* **NMS, two per block of boxes per image** (``nms._nms_core``): the greedy decisions inside a
  block are taken on the host from one transfer of its bit rows, and the survivors of the next
  blocks are a data-dependent set. Per image, so it grows with the batch.
* **Fast R-CNN's proposal cache, two per image** (``rcnn.ProposalCache``): the content key of an
  image (two sums) and the ``torch.equal`` that confirms a hit. Selective search runs on the CPU;
  the cache is what makes proposals free after the first epoch.
* **The engine, two per step**: ``check_losses`` reads every loss term in one transfer (the
  history logs them, and a NaN must stop training at once), and the gradient norm is read to
  refuse a non-finite step.

* **RetinaNet's finiteness check of its outputs** (``retinanet.py``, 1; IoU-aware RetinaNet
  too): one read for the whole batch, as Faster R-CNN's RPN check.

The one-stage detectors therefore make 3 (YOLOv1, FCOS) or 4 (RetinaNet and its variants) per
step: the targets' check, RetinaNet's output check and the engine's two. They made 6 to 14 before
``F.one_hot`` (which reads its input's minimum and maximum back to check them) gave way to
``coursepkg.ops.labels.one_hot_labels``, YOLOv1's targets wrote the objects that lose their cell
to a scratch row instead of selecting the kept ones, FCOS's losses masked instead of selecting
the foreground points, ``repeat_interleave`` got its ``output_size`` from the host, and the
IoU-aware target called ``matched_box_iou``'s unchecked core.

Everything else on the step's path is sync-free: masks with ``torch.where`` instead of
``x[mask] = v``, losses that weight by masks instead of selecting rows, ``nonzero_static`` where
the host already knows a count, device-side counts as normalisers.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

import coursepkg
from coursepkg.engine import training
from coursepkg.engine.train_shapes import DETECTORS

aten = torch.ops.aten
PACKAGE_DIR = str(Path(coursepkg.__file__).parent)
TORCH_OPTIM_DIR = str(Path(torch.optim.__file__).parent)
# Operations whose output size depends on the data, so the host must wait for it.
DATA_DEPENDENT = {
    aten.nonzero: "nonzero",
    aten.masked_select: "masked_select",
    aten._unique2: "unique",
    aten.unique_dim: "unique",
    aten.unique_consecutive: "unique",
    aten.bincount: "bincount",
    aten.equal: "torch.equal",
}


def _is_mask(index: object) -> bool:
    return isinstance(index, torch.Tensor) and index.dtype in (torch.bool, torch.uint8)


def sync_kind(func, args: tuple, kwargs: dict) -> str | None:
    """What kind of synchronisation an ATen call is, or None if it is none."""
    if func is aten._local_scalar_dense.default:
        return "item/float/bool"
    packet = func.overloadpacket
    if packet in DATA_DEPENDENT:
        return DATA_DEPENDENT[packet]
    if func is aten.repeat_interleave.Tensor and kwargs.get("output_size") is None:
        return "repeat_interleave"
    if packet is aten.index and any(_is_mask(i) for i in args[1]):
        return "x[mask]"
    if packet in (aten.index_put, aten.index_put_) and any(_is_mask(i) for i in args[1]):
        return "x[mask] = v"
    return None


class SyncCounter(TorchDispatchMode):
    """Counts host synchronisations by (file:line function, kind) while active."""

    def __init__(self) -> None:
        super().__init__()
        self.events: collections.Counter[tuple[str, str]] = collections.Counter()

    def record(self, kind: str, *, line_mentions: str | None = None) -> None:
        """Charge one event to the innermost coursepkg line; with ``line_mentions``, only if
        that line's source contains the text (``.to(device)`` is a copy to the GPU there)."""
        where = None
        for frame in reversed(traceback.extract_stack()[:-2]):
            if frame.filename.startswith(TORCH_OPTIM_DIR):
                return  # the optimizer's step counters live on the CPU
            if frame.filename.startswith(PACKAGE_DIR):
                if line_mentions is not None and line_mentions not in (frame.line or ""):
                    return
                where = (
                    f"{Path(frame.filename).relative_to(PACKAGE_DIR)}:{frame.lineno} {frame.name}"
                )
                break
        self.events[(where or "(outside coursepkg)", kind)] += 1

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        kind = sync_kind(func, args, kwargs)
        if kind is not None:
            self.record(kind)
        return func(*args, **kwargs)


@contextlib.contextmanager
def counting(counter: SyncCounter) -> Iterator[None]:
    """Run a block under ``counter``, with the host-reading Tensor methods wrapped."""
    originals = {name: getattr(torch.Tensor, name) for name in ("tolist", "numpy", "cpu", "to")}

    def wrap(name, method):
        @functools.wraps(method)
        def wrapper(self, *args, **kwargs):
            if name != "to":
                counter.record(f".{name}()")
            elif _to_cpu(args, kwargs):  # on this CPU-only run, .to(device) targets the CPU too
                counter.record('.to("cpu")', line_mentions="cpu")
            return method(self, *args, **kwargs)

        return wrapper

    for name, method in originals.items():
        setattr(torch.Tensor, name, wrap(name, method))
    try:
        with counter:
            yield
    finally:
        for name, method in originals.items():
            setattr(torch.Tensor, name, method)


def _to_cpu(args: tuple, kwargs: dict) -> bool:
    device = kwargs.get("device", args[0] if args else None)
    return isinstance(device, str | torch.device) and torch.device(device).type == "cpu"


def count_step_syncs(detector: str, *, batch_size: int, steps: int = 2) -> list[SyncCounter]:
    """One counter per measured training step of ``detector`` (after one warm-up step)."""
    torch.manual_seed(0)
    job = DETECTORS[detector]("smoke")
    data = [job.train_set[i] for i in range(batch_size)]  # the same batch at every step
    counters: list[SyncCounter] = []
    original_step = training._train_step

    def counted_step(run, images, targets):
        counter = SyncCounter()
        with counting(counter):
            result = original_step(run, images, targets)
        counters.append(counter)
        return result

    training._train_step = counted_step
    try:
        training.fit(
            job.model, data * (steps + 1), epochs=1, batch_size=batch_size, lr=job.lr,
            device="cpu", progress=False, warmup_steps=0,
        )  # fmt: skip
    finally:
        training._train_step = original_step
    return counters[1:]


def main(argv: list[str] | None = None) -> dict[str, int]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--detector", choices=sorted(DETECTORS), action="append")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--top", type=int, default=12, help="locations listed per detector")
    args = parser.parse_args(argv)
    totals = {}
    print(f"torch {torch.__version__}; batch of {args.batch_size} images; syncs per training step")
    for detector in args.detector or sorted(DETECTORS):
        counters = count_step_syncs(detector, batch_size=args.batch_size)
        events = counters[-1].events
        totals[detector] = sum(events.values())
        per_kind = collections.Counter()
        for (_, kind), count in events.items():
            per_kind[kind] += count
        print(f"\n{detector}: {totals[detector]} host synchronisations per step "
              f"({', '.join(f'{k} {v}' for k, v in per_kind.most_common())})")  # fmt: skip
        print(f"  {'count':>5}  {'kind':<18} where (innermost coursepkg line)")
        for (where, kind), count in events.most_common(args.top):
            print(f"  {count:>5}  {kind:<18} {where}")
        if len(events) > args.top:
            print(f"  ... and {len(events) - args.top} more locations")
    print("\nsummary:", ", ".join(f"{name} {count}" for name, count in totals.items()))
    return totals


if __name__ == "__main__":
    main(sys.argv[1:])
