"""Grading tests of ``iou_aware_score(cls_prob, iou_prob, alpha)`` (exercise 11_iou_aware_retinanet).

Compared with :func:`coursepkg.models.iou_aware_retinanet.iou_aware_score`: ``p^alpha *
IoU^(1 - alpha)`` for ``[N, K]`` class probabilities and ``[N]`` IoUs, one per anchor, shared by
its K classes. Cases: the worked example, ``alpha`` 0, 1 and PP-YOLO's 0.6, zeros (``0^0 = 1``),
N = K (where broadcasting along the wrong axis still runs), float64, no anchors, and seeded
random probabilities.
"""

from __future__ import annotations

import pytest
import torch

from coursepkg.grading.expect import Case, call, expect_tensor, generator
from coursepkg.models.iou_aware_retinanet import iou_aware_score

SWAPPED = "alpha is the exponent of the class probability p, and 1 - alpha that of the IoU"
BROADCAST = (
    "the IoU of anchor i multiplies every class of ROW i: iou_prob[:, None], not iou_prob[None, :]"
)
PRODUCT = "the score is a product of powers, p**alpha * iou**(1 - alpha), not a weighted sum"


def _case(title, cls_prob, iou_prob, alpha, dtype=torch.float32, hint="") -> Case:
    cls_prob = torch.as_tensor(cls_prob, dtype=torch.float64).to(dtype)
    iou_prob = torch.as_tensor(iou_prob, dtype=torch.float64).to(dtype)
    return Case(title, {"cls_prob": cls_prob, "iou_prob": iou_prob, "alpha": alpha}, hint)


def _random(n: int, k: int, alpha: float, seed: int, dtype=torch.float32) -> Case:
    g = generator(seed)
    p = torch.rand(n, k, generator=g, dtype=torch.float64)
    u = torch.rand(n, generator=g, dtype=torch.float64)
    return _case(f"random, N={n}, K={k}, alpha={alpha} (seed {seed})", p, u, alpha, dtype)


CASES = [
    _case("the worked example, alpha = 0.5", [[0.81, 0.04], [0.5, 0.25]], [0.25, 1.0], 0.5),
    _case("alpha = 1: the class probability alone", [[0.9, 0.2], [0.6, 0.5]], [0.3, 0.9], 1.0,
          hint=SWAPPED),
    _case("alpha = 0: the IoU alone, for every class", [[0.9, 0.2], [0.6, 0.5]], [0.3, 0.9], 0.0,
          hint=SWAPPED),
    _case("PP-YOLO's 0.4 on the IoU is alpha = 0.6", [[0.9, 0.2, 0.7]], [0.4], 0.6, hint=SWAPPED),
    _case("zeros: 0^0 = 1, as torch.pow", [[0.0, 0.5], [0.3, 0.0]], [0.0, 0.0], 1.0),
    _case("N = K = 3, distinct IoUs", [[0.9, 0.1, 0.5], [0.2, 0.8, 0.4], [0.6, 0.3, 0.7]],
          [0.1, 0.5, 0.9], 0.5, hint=BROADCAST),
    _case("float64", [[0.123, 0.456], [0.789, 0.012]], [0.345, 0.678], 0.3, torch.float64),
    _case("no anchors (N = 0)", torch.zeros(0, 4), torch.zeros(0), 0.5),
    _random(10, 5, 0.5, seed=1101),
    _random(50, 50, 0.25, seed=1102),
    _random(300, 3, 0.75, seed=1103, dtype=torch.float64),
]


def _mistakes(p, u, alpha):
    yield SWAPPED, lambda: p ** (1 - alpha) * u[:, None] ** alpha
    if p.shape[0] == p.shape[1]:
        yield BROADCAST, lambda: p**alpha * u[None, :] ** (1 - alpha)
    yield PRODUCT, lambda: alpha * p + (1 - alpha) * u[:, None]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_iou_aware_score(student, case: Case) -> None:
    got = call(student, case)
    p, u, alpha = case.inputs()
    expect_tensor(got, iou_aware_score(p, u, alpha), case, diagnoses=_mistakes(p, u, alpha))
