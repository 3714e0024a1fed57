"""The detector contract, proved on a tiny model; also the toy data and model the engine tests use.

``ToyBoxes`` draws coloured rectangles on black 32x32 images (class c is painted into channel c);
``TinyDetector`` is a one-box-per-image detector: a small CNN that predicts the class and the box
of the largest object. Both are tiny so the training tests run in seconds on one CPU core.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from coursepkg.models.detector import (
    Detector,
    check_detections,
    check_images,
    check_losses,
    check_targets,
)

IMAGE_SIZE = (32, 32)


class ToyBoxes(Dataset):
    """``n`` images [3, 32, 32] with 1..max_objects rectangles each (every 8th image is empty).

    Item ``i`` is drawn from its own generator seeded by ``(seed, i)``, so the data does not depend
    on the order or the number of workers that read it.
    """

    def __init__(
        self, n: int, *, seed: int = 0, num_classes: int = 2, max_objects: int = 2
    ) -> None:
        self.n, self.seed, self.num_classes, self.max_objects = n, seed, num_classes, max_objects

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        if not 0 <= index < self.n:
            raise IndexError(index)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        height, width = IMAGE_SIZE

        def randint(low: int, high: int) -> int:
            return int(torch.randint(low, high, (1,), generator=generator))

        count = 0 if index % 8 == 7 else randint(1, self.max_objects + 1)
        image = torch.zeros(3, height, width)
        boxes, labels = [], []
        for _ in range(count):
            box_w, box_h = randint(4, width // 2 + 1), randint(4, height // 2 + 1)
            x1, y1 = randint(0, width - box_w + 1), randint(0, height - box_h + 1)
            label = randint(0, self.num_classes)
            image[label, y1 : y1 + box_h, x1 : x1 + box_w] = 1.0
            boxes.append([x1, y1, x1 + box_w, y1 + box_h])
            labels.append(label)
        target = {
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.int64),
        }
        return image, target


def collate(batch):
    """What coursepkg.data.collate_detection does: stack the images, list the targets."""
    images, targets = zip(*batch, strict=True)
    return torch.stack(images), list(targets)


class TinyDetector(Detector):
    """One detection per image: the class and box of the largest object (cross-entropy + L1)."""

    def __init__(self, num_classes: int = 2, dropout: float = 0.1) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1),  # [B, 8, 16, 16]
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1),  # [B, 16, 8, 8]
            nn.ReLU(),
            nn.Flatten(),  # [B, 1024]
            nn.Linear(16 * 8 * 8, 32),
            nn.ReLU(),
            nn.Dropout(dropout),
        )
        self.cls_head = nn.Linear(32, num_classes)
        self.box_head = nn.Linear(32, 4)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Class logits [B, K] and boxes [B, 4] xyxy in pixels."""
        features = self.features(images)
        height, width = images.shape[-2:]
        cx, cy, w, h = self.box_head(features).sigmoid().unbind(1)  # relative centre and size
        scale = images.new_tensor([width, height, width, height])
        boxes = torch.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), dim=1) * scale
        return self.cls_head(features), boxes

    def losses(self, images: Tensor, targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        logits, boxes = self(images)
        has_object = torch.tensor([len(t["boxes"]) > 0 for t in targets], device=images.device)
        if not has_object.any():
            zero = (logits.sum() + boxes.sum()) * 0.0  # keeps the graph: same terms every step
            return {"cls": zero, "box": zero}
        largest = [t["boxes"][_areas(t["boxes"]).argmax()] for t in targets if len(t["boxes"])]
        labels = [t["labels"][_areas(t["boxes"]).argmax()] for t in targets if len(t["boxes"])]
        scale = images.shape[-1]
        return {
            "cls": F.cross_entropy(logits[has_object], torch.stack(labels)),
            "box": F.l1_loss(boxes[has_object] / scale, torch.stack(largest) / scale),
        }

    def detect(self, images: Tensor) -> list[dict[str, Tensor]]:
        logits, boxes = self(images)
        scores, labels = logits.softmax(dim=1).max(dim=1)
        # x1 <= x2 holds because w >= 0; one detection per image is trivially sorted.
        return [
            {"boxes": boxes[i : i + 1], "scores": scores[i : i + 1], "labels": labels[i : i + 1]}
            for i in range(images.shape[0])
        ]


def _areas(boxes: Tensor) -> Tensor:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def _detections(*counts: int, generator: torch.Generator | None = None) -> list[dict[str, Tensor]]:
    """Valid random detections, one dict per count."""
    generator = generator or torch.Generator().manual_seed(0)
    result = []
    for count in counts:
        xy = torch.rand(count, 2, generator=generator) * 20
        wh = torch.rand(count, 2, generator=generator) * 10
        scores = torch.rand(count, generator=generator).sort(descending=True).values
        labels = torch.randint(0, 3, (count,), generator=generator)
        result.append(
            {"boxes": torch.cat((xy, xy + wh), dim=1), "scores": scores, "labels": labels}
        )
    return result


# --------------------------------------------------------------------------- the ABC


def test_detector_is_abstract():
    class NoDetect(Detector):
        def losses(self, images, targets):
            return {}

    with pytest.raises(TypeError, match="abstract"):
        NoDetect()
    with pytest.raises(TypeError, match="abstract"):
        Detector()
    assert isinstance(TinyDetector(), nn.Module)


# --------------------------------------------------------------------------- the tiny model follows it


def test_toy_data_is_reproducible_and_valid():
    data = ToyBoxes(16, seed=3)
    image, target = data[5]
    again_image, again_target = ToyBoxes(16, seed=3)[5]
    torch.testing.assert_close(image, again_image, rtol=0, atol=0)
    torch.testing.assert_close(target["boxes"], again_target["boxes"], rtol=0, atol=0)
    images, targets = collate([data[i] for i in range(16)])
    assert images.shape == (16, 3, 32, 32)
    check_targets(targets, 16, num_classes=2)
    assert len(targets[7]["boxes"]) == 0  # every 8th image is empty
    # Each box covers exactly the painted pixels of its class channel (continuous coordinates).
    x1, y1, x2, y2 = (int(v) for v in target["boxes"][0])
    assert image[int(target["labels"][0]), y1:y2, x1:x2].min() == 1.0


def test_tiny_detector_losses_follow_the_contract():
    torch.manual_seed(0)
    model = TinyDetector()
    images, targets = collate([ToyBoxes(6)[i] for i in range(6)])
    losses = model.losses(images, targets)
    values = check_losses(losses, step=1)
    assert list(values) == ["cls", "box"]
    for key, value in losses.items():
        assert value.shape == () and value.requires_grad
        assert values[key] == value.item()
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_tiny_detector_losses_on_a_batch_without_objects():
    model = TinyDetector()
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    losses = model.losses(torch.rand(2, 3, 32, 32), [empty, empty])
    assert check_losses(losses) == {"cls": 0.0, "box": 0.0}
    assert all(value.requires_grad for value in losses.values())


def test_tiny_detector_detections_follow_the_contract():
    model = TinyDetector().eval()
    images = torch.rand(5, 3, 32, 32)
    with torch.no_grad():
        detections = model.detect(images)
    check_detections(detections, 5, num_classes=2)
    for det in detections:
        assert det["boxes"].shape == (1, 4) and det["labels"].dtype == torch.int64
        assert 0.5 <= det["scores"].item() <= 1.0  # the larger of two softmax probabilities
        assert (det["boxes"][:, :2] >= -16).all() and (det["boxes"][:, 2:] <= 48).all()


# --------------------------------------------------------------------------- check_detections


def test_check_detections_accepts_valid_empty_and_tied_output():
    check_detections(_detections(4, 0, 7), 3, num_classes=3)
    check_detections([], 0)
    tied = _detections(3)[0]
    tied["scores"] = torch.tensor([0.9, 0.5, 0.5])  # ties are allowed, sorted means non-increasing
    tied["boxes"][1] = torch.tensor([2.0, 2.0, 2.0, 2.0])  # zero-area boxes are legal
    check_detections([tied], 1)


def _break(key: str, value):
    def mutate(dets):
        dets[1][key] = value
        return dets

    return mutate


@pytest.mark.parametrize(
    ("mutate", "error", "message"),
    [
        (lambda d: tuple(d), None, None),  # a tuple is a fine sequence
        (
            lambda d: {"boxes": d[0]["boxes"]},
            TypeError,
            r"detections must be a list with one dict per image, got dict",
        ),
        (
            lambda d: d[:1],
            ValueError,
            r"detections must have one dict per image: expected 2, got 1",
        ),
        (lambda d: [d[0], "x"], TypeError, r"detections\[1\] must be a dict, got str"),
        (
            lambda d: [d[0], {"boxes": d[1]["boxes"]}],
            ValueError,
            r"detections\[1\] is missing key\(s\) \['scores', 'labels'\]",
        ),
        (
            _break("boxes", torch.zeros(3, 5)),
            ValueError,
            r"detections\[1\]\['boxes'\] must be \[N, 4\], got \[3, 5\]",
        ),
        (
            _break("boxes", torch.zeros(3, 4, dtype=torch.int64)),
            TypeError,
            r"detections\[1\]\['boxes'\] must be a floating-point tensor, got torch.int64",
        ),
        (
            _break("boxes", torch.tensor([[0, 0, 1, 1], [0, 0, math.nan, 1], [0, 0, 1, 1.0]])),
            ValueError,
            r"detections\[1\]\['boxes'\] must be finite, row 1 is \[0.0, 0.0, nan, 1.0\]",
        ),
        (
            _break("boxes", torch.tensor([[0, 0, 1, 1], [2, 0, 1, 1], [0, 0, 1, 1.0]])),
            ValueError,
            r"\['boxes'\] \(xyxy\) must have x2 >= x1 and y2 >= y1, row 1 is \[2.0, 0.0, 1.0, 1.0\]",
        ),
        (
            _break("boxes", [[0, 0, 1, 1]] * 3),
            TypeError,
            r"\['boxes'\] must be a torch.Tensor, got list",
        ),
        (
            _break("scores", torch.tensor([0.9, 0.8])),
            ValueError,
            r"detections\[1\]\['scores'\] must be \[3\], got \[2\]",
        ),
        (
            _break("scores", torch.tensor([0.1, 0.5, 0.2])),
            ValueError,
            r"\['scores'\] must be sorted in decreasing order",
        ),
        (
            _break("scores", torch.tensor([0.9, math.inf, 0.2])),
            ValueError,
            r"\['scores'\] must be finite \(no NaN or inf\), element 1 is inf",
        ),
        (
            _break("scores", torch.tensor([3, 2, 1])),
            TypeError,
            r"\['scores'\] must be a floating-point tensor, got torch.int64",
        ),
        (
            _break("labels", torch.tensor([0, 1, 2], dtype=torch.int32)),
            TypeError,
            r"\['labels'\] must be an int64 tensor, got torch.int32",
        ),
        (
            _break("labels", torch.tensor([0, -1, 2])),
            ValueError,
            r"\['labels'\] must be in 0..2 \(dataset labels 0..K-1\), label 1 is -1",
        ),
        (
            _break("labels", torch.tensor([0, 3, 2])),
            ValueError,
            r"\['labels'\] must be in 0..2 \(dataset labels 0..K-1\), label 1 is 3",
        ),
        (
            _break("labels", torch.tensor([0, 1])),
            ValueError,
            r"\['labels'\] must be \[3\] \(one label per box\), got \[2\]",
        ),
    ],
)
def test_check_detections_errors(mutate, error, message):
    detections = mutate(_detections(2, 3))
    if error is None:
        check_detections(detections, 2, num_classes=3)
        return
    with pytest.raises(error, match=message):
        check_detections(detections, 2, num_classes=3)


def test_check_detections_is_exactly_at_the_label_threshold():
    dets = _detections(3)
    dets[0]["labels"] = torch.tensor([0, 1, 2])
    check_detections(dets, 1, num_classes=3)  # 2 < 3 passes
    with pytest.raises(
        ValueError, match=r"must be in 0..1 \(dataset labels 0..K-1\), label 2 is 2"
    ):
        check_detections(dets, 1, num_classes=2)


# --------------------------------------------------------------------------- check_targets


def test_check_targets():
    good = [
        {"boxes": torch.tensor([[1.0, 2.0, 3.0, 4.0]]), "labels": torch.tensor([1]), "image_id": 7},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
    ]
    check_targets(good, 2, num_classes=2)
    with pytest.raises(
        ValueError, match=r"targets must have one dict per image: expected 3, got 2"
    ):
        check_targets(good, 3)
    with pytest.raises(ValueError, match=r"targets\[0\] is missing key\(s\) \['labels'\]"):
        check_targets([{"boxes": good[0]["boxes"]}, good[1]], 2)
    with pytest.raises(
        TypeError,
        match=r"targets\[0\]\['boxes'\] must be a floating-point tensor, got torch.int64",
    ):
        check_targets([{**good[0], "boxes": torch.tensor([[1, 2, 3, 4]])}, good[1]], 2)
    with pytest.raises(
        ValueError,
        match=r"targets\[0\]\['labels'\] must be in 0..0 \(dataset labels 0..K-1\), label 0 is 1",
    ):
        check_targets(good, 2, num_classes=1)
    with pytest.raises(
        ValueError, match=r"targets\[1\]\['labels'\] must be \[0\] \(one label per box\), got \[1\]"
    ):
        check_targets([good[0], {**good[1], "labels": torch.tensor([0])}], 2)


# --------------------------------------------------------------------------- check_losses


def test_check_losses_returns_exact_floats_in_order():
    losses = {
        "b": torch.tensor(0.25, requires_grad=True),
        "a": torch.tensor(1.5, dtype=torch.float64),
    }
    assert list(check_losses(losses).items()) == [("b", 0.25), ("a", 1.5)]


@pytest.mark.parametrize(
    ("losses", "error", "message"),
    [
        (
            {},
            ValueError,
            r"losses\(\) returned an empty dict at step 7; it must return at least one loss term",
        ),
        (
            [torch.tensor(1.0)],
            TypeError,
            r"losses\(\) must return a dict of scalar tensors at step 7, got list",
        ),
        (
            {"cls": 1.0},
            TypeError,
            r"losses\(\)\['cls'\] must be a scalar tensor at step 7, got float",
        ),
        (
            {"cls": torch.ones(3)},
            TypeError,
            r"losses\(\)\['cls'\] must be a scalar tensor \(shape \[\]\) at step 7, got shape \[3\]",
        ),
        (
            {"cls": torch.tensor(1)},
            TypeError,
            r"losses\(\)\['cls'\] must be a floating tensor at step 7, got torch.int64",
        ),
        ({1: torch.tensor(1.0)}, TypeError, r"losses\(\) keys must be strings at step 7, got 1"),
        (
            {"cls": torch.tensor(0.5), "box": torch.tensor(math.nan)},
            FloatingPointError,
            r"non-finite loss \['box'\] at step 7: cls=0.5, box=nan",
        ),
        (
            {"box": torch.tensor(-math.inf)},
            FloatingPointError,
            r"non-finite loss \['box'\] at step 7: box=-inf",
        ),
    ],
)
def test_check_losses_errors(losses, error, message):
    with pytest.raises(error, match=message):
        check_losses(losses, step=7)


def test_check_losses_without_step():
    with pytest.raises(ValueError, match=r"^losses\(\) returned an empty dict; it must"):
        check_losses({})


def test_check_images_accepts_float_batches_and_names_the_problem():
    check_images(torch.zeros(2, 3, 8, 8))
    check_images(torch.zeros(0, 3, 8, 8, dtype=torch.float16))
    with pytest.raises(TypeError, match="images must be a torch.Tensor, got list"):
        check_images([torch.zeros(3, 8, 8)])
    with pytest.raises(ValueError, match=r"images must be \[B, 3, H, W\], got \[3, 8, 8\]"):
        check_images(torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match=r"got \[1, 1, 8, 8\]"):
        check_images(torch.zeros(1, 1, 8, 8))
    with pytest.raises(TypeError, match="images must be a floating tensor, got torch.uint8"):
        check_images(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
