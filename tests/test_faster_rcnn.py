"""Tests for coursepkg.models.faster_rcnn: the Detector contract, edge cases, and torchvision's FasterRCNN.

The strongest checks build torchvision's ``FasterRCNN`` around *our* backbone, copy our heads'
weights into it, and compare: detections at inference, and the four losses in training when the
samplers are made deterministic (budgets larger than the candidates, so everything is kept).
"""

from collections import OrderedDict

import pytest
import torch
from torch.testing import assert_close
from torchvision.models.detection import FasterRCNN as TorchvisionFasterRCNN
from torchvision.models.detection._utils import BoxCoder, Matcher
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.rpn import RPNHead as TorchvisionRPNHead
from torchvision.ops import MultiScaleRoIAlign

from coursepkg.models.backbones import ConvBackbone
from coursepkg.models.detector import check_detections, check_losses
from coursepkg.models.faster_rcnn import FasterRCNN, FasterRCNNConfig
from coursepkg.models.rpn import assign_rpn_targets

LOSS_KEYS = ["rpn_objectness", "rpn_box", "roi_cls", "roi_box"]

# A tiny model: 64 x 64 images, stride 8 -> an 8 x 8 feature map.
TINY = FasterRCNNConfig(
    num_classes=3,
    backbone_channels=(8, 16, 16),
    convs_per_stage=1,
    representation_size=32,
    rpn_pre_nms_top_n_train=200,
    rpn_post_nms_top_n_train=100,
    rpn_pre_nms_top_n_test=100,
    rpn_post_nms_top_n_test=50,
)


def make_batch(seed=0, batch=2, size=64, num_classes=3):
    """Random images with a few bright rectangles and their boxes."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, 3, size, size, generator=g) * 0.2
    targets = []
    for b in range(batch):
        count = int(torch.randint(1, 4, (1,), generator=g))
        xy = torch.randint(0, size - 20, (count, 2), generator=g).float()
        wh = torch.randint(6, 20, (count, 2), generator=g).float()
        boxes = torch.cat([xy, xy + wh], dim=1)
        labels = torch.randint(0, num_classes, (count,), generator=g)
        for (x1, y1, x2, y2), label in zip(boxes.long().tolist(), labels.tolist(), strict=True):
            images[b, label % 3, y1:y2, x1:x2] = 1.0
        targets.append({"boxes": boxes, "labels": labels})
    return images, targets


def tiny_model(seed=0, config=TINY):
    torch.manual_seed(seed)
    return FasterRCNN(config)


# --------------------------------------------------------------------------- the contract


def test_losses_contract():
    model = tiny_model()
    images, targets = make_batch()
    losses = model.losses(images, targets)
    assert list(losses) == LOSS_KEYS
    values = check_losses(losses)  # finite float scalars
    assert all(value > 0 for value in values.values())
    assert all(loss.requires_grad for loss in losses.values())
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_detect_contract_and_sorted_scores():
    model = tiny_model()
    images, _ = make_batch()
    # Sharper classifier so that scores pass the 0.05 threshold.
    torch.nn.init.normal_(model.box_head.cls_score.weight, std=0.5)
    model.eval()
    with torch.no_grad():
        detections = model.detect(images)
    check_detections(detections, images.shape[0], num_classes=TINY.num_classes)
    assert sum(d["boxes"].shape[0] for d in detections) > 0
    for det in detections:
        assert det["boxes"].dtype == torch.float32 and det["labels"].dtype == torch.int64
        assert bool((det["scores"][:-1] >= det["scores"][1:]).all())
        assert bool((det["scores"] > TINY.score_thresh).all())
        assert det["boxes"].shape[0] <= TINY.detections_per_img
        assert float(det["boxes"].min()) >= 0 and float(det["boxes"].max()) <= 64


def test_images_without_objects():
    model = tiny_model()
    images, _ = make_batch(batch=2)
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}] * 2
    losses = model.losses(images, empty)
    values = check_losses(losses)
    assert values["rpn_box"] == 0.0 and values["roi_box"] == 0.0  # no positive anchor or RoI
    assert values["rpn_objectness"] > 0 and values["roi_cls"] > 0
    sum(losses.values()).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(bool(torch.isfinite(g).all()) for g in grads)


def test_mixed_batch_and_ground_truth_smaller_than_a_pixel():
    model = tiny_model()
    images, targets = make_batch(batch=2)
    targets[0] = {"boxes": torch.tensor([[10.0, 10.0, 10.5, 10.25]]), "labels": torch.tensor([2])}
    targets[1] = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    values = check_losses(model.losses(images, targets))
    assert values["roi_box"] > 0  # the sub-pixel box itself is a foreground RoI
    assert all(torch.isfinite(torch.tensor(v)) for v in values.values())


def test_overfits_two_images():
    model = tiny_model(seed=1)
    images, targets = make_batch(seed=3, batch=2)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    history = []
    for _ in range(12):
        losses = model.losses(images, targets, generator=generator)
        total = sum(losses.values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        history.append(float(total.detach()))
    assert history[-1] < 0.5 * history[0], history


def test_input_errors():
    model = tiny_model()
    images, targets = make_batch()
    with pytest.raises(ValueError, match=r"images must be \[B, 3, H, W\]"):
        model.losses(images[:, :1], targets)
    with pytest.raises(TypeError, match="images must be a floating tensor"):
        model.detect((images * 255).to(torch.uint8))
    with pytest.raises(ValueError, match="targets must have one dict per image"):
        model.losses(images, targets[:1])
    bad = [dict(targets[0]), targets[1]]
    bad[0]["boxes"] = torch.tensor([[5.0, 5.0, 5.0, 9.0]])
    bad[0]["labels"] = torch.tensor([0])
    with pytest.raises(ValueError, match=r"targets\[0\]\['boxes'\] must have positive widths"):
        model.losses(images, bad)
    bad[0]["boxes"] = torch.tensor([[5.0, 5.0, 8.0, 9.0]])
    bad[0]["labels"] = torch.tensor([3])  # K = 3: labels 0..2
    with pytest.raises(ValueError, match=r"targets\[0\]\[.labels.\] must be in 0..2 \(dataset labels 0..K-1\), label 0 is 3"):
        model.losses(images, bad)


def test_config_and_backbone():
    config = FasterRCNNConfig()
    assert config.stride == 8 and config.num_anchors == 12
    backbone = ConvBackbone((4, 8), convs_per_stage=2)
    assert backbone.out_channels == 8 and backbone.stride == 4
    assert backbone(torch.zeros(1, 3, 30, 33)).shape == (1, 8, 8, 9)  # ceil(30 / 4), ceil(33 / 4)
    with pytest.raises(ValueError, match="num_classes must be >= 1"):
        FasterRCNNConfig(num_classes=0)
    with pytest.raises(ValueError, match="rpn_bg_iou_thresh must be <= rpn_fg_iou_thresh"):
        FasterRCNNConfig(rpn_bg_iou_thresh=0.8)
    with pytest.raises(ValueError, match="backbone_channels"):
        FasterRCNNConfig(backbone_channels=())
    model = FasterRCNN(config)
    anchors = model.anchors((16, 16), torch.zeros(1))
    assert anchors.shape == (16 * 16 * 12, 4)
    # Anchor sizes sqrt(w * h) are the documented 8, 16, 32, 64 px.
    sizes = ((anchors[:12, 2] - anchors[:12, 0]) * (anchors[:12, 3] - anchors[:12, 1])).sqrt()
    assert_close(sizes.round(decimals=3).unique(), torch.tensor([8.0, 16.0, 32.0, 64.0]))


# --------------------------------------------------------------------------- RPN targets


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rpn_targets_match_torchvision_when_everything_is_sampled(seed):
    model = tiny_model()
    anchors = model.anchors((8, 8), torch.zeros(1))
    _, targets = make_batch(seed=seed, batch=1)
    gt = targets[0]["boxes"]
    got = assign_rpn_targets(anchors, gt, batch_size_per_image=10**6, positive_fraction=1.0)
    from torchvision.ops import box_iou

    matches = Matcher(0.7, 0.3, allow_low_quality_matches=True)(box_iou(gt, anchors))
    expected = torch.where(matches >= 0, 1, torch.where(matches == -1, 0, -1))
    assert torch.equal(got.labels, expected)
    positive = matches >= 0
    expected_deltas = BoxCoder((1.0, 1.0, 1.0, 1.0)).encode_single(gt[matches[positive]], anchors[positive])
    assert_close(got.target_deltas[positive], expected_deltas)
    assert bool((got.target_deltas[~positive] == 0).all())


def test_rpn_targets_sampling_budget():
    model = tiny_model()
    anchors = model.anchors((8, 8), torch.zeros(1))
    _, targets = make_batch(seed=5, batch=1)
    got = assign_rpn_targets(anchors, targets[0]["boxes"], batch_size_per_image=32, positive_fraction=0.25,
                             generator=torch.Generator().manual_seed(0))
    assert int((got.labels >= 0).sum()) == 32
    assert 1 <= int((got.labels == 1).sum()) <= 8
    none = assign_rpn_targets(anchors, torch.zeros(0, 4), batch_size_per_image=32)
    assert int((none.labels == 0).sum()) == 32 and int((none.labels == 1).sum()) == 0


# --------------------------------------------------------------------------- vs torchvision


def torchvision_twin(model: FasterRCNN, size: int, *, everything: bool = False) -> TorchvisionFasterRCNN:
    """torchvision's FasterRCNN around ``model``'s backbone, with copies of its heads' weights.

    Our config for this comparison uses torchvision's conventions: anchor centres at offset 0,
    anchors with integer corners, RoI Align with ``aligned=False``. With ``everything`` the
    samplers keep every labelled anchor and proposal, so training is deterministic.
    """
    c = model.config
    sizes = tuple(c.anchor_base_size * s for s in c.anchor_scales)
    budget = {} if not everything else dict(
        rpn_batch_size_per_image=10**6, rpn_positive_fraction=1.0,
        box_batch_size_per_image=10**6, box_positive_fraction=1.0,
    )
    twin = TorchvisionFasterRCNN(
        model.backbone,
        min_size=size, max_size=size, image_mean=[0.0] * 3, image_std=[1.0] * 3,
        rpn_anchor_generator=AnchorGenerator(sizes=(sizes,), aspect_ratios=(c.anchor_ratios,)),
        rpn_head=TorchvisionRPNHead(model.backbone.out_channels, c.num_anchors),
        rpn_pre_nms_top_n_train=c.rpn_pre_nms_top_n_train,
        rpn_post_nms_top_n_train=c.rpn_post_nms_top_n_train,
        rpn_pre_nms_top_n_test=c.rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_test=c.rpn_post_nms_top_n_test,
        box_roi_pool=MultiScaleRoIAlign(["0"], c.roi_size, c.roi_sampling_ratio),
        box_head=TwoMLPHead(model.backbone.out_channels * c.roi_size**2, c.representation_size),
        box_predictor=FastRCNNPredictor(c.representation_size, c.num_classes + 1),
        box_score_thresh=c.score_thresh,
        **budget,
    )
    head = twin.rpn.head
    with torch.no_grad():
        head.conv[0][0].weight.copy_(model.rpn_head.conv.weight)
        head.conv[0][0].bias.copy_(model.rpn_head.conv.bias)
        head.cls_logits.load_state_dict(model.rpn_head.cls_logits.state_dict())
        head.bbox_pred.load_state_dict(model.rpn_head.bbox_pred.state_dict())
        twin.roi_heads.box_head.fc6.load_state_dict(model.box_head.fc6.state_dict())
        twin.roi_heads.box_head.fc7.load_state_dict(model.box_head.fc7.state_dict())
        twin.roi_heads.box_predictor.cls_score.load_state_dict(model.box_head.cls_score.state_dict())
        twin.roi_heads.box_predictor.bbox_pred.load_state_dict(model.box_head.bbox_pred.state_dict())
    return twin


# Integer anchor corners (so torchvision's rounding changes nothing), torchvision's centres and
# RoI Align; small proposal counts keep the test fast.
TWIN = FasterRCNNConfig(
    num_classes=3,
    backbone_channels=(8, 16, 16),
    convs_per_stage=1,
    representation_size=32,
    anchor_scales=(2.0, 4.0),
    anchor_ratios=(0.25, 1.0, 4.0),
    anchor_offset=0.0,
    roi_aligned=False,
    rpn_pre_nms_top_n_train=150,
    rpn_post_nms_top_n_train=60,
    rpn_pre_nms_top_n_test=120,
    rpn_post_nms_top_n_test=40,
)


def perturb(model, seed):
    """Less uniform weights than the initialisation, so that scores and deltas spread out."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in (model.rpn_head.cls_logits, model.rpn_head.bbox_pred, model.box_head.cls_score,
                      model.box_head.bbox_pred):
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=g) * 0.3)
            layer.bias.copy_(torch.randn(layer.bias.shape, generator=g) * 0.3)


@pytest.mark.parametrize("seed", [0, 1])
def test_detect_matches_torchvision(seed):
    model = tiny_model(seed, TWIN)
    perturb(model, seed)
    twin = torchvision_twin(model, 64)
    images, _ = make_batch(seed=seed, batch=2)
    model.eval()
    twin.eval()
    with torch.no_grad():
        ours = model.detect(images)
        theirs = twin(list(images))
    assert sum(d["boxes"].shape[0] for d in ours) > 10
    for a, b in zip(ours, theirs, strict=True):
        assert_close(a["boxes"], b["boxes"], atol=1e-4, rtol=1e-4)
        assert_close(a["scores"], b["scores"], atol=1e-5, rtol=1e-4)
        assert torch.equal(a["labels"], b["labels"] - 1)


@pytest.mark.parametrize("seed", [0, 1])
def test_losses_match_torchvision_with_deterministic_sampling(seed):
    config = FasterRCNNConfig(**{**TWIN.__dict__, "rpn_batch_size_per_image": 10**6,
                                 "rpn_positive_fraction": 1.0, "roi_batch_size_per_image": 10**6,
                                 "roi_positive_fraction": 1.0})
    model = tiny_model(seed, config)
    perturb(model, seed)
    twin = torchvision_twin(model, 64, everything=True)
    images, targets = make_batch(seed=seed, batch=2)
    model.train()
    twin.train()
    ours = model.losses(images, targets)
    theirs = twin(list(images), [{"boxes": t["boxes"], "labels": t["labels"] + 1} for t in targets])
    names = {"rpn_objectness": "loss_objectness", "rpn_box": "loss_rpn_box_reg",
             "roi_cls": "loss_classifier", "roi_box": "loss_box_reg"}
    for key, name in names.items():
        assert_close(ours[key], theirs[name], atol=1e-5, rtol=1e-4, msg=key)


def test_twin_uses_the_same_backbone_object():
    model = tiny_model(0, TWIN)
    twin = torchvision_twin(model, 64)
    assert twin.backbone is model.backbone
    features = OrderedDict([("0", model.backbone(torch.zeros(1, 3, 64, 64)))])
    assert features["0"].shape == (1, 16, 8, 8)


def test_mixed_precision_losses_are_finite():
    """Under autocast (float16 on CUDA in `fit`; bfloat16 here on the CPU) box math stays float32."""
    model = tiny_model()
    images, targets = make_batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model.losses(images, targets)
    values = check_losses(losses)
    assert all(v > 0 for v in values.values())
    assert all(loss.dtype == torch.float32 for loss in losses.values())
