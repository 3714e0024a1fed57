"""Tests for coursepkg.models.iou_aware_retinanet: the IoU head, its target, loss and score.

The oracles: ``torchvision.ops.box_iou`` of boxes decoded by torchvision's ``BoxCoder`` for the
target, a per-image loop for the loss, finite differences (float64) for the gradient that flows
through the target, and plain :class:`RetinaNet` for everything the IoU head must not change.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torchvision.models.detection._utils import BoxCoder

from coursepkg.data import ShapesDataset
from coursepkg.models.iou_aware_retinanet import (
    IoUAwareRetinaNet,
    IoUAwareRetinaNetConfig,
    iou_aware_retinanet_loss,
    iou_aware_score,
    iou_targets,
)
from coursepkg.models.retinanet import RetinaNet, RetinaNetConfig, retinanet_loss

SIZE = (64, 64)


def _config(**changes) -> IoUAwareRetinaNetConfig:
    # No GroupNorm: P7 of a 64-px image is 1 x 1, one value per group of GroupNorm(32) at 32 channels.
    base = {"backbone_channels": (8, 16, 16), "stem_channels": 8, "fpn_channels": 32,
            "head_convs": 1, "head_norm": None, "detections_per_img": 50}
    return IoUAwareRetinaNetConfig(**{**base, **changes})


def _batch(n: int = 2, seed: int = 0) -> tuple[torch.Tensor, list[dict]]:
    data = ShapesDataset(n, SIZE, seed=seed)
    items = [data[i] for i in range(n)]
    return torch.stack([image for image, _ in items]), [target for _, target in items]


def _random_problem(b: int = 2, n: int = 40, k: int = 3, seed: int = 0, dtype=torch.float64):
    """Anchors, their matched ground truths, labels and head outputs, all seeded."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g, dtype=dtype) * 60
    anchors = torch.cat([xy, xy + 8 + torch.rand(n, 2, generator=g, dtype=dtype) * 30], dim=1)
    matched = anchors + 4 * torch.randn(b, n, 4, generator=g, dtype=dtype)
    matched[..., 2:] = torch.maximum(matched[..., 2:], matched[..., :2] + 1)
    labels = torch.randint(-1, 2, (b, n), generator=g)
    labels[-1] = 0  # an image without positives
    classes = torch.where(labels == 1, torch.randint(0, k, (b, n), generator=g), -1)
    return {
        "cls_logits": torch.randn(b, n, k, generator=g, dtype=dtype),
        "box_regression": 0.3 * torch.randn(b, n, 4, generator=g, dtype=dtype),
        "iou_logits": torch.randn(b, n, generator=g, dtype=dtype),
        "labels": labels,
        "classes": classes,
        "target_deltas": 0.3 * torch.randn(b, n, 4, generator=g, dtype=dtype),
        "anchors": anchors,
        "matched_boxes": matched,
    }


def _loss(p: dict, **kwargs):
    return iou_aware_retinanet_loss(
        p["cls_logits"], p["box_regression"], p["iou_logits"], p["labels"], p["classes"],
        p["target_deltas"], p["anchors"], p["matched_boxes"], **kwargs,
    )


# ------------------------------------------------------------------------------------ shapes


def test_outputs_have_one_iou_per_anchor_and_the_retinanet_part_is_unchanged():
    torch.manual_seed(0)
    plain = RetinaNet(RetinaNetConfig(**{k: v for k, v in vars(_config()).items()
                                         if k in RetinaNetConfig.__dataclass_fields__}))
    torch.manual_seed(0)
    model = IoUAwareRetinaNet(_config())
    images, _ = _batch(2)
    out, ref = model(images), plain(images)
    n, k, a = ref.anchors.shape[0], model.config.num_classes, model.config.num_anchors
    assert out.cls_logits.shape == (2, n, k) and out.box_regression.shape == (2, n, 4)
    assert out.iou_logits.shape == (2, n) and out.num_per_level == ref.num_per_level
    assert model.iou_predictor.out_channels == a  # class-agnostic: A channels, not A * K
    # Same seed: the RetinaNet part starts from plain RetinaNet's weights, with the same outputs.
    torch.testing.assert_close(out.cls_logits, ref.cls_logits, rtol=0, atol=0)
    torch.testing.assert_close(out.box_regression, ref.box_regression, rtol=0, atol=0)
    torch.testing.assert_close(out.anchors, ref.anchors, rtol=0, atol=0)


def test_iou_logits_come_from_the_regression_tower_not_the_classification_tower():
    torch.manual_seed(0)
    model = IoUAwareRetinaNet(_config())
    images, _ = _batch(1)
    before = model(images).iou_logits.detach().clone()
    with torch.no_grad():
        for p in model.classification_head.parameters():
            p.add_(1.0)
    torch.testing.assert_close(model(images).iou_logits, before, rtol=0, atol=0)
    with torch.no_grad():
        model.regression_head.tower[0][0].weight.mul_(2.0)
    assert not torch.allclose(model(images).iou_logits, before)


def test_losses_and_detect_keep_the_detector_contract():
    torch.manual_seed(0)
    model = IoUAwareRetinaNet(_config())
    images, targets = _batch(2)
    targets[1] = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    losses = model.losses(images, targets)
    assert set(losses) == {"classification", "bbox_regression", "iou"}
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    model.eval()
    with torch.no_grad():
        detections = model.detect(images)
    assert len(detections) == 2
    for d in detections:
        assert d["boxes"].shape[1] == 4 and len(d["scores"]) == len(d["labels"]) <= 50
        assert bool((d["scores"][1:] <= d["scores"][:-1]).all())


@pytest.mark.parametrize("box_loss", ["iou", "giou", "rectified"])
def test_box_loss_setting_reaches_the_subclass_as_in_plain_retinanet(box_loss):
    """IoU-aware RetinaNet inherits ``box_loss``: the same box term as plain RetinaNet's."""
    base = {k: v for k, v in vars(_config(box_loss=box_loss)).items() if k in RetinaNetConfig.__dataclass_fields__}
    assert IoUAwareRetinaNetConfig.from_retinanet(RetinaNetConfig(**base)).box_loss == box_loss
    images, targets = _batch(2, seed=3)
    torch.manual_seed(0)
    plain = RetinaNet(RetinaNetConfig(**base))
    torch.manual_seed(0)
    model = IoUAwareRetinaNet(_config(box_loss=box_loss))
    expected = plain.losses(images, targets)["bbox_regression"]
    got = model.losses(images, targets)
    torch.testing.assert_close(got["bbox_regression"], expected, rtol=1e-6, atol=1e-7)
    torch.manual_seed(0)
    smooth_l1 = IoUAwareRetinaNet(_config()).losses(images, targets)
    assert not torch.allclose(got["bbox_regression"], smooth_l1["bbox_regression"])
    torch.testing.assert_close(got["iou"], smooth_l1["iou"])  # the IoU head's term is unchanged
    # and the loss function itself, on random inputs
    p = _random_problem()
    loss = _loss(p, box_loss=box_loss, reduction="none")
    ref = retinanet_loss(p["cls_logits"], p["box_regression"], p["labels"], p["classes"], p["target_deltas"],
                         box_loss=box_loss, anchors=p["anchors"], matched_boxes=p["matched_boxes"],
                         reduction="none")
    torch.testing.assert_close(loss.box_regression, ref.box_regression, rtol=0, atol=0)
    with pytest.raises(ValueError, match="box_loss must be one of"):
        _loss(p, box_loss="ciou")


# ------------------------------------------------------------------------------------ target


def test_target_is_torchvision_iou_of_the_decoded_boxes_with_their_ground_truth():
    p = _random_problem()
    target = iou_targets(p["box_regression"], p["anchors"], p["matched_boxes"])  # [B, N]
    coder = BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))
    for b in range(target.shape[0]):
        decoded = coder.decode_single(p["box_regression"][b], p["anchors"])
        expected = torchvision.ops.box_iou(decoded, p["matched_boxes"][b]).diagonal()
        torch.testing.assert_close(target[b], expected, rtol=1e-12, atol=1e-12)
        # not the anchors' IoU: the head predicts the quality of the box the detector outputs
        anchor_iou = torchvision.ops.box_iou(p["anchors"], p["matched_boxes"][b]).diagonal()
        assert (target[b] - anchor_iou).abs().max() > 0.05
    # One image: [N, 4] in, [N] out.
    torch.testing.assert_close(
        iou_targets(p["box_regression"][0], p["anchors"], p["matched_boxes"][0]), target[0]
    )


def test_zero_deltas_give_the_anchor_iou():
    p = _random_problem()
    zero = torch.zeros_like(p["box_regression"])
    expected = torchvision.ops.box_iou(p["anchors"], p["matched_boxes"][0]).diagonal()
    torch.testing.assert_close(iou_targets(zero, p["anchors"], p["matched_boxes"])[0], expected)


# -------------------------------------------------------------------------------------- loss


def test_iou_loss_is_bce_on_positives_divided_by_their_number_per_image():
    p = _random_problem()
    loss = _loss(p, reduction="none")
    target = iou_targets(p["box_regression"], p["anchors"], p["matched_boxes"])
    for b in range(p["labels"].shape[0]):
        positive = p["labels"][b] == 1
        bce = F.binary_cross_entropy_with_logits(p["iou_logits"][b][positive], target[b][positive],
                                                 reduction="sum")
        expected = bce / max(int(positive.sum()), 1)
        torch.testing.assert_close(loss.iou[b], expected, rtol=1e-12, atol=1e-12)
    assert float(loss.iou[-1]) == 0.0  # no positives, no IoU loss
    # The other two terms are RetinaNet's, unchanged.
    base = retinanet_loss(p["cls_logits"], p["box_regression"], p["labels"], p["classes"],
                          p["target_deltas"], reduction="none")
    torch.testing.assert_close(loss.classification, base.classification, rtol=0, atol=0)
    torch.testing.assert_close(loss.box_regression, base.box_regression, rtol=0, atol=0)
    mean = _loss(p)
    torch.testing.assert_close(mean.iou, loss.iou.mean())


def test_iou_loss_ignores_negatives_and_ignored_anchors_entirely():
    p = _random_problem()
    before = _loss(p, reduction="none").iou
    not_positive = p["labels"] != 1
    q = dict(p)
    q["iou_logits"] = torch.where(not_positive, p["iou_logits"] + 5.0, p["iou_logits"])
    q["box_regression"] = torch.where(not_positive[..., None], p["box_regression"] - 1.0,
                                      p["box_regression"])
    q["matched_boxes"] = torch.where(not_positive[..., None], p["matched_boxes"] * 2 + 3,
                                     p["matched_boxes"])
    torch.testing.assert_close(_loss(q, reduction="none").iou, before, rtol=0, atol=0)
    # Doubling the positives of an image (same rows twice) leaves its normalised loss unchanged.
    r = {key: (torch.cat([v, v], dim=1) if key not in ("anchors",) else torch.cat([v, v]))
         for key, v in p.items()}
    torch.testing.assert_close(_loss(r, reduction="none").iou, before)


def test_bce_is_linear_in_its_target_with_slope_log_one_minus_p_over_p():
    """Eq. 5: the gradient that flows through the target, by autograd and by hand."""
    logits = torch.tensor([-2.0, -0.3, 0.0, 0.4, 2.5], dtype=torch.float64)
    target = torch.tensor([0.2, 0.5, 0.7, 0.9, 0.6], dtype=torch.float64, requires_grad=True)
    F.binary_cross_entropy_with_logits(logits, target, reduction="sum").backward()
    p = torch.sigmoid(logits)
    torch.testing.assert_close(target.grad, torch.log((1 - p) / p))
    assert bool((target.grad[p > 0.5] < 0).all()) and bool((target.grad[p < 0.5] > 0).all())


@pytest.mark.parametrize("grad", [True, False])
def test_gradient_reaches_the_regression_through_the_target_only_when_asked(grad):
    p = _random_problem(seed=3)
    p["box_regression"] = p["box_regression"].clone().requires_grad_(True)
    loss = _loss(p, iou_target_grad=grad, reduction="sum").iou
    # Detached, the IoU loss is no function of the deltas in the graph (here: of nothing at all).
    assert loss.requires_grad == grad
    autograd = torch.zeros_like(p["box_regression"])
    if grad:
        (autograd,) = torch.autograd.grad(loss, p["box_regression"])

    def iou_loss_at(deltas):
        return float(_loss({**p, "box_regression": deltas}, reduction="sum").iou)

    positive = (p["labels"] == 1).nonzero().tolist()
    eps = 1e-6
    checked = 0
    for b, i in positive[:6]:
        for j in range(4):
            up, down = p["box_regression"].detach().clone(), p["box_regression"].detach().clone()
            up[b, i, j] += eps
            down[b, i, j] -= eps
            numeric = (iou_loss_at(up) - iou_loss_at(down)) / (2 * eps)
            if grad:
                assert math.isclose(float(autograd[b, i, j]), numeric, rel_tol=1e-5, abs_tol=1e-8)
            else:
                assert float(autograd[b, i, j]) == 0.0  # detached: no gradient at all
            checked += abs(numeric) > 1e-6
    assert checked > 0  # the loss does depend on the deltas (so a zero gradient means detached)
    assert bool((autograd[p["labels"] != 1] == 0).all())


@pytest.mark.parametrize("grad", [True, False])
def test_model_iou_loss_reaches_the_box_predictor_only_with_the_target_gradient(grad):
    torch.manual_seed(0)
    model = IoUAwareRetinaNet(_config(iou_target_grad=grad)).double()
    images, targets = _batch(2)
    images = images.double()
    bias = model.regression_head.predictor.bias
    model.zero_grad()
    model.losses(images, targets)["iou"].backward()
    assert model.iou_predictor.weight.grad.abs().sum() > 0  # the IoU head always learns
    if grad:
        assert bias.grad.abs().sum() > 0
        j = int(bias.grad.abs().argmax())
        eps = 1e-6
        with torch.no_grad():
            bias[j] += eps
            up = float(model.losses(images, targets)["iou"])
            bias[j] -= 2 * eps
            down = float(model.losses(images, targets)["iou"])
            bias[j] += eps
        assert math.isclose(float(bias.grad[j]), (up - down) / (2 * eps), rel_tol=1e-4)
    else:
        assert bias.grad is None or float(bias.grad.abs().sum()) == 0.0


# ------------------------------------------------------------------------------------- score


def test_score_is_p_to_the_alpha_times_iou_to_the_one_minus_alpha():
    p = torch.tensor([[[0.81, 0.04], [0.5, 0.0]]])  # [1, 2, 2]
    iou = torch.tensor([[0.25, 1.0]])  # [1, 2]
    torch.testing.assert_close(
        iou_aware_score(p, iou, 0.5), torch.tensor([[[0.45, 0.1], [math.sqrt(0.5), 0.0]]])
    )
    # alpha = 1: the classification probability alone (plain RetinaNet); alpha = 0: the IoU alone.
    torch.testing.assert_close(iou_aware_score(p, iou, 1.0), p, rtol=0, atol=0)
    torch.testing.assert_close(iou_aware_score(p, iou, 0.0), iou[..., None].expand_as(p), rtol=0, atol=0)
    # PP-YOLO's 0.4 is the exponent on the IoU: alpha = 0.6.
    torch.testing.assert_close(iou_aware_score(p, iou, 0.6), p ** 0.6 * iou[..., None] ** 0.4)
    # 0^0 = 1, as torch.pow: alpha = 1 keeps p even where the IoU is 0, alpha = 0 keeps the IoU.
    assert float(iou_aware_score(torch.full((1, 1, 1), 0.375), torch.zeros(1, 1), 1.0)) == 0.375
    assert float(iou_aware_score(torch.zeros(1, 1, 1), torch.full((1, 1), 0.625), 0.0)) == 0.625


def test_detect_with_alpha_one_is_retinanets_detect_and_alpha_ranks_by_the_score():
    torch.manual_seed(0)
    model = IoUAwareRetinaNet(_config(score_alpha=1.0, score_thresh=0.0)).eval()
    images, _ = _batch(2)
    with torch.no_grad():
        ours, plain = model.detect(images), RetinaNet.detect(model, images)
        out = model(images)
        true_iou = torch.full_like(out.iou_logits, 0.5)
        half = model.detections_from(out, SIZE, iou=true_iou, alpha=0.5)
    for a, b in zip(ours, plain, strict=True):
        for key in ("boxes", "scores", "labels"):
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    # A constant IoU of 0.5 with alpha 0.5 gives sqrt(0.5 p), increasing in p: the same ranking,
    # so the same boxes survive NMS, with those scores.
    for a, b in zip(half, plain, strict=True):
        assert len(b["scores"]) > 0
        torch.testing.assert_close(a["scores"], (0.5 * b["scores"]).sqrt())
        torch.testing.assert_close(a["boxes"], b["boxes"], rtol=0, atol=0)


def test_candidates_are_chosen_by_the_class_probability_and_ranked_by_the_score():
    torch.manual_seed(0)
    model = IoUAwareRetinaNet(_config()).eval()  # untrained: p = 0.01 everywhere, S = 0.07
    images, _ = _batch(2)
    with torch.no_grad():
        out = model(images)
        assert float(torch.sigmoid(out.cls_logits).max()) < model.config.score_thresh
        assert all(len(d["scores"]) == 0 for d in model.detections_from(out, SIZE))
        # Make anchor 7 of image 0 confident in class 2: the only candidate, scored by S.
        out.cls_logits[0, 7, 2] = 3.0
        u = torch.full_like(out.iou_logits, 0.25)
        (first, second) = model.detections_from(out, SIZE, iou=u, alpha=0.5)
    assert len(second["scores"]) == 0 and first["labels"].tolist() == [2]
    torch.testing.assert_close(first["scores"], (torch.sigmoid(torch.tensor([3.0])) * 0.25).sqrt())


# --------------------------------------------------------------------------------- training


def test_a_few_steps_lower_every_loss_term():
    torch.manual_seed(0)
    model = IoUAwareRetinaNet(_config())
    images, targets = _batch(2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(25):
        losses = model.losses(images, targets)
        if first is None:
            first = {k: v.item() for k, v in losses.items()}
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
    last = {k: v.item() for k, v in model.losses(images, targets).items()}
    assert sum(last.values()) < 0.7 * sum(first.values())
    assert last["iou"] < first["iou"]


# ------------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan"), float("inf")])
def test_bad_alpha_is_refused_by_name(alpha):
    p, iou = torch.rand(1, 3, 2), torch.rand(1, 3)
    with pytest.raises(ValueError, match="alpha"):
        iou_aware_score(p, iou, alpha)
    with pytest.raises(ValueError, match="score_alpha"):
        _config(score_alpha=alpha)
    torch.manual_seed(0)
    model = IoUAwareRetinaNet(_config()).eval()
    images, _ = _batch(1)
    with torch.no_grad(), pytest.raises(ValueError, match="alpha"):
        model.detections_from(model(images), SIZE, alpha=alpha)


def test_bad_scores_and_shapes_are_refused_by_name():
    p, iou = torch.rand(1, 3, 2), torch.rand(1, 3)
    with pytest.raises(ValueError, match="iou_prob"):
        iou_aware_score(p, torch.rand(1, 4), 0.5)
    with pytest.raises(ValueError, match="iou_prob"):
        iou_aware_score(p, iou + 1.0, 0.5)
    with pytest.raises(ValueError, match="cls_prob"):
        iou_aware_score(p.clone().fill_(float("nan")), iou, 0.5)
    with pytest.raises(TypeError, match="alpha"):
        iou_aware_score(p, iou, "0.5")
    with pytest.raises(TypeError, match="iou_target_grad"):
        _config(iou_target_grad=1)
    q = _random_problem()
    with pytest.raises(ValueError, match="iou_logits"):
        _loss({**q, "iou_logits": q["iou_logits"][..., None]})
    with pytest.raises(ValueError, match="matched_boxes"):
        _loss({**q, "matched_boxes": q["matched_boxes"][:, :3]})
    with pytest.raises(ValueError, match="anchors"):
        iou_targets(q["box_regression"], q["anchors"][:5], q["matched_boxes"])
    with pytest.raises(ValueError, match="box_regression"):
        iou_targets(q["box_regression"].clone().fill_(float("nan")), q["anchors"], q["matched_boxes"])


def test_a_plain_retinanet_config_gets_the_iou_head_defaults():
    base = RetinaNetConfig(fpn_channels=32, backbone_channels=(8, 16, 16))
    model = IoUAwareRetinaNet(base)
    assert isinstance(model.config, IoUAwareRetinaNetConfig)
    assert model.config.score_alpha == 0.5 and model.config.iou_target_grad is True
    assert model.config.fpn_channels == 32
    with pytest.raises(TypeError, match="config"):
        IoUAwareRetinaNetConfig.from_retinanet({"fpn_channels": 32})
