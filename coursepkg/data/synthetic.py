"""The machinery shared by the synthetic detection datasets (shapes and digits).

A synthetic item is drawn in four steps, all from one ``torch.Generator`` seeded from
``(seed, index)`` alone, so item ``i`` is the same whatever the worker count or reading order:

1. a background: a flat colour, or (``clutter=True``) a colour gradient with low-frequency texture,
   soft blobs and thin lines that are *not* objects;
2. a number of objects, each an alpha crop ``[h, w]`` drawn by the subclass (``_draw``) at a size
   drawn log-uniformly in ``[min_size, max_size]`` (as many small objects as large ones);
3. placement with an occlusion cap: an object is placed only where it hides at most
   ``max_occlusion`` of every object already placed (else a new position is tried);
4. compositing in a colour that contrasts with the background, then sensor noise.

The box of an object is the tight box of its *visible* mask (``alpha >= 0.5`` and not covered by a
later object), in continuous coordinates: a mask pixel in column ``j`` covers ``[j, j + 1)``, so a
mask spanning columns 3..7 gets ``x1 = 3, x2 = 8``.

Shapes used in this module: ``image [3, H, W]`` float32 in ``[0, 1]``; ``boxes [G, 4]`` float32
xyxy; ``labels [G]`` int64 in ``0..K-1``; ``masks [G, H, W]`` bool.

Chapter: book/data_and_conventions
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from coursepkg.ops.validation import check_image_size

_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    """One step of the SplitMix64 mixer: nearby inputs give unrelated 64-bit outputs."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def item_generator(seed: int, index: int) -> torch.Generator:
    """A CPU generator seeded from ``(seed, index)`` alone.

    Hashing the pair (instead of ``seed + index``) keeps ``(0, 1)`` and ``(1, 0)`` unrelated, so two
    datasets with neighbouring seeds do not share items.

    Chapter: book/data_and_conventions
    """
    mixed = _splitmix64(_splitmix64(seed & _MASK64) ^ (index & _MASK64))
    return torch.Generator().manual_seed(mixed >> 1)  # 63 bits: always a valid seed


@dataclass(frozen=True)
class SyntheticSample:
    """One rendered synthetic item, with the masks its boxes were measured from.

    Attributes:
        image: ``[3, H, W]`` float32 in ``[0, 1]``.
        boxes: ``[G, 4]`` float32, xyxy tight boxes of ``masks`` (continuous coordinates).
        labels: ``[G]`` int64 in ``0..K-1``.
        masks: ``[G, H, W]`` bool, the visible pixels of each object.
        visible_fraction: ``[G]`` float32, visible pixels / drawn pixels of each object (1 when
            nothing covers it, never below ``1 - max_occlusion``).
    """

    image: Tensor
    boxes: Tensor
    labels: Tensor
    masks: Tensor
    visible_fraction: Tensor


def masks_to_tight_boxes(masks: Tensor) -> Tensor:
    """Tight xyxy boxes of boolean masks in continuous coordinates.

    A mask whose pixels span columns ``j0..j1`` and rows ``i0..i1`` gets ``(j0, i0, j1 + 1, i1 + 1)``:
    pixel column ``j`` covers ``[j, j + 1)``. (torchvision's ``masks_to_boxes`` returns
    ``(j0, i0, j1, i1)``, pixel indices, instead.)

    Args:
        masks: ``[G, H, W]`` bool; every mask must have at least one pixel.

    Returns:
        ``[G, 4]`` float32 boxes.

    Raises:
        ValueError: if ``masks`` is not 3-D or a mask is empty.

    Chapter: book/data_and_conventions
    """
    if masks.dim() != 3:
        raise ValueError(f"masks must be [G, H, W], got {list(masks.shape)}")
    cols = masks.any(dim=1)  # [G, W]
    rows = masks.any(dim=2)  # [G, H]
    if masks.shape[0] and not bool(cols.any(dim=1).all()):
        empty = int(torch.nonzero(~cols.any(dim=1))[0, 0])
        raise ValueError(f"masks[{empty}] is empty; an empty mask has no box")
    width, height = masks.shape[2], masks.shape[1]
    # argmax returns the first maximum: the first True from the left, and from the right on a flip.
    x1 = cols.to(torch.uint8).argmax(dim=1)
    x2 = width - cols.flip(1).to(torch.uint8).argmax(dim=1)
    y1 = rows.to(torch.uint8).argmax(dim=1)
    y2 = height - rows.flip(1).to(torch.uint8).argmax(dim=1)
    return torch.stack([x1, y1, x2, y2], dim=1).to(torch.float32)


def _check_int(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _check_size(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number of pixels, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number of pixels, got {value}")
    return float(value)


class SyntheticDetection(Dataset):
    """Base class of the synthetic detection datasets: validation, seeding, placement, compositing.

    Subclasses set ``classes`` and implement ``_draw(label, size, generator)``, which returns the
    object's alpha crop ``[h, w]`` (values in ``[0, 1]``, ``h, w <= ceil(size)``).

    Items are ``(image, target)`` pairs in torchvision's detection format: ``image [3, H, W]``
    float32 in ``[0, 1]``; ``target = {"boxes": [G, 4] float32 xyxy, "labels": [G] int64,
    "image_id": int}``. Use :meth:`render` to also get the masks.

    Chapter: book/data_and_conventions
    """

    classes: tuple[str, ...] = ()

    def __init__(
        self,
        num_images: int,
        image_size: Sequence[int],
        *,
        min_objects: int,
        max_objects: int,
        min_size: float,
        max_size: float | None,
        max_occlusion: float,
        clutter: bool,
        seed: int,
        max_tries: int,
    ) -> None:
        self.num_images = _check_int(num_images, "num_images", 0)
        self.image_size = check_image_size(image_size, "image_size")
        self.min_objects = _check_int(min_objects, "min_objects", 0)
        self.max_objects = _check_int(max_objects, "max_objects", 1)
        if self.min_objects > self.max_objects:
            raise ValueError(
                f"min_objects must be <= max_objects, got {self.min_objects} > {self.max_objects}"
            )
        height, width = self.image_size
        self.min_size = _check_size(min_size, "min_size")
        self.max_size = (
            float(min(height, width) // 2)
            if max_size is None
            else _check_size(max_size, "max_size")
        )
        if self.min_size > self.max_size:
            raise ValueError(f"min_size must be <= max_size, got {self.min_size} > {self.max_size}")
        if self.max_size > min(height, width):
            raise ValueError(
                f"max_size must fit in the image (<= {min(height, width)} for image_size "
                f"{self.image_size}), got {self.max_size}"
            )
        if isinstance(max_occlusion, bool) or not isinstance(max_occlusion, numbers.Real):
            raise TypeError(f"max_occlusion must be a number, got {max_occlusion!r}")
        if not 0.0 <= max_occlusion < 1.0:
            raise ValueError(f"max_occlusion must be in [0, 1), got {max_occlusion}")
        self.max_occlusion = float(max_occlusion)
        self.clutter = bool(clutter)
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise TypeError(f"seed must be an int, got {seed!r}")
        self.seed = int(seed)
        self.max_tries = _check_int(max_tries, "max_tries", 1)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return self.num_images

    def __getitem__(self, index: int) -> tuple[Tensor, dict]:
        sample = self.render(index)
        target = {"boxes": sample.boxes, "labels": sample.labels, "image_id": self._index(index)}
        return sample.image, target

    def _index(self, index: int) -> int:
        if isinstance(index, bool) or not isinstance(index, numbers.Integral):
            raise TypeError(f"index must be an int, got {index!r}")
        if not -self.num_images <= index < self.num_images:
            raise IndexError(f"index {index} out of range for a dataset of {self.num_images}")
        return int(index) % self.num_images

    def render(self, index: int) -> SyntheticSample:
        """Draw item ``index`` with its masks; the same ``(seed, index)`` gives the same item.

        Returns:
            A :class:`SyntheticSample`: image, boxes, labels, visible masks, visible fractions.

        Raises:
            IndexError: if ``index`` is out of range (negative indices count from the end).
            TypeError: if ``index`` is not an int.
        """
        generator = item_generator(self.seed, self._index(index))
        image = self._background(generator)  # [3, H, W]
        count = int(
            torch.randint(self.min_objects, self.max_objects + 1, (1,), generator=generator)
        )
        visible = torch.zeros((count, *self.image_size), dtype=torch.bool)  # [count, H, W]
        full_area = torch.zeros(count)
        labels: list[int] = []
        for _ in range(count):
            label = int(torch.randint(self.num_classes, (1,), generator=generator))
            size = self._draw_size(generator)
            alpha = self._draw(label, size, generator)  # [h, w]
            placed = self._place(alpha, visible[: len(labels)], full_area[: len(labels)], generator)
            if placed is None:
                continue
            y0, x0 = placed
            h, w = alpha.shape
            mask = alpha >= 0.5
            k = len(labels)
            visible[:k, y0 : y0 + h, x0 : x0 + w] &= ~mask  # the new object hides what is below
            visible[k, y0 : y0 + h, x0 : x0 + w] = mask
            full_area[k] = mask.sum()
            labels.append(label)
            self._composite(image, alpha, y0, x0, generator)
        if self.clutter:
            # Sensor noise, the same on the three channels (one draw per pixel is enough).
            sigma = 0.01 + 0.04 * torch.rand((), generator=generator)
            image = image + sigma * torch.randn((1, *self.image_size), generator=generator)
        masks = visible[: len(labels)]
        return SyntheticSample(
            image=image.clamp_(0.0, 1.0),
            boxes=masks_to_tight_boxes(masks),
            labels=torch.tensor(labels, dtype=torch.int64),
            masks=masks,
            visible_fraction=masks.sum(dim=(1, 2)) / full_area[: len(labels)],
        )

    def _draw(self, label: int, size: float, generator: torch.Generator) -> Tensor:
        raise NotImplementedError

    def _draw_size(self, generator: torch.Generator) -> float:
        """Log-uniform in ``[min_size, max_size]``: each octave of sizes is equally likely."""
        u = float(torch.rand((), generator=generator))
        return self.min_size * (self.max_size / self.min_size) ** u

    def _place(
        self, alpha: Tensor, visible: Tensor, full_area: Tensor, generator: torch.Generator
    ) -> tuple[int, int] | None:
        """Top-left ``(y0, x0)`` where ``alpha`` hides at most ``max_occlusion`` of every object.

        Returns None when ``max_tries`` positions all fail (the object is then left out).
        """
        height, width = self.image_size
        h, w = alpha.shape
        mask = alpha >= 0.5
        if not bool(mask.any()):
            return None
        # An earlier object must keep at least (1 - max_occlusion) of its full area visible.
        keep = (1.0 - self.max_occlusion) * full_area  # [k]
        visible_area = visible.sum(dim=(1, 2))  # [k]
        for _ in range(self.max_tries):
            ry, rx = torch.rand(2, generator=generator).tolist()
            y0, x0 = int(ry * (height - h + 1)), int(rx * (width - w + 1))
            if visible.shape[0] == 0:
                return y0, x0
            window = visible[:, y0 : y0 + h, x0 : x0 + w]  # [k, h, w]
            hidden = (window & mask).sum(dim=(1, 2))  # [k]
            remaining = visible_area - hidden
            if bool((remaining >= keep).all()):
                return y0, x0
        return None

    def _background(self, generator: torch.Generator) -> Tensor:
        if self.clutter:
            return cluttered_background(self.image_size, generator)
        height, width = self.image_size
        return torch.rand(3, 1, 1, generator=generator).expand(3, height, width).clone()

    def _composite(
        self, image: Tensor, alpha: Tensor, y0: int, x0: int, generator: torch.Generator
    ) -> None:
        """Paint ``alpha`` into ``image`` (in place) in a colour far from the background there."""
        h, w = alpha.shape
        region = image[:, y0 : y0 + h, x0 : x0 + w]  # [3, h, w], a view
        background = region.mean(dim=(1, 2)).tolist()
        # The first of 8 random colours at RGB distance >= 0.45 from the local background, else
        # the farthest of them (plain Python: eight 3-vectors are not worth tensor calls).
        candidates = torch.rand(8, 3, generator=generator).tolist()
        distances = [math.dist(c, background) for c in candidates]
        good = [i for i, d in enumerate(distances) if d >= 0.45]
        choice = good[0] if good else max(range(8), key=distances.__getitem__)
        colour = torch.tensor(candidates[choice]).view(3, 1, 1)
        region.mul_(1 - alpha).add_(colour * alpha)


def cluttered_background(image_size: tuple[int, int], generator: torch.Generator) -> Tensor:
    """A background with distractors: gradient, texture, soft blobs and thin lines.

    Everything is drawn from ``generator``; blobs and lines are batched so that the cost does not
    grow with their number in Python.

    Args:
        image_size: ``(height, width)``.
        generator: the item's generator.

    Returns:
        ``[3, H, W]`` float32 in ``[0, 1]``.

    Chapter: book/data_and_conventions
    """
    height, width = image_size
    ys = torch.arange(height, dtype=torch.float32).view(1, height, 1) + 0.5  # [1, H, 1]
    xs = torch.arange(width, dtype=torch.float32).view(1, 1, width) + 0.5  # [1, 1, W]
    # A gradient between two muted colours along a random direction.
    c0, c1 = 0.1 + 0.8 * torch.rand(2, 3, 1, 1, generator=generator)
    angle = 2 * math.pi * float(torch.rand((), generator=generator))
    t = math.cos(angle) * xs / width + math.sin(angle) * ys / height  # [1, H, W]
    t = (t - t.min()) / (t.max() - t.min()).clamp(min=1e-6)
    image = c0 + (c1 - c0) * t  # [3, H, W]
    # Low-frequency shading: a coarse random grid upsampled bilinearly, as uneven lighting.
    coarse = torch.randn(1, 1, max(height // 16, 2), max(width // 16, 2), generator=generator)
    image = image + 0.1 * F.interpolate(coarse, size=(height, width), mode="bilinear")[0]
    # Soft blobs, larger and fuzzier than any object: weight (1 - d^2 / r^2)^2 inside radius r.
    num_blobs = int(torch.randint(0, 4, (1,), generator=generator))
    if num_blobs:
        params = torch.rand(num_blobs, 6, generator=generator)  # centre y, x, radius, colour
        cy = (params[:, 0] * height).view(-1, 1, 1)
        cx = (params[:, 1] * width).view(-1, 1, 1)
        radius = ((0.15 + 0.35 * params[:, 2]) * min(height, width)).view(-1, 1, 1)
        d2 = (ys - cy) ** 2 + (xs - cx) ** 2  # [B, H, W]
        weight = 0.6 * (1 - d2 / radius**2).clamp(min=0) ** 2  # [B, H, W]
        colour = params[:, 3:].T.reshape(3, -1, 1, 1)  # [3, B, 1, 1]
        total = weight.sum(dim=0).clamp(min=1e-6)  # [H, W]
        mix = (colour * weight).sum(dim=1) / total  # [3, H, W], weighted colour of the blobs
        coverage = 1 - (1 - weight).prod(dim=0)  # [H, W]
        image = image * (1 - coverage) + mix * coverage
    # Thin straight lines (1-2 px wide) across the image: edges that belong to no object.
    num_lines = int(torch.randint(0, 5, (1,), generator=generator))
    if num_lines:
        params = torch.rand(num_lines, 8, generator=generator)  # ends p, q; half-width; colour
        scale = torch.tensor([width, height, width, height])
        ends = params[:, :4] * scale  # [L, 4] as (px, py, qx, qy)
        half_width = 0.5 + 0.5 * params[:, 4]  # [L]
        on_line = _segment_masks(xs, ys, ends, half_width)  # [L, H, W]
        colours = params[:, 5:].reshape(num_lines, 3, 1, 1)
        for line in range(num_lines):  # later lines are drawn over earlier ones
            image = torch.where(on_line[line], colours[line], image)
    return image.clamp_(0.0, 1.0)


def _segment_masks(xs: Tensor, ys: Tensor, ends: Tensor, half_width: Tensor) -> Tensor:
    """Pixels whose centre lies within ``half_width`` of each segment.

    Args:
        xs: ``[1, 1, W]`` pixel-centre x coordinates; ys: ``[1, H, 1]``.
        ends: ``[L, 4]`` segments ``(px, py, qx, qy)``; half_width: ``[L]``.

    Returns:
        ``[L, H, W]`` bool.
    """
    px, py, qx, qy = (ends[:, i].view(-1, 1, 1) for i in range(4))  # [L, 1, 1] each
    dx, dy = qx - px, qy - py
    length2 = (dx * dx + dy * dy).clamp(min=1e-6)
    # Projection of each pixel centre on its segment, clamped to the ends.
    t = (((xs - px) * dx + (ys - py) * dy) / length2).clamp(0.0, 1.0)  # [L, H, W]
    ex, ey = xs - (px + t * dx), ys - (py + t * dy)
    return ex * ex + ey * ey <= half_width.view(-1, 1, 1) ** 2
