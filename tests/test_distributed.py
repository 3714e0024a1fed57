"""``fit`` and ``evaluate`` under a process group: two CPU processes on gloo, started as torchrun does.

The multi-process tests start this file as a script, twice, with the environment torchrun gives
its workers (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``), so
``fit`` finds and joins the process group itself. One launch runs every check of a normal job
(training, checkpoints, resuming, evaluation) and writes what it saw to a folder; the test then
compares it with one process. Two more launches kill, or hang, one process and check that the
other ends with a clear error within the process group's timeout.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from test_detector import IMAGE_SIZE, TinyDetector, ToyBoxes
from torch import Tensor, nn
from torch.utils.data import RandomSampler

from coursepkg.engine.checkpoint import load_checkpoint
from coursepkg.engine.distributed import (
    DetectorLossModule,
    ShardedSampler,
    convert_sync_batchnorm,
    epoch_seed,
    init_distributed_from_env,
)
from coursepkg.engine.training import CHECKPOINT_NAME, evaluate, fit
from coursepkg.models.detector import Detector

WORLD_SIZE = 2
BATCH = 4  # per process; the single-process reference trains with WORLD_SIZE * BATCH
NUM_TRAIN = 32
STEPS_PER_EPOCH = NUM_TRAIN // (WORLD_SIZE * BATCH)  # 4
EPOCHS = 2
# Two processes average two means of 4 images' gradients; one process takes the mean of 8. Equal
# in exact arithmetic, so the weights may differ only by float32 rounding (eps = 1.2e-7), grown
# over 8 SGD steps.
TOLERANCE = {"rtol": 1e-5, "atol": 1e-6}
GROUP_TIMEOUT_S = 8  # the process group's timeout in the failure tests
LAUNCH_TIMEOUT_S = 180  # a generous bound for a launch on a busy machine


class MeanDetector(Detector):
    """A deterministic detector whose losses are means over images (no dropout, no batch norm).

    Then the mean gradient of two processes with 4 images each is the gradient of one process with
    the 8 images, which is what DDP promises. One detection per image (class and box of the
    largest object), as :class:`test_detector.TinyDetector`.
    """

    def __init__(self, num_classes: int = 2) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1),  # [B, 8, 16, 16]
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),  # [B, 8, 4, 4]
            nn.Flatten(),  # [B, 128]
        )
        self.cls_head = nn.Linear(128, num_classes)
        self.box_head = nn.Linear(128, 4)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        features = self.features(images)
        height, width = images.shape[-2:]
        cx, cy, w, h = self.box_head(features).sigmoid().unbind(1)
        scale = images.new_tensor([width, height, width, height])
        boxes = torch.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), dim=1) * scale
        return self.cls_head(features), boxes

    def losses(self, images: Tensor, targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        logits, boxes = self(images)
        has_object = images.new_tensor([float(len(t["boxes"]) > 0) for t in targets])  # [B]
        largest = [
            t["boxes"][_areas(t["boxes"]).argmax()] if len(t["boxes"]) else images.new_zeros(4)
            for t in targets
        ]
        labels = [
            t["labels"][_areas(t["boxes"]).argmax()] if len(t["boxes"]) else torch.tensor(0)
            for t in targets
        ]
        scale = images.shape[-1]
        cls = F.cross_entropy(logits, torch.stack(labels), reduction="none")  # [B]
        box = F.l1_loss(boxes / scale, torch.stack(largest) / scale, reduction="none").sum(1)
        # An empty image adds 0 to the mean: the mean over images stays a sum of per-image terms.
        return {"cls": (cls * has_object).mean(), "box": (box * has_object).mean()}

    def detect(self, images: Tensor) -> list[dict[str, Tensor]]:
        logits, boxes = self(images)
        scores, labels = logits.softmax(dim=1).max(dim=1)
        return [
            {"boxes": boxes[i : i + 1], "scores": scores[i : i + 1], "labels": labels[i : i + 1]}
            for i in range(images.shape[0])
        ]


def _areas(boxes: Tensor) -> Tensor:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def _model(seed: int = 0) -> MeanDetector:
    torch.manual_seed(seed)
    return MeanDetector()


def _fit(model: Detector, **kwargs):
    options = {
        "epochs": EPOCHS, "batch_size": BATCH, "optimizer": "sgd", "lr": 0.05,
        "grad_clip": None, "progress": False, "seed": 0, "device": "cpu",
        "val_data": ToyBoxes(10, seed=1),
    }  # fmt: skip
    return fit(model, ToyBoxes(NUM_TRAIN), **{**options, **kwargs})


class StopAt:
    """Make ``model.losses`` call ``action()`` at its ``call``-th call."""

    def __init__(self, model: Detector, call: int, action) -> None:
        self.calls, self.stop, self.action, self.losses = 0, call, action, model.losses
        model.losses = self

    def __call__(self, images, targets):
        self.calls += 1
        if self.calls == self.stop:
            self.action()
        return self.losses(images, targets)


# --------------------------------------------------------------------------- the workers


def _interrupt() -> None:
    raise KeyboardInterrupt


def _worker_job(out: Path, rank: int) -> None:
    """Everything a normal two-process job does; results go to ``out``."""
    import coursepkg.engine.training as training

    saves = []
    save_checkpoint = training.save_checkpoint

    def counting_save(*args, **kwargs):
        saves.append(str(args[1]))
        return save_checkpoint(*args, **kwargs)

    training.save_checkpoint = counting_save
    # Rank 1 starts from other weights: DDP must copy rank 0's to it.
    model = _model(seed=rank)
    history = _fit(model, checkpoint_dir=out / "full", progress=rank == 0)
    torch.save({"model": model.state_dict(), "history": history.to_dict()}, out / f"full_{rank}.pt")

    # Interrupted in epoch 2 on both processes (a stopped job), then resumed from rank 0's file.
    interrupted = _model(seed=rank)
    StopAt(interrupted, call=STEPS_PER_EPOCH + 2, action=_interrupt)  # 2nd step of epoch 2
    try:
        _fit(interrupted, checkpoint_dir=out / "resumed")
    except KeyboardInterrupt:
        pass
    else:
        raise AssertionError("the run was not interrupted")
    resumed = _model(seed=123)
    history = _fit(resumed, checkpoint_dir=out / "resumed")
    torch.save(
        {"model": resumed.state_dict(), "history": history.to_dict()}, out / f"resumed_{rank}.pt"
    )

    stats = evaluate(model, ToyBoxes(11, seed=2), batch_size=3)  # 11: shares of 6 and 5 images
    (out / f"job_{rank}.json").write_text(json.dumps({"saves": saves, "evaluate": stats}))


def _worker_killed(out: Path, rank: int) -> None:
    """Rank 1 is killed at its third step; rank 0 must stop with an error."""
    init_distributed_from_env(timeout=timedelta(seconds=GROUP_TIMEOUT_S))
    model = _model()
    if rank == 1:
        StopAt(model, call=3, action=lambda: os.kill(os.getpid(), signal.SIGKILL))
    _fit(model, val_data=None)


def _worker_hung(out: Path, rank: int) -> None:
    """Rank 1 stops answering at its third step; rank 0 must stop when the timeout runs out."""
    init_distributed_from_env(timeout=timedelta(seconds=GROUP_TIMEOUT_S))
    model = _model()
    if rank == 1:
        StopAt(model, call=3, action=lambda: time.sleep(LAUNCH_TIMEOUT_S))
    _fit(model, val_data=None)


WORKERS = {"job": _worker_job, "killed": _worker_killed, "hung": _worker_hung}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launch(scenario: str, out: Path) -> list[subprocess.Popen]:
    """Start this file as WORLD_SIZE workers with torchrun's environment variables."""
    port = _free_port()
    processes = []
    for rank in range(WORLD_SIZE):
        env = {
            **os.environ,
            "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(WORLD_SIZE),
            "LOCAL_WORLD_SIZE": str(WORLD_SIZE), "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), str(Path(__file__).parent)]),
        }  # fmt: skip
        processes.append(
            subprocess.Popen(
                [sys.executable, __file__, scenario, str(out)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    return processes


def _wait(
    processes: list[subprocess.Popen], timeout: float, *, only_first: bool = False
) -> list[tuple[int | None, str]]:
    """(return code, stderr) of each process; kills those that outlive ``timeout`` (or, with
    ``only_first``, those still running when the first has ended: their code is then None)."""
    deadline = time.monotonic() + timeout
    results = []
    try:
        for index, process in enumerate(processes):
            if only_first and index > 0 and process.poll() is None:
                process.kill()
                results.append((None, process.communicate()[1]))
                continue
            _, err = process.communicate(timeout=max(deadline - time.monotonic(), 0.1))
            results.append((process.returncode, err))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    return results


# --------------------------------------------------------------------------- two processes


@pytest.fixture(scope="module")
def job(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("job")
    results = _wait(_launch("job", out), LAUNCH_TIMEOUT_S)
    for rank, (code, err) in enumerate(results):
        assert code == 0, f"rank {rank} failed:\n{err[-3000:]}"
    return out


def test_two_processes_with_batch_b_equal_one_process_with_batch_2b(job):
    reference = _model()
    history = _fit(reference, batch_size=WORLD_SIZE * BATCH)
    runs = [torch.load(job / f"full_{rank}.pt") for rank in range(WORLD_SIZE)]
    for name, value in reference.state_dict().items():
        torch.testing.assert_close(runs[0]["model"][name], value, **TOLERANCE)
        # Both processes hold the same weights, bit for bit (rank 1 started from others).
        assert torch.equal(runs[1]["model"][name], runs[0]["model"][name]), name
    for rank in range(WORLD_SIZE):
        logged = runs[rank]["history"]
        assert logged["step"] == history["step"]  # 4 steps per epoch, as with one process
        # The logged losses are the means over the processes: the loss of the 8 images.
        torch.testing.assert_close(
            torch.tensor(logged["train_loss"]), torch.tensor(history["train_loss"]), **TOLERANCE
        )


def test_only_rank_0_writes_checkpoints(job):
    saves = [json.loads((job / f"job_{rank}.json").read_text())["saves"] for rank in range(2)]
    assert saves[1] == []
    assert len(saves[0]) == 2 * EPOCHS  # the full run, and the interrupted and resumed one
    state = load_checkpoint(job / "full" / CHECKPOINT_NAME)
    assert state["complete"] and state["config"]["world_size"] == WORLD_SIZE
    assert len(state["rng_per_rank"]) == WORLD_SIZE


def test_resuming_two_processes_continues_exactly(job):
    for rank in range(WORLD_SIZE):
        full = torch.load(job / f"full_{rank}.pt")
        resumed = torch.load(job / f"resumed_{rank}.pt")
        for name, value in full["model"].items():
            assert torch.equal(resumed["model"][name], value), (rank, name)
        drop = ("epoch_time",)
        assert {k: v for k, v in resumed["history"].items() if k not in drop} == {
            k: v for k, v in full["history"].items() if k not in drop
        }


def test_distributed_map_equals_single_process_map(job):
    model = _model()
    model.load_state_dict(torch.load(job / "full_0.pt")["model"])
    single = evaluate(model, ToyBoxes(11, seed=2), batch_size=3)
    for rank in range(WORLD_SIZE):
        assert json.loads((job / f"job_{rank}.json").read_text())["evaluate"] == single
    # fit's validation after every epoch too: the whole validation set, not a shard.
    history = torch.load(job / "full_0.pt")["history"]
    assert history["val_map"][-1] == evaluate(model, ToyBoxes(10, seed=1), batch_size=BATCH)["map"]


@pytest.mark.slow
def test_a_killed_or_hung_process_ends_the_job_with_a_clear_error(tmp_path):
    """Rank 1 is killed (killed) or stops answering (hung); rank 0 raises a DistributedError.

    Both jobs run at the same time. Without the process group's timeout, rank 0 of the hung job
    would wait forever; the launch timeout of the test only bounds a broken engine.
    """
    jobs = {scenario: _launch(scenario, tmp_path) for scenario in ("killed", "hung")}
    killed = _wait(jobs["killed"], LAUNCH_TIMEOUT_S)
    hung = _wait(jobs["hung"], LAUNCH_TIMEOUT_S, only_first=True)
    assert killed[1][0] == -signal.SIGKILL
    assert hung[1][0] is None  # still asleep when rank 0 had given up
    for (code, err), why in ((killed[0], "Connection"), (hung[0], f"{GROUP_TIMEOUT_S}000ms")):
        assert code == 1 and "DistributedError: process 0 of 2" in err, err[-3000:]
        assert "another process stopped" in err and f"({GROUP_TIMEOUT_S}s)" in err
        assert why.lower() in err.lower()  # gloo's own words, quoted


# --------------------------------------------------------------------------- one process


def test_sharded_sampler_splits_one_order_between_processes():
    size, replicas = 10, 3
    for epoch in (0, 1):
        shares = []
        for rank in range(replicas):
            sampler = ShardedSampler(size, num_replicas=replicas, rank=rank, seed=5)
            sampler.set_epoch(epoch)
            shares.append(list(sampler))
        order = torch.randperm(
            size, generator=torch.Generator().manual_seed(epoch_seed(5, epoch))
        ).tolist()
        # Interleaved: step k of all processes together is step k of one process.
        assert [shares[i % replicas][i // replicas] for i in range(size)] == order
        assert [len(share) for share in shares] == [4, 4, 4]  # padded with the order's first items
        assert shares[1][-1] == order[0] and shares[2][-1] == order[1]
    evaluation = [
        list(ShardedSampler(size, num_replicas=replicas, rank=r, shuffle=False, pad=False))
        for r in range(replicas)
    ]
    assert sorted(sum(evaluation, [])) == list(range(size))  # every image once


def test_one_process_reads_fits_own_shuffle():
    """With one process the sampler is RandomSampler with fit's (seed, epoch) generator."""
    generator = torch.Generator().manual_seed(epoch_seed(0, 3))
    expected = list(RandomSampler(range(20), generator=generator))
    sampler = ShardedSampler(20, num_replicas=1, rank=0, seed=0)
    sampler.set_epoch(3)
    assert list(sampler) == expected


def test_detector_loss_module_forward_is_the_losses():
    model = TinyDetector(dropout=0.0).eval()
    images, targets = zip(*(ToyBoxes(3)[i] for i in range(3)), strict=True)
    images = torch.stack(images)
    expected = model.losses(images, list(targets))
    losses = DetectorLossModule(model)(images, list(targets))
    assert list(losses) == list(expected)
    for name, value in expected.items():
        assert torch.equal(losses[name], value)
    with pytest.raises(TypeError, match="detector must have a losses"):
        DetectorLossModule(nn.Linear(2, 2))


def test_fit_accepts_a_model_wrapped_in_ddp(tmp_path):
    """fit(DDP(model)) trains the model inside, as fit(model) would (a one-process group)."""
    store = torch.distributed.FileStore(str(tmp_path / "store"), 1)
    torch.distributed.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        wrapped = torch.nn.parallel.DistributedDataParallel(_model())
        history = _fit(wrapped, epochs=1)
    finally:
        torch.distributed.destroy_process_group()
    reference = _model()
    assert history["train_loss"] == _fit(reference, epochs=1)["train_loss"]
    for name, value in reference.state_dict().items():
        assert torch.equal(wrapped.module.state_dict()[name], value), name


def test_convert_sync_batchnorm_keeps_every_weight_and_statistic():
    """The option swaps each BatchNorm for SyncBatchNorm with the same parameters and buffers."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1), nn.BatchNorm2d(2))
    model.train()
    model(torch.randn(4, 3, 8, 8))  # running statistics away from their initial 0 and 1
    before = {name: value.clone() for name, value in model.state_dict().items()}
    converted = convert_sync_batchnorm(model)
    kinds = [type(m) for m in converted.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert kinds == [nn.SyncBatchNorm, nn.SyncBatchNorm]
    after = converted.state_dict()
    assert list(after) == list(before)
    for name, value in before.items():
        assert torch.equal(after[name], value), name


def test_sync_batchnorm_on_cpu_processes_is_refused_with_the_reason(tmp_path, monkeypatch):
    """torch's SyncBatchNorm does not run on the CPU; fit says so before training, not mid-step."""
    store = torch.distributed.FileStore(str(tmp_path / "store"), 1)
    torch.distributed.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        layer = nn.SyncBatchNorm(2).train()
        with pytest.raises(ValueError, match="GPU"):  # torch itself: the reason for fit's check
            layer(torch.randn(2, 2, 4, 4))
    finally:
        torch.distributed.destroy_process_group()
    # fit as one of several CPU processes (the group itself is not needed to reach the check)
    monkeypatch.setattr("coursepkg.engine.training.init_distributed_from_env", lambda: True)
    with pytest.raises(ValueError, match="sync_batchnorm=True needs GPUs"):
        _fit(_model(), epochs=1, sync_batchnorm=True)


def test_init_from_env_without_torchrun_is_a_no_op(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert init_distributed_from_env() is False
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert init_distributed_from_env() is False


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: init_distributed_from_env(timeout=5), TypeError, "timeout must be a datetime"),
        (lambda: init_distributed_from_env(timeout=timedelta(0)), ValueError, "timeout must be positive"),
        (lambda: ShardedSampler(0, num_replicas=1, rank=0), ValueError, "size must be >= 1"),
        (lambda: ShardedSampler(4, num_replicas=2, rank=2), ValueError, r"rank must be an int in \[0, num_replicas=2\)"),
        (lambda: ShardedSampler(4, num_replicas=0, rank=0), ValueError, "num_replicas must be >= 1"),
    ],
)  # fmt: skip
def test_bad_arguments(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_incomplete_torchrun_environment_is_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(ValueError, match=r"WORLD_SIZE=2 but the environment lacks \['RANK'"):
        init_distributed_from_env()


if __name__ == "__main__":  # a worker: python test_distributed.py SCENARIO OUT_DIR
    torch.set_num_threads(1)
    assert IMAGE_SIZE == (32, 32)
    WORKERS[sys.argv[1]](Path(sys.argv[2]), int(os.environ["RANK"]))
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
