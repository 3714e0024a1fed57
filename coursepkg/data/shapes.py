"""The "shapes" detection dataset: coloured geometric shapes on cluttered backgrounds.

Every shape is defined in its own frame ``(u, v)``, scaled so that it fits the unit disc; an
object of *size* ``s`` is that shape scaled to a disc of diameter ``s`` pixels, rotated and placed
at a sub-pixel position. A pixel belongs to the shape when its centre does, so masks are computed
from coordinate grids in a few vectorised tensor operations. Sizes run from ``min_size`` (8 px by
default: a few pixels across, hard) to ``max_size`` (half the image by default), which is what
makes multi-scale detectors worth having.

A 128 x 128 item takes a few milliseconds on one CPU core. Rendering is a chain of small tensor
operations, so it gains nothing from intra-op threads; to render in parallel, give the DataLoader
``num_workers >= 1`` (each worker runs single-threaded and draws its items from their own seeds).

Chapter: book/data_and_conventions
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from coursepkg.data.synthetic import SyntheticDetection

#: Every shape the renderer knows, in a fixed order.
SHAPE_CLASSES = ("circle", "square", "triangle", "cross", "rectangle", "star", "ellipse")

#: The classes used unless you ask for others: five shapes that stay distinct down to ~8 px.
DEFAULT_SHAPE_CLASSES = ("circle", "square", "triangle", "cross", "rectangle")

# Shapes whose boxes should keep their aspect ratio are only turned by multiples of 90 degrees.
_ELONGATED = ("rectangle", "ellipse")
_ASPECT_RANGE = (1.6, 2.6)  # long side / short side of rectangles and ellipses
_CROSS_HALF_THICKNESS = 0.3  # of the arm length
_STAR_INNER_RADIUS = 0.45  # of the outer radius
_STAR_POINTS = 5


def _regular_polygon(u: Tensor, v: Tensor, sides: int) -> Tensor:
    """Inside a regular polygon inscribed in the unit circle: every edge's half-plane holds."""
    angles = torch.arange(sides, dtype=u.dtype) * (2 * math.pi / sides) + math.pi / 2
    # Projection of each point on each edge normal, [..., sides]; the inradius is cos(pi / sides).
    proj = u.unsqueeze(-1) * torch.cos(angles) + v.unsqueeze(-1) * torch.sin(angles)
    return (proj <= math.cos(math.pi / sides)).all(dim=-1)


def _star(u: Tensor, v: Tensor) -> Tensor:
    """Inside a five-pointed star: fold the angle into one half-point, then one half-plane test."""
    sector = 2 * math.pi / _STAR_POINTS
    phi = torch.atan2(v, u).remainder(sector)
    phi = torch.minimum(phi, sector - phi)  # mirror symmetry of each point: phi in [0, sector / 2]
    rho = torch.sqrt(u * u + v * v)
    x, y = rho * torch.cos(phi), rho * torch.sin(phi)
    # The edge runs from the tip (1, 0) to the inner corner at angle sector / 2.
    qx = _STAR_INNER_RADIUS * math.cos(sector / 2)
    qy = _STAR_INNER_RADIUS * math.sin(sector / 2)
    nx, ny = qy, 1.0 - qx  # normal of the edge, pointing away from the centre
    return nx * x + ny * y <= nx * 1.0


def shape_mask(name: str, u: Tensor, v: Tensor, *, aspect: float = 1.0) -> Tensor:
    """Which points ``(u, v)`` of a shape's own frame lie inside the shape.

    Every shape fits the unit disc (its circumscribed circle has radius 1); ``aspect`` (>= 1) is
    the long-to-short side ratio of ``"rectangle"`` and ``"ellipse"``, whose long side runs
    along ``u``.

    Args:
        name: one of :data:`SHAPE_CLASSES`.
        u: ``[...]`` float coordinates along the shape's first axis.
        v: ``[...]`` float coordinates along its second axis, same shape as ``u``.
        aspect: long / short side of the elongated shapes; ignored by the others.

    Returns:
        ``[...]`` bool tensor, True inside the shape.

    Raises:
        ValueError: if ``name`` is not a known shape or ``aspect < 1``.

    Chapter: book/data_and_conventions
    """
    if aspect < 1:
        raise ValueError(f"aspect must be >= 1, got {aspect}")
    if name == "circle":
        return u * u + v * v <= 1.0
    if name == "square":
        return _regular_polygon(u, v, 4)
    if name == "triangle":
        return _regular_polygon(u, v, 3)
    if name == "cross":
        # Arm length L and half-thickness t * L, with the arm's corner (L, t L) on the unit circle.
        arm = 1.0 / math.hypot(1.0, _CROSS_HALF_THICKNESS)
        thick = _CROSS_HALF_THICKNESS * arm
        au, av = u.abs(), v.abs()
        return ((au <= arm) & (av <= thick)) | ((av <= arm) & (au <= thick))
    if name == "rectangle":
        half_long = 1.0 / math.hypot(1.0, 1.0 / aspect)  # the corners lie on the unit circle
        return (u.abs() <= half_long) & (v.abs() <= half_long / aspect)
    if name == "ellipse":
        return u * u + (v * aspect) ** 2 <= 1.0
    if name == "star":
        return _star(u, v)
    raise ValueError(f"name must be one of {SHAPE_CLASSES}, got {name!r}")


class ShapesDataset(SyntheticDetection):
    """Coloured shapes (circles, squares, triangles, ...) on cluttered backgrounds.

    Each item has between ``min_objects`` and ``max_objects`` shapes (fewer only when no position
    keeps the occlusion cap after ``max_tries`` attempts). The *size* of a shape is the diameter
    of the circle it is inscribed in, drawn log-uniformly in ``[min_size, max_size]``; its box is
    the tight box of its visible pixels. Item ``i`` depends on ``(seed, i)`` only.

    Args:
        num_images: number of items (>= 0).
        image_size: ``(height, width)`` of every image.
        classes: the shape names to use, a subset of :data:`SHAPE_CLASSES`; label ``k`` is
            ``classes[k]``.
        min_objects: fewest shapes drawn per image (0 allows empty images).
        max_objects: most shapes per image.
        min_size: smallest shape diameter in pixels.
        max_size: largest shape diameter in pixels, at most ``min(image_size)``; default half
            the shorter image side.
        max_occlusion: the largest fraction of a shape's pixels later shapes may cover, in
            ``[0, 1)``; 0 forbids overlapping masks (boxes may still overlap).
        clutter: draw gradients, texture, blobs, lines and noise (True) or a flat background.
        seed: base seed; item ``i`` uses its own generator seeded from ``(seed, i)``.
        max_tries: positions tried per shape before it is left out.

    Raises:
        ValueError: for a bad parameter (the message names it): ``num_images < 0``, a
            non-positive ``image_size``, ``min_size > max_size``, ``max_size`` larger than the
            image, ``min_objects > max_objects``, an unknown or repeated class name.
        TypeError: for a parameter of the wrong type.

    Example:
        >>> data = ShapesDataset(100, image_size=(128, 128), seed=0)
        >>> image, target = data[0]   # [3, 128, 128], {"boxes": [G, 4], "labels": [G], ...}

    Chapter: book/data_and_conventions
    """

    def __init__(
        self,
        num_images: int,
        image_size: Sequence[int] = (128, 128),
        *,
        classes: Sequence[str] = DEFAULT_SHAPE_CLASSES,
        min_objects: int = 1,
        max_objects: int = 6,
        min_size: float = 8.0,
        max_size: float | None = None,
        max_occlusion: float = 0.4,
        clutter: bool = True,
        seed: int = 0,
        max_tries: int = 20,
    ) -> None:
        if isinstance(classes, str) or not isinstance(classes, Sequence):
            raise TypeError(f"classes must be a sequence of shape names, got {classes!r}")
        unknown = [name for name in classes if name not in SHAPE_CLASSES]
        if unknown:
            raise ValueError(f"classes has unknown shape names {unknown}; known: {SHAPE_CLASSES}")
        if len(set(classes)) != len(classes) or not classes:
            raise ValueError(f"classes must be non-empty and without repeats, got {list(classes)}")
        self.classes = tuple(classes)
        super().__init__(
            num_images,
            image_size,
            min_objects=min_objects,
            max_objects=max_objects,
            min_size=min_size,
            max_size=max_size,
            max_occlusion=max_occlusion,
            clutter=clutter,
            seed=seed,
            max_tries=max_tries,
        )

    def _draw(self, label: int, size: float, generator: torch.Generator) -> Tensor:
        """Hard 0/1 alpha ``[n, n]``, ``n = ceil(size)``, of one shape at a random sub-pixel offset."""
        name = self.classes[label]
        n = math.ceil(size)
        radius = size / 2
        offset, angle_u, aspect_u = torch.rand(3, generator=generator).tolist()
        centre = radius + offset * (n - size)  # the disc of diameter `size` stays inside the crop
        if name in _ELONGATED:
            angle = 0.0 if angle_u < 0.5 else math.pi / 2  # horizontal or vertical
            aspect = _ASPECT_RANGE[0] + aspect_u * (_ASPECT_RANGE[1] - _ASPECT_RANGE[0])
        else:
            angle, aspect = 2 * math.pi * angle_u, 1.0
        coords = (torch.arange(n, dtype=torch.float32) + 0.5 - centre) / radius  # pixel centres
        y, x = coords.view(n, 1), coords.view(1, n)
        cos, sin = math.cos(angle), math.sin(angle)
        u, v = x * cos + y * sin, -x * sin + y * cos  # [n, n] each, rotated into the shape's frame
        return shape_mask(name, u, v, aspect=aspect).to(torch.float32)
