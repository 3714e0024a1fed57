"""From dense predictions to detections: threshold, top-k per level, decode, clip, NMS.

A dense detector scores every (anchor or point, class) pair of every pyramid level: about 100,000
anchors times K classes for RetinaNet on an 800-pixel image. Decoding every box would waste most
of the time on boxes that are thrown away, so RetinaNet (Lin et al. 2017, §4, "Inference")
decodes only the most confident ones:

1. per level, keep the (location, class) pairs scoring above ``score_thresh`` (0.05), and of
   those at most the ``topk_candidates`` (1000) best;
2. decode only their boxes (against the anchors, or from the points for FCOS) and clip them to
   the image;
3. merge the levels and run class-aware NMS at ``nms_thresh`` (0.5);
4. keep the ``detections_per_img`` (100) best, by decreasing score.

This is torchvision's ``RetinaNet.postprocess_detections``, with equal results (tested), but
vectorised over the batch: steps 1-2 work on ``[B, N_l, K]`` tensors, one level at a time, and
step 3 runs once for the whole batch, with ``image * K + class`` as the NMS group so that boxes
of different images or classes never suppress each other. Python loops: over the levels; over
the images only to split the result into one dict per image; and, inside NMS, the greedy
decisions themselves, one bit test per candidate on rows packed on the device (as
``coursepkg.ops.nms`` does; the IoUs are one vectorised step per few image-class groups).

Shapes::

    scores_per_level           L x [B, N_l, K]   probabilities (sigmoid of the logits)
    box_regression_per_level   L x [B, N_l, 4]   deltas (anchors) or distances (points)
    references_per_level       L x [N_l, 4]      anchors, xyxy   or   L x [N_l, 2] points, (x, y)
    result                     B x {"boxes": [D, 4], "scores": [D], "labels": [D] in 0..K-1}

Chapter: book/10_retinanet (no section teaches the decoding); also the detections of book/08_yolo,
book/11_iou_aware_retinanet and book/13_fcos.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from coursepkg.ops.box_coding import (
    DEFAULT_BBOX_XFORM_CLIP,
    _check_weights,
    _decode_boxes,
    _distances_to_boxes,
)
from coursepkg.ops.nms import _nms_grouped
from coursepkg.ops.validation import (
    check_finite,
    check_image_size,
    check_int,
    check_probability,
    check_tensor,
)

__all__ = ["decode_dense_detections"]


def _from_anchor_deltas(deltas: Tensor, anchors: Tensor, weights: tuple[float, ...]) -> Tensor:
    """RetinaNet: R-CNN's deltas [M, 4] applied to their anchors [M, 4] (torchvision's clip)."""
    return _decode_boxes(deltas, anchors, weights, DEFAULT_BBOX_XFORM_CLIP)


def _from_point_distances(distances: Tensor, points: Tensor, weights: tuple[float, ...]) -> Tensor:
    """FCOS: distances ``(l, t, r, b)`` [M, 4] from their points [M, 2]; weights unused."""
    return _distances_to_boxes(points, distances)


# decode's two names: (decoder, columns of a reference: 4 for anchors, 2 for points).
_DECODERS = {
    "anchor_deltas": (_from_anchor_deltas, 4),
    "point_distances": (_from_point_distances, 2),
}


def _image_sizes(image_size: Sequence, batch: int) -> list[tuple[int, int]]:
    """One ``(height, width)`` for the whole batch, or one per image."""
    if (
        isinstance(image_size, Sequence)
        and len(image_size) > 0
        and all(isinstance(s, Sequence) for s in image_size)
    ):
        if len(image_size) != batch:
            raise ValueError(
                f"image_size must be one (height, width) or {batch} of them, got {len(image_size)}"
            )
        return [check_image_size(s, f"image_size[{i}]") for i, s in enumerate(image_size)]
    return [check_image_size(image_size)] * batch


def _check_finite_fast(value: Tensor, name: str) -> None:
    """:func:`check_finite` after one cheap pass: a NaN or inf makes the sum non-finite.

    A sum of finite values can overflow to inf; check_finite then looks at every element and
    passes, so the result is exact either way.
    """
    if value.numel() and not bool(torch.isfinite(value.sum())):
        check_finite(value, name)


def _check_levels(
    scores_per_level: Sequence[Tensor],
    box_regression_per_level: Sequence[Tensor],
    references_per_level: Sequence[Tensor],
    reference_dim: int | None,
) -> tuple[int, int]:
    """Validate the three per-level lists; return ``(B, K)``."""
    for name, value in (
        ("scores_per_level", scores_per_level),
        ("box_regression_per_level", box_regression_per_level),
        ("references_per_level", references_per_level),
    ):
        if not isinstance(value, Sequence) or isinstance(value, Tensor) or len(value) == 0:
            raise TypeError(f"{name} must be a non-empty list of tensors, one per level")
    levels = len(scores_per_level)
    if len(box_regression_per_level) != levels or len(references_per_level) != levels:
        raise ValueError(
            "scores_per_level, box_regression_per_level and references_per_level must have one "
            f"tensor per level, got {levels}, {len(box_regression_per_level)} and "
            f"{len(references_per_level)}"
        )
    first = check_tensor(
        scores_per_level[0], "scores_per_level[0]", shape=("B", "N", "K"), dtype="float"
    )
    batch, _, num_classes = first.shape
    if num_classes == 0:
        raise ValueError("scores_per_level[0] must be [B, N, K] with K >= 1, got K = 0")
    for level, (scores, regression, references) in enumerate(
        zip(scores_per_level, box_regression_per_level, references_per_level, strict=True)
    ):
        check_tensor(
            references, f"references_per_level[{level}]", shape=("N", reference_dim), dtype="float"
        )
        num = references.shape[0]
        check_tensor(
            scores, f"scores_per_level[{level}]", shape=(batch, num, num_classes), dtype="float"
        )
        check_tensor(
            regression, f"box_regression_per_level[{level}]", shape=(batch, num, 4), dtype="float"
        )
        # NaN or inf anywhere is an error; scores above 1 (logits passed by mistake) are caught
        # on the candidates, which hold the largest scores of every image (see _candidates).
        _check_finite_fast(scores, f"scores_per_level[{level}]")
        _check_finite_fast(regression, f"box_regression_per_level[{level}]")
        _check_finite_fast(references, f"references_per_level[{level}]")
    return batch, num_classes


def _candidates(
    scores: Tensor, score_thresh: float, topk_candidates: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Step 1 for one level: ``(image, index into N * K, score)`` of the kept pairs, each [M].

    The pairs above ``score_thresh``, at most ``topk_candidates`` per image: the top-k of the
    survivors, which is also the top-k of all pairs with those at or below the threshold dropped
    afterwards. Both routes below give exactly these; which one runs only changes the speed:

    * most pairs survive (an untrained head; judged on every 64th pair): one top-k of every
      image's whole row at once;
    * else the survivors are listed; if no image has more than ``topk_candidates`` they are all
      kept without sorting (a trained detector), otherwise each image's survivors are padded
      into one ``[B, max survivors]`` row and a top-k runs on every row at once.
    """
    batch = scores.shape[0]
    flat = scores.reshape(batch, -1)  # [B, N * K], index = anchor * K + class
    arange = torch.arange(batch, device=scores.device)
    if 8 * int((flat[:, ::64] > score_thresh).sum()) > flat[:, ::64].numel():
        top_scores, top_index = flat.topk(min(topk_candidates, flat.shape[1]), dim=1)  # [B, k]
        valid = top_scores > score_thresh  # [B, k]
        return arange[:, None].expand_as(valid)[valid], top_index[valid], top_scores[valid]
    image, index = (flat > score_thresh).nonzero(as_tuple=True)  # [S] each, image-major
    score = flat[image, index]  # [S]
    counts = torch.bincount(image, minlength=batch)  # [B] survivors per image
    most = int(counts.max()) if batch else 0
    if most <= topk_candidates:
        return image, index, score
    start = counts.cumsum(0) - counts  # [B] first survivor of each image
    slot = torch.arange(len(image), device=scores.device) - start[image]  # [S] place in its row
    padded = score.new_full((batch, most), -1.0)  # [B, most]: -1 never beats a probability
    padded[image, slot] = score
    top_scores, top_slot = padded.topk(topk_candidates, dim=1)  # [B, k]
    valid = top_scores > score_thresh  # [B, k]: False on the padding of short rows
    chosen = (start[:, None] + top_slot)[valid]  # [M] places among the survivors
    return image[chosen], index[chosen], score[chosen]


def decode_dense_detections(
    scores_per_level: Sequence[Tensor],
    box_regression_per_level: Sequence[Tensor],
    references_per_level: Sequence[Tensor],
    image_size: Sequence[int] | Sequence[Sequence[int]],
    decode: str | Callable[[Tensor, Tensor], Tensor] = "anchor_deltas",
    score_thresh: float = 0.05,
    topk_candidates: int = 1000,
    nms_thresh: float = 0.5,
    detections_per_img: int = 100,
    box_weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
) -> list[dict[str, Tensor]]:
    """Detections of a dense detector: per-level top-k, decode, clip, class-aware NMS, top 100.

    Implements RetinaNet's inference (Lin et al. 2017, §4): for each image and level, the
    (location, class) pairs with probability above ``score_thresh``, at most ``topk_candidates``
    of them; their boxes decoded and clipped to the image; all levels merged; NMS per class at
    ``nms_thresh``; the ``detections_per_img`` best kept. Equal to torchvision's
    ``RetinaNet.postprocess_detections`` given ``sigmoid`` of its logits and the same anchors.

    Args:
        scores_per_level: per level, [B, N_l, K] float probabilities in [0, 1] (sigmoid of the
            class logits; FCOS passes ``sqrt(p * centerness)``).
        box_regression_per_level: per level, [B, N_l, 4] float: deltas ``(d_x, d_y, d_w, d_h)``
            for ``"anchor_deltas"``, distances ``(l, t, r, b)`` in pixels for
            ``"point_distances"`` (non-negative: apply ``relu``/``exp`` and the stride first).
        references_per_level: per level, the anchors [N_l, 4] xyxy or the points [N_l, 2] (x, y).
        image_size: ``(height, width)`` for the whole batch, or a list of B of them; boxes are
            clipped to ``[0, width] x [0, height]``.
        decode: ``"anchor_deltas"`` (RetinaNet: :func:`~coursepkg.ops.box_coding.decode_boxes`),
            ``"point_distances"`` (FCOS:
            :func:`~coursepkg.ops.box_coding.distances_to_boxes`), or a callable
            ``(box_regression [M, 4], references [M, R]) -> boxes [M, 4]``.
        score_thresh: smallest probability kept (strictly greater survives).
        topk_candidates: most (location, class) pairs kept per level and image before NMS.
        nms_thresh: IoU above which NMS suppresses a box of the same class and image.
        detections_per_img: most detections returned per image.
        box_weights: ``(w_x, w_y, w_w, w_h)`` of the deltas (``"anchor_deltas"`` only; RetinaNet
            uses 1, 1, 1, 1).

    Returns:
        One dict per image: ``"boxes"`` [D, 4] xyxy in pixels, ``"scores"`` [D] decreasing,
        ``"labels"`` [D] int64 in 0..K-1, with D <= ``detections_per_img``; D = 0 gives a
        [0, 4] ``"boxes"``.

    Raises:
        TypeError: if a list is not a list of floating tensors, or ``decode`` is neither a
            known name nor callable.
        ValueError: on shapes that disagree (naming the level), NaN or inf in any input
            (``"scores_per_level[2] must be finite ..."``), a candidate score above 1 (logits
            passed instead of probabilities), or a threshold, count or size out of range.

    Chapter: book/10_retinanet (no section teaches the decoding).
    """
    if isinstance(decode, str):
        if decode not in _DECODERS:
            raise ValueError(
                f"decode must be one of {sorted(_DECODERS)} or a callable, got {decode!r}"
            )
        decoder, reference_dim = _DECODERS[decode]
    elif callable(decode):
        reference_dim, decoder = (
            None,
            lambda regression, references, weights: decode(regression, references),
        )
    else:
        raise TypeError(f"decode must be a name or a callable, got {type(decode).__name__}")
    batch, num_classes = _check_levels(
        scores_per_level, box_regression_per_level, references_per_level, reference_dim
    )
    sizes = torch.tensor(_image_sizes(image_size, batch), dtype=torch.float64)  # [B, 2] (h, w)
    score_thresh = check_probability(score_thresh, "score_thresh")
    topk_candidates = check_int(topk_candidates, "topk_candidates", low=1)
    nms_thresh = check_probability(nms_thresh, "nms_thresh")
    detections_per_img = check_int(detections_per_img, "detections_per_img", low=0)
    box_weights = _check_weights(box_weights, "box_weights")

    dtype = box_regression_per_level[0].dtype
    device = box_regression_per_level[0].device
    limits = sizes.flip(1).repeat(1, 2).to(dtype=dtype, device=device)  # [B, 4] (w, h, w, h)
    images, boxes, scores, labels = [], [], [], []
    for level, (level_scores, regression, references) in enumerate(
        zip(scores_per_level, box_regression_per_level, references_per_level, strict=True)
    ):
        # Step 1: the confident (location, class) pairs, at most topk_candidates per image.
        image, index, score = _candidates(level_scores, score_thresh, topk_candidates)  # [M]
        if len(score) and score.max() > 1:
            raise ValueError(
                f"scores_per_level[{level}] must be probabilities in [0, 1] (apply the sigmoid "
                f"to the logits), got {score.max().item()}"
            )
        location = torch.div(index, num_classes, rounding_mode="floor")  # [M]
        # Step 2: decode only those boxes, then clip each to its own image.
        decoded = decoder(regression[image, location], references[location].to(dtype), box_weights)
        decoded = torch.minimum(decoded.clamp(min=0), limits[image])  # [M, 4]
        images.append(image), boxes.append(decoded), scores.append(score)
        labels.append(index % num_classes)

    # Step 3: one NMS for the whole batch; the group image * K + class keeps images apart.
    image, boxes = torch.cat(images), torch.cat(boxes)  # [M], [M, 4]
    scores, labels = torch.cat(scores), torch.cat(labels)
    keep = _nms_grouped(boxes, scores, image * num_classes + labels, nms_thresh)  # decreasing
    # Step 4: group the kept boxes by image (a stable sort keeps the score order inside each),
    # then keep the first detections_per_img of each group.
    keep = keep[torch.sort(image[keep], stable=True).indices]
    counts = torch.bincount(image[keep], minlength=batch)  # [B]
    rank = torch.arange(len(keep), device=device) - (counts.cumsum(0) - counts)[image[keep]]
    keep = keep[rank < detections_per_img]
    return [
        {"boxes": boxes[k], "scores": scores[k], "labels": labels[k]}
        for k in keep.split(counts.clamp(max=detections_per_img).tolist())
    ]
