"""Selective search (Uijlings et al., IJCV 2013): the region proposals of R-CNN.

Instead of sliding windows at every position and scale, selective search groups pixels bottom-up
and proposes the bounding box of every group it forms (paper §3, Algorithm 1):

1. **Initial regions** from Felzenszwalb and Huttenlocher's graph segmentation
   (``skimage.segmentation.felzenszwalb``; larger ``k`` gives larger segments).
2. **Similarities** between every pair of *neighbouring* regions, a sum of up to four terms, each
   in [0, 1] (§3.2):

   * colour: ``Σ_k min(c_i^k, c_j^k)`` over L1-normalised colour histograms, 25 bins per channel;
   * texture: the same over histograms of Gaussian derivatives (σ = 1) in 8 orientations,
     10 bins per orientation and channel;
   * size: ``1 - (|r_i| + |r_j|) / |image|``, so small regions merge first;
   * fill: ``1 - (|BB_ij| - |r_i| - |r_j|) / |image|``, so regions that fill each other's
     bounding box merge first.
3. **Hierarchical grouping**: merge the most similar pair, give the union the size-weighted mean
   of the two histograms (no pixel is looked at again), connect it to both regions' neighbours,
   compute its similarities to them, and repeat until one region is left. Every region ever
   formed, at every scale, is a proposal.
4. **Diversification**: repeat with different colour spaces, similarity sets and ``k``; the
   paper's "fast" mode (the one R-CNN used) is HSV and Lab x {C+T+S+F, T+S+F} x k ∈ {50, 100}.
5. **Ranking**: a region created at position ``i`` of its hierarchy (1 = the last merge, the
   whole image) gets priority ``v = RND * i`` with RND uniform in [0, 1]; all strategies' boxes
   are sorted by ``v`` and duplicates are dropped, keeping the first.

:func:`selective_search` runs it all (mode ``"light"`` by default: the fast mode's strategies in
HSV only); :func:`initial_regions` and :func:`group_regions` expose one grouping run for figures.

Our implementation follows the paper, with these choices spelled out:

* texture: directional derivatives ``cos θ g_x + sin θ g_y`` of the Gaussian-smoothed channel
  (σ = 1) for θ = 0°, 45°, ..., 315°, keeping the positive part (so θ and θ + 180° differ),
  each scaled by its maximum over the image before binning;
* Lab channels are rescaled to [0, 1] (L / 100, (a + 128) / 255, (b + 128) / 255) before binning;
* neighbours are 4-connected; Felzenszwalb's σ = 0.8 and minimum segment size ``k`` pixels (the
  authors' code), or ``min_size`` (small images with small objects need less);
* the merge loop keeps a heap of candidate pairs with lazy deletion, so each merge costs
  O(neighbours · log) instead of re-sorting every pair.

Shapes::

    image        [3, H, W] float in [0, 1] or uint8 (torch), or [H, W, 3] (numpy)
    boxes        [R, 4] float32 xyxy in pixels (continuous: a region covering columns
                 x0..x1 has x1' = x1 + 1), best ranked first
    priority     [R] float32, the ranking value v (ascending)
    strategy     [R] int64, which strategy produced each box first

Chapter: book/05_rcnn (section "Region proposals: selective search").
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from scipy import ndimage
from skimage.color import rgb2hsv, rgb2lab
from skimage.segmentation import felzenszwalb
from torch import Tensor

COLOR_SPACES = ("rgb", "hsv", "lab")
SIMILARITIES = ("color", "texture", "size", "fill")
COLOR_BINS = 25  # per channel (paper §3.2)
TEXTURE_BINS = 10  # per orientation and channel
TEXTURE_ORIENTATIONS = 8
TEXTURE_SIGMA = 1.0


@dataclass(frozen=True)
class Strategy:
    """One grouping strategy: a colour space, a Felzenszwalb ``k`` and a set of similarities."""

    color_space: str = "hsv"  # one of COLOR_SPACES
    k: float = 100.0  # Felzenszwalb's threshold constant (the paper's k; skimage's `scale`)
    similarities: tuple[str, ...] = SIMILARITIES  # a non-empty subset of SIMILARITIES

    def __post_init__(self) -> None:
        if self.color_space not in COLOR_SPACES:
            raise ValueError(f"color_space must be one of {COLOR_SPACES}, got {self.color_space!r}")
        if not (math.isfinite(self.k) and self.k > 0):
            raise ValueError(f"k must be a positive number, got {self.k}")
        unknown = set(self.similarities) - set(SIMILARITIES)
        if not self.similarities or unknown:
            raise ValueError(
                f"similarities must be a non-empty subset of {SIMILARITIES}, got {self.similarities}"
            )


# Paper Table 4: "single" is one strategy; "fast" the 8 strategies R-CNN used (2 colour spaces x
# 2 similarity sets x 2 values of k); "light" (ours, the default) keeps fast's diversification over
# k and similarities but one colour space, HSV: half the segmentations, so half the time.
_TSF = ("texture", "size", "fill")
MODES: dict[str, tuple[Strategy, ...]] = {
    "single": (Strategy("hsv", 100.0, SIMILARITIES),),
    "light": tuple(
        Strategy("hsv", k, sims) for sims in (SIMILARITIES, _TSF) for k in (50.0, 100.0)
    ),
    "fast": tuple(
        Strategy(space, k, sims)
        for space in ("hsv", "lab")
        for sims in (SIMILARITIES, _TSF)
        for k in (50.0, 100.0)
    ),
}


class SelectiveSearchResult(NamedTuple):
    """Result of :func:`selective_search`."""

    boxes: Tensor
    """[R, 4] float32 xyxy proposals in pixels, best ranked first, no duplicates."""
    priority: Tensor
    """[R] float32 ranking values ``v = RND * i`` (ascending)."""
    strategy: Tensor
    """[R] int64 index of the strategy that produced each box."""


class Hierarchy(NamedTuple):
    """Every region of one grouping run, in creation order (initial segments first)."""

    boxes: np.ndarray
    """[2n - 1, 4] float xyxy, region ``t`` of the run."""
    merges: np.ndarray
    """[n - 1, 2] int, the two regions merged into region ``n + m`` at step ``m``."""
    num_initial: int
    """n, the number of Felzenszwalb segments."""


def _to_rgb_float(image: Tensor | np.ndarray) -> np.ndarray:
    """Validate the image and return it as [H, W, 3] float64 in [0, 1]."""
    if isinstance(image, Tensor):
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"image must be [3, H, W], got {list(image.shape)}")
        array = image.detach().cpu().permute(1, 2, 0).numpy()
    elif isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image must be [H, W, 3] as a numpy array, got {list(image.shape)}")
        array = image
    else:
        raise TypeError(
            f"image must be a torch.Tensor [3, H, W] or a numpy array [H, W, 3], got {type(image).__name__}"
        )
    if array.shape[0] < 2 or array.shape[1] < 2:
        raise ValueError(
            f"image must be at least 2 x 2 pixels, got {array.shape[0]} x {array.shape[1]}"
        )
    if array.dtype == np.uint8:
        return array.astype(np.float64) / 255.0
    if not np.issubdtype(array.dtype, np.floating):
        raise TypeError(f"image must be uint8 or floating point in [0, 1], got {array.dtype}")
    if not np.isfinite(array).all():
        raise ValueError("image contains NaN or inf")
    if array.min() < 0 or array.max() > 1:
        raise ValueError(
            f"a floating-point image must lie in [0, 1], got [{array.min()}, {array.max()}]"
        )
    return array.astype(np.float64)


def _convert(rgb: np.ndarray, color_space: str) -> np.ndarray:
    """[H, W, 3] RGB in [0, 1] -> the colour space, every channel scaled to [0, 1]."""
    if color_space == "hsv":
        return rgb2hsv(rgb)
    if color_space == "lab":
        lab = rgb2lab(rgb)
        return np.clip((lab + [0.0, 128.0, 128.0]) / [100.0, 255.0, 255.0], 0.0, 1.0)
    return rgb


def _histograms(labels: np.ndarray, num: int, channels: np.ndarray, bins: int) -> np.ndarray:
    """Per-region histograms of ``channels`` [H, W, D] (values in [0, 1]) with ``bins`` bins each.

    One ``np.bincount`` per channel over ``region * bins + bin`` codes builds every region's
    histogram at once.

    Returns:
        [num, D * bins] float64, every row L1-normalised.
    """
    base = labels.ravel() * bins
    parts = []
    for d in range(channels.shape[2]):
        bin_index = np.minimum((channels[:, :, d].ravel() * bins).astype(np.int64), bins - 1)
        parts.append(np.bincount(base + bin_index, minlength=num * bins).reshape(num, bins))
    hist = np.concatenate(parts, axis=1).astype(np.float64)
    return hist / hist.sum(axis=1, keepdims=True)


def _texture_channels(image: np.ndarray) -> np.ndarray:
    """[H, W, 3] -> [H, W, 3 * 8] oriented Gaussian-derivative responses scaled to [0, 1]."""
    height, width, depth = image.shape
    responses = np.empty((height, width, depth * TEXTURE_ORIENTATIONS), dtype=np.float32)
    for c in range(depth):
        g_y = ndimage.gaussian_filter(image[:, :, c], TEXTURE_SIGMA, order=(1, 0))
        g_x = ndimage.gaussian_filter(image[:, :, c], TEXTURE_SIGMA, order=(0, 1))
        for o in range(TEXTURE_ORIENTATIONS):
            theta = 2 * math.pi * o / TEXTURE_ORIENTATIONS
            r = np.maximum(math.cos(theta) * g_x + math.sin(theta) * g_y, 0.0)
            peak = r.max()
            responses[:, :, c * TEXTURE_ORIENTATIONS + o] = r / peak if peak > 0 else r
    return responses


def _neighbour_pairs(labels: np.ndarray, num: int) -> np.ndarray:
    """[P, 2] unique pairs (i < j) of 4-connected neighbouring regions."""
    a = np.concatenate([labels[:, :-1].ravel(), labels[:-1, :].ravel()])
    b = np.concatenate([labels[:, 1:].ravel(), labels[1:, :].ravel()])
    differ = a != b
    low, high = np.minimum(a[differ], b[differ]), np.maximum(a[differ], b[differ])
    codes = np.unique(low.astype(np.int64) * num + high)
    return np.stack([codes // num, codes % num], axis=1)


@dataclass(frozen=True)
class InitialRegions:
    """The Felzenszwalb segments of one image with everything the grouping needs."""

    size: np.ndarray  # [n] pixels per region
    box: np.ndarray  # [n, 4] xyxy, continuous pixel coordinates
    color: np.ndarray  # [n, 3 * 25] L1-normalised colour histograms
    texture: np.ndarray  # [n, 3 * 8 * 10] L1-normalised texture histograms
    pairs: np.ndarray  # [P, 2] neighbouring region pairs (i < j)
    image_area: float  # H * W


def initial_regions(
    labels: np.ndarray, image: np.ndarray, texture: np.ndarray | None = None
) -> InitialRegions:
    """Measure the segments of ``labels`` [H, W] (ids 0..n-1) on ``image`` [H, W, 3] in [0, 1].

    ``texture`` [H, W, 24] may pass precomputed texture responses of ``image`` (they depend on
    the colour space only, not on the segmentation).

    Chapter: book/05_rcnn (section "Region proposals: selective search").
    """
    if texture is None:
        texture = _texture_channels(image)
    if labels.shape != image.shape[:2]:
        raise ValueError(
            f"labels must be [H, W] = {list(image.shape[:2])}, got {list(labels.shape)}"
        )
    labels = np.unique(labels, return_inverse=True)[1].reshape(labels.shape)  # ids 0..n-1, all used
    num = int(labels.max()) + 1
    box = np.zeros((num, 4))
    for t, (rows, cols) in enumerate(ndimage.find_objects(labels + 1)):
        box[t] = (cols.start, rows.start, cols.stop, rows.stop)
    return InitialRegions(
        size=np.bincount(labels.ravel(), minlength=num).astype(np.float64),
        box=box,
        color=_histograms(labels, num, image, COLOR_BINS),
        texture=_histograms(labels, num, texture, TEXTURE_BINS),
        pairs=_neighbour_pairs(labels, num),
        image_area=float(labels.size),
    )


def group_regions(regions: InitialRegions, similarities: Sequence[str] = SIMILARITIES) -> Hierarchy:
    """Hierarchical grouping (Algorithm 1): merge the most similar neighbours until one is left.

    Args:
        regions: the initial segments, from :func:`initial_regions`.
        similarities: which of ``SIMILARITIES`` to add up.

    Returns:
        The :class:`Hierarchy`: the boxes of all ``2n - 1`` regions and the merge order.

    Chapter: book/05_rcnn (section "Region proposals: selective search").
    """
    num = regions.size.shape[0]
    total = 2 * num - 1
    use_size, use_fill = "size" in similarities, "fill" in similarities
    parts = [
        h
        for name, h in (("color", regions.color), ("texture", regions.texture))
        if name in similarities
    ]
    size = np.concatenate([regions.size, np.zeros(num - 1)])
    box = np.concatenate([regions.box, np.zeros((num - 1, 4))])
    # s_colour + s_texture = Σ min over the concatenated histograms (each part sums to 1), and
    # both propagate the same way, so they live in one array.
    hist = np.zeros((total, sum(h.shape[1] for h in parts)))
    if parts:
        hist[:num] = np.concatenate(parts, axis=1)
    area = regions.image_area

    def similarity(i: int, others: np.ndarray) -> np.ndarray:
        """s(r_i, r_j) for every j in ``others``: [len(others)]."""
        s = np.minimum(hist[i], hist[others]).sum(axis=1)
        if use_size:
            s += 1.0 - (size[i] + size[others]) / area
        if use_fill:
            union_w = np.maximum(box[i, 2], box[others, 2]) - np.minimum(box[i, 0], box[others, 0])
            union_h = np.maximum(box[i, 3], box[others, 3]) - np.minimum(box[i, 1], box[others, 1])
            s += 1.0 - (union_w * union_h - size[i] - size[others]) / area
        return s

    neighbours: list[set[int]] = [set() for _ in range(total)]
    for i, j in regions.pairs.tolist():
        neighbours[i].add(j)
        neighbours[j].add(i)
    # Heap of (-similarity, i, j): the most similar pair first, ties by the smaller region ids.
    heap: list[tuple[float, int, int]] = []
    if len(regions.pairs):
        i, j = regions.pairs[:, 0], regions.pairs[:, 1]
        s = np.minimum(hist[i], hist[j]).sum(axis=1)
        if use_size:
            s += 1.0 - (size[i] + size[j]) / area
        if use_fill:
            union = np.maximum(box[i, 2:], box[j, 2:]) - np.minimum(box[i, :2], box[j, :2])
            s += 1.0 - (union[:, 0] * union[:, 1] - size[i] - size[j]) / area
        heap = list(zip((-s).tolist(), i.tolist(), j.tolist(), strict=True))
        heapq.heapify(heap)

    alive = np.zeros(total, dtype=bool)
    alive[:num] = True
    merges = []
    t = num
    while heap:
        _, i, j = heapq.heappop(heap)
        if not (alive[i] and alive[j]):
            continue  # lazy deletion: a pair whose region was merged away
        alive[i] = alive[j] = False
        alive[t] = True
        size[t] = size[i] + size[j]
        box[t, :2] = np.minimum(box[i, :2], box[j, :2])
        box[t, 2:] = np.maximum(box[i, 2:], box[j, 2:])
        hist[t] = (size[i] * hist[i] + size[j] * hist[j]) / size[t]  # propagation, §3.2
        neighbours[t] = (neighbours[i] | neighbours[j]) - {i, j}
        for n in neighbours[t]:
            neighbours[n] -= {i, j}
            neighbours[n].add(t)
        others = np.fromiter(neighbours[t], dtype=np.int64, count=len(neighbours[t]))
        if len(others):
            for s, n in zip((-similarity(t, others)).tolist(), others.tolist(), strict=True):
                heapq.heappush(heap, (s, n, t))
        merges.append((i, j))
        t += 1
    # A pixel grid is connected, so every segment ends up in the last region: t == total.
    return Hierarchy(box[:t].copy(), np.array(merges, dtype=np.int64).reshape(-1, 2), num)


def selective_search(
    image: Tensor | np.ndarray,
    *,
    mode: str = "light",
    strategies: Sequence[Strategy] | None = None,
    sigma: float = 0.8,
    min_size: int | None = None,
    generator: torch.Generator | None = None,
) -> SelectiveSearchResult:
    """Region proposals by selective search (Uijlings et al. 2013, §3), ranked and de-duplicated.

    Args:
        image: [3, H, W] torch tensor (float in [0, 1] or uint8) or [H, W, 3] numpy array, RGB.
        mode: ``"single"`` (HSV, k = 100, all four similarities), ``"light"`` (HSV, k in {50, 100},
            C+T+S+F and T+S+F: 4 strategies) or ``"fast"`` (the paper's fast mode, used by
            R-CNN: ``light`` in HSV and Lab, 8 strategies, about twice the time); ignored when
            ``strategies`` is given.
        strategies: explicit list of :class:`Strategy`.
        sigma: Gaussian smoothing of Felzenszwalb's segmentation (0.8 in both papers).
        min_size: smallest initial segment in pixels; None uses each strategy's ``k``, as the
            authors' code does. Lower it for small images with small objects.
        generator: random source of the ranking's RND factors; the set of boxes never depends
            on it, only their order.

    Returns:
        :class:`SelectiveSearchResult` ``(boxes [R, 4], priority [R], strategy [R])``, best first.

    Raises:
        TypeError: if ``image`` is neither a tensor nor a numpy array, or has a bad dtype.
        ValueError: on a bad shape, values outside [0, 1], an unknown ``mode`` or a bad strategy.

    Chapter: book/05_rcnn (section "Region proposals: selective search").
    """
    rgb = _to_rgb_float(image)
    if strategies is None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {tuple(MODES)}, got {mode!r}")
        strategies = MODES[mode]
    if not strategies or not all(isinstance(s, Strategy) for s in strategies):
        raise ValueError("strategies must be a non-empty sequence of Strategy")

    converted: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # colour space -> image, texture
    segments: dict[tuple[str, float], InitialRegions] = {}  # strategies share segmentations
    all_boxes, all_priority, all_strategy = [], [], []
    for index, strategy in enumerate(strategies):
        if strategy.color_space not in converted:
            space = _convert(rgb, strategy.color_space)
            converted[strategy.color_space] = (space, _texture_channels(space))
        space, texture = converted[strategy.color_space]
        key = (strategy.color_space, strategy.k)
        if key not in segments:
            smallest = int(strategy.k) if min_size is None else min_size
            labels = felzenszwalb(space, scale=strategy.k, sigma=sigma, min_size=smallest)
            segments[key] = initial_regions(labels, space, texture)
        hierarchy = group_regions(segments[key], strategy.similarities)
        count = hierarchy.boxes.shape[0]
        position = np.arange(count, 0, -1, dtype=np.float64)  # the last region (whole image) is 1
        rnd = torch.rand(count, generator=generator, dtype=torch.float64).numpy()
        all_boxes.append(hierarchy.boxes)
        all_priority.append(rnd * position)
        all_strategy.append(np.full(count, index))
    boxes = np.concatenate(all_boxes)
    priority = np.concatenate(all_priority)
    strategy_index = np.concatenate(all_strategy)

    order = np.argsort(priority, kind="stable")
    _, first = np.unique(boxes[order], axis=0, return_index=True)  # first occurrence in rank order
    keep = order[np.sort(first)]
    return SelectiveSearchResult(
        boxes=torch.as_tensor(boxes[keep], dtype=torch.float32),
        priority=torch.as_tensor(priority[keep], dtype=torch.float32),
        strategy=torch.as_tensor(strategy_index[keep], dtype=torch.int64),
    )
