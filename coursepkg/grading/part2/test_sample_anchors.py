"""Grading tests of ``sample_anchors(labels, batch_size_per_image, positive_fraction, generator)``
(exercise 07_faster_rcnn).

The sample is random, so the tests check what must hold for every draw, against the counts of
:func:`coursepkg.models.assignment.sample_balanced` (the same as torchvision's
``BalancedPositiveNegativeSampler``): an int64 tensor of the input's shape, exactly
``min(#pos, int(batch_size_per_image * positive_fraction))`` anchors kept positive and
``min(#neg, batch_size_per_image - kept positives)`` kept negative, each kept anchor with its own label,
every other anchor -1. Then that the draw comes from the generator (the same seed gives the same
sample) and is random (not the first anchors; other seeds give other samples). Cases: the notes'
setting, few and many positives, no positives, all ignored, odd batch sizes, other fractions, no
anchors, seeded random labels of several sizes.
"""

from __future__ import annotations

import pytest
import torch

from coursepkg.grading.expect import Case, Failure, call, expect_tensor, generator
from coursepkg.models.assignment import sample_balanced

PRODUCT = (
    "the negatives fill what the positives leave: batch_size_per_image - (positives kept), not the notes' "
    "n_sample * np.sum(label == 1)"
)
CAP = "keep at most int(batch_size_per_image * positive_fraction) positives"
FILL = (
    "when there are too few positives, negatives fill the rest of the batch: "
    "batch_size_per_image - (positives kept) negatives, not batch_size_per_image - int(batch_size_per_image * positive_fraction)"
)
SUBSET = "keep a random subset of each kind and set every other anchor to -1; never change a label"
GENERATOR = (
    "draw with the given generator, e.g. torch.randperm(n, generator=generator): the same seed "
    "must give the same sample"
)
RANDOM = "choose the kept anchors at random (torch.randperm), not the first ones"


class SeededGenerator(torch.Generator):
    """A CPU ``torch.Generator`` that remembers its seed: each test call gets a fresh copy."""

    def __new__(cls, seed: int):
        return super().__new__(cls, "cpu")

    def __init__(self, seed: int) -> None:
        self.manual_seed(seed)
        self.seed_value = seed

    def __deepcopy__(self, memo) -> SeededGenerator:
        return SeededGenerator(self.seed_value)

    def __eq__(self, other) -> bool:
        return isinstance(other, SeededGenerator) and other.seed_value == self.seed_value

    __hash__ = object.__hash__

    def __repr__(self) -> str:
        return f"torch.Generator().manual_seed({self.seed_value})"


def _labels(num_pos: int, num_neg: int, num_ignored: int, seed: int) -> torch.Tensor:
    labels = torch.tensor([1] * num_pos + [0] * num_neg + [-1] * num_ignored, dtype=torch.int64)
    return labels[torch.randperm(len(labels), generator=generator(seed))]


def _case(title, labels, batch_size_per_image=256, fraction=0.5, seed=0, hint="") -> Case:
    return Case(
        title,
        {
            "labels": labels,
            "batch_size_per_image": batch_size_per_image,
            "positive_fraction": fraction,
            "generator": SeededGenerator(seed),
        },
        hint,
    )


def _random(size: int, seed: int, batch_size_per_image=256, fraction=0.5) -> Case:
    g = generator(seed)
    labels = torch.randint(-1, 2, (size,), generator=g)
    labels[torch.rand(size, generator=g) < float(torch.rand(1, generator=g))] = 0  # vary the mix
    return _case(
        f"random labels, A={size}, {batch_size_per_image} samples, fraction {fraction} (seed {seed})",
        labels,
        batch_size_per_image,
        fraction,
        seed,
    )


CASES = [
    _case(
        "the notes' setting: 20 positives, 1,500 negatives, 480 ignored",
        _labels(20, 1500, 480, 1),
        hint=PRODUCT,
    ),
    _case("many positives: 300 positives, 2,000 negatives", _labels(300, 2000, 100, 2), hint=CAP),
    _case("few negatives: 500 positives, 40 negatives", _labels(500, 40, 10, 3), hint=CAP),
    _case("no positives: the whole batch negative", _labels(0, 900, 50, 4), hint=FILL),
    _case("exactly 128 positives and 128 negatives", _labels(128, 128, 64, 5)),
    _case("every anchor ignored", _labels(0, 0, 30, 6), hint=SUBSET),
    _case("fewer anchors than the batch: all kept", _labels(7, 20, 3, 7)),
    _case("an odd batch: 255 samples, half of it is 127.5", _labels(400, 400, 0, 8), 255, hint=CAP),
    _case("positive_fraction 0.25 of 64", _labels(40, 200, 10, 9), 64, 0.25, hint=CAP),
    _case("batch_size_per_image 0: nothing kept", _labels(5, 5, 5, 10), 0),
    _case(
        "no anchors (A = 0)", torch.zeros(0, dtype=torch.int64), hint="return an empty int64 tensor"
    ),
    _random(10, seed=501),
    _random(300, seed=502, batch_size_per_image=64),
    _random(2000, seed=503),
    _random(20000, seed=504, batch_size_per_image=512, fraction=0.3),
]


def _expected_counts(labels, batch_size_per_image, fraction) -> tuple[int, int]:
    sample = sample_balanced(labels, batch_size_per_image, fraction, generator(0))
    return sample.pos_idx.numel(), sample.neg_idx.numel()


def _count_hint(labels, batch_size_per_image, fraction, pos: int, neg: int) -> str:
    n_pos, n_neg = int((labels == 1).sum()), int((labels == 0).sum())
    kept_pos = min(n_pos, int(batch_size_per_image * fraction))
    if neg == min(n_neg, batch_size_per_image * n_pos) and neg != min(n_neg, batch_size_per_image - kept_pos):
        return PRODUCT
    if pos == min(n_pos, batch_size_per_image) and pos != kept_pos:
        return CAP
    if neg == min(n_neg, batch_size_per_image - int(batch_size_per_image * fraction)):
        return FILL
    return ""


def _check_sample(got, case: Case) -> torch.Tensor:
    labels, batch_size_per_image, fraction, _ = case.inputs()
    if not isinstance(got, torch.Tensor) or got.shape != labels.shape or got.dtype != torch.int64:
        expect_tensor(got, labels, case)  # explains the type, shape or dtype
    kept_pos, kept_neg = _expected_counts(labels, batch_size_per_image, fraction)
    changed = ((got == 1) & (labels != 1)) | ((got == 0) & (labels != 0))
    odd = ~((got == 1) | (got == 0) | (got == -1))
    if bool(changed.any() | odd.any()):
        i = int(torch.nonzero(changed | odd)[0])
        raise Failure(
            f"anchor {i} has label {int(labels[i])} in the input but {int(got[i])} in your result",
            case=case,
            hint=SUBSET,
        )
    pos, neg = int((got == 1).sum()), int((got == 0).sum())
    if (pos, neg) != (kept_pos, kept_neg):
        raise Failure(
            f"kept {pos} positives and {neg} negatives, expected {kept_pos} and {kept_neg}",
            case=case,
            expected=f"{kept_pos} positives, {kept_neg} negatives (of {int((labels == 1).sum())} "
            f"and {int((labels == 0).sum())})",
            got=f"{pos} positives, {neg} negatives",
            hint=_count_hint(labels, batch_size_per_image, fraction, pos, neg) or case.hint,
        )
    return got


@pytest.mark.parametrize("case", CASES, ids=str)
def test_sample_anchors(student, case: Case) -> None:
    _check_sample(call(student, case), case)


def _big(seed: int) -> Case:
    return _case(
        f"1,000 positives and 5,000 negatives, generator seeded with {seed} (seed {seed})",
        _labels(1000, 5000, 0, 11),
        seed=seed,
    )


@pytest.mark.parametrize("seed", [601, 602])
def test_sample_anchors_uses_the_generator(student, seed: int) -> None:
    case = _big(seed)
    first = _check_sample(call(student, case), case)
    second = _check_sample(call(student, case), case)
    if not torch.equal(first, second):
        raise Failure(
            "two calls with generators seeded alike gave different samples",
            case=case,
            hint=GENERATOR,
        )


def test_sample_anchors_is_random(student) -> None:
    samples = []
    for seed in (611, 612, 613):
        case = _big(seed)
        samples.append(_check_sample(call(student, case), case))
        labels = case.args["labels"]
        for kind in (1, 0):
            members = torch.nonzero(labels == kind).flatten()
            kept = torch.nonzero(samples[-1] == kind).flatten()
            if torch.equal(kept, members[: kept.numel()]) or torch.equal(
                kept, members[members.numel() - kept.numel() :]
            ):
                raise Failure(
                    f"the kept {'positives' if kind else 'negatives'} are the first (or last) "
                    "ones of the input",
                    case=case,
                    hint=RANDOM,
                )
    if torch.equal(samples[0], samples[1]) and torch.equal(samples[1], samples[2]):
        raise Failure(
            "generators with the seeds 611, 612 and 613 all gave the same sample",
            case=_big(613),
            hint=GENERATOR,
        )
