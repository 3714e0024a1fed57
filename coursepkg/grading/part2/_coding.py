"""Proposals and ground truths for the box-coding questions, and the answers of the usual mistakes.

Chapter: book/exercises
"""

from __future__ import annotations

import torch
from torch import Tensor

from coursepkg.grading.expect import Case, generator
from coursepkg.grading.part1._scenes import jitter
from coursepkg.ops.box_coding import encode_boxes

TYPO_Y = (
    "t_y and ĝ_y use the proposal's HEIGHT p_h and centre p_y (the notes print ĝ_y with p_x, "
    "and a copy of the x line easily keeps p_w)"
)
TYPO_H = "t_h = log(g_h / p_h): divide by the proposal's height p_h (the notes print 'h')"
NO_LOG = "t_w and t_h are logarithms: t_w = log(g_w / p_w), not the plain ratio"
EXP_LOG = "encoding takes log(g_w / p_w); decoding undoes it with exp(d_w): not the other way round"
NO_EXP = "ĝ_w = p_w * exp(d_w): the width delta is a log-ratio, undo it with exp"
CORNERS = "t_x and t_y compare box CENTRES, (x1 + x2) / 2, not the top-left corners"
GT_SIZE = "normalise by the PROPOSAL's width and height (p_w, p_h), not the ground truth's"
XYXY = "return xyxy corners: (ĝ_x - ĝ_w / 2, ĝ_y - ĝ_h / 2, ĝ_x + ĝ_w / 2, ĝ_y + ĝ_h / 2)"


def parts(boxes: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Centre x, centre y, width, height of ``[N, 4]`` boxes, each ``[N]``."""
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    return boxes[:, 0] + 0.5 * w, boxes[:, 1] + 0.5 * h, w, h


def proposals(n: int, g: torch.Generator, *, size: float = 100.0) -> Tensor:
    """``[n, 4]`` float64 boxes with sides between 1 and ``1 + size / 2`` (never zero width)."""
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * size
    wh = 1 + torch.rand(n, 2, generator=g, dtype=torch.float64) * size / 2
    return torch.cat([xy, xy + wh], dim=1)


def random_pair(n: int, seed: int, *, near: bool) -> tuple[Tensor, Tensor]:
    """Proposals and ground truths: ``near`` ones are jittered copies (R-CNN trains on IoU > 0.6)."""
    g = generator(seed)
    p = proposals(n, g)
    gt = jitter(p, g, 0.15) if near else proposals(n, g)
    return p, gt


def box_case(
    title: str, first, second, names: tuple[str, str], dtype=torch.float32, hint=""
) -> Case:
    def as_tensor(x):
        return (x if torch.is_tensor(x) else torch.tensor(x, dtype=torch.float64)).reshape(-1, 4)

    a, b = as_tensor(first).to(dtype), as_tensor(second).to(dtype)
    return Case(title, {names[0]: a, names[1]: b}, hint)


def target_mistakes(p: Tensor, gt: Tensor):
    """``(hint, wrong [N, 4] targets)`` pairs."""
    gx, gy, gw, gh = parts(gt)
    px, py, pw, ph = parts(p)
    right = encode_boxes(gt, p)

    def with_column(j: int, column: Tensor) -> Tensor:
        out = right.clone()
        out[:, j] = column
        return out

    yield TYPO_Y, lambda: with_column(1, (gy - py) / pw)
    yield TYPO_H, lambda: with_column(3, torch.log(gh / pw))
    yield TYPO_H, lambda: with_column(3, torch.log(gh / gh))
    yield NO_LOG, lambda: torch.stack([right[:, 0], right[:, 1], gw / pw, gh / ph], dim=1)
    yield (
        EXP_LOG,
        lambda: torch.stack(
            [right[:, 0], right[:, 1], torch.exp(gw / pw), torch.exp(gh / ph)], dim=1
        ),
    )
    yield (
        CORNERS,
        lambda: torch.stack(
            [(gt[:, 0] - p[:, 0]) / pw, (gt[:, 1] - p[:, 1]) / ph, right[:, 2], right[:, 3]], dim=1
        ),
    )
    yield (
        GT_SIZE,
        lambda: torch.stack([(gx - px) / gw, (gy - py) / gh, right[:, 2], right[:, 3]], dim=1),
    )


def decode_mistakes(deltas: Tensor, p: Tensor):
    """``(hint, wrong [N, 4] boxes)`` pairs."""
    px, py, pw, ph = parts(p.to(deltas.dtype))
    dx, dy, dw, dh = deltas.unbind(dim=1)

    def corners(cx, cy, w, h):
        return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=1)

    yield TYPO_Y, lambda: corners(pw * dx + px, ph * dy + px, pw * dw.exp(), ph * dh.exp())
    yield TYPO_Y, lambda: corners(pw * dx + px, pw * dy + py, pw * dw.exp(), ph * dh.exp())
    yield NO_EXP, lambda: corners(pw * dx + px, ph * dy + py, pw * dw, ph * dh)
    yield (
        EXP_LOG,
        lambda: corners(pw * dx + px, ph * dy + py, pw * dw.abs().log(), ph * dh.abs().log()),
    )
    yield (
        XYXY,
        lambda: torch.stack([pw * dx + px, ph * dy + py, pw * dw.exp(), ph * dh.exp()], dim=1),
    )
