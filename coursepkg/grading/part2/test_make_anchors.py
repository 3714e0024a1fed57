"""Grading tests of ``make_anchors(feature_size, stride, scales, ratios, base_size, offset)``
(exercise 07_faster_rcnn).

Compared with :func:`coursepkg.models.anchors.generate_anchors` on the notes' setting (ratios 0.5, 1, 2;
scales 8, 16, 32; stride 16; the 50 x 50 map of an 800 x 800 image, whose 8,940 anchors inside
the image follow from ``offset=0.5``), on torchvision's ``offset=0``, on maps that are not
square (so that the row/column order shows), one ratio or one scale, an empty map, and seeded
random maps, strides, scales, ratios and offsets.
"""

from __future__ import annotations

import pytest
import torch

from coursepkg.grading.expect import Case, Picture, call, expect_tensor, generator
from coursepkg.models.anchors import generate_anchors

ORDER = (
    "order the anchors location by location, row by row (y outer, x inner), and at each location "
    "ratio by ratio, with the scales inside: index (i * W + j) * A + r * len(scales) + s"
)
SHAPE = (
    "ratio is height / width: h = base_size * scale * sqrt(ratio), "
    "w = base_size * scale / sqrt(ratio)"
)
CENTRE = "the centre of location (i, j) is ((j + offset) * stride, (i + offset) * stride)"
NOTES = ((8, 16, 32), (0.5, 1.0, 2.0))


def _case(title: str, feature_size, stride, scales, ratios, base_size, offset, hint="") -> Case:
    return Case(
        title,
        {
            "feature_size": tuple(feature_size),
            "stride": stride,
            "scales": tuple(scales),
            "ratios": tuple(ratios),
            "base_size": base_size,
            "offset": offset,
        },
        hint,
    )


def _random(seed: int) -> Case:
    g = generator(seed)

    def draw(low: int, high: int) -> int:
        return int(torch.randint(low, high + 1, (1,), generator=g))

    size = (draw(1, 12), draw(1, 12))
    stride = (4, 8, 16, 32)[draw(0, 3)]
    scales = tuple(round(float(s), 2) for s in torch.rand(draw(1, 4), generator=g) * 8 + 0.5)
    ratios = tuple(round(float(r), 2) for r in torch.rand(draw(1, 3), generator=g) * 3 + 0.25)
    base_size = (8, 16, 32)[draw(0, 2)]
    offset = (0.0, 0.5, 0.25)[draw(0, 2)]
    return _case(
        f"random: map {size}, stride {stride}, {len(scales)} scales, {len(ratios)} ratios, "
        f"base {base_size}, offset {offset} (seed {seed})",
        size,
        stride,
        scales,
        ratios,
        base_size,
        offset,
    )


CASES = [
    _case("the notes' anchors on a 1 x 1 map", (1, 1), 16, *NOTES, 16, 0.5, SHAPE),
    _case("the notes' anchors on a 2 x 3 map", (2, 3), 16, *NOTES, 16, 0.5, ORDER),
    _case(
        "the notes' 50 x 50 map of an 800 x 800 image (22,500 anchors)",
        (50, 50),
        16,
        *NOTES,
        16,
        0.5,
    ),
    _case("torchvision's centres: offset 0, on a 3 x 2 map", (3, 2), 16, *NOTES, 16, 0.0, CENTRE),
    _case("one ratio, one scale: a plain grid of squares", (4, 5), 8, (4,), (1.0,), 8, 0.5, CENTRE),
    _case("a tall map (5 x 1), two ratios", (5, 1), 32, (2,), (0.5, 2.0), 16, 0.5, ORDER),
    _case(
        "a wide map (1 x 4), scales first-to-last", (1, 4), 16, (1, 2, 4), (1.0,), 16, 0.25, ORDER
    ),
    _case(
        "an empty map (0 x 7): no anchors", (0, 7), 16, *NOTES, 16, 0.5, "return a [0, 4] tensor"
    ),
    *[_random(seed) for seed in range(301, 309)],
]


def _mistakes(feature_size, stride, scales, ratios, base_size, offset):
    def ref(**changes):
        args = dict(
            feature_size=feature_size, stride=stride, scales=scales, ratios=ratios,
            base_size=base_size, offset=offset,
        )  # fmt: skip
        args.update(changes)
        return generate_anchors(**args)

    h, w = feature_size
    a = len(scales) * len(ratios)
    yield SHAPE, lambda: ref(ratios=tuple(1 / r for r in ratios))
    yield (
        ORDER,
        lambda: ref().view(h * w, len(ratios), len(scales), 4).transpose(1, 2).reshape(-1, 4),
    )
    yield ORDER, lambda: ref().view(h, w, a, 4).transpose(0, 1).reshape(-1, 4)
    yield CENTRE, lambda: ref(offset=0.5)
    yield CENTRE, lambda: ref(offset=0.0)
    yield CENTRE, lambda: ref(offset=0.0) + offset


@pytest.mark.parametrize("case", CASES, ids=str)
def test_make_anchors(student, case: Case) -> None:
    got = call(student, case)
    args = case.inputs()
    expected = generate_anchors(*args)
    picture = None
    if 0 < len(expected) <= 9:
        picture = Picture("expected anchors (green), yours (red, dashed)").add(
            "expected", expected.double(), "tab:green"
        )
        if isinstance(got, torch.Tensor) and got.shape == expected.shape:
            picture.add("yours", got.detach().double(), "tab:red", dashed=True)
    expect_tensor(
        got, expected, case, atol=1e-3, rtol=1e-5, diagnoses=_mistakes(*args), picture=picture
    )
