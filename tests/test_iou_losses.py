"""Tests of coursepkg.ops.iou_losses: the IoU-loss family against torchvision, the RIoU stand-in.

* GIoU, DIoU and CIoU losses equal ``torchvision.ops`` (values and the gradients with respect to
  both box sets, float64, ``atol=1e-12``) on seeded random, disjoint, nested, identical,
  touching and zero-width boxes; the pairwise variants equal ``torchvision.ops``'s with
  ``eps=0`` to the same tolerance, and with the default ``eps`` to ``2 eps`` (the ``eps`` in the
  union is ours).
* ``1 - IoU`` and ``-ln IoU`` equal the same expressions of ``torchvision.ops.box_iou``.
* Every loss passes ``torch.autograd.gradcheck``; losses and gradients stay finite on degenerate
  inputs (zero-area boxes, points, disjoint boxes).
* The rectified stand-in has the properties stated in /work/shared/papers.md §1.3.
* Bad inputs raise errors naming the argument.
"""

from __future__ import annotations

import math

import pytest
import torch
import torchvision.ops as tv

from coursepkg.ops.iou_losses import (
    RIOU_BETA,
    ciou_loss,
    complete_box_iou,
    diou_loss,
    distance_box_iou,
    generalized_box_iou,
    giou_loss,
    iou_loss,
    log_iou_loss,
    matched_complete_box_iou,
    matched_distance_box_iou,
    matched_generalized_box_iou,
    rectified_gradient_of_iou,
    rectified_iou_loss,
    rectified_loss_of_iou,
)

F64 = torch.float64
TIGHT = {"rtol": 0.0, "atol": 1e-12}


def _random(n: int, seed: int, size: float = 100.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g, dtype=F64) * size
    wh = torch.rand(n, 2, generator=g, dtype=F64) * size / 2 + 1.0
    return torch.cat([xy, xy + wh], dim=1)


def _pairs(kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Matched box sets of one kind, float64; every pair is of that kind."""
    a = _random(40, seed=1)
    if kind == "random":
        return a, _random(40, seed=2)
    if kind == "overlapping":  # every pair overlaps: b is a jittered by less than its size
        g = torch.Generator().manual_seed(3)
        wh = (a[:, 2:] - a[:, :2]).repeat(1, 2)
        return a, a + (torch.rand(40, 4, generator=g, dtype=F64) - 0.5) * 0.4 * wh
    if kind == "disjoint":  # b lies right of a, with a gap, and at another height
        g = torch.Generator().manual_seed(4)
        gap = torch.rand(40, generator=g, dtype=F64) * 30 + 1
        b = _random(40, seed=5, size=60.0)
        shift = (a[:, 2] + gap - b[:, 0])[:, None] * torch.tensor([1.0, 0, 1.0, 0], dtype=F64)
        return a, b + shift
    if kind == "nested":  # b strictly inside a
        g = torch.Generator().manual_seed(6)
        wh = (a[:, 2:] - a[:, :2]).repeat(1, 2)
        frac = torch.rand(40, 4, generator=g, dtype=F64) * 0.4 + 0.05
        return a, a + frac * wh * torch.tensor([1.0, 1.0, -1.0, -1.0], dtype=F64)
    if kind == "identical":
        return a, a.clone()
    if kind == "zero_width":  # boxes1 are vertical segments crossing boxes2 (torchvision is finite)
        b = _random(40, seed=7)
        g = torch.Generator().manual_seed(8)
        x = b[:, 0] + torch.rand(40, generator=g, dtype=F64) * 0.8 * (b[:, 2] - b[:, 0]) + 0.1
        return torch.stack([x, b[:, 1] - 3, x, b[:, 3] + 3], dim=1), b
    if kind == "touching":  # b starts where a ends, in x
        b = a.clone()
        width = a[:, 2] - a[:, 0]
        b[:, 0] += width
        b[:, 2] += width
        return a, b
    raise ValueError(kind)


KINDS = ("random", "overlapping", "disjoint", "nested", "identical", "zero_width", "touching")
TORCHVISION = {
    "giou": (giou_loss, tv.generalized_box_iou_loss),
    "diou": (diou_loss, tv.distance_box_iou_loss),
    "ciou": (ciou_loss, tv.complete_box_iou_loss),
}


def _value_and_grads(loss_fn, a: torch.Tensor, b: torch.Tensor, **kwargs):
    a, b = a.clone().requires_grad_(), b.clone().requires_grad_()
    loss = loss_fn(a, b, **kwargs)
    loss.sum().backward()
    return loss.detach(), a.grad, b.grad


# --------------------------------------------------------------------------- torchvision's losses


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_losses_equal_torchvision_in_values_and_gradients(name, kind):
    ours, theirs = TORCHVISION[name]
    a, b = _pairs(kind)
    got = _value_and_grads(ours, a, b, reduction="none")
    expected = _value_and_grads(theirs, a, b, reduction="none")
    for g, e in zip(got, expected, strict=True):
        assert torch.isfinite(e).all()  # the comparison is with finite numbers
        torch.testing.assert_close(g, e, **TIGHT)


@pytest.mark.parametrize("name", sorted(TORCHVISION))
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_reductions_equal_torchvision(name, reduction):
    ours, theirs = TORCHVISION[name]
    a, b = _pairs("random")
    torch.testing.assert_close(ours(a, b, reduction=reduction), theirs(a, b, reduction=reduction))
    empty = torch.zeros(0, 4, dtype=F64)
    assert ours(empty, empty, reduction=reduction).item() == 0.0  # torchvision's 0 for no boxes


def test_float32_follows_torchvision():
    a, b = _pairs("random")
    for ours, theirs in TORCHVISION.values():
        got = ours(a.float(), b.float(), reduction="none")
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, theirs(a.float(), b.float()))


def test_iou_and_log_iou_losses_equal_torchvision_box_iou():
    a, b = _pairs("overlapping")
    a_tv = a.clone().requires_grad_()
    iou = tv.box_iou(a_tv, b).diagonal()
    (1 - iou).sum().backward(retain_graph=True)
    grad_linear = a_tv.grad.clone()
    a_tv.grad = None
    (-iou.log()).sum().backward()
    value, grad, _ = _value_and_grads(iou_loss, a, b, eps=0.0, reduction="none")
    torch.testing.assert_close(value, 1 - iou.detach(), **TIGHT)
    torch.testing.assert_close(grad, grad_linear, **TIGHT)
    # eps = 1e-30 changes nothing a float64 can see, and eps must be > 0 for the logarithm.
    value, grad, _ = _value_and_grads(log_iou_loss, a, b, eps=1e-30, reduction="none")
    torch.testing.assert_close(value, -iou.detach().log(), **TIGHT)
    torch.testing.assert_close(grad, a_tv.grad, rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------- pairwise variants


@pytest.mark.parametrize("seed", [10, 11, 12])
def test_pairwise_variants_equal_torchvision(seed):
    a = _random(9, seed)
    b = torch.cat([_random(6, seed + 100), a[:2]])  # two pairs are identical boxes
    torch.testing.assert_close(
        generalized_box_iou(a, b, eps=0), tv.generalized_box_iou(a, b), **TIGHT
    )
    torch.testing.assert_close(
        distance_box_iou(a, b, eps=0), tv.distance_box_iou(a, b, eps=0), **TIGHT
    )
    # CIoU's α is 0 / 0 for identical boxes without eps: compare the other pairs at eps = 0 ...
    c = _random(6, seed + 200)
    torch.testing.assert_close(
        complete_box_iou(a, c, eps=0), tv.complete_box_iou(a, c, eps=0), **TIGHT
    )
    # ... and all pairs at the default eps, which ours also adds to the union (a change ~eps/U)
    for ours, theirs in [
        (generalized_box_iou, tv.generalized_box_iou),
        (distance_box_iou, tv.distance_box_iou),
        (complete_box_iou, tv.complete_box_iou),
    ]:
        torch.testing.assert_close(ours(a, b), theirs(a, b), rtol=0, atol=2e-7)  # U, |C| >= 1


def test_matched_variants_are_the_diagonal_of_the_pairwise_ones():
    a, b = _pairs("random")
    for matched, pairwise in [
        (matched_generalized_box_iou, generalized_box_iou),
        (matched_distance_box_iou, distance_box_iou),
        (matched_complete_box_iou, complete_box_iou),
    ]:
        torch.testing.assert_close(matched(a, b), pairwise(a, b).diagonal(), **TIGHT)
    assert generalized_box_iou(a[:0], b).shape == (0, 40)


def test_worked_example_by_hand():
    """A (0, 0, 2, 2) and B (1, 1, 3, 3): I = 1, U = 7, C = 9, ρ² = 2, c² = 18, same aspect."""
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]], dtype=F64)
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0]], dtype=F64)
    kw = {"eps": 0.0, "reduction": "none"}
    torch.testing.assert_close(iou_loss(a, b, **kw), torch.tensor([6 / 7], dtype=F64))
    torch.testing.assert_close(giou_loss(a, b, **kw), torch.tensor([6 / 7 + 2 / 9], dtype=F64))
    torch.testing.assert_close(diou_loss(a, b, **kw), torch.tensor([6 / 7 + 2 / 18], dtype=F64))
    torch.testing.assert_close(ciou_loss(a, b, **kw), torch.tensor([6 / 7 + 2 / 18], dtype=F64))
    torch.testing.assert_close(
        log_iou_loss(a, b, eps=1e-30, reduction="none"), torch.tensor([math.log(7)], dtype=F64)
    )


# --------------------------------------------------------------------------- gradients


LOSSES = [iou_loss, log_iou_loss, giou_loss, diou_loss, ciou_loss, rectified_iou_loss]
# CIoU's α is a constant for the backward pass (the paper's choice), so its autograd gradient is
# not the derivative of its value and gradcheck does not apply; torchvision's gradients are its
# reference (test_losses_equal_torchvision_in_values_and_gradients).
SMOOTH = [f for f in LOSSES if f is not ciou_loss]


@pytest.mark.parametrize("loss_fn", SMOOTH, ids=lambda f: f.__name__)
def test_gradcheck(loss_fn):
    a, b = _pairs("overlapping")
    a, b = a[:6].clone().requires_grad_(), b[:6].clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda x, y: loss_fn(x, y, reduction="none"), (a, b))


@pytest.mark.parametrize("loss_fn", [giou_loss, diou_loss], ids=lambda f: f.__name__)
def test_gradcheck_disjoint(loss_fn):
    a, b = _pairs("disjoint")
    a, b = a[:6].clone().requires_grad_(), b[:6].clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda x, y: loss_fn(x, y, reduction="none"), (a, b))


def test_disjoint_boxes_only_giou_and_diou_pull():
    a, b = _pairs("disjoint")
    for loss_fn in (iou_loss, log_iou_loss):
        value, grad, _ = _value_and_grads(loss_fn, a, b, reduction="none")
        assert (grad == 0).all()  # IoU is 0 all around: no direction to move in
    value, _, _ = _value_and_grads(log_iou_loss, a, b, reduction="none")
    torch.testing.assert_close(value, torch.full_like(value, -math.log(1e-7)))  # not inf
    for loss_fn in (giou_loss, diou_loss, ciou_loss):
        value, grad, _ = _value_and_grads(loss_fn, a, b, reduction="none")
        assert (value > 1).all() and (grad.abs().sum(dim=1) > 0).all()


@pytest.mark.parametrize("loss_fn", LOSSES, ids=lambda f: f.__name__)
def test_identical_boxes_cost_nothing(loss_fn):
    a, b = _pairs("identical")
    value = loss_fn(a, b, reduction="none")
    torch.testing.assert_close(value, torch.zeros_like(value), rtol=0, atol=1e-8)


@pytest.mark.parametrize("loss_fn", LOSSES, ids=lambda f: f.__name__)
def test_degenerate_boxes_give_finite_losses_and_gradients(loss_fn):
    box = [[5.0, 5.0, 5.0, 9.0], [2.0, 3.0, 8.0, 3.0], [4.0, 4.0, 4.0, 4.0], [4.0, 4.0, 4.0, 4.0]]
    other = [[4.0, 4.0, 8.0, 8.0], [2.0, 3.0, 8.0, 3.0], [4.0, 4.0, 4.0, 4.0], [1.0, 1.0, 3.0, 6.0]]
    a, b = torch.tensor(box, dtype=F64), torch.tensor(other, dtype=F64)
    for x, y in ((a, b), (b, a)):
        value, grad1, grad2 = _value_and_grads(loss_fn, x, y, reduction="none")
        for t in (value, grad1, grad2):
            assert torch.isfinite(t).all(), (loss_fn.__name__, t)


def test_ciou_zero_height_matches_torchvision_value_with_finite_gradient():
    a = torch.tensor([[2.0, 3.0, 8.0, 3.0], [0.0, 1.0, 5.0, 1.0]], dtype=F64)  # zero height
    b = torch.tensor([[1.0, 1.0, 6.0, 4.0], [1.0, 0.0, 4.0, 4.0]], dtype=F64)
    value, grad, _ = _value_and_grads(ciou_loss, a, b, reduction="none")
    _, tv_grad, _ = _value_and_grads(tv.complete_box_iou_loss, a, b)
    assert torch.isnan(tv_grad).any()  # what the atan2 form avoids
    torch.testing.assert_close(value, tv.complete_box_iou_loss(a, b), **TIGHT)
    assert torch.isfinite(grad).all()


def test_log_iou_gradient_grows_as_iou_falls():
    """UnitBox: |dL/dIoU| = 1 / IoU, the opposite of the rectified loss's aim."""
    iou = torch.linspace(0.1, 0.9, 9, dtype=F64)  # at 1 the edges coincide: a kink
    x = torch.tensor([[0.0, 0.0, 1.0, 1.0]], dtype=F64).repeat(9, 1)
    # A box of width w inside the unit square has IoU w.
    zeros, ones = torch.zeros(9, dtype=F64), torch.ones(9, dtype=F64)
    y = torch.stack([zeros, zeros, iou, ones], dim=1)
    y.requires_grad_()
    log_iou_loss(x, y, eps=1e-30, reduction="sum").backward()
    torch.testing.assert_close(-y.grad[:, 2], 1 / iou)  # dIoU/dw = 1


# --------------------------------------------------------------------------- rectified stand-in


GRID = torch.linspace(0, 1, 2001, dtype=F64)  # step 5e-4: β = 0.95 is on the grid


def test_rectified_worked_numbers():
    """papers.md §1.4: with k = 2/β, L(0) = 1, g(β) = 2, L(β) = 1 - β, L = 20 (1 - x)² above β."""
    at = torch.tensor([0.0, RIOU_BETA, 1.0, 0.98], dtype=F64)
    torch.testing.assert_close(
        rectified_loss_of_iou(at), torch.tensor([1.0, 0.05, 0.0, 20 * 0.02**2], dtype=F64)
    )
    torch.testing.assert_close(rectified_gradient_of_iou(at)[1], torch.tensor(2.0, dtype=F64))


def test_rectified_loss_decreases_and_is_continuous():
    values = rectified_loss_of_iou(GRID)
    assert (values.diff() < 0).all()
    below = rectified_loss_of_iou(torch.tensor([RIOU_BETA - 1e-12], dtype=F64))
    torch.testing.assert_close(below, rectified_loss_of_iou(torch.tensor([RIOU_BETA], dtype=F64)))


@pytest.mark.parametrize("beta,k", [(0.95, None), (0.8, 1.5), (0.5, 4.0)])
def test_rectified_gradient_peaks_at_beta_and_matches_autograd(beta, k):
    x = GRID.clone().requires_grad_()
    rectified_loss_of_iou(x, beta=beta, k=k).sum().backward()
    analytic = rectified_gradient_of_iou(GRID, beta=beta, k=k)
    torch.testing.assert_close(-x.grad, analytic, rtol=1e-12, atol=1e-12)
    assert GRID[analytic.argmax()].item() == pytest.approx(beta)
    assert (analytic[GRID < beta].diff() > 0).all() and (analytic[GRID > beta].diff() < 0).all()


def test_rectified_curvature_changes_at_beta():
    """L'' = -g': concave (cap-shaped) below β, convex (bowl-shaped) above."""
    x = torch.tensor([0.2, 0.6, 0.94, 0.96, 0.99], dtype=F64, requires_grad=True)
    (first,) = torch.autograd.grad(rectified_loss_of_iou(x).sum(), x, create_graph=True)
    (second,) = torch.autograd.grad(first.sum(), x)
    assert (second[:3] < 0).all() and (second[3:] > 0).all()


def test_rectified_gradient_against_linear_iou_loss():
    """Smaller than 1 - IoU's (1) below β/2, larger from β/2 to 0.975, smaller again near 1."""
    g = rectified_gradient_of_iou(GRID)
    half, cross = RIOU_BETA / 2, 1 - (1 - RIOU_BETA) / 2  # where g = 1: 0.475 and 0.975
    low, top = GRID < half - 1e-9, GRID > cross + 1e-9
    high = (GRID > half + 1e-9) & (GRID < cross - 1e-9)
    assert (g[low] < 1).all() and (g[high] > 1).all() and (g[top] < 1).all()


def test_rectified_box_gradient_is_g_times_the_iou_loss_gradient():
    """The box geometry enters only through IoU: dL/dbox = g(IoU) · d(1 - IoU)/dbox."""
    a, b = _pairs("overlapping")
    _, grad_riou, _ = _value_and_grads(rectified_iou_loss, a, b, reduction="none")
    _, grad_iou, _ = _value_and_grads(iou_loss, a, b, reduction="none")
    g = rectified_gradient_of_iou(1 - iou_loss(a, b, reduction="none"))
    torch.testing.assert_close(grad_riou, g[:, None] * grad_iou, rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------- bad inputs


GOOD = torch.tensor([[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 3.0, 4.0]])


@pytest.mark.parametrize("loss_fn", LOSSES, ids=lambda f: f.__name__)
def test_bad_boxes_are_named(loss_fn):
    nan = GOOD.clone()
    nan[1, 2] = float("nan")
    with pytest.raises(ValueError, match="boxes1 must be finite"):
        loss_fn(nan, GOOD)
    flipped = GOOD.clone()
    flipped[0, 2] = -1.0  # x2 < x1
    with pytest.raises(ValueError, match=r"boxes2 \(xyxy\) must have x2 >= x1"):
        loss_fn(GOOD, flipped)
    with pytest.raises(ValueError, match="same length"):
        loss_fn(GOOD, GOOD[:1])
    with pytest.raises(ValueError, match=r"boxes1 must be \[N, 4\], got \[2, 5\]"):
        loss_fn(torch.zeros(2, 5), GOOD)
    with pytest.raises(TypeError, match="boxes2 must be a floating-point tensor"):
        loss_fn(GOOD, GOOD.long())
    with pytest.raises(TypeError, match="same dtype"):
        loss_fn(GOOD, GOOD.double())
    with pytest.raises(ValueError, match="eps must be a finite number"):
        loss_fn(GOOD, GOOD, eps=-1e-7)
    with pytest.raises(ValueError, match="reduction must be one of"):
        loss_fn(GOOD, GOOD, reduction="avg")


def test_log_iou_loss_needs_a_positive_eps():
    with pytest.raises(ValueError, match=r"eps must be a finite number > 0"):
        log_iou_loss(GOOD, GOOD, eps=0.0)


@pytest.mark.parametrize("fn", [generalized_box_iou, distance_box_iou, complete_box_iou])
def test_pairwise_bad_inputs(fn):
    with pytest.raises(ValueError, match="boxes2 must be finite"):
        fn(GOOD, torch.tensor([[0.0, 0.0, float("inf"), 1.0]]))
    with pytest.raises(ValueError, match="eps"):
        fn(GOOD, GOOD, eps=float("nan"))


def test_rectified_bad_parameters():
    iou = torch.tensor([0.2, 0.9])
    for bad in (0.0, 1.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match="beta must be a finite number in \\(0, 1\\)"):
            rectified_loss_of_iou(iou, beta=bad)
    with pytest.raises(ValueError, match="k must be a finite number > 0"):
        rectified_gradient_of_iou(iou, k=0.0)
    with pytest.raises(ValueError, match="iou must lie in \\[0, 1\\], got 1.5"):
        rectified_loss_of_iou(torch.tensor([0.5, 1.5]))
    with pytest.raises(ValueError, match="iou must be finite"):
        rectified_gradient_of_iou(torch.tensor([float("nan")]))
    with pytest.raises(TypeError, match="iou must be a floating-point tensor"):
        rectified_loss_of_iou(torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="beta"):
        rectified_iou_loss(GOOD, GOOD, beta=0.0)
