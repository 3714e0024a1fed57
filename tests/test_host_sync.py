"""Host-device synchronisations of the training step: fewer of them, and the same results.

The training step of Fast and Faster R-CNN validates its inputs once per batch, labels and
samples RoIs and anchors with masks and one host sync per batch, and reduces its losses without
boolean selections. Each test below pins one of those rewrites against the code it replaced
(written out here as a reference) or against the checked public functions, and counts the
syncs with the counter of ``benchmarks/bench_host_sync.py``.
"""

import pytest
import torch
from torch.testing import assert_close

from benchmarks.bench_host_sync import SyncCounter, counting
from coursepkg.models import fast_rcnn as fast_rcnn_module
from coursepkg.models.assignment import (
    _match_anchors,
    _sample_balanced,
    _sample_balanced_many,
    sample_balanced,
)
from coursepkg.models.detector import check_targets
from coursepkg.models.fast_rcnn import FastRCNN, FastRCNNConfig, drop_easy_background
from coursepkg.models.faster_rcnn import FasterRCNN, FasterRCNNConfig
from coursepkg.models.roi_heads import (
    ROI_BOX_WEIGHTS,
    _fastrcnn_loss,
    _sample_rois_batch,
    fastrcnn_loss,
    sample_rois,
)
from coursepkg.models.rpn import (
    _assign_rpn_targets_batch,
    _rpn_loss,
    assign_rpn_targets,
    generate_proposals,
    rpn_loss,
)
from coursepkg.ops import roi_pool as roi_pool_module
from coursepkg.ops.boxes import box_iou
from coursepkg.ops.validation import check_labels, check_target


def syncs(function, *args, **kwargs) -> int:
    """How many host synchronisations ``function(*args, **kwargs)`` makes."""
    counter = SyncCounter()
    with counting(counter):
        function(*args, **kwargs)
    return sum(counter.events.values())


def random_boxes(n, g, size=100.0):
    xy = torch.rand(n, 2, generator=g) * size
    wh = torch.rand(n, 2, generator=g) * size / 3 + 1.0
    return torch.cat([xy, xy + wh], dim=1)


def near(boxes, g, count, amount=0.4):
    """``count`` proposals around ``boxes`` (corners moved by up to ``amount`` of the size)."""
    if boxes.shape[0] == 0:
        return random_boxes(count, g)
    pick = boxes[torch.randint(0, boxes.shape[0], (count,), generator=g)]
    wh = (pick[:, 2:] - pick[:, :2]).repeat(1, 2)
    moved = pick + (torch.rand(count, 4, generator=g) * 2 - 1) * amount * wh
    low, high = torch.minimum(moved[:, :2], moved[:, 2:]), torch.maximum(moved[:, :2], moved[:, 2:])
    return torch.cat([low, high], dim=1)


def sample_balanced_as_before(labels, batch_size_per_image, positive_fraction, generator):
    """The sampler before the rewrite: ``torch.where`` selections, one image at a time."""
    positives = torch.where(labels == 1)[0]
    negatives = torch.where(labels == 0)[0]
    num_pos = min(positives.numel(), int(batch_size_per_image * positive_fraction))
    num_neg = min(negatives.numel(), batch_size_per_image - num_pos)

    def choose(candidates, k):
        order = torch.randperm(candidates.numel(), generator=generator)[:k]
        return candidates[order].sort().values

    return choose(positives, num_pos), choose(negatives, num_neg)


# --------------------------------------------------------------------------- same results


@pytest.mark.parametrize("seed", range(4))
def test_batched_sampler_draws_what_one_call_per_image_drew(seed):
    g = torch.Generator().manual_seed(seed)
    labels = [torch.randint(-1, 2, (n,), generator=g) for n in (300, 0, 7, 1000)]
    labels.append(torch.full((50,), -1))  # nothing to sample
    ours = _sample_balanced_many(labels, 64, 0.25, torch.Generator().manual_seed(seed))
    before = torch.Generator().manual_seed(seed)
    for each, got in zip(labels, ours, strict=True):
        pos, neg = sample_balanced_as_before(each, 64, 0.25, before)
        assert torch.equal(got.pos_idx, pos) and torch.equal(got.neg_idx, neg)
    # ... and the single-image entry points agree with it
    again = torch.Generator().manual_seed(seed)
    single = [_sample_balanced(each, 64, 0.25, again) for each in labels]
    assert all(torch.equal(a.pos_idx, b.pos_idx) for a, b in zip(single, ours, strict=True))
    checked = sample_balanced(labels[0], 64, 0.25, torch.Generator().manual_seed(seed))
    assert torch.equal(checked.neg_idx, ours[0].neg_idx)


@pytest.mark.parametrize("seed", range(3))
def test_matching_with_torch_where_labels_as_masked_assignments_did(seed):
    g = torch.Generator().manual_seed(seed)
    gt = random_boxes(4, g)
    anchors = torch.cat([near(gt, g, 60), random_boxes(40, g)])
    iou = box_iou(gt, anchors)
    for fg, bg, low_quality in [(0.7, 0.3, True), (0.5, 0.5, False), (0.6, 0.4, False)]:
        labels = torch.full((anchors.shape[0],), -1)
        best, _ = iou.max(dim=0)
        labels[best < bg] = 0
        labels[best >= fg] = 1
        if low_quality:
            top = iou.max(dim=1).values[:, None]
            labels[((iou == top) & (top > 0)).any(dim=0)] = 1
        assert torch.equal(_match_anchors(iou, fg, bg, low_quality).labels, labels)


@pytest.mark.parametrize("min_iou", [0.0, 0.1, 0.3])
def test_leaving_out_easy_background_samples_what_dropping_it_did(min_iou):
    """Fast R-CNN's sampler marks the easy background instead of removing it first: the draws,
    boxes, labels, targets and matches are those of drop_easy_background + sample_rois."""
    g = torch.Generator().manual_seed(int(min_iou * 10))
    gts = [random_boxes(3, g), random_boxes(1, g), torch.zeros(0, 4), random_boxes(2, g)]
    proposals = [near(gts[0], g, 80), near(gts[1], g, 30), random_boxes(5, g), torch.zeros(0, 4)]
    labels = [torch.randint(0, 4, (gt.shape[0],), generator=g) for gt in gts]
    settings = dict(batch_size_per_image=16, positive_fraction=0.25, fg_iou_thresh=0.5)
    ours = _sample_rois_batch(
        proposals, gts, labels, 16, 0.25, 0.5, ROI_BOX_WEIGHTS, True,
        torch.Generator().manual_seed(7), min_iou=min_iou,
    )  # fmt: skip
    before = torch.Generator().manual_seed(7)
    for p, gt, lab, got in zip(proposals, gts, labels, ours, strict=True):
        candidates = drop_easy_background(p, gt, min_iou)
        want = sample_rois(candidates, gt, lab, **settings, generator=before)
        for field, a, b in zip(want._fields, got, want, strict=True):
            assert torch.equal(a, b), field


def fastrcnn_loss_as_before(
    class_logits, box_regression, labels, regression_targets, beta, reduction
):
    """The box term before the rewrite: the foreground rows selected with ``nonzero``."""
    num, num_classes = class_logits.shape
    fg = torch.nonzero(labels > 0).flatten()
    deltas = box_regression.reshape(num, num_classes, 4)[fg, labels[fg]]
    each = torch.nn.functional.smooth_l1_loss(
        deltas, regression_targets[fg], beta=beta, reduction="none"
    ).sum(1)
    if reduction == "none":
        return box_regression.new_zeros(num).index_put((fg,), each)
    return each.sum() / (num if reduction == "mean" else 1)


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_masked_fastrcnn_box_term_equals_the_selected_one(reduction):
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(40, 4, generator=g)
    deltas = torch.randn(40, 16, generator=g, requires_grad=True)
    labels = torch.randint(0, 4, (40,), generator=g)
    targets = torch.randn(40, 4, generator=g)
    ours = _fastrcnn_loss(logits, deltas, labels, targets, 1.0 / 9, reduction).box_regression
    want = fastrcnn_loss_as_before(logits, deltas, labels, targets, 1.0 / 9, reduction)
    if reduction == "none":
        assert torch.equal(ours, want)  # the same numbers, bit for bit
    assert_close(ours, want)
    (grad_ours,) = torch.autograd.grad(ours.sum(), deltas)
    (grad_want,) = torch.autograd.grad(want.sum(), deltas)
    assert torch.equal(grad_ours, grad_want)
    public = fastrcnn_loss(logits, deltas, labels, targets, reduction=reduction).box_regression
    assert torch.equal(public, ours)


def test_a_nan_output_outside_the_loss_passes_no_gradient():
    """The masks replace selections: a background RoI's or unsampled anchor's NaN must stay out
    of the loss and of the gradient, as it did when those rows were never selected."""
    deltas = torch.zeros(3, 12)
    deltas[0] = float("nan")  # RoI 0 is background
    deltas.requires_grad_(True)
    loss = _fastrcnn_loss(torch.zeros(3, 3), deltas, torch.tensor([0, 1, 2]), torch.ones(3, 4),
                          1.0, "sum")  # fmt: skip
    loss.box_regression.backward()
    assert bool(torch.isfinite(loss.box_regression)) and bool(torch.isfinite(deltas.grad).all())

    objectness = torch.tensor([0.5, float("nan"), -1.0], requires_grad=True)
    rpn_deltas = torch.tensor([[0.1] * 4, [float("nan")] * 4, [0.2] * 4], requires_grad=True)
    labels = torch.tensor([1.0, -1.0, 0.0])  # the NaN anchor is not sampled
    for reduction in ("sum", "mean"):
        out = rpn_loss(objectness, rpn_deltas, labels, torch.zeros(3, 4), reduction=reduction)
        objectness.grad = rpn_deltas.grad = None
        out.total.backward()
        assert bool(torch.isfinite(out.total))
        assert bool(torch.isfinite(objectness.grad).all() & torch.isfinite(rpn_deltas.grad).all())


def tiny_faster_rcnn():
    torch.manual_seed(0)
    config = FasterRCNNConfig(
        num_classes=3, backbone_channels=(8, 16, 16), convs_per_stage=1, representation_size=32,
        rpn_pre_nms_top_n_train=200, rpn_post_nms_top_n_train=100,
    )  # fmt: skip
    return FasterRCNN(config)


def object_batch(seed, batch=2, size=64):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, 3, size, size, generator=g)
    targets = []
    for count in (2, 1, 0, 3)[:batch]:
        xy = torch.randint(0, size - 20, (count, 2), generator=g).float()
        wh = torch.randint(6, 20, (count, 2), generator=g).float()
        targets.append(
            {
                "boxes": torch.cat([xy, xy + wh], dim=1),
                "labels": torch.randint(0, 3, (count,), generator=g),
            }
        )
    return images, targets


@pytest.mark.parametrize("batch", [2, 3])
def test_faster_rcnn_losses_equal_the_checked_functions_step_by_step(batch):
    """The training step calls unchecked, batched cores; the public functions one image at a
    time (the step before the rewrite) must give the same four losses."""
    model = tiny_faster_rcnn()
    c = model.config
    images, targets = object_batch(batch, batch)
    ours = model.losses(images, targets, generator=torch.Generator().manual_seed(1))

    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        features = model(images)
        head = model.rpn_head(features)
    from coursepkg.models.rpn import flatten_predictions

    objectness, deltas = flatten_predictions(head.objectness, head.deltas)
    anchors = model.anchors(features.shape[-2:], objectness)
    proposals = [
        generate_proposals(objectness[i], deltas[i], anchors, (64, 64), 200, 100,
                           nms_thresh=c.rpn_nms_thresh, min_size=c.rpn_min_size).boxes
        for i in range(batch)
    ]  # fmt: skip
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.rpn(features, (64, 64)).proposals, proposals, strict=True)
    )
    rpn_targets = [
        assign_rpn_targets(anchors, t["boxes"], fg_iou_thresh=c.rpn_fg_iou_thresh,
                           bg_iou_thresh=c.rpn_bg_iou_thresh, batch_size_per_image=c.rpn_batch_size_per_image,
                           positive_fraction=c.rpn_positive_fraction, generator=g)
        for t in targets
    ]  # fmt: skip
    rpn_labels = torch.cat([t.labels for t in rpn_targets])
    rpn = rpn_loss(objectness.flatten(), deltas.reshape(-1, 4), rpn_labels,
                   torch.cat([t.target_deltas for t in rpn_targets]), reduction="mean")  # fmt: skip
    samples = [
        sample_rois(p, t["boxes"], t["labels"], batch_size_per_image=c.roi_batch_size_per_image,
                    positive_fraction=c.roi_positive_fraction, fg_iou_thresh=c.roi_fg_iou_thresh,
                    box_weights=c.box_weights, generator=g)
        for p, t in zip(proposals, targets, strict=True)
    ]  # fmt: skip
    with torch.no_grad():
        roi_head = model.box_head(model.pool(features, [s.proposals for s in samples]))
    roi = fastrcnn_loss(roi_head.class_logits, roi_head.box_regression,
                        torch.cat([s.labels for s in samples]),
                        torch.cat([s.regression_targets for s in samples]))  # fmt: skip
    want = [rpn.objectness, rpn.box, roi.classification, roi.box_regression]
    for key, value in zip(ours, want, strict=True):
        assert_close(ours[key].detach(), value, rtol=1e-5, atol=1e-6, msg=key)


def tiny_fast_rcnn(proposal_fn, **changes):
    torch.manual_seed(0)
    base = dict(num_classes=3, backbone_width=4, roi_size=2, representation_size=16,
                image_min_size=64, batch_size_per_image=8)  # fmt: skip
    return FastRCNN(FastRCNNConfig(**(base | changes)), proposal_fn)


@pytest.mark.parametrize("bg_iou_thresh_lo", [0.0, 0.1])
def test_fast_rcnn_one_sync_path_equals_the_checked_path(monkeypatch, bg_iou_thresh_lo):
    images, targets = object_batch(5, batch=3)
    g = torch.Generator().manual_seed(2)
    with_proposals = [t | {"proposals": near(t["boxes"], g, 40, 0.6)} for t in targets]
    model = tiny_fast_rcnn(lambda image: None, bg_iou_thresh_lo=bg_iou_thresh_lo)
    fast = model.losses(images, with_proposals, generator=torch.Generator().manual_seed(3))
    monkeypatch.setattr(fast_rcnn_module, "_all_true", lambda flags: False)  # every check fails
    checked = model.losses(images, with_proposals, generator=torch.Generator().manual_seed(3))
    for key in fast:
        assert torch.equal(fast[key], checked[key]), key


# --------------------------------------------------------------------------- the same errors


def test_batch_checks_name_the_first_problem():
    good = {"boxes": torch.tensor([[0.0, 0.0, 5.0, 5.0]]), "labels": torch.tensor([1])}
    bad_label = {"boxes": torch.tensor([[0.0, 0.0, 5.0, 5.0]]), "labels": torch.tensor([7])}
    nan_box = {"boxes": torch.tensor([[0.0, float("nan"), 5.0, 5.0]]), "labels": torch.tensor([0])}
    flat = {"boxes": torch.tensor([[0.0, 0.0, 0.0, 5.0]]), "labels": torch.tensor([0])}
    with pytest.raises(
        ValueError, match=r"targets\[1\]\['labels'\] must be in 0\.\.2 .* label 0 is 7"
    ):
        check_targets([good, bad_label], 2, num_classes=3)
    with pytest.raises(ValueError, match=r"targets\[0\]\['boxes'\] must be finite"):
        check_targets([nan_box, bad_label], 2, num_classes=3)
    with pytest.raises(TypeError, match=r"targets\[1\]\['labels'\] must be an int64"):
        check_targets([bad_label, good | {"labels": torch.tensor([1.0])}], 2)  # types first
    with pytest.raises(ValueError, match=r"targets\[2\]\['boxes'\] must have positive widths"):
        check_targets([good, good, flat], 3, positive_size=True)
    check_targets([good, flat], 2)  # zero width is fine without positive_size
    # Finite coordinates whose width overflows float32 are valid boxes: the slow path says so.
    huge = {"boxes": torch.tensor([[-3e38, 0.0, 3e38, 1.0]]), "labels": torch.tensor([0])}
    check_targets([good, huge], 2)
    with pytest.raises(ValueError, match=r"target\['boxes'\] must lie inside the image"):
        check_target(good, image_size=(4, 8))
    with pytest.raises(ValueError, match=r"gt_labels must be >= 0 .* label 1 is -2"):
        check_labels(torch.tensor([0, -2]), "gt_labels", 2)


def test_fast_rcnn_training_errors_keep_their_messages():
    images, targets = object_batch(1, batch=2)
    targets[1]["boxes"] = torch.tensor([[5.0, 5.0, 30.0, 30.0]])
    targets[1]["labels"] = torch.tensor([0])
    model = tiny_fast_rcnn(lambda image: torch.tensor([[0.0, 0.0, 20.0, 20.0]]))
    bad = [targets[0], targets[1] | {"proposals": torch.tensor([[5.0, 5.0, 1.0, 9.0]])}]
    with pytest.raises(
        ValueError, match=r"targets\[1\]\['proposals'\] \(xyxy\) must have x2 >= x1"
    ):
        model.losses(images, bad)
    with pytest.raises(ValueError, match=r"proposal_fn\(image\) must be \[N, 4\]"):
        tiny_fast_rcnn(lambda image: torch.zeros(3, 5)).losses(images, targets)
    flat = [
        targets[0],
        {"boxes": torch.tensor([[5.0, 5.0, 5.0, 9.0]]), "labels": torch.tensor([0])},
    ]
    with pytest.raises(ValueError, match=r"^gt_boxes must have positive widths and heights"):
        model.losses(images, flat)  # sample_rois' message, as before


def test_faster_rcnn_names_the_image_with_a_non_finite_prediction(monkeypatch):
    model = tiny_faster_rcnn()
    images, targets = object_batch(2, batch=2)
    forward = model.rpn_head.forward

    def nan_in_image_1(features):
        out = forward(features)
        objectness = out.objectness.clone()
        objectness[1, 0, 2, 3] = float("nan")
        return out._replace(objectness=objectness)

    monkeypatch.setattr(model.rpn_head, "forward", nan_in_image_1)
    with pytest.raises(
        ValueError, match=r"objectness must be finite \(no NaN or inf\), element \d+ is nan"
    ):
        model.losses(images, targets)


# --------------------------------------------------------------------------- fewer syncs


def test_checks_cost_one_sync_for_a_whole_batch():
    targets = [
        {
            "boxes": random_boxes(n, torch.Generator().manual_seed(n)),
            "labels": torch.zeros(n, dtype=torch.int64),
        }
        for n in (3, 0, 5, 1)
    ]
    assert syncs(check_targets, targets, 4, num_classes=2, positive_size=True) == 1
    assert syncs(check_target, targets[0], num_classes=2, image_size=(200, 200)) == 1
    assert syncs(check_labels, targets[0]["labels"], "labels", 3, num_classes=2) == 1


def test_assignment_sampling_and_losses_cost_one_sync_per_batch():
    g = torch.Generator().manual_seed(0)
    gts = [random_boxes(3, g), torch.zeros(0, 4), random_boxes(2, g)]
    anchors = random_boxes(500, g)
    iou = box_iou(gts[0], anchors)
    assert syncs(_match_anchors, iou, 0.7, 0.3, True) == 0
    assert syncs(_assign_rpn_targets_batch, anchors, gts, 0.7, 0.3, 256, 0.5, g) == 1
    labels = [torch.randint(0, 3, (gt.shape[0],), generator=g) for gt in gts]
    proposals = [near(gt, g, 50) for gt in gts]
    assert syncs(_sample_rois_batch, proposals, gts, labels, 64, 0.25, 0.5, ROI_BOX_WEIGHTS, True, g,
                 min_iou=0.1) == 1  # fmt: skip
    m = 500
    rpn_args = (torch.randn(m, generator=g), torch.randn(m, 4, generator=g),
                torch.randint(-1, 2, (m,), generator=g), torch.randn(m, 4, generator=g))  # fmt: skip
    for normalization in ("torchvision", "notes"):
        assert syncs(_rpn_loss, *rpn_args, normalization, 1.0, 1.0, None, "mean") == 0
    loss_args = (torch.randn(40, 4, generator=g), torch.randn(40, 16, generator=g),
                 torch.randint(0, 4, (40,), generator=g), torch.randn(40, 4, generator=g))  # fmt: skip
    assert syncs(_fastrcnn_loss, *loss_args, 1.0, "sum") == 0


# --------------------------------------------------------------------------- RoI pooling's plan


def caps_as_before(h_start, h_end, w_start, w_end, num_cells, channels):
    """RoI pooling's choice of sparse-table levels before the rewrite: caps up to the longest
    bin, priced one pair at a time on the host."""
    length_y, length_x = (h_end - h_start).clamp(min=0), (w_end - w_start).clamp(min=0)
    bins = h_start.shape[1] * w_start.shape[1]

    def runs_needed(length, cap):
        return roi_pool_module._run_size(length, cap)[2].amax(dim=1).clamp(min=1)

    top_y, top_x = (max(int(length.max()), 1).bit_length() for length in (length_y, length_x))
    best = None
    for cap_y in range(top_y):
        for cap_x in range(top_x):
            tables = (cap_y + 1) * (cap_x + 1)
            if tables > 1 and tables * num_cells * channels > roi_pool_module._TABLE_ELEMENTS:
                continue
            reads = int((runs_needed(length_y, cap_y) * runs_needed(length_x, cap_x)).sum()) * bins
            cost = reads + 2 * (tables - 1) * num_cells
            if best is None or cost < best[0]:
                best = (cost, cap_y, cap_x)
    return best[1:]


@pytest.mark.parametrize("table_elements", [None, 2**20, 2**16])
@pytest.mark.parametrize(
    ("num_rois", "size", "out"), [(512, (50, 68), 7), (40, (100, 136), 7), (3, (9, 5), 2)]
)
def test_roi_pool_plans_as_before_with_one_sync(monkeypatch, table_elements, num_rois, size, out):
    if table_elements is not None:  # fewer levels fit: the limit decides
        monkeypatch.setattr(roi_pool_module, "_TABLE_ELEMENTS", table_elements)
    g = torch.Generator().manual_seed(num_rois)
    height, width = size
    xy = torch.rand(num_rois, 2, generator=g) * torch.tensor([width, height]) * 1.2 - 2
    wh = torch.rand(num_rois, 2, generator=g) * torch.tensor([width, height]) * 0.7
    corners = torch.cat([xy, xy + wh], dim=1).round().long()  # [K, 4] cells, some outside
    h_start, h_end = roi_pool_module._pool_bins(corners[:, 1::2], height, out, torch.float32)
    w_start, w_end = roi_pool_module._pool_bins(corners[:, 0::2], width, out, torch.float32)
    num_cells, channels = 2 * height * width, 64
    args = (h_start, h_end, w_start, w_end, height, width, num_cells, channels)
    plan = roi_pool_module._plan_runs(*args)
    assert (plan.cap_y, plan.cap_x) == caps_as_before(
        h_start, h_end, w_start, w_end, num_cells, channels
    )
    assert syncs(roi_pool_module._plan_runs, *args) == 1
    # The groups: RoIs in area order (stable), cut as before.
    rows = roi_pool_module._runs_needed((h_end - h_start).clamp(min=0), plan.cap_y + 1)[-1]
    cols = roi_pool_module._runs_needed((w_end - w_start).clamp(min=0), plan.cap_x + 1)[-1]
    order = torch.sort(rows * cols, stable=True).indices
    assert torch.equal(plan.order, order)
    assert plan.groups == roi_pool_module._group(
        rows[order].tolist(), cols[order].tolist(), out * out * channels
    )


def test_roi_pooling_checks_cost_one_sync():
    features = torch.randn(2, 4, 16, 16)
    boxes = [random_boxes(5, torch.Generator().manual_seed(1), 60), torch.zeros(0, 4)]
    assert syncs(roi_pool_module._as_rois, features, boxes, 0.25) == 1
    assert syncs(roi_pool_module.roi_align, features, boxes, 4, 0.25, 2) == 2  # checks, plan
    assert syncs(roi_pool_module.roi_align, features, boxes, 4, 0.25, -1) == 3  # + the grids
    assert syncs(roi_pool_module.roi_pool, features, boxes, 4, 0.25) == 2  # checks, plan


# --------------------------------------------------------------------------- one-stage detectors


def fcos_losses_as_before(model, images, targets):
    """FCOS's losses before the rewrite: boolean selections of the foreground points."""
    from coursepkg.ops.focal import _sigmoid_focal_loss
    from coursepkg.ops.iou_losses import DEFAULT_EPS, _matched_giou, _overlap

    c = model.config
    out = model(images)
    with torch.no_grad():
        t = model.targets(out.points, targets)
    logits = torch.cat(out.cls_logits, dim=1).float()
    foreground = t.labels >= 0
    num_pos = max(int(foreground.sum()), 1)
    one_hot = torch.zeros_like(logits)
    one_hot[foreground, t.labels[foreground]] = 1.0
    classification = _sigmoid_focal_loss(logits, one_hot, c.focal_alpha, c.focal_gamma, "sum")
    points = torch.cat(out.points)[None].expand_as(t.matched_boxes[..., :2])
    distances = torch.cat(out.distances, dim=1).float()[foreground]
    centre = points[foreground]
    predicted = torch.cat((centre - distances[:, :2], centre + distances[:, 2:]), dim=1)
    gt_boxes = t.matched_boxes[foreground]
    if c.box_loss == "giou":
        box = (1 - _matched_giou(predicted, gt_boxes, DEFAULT_EPS)).sum()
    else:
        box = -torch.log(_overlap(predicted, gt_boxes, DEFAULT_EPS).iou.clamp(min=DEFAULT_EPS)).sum()
    losses = {"classification": classification / num_pos, "bbox_regression": box / num_pos}
    if c.centerness:
        centerness = torch.cat(out.centerness, dim=1).float()[foreground]
        bce = torch.nn.functional.binary_cross_entropy_with_logits(
            centerness, t.centerness[foreground], reduction="sum"
        )
        losses["bbox_ctrness"] = bce / num_pos
    return losses


def shapes_batch(num_images, image_size=(64, 64), seed=0, empty=(1,)):
    """Images and targets of the shapes data; the images listed in ``empty`` have no objects."""
    from coursepkg.data import ShapesDataset

    data = ShapesDataset(num_images, image_size, seed=seed)
    items = [data[i] for i in range(num_images)]
    targets = [dict(t) for _, t in items]
    for i in empty:
        targets[i] = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    return torch.stack([image for image, _ in items]), targets


@pytest.mark.parametrize(
    "changes",
    [{}, {"box_loss": "giou"}, {"centerness": False}, {"regression": "relu_stride", "box_loss": "giou"}],
)
def test_fcos_masked_losses_and_gradients_equal_the_selected_ones(changes):
    from coursepkg.models.fcos import FCOS, FCOSConfig

    images, targets = shapes_batch(3)
    torch.manual_seed(0)
    model = FCOS(FCOSConfig(**changes))
    got = model.losses(images, targets)
    got_grads = torch.autograd.grad(sum(got.values()), list(model.parameters()), allow_unused=True)
    expected = fcos_losses_as_before(model, images, targets)
    expected_grads = torch.autograd.grad(sum(expected.values()), list(model.parameters()), allow_unused=True)
    assert got.keys() == expected.keys()
    for key in got:
        assert_close(got[key], expected[key], rtol=1e-5, atol=1e-6)
    for g1, g2 in zip(got_grads, expected_grads, strict=True):
        if g2 is None:
            assert g1 is None or not g1.any()
        else:
            assert_close(g1, g2, rtol=1e-4, atol=1e-6)


def yolo_targets_as_before(boxes, labels, image_size, grid_size):
    """YOLOv1's batched targets before the rewrite: boolean selection of the kept objects."""
    from coursepkg.models.yolo import _cell_boxes, _grid_cells

    num_images, cells = len(boxes), grid_size * grid_size
    all_boxes, all_labels = torch.cat(list(boxes)), torch.cat(list(labels))
    image = torch.repeat_interleave(torch.arange(num_images), torch.tensor([len(b) for b in boxes]))
    out_boxes = all_boxes.new_zeros(num_images * cells, 4)
    out_labels = all_labels.new_full((num_images * cells,), -1)
    if all_boxes.shape[0]:
        row_col, in_cells = _grid_cells(all_boxes, image_size, grid_size)
        flat = image * cells + row_col[:, 0] * grid_size + row_col[:, 1]
        area = (all_boxes[:, 2] - all_boxes[:, 0]) * (all_boxes[:, 3] - all_boxes[:, 1])
        order = torch.argsort(-area, stable=True)
        rank = torch.empty_like(order).scatter_(0, order, torch.arange(len(order)))
        best_rank = torch.full((num_images * cells,), len(order), dtype=torch.long)
        best_rank.scatter_reduce_(0, flat, rank, reduce="amin")
        keep = rank == best_rank[flat]
        out_boxes[flat[keep]] = _cell_boxes(all_boxes, row_col, in_cells, image_size)[keep]
        out_labels[flat[keep]] = all_labels[keep]
    return out_boxes.view(num_images, grid_size, grid_size, 4), out_labels.view(num_images, grid_size, grid_size)


@pytest.mark.parametrize("seed", range(3))
def test_yolo_targets_with_a_scratch_row_equal_the_selected_ones(seed):
    from coursepkg.models.yolo import _yolo_v1_targets

    g = torch.Generator().manual_seed(seed)
    # Many boxes on a coarse grid: several centres share a cell, so some objects lose theirs.
    boxes = [random_boxes(n, g, size=60.0) for n in (12, 0, 5)]
    labels = [torch.randint(0, 5, (len(b),), generator=g) for b in boxes]
    got = _yolo_v1_targets(boxes, labels, (96, 96), 4)
    expected = yolo_targets_as_before(boxes, labels, (96, 96), 4)
    assert_close(got.boxes, expected[0])
    assert_close(got.labels, expected[1])
    assert syncs(_yolo_v1_targets, boxes, labels, (96, 96), 4) == 0


@pytest.mark.parametrize(
    ("name", "expected"), [("retinanet", 2), ("iou_aware_retinanet", 2), ("yolo_v1", 1), ("fcos", 1)]
)
def test_one_stage_losses_sync_only_to_check_their_inputs(name, expected):
    """One read for the targets' check (and RetinaNet's one for finite outputs); none in the math."""
    from coursepkg.engine.train_shapes import DETECTORS

    model = DETECTORS[name]("smoke").model
    images, targets = shapes_batch(2, (128, 128))
    assert syncs(model.losses, images, targets) == expected
