"""Tests for coursepkg.ops.focal: the focal loss, against torchvision.ops.sigmoid_focal_loss."""

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision

from coursepkg.ops.focal import sigmoid_focal_loss

SETTINGS = [(0.25, 2.0), (-1.0, 2.0), (0.5, 0.0), (0.75, 0.5), (0.25, 1.0), (0.0, 5.0), (1.0, 3.0)]


def _inputs(seed, shape=(64, 5), scale=4.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    logits = scale * torch.randn(*shape, generator=g, dtype=dtype)
    targets = (torch.rand(*shape, generator=g, dtype=dtype) < 0.2).to(dtype)
    return logits, targets


def _values_and_grads(fn, logits, targets, **kwargs):
    x = logits.clone().requires_grad_(True)
    out = fn(x, targets, **kwargs)
    (out * torch.linspace(0.5, 1.5, out.numel(), dtype=out.dtype).reshape(out.shape)).sum().backward()
    return out.detach(), x.grad


@pytest.mark.parametrize(("alpha", "gamma"), SETTINGS)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("scale", [1.0, 10.0])
def test_equals_torchvision_values_and_gradients(alpha, gamma, reduction, scale):
    logits, targets = _inputs(int(10 * scale) + int(10 * gamma), scale=scale)
    kwargs = {"alpha": alpha, "gamma": gamma, "reduction": reduction}
    ours = _values_and_grads(sigmoid_focal_loss, logits, targets, **kwargs)
    theirs = _values_and_grads(torchvision.ops.sigmoid_focal_loss, logits, targets, **kwargs)
    torch.testing.assert_close(ours[0], theirs[0], rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(ours[1], theirs[1], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(("alpha", "gamma"), SETTINGS)
def test_extreme_logits_stay_finite_and_equal_torchvision(alpha, gamma):
    logits = torch.tensor([-100.0, -40.0, -17.0, 0.0, 17.0, 40.0, 100.0] * 2, dtype=torch.float64)
    targets = torch.tensor([0.0] * 7 + [1.0] * 7, dtype=torch.float64)
    ours = _values_and_grads(sigmoid_focal_loss, logits, targets, alpha=alpha, gamma=gamma)
    theirs = _values_and_grads(torchvision.ops.sigmoid_focal_loss, logits, targets, alpha=alpha, gamma=gamma)
    assert torch.isfinite(ours[0]).all()
    torch.testing.assert_close(ours[0], theirs[0], rtol=1e-12, atol=1e-300)
    # For 0 < gamma < 1 the factor (1 - p_t)^gamma has an infinite slope at p_t = 1, so a
    # saturated logit (p_t rounds to 1) gets a NaN gradient, in torchvision too (documented).
    if gamma == 0 or gamma >= 1:
        assert torch.isfinite(ours[1]).all()
    torch.testing.assert_close(ours[1], theirs[1], rtol=1e-12, atol=1e-300, equal_nan=0 < gamma < 1)
    # a confidently wrong example costs about |x| (alpha_t (1 - p_t)^gamma -> alpha_t)
    weight_neg = 1.0 if alpha < 0 else 1 - alpha
    assert math.isclose(float(ours[0][6]), weight_neg * 100.0, rel_tol=1e-12)


def test_naive_log_sigmoid_would_be_infinite_where_ours_is_not():
    """The reason for binary_cross_entropy_with_logits: log(1 - sigmoid(40)) is -inf in float32."""
    x = torch.tensor([40.0])
    naive = -torch.log(1 - torch.sigmoid(x))  # a negative anchor predicted with logit 40
    assert torch.isinf(naive).all()
    loss = sigmoid_focal_loss(x, torch.zeros(1), alpha=-1, gamma=0.0)
    assert math.isclose(float(loss), 40.0, rel_tol=1e-6)


def test_paper_constants_100x_at_0_9_and_1000x_at_0_968():
    """§3.2: with gamma = 2, p_t = 0.9 gives 100x less loss than CE, p_t ~ 0.968 1000x less."""
    for p_t, factor in ((0.9, 100.0), (1 - 1000 ** -0.5, 1000.0)):
        logit = torch.tensor([math.log(p_t / (1 - p_t))], dtype=torch.float64)
        one = torch.ones(1, dtype=torch.float64)
        ce = F.binary_cross_entropy_with_logits(logit, one)
        fl = sigmoid_focal_loss(logit, one, alpha=-1, gamma=2.0)
        assert math.isclose(float(ce / fl), factor, rel_tol=1e-9)
    assert round(1 - 1000 ** -0.5, 3) == 0.968
    # the same on a negative: p_t = 1 - p
    logit = torch.tensor([math.log(0.1 / 0.9)], dtype=torch.float64)
    zero = torch.zeros(1, dtype=torch.float64)
    ratio = F.binary_cross_entropy_with_logits(logit, zero) / sigmoid_focal_loss(logit, zero, alpha=-1)
    assert math.isclose(float(ratio), 100.0, rel_tol=1e-9)


def test_hand_computed_values_with_alpha():
    # positive, p = 0.8: 0.25 * 0.2^2 * -log 0.8; negative, p = 0.3: 0.75 * 0.3^2 * -log 0.7
    p = torch.tensor([0.8, 0.3], dtype=torch.float64)
    loss = sigmoid_focal_loss(torch.logit(p), torch.tensor([1.0, 0.0], dtype=torch.float64))
    expected = torch.tensor([0.25 * 0.04 * -math.log(0.8), 0.75 * 0.09 * -math.log(0.7)], dtype=torch.float64)
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=0)


def test_gamma_zero_no_alpha_is_bce():
    logits, targets = _inputs(3)
    torch.testing.assert_close(
        sigmoid_focal_loss(logits, targets, alpha=-1, gamma=0.0, reduction="mean"),
        F.binary_cross_entropy_with_logits(logits, targets),
        rtol=1e-12, atol=0,
    )


def test_loss_falls_as_the_example_gets_easier():
    p_t = torch.linspace(0.01, 0.99, 99, dtype=torch.float64)
    loss = sigmoid_focal_loss(torch.logit(p_t), torch.ones_like(p_t))
    assert bool((loss[1:] < loss[:-1]).all())


def test_gradcheck():
    logits, targets = _inputs(5, shape=(6, 3), scale=2.0)
    logits.requires_grad_(True)
    for alpha, gamma in ((0.25, 2.0), (-1.0, 0.5), (0.6, 1.0)):
        assert torch.autograd.gradcheck(
            lambda x, a=alpha, g=gamma: sigmoid_focal_loss(x, targets, alpha=a, gamma=g), (logits,)
        )


def test_empty_and_scalar_inputs():
    empty = torch.zeros(0, 5)
    assert sigmoid_focal_loss(empty, empty).shape == (0, 5)
    assert float(sigmoid_focal_loss(empty, empty, reduction="sum")) == 0.0
    scalar = sigmoid_focal_loss(torch.tensor(0.0), torch.tensor(1.0), alpha=-1, gamma=0.0)
    assert math.isclose(float(scalar), math.log(2), rel_tol=1e-6)


def test_follows_dtype_and_device_of_its_inputs():
    logits, targets = _inputs(7, dtype=torch.float32)
    out = sigmoid_focal_loss(logits, targets)
    assert out.dtype == torch.float32 and out.device == logits.device


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_logits_are_refused_naming_inputs(bad):
    logits = torch.zeros(4, 2)
    logits[2, 1] = bad
    with pytest.raises(ValueError, match=r"inputs must be finite.*element \[2, 1\]"):
        sigmoid_focal_loss(logits, torch.zeros(4, 2))


@pytest.mark.parametrize("bad", [-0.5, 1.5, float("nan"), 2.0])
def test_targets_outside_0_1_are_refused_naming_targets(bad):
    targets = torch.zeros(4)
    targets[1] = bad
    with pytest.raises(ValueError, match=r"targets must be in \[0, 1\]"):
        sigmoid_focal_loss(torch.zeros(4), targets)


def test_shape_mismatch_and_types_are_refused():
    with pytest.raises(ValueError, match=r"targets must have the shape of inputs \[4, 2\], got \[4\]"):
        sigmoid_focal_loss(torch.zeros(4, 2), torch.zeros(4))
    with pytest.raises(TypeError, match="targets must be a floating-point tensor"):
        sigmoid_focal_loss(torch.zeros(4), torch.zeros(4, dtype=torch.int64))
    with pytest.raises(TypeError, match="inputs must be a torch.Tensor"):
        sigmoid_focal_loss([0.0, 1.0], torch.zeros(2))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"alpha": 1.5}, "alpha must be a finite number <= 1"),
    ({"alpha": float("nan")}, "alpha must be a finite number"),
    ({"gamma": -1.0}, "gamma must be a finite number >= 0"),
    ({"gamma": float("inf")}, "gamma must be a finite number"),
    ({"reduction": "avg"}, "reduction must be one of"),
])
def test_bad_settings_are_refused_by_name(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sigmoid_focal_loss(torch.zeros(3), torch.zeros(3), **kwargs)
