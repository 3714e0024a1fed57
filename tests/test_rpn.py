"""Tests for coursepkg.models.rpn against torchvision's RPNHead and RegionProposalNetwork."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.rpn import RegionProposalNetwork, concat_box_prediction_layers
from torchvision.models.detection.rpn import RPNHead as TorchvisionRPNHead

from coursepkg.models.anchors import generate_anchors
from coursepkg.models.rpn import RPNHead, flatten_predictions, generate_proposals, rpn_loss
from coursepkg.ops.box_coding import decode_boxes


def torchvision_rpn(pre_nms_top_n=1000, post_nms_top_n=300, nms_thresh=0.7, score_thresh=0.0):
    rpn = RegionProposalNetwork(
        AnchorGenerator(sizes=((128, 256, 512),), aspect_ratios=((0.5, 1.0, 2.0),)),
        TorchvisionRPNHead(8, 9),
        fg_iou_thresh=0.7,
        bg_iou_thresh=0.3,
        batch_size_per_image=256,
        positive_fraction=0.5,
        pre_nms_top_n={"training": pre_nms_top_n, "testing": pre_nms_top_n},
        post_nms_top_n={"training": post_nms_top_n, "testing": post_nms_top_n},
        nms_thresh=nms_thresh,
        score_thresh=score_thresh,
    )
    return rpn.eval()


def test_head_matches_torchvision_rpn_head():
    torch.manual_seed(0)
    theirs = TorchvisionRPNHead(16, 9)
    ours = RPNHead(16, 9)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    ours.conv.load_state_dict(theirs.conv[0][0].state_dict())
    ours.cls_logits.load_state_dict(theirs.cls_logits.state_dict())
    ours.bbox_pred.load_state_dict(theirs.bbox_pred.state_dict())
    x = torch.randn(2, 16, 5, 7)
    out = ours(x)
    logits, deltas = theirs([x])
    assert out.objectness.shape == (2, 9, 5, 7) and out.deltas.shape == (2, 36, 5, 7)
    assert_close(out.objectness, logits[0])
    assert_close(out.deltas, deltas[0])


def test_head_initialisation_follows_the_paper():
    torch.manual_seed(0)
    head = RPNHead(64, 9)
    for layer in (head.conv, head.cls_logits, head.bbox_pred):
        assert abs(layer.weight.std().item() - 0.01) < 0.002
        assert (layer.bias == 0).all()


def test_flatten_predictions_matches_torchvision_and_anchor_order():
    g = torch.Generator().manual_seed(1)
    objectness = torch.randn(2, 3, 4, 5, generator=g)
    deltas = torch.randn(2, 12, 4, 5, generator=g)
    flat_obj, flat_deltas = flatten_predictions(objectness, deltas)
    tv_obj, tv_deltas = concat_box_prediction_layers([objectness], [deltas])
    assert_close(flat_obj.reshape(-1, 1), tv_obj)
    assert_close(flat_deltas.reshape(-1, 4), tv_deltas)
    # Row (i * W + j) * A + a is anchor a at location (i, j), as generate_anchors orders them.
    i, j, a = 2, 3, 1
    row = (i * 5 + j) * 3 + a
    assert flat_obj[1, row] == objectness[1, a, i, j]
    assert_close(flat_deltas[1, row], deltas[1, 4 * a : 4 * a + 4, i, j])


def sampled_labels(num, num_pos, num_neg, generator):
    """Labels with exactly num_pos positives and num_neg negatives, few enough that torchvision's
    sampler keeps all of them (so both sides see the same mini-batch)."""
    labels = torch.full((num,), -1.0)
    perm = torch.randperm(num, generator=generator)
    labels[perm[:num_pos]] = 1.0
    labels[perm[num_pos : num_pos + num_neg]] = 0.0
    return labels


@pytest.mark.parametrize(
    "counts", [[(40, 100), (7, 200)], [(128, 128)], [(0, 256)], [(3, 5), (0, 9)]]
)
def test_torchvision_mode_equals_compute_loss(counts):
    g = torch.Generator().manual_seed(len(counts) * 10 + counts[0][0])
    per_image = 500
    labels = [sampled_labels(per_image, p, n, g) for p, n in counts]
    targets = [torch.randn(per_image, 4, generator=g) for _ in counts]
    m = per_image * len(counts)
    objectness = torch.randn(m, 1, generator=g)
    deltas = torch.randn(m, 4, generator=g)
    tv_obj, tv_box = torchvision_rpn().compute_loss(objectness, deltas, labels, targets)
    ours = rpn_loss(objectness.flatten(), deltas, torch.cat(labels), torch.cat(targets))
    assert_close(ours.objectness, tv_obj)
    assert_close(ours.box, tv_box)
    assert_close(ours.total, tv_obj + tv_box)


def test_notes_mode_equals_the_notes_code():
    """The notes: cross_entropy over two scores with ignore_index=-1, plus 10 x smooth-L1 / #pos."""
    g = torch.Generator().manual_seed(2)
    labels = sampled_labels(300, 30, 90, g).long()
    logits = torch.randn(300, generator=g)
    deltas, targets = torch.randn(300, 4, generator=g), torch.randn(300, 4, generator=g) * 2
    # The notes' code, with two scores per anchor: (background, object) = (0, logit).
    rpn_score = torch.stack([torch.zeros_like(logits), logits], dim=1)
    rpn_cls_loss = F.cross_entropy(rpn_score, labels, ignore_index=-1)
    pos = labels > 0
    x = torch.abs(targets[pos] - deltas[pos])
    rpn_loc_loss = ((x < 1).float() * 0.5 * x**2) + ((x >= 1).float() * (x - 0.5))
    rpn_loc_loss = rpn_loc_loss.sum() / pos.float().sum()
    expected = rpn_cls_loss + 10 * rpn_loc_loss
    ours = rpn_loss(logits, deltas, labels, targets, normalization="notes")
    assert_close(ours.objectness, rpn_cls_loss)
    assert_close(ours.box, rpn_loc_loss)
    assert_close(ours.total, expected)


def test_paper_mode_by_hand():
    logits = torch.tensor([2.0, -1.0, 0.5, 3.0])
    labels = torch.tensor([1, 0, -1, 0])
    deltas = torch.tensor([[0.5, 0.0, 2.0, 0.0]] + [[9.0] * 4] * 3)
    targets = torch.zeros(4, 4)
    bce = -math.log(torch.sigmoid(torch.tensor(2.0)).item()) - math.log(
        1 - torch.sigmoid(torch.tensor(-1.0)).item()
    )
    bce += -math.log(1 - torch.sigmoid(torch.tensor(3.0)).item())
    smooth = 0.5 * 0.5**2 + (2.0 - 0.5)  # beta = 1
    ours = rpn_loss(logits, deltas, labels, targets, normalization="paper", num_locations=2400)
    assert_close(ours.objectness, torch.tensor(bce / 3))
    assert_close(ours.box, torch.tensor(smooth / 2400))
    assert_close(ours.total, torch.tensor(bce / 3 + 10 * smooth / 2400))
    # box_loss_weight and beta override the mode's defaults.
    custom = rpn_loss(
        logits,
        deltas,
        labels,
        targets,
        normalization="paper",
        num_locations=2400,
        box_loss_weight=1.0,
        beta=1 / 9,
    )
    assert_close(
        custom.box, F.smooth_l1_loss(deltas[:1], targets[:1], beta=1 / 9, reduction="sum") / 2400
    )
    assert_close(custom.total, custom.objectness + custom.box)


@pytest.mark.parametrize("normalization", ["paper", "notes", "torchvision"])
def test_no_positives_and_no_samples_give_zero_not_nan(normalization):
    objectness = torch.randn(6, requires_grad=True)
    deltas = torch.randn(6, 4, requires_grad=True)
    targets = torch.randn(6, 4)
    kwargs = {"normalization": normalization, "num_locations": 10}
    only_negatives = rpn_loss(
        objectness, deltas, torch.tensor([0, 0, -1, 0, -1, -1]), targets, **kwargs
    )
    assert only_negatives.box == 0 and torch.isfinite(only_negatives.total)
    only_negatives.total.backward()
    assert torch.isfinite(objectness.grad).all() and (deltas.grad == 0).all()
    nothing = rpn_loss(objectness, deltas, torch.full((6,), -1), targets, **kwargs)
    assert nothing.total == 0


def test_loss_gradients_flow():
    g = torch.Generator().manual_seed(3)
    objectness = torch.randn(12, generator=g, dtype=torch.float64, requires_grad=True)
    deltas = torch.randn(12, 4, generator=g, dtype=torch.float64, requires_grad=True)
    labels = sampled_labels(12, 4, 5, g)
    targets = torch.randn(12, 4, generator=g, dtype=torch.float64)
    for normalization in ("notes", "torchvision"):
        fn = lambda o, d: rpn_loss(o, d, labels, targets, normalization=normalization).total  # noqa: E731, B023
        assert torch.autograd.gradcheck(fn, (objectness, deltas), fast_mode=True)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"normalization": "mean"}, "normalization must be one of"),
        ({"normalization": "paper"}, "needs num_locations"),
        ({"box_loss_weight": -1.0}, "box_loss_weight must be a finite number >= 0, got -1.0"),
    ],
)
def test_loss_option_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        rpn_loss(torch.zeros(3), torch.zeros(3, 4), torch.zeros(3), torch.zeros(3, 4), **kwargs)


@pytest.mark.parametrize(
    "args, error, match",
    [
        (
            (torch.zeros(3, 1), torch.zeros(3, 4), torch.zeros(3), torch.zeros(3, 4)),
            ValueError,
            r"objectness must be \[M\]",
        ),
        (
            (torch.zeros(3), torch.zeros(3, 5), torch.zeros(3), torch.zeros(3, 4)),
            ValueError,
            r"deltas must be \[3, 4\]",
        ),
        (
            (torch.zeros(3), torch.zeros(3, 4), torch.zeros(2), torch.zeros(3, 4)),
            ValueError,
            r"labels must be \[3\]",
        ),
        (
            (torch.zeros(3), torch.zeros(3, 4), torch.tensor([0, 1, 2]), torch.zeros(3, 4)),
            ValueError,
            "only contain",
        ),
        (
            (
                torch.zeros(3, dtype=torch.long),
                torch.zeros(3, 4),
                torch.zeros(3),
                torch.zeros(3, 4),
            ),
            TypeError,
            "objectness must be a floating",
        ),
    ],
)
def test_loss_input_errors(args, error, match):
    with pytest.raises(error, match=match):
        rpn_loss(*args)


def random_rpn_outputs(feature_size, generator, stride=16):
    anchors = generate_anchors(feature_size, stride, offset=0.0, round_base_anchors=True)
    objectness = torch.randn(anchors.shape[0], generator=generator) * 3
    deltas = torch.randn(anchors.shape[0], 4, generator=generator) * 0.3
    return anchors, objectness, deltas


@pytest.mark.parametrize(
    "feature_size, image_size, pre, post, score_thresh",
    [
        ((20, 25), (320, 400), 1000, 300, 0.0),
        ((13, 9), (200, 150), 5000, 2000, 0.0),
        ((8, 8), (128, 128), 300, 50, 0.6),
    ],
)
def test_generate_proposals_matches_filter_proposals(
    feature_size, image_size, pre, post, score_thresh
):
    g = torch.Generator().manual_seed(feature_size[0])
    anchors, objectness, deltas = random_rpn_outputs(feature_size, g)
    rpn = torchvision_rpn(pre, post, 0.7, score_thresh)
    decoded = rpn.box_coder.decode(deltas, [anchors]).view(1, -1, 4)
    tv_boxes, tv_scores = rpn.filter_proposals(
        decoded, objectness[None], [image_size], [anchors.shape[0]]
    )
    ours = generate_proposals(
        objectness, deltas, anchors, image_size, pre, post, score_thresh=score_thresh
    )
    assert ours.boxes.shape[0] <= post
    assert_close(ours.boxes, tv_boxes[0])
    assert_close(ours.scores, tv_scores[0])
    # Sorted by score and inside the image.
    assert (ours.scores[1:] <= ours.scores[:-1]).all()
    assert (ours.boxes[:, 0::2] <= image_size[1]).all() and (
        ours.boxes[:, 1::2] <= image_size[0]
    ).all()


def test_proposals_are_the_decoded_anchors():
    anchors = torch.tensor([[10.0, 40.0, 50.0, 60.0], [200.0, 200.0, 260.0, 280.0]])
    deltas = torch.tensor([[0.1, -0.2, 0.0, math.log(2.0)], [0.0, 0.0, 0.0, 0.0]])
    objectness = torch.tensor([1.0, 3.0])
    out = generate_proposals(objectness, deltas, anchors, (300, 300), 10, 10)
    assert_close(out.scores, torch.sigmoid(torch.tensor([3.0, 1.0])))
    assert_close(out.boxes, decode_boxes(deltas, anchors)[[1, 0]])


def test_small_and_outside_boxes_are_removed():
    anchors = torch.tensor(
        [[500.0, 500.0, 520.0, 520.0], [0.0, 0.0, 20.0, 20.0], [5.0, 5.0, 5.5, 5.5]]
    )
    deltas = torch.zeros(3, 4)
    out = generate_proposals(torch.zeros(3), deltas, anchors, (100, 100), 10, 10, min_size=1.0)
    # The first is clipped to a zero-size box on the border, the third is 0.5 px: both go.
    assert_close(out.boxes, anchors[1:2])
    empty = generate_proposals(torch.zeros(1), torch.zeros(1, 4), anchors[:1], (100, 100), 10, 10)
    assert empty.boxes.shape == (0, 4) and empty.scores.shape == (0,)


def test_no_gradient_through_proposals():
    anchors = torch.tensor([[0.0, 0.0, 20.0, 20.0]])
    deltas = torch.zeros(1, 4, requires_grad=True)
    objectness = torch.zeros(1, requires_grad=True)
    out = generate_proposals(objectness, deltas, anchors, (100, 100), 10, 10)
    assert not out.boxes.requires_grad and not out.scores.requires_grad


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"objectness": torch.zeros(2)}, ValueError, r"objectness must be \[3\]"),
        ({"deltas": torch.zeros(3, 5)}, ValueError, r"deltas must be \[3, 4\]"),
        ({"anchors": torch.tensor([[5.0, 0, 4, 4]] * 3)}, ValueError, "x2 >= x1"),
        ({"image_size": (0, 10)}, ValueError, "image_size"),
        ({"pre_nms_top_n": 0}, ValueError, "pre_nms_top_n must be an int >= 1, got 0"),
        ({"post_nms_top_n": 2.5}, TypeError, "post_nms_top_n must be an int, got float 2.5"),
        ({"nms_thresh": 1.5}, ValueError, "nms_thresh"),
        ({"min_size": -1.0}, ValueError, "min_size"),
        (
            {"objectness": torch.zeros(3, dtype=torch.long)},
            TypeError,
            "objectness must be a floating",
        ),
    ],
)
def test_generate_proposals_errors(kwargs, error, match):
    args = {
        "objectness": torch.zeros(3),
        "deltas": torch.zeros(3, 4),
        "anchors": torch.tensor([[0.0, 0, 4, 4]] * 3),
        "image_size": (10, 10),
        "pre_nms_top_n": 5,
        "post_nms_top_n": 5,
    } | kwargs
    with pytest.raises(error, match=match):
        generate_proposals(**args)


def test_head_rejects_wrong_channels():
    with pytest.raises(ValueError, match=r"features must be \[N, 8, H, W\]"):
        RPNHead(8, 9)(torch.zeros(1, 4, 5, 5))
    with pytest.raises(ValueError, match="in_channels must be an int >= 1, got 0"):
        RPNHead(0, 9)
