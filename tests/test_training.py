import math
import random
import sys
import types

import numpy as np
import pytest
import torch
from test_detector import IMAGE_SIZE, TinyDetector, ToyBoxes, collate
from torch import Tensor, nn
from torch.utils.data import DataLoader
from torchvision.ops import box_iou

from coursepkg.engine import checkpoint as ckpt
from coursepkg.engine.checkpoint import CheckpointError, CheckpointWarning, load_checkpoint
from coursepkg.engine.training import (
    CHECKPOINT_NAME,
    PREVIOUS_CHECKPOINT_NAME,
    History,
    evaluate,
    fit,
    predict,
    warmup_cosine,
)
from coursepkg.models.detector import Detector


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from threads, and on a shared 2-core machine they lose a lot."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def collate_detection(monkeypatch):
    """Use coursepkg.data.collate_detection if it exists, else the tests' stand-in."""
    try:
        from coursepkg.data import collate_detection  # noqa: F401
    except ImportError:
        fake = types.ModuleType("coursepkg.data")
        fake.collate_detection = collate
        monkeypatch.setitem(sys.modules, "coursepkg.data", fake)


class TopHitMetric:
    """A stand-in for MeanAveragePrecision with the same API and an easily recomputed result.

    "map_50" is the fraction of images with objects whose first detection has the label of the
    largest object and IoU >= 0.5 with it; "map" is the same at IoU >= 0.75.
    """

    updates: list[tuple[list, list]] = []

    def __init__(self) -> None:
        self.preds, self.targets = [], []

    def update(self, preds, targets) -> None:
        TopHitMetric.updates.append((preds, targets))
        self.preds += preds
        self.targets += targets

    def compute(self) -> dict:
        hits = _top_hits(self.preds, self.targets)
        return {
            "map": sum(iou >= 0.75 for iou in hits) / len(hits),
            "map_50": sum(iou >= 0.5 for iou in hits) / len(hits),
            "classes": torch.tensor([0, 1]),  # not scalars: evaluate drops them
            "map_per_class": torch.tensor([0.5]),
        }


def _top_hits(preds, targets) -> list[float]:
    """IoU of each image's first detection with its largest object (0 for a wrong label)."""
    hits = []
    for pred, target in zip(preds, targets, strict=True):
        if len(target["boxes"]) == 0:
            continue
        boxes = target["boxes"]
        largest = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).argmax()
        same = pred["labels"][0] == target["labels"][largest]
        hits.append(
            box_iou(pred["boxes"][:1], boxes[largest : largest + 1]).item() if same else 0.0
        )
    return hits


@pytest.fixture
def fake_metric(monkeypatch):
    module = types.ModuleType("coursepkg.evaluation")
    module.MeanAveragePrecision = TopHitMetric
    monkeypatch.setitem(sys.modules, "coursepkg.evaluation", module)
    TopHitMetric.updates = []
    return TopHitMetric


def _model(seed: int = 0, **kwargs) -> TinyDetector:
    torch.manual_seed(seed)
    return TinyDetector(**kwargs)


def _fit(model, data=None, **kwargs) -> History:
    options = {"epochs": 4, "batch_size": 8, "progress": False, "lr": 3e-3, "seed": 0}
    return fit(model, ToyBoxes(20) if data is None else data, **{**options, **kwargs})


def _assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    state_a, state_b = a.state_dict(), b.state_dict()
    assert list(state_a) == list(state_b)
    for name in state_a:
        assert torch.equal(state_a[name], state_b[name]), name


def _without_times(history: History) -> dict:
    return {k: v for k, v in history.to_dict().items() if k != "epoch_time"}


# --------------------------------------------------------------------------- schedule


def test_warmup_cosine_exact_values():
    f = [warmup_cosine(s, warmup_steps=2, total_steps=10) for s in range(11)]
    expected = [0.5, 1.0] + [0.5 * (1 + math.cos(math.pi * k / 8)) for k in range(8)] + [0.0]
    torch.testing.assert_close(
        torch.tensor(f, dtype=torch.float64), torch.tensor(expected, dtype=torch.float64)
    )
    assert f[2] == 1.0 and f[6] == pytest.approx(0.5, abs=1e-15) and f[9] > 0
    assert warmup_cosine(0, warmup_steps=0, total_steps=1) == 1.0
    assert warmup_cosine(3, warmup_steps=4, total_steps=4) == 1.0  # all warm-up
    with pytest.raises(ValueError, match="total_steps must be >= 1, got 0"):
        warmup_cosine(0, warmup_steps=0, total_steps=0)
    with pytest.raises(ValueError, match=r"warmup_steps must be in \[0, total_steps=4\], got 5"):
        warmup_cosine(0, warmup_steps=5, total_steps=4)
    with pytest.raises(ValueError, match="step must be >= 0, got -1"):
        warmup_cosine(-1, warmup_steps=1, total_steps=4)


def test_logged_learning_rates_follow_the_schedule():
    history = _fit(_model(), epochs=3, warmup_steps=2, lr=0.01)  # 3 batches x 3 epochs
    expected = [0.01 * warmup_cosine(s, warmup_steps=2, total_steps=9) for s in range(9)]
    torch.testing.assert_close(
        torch.tensor(history["lr"]), torch.tensor(expected), rtol=1e-12, atol=0
    )
    lrs = _fit(_model(), epochs=20)["lr"][:4]  # default warm-up: 5 % of 60 steps = 3
    torch.testing.assert_close(
        torch.tensor(lrs), torch.tensor([1e-3, 2e-3, 3e-3, 3e-3]), rtol=1e-12, atol=0
    )


# --------------------------------------------------------------------------- fit


def test_fit_learns_and_logs_everything():
    model = _model()
    data = ToyBoxes(48)
    before = evaluate_loss(model, data)
    history = fit(model, data, epochs=8, batch_size=12, lr=3e-3, progress=False)
    assert not model.training
    assert history.num_steps == 32 and history.num_epochs == 8
    assert list(history.per_step) == ["step", "lr", "grad_norm", "train_loss", "cls", "box"]
    assert list(history.per_epoch) == ["epoch", "epoch_loss", "epoch_time"]
    assert history["step"] == list(range(1, 33)) and history["epoch"] == list(range(1, 9))
    torch.testing.assert_close(
        torch.tensor(history["train_loss"]),
        torch.tensor(history["cls"]) + torch.tensor(history["box"]),
    )
    torch.testing.assert_close(
        torch.tensor(history["epoch_loss"]),
        torch.tensor(history["train_loss"]).reshape(8, 4).mean(1),
    )
    assert all(t > 0 for t in history["epoch_time"])
    # It learns: the loss on the whole training set falls to well under half.
    after = evaluate_loss(model, data)
    assert after < 0.5 * before, (before, after)
    assert history["epoch_loss"][-1] < 0.5 * history["epoch_loss"][0]
    assert history.to_dict()["train_loss"] == history["train_loss"]
    assert history.to_dict()["train_loss"] is not history["train_loss"]
    assert dict(history) == history.to_dict()
    assert repr(history).startswith("History(32 steps, 8 epochs; last epoch: epoch_loss=")
    with pytest.raises(KeyError, match="'val_map' is not in the history; it has"):
        history["val_map"]


def evaluate_loss(model: TinyDetector, data: ToyBoxes) -> float:
    images, targets = collate([data[i] for i in range(len(data))])
    model.eval()
    with torch.no_grad():
        return sum(model.losses(images, targets).values()).item()


def test_fit_is_deterministic_given_the_seed():
    a, b, c = _model(), _model(), _model()
    history_a, history_b = _fit(a), _fit(b)
    _assert_same_weights(a, b)
    assert _without_times(history_a) == _without_times(history_b)
    _fit(c, seed=1)  # another shuffling order and other dropout masks
    assert not torch.equal(a.cls_head.weight, c.cls_head.weight)


def test_results_do_not_depend_on_worker_count():
    a, b = _model(), _model()
    _fit(a, epochs=2)
    _fit(b, epochs=2, num_workers=1)
    _assert_same_weights(a, b)


def test_amp_is_ignored_off_cuda():
    a, b = _model(), _model()
    _fit(a, epochs=2, amp=True, device="cpu")
    _fit(b, epochs=2, amp=False, device="cpu")
    _assert_same_weights(a, b)


class StopAt:
    """Wraps a model's losses() to raise KeyboardInterrupt (a Colab disconnect) at a given call."""

    def __init__(self, model: Detector, call: int) -> None:
        self.calls, self.stop, self.losses = 0, call, model.losses
        model.losses = self  # an instance attribute shadows the method

    def __call__(self, images, targets):
        self.calls += 1
        if self.calls == self.stop:
            raise KeyboardInterrupt
        return self.losses(images, targets)


def _forbid_training(model: Detector) -> None:
    """Make any training step fail the test (checks must come first)."""

    def losses(images, targets):
        raise AssertionError("fit started training before refusing its arguments")

    model.losses = losses


def test_interrupted_and_resumed_run_ends_with_exactly_the_same_weights(tmp_path, capsys):
    data = ToyBoxes(20)  # 3 batches per epoch
    reference = _model()
    reference_history = _fit(reference, data, epochs=4)

    interrupted = _model()
    StopAt(interrupted, call=8)  # second batch of epoch 3
    with pytest.raises(KeyboardInterrupt):
        _fit(interrupted, data, epochs=4, checkpoint_dir=tmp_path)
    saved = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    assert (saved["epoch"], saved["global_step"], saved["complete"]) == (2, 6, False)

    resumed = _model(seed=123)  # other initial weights: all of them come from the checkpoint
    history = _fit(resumed, data, epochs=4, checkpoint_dir=tmp_path, progress=True)
    output = capsys.readouterr()
    assert "resuming from" in output.out and "after epoch 2/4" in output.out
    assert "epoch 3/4" in output.err and "epoch 1/4" not in output.err
    _assert_same_weights(resumed, reference)
    assert _without_times(history) == _without_times(reference_history)
    assert len(history["epoch_time"]) == 4
    assert load_checkpoint(tmp_path / CHECKPOINT_NAME)["complete"]


def test_resume_after_a_finished_run_returns_at_once(tmp_path, capsys):
    trained = _model()
    history = _fit(trained, epochs=2, checkpoint_dir=tmp_path)
    fresh = _model(seed=5)
    StopAt(fresh, call=1)  # any training step would raise
    again = _fit(fresh, epochs=2, checkpoint_dir=tmp_path, progress=True)
    _assert_same_weights(fresh, trained)
    assert again.to_dict() == history.to_dict()
    assert not fresh.training
    assert "training already complete" in capsys.readouterr().out


def test_resume_false_starts_afresh_and_overwrites(tmp_path):
    a = _model()
    _fit(a, epochs=2, checkpoint_dir=tmp_path, lr=1e-3)
    b = _model()
    history = _fit(b, epochs=2, checkpoint_dir=tmp_path, resume=False)  # other lr: no error
    assert history.num_epochs == 2
    assert load_checkpoint(tmp_path / CHECKPOINT_NAME)["config"]["lr"] == 3e-3
    assert load_checkpoint(tmp_path / PREVIOUS_CHECKPOINT_NAME)["config"]["lr"] == 3e-3
    # A fresh run never keeps the earlier run's files as its fallback.
    _fit(_model(), epochs=1, checkpoint_dir=tmp_path, resume=False, lr=1e-2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_NAME]


def test_resume_with_other_settings_is_refused(tmp_path):
    _fit(_model(), epochs=2, checkpoint_dir=tmp_path)
    with pytest.raises(
        CheckpointError, match=r"other settings \(epochs=2 there, 3 now; lr=0.003 there, 0.01 now\)"
    ):
        _fit(_model(), epochs=3, lr=0.01, checkpoint_dir=tmp_path)


def test_resume_with_another_model_is_refused(tmp_path):
    _fit(_model(), epochs=1, checkpoint_dir=tmp_path)
    with pytest.raises(
        CheckpointError, match=r"different model \(TinyDetector, this is TinyDetector; resized: "
    ) as info:
        _fit(_model(num_classes=3), epochs=1, checkpoint_dir=tmp_path)
    assert "resized: cls_head.weight [2, 32] in the file vs [3, 32] in the model" in str(info.value)


def test_default_and_explicit_settings_are_the_same_run(tmp_path):
    fit(_model(), ToyBoxes(8), epochs=1, checkpoint_dir=tmp_path, progress=False)  # AdamW defaults
    again = fit(_model(), ToyBoxes(8), epochs=1, batch_size=8, lr=1e-3, weight_decay=1e-4,
                checkpoint_dir=tmp_path, progress=False)  # fmt: skip
    assert again.num_epochs == 1


def test_checkpoint_with_missing_entries_is_a_clear_error(tmp_path):
    ckpt.save_checkpoint(
        {"format_version": ckpt.CHECKPOINT_FORMAT_VERSION, "model": {}}, tmp_path / CHECKPOINT_NAME
    )
    with pytest.raises(
        CheckpointError,
        match=r"last.pt: is missing the entries \['model_class', 'model_fingerprint'",
    ):
        _fit(_model(), epochs=1, checkpoint_dir=tmp_path)


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / CHECKPOINT_NAME).write_bytes(b"\x00" * 100)
    with pytest.raises(
        CheckpointError,
        match=r"last.pt: cannot be read: the file \(100 bytes\) is truncated or is not a torch.save "
        r"file \(it does not end with the zip directory that ends every torch.save file\), and "
        r"there is no previous checkpoint .*previous.pt to fall back on; delete it or pass "
        r"resume=False",
    ):
        _fit(_model(), epochs=1, checkpoint_dir=tmp_path)
    assert _fit(_model(), epochs=1, checkpoint_dir=tmp_path, resume=False).num_epochs == 1


def test_a_failed_checkpoint_write_keeps_the_last_good_one(tmp_path, monkeypatch):
    real_save, calls = torch.save, []

    def disk_full_on_second_save(obj, file, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            file.write(b"partial")
            raise OSError(28, "No space left on device")
        real_save(obj, file, *args, **kwargs)

    monkeypatch.setattr(ckpt.torch, "save", disk_full_on_second_save)
    with pytest.raises(OSError, match="No space left"):
        _fit(_model(), epochs=3, checkpoint_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_NAME]
    assert load_checkpoint(tmp_path / CHECKPOINT_NAME)["epoch"] == 1
    monkeypatch.setattr(ckpt.torch, "save", real_save)
    resumed, reference = _model(), _model()
    _fit(resumed, epochs=3, checkpoint_dir=tmp_path)
    _fit(reference, epochs=3)
    _assert_same_weights(resumed, reference)


def test_sgd_step_is_lr_times_the_clipped_gradient():
    data = ToyBoxes(8)
    model = _model(dropout=0.0)
    start = {k: v.clone() for k, v in model.named_parameters()}
    # The gradient of the first step, computed by hand on the whole (single) batch.
    images, targets = collate([data[i] for i in range(8)])
    probe = _model(dropout=0.0)
    sum(probe.losses(images, targets).values()).backward()
    grads = {k: p.grad for k, p in probe.named_parameters()}
    norm = torch.linalg.vector_norm(
        torch.stack([torch.linalg.vector_norm(g) for g in grads.values()])
    )
    history = fit(
        model,
        data,
        epochs=1,
        batch_size=8,
        optimizer="sgd",
        lr=0.1,
        weight_decay=0.0,
        grad_clip=0.5,
        warmup_steps=0,
        progress=False,
    )
    assert history["lr"] == [0.1]
    assert history["grad_norm"][0] == pytest.approx(norm.item(), rel=1e-5)
    assert norm > 0.5  # so the clipping is active
    for name, param in model.named_parameters():
        expected = start[name] - 0.1 * grads[name] * (0.5 / (norm + 1e-6))
        torch.testing.assert_close(param, expected, rtol=1e-4, atol=1e-6)


def test_optimizer_factory_and_dataloader_input():
    def make_optimizer(params):
        return torch.optim.SGD(params, lr=0.05, momentum=0.5)

    loader = DataLoader(ToyBoxes(12), batch_size=4, collate_fn=collate)
    history = fit(
        _model(), loader, epochs=2, optimizer=make_optimizer, warmup_steps=0, progress=False
    )
    assert history.num_steps == 6
    assert history["lr"][0] == 0.05


def test_progress_bar_shows_the_loss(capsys):
    _fit(_model(), epochs=1, progress=True)
    err = capsys.readouterr().err
    assert "epoch 1/1" in err and "loss=" in err


# --------------------------------------------------------------------------- evaluate, predict


def test_evaluate_feeds_the_metric_with_cpu_detections_and_targets(fake_metric):
    data = ToyBoxes(10)
    model = _model().train()
    stats = evaluate(model, data, batch_size=4)
    assert model.training  # mode restored
    assert [len(preds) for preds, _ in fake_metric.updates] == [4, 4, 2]
    # Recompute the stand-in metric from predict() and the dataset directly.
    hits = _top_hits(
        predict(model, torch.stack([data[i][0] for i in range(10)])),
        [data[i][1] for i in range(10)],
    )
    assert stats == {
        "map": sum(h >= 0.75 for h in hits) / 9,
        "map_50": sum(h >= 0.5 for h in hits) / 9,
    }
    preds, targets = fake_metric.updates[0]
    assert all(p["boxes"].device.type == "cpu" and not p["boxes"].requires_grad for p in preds)
    torch.testing.assert_close(targets[1]["boxes"], data[1][1]["boxes"])


def test_fit_evaluates_every_n_epochs_and_after_the_last(fake_metric):
    history = _fit(_model(), epochs=5, val_data=ToyBoxes(6, seed=1), evaluate_every=2)
    evaluated = [not math.isnan(v) for v in history["val_map_50"]]
    assert evaluated == [False, True, False, True, True]
    assert list(history.per_epoch) == ["epoch", "epoch_loss", "epoch_time", "val_map", "val_map_50"]
    assert len(fake_metric.updates) == 3
    assert "val_classes" not in history


def test_evaluate_with_the_course_metric_on_perfect_detections():
    pytest.importorskip("coursepkg.evaluation")
    stats = evaluate(PixelOracle(), ToyBoxes(16, max_objects=1), batch_size=5)
    assert stats["map"] == 1.0 and stats["map_50"] == 1.0 and stats["map_75"] == 1.0
    history = _fit(_model(), epochs=2, val_data=ToyBoxes(8, seed=1))
    assert {"val_map", "val_map_50", "val_map_75", "val_mar_100"} <= set(history.per_epoch)
    assert "val_classes" not in history and "val_map_per_class" not in history
    assert all(-1.0 <= v <= 1.0 for v in history["val_map"])


class PixelOracle(Detector):
    """Reads each class's box off the painted pixels (exact for one object per image)."""

    def __init__(self) -> None:
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(()))

    def losses(self, images, targets):
        return {"zero": self.unused * 0}

    def detect(self, images: Tensor) -> list[dict[str, Tensor]]:
        results = []
        for image in images:
            boxes, labels = [], []
            for label in range(2):
                ys, xs = torch.nonzero(image[label] > 0, as_tuple=True)
                if len(xs):
                    boxes.append(
                        torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float()
                    )
                    labels.append(label)
            results.append(
                {
                    "boxes": torch.stack(boxes) if boxes else torch.zeros(0, 4),
                    "scores": torch.ones(len(boxes)),
                    "labels": torch.tensor(labels, dtype=torch.int64),
                }
            )
        return results


def test_predict_shapes_and_modes():
    model = _model().train()
    images = torch.rand(3, 3, *IMAGE_SIZE)
    batch = predict(model, images)
    assert model.training and len(batch) == 3
    single = predict(model, images[1])
    torch.testing.assert_close(single[0]["boxes"], batch[1]["boxes"])
    listed = predict(model, [images[0], images[2]])
    torch.testing.assert_close(listed[1]["scores"], batch[2]["scores"])
    assert PixelOracle().eval().detect(torch.zeros(1, 3, 8, 8))[0]["boxes"].shape == (0, 4)
    oracle = predict(PixelOracle(), [torch.zeros(3, 8, 8), torch.ones(3, 5, 7)])  # two sizes
    torch.testing.assert_close(oracle[1]["boxes"], torch.tensor([[0.0, 0, 7, 5], [0, 0, 7, 5]]))
    with pytest.raises(
        ValueError, match=r"images must be \[B, 3, H, W\] or \[3, H, W\], got \[32, 32\]"
    ):
        predict(model, images[0, 0])
    with pytest.raises(TypeError, match="images must be floating"):
        predict(model, images.to(torch.uint8))
    with pytest.raises(TypeError, match="model must be a coursepkg.models.detector.Detector"):
        predict(nn.Linear(2, 2), images)


# --------------------------------------------------------------------------- bad input


class BadLosses(TinyDetector):
    """Returns ``make(losses, call)`` from losses() at every call."""

    def __init__(self, make) -> None:
        super().__init__()
        self.make, self.calls = make, 0

    def losses(self, images, targets):
        self.calls += 1
        return self.make(super().losses(images, targets), self.calls)


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda losses, call: {}, ValueError, r"losses\(\) returned an empty dict at step 1"),
        (
            lambda losses, call: (
                {**losses, "box": losses["box"] * math.nan} if call == 3 else losses
            ),
            FloatingPointError,
            r"non-finite loss \['box'\] at step 3: cls=[0-9.]+, box=nan",
        ),
        (
            lambda losses, call: {"cls": losses["cls"].expand(2)},
            TypeError,
            r"losses\(\)\['cls'\] must be a scalar tensor \(shape \[\]\) at step 1, got shape \[2\]",
        ),
        (
            lambda losses, call: {"cls": 0.5},
            TypeError,
            r"losses\(\)\['cls'\] must be a scalar tensor at step 1, got float",
        ),
        (
            lambda losses, call: {"cls": losses["cls"].detach()},
            ValueError,
            r"losses\(\) at step 1: no term requires grad",
        ),
        (
            lambda losses, call: {"lr": losses["cls"]},
            ValueError,
            r"term name\(s\) \['lr'\] clash with the history's own keys",
        ),
        (
            lambda losses, call: losses if call == 1 else {"cls": losses["cls"]},
            ValueError,
            r"losses\(\) at step 2 returned terms \['cls'\], earlier steps \['cls', 'box'\]",
        ),
    ],
)
def test_bad_losses_raise_with_the_step(make, error, message):
    torch.manual_seed(0)
    with pytest.raises(error, match=message):
        _fit(BadLosses(make), epochs=1)


def test_non_finite_gradient_is_an_error():
    def nan_gradient(losses, call):
        return {"cls": torch.sqrt(losses["cls"] * 0.0)}  # value 0, gradient 0.5 / sqrt(0) * 0 = nan

    torch.manual_seed(0)
    with pytest.raises(
        FloatingPointError,
        match=r"non-finite gradient norm \(nan\) at step 1; losses: \{'cls': 0.0\}",
    ):
        _fit(BadLosses(nan_gradient), epochs=1)


def test_evaluate_checks_the_detections(fake_metric):
    class Unsorted(TinyDetector):
        def detect(self, images):
            return [
                {
                    "boxes": torch.zeros(2, 4),
                    "scores": torch.tensor([0.1, 0.9]),
                    "labels": torch.zeros(2, dtype=torch.int64),
                }
            ] * len(images)

    with pytest.raises(
        ValueError, match=r"detections\[0\]\['scores'\] must be sorted in decreasing order"
    ):
        evaluate(Unsorted(), ToyBoxes(4))


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"epochs": 0}, ValueError, "epochs must be >= 1, got 0"),
        ({"epochs": 2.0}, TypeError, "epochs must be an int, got float"),
        ({"batch_size": 0}, ValueError, "batch_size must be >= 1, got 0"),
        ({"evaluate_every": 0}, ValueError, "evaluate_every must be >= 1, got 0"),
        ({"seed": -1}, ValueError, "seed must be >= 0, got -1"),
        ({"lr": 0.0}, ValueError, "lr must be > 0, got 0.0"),
        ({"lr": math.nan}, ValueError, "lr must be a finite number, got nan"),
        ({"lr": math.inf}, ValueError, "lr must be a finite number, got inf"),
        ({"lr": -0.1}, ValueError, r"lr must be > 0, got -0.1"),
        ({"lr": "0.01"}, TypeError, "lr must be a number, got str"),
        ({"epochs": -3}, ValueError, "epochs must be >= 1, got -3"),
        ({"batch_size": -2}, ValueError, "batch_size must be >= 1, got -2"),
        ({"num_workers": -1}, ValueError, "num_workers must be >= 0, got -1"),
        ({"seed": 2**32}, ValueError, r"seed must be <= 2\*\*32 - 1 = 4294967295, got 4294967296"),
        ({"amp": "yes"}, TypeError, "amp must be True or False, got 'yes'"),
        ({"resume": 1}, TypeError, "resume must be True or False, got 1"),
        ({"progress": None}, TypeError, "progress must be True or False, got None"),
        ({"checkpoint_dir": 3}, TypeError, "checkpoint_dir must be a folder path"),
        ({"device": "gpu"}, ValueError, "device must be a device such as 'cpu'"),
        ({"weight_decay": -1e-4}, ValueError, "weight_decay must be >= 0, got -0.0001"),
        ({"grad_clip": 0}, ValueError, "grad_clip must be > 0, got 0"),
        (
            {"warmup_steps": 100},
            ValueError,
            "warmup_steps must be <= the 12 steps of the run, got 100",
        ),
        (
            {"optimizer": "adam"},
            ValueError,
            r"optimizer must be 'adamw', 'sgd' or a callable make_optimizer\(params\), got 'adam'",
        ),
        (
            {"optimizer": lambda params: torch.optim.SGD(params, lr=0.1)},
            ValueError,
            "lr and weight_decay must be None when optimizer is a callable",
        ),
        (
            {"optimizer": lambda params: None, "lr": None},
            TypeError,
            r"optimizer\(params\) must return a torch.optim.Optimizer, got NoneType",
        ),
    ],
)
def test_bad_arguments(kwargs, error, message):
    model = _model()
    _forbid_training(model)  # every check happens before the first training step
    with pytest.raises(error, match=message):
        _fit(model, **kwargs)


def test_bad_model_and_data():
    with pytest.raises(
        TypeError,
        match=r"model must be a coursepkg.models.detector.Detector \(an nn.Module with losses\(\) and detect\(\)\), got Linear",
    ):
        fit(nn.Linear(2, 2), ToyBoxes(4), epochs=1)
    with pytest.raises(ValueError, match=r"train_data is empty \(0 items\)"):
        fit(_model(), ToyBoxes(0), epochs=1)
    with pytest.raises(ValueError, match=r"val_data is empty \(0 items\)"):
        fit(_model(), ToyBoxes(4), val_data=[], epochs=1)
    with pytest.raises(ValueError, match=r"train_data is empty \(0 batches\)"):
        fit(_model(), DataLoader(ToyBoxes(3), batch_size=4, drop_last=True), epochs=1)
    with pytest.raises(TypeError, match="train_data must be a map-style Dataset of .* got int"):
        fit(_model(), 5, epochs=1)
    with pytest.raises(
        ValueError,
        match="batch_size and num_workers apply to datasets; set them on your DataLoader",
    ):
        fit(_model(), DataLoader(ToyBoxes(4), collate_fn=collate), batch_size=2, epochs=1)
    with pytest.raises(TypeError, match=r"train_data\[0\]: images must be floating"):
        fit(
            _model(),
            [(torch.zeros(3, 32, 32, dtype=torch.uint8), ToyBoxes(1)[0][1])],
            epochs=1,
            progress=False,
        )
    with pytest.raises(ValueError, match=r"targets\[0\]\['boxes'\] \(xyxy\) must have x2 >= x1"):
        bad = {"boxes": torch.tensor([[5.0, 0, 1, 1]]), "labels": torch.tensor([0])}
        fit(_model(), [(torch.zeros(3, 32, 32), bad)], epochs=1, progress=False)
    with pytest.raises(TypeError, match="model must be a coursepkg.models.detector.Detector"):
        evaluate(nn.Linear(2, 2), ToyBoxes(4))


def test_bad_images_are_refused_before_any_training():
    grey = [(torch.zeros(1, 32, 32), target) for _, target in (ToyBoxes(4)[i] for i in range(4))]
    model = _model()
    _forbid_training(model)
    expected = r"must be \[B, 3, H, W\] \(each image \[3, H, W\], three colour channels\), got "
    with pytest.raises(ValueError, match=r"^train_data\[0\]: images " + expected + r"\[1, 1, 32"):
        fit(model, grey, epochs=1, progress=False)
    loader = DataLoader(grey, batch_size=2, collate_fn=collate)
    with pytest.raises(ValueError, match=r"^the first batch of train_data: images " + expected):
        fit(model, loader, epochs=1, progress=False)
    with pytest.raises(ValueError, match=r"^val_data\[0\]: images " + expected):
        fit(model, ToyBoxes(8), val_data=grey, epochs=1, progress=False)
    with pytest.raises(ValueError, match=r"^batch 1 of data: images " + expected):
        evaluate(model, grey)


def test_missing_device_is_refused_before_any_training(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    model = _model()
    _forbid_training(model)
    with pytest.raises(
        ValueError,
        match=r"device='cuda' but CUDA is not available on this machine \(torch.cuda.is_available\(\) "
        r"is False\); pass device='cpu', or device=None for the best device",
    ):
        _fit(model, device="cuda")
    with pytest.raises(ValueError, match=r"device='cuda:0' but CUDA is not available"):
        evaluate(model, ToyBoxes(4), device=torch.device("cuda:0"))


def test_checkpoint_dir_that_is_a_file_is_refused_before_any_training(tmp_path):
    file = tmp_path / "runs"
    file.write_text("notes")
    model = _model()
    _forbid_training(model)
    with pytest.raises(
        ValueError, match=r"checkpoint_dir must be a folder .* but .*runs is an existing file"
    ):
        _fit(model, checkpoint_dir=file)
    assert file.read_text() == "notes"


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"batch_size": 0}, ValueError, "batch_size must be >= 1, got 0"),
        ({"batch_size": 2.5}, TypeError, "batch_size must be an int, got float"),
        ({"num_workers": -1}, ValueError, "num_workers must be >= 0, got -1"),
        ({"progress": "no"}, TypeError, "progress must be True or False, got 'no'"),
    ],
)
def test_evaluate_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        evaluate(_model(), ToyBoxes(4), **kwargs)


def _global_states():
    return random.getstate(), np.random.get_state(), torch.get_rng_state()


def _assert_same_states(a, b):
    assert a[0] == b[0], "python"
    assert all(np.array_equal(x, y) for x, y in zip(a[1], b[1], strict=True)), "numpy"
    assert torch.equal(a[2], b[2]), "torch"


@pytest.mark.parametrize("interrupted", [False, True])
def test_fit_leaves_the_callers_random_generators_alone(tmp_path, interrupted):
    random.seed(7)
    np.random.seed(7)
    torch.manual_seed(7)
    model = _model()  # draws from torch's generator: capture the states after it
    before = _global_states()
    if interrupted:
        StopAt(model, call=5)
        with pytest.raises(KeyboardInterrupt):
            _fit(model, epochs=2, checkpoint_dir=tmp_path)
    else:
        _fit(model, epochs=2, checkpoint_dir=tmp_path)
    _assert_same_states(_global_states(), before)
    # ... and the result does not depend on them either.
    torch.manual_seed(99)
    random.seed(99)
    np.random.seed(99)
    a, b = _model(), _model()
    _fit(a, epochs=2)
    torch.manual_seed(5)
    _fit(b, epochs=2)
    _assert_same_weights(a, b)


def _interrupt_in_epoch_3(tmp_path, data):
    """A run of 4 epochs cut off in epoch 3: last.pt holds epoch 2, previous.pt epoch 1."""
    interrupted = _model()
    StopAt(interrupted, call=8)
    with pytest.raises(KeyboardInterrupt):
        _fit(interrupted, data, epochs=4, checkpoint_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_NAME, PREVIOUS_CHECKPOINT_NAME]
    assert load_checkpoint(tmp_path / PREVIOUS_CHECKPOINT_NAME)["epoch"] == 1


def test_corrupt_last_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys):
    data = ToyBoxes(20)
    reference = _model()
    reference_history = _fit(reference, data, epochs=4)
    _interrupt_in_epoch_3(tmp_path, data)
    last, previous = tmp_path / CHECKPOINT_NAME, tmp_path / PREVIOUS_CHECKPOINT_NAME
    last.write_bytes(last.read_bytes()[:1000])  # truncated, as by a dying disk

    resumed = _model(seed=123)
    with pytest.warns(CheckpointWarning) as record:
        history = _fit(resumed, data, epochs=4, checkpoint_dir=tmp_path, progress=True)
    message = str(record[0].message)
    assert f"checkpoint {last} cannot be read: the file (1,000 bytes) is truncated" in message
    assert f"using the previous checkpoint {previous} (epoch 1) instead" in message
    assert f"resuming from {previous} after epoch 1/4" in capsys.readouterr().out
    _assert_same_weights(resumed, reference)
    assert _without_times(history) == _without_times(reference_history)
    # The refused file was overwritten, not kept as the fallback.
    assert load_checkpoint(previous)["epoch"] == 3 and load_checkpoint(last)["complete"]


def test_refused_last_checkpoint_does_not_become_the_fallback(tmp_path):
    data = ToyBoxes(20)
    _interrupt_in_epoch_3(tmp_path, data)
    last, previous = tmp_path / CHECKPOINT_NAME, tmp_path / PREVIOUS_CHECKPOINT_NAME
    last.write_bytes(b"")
    model = _model()
    StopAt(model, call=5)  # epoch 2 (from the fallback) is saved, epoch 3 dies
    with pytest.warns(CheckpointWarning), pytest.raises(KeyboardInterrupt):
        _fit(model, data, epochs=4, checkpoint_dir=tmp_path)
    assert load_checkpoint(last)["epoch"] == 2
    assert load_checkpoint(previous)["epoch"] == 1  # the good one, not the empty file


def test_both_checkpoints_corrupt_is_a_clear_error(tmp_path):
    _interrupt_in_epoch_3(tmp_path, ToyBoxes(20))
    last, previous = tmp_path / CHECKPOINT_NAME, tmp_path / PREVIOUS_CHECKPOINT_NAME
    last.write_bytes(last.read_bytes()[:500])
    previous.write_bytes(b"")
    with pytest.raises(CheckpointError) as info:
        _fit(_model(), ToyBoxes(20), epochs=4, checkpoint_dir=tmp_path)
    message = str(info.value)
    assert f"checkpoint {last}: cannot be read: the file (500 bytes) is truncated" in message
    assert f"the previous checkpoint {previous} cannot be read: the file is empty" in message
    assert message.endswith("pass resume=False to start from scratch")
    assert _fit(_model(), ToyBoxes(20), epochs=1, checkpoint_dir=tmp_path, resume=False)


def test_fit_removes_orphaned_temporary_files(tmp_path):
    orphan = tmp_path / f".{CHECKPOINT_NAME}.k3j9x_2q.tmp"
    orphan.write_bytes(b"half a checkpoint from a killed save")
    keep = tmp_path / "notes.tmp"
    keep.write_text("mine")
    model = _model()
    StopAt(model, call=1)
    with pytest.raises(KeyboardInterrupt):  # removed before the first step, not at the first save
        _fit(model, epochs=1, checkpoint_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.tmp"]


def test_history_pads_missing_values_with_nan():
    history = History()
    from coursepkg.engine.training import _append_row

    _append_row(history.per_epoch, {"epoch": 1, "loss": 0.5})
    _append_row(history.per_epoch, {"epoch": 2, "loss": 0.4, "val_map": 0.1})
    _append_row(history.per_epoch, {"epoch": 3, "loss": 0.3})
    assert history["epoch"] == [1, 2, 3]
    assert [math.isnan(v) for v in history["val_map"]] == [True, False, True]
    assert len(history) == 3 and history.num_epochs == 3 and history.num_steps == 0
