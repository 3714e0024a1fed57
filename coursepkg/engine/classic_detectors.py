"""The two detectors that do not train with ``fit``, as detectors: sliding windows and R-CNN.

The sliding-window baseline (book/01_sliding_windows) trains a window classifier on cut-out
patches, and R-CNN (book/05_rcnn) trains in stages: a CNN fine-tuned on warped proposals, then one
linear SVM and one box regressor per class. Neither has a loss that ``fit`` could minimise, so
this module trains each with its chapter's recipe (:func:`train_sliding_windows`,
:func:`train_rcnn`) and wraps the result in a :class:`coursepkg.models.detector.Detector` whose
``detect`` runs the chapter's detection pipeline. :func:`coursepkg.engine.training.evaluate` and
:func:`coursepkg.engine.training.predict` then take them like any other detector, and the capstone
(:mod:`coursepkg.engine.capstone`) measures them with the same code::

    detector = train_rcnn(train_set, rcnn_recipe("smoke"))
    metrics = evaluate(detector, val_set)          # COCO-style mAP, as for every detector
    detections = predict(detector, images)         # boxes xyxy, scores, labels in 0..K-1

Their ``losses`` raise: they are trained by the functions here, never by ``fit``.

One change from the sliding-window chapter: the chapter detects one class (circles) with a
two-way classifier; here the classifier has ``K + 1`` outputs (background and every class), so
that the detector is scored on every class like the others. Everything else is the chapter's:
24 x 24 windows at step 4 on a pyramid of ratio 1.25, positives at IoU >= 0.6, twice as many hard
(IoU 0.2 to 0.4) and twice as many easy (IoU < 0.2) negatives, the same CNN, Adam, a probability
threshold of 0.5 and NMS at 0.3 (here per class). A 24-pixel window at step 4 cannot fit
objects much smaller than itself: on data with small objects its AP_small is near zero, which is
one of the things the comparison shows.

Chapter: book/01_sliding_windows, book/05_rcnn; used by book/14_capstone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from coursepkg.data import DEFAULT_SHAPE_CLASSES
from coursepkg.engine.recipes import (
    RCNNRecipe,
    SlidingWindowRecipe,
    rcnn_recipe,
    sliding_window_recipe,
)
from coursepkg.engine.runtime import resolve_device
from coursepkg.models.backbones import PIXEL_MEAN
from coursepkg.models.detector import Detector, check_images
from coursepkg.models.rcnn import (
    RCNN,
    BoxRegressor,
    ProposalCache,
    RCNNConfig,
    RegionFeatureNet,
    extract_features,
    feature_scale,
    finetune_labels,
    fit_box_regressor,
    rcnn_detect,
    select_box_regression_pairs,
    svm_labels,
    train_linear_svms,
    train_region_net,
    warp_regions,
)
from coursepkg.ops.boxes import box_iou
from coursepkg.ops.labels import to_softmax_labels
from coursepkg.ops.nms import batched_nms
from coursepkg.ops.sliding_windows import image_pyramid, sliding_windows

__all__ = [
    "CLASSIC_DETECTORS",
    "ClassicRun",
    "RCNNDetector",
    "SlidingWindowDetector",
    "classic_num_train",
    "train_classic",
    "train_rcnn",
    "train_sliding_windows",
    "window_classifier",
]

#: The detectors of this module, in the course's order (chapter 1, chapter 5).
CLASSIC_DETECTORS = ("sliding_windows", "rcnn")


def _not_trained_by_fit(name: str) -> NotImplementedError:
    return NotImplementedError(
        f"{name} is not trained by coursepkg.engine.training.fit (it has no single loss); "
        f"train it with coursepkg.engine.classic_detectors.train_{name}"
    )


def _check_dataset(train_set: object) -> int:
    if not isinstance(train_set, Dataset) or not hasattr(train_set, "__len__"):
        raise ValueError(
            f"train_set must be a map-style dataset of (image, target), got {type(train_set).__name__}"
        )
    if len(train_set) == 0:
        raise ValueError("train_set is empty: nothing to train on")
    return len(train_set)


def _num_classes(train_set: Dataset) -> int:
    return len(getattr(train_set, "classes", DEFAULT_SHAPE_CLASSES))


def _generator(seed: int) -> torch.Generator:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------------------------
# Sliding windows (book/01_sliding_windows)


def window_classifier(num_classes: int, window: int = 24) -> nn.Sequential:
    """The chapter's window classifier with ``num_classes + 1`` logits (background at index 0).

    Three conv-batch-norm-ReLU blocks, the first two max-pooled, and one linear layer on the
    flattened ``32 x window/4 x window/4`` map (no global pooling: where the object sits in the
    window decides its label).

    Shapes:
        ``[B, 3, window, window] -> [B, num_classes + 1]``.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be an int >= 1, got {num_classes!r}")
    if isinstance(window, bool) or not isinstance(window, int) or window < 4 or window % 4:
        raise ValueError(f"window must be a positive multiple of 4, got {window!r}")
    side = window // 4
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Flatten(), nn.Linear(32 * side * side, num_classes + 1),
    )  # fmt: skip


class SlidingWindowDetector(Detector):
    """A window classifier slid over an image pyramid, then per-class NMS (book/01_sliding_windows).

    ``detect`` cuts every ``window x window`` block at ``step`` from every level of
    :func:`coursepkg.ops.sliding_windows.image_pyramid` (ratio ``scale``, down to the window's
    size), maps each window back to the original image (its box times the level's factor), scores
    it with a softmax over background and the ``K`` classes, keeps the (window, class) pairs whose
    probability is at least ``score_thresh``, and runs NMS per class at ``nms_thresh``.

    Args:
        classifier: ``[B, 3, window, window] -> [B, K + 1]`` logits (:func:`window_classifier`).
        num_classes: ``K``.
        recipe: window, step, scale and the two thresholds (:class:`SlidingWindowRecipe`).
        detections_per_img: the best this many detections are returned per image.
        chunk_size: windows per forward pass.
    """

    def __init__(
        self,
        classifier: nn.Module,
        num_classes: int,
        recipe: SlidingWindowRecipe,
        *,
        detections_per_img: int = 100,
        chunk_size: int = 2048,
    ) -> None:
        super().__init__()
        self.classifier = classifier
        self.num_classes = num_classes
        self.window, self.step, self.scale = recipe.window, recipe.step, recipe.scale
        self.score_thresh, self.nms_thresh = recipe.score_thresh, recipe.nms_thresh
        self.detections_per_img, self.chunk_size = detections_per_img, chunk_size

    def windows(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """Every window of the pyramid: pixels ``[N, 3, w, w]`` and boxes ``[N, 4]`` in the image.

        Windows are ordered level by level and row-major within a level, as
        :func:`coursepkg.ops.sliding_windows.sliding_windows` orders them.
        """
        win, step = self.window, self.step
        patches, boxes = [], []
        for level, factor in image_pyramid(image, scale=self.scale, min_size=(win, win)):
            grid = level.unfold(1, win, step).unfold(2, win, step)  # [3, ny, nx, win, win], a view
            patches.append(grid.permute(1, 2, 0, 3, 4).reshape(-1, 3, win, win))
            level_boxes = sliding_windows(level.shape[-2:], (win, win), step, device=image.device)
            boxes.append(level_boxes * factor)
        return torch.cat(patches), torch.cat(boxes)

    def window_probabilities(self, patches: Tensor) -> Tensor:
        """Softmax over background and the classes, ``[N, K + 1]``, ``chunk_size`` at a time."""
        logits = [self.classifier(chunk) for chunk in patches.split(self.chunk_size)]
        return torch.cat(logits).softmax(dim=1)

    def _detect_one(self, image: Tensor) -> dict[str, Tensor]:
        patches, boxes = self.windows(image)
        probs = self.window_probabilities(patches)[:, 1:]  # [N, K]
        window_idx, labels = torch.nonzero(probs >= self.score_thresh, as_tuple=True)
        boxes, scores = boxes[window_idx], probs[window_idx, labels]
        keep = batched_nms(boxes, scores, labels, self.nms_thresh)[: self.detections_per_img]
        return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}

    def detect(self, images: Tensor) -> list[dict[str, Tensor]]:
        check_images(images)
        return [self._detect_one(image) for image in images]

    def losses(self, images: Tensor, targets: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor]:
        raise _not_trained_by_fit("sliding_windows")


def _window_labels(
    boxes: Tensor, target: Mapping[str, Tensor], recipe: SlidingWindowRecipe, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """The chapter's sample of one image's windows: indices and labels (0 background, 1..K).

    Every window with IoU >= ``fg_iou_thresh`` with an object (that object's class), and
    ``max(2 * positives, 10)`` each of hard negatives (best IoU in
    ``[bg_iou_thresh_lo, bg_iou_thresh)``) and easy ones (best IoU below ``bg_iou_thresh_lo``),
    drawn at random.
    """
    gt_boxes, gt_labels = target["boxes"], target["labels"]
    if gt_boxes.shape[0]:
        best_iou, best_gt = box_iou(boxes, gt_boxes.to(boxes.dtype)).max(dim=1)  # [N]
    else:
        best_iou = boxes.new_zeros(boxes.shape[0])
        best_gt = torch.zeros(boxes.shape[0], dtype=torch.int64)
    positive = torch.nonzero(best_iou >= recipe.fg_iou_thresh)[:, 0]
    hard = torch.nonzero((best_iou < recipe.bg_iou_thresh) & (best_iou >= recipe.bg_iou_thresh_lo))
    hard = hard[:, 0]
    easy = torch.nonzero(best_iou < recipe.bg_iou_thresh_lo)[:, 0]
    budget = max(2 * len(positive), 10)
    hard = hard[torch.randperm(len(hard), generator=generator)[:budget]]
    easy = easy[torch.randperm(len(easy), generator=generator)[:budget]]
    labels = torch.cat([
        to_softmax_labels(gt_labels[best_gt[positive]]),
        torch.zeros(len(hard) + len(easy), dtype=torch.int64),
    ])  # fmt: skip
    return torch.cat([positive, hard, easy]), labels


def train_sliding_windows(
    train_set: Dataset,
    recipe: SlidingWindowRecipe,
    *,
    seed: int = 0,
    history: list[float] | None = None,
    device: torch.device | str | None = None,
) -> SlidingWindowDetector:
    """Train book/01_sliding_windows' sliding-window detector (``K + 1`` classes) on ``train_set``.

    Cuts the chapter's sample of windows from every training image (:func:`_window_labels`), then
    trains :func:`window_classifier` on them with Adam and cross-entropy for ``recipe.epochs``
    epochs of mini-batches of ``recipe.batch_size``, in an order drawn from ``seed``.

    Args:
        train_set: map-style dataset of ``(image [3, H, W], target)``; its ``classes`` attribute
            (default: the shapes classes) gives ``K``.
        recipe: :func:`coursepkg.engine.recipes.sliding_window_recipe`.
        seed: the negatives drawn and the batch order (the weights follow torch's global seed).
        history: if given, the mean loss of every epoch is appended to it.
        device: where the classifier trains and stays (default: the best one here, as in the
            chapter); the windows are cut on the CPU.

    Returns:
        The trained :class:`SlidingWindowDetector`, in eval mode, on ``device``.

    Raises:
        ValueError: for an empty or non-dataset ``train_set``, a bad recipe or seed.
    """
    _check_dataset(train_set)
    if not isinstance(recipe, SlidingWindowRecipe):
        raise ValueError(f"recipe must be a SlidingWindowRecipe, got {type(recipe).__name__}")
    generator = _generator(seed)
    device = resolve_device(device)
    detector = SlidingWindowDetector(
        window_classifier(_num_classes(train_set), recipe.window), _num_classes(train_set), recipe
    )
    xs, ys = [], []
    for i in range(len(train_set)):
        image, target = train_set[i]
        patches, boxes = detector.windows(image)
        chosen, labels = _window_labels(boxes, target, recipe, generator)
        xs.append(patches[chosen])
        ys.append(labels)
    train_x, train_y = torch.cat(xs), torch.cat(ys)
    classifier = detector.classifier.to(device)
    optimizer = torch.optim.Adam(classifier.parameters(), lr=recipe.lr)
    classifier.train()
    for _ in range(recipe.epochs):
        total = 0.0
        for batch in torch.randperm(len(train_x), generator=generator).split(recipe.batch_size):
            x, y = train_x[batch].to(device), train_y[batch].to(device)
            loss = F.cross_entropy(classifier(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        if history is not None:
            history.append(total / len(train_x))
    return detector.eval()


# --------------------------------------------------------------------------------------------
# R-CNN (book/05_rcnn)


def _selective_search(image: Tensor) -> Tensor:
    """Selective search in its "fast" mode with a fixed seed, best first (book/05_rcnn's ``propose``)."""
    from coursepkg.models.selective_search import selective_search

    return selective_search(image, mode="fast", generator=torch.Generator().manual_seed(0)).boxes


def _frozen(tensor: Tensor) -> nn.Parameter:
    return nn.Parameter(tensor.detach().clone(), requires_grad=False)


class RCNNDetector(Detector):
    """A trained R-CNN (:class:`coursepkg.models.rcnn.RCNN`) behind the detector contract.

    ``detect`` finds each image's proposals (``proposals``, e.g. a
    :class:`coursepkg.models.rcnn.ProposalCache` of selective search) and runs
    :func:`coursepkg.models.rcnn.rcnn_detect`. The SVMs and box regressors are frozen parameters
    (``requires_grad=False``), so that ``.to(device)`` moves them and ``parameters()`` counts
    them: the CNN (with its fine-tuning classifier, unused at test time), ``K`` SVMs and ``K``
    regressors.
    """

    def __init__(self, rcnn: RCNN, proposals: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.net = rcnn.net
        self.svm_weight = _frozen(rcnn.svm_weight)  # [K, D]
        self.svm_bias = _frozen(rcnn.svm_bias)  # [K]
        self.regressor_weight = _frozen(torch.stack([r.weight for r in rcnn.regressors]))  # [K, P, 4]
        self.regressor_bias = _frozen(torch.stack([r.bias for r in rcnn.regressors]))  # [K, 4]
        self.fc7_scale, self.pool5_scale, self.config = rcnn.fc7_scale, rcnn.pool5_scale, rcnn.config
        self.proposals = proposals

    @property
    def rcnn(self) -> RCNN:
        """The :class:`RCNN` that ``detect`` runs (sharing this module's tensors)."""
        regressors = [BoxRegressor(w, b) for w, b in zip(self.regressor_weight, self.regressor_bias, strict=True)]
        return RCNN(self.net, self.svm_weight, self.svm_bias, regressors, self.fc7_scale,
                    self.pool5_scale, self.config)  # fmt: skip

    def detect(self, images: Tensor) -> list[dict[str, Tensor]]:
        check_images(images)
        rcnn = self.rcnn
        return [rcnn_detect(rcnn, image, self.proposals(image)) for image in images]

    def losses(self, images: Tensor, targets: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor]:
        raise _not_trained_by_fit("rcnn")


def train_rcnn(
    train_set: Dataset,
    recipe: RCNNRecipe,
    *,
    config: RCNNConfig | None = None,
    proposals: Callable[[Tensor], Tensor] | None = None,
    seed: int = 0,
    history: list[float] | None = None,
) -> RCNNDetector:
    """Train R-CNN on ``train_set`` in book/05_rcnn's stages and order.

    1. proposals of every training image (selective search, cached);
    2. fine-tuning: the ground truth and the proposals of each image, labelled by
       :func:`finetune_labels`, every foreground box and ``3 * max(foreground, 8)`` random
       background ones warped, then ``recipe.finetune_steps`` steps of :func:`train_region_net`;
    3. features of the ground truth and proposals, scaled to the config's mean norm; per-class
       SVMs with hard-negative mining (:func:`train_linear_svms`);
    4. per-class ridge box regressors on pool5 of the proposals with IoU > 0.6.

    Everything runs on the CPU, as in the chapter (selective search is CPU code anyway).

    Args:
        train_set: map-style dataset of ``(image [3, H, W], target)``; its ``classes`` attribute
            (default: the shapes classes) gives ``K``.
        recipe: :func:`coursepkg.engine.recipes.rcnn_recipe` (its ``finetune_steps``).
        config: R-CNN's constants (default :meth:`RCNNConfig.for_course`).
        proposals: ``image -> boxes [P, 4]`` best first (default: a :class:`ProposalCache` of
            selective search in fast mode, as the chapter's); the detector keeps it.
        seed: the random source of the background sample, the batches and the SVMs' negatives
            (the CNN's initial weights follow torch's global seed).
        history: if given, the fine-tuning loss of every step is appended to it.

    Returns:
        The trained :class:`RCNNDetector`, in eval mode.

    Raises:
        ValueError: for an empty or non-dataset ``train_set``, a bad recipe or seed.
    """
    _check_dataset(train_set)
    if not isinstance(recipe, RCNNRecipe):
        raise ValueError(f"recipe must be an RCNNRecipe, got {type(recipe).__name__}")
    generator = _generator(seed)
    config = config or RCNNConfig.for_course()
    if proposals is None:
        proposals = ProposalCache(_selective_search, max_proposals=config.max_proposals)
    num_classes = _num_classes(train_set)
    items = [train_set[i] for i in range(len(train_set))]
    train_proposals = [proposals(image) for image, _ in items]

    regions, labels = [], []
    for (image, target), boxes in zip(items, train_proposals, strict=True):
        boxes = torch.cat([target["boxes"], boxes])  # the ground truth counts as foreground too
        box_labels = finetune_labels(boxes, target["boxes"], target["labels"], config.finetune_fg_iou_thresh)
        foreground = torch.nonzero(box_labels > 0).flatten()
        background = torch.nonzero(box_labels == 0).flatten()
        background = background[torch.randperm(len(background), generator=generator)[: 3 * max(len(foreground), 8)]]
        keep = torch.cat([foreground, background])
        regions.append(warp_regions(image, boxes[keep], config.warp_size,
                                    context_padding=config.context_padding, fill_value=PIXEL_MEAN))  # fmt: skip
        labels.append(box_labels[keep])
    net = RegionFeatureNet(num_classes=num_classes, input_size=config.warp_size)
    losses = train_region_net(
        net, torch.cat(regions), torch.cat(labels), steps=recipe.finetune_steps,
        fg_per_batch=config.finetune_fg_per_batch, bg_per_batch=config.finetune_bg_per_batch,
        generator=generator,
    )  # fmt: skip
    if history is not None:
        history.extend(losses)

    features, svm_targets, regression_data = [], [], []
    for (image, target), boxes in zip(items, train_proposals, strict=True):
        all_boxes = torch.cat([target["boxes"], boxes])
        f = extract_features(net, image, all_boxes, context_padding=config.context_padding)
        features.append(f)
        svm_targets.append(svm_labels(all_boxes, target["boxes"], target["labels"], num_classes,
                                      bg_iou_thresh=config.svm_bg_iou_thresh))  # fmt: skip
        pairs = select_box_regression_pairs(boxes, target["boxes"], target["labels"],
                                            fg_iou_thresh=config.bbox_reg_fg_iou_thresh)  # fmt: skip
        num_gt = len(target["boxes"])
        regression_data.append((f.pool5[num_gt + pairs.index], boxes[pairs.index], pairs.gt_boxes, pairs.labels))
    fc7 = torch.cat([f.fc7 for f in features])
    fc7_scale = feature_scale(fc7, config.feature_norm)
    svms = train_linear_svms(
        fc7 * fc7_scale, torch.cat(svm_targets), c=config.svm_c, pos_weight=config.svm_pos_weight,
        bias_mult=config.svm_bias_mult, hard_thresh=config.svm_hard_thresh,
        evict_thresh=config.svm_evict_thresh, mining_rounds=config.svm_mining_rounds,
        generator=generator,
    )  # fmt: skip
    pool5_scale = feature_scale(torch.cat([f.pool5 for f in features]), config.feature_norm)
    pool5, pair_boxes, pair_truths, pair_labels = (torch.cat(parts) for parts in zip(*regression_data, strict=True))
    regressors = [
        fit_box_regressor(pool5[pair_labels == k] * pool5_scale, pair_boxes[pair_labels == k],
                          pair_truths[pair_labels == k], ridge_penalty=config.bbox_reg_ridge_penalty)
        for k in range(num_classes)
    ]  # fmt: skip
    model = RCNN(net, svms.weight, svms.bias, regressors, fc7_scale, pool5_scale, config)
    return RCNNDetector(model, proposals).eval()


# --------------------------------------------------------------------------------------------
# One entry point for the capstone


@dataclass
class ClassicRun:
    """A trained classic detector and what the capstone's row records of its training.

    Attributes:
        model: the trained detector (:class:`SlidingWindowDetector` or :class:`RCNNDetector`).
        train_images: images it trained on.
        epochs: sliding windows: epochs over the training windows; R-CNN: steps of fine-tuning
            the CNN (its SVMs and regressors are fitted once, to convergence, after them).
    """

    model: Detector
    train_images: int
    epochs: int


def _check_name(name: object) -> str:
    if name not in CLASSIC_DETECTORS:
        raise ValueError(f"name must be one of {', '.join(CLASSIC_DETECTORS)}; got {name!r}")
    return name  # type: ignore[return-value]


def classic_num_train(name: str, profile: str) -> int:
    """Training images of a classic detector's chapter recipe in a profile.

    Raises:
        ValueError: for an unknown detector or profile.
    """
    if _check_name(name) == "rcnn":
        return rcnn_recipe(profile).num_train
    return sliding_window_recipe(profile).num_train


def train_classic(name: str, profile: str, train_set: Dataset, *, seed: int = 0) -> ClassicRun:
    """Train ``"sliding_windows"`` or ``"rcnn"`` with its chapter's recipe for ``profile``.

    Raises:
        ValueError: for an unknown detector or profile, or a bad ``train_set`` or seed.
    """
    if _check_name(name) == "rcnn":
        recipe = rcnn_recipe(profile)
        model: Detector = train_rcnn(train_set, recipe, seed=seed)
        epochs = recipe.finetune_steps
    else:
        window_recipe = sliding_window_recipe(profile)
        model = train_sliding_windows(train_set, window_recipe, seed=seed)
        epochs = window_recipe.epochs
    return ClassicRun(model, len(train_set), epochs)
