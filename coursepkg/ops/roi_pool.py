"""RoI pooling (Fast R-CNN) and RoIAlign (Mask R-CNN): a fixed-size feature for every box.

Fast R-CNN runs the backbone once per image and cuts each proposal's window out of the shared
feature map. RoI pooling (Fast R-CNN §2.1) rounds the window to feature cells, splits it into an
``H_out x W_out`` grid of bins and max-pools each bin. RoIAlign (Mask R-CNN §3) avoids the rounding:
it averages ``sampling_ratio x sampling_ratio`` bilinearly interpolated points per bin.

Both functions take the same arguments and return the same values (and input gradients) as
``torchvision.ops.roi_pool`` and ``torchvision.ops.roi_align``; they are written in plain PyTorch,
vectorised over RoIs and bins, and autograd provides the backward pass. Boxes get no gradient
(as in torchvision).

Shapes::

    input                [N, C, H, W]   feature maps of N images
    boxes                [K, 5]         (batch_index, x1, y1, x2, y2) in image pixels
                      or list of N tensors [L_i, 4] (x1, y1, x2, y2), one per image
    output               [K, C, H_out, W_out]

``spatial_scale`` maps image pixels to feature cells (1/16 for a stride-16 backbone). Boxes may lie
partly or fully outside the feature map: bins that see nothing give 0, never NaN.

How the work is vectorised (worth reading next to the chapter's slow, loop-based version):

* Features are read through one table ``[N * H * W, C]`` (channels last), so a gather fetches all
  C channels of a cell at once with ``index_select``.
* RoIAlign is separable. Every sample's bilinear weight is a product of a row weight and a column
  weight, and a sample outside the map contributes 0 in either factor, so the average over a bin
  is ``out[k] = Wy[k] @ F[b_k] @ Wx[k]^T`` per channel, with ``Wy`` [H_out, rows] and ``Wx``
  [W_out, cols] holding the summed interpolation weights. We gather only each RoI's window of
  rows and columns and do two batched matrix products.
* RoI pooling reads every bin from a sparse table, built once per call: table ``(a, b)`` holds
  the maximum of every block of ``2^a`` rows by ``2^b`` columns, each table the elementwise
  maximum of a smaller one and itself shifted by half a block. A bin of ``h x w`` cells is
  covered by four overlapping blocks of ``2^floor(log2 h) x 2^floor(log2 w)`` cells (a
  maximum does not mind the overlap), so it costs four reads whatever its size. Tables cost
  memory and a pass over the map each, so a small planner picks how many levels to build from
  the RoIs at hand: all of them for many RoIs on a small map, fewer (and more reads per bin)
  for a few RoIs on a big map.
* With autograd, the search must also say *which* cell won, the first maximum in row-major
  order (torchvision's argmax, where the gradient goes). The same tables then hold one int64
  key per value: the value's order in the high 32 bits, the complement of its index in the
  low 32 bits, so equal values are won by the first cell and the index can be read back. The
  differentiable output is a plain gather of the winners: the backward pass touches only
  K x C x H_out x W_out values, and gradients agree with torchvision even on ties (common
  after ReLU).
* RoIs are sorted by how much they read (window size for RoIAlign, reads per bin for RoI
  pooling) and processed in chunks of a few MiB, so one big box does not pad all others,
  memory stays bounded and the allocator reuses the same buffers.

Chapter: book/06_fast_rcnn (section "RoI pooling", with RoI Align).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from functools import partial
from typing import NamedTuple

import torch
from torch import Tensor

from coursepkg.ops.validation import _all_true, _boxes_flag, _is_box_tensor, check_boxes

# Values gathered per chunk (8 MiB of float32): small enough for the allocator to reuse the
# buffer from chunk to chunk instead of page-faulting fresh memory each time.
_CHUNK_ELEMENTS = 1 << 21
# Most values the sparse tables of roi_pool may hold beyond the first (128 MiB of int64 keys).
_TABLE_ELEMENTS = 1 << 24


def _output_size(output_size: int | Sequence[int]) -> tuple[int, int]:
    size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    if len(size) != 2 or not all(
        isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size
    ):
        raise ValueError(
            f"output_size must be a positive int or a pair (H_out, W_out), got {output_size!r}"
        )
    return size  # type: ignore[return-value]


def _as_rois(input: Tensor, boxes: Tensor | Sequence[Tensor], spatial_scale: float) -> Tensor:
    """Validate ``input`` and ``boxes``; return the boxes as [K, 5] (torchvision's RoI format)."""
    if not isinstance(input, Tensor):
        raise TypeError(f"input must be a torch.Tensor, got {type(input).__name__}")
    if input.dim() != 4:
        raise ValueError(f"input must be [N, C, H, W], got {list(input.shape)}")
    if not input.is_floating_point():
        raise TypeError(f"input must be a floating-point tensor, got {input.dtype}")
    if (
        isinstance(spatial_scale, bool)
        or not isinstance(spatial_scale, (int, float))
        or not (math.isfinite(spatial_scale) and spatial_scale > 0)
    ):
        raise ValueError(f"spatial_scale must be a positive number, got {spatial_scale!r}")

    if isinstance(boxes, Tensor):
        if boxes.dim() != 2 or boxes.shape[1] != 5:
            raise ValueError(
                f"boxes must be [K, 5] (batch_index, x1, y1, x2, y2), got {list(boxes.shape)}"
            )
        rois = boxes
    elif isinstance(boxes, (list, tuple)):
        for i, b in enumerate(boxes):
            if not isinstance(b, Tensor) or b.dim() != 2 or b.shape[1] != 4:
                shape = list(b.shape) if isinstance(b, Tensor) else type(b).__name__
                raise ValueError(f"boxes[{i}] must be [L, 4] (x1, y1, x2, y2), got {shape}")
        if len(boxes) == 0:
            rois = input.new_zeros(0, 5)
        else:
            index = torch.cat([torch.full_like(b[:, :1], i) for i, b in enumerate(boxes)])
            rois = torch.cat([index, torch.cat(list(boxes))], dim=1)
    else:
        raise TypeError(
            f"boxes must be a Tensor[K, 5] or a list of Tensor[L, 4], got {type(boxes).__name__}"
        )

    if rois.is_floating_point() and rois.dtype != input.dtype:
        raise TypeError(
            f"boxes and input must have the same dtype, got {rois.dtype} and {input.dtype}"
        )
    rois = rois.detach()

    def bad_batch_index() -> Tensor:  # [K]
        index = rois[:, 0]
        return (index != index.round()) | (index < 0) | (index >= input.shape[0])

    # One host sync for the boxes and their batch indices; the checks below name a failure.
    if _is_box_tensor(rois[:, 1:]) and _all_true(
        [_boxes_flag(rois[:, 1:]), ~bad_batch_index().any()]
    ):
        return rois
    check_boxes(rois[:, 1:], "boxes")  # floating point, finite, x2 >= x1 and y2 >= y1
    bad = bad_batch_index()
    batch_index = rois[:, 0]
    if bad.any():
        row = int(torch.nonzero(bad)[0, 0])
        raise ValueError(
            f"boxes' batch index must be an integer in [0, {input.shape[0]}) (N = {input.shape[0]} "
            f"images), row {row} has {batch_index[row].item()}"
        )
    return rois


def _chunks(
    rows: Tensor, cols: Tensor, per_cell: int
) -> tuple[Tensor, list[tuple[int, int, int, int]]]:
    """Order RoIs by window area and cut them into groups whose padded blocks stay small.

    Args:
        rows, cols: [K] int64 block height and width each RoI needs.
        per_cell: values gathered per block cell (the channel count, times bins if any).

    Returns:
        ``order`` [K] (RoI indices sorted by area, on the device) and ``(start, end, rows, cols)``
        per group: the slice of ``order`` and the block size that covers all its RoIs.
    """
    order = torch.sort(rows * cols, stable=True).indices  # [K]
    sizes = torch.stack([rows[order], cols[order]]).tolist()  # [2, K]: the one host sync
    return order, _group(*sizes, per_cell)


def _group(
    rows_list: list[int], cols_list: list[int], per_cell: int
) -> list[tuple[int, int, int, int]]:
    """The groups of :func:`_chunks`, from the block sizes of the RoIs in area order."""
    groups, start, max_r, max_c = [], 0, 0, 0
    for i, (r, c) in enumerate(zip(rows_list, cols_list, strict=True)):
        new_r, new_c = max(max_r, r), max(max_c, c)
        if i > start and (i + 1 - start) * new_r * new_c * per_cell > _CHUNK_ELEMENTS:
            groups.append((start, i, max_r, max_c))
            start, new_r, new_c = i, r, c
        max_r, max_c = new_r, new_c
    groups.append((start, len(rows_list), max_r, max_c))
    return groups


def _channels_first(values: Tensor, shape: torch.Size) -> Tensor:
    """[N * H * W, C] channels-last values -> a contiguous [N, C, H, W] tensor.

    On the CPU ``permute(...).contiguous()`` walks one of the two tensors with a large stride
    and is 3-4x slower than copying blocks of 256 cells that stay in cache (measured on a
    2 x 256 x 100 x 136 map: 39 ms against 11 ms).
    """
    num_images, channels, height, width = shape
    cells = values.view(num_images, height * width, channels)
    if values.device.type != "cpu":
        return cells.transpose(1, 2).contiguous().view(shape)
    out = values.new_empty(num_images, channels, height * width)
    for start in range(0, height * width, 256):
        out[:, :, start : start + 256] = cells[:, start : start + 256].transpose(1, 2)
    return out.view(shape)


class _CellTable(torch.autograd.Function):
    """[N, C, H, W] (default layout) -> [N * H * W, C] channels-last copy; backward transposes back."""

    @staticmethod
    def forward(ctx, input: Tensor) -> Tensor:  # type: ignore[override]
        ctx.shape = input.shape
        table = input.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1)
        return table.reshape(-1, input.shape[1])

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        return _channels_first(grad.contiguous(), ctx.shape)


def _cell_table(input: Tensor) -> Tensor:
    """[N, C, H, W] -> [N * H * W, C]: one row per feature cell, contiguous, differentiable.

    A channels-last input is viewed, not copied; other layouts are copied once (and their
    gradient transposed back once).
    """
    if input.is_contiguous(memory_format=torch.channels_last):
        return input.permute(0, 2, 3, 1).reshape(-1, input.shape[1])
    return _CellTable.apply(input)


def _cell_keys(table: Tensor, tables: int) -> Tensor:
    """int64 keys, one per feature value, whose maximum is the first cell holding the maximum.

    High 32 bits: the value's rank. For 16/32-bit floats that is the float32 magnitude bits
    (which order non-negative floats like their values), negated for negative floats, so that
    -0.0 and +0.0 get the same rank (they compare equal). For float64 it is the rank among the
    distinct values. Low 32 bits: ``2^32 - 1 - j`` with ``j = i * C + c`` the value's index in ``table``
    (cell ``i = (n * H + y) * W + x``, channel ``c``), so among equal values of one channel the
    first cell in row-major order has the largest key, and the winner's index is the bitwise
    complement of the key's low 32 bits. Both halves are written straight into the int64 words.

    Args:
        table: [M, C] features, channels last, contiguous, with M * C < 2^31.
        tables: feature-map-sized tables to leave room for (see :func:`_span_table`).

    Returns:
        [tables * M + 1, C]: the keys of every cell in the first M rows; the rows between are
        left for the caller to fill. The last row is padding: the lowest rank, so it never wins a
        bin that has a cell in it, and the index ``c`` of cell 0 (an empty bin reads some value
        there; the caller replaces it with 0).
    """
    num_cells, channels = table.shape
    keys = torch.empty(tables * num_cells + 1, channels, dtype=torch.int64, device=table.device)
    words = keys.view(torch.int32).view(keys.shape[0], channels, 2)  # [rows, C, 2]
    low, high = (0, 1) if sys.byteorder == "little" else (1, 0)
    if table.dtype == torch.float64:
        rank = torch.unique(table + 0.0, return_inverse=True)[1]  # dense rank, ties equal
        words[:num_cells, :, high] = rank
    else:  # the magnitude bits, negated for negative floats (so -0.0 gets the rank of +0.0)
        bits = table.float().view(torch.int32)
        sign = bits >> 31  # -1 for negative floats, else 0
        magnitude = (bits & 0x7FFFFFFF).bitwise_xor_(sign)
        torch.sub(magnitude, sign, out=words[:num_cells, :, high])  # -m = (m ^ -1) - (-1)
    channel = torch.arange(channels, dtype=torch.int32, device=table.device)
    start = torch.arange(0, num_cells * channels, channels, dtype=torch.int32, device=table.device)
    torch.sub(-1 - channel, start[:, None], out=words[:num_cells, :, low])  # -1 - j = ~j
    words[-1, :, high] = torch.iinfo(torch.int32).min
    words[-1, :, low] = -1 - channel
    return keys


def _winner_index(keys: Tensor) -> Tensor:
    """The index ``j`` held by int64 keys of :func:`_cell_keys`, as int32 (one pass, no shift).

    The low 32 bits are ``2^32 - 1 - j``, so read as an int32 they are ``-1 - j`` (two's
    complement) and their bitwise NOT is ``j``. On a little-endian machine they are the first
    int32 of each int64.
    """
    low = 0 if sys.byteorder == "little" else 1
    return torch.bitwise_not(keys.view(torch.int32)[..., low::2])


def _round_half_away_from_zero(x: Tensor) -> Tensor:
    """C's ``round``: 2.5 -> 3, -2.5 -> -3 (``torch.round`` rounds halves to even)."""
    truncated = x.trunc()
    is_half = (x - truncated).abs() == 0.5
    return torch.where(is_half, truncated + x.sign(), x.round())


def _pool_bins(corners: Tensor, size: int, bins: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """First and one-past-last cell of every RoI-pooling bin along one axis, clipped to the map.

    Args:
        corners: [K, 2] int64 rounded window ends (inclusive); size: H or W; bins: H_out or W_out.

    Returns:
        ``start, end``, each [K, bins] int64 in ``[0, size]``; ``end <= start`` is an empty bin.
    """
    extent = (corners[:, 1] - corners[:, 0] + 1).clamp(min=1).to(dtype)  # malformed -> 1 cell
    bin_size = extent[:, None] / bins  # [K, 1], in the input dtype like the C++ kernel
    p = torch.arange(bins, dtype=dtype, device=corners.device)  # [P]
    start = torch.floor(p * bin_size).long() + corners[:, :1]  # [K, P]
    end = torch.ceil((p + 1) * bin_size).long() + corners[:, :1]
    return start.clamp(0, size), end.clamp(0, size)


def roi_pool(
    input: Tensor,
    boxes: Tensor | Sequence[Tensor],
    output_size: int | Sequence[int],
    spatial_scale: float = 1.0,
) -> Tensor:
    """RoI max pooling of Fast R-CNN (§2.1), same arguments and results as ``torchvision.ops.roi_pool``.

    Each box is scaled by ``spatial_scale`` and rounded to whole feature cells
    (``x1' = round(x1 * s)``, ``x2' = round(x2 * s)``; the window covers cells ``x1' .. x2'``
    inclusive, at least one cell). Bin ``(p, q)`` spans rows
    ``[floor(p * h / H_out), ceil((p + 1) * h / H_out))`` of the window (neighbouring bins may share
    a row), clipped to the map; its output is the maximum there, or 0 if the clipped bin is empty:
    Eq. (roi-pool-bins) of book/06_fast_rcnn, computed with block maxima instead of a loop.

    Args:
        input: [N, C, H, W] float feature maps.
        boxes: [K, 5] ``(batch_index, x1, y1, x2, y2)`` or a list of N tensors [L_i, 4], in image
            pixels, same dtype as ``input``.
        output_size: ``H_out`` = ``W_out``, or the pair ``(H_out, W_out)``.
        spatial_scale: feature cells per image pixel (1/16 for VGG-16's conv5).

    Returns:
        [K, C, H_out, W_out] pooled features. The gradient of each output goes to the cell that
        held the maximum (the first one in row-major order on ties), like torchvision's argmax.
        Feature values are not checked. Where torchvision differs: a NaN feature may win its bin
        (torchvision skips NaN), and a bin holding nothing but -inf gives -inf (torchvision gives
        -FLT_MAX and no gradient).

    Raises:
        TypeError: if ``input`` or ``boxes`` is not a floating tensor, or their dtypes differ.
        ValueError: on wrong shapes, NaN/inf in ``boxes``, x2 < x1 or y2 < y1, a batch index
            outside ``[0, N)``, or a non-positive ``output_size`` or ``spatial_scale``.

    The fast path (a sparse table of block maxima, see the module docstring) is tested equal to
    :func:`roi_pool_reference`, the loop the chapter shows.

    Chapter: book/06_fast_rcnn (section "RoI pooling").
    """
    rois = _as_rois(input, boxes, spatial_scale)
    return _roi_pool(input, rois, _output_size(output_size), spatial_scale)


def roi_pool_reference(
    input: Tensor, rois: Tensor, output_size: tuple[int, int], spatial_scale: float = 1.0
) -> Tensor:
    """RoI max pooling written to be read, one RoI and one bin at a time (Fast R-CNN, §2.1).

    "RoI max pooling works by dividing the ``h x w`` RoI window into an ``H x W`` grid of
    sub-windows of approximate size ``h/H x w/W`` and then max-pooling the values in each
    sub-window into the corresponding output grid cell." The bin edges are equation
    ``roi-pool-bins`` of book/06_fast_rcnn. The rounding rules are those of
    ``torchvision.ops.roi_pool`` (and of the original Caffe layer). The tests check that the fast
    :func:`roi_pool` (and torchvision) return the same values on seeded random maps and boxes,
    and on edge cases (RoIs at or beyond the border, bins of one cell, RoIs smaller than a cell).

    Args:
        input: ``[N, C, H, W]`` feature maps.
        rois: ``[K, 5]`` ``(batch_index, x1, y1, x2, y2)`` in image pixels.
        output_size: ``(H_out, W_out)``.
        spatial_scale: feature cells per image pixel.

    Returns:
        ``[K, C, H_out, W_out]``; a bin that falls outside the map is 0.

    Chapter: book/06_fast_rcnn (section "RoI pooling").
    """
    out_h, out_w = output_size
    height, width = input.shape[-2:]
    output = input.new_zeros(len(rois), input.shape[1], out_h, out_w)
    for k, (batch, *box) in enumerate(rois.tolist()):
        # 1. The box in feature cells, rounded to whole cells (C's round: halves away from 0).
        x1, y1, x2, y2 = (
            int(math.copysign(math.floor(abs(v * spatial_scale) + 0.5), v)) for v in box
        )
        roi_h, roi_w = max(y2 - y1 + 1, 1), max(x2 - x1 + 1, 1)  # cells, both ends included
        # 2. Bin edges: bin p spans rows [floor(p * h / H_out), ceil((p + 1) * h / H_out)) of the
        #    window, computed in the input's dtype as torchvision does, then clipped to the map.
        bin_h = torch.tensor(roi_h, dtype=input.dtype) / out_h
        bin_w = torch.tensor(roi_w, dtype=input.dtype) / out_w
        p, q = torch.arange(out_h, dtype=input.dtype), torch.arange(out_w, dtype=input.dtype)
        tops = (y1 + torch.floor(p * bin_h).long()).clamp(0, height).tolist()
        bottoms = (y1 + torch.ceil((p + 1) * bin_h).long()).clamp(0, height).tolist()
        lefts = (x1 + torch.floor(q * bin_w).long()).clamp(0, width).tolist()
        rights = (x1 + torch.ceil((q + 1) * bin_w).long()).clamp(0, width).tolist()
        # 3. Each bin is the maximum of its cells, per channel (0 if the bin is empty).
        for i, (top, bottom) in enumerate(zip(tops, bottoms, strict=True)):
            for j, (left, right) in enumerate(zip(lefts, rights, strict=True)):
                if bottom > top and right > left:
                    cells = input[int(batch), :, top:bottom, left:right]  # [C, h_bin, w_bin]
                    output[k, :, i, j] = cells.amax(dim=(1, 2))
    return output


def _roi_pool(
    input: Tensor, rois: Tensor, output_size: tuple[int, int], spatial_scale: float
) -> Tensor:
    """:func:`roi_pool` on validated inputs: ``rois`` ``[K, 5]``, ``output_size`` a pair."""
    out_h, out_w = output_size
    num_images, channels, height, width = input.shape
    num_rois = rois.shape[0]
    if num_rois == 0 or channels == 0 or height == 0 or width == 0:
        return input.new_zeros(num_rois, channels, out_h, out_w)

    # Window in whole feature cells, rounded like torchvision's C++ (half away from zero).
    corners = _round_half_away_from_zero(rois[:, 1:] * spatial_scale).long()  # [K, 4]
    h_start, h_end = _pool_bins(corners[:, 1::2], height, out_h, input.dtype)  # [K, H_out] each
    w_start, w_end = _pool_bins(corners[:, 0::2], width, out_w, input.dtype)  # [K, W_out] each
    empty = (h_end <= h_start)[:, :, None] | (w_end <= w_start)[:, None, :]  # [K, H_out, W_out]
    num_cells = num_images * height * width
    plan = _plan_runs(h_start, h_end, w_start, w_end, height, width, num_cells, channels)
    table_shape = (plan.tables * num_cells + 1, channels)

    if not (torch.is_grad_enabled() and input.requires_grad):
        spans = input.new_empty(table_shape)
        level0 = spans[:num_cells].view(num_images, height, width, channels)
        level0.permute(0, 3, 1, 2).copy_(input)  # to channels last
        spans[-1] = -math.inf
        _span_table(spans, num_images, height, width, plan.cap_y, plan.cap_x)
        pooled = _bin_max(spans, rois[:, 0].long(), height, width, plan)  # [K, H_out, W_out, C]
        pooled = _unsort(pooled, plan.order)  # [K, C, H_out, W_out]
        return pooled.masked_fill_(empty[:, None], 0.0)  # empty bins are 0

    # The gradient of a max goes to the winning cell only: find the winners with keys (no grad),
    # then gather them, so autograd routes the gradient like torchvision's argmax.
    if num_cells * channels >= 2**31:
        raise ValueError(
            f"roi_pool with gradients needs fewer than 2^31 input values, got {input.numel()}"
        )
    table = _cell_table(input)  # [N * H * W, C], differentiable
    with torch.no_grad():
        keys = _cell_keys(table.detach(), plan.tables)
        _span_table(keys, num_images, height, width, plan.cap_y, plan.cap_x)
        index = _winner_index(_bin_max(keys, rois[:, 0].long(), height, width, plan))
        index = _unsort(index, plan.order)  # [K, C, H_out, W_out] int32
    pooled = table.view(-1).index_select(0, index.flatten()).view(index.shape)
    return pooled.masked_fill(empty[:, None], 0.0)  # empty bins are 0


def _unsort(values: Tensor, order: Tensor) -> Tensor:
    """[K, H_out, W_out, C] rows in ``order`` -> contiguous [K, C, H_out, W_out] in input order (one pass)."""
    k, out_h, out_w, channels = values.shape
    out = values.new_empty(k, channels, out_h, out_w)
    return out.index_copy_(0, order, values.permute(0, 3, 1, 2))


class _RunPlan(NamedTuple):
    """How every RoI-pooling bin is read from the sparse table (see :func:`_plan_runs`)."""

    cap_y: int  # highest row level built: runs of up to 2^cap_y rows
    cap_x: int  # highest column level built
    tables: int  # (cap_y + 1) * (cap_x + 1) levels, each one feature map
    order: Tensor  # [K] RoIs sorted by reads per bin; every per-RoI tensor below is in this order
    groups: list[tuple[int, int, int, int]]  # (start, end, runs_y, runs_x) slices of order
    first_y: Tensor  # [K, H_out, n_y] first row of every run of every row bin, -1 if no run
    first_x: Tensor  # [K, W_out, n_x] first column of every run of every column bin, -1 if none
    level: Tensor  # [K, H_out, W_out] which level the bin's runs are read from


def _runs(start: Tensor, end: Tensor, cap: int, most: int) -> tuple[Tensor, Tensor, Tensor]:
    """Cover every bin ``[start, end)`` with runs of ``2^b`` cells, ``b = min(floor(log2 L), cap)``.

    With ``b = floor(log2 L)`` two runs do it: ``[start, start + 2^b)`` and ``[end - 2^b, end)``
    overlap, which a maximum does not mind. A capped level needs ``n = ceil(L / 2^b)`` runs:
    ``start + j 2^b`` for ``j < n - 1`` and the last one ending at ``end``.

    Args:
        start, end: [K, P] int64 bin bounds along one axis (``end <= start``: empty bin).
        cap: the highest level of the table.
        most: ``max(n, 1)`` with ``n`` the most runs any bin needs (known to the caller, so that
            it need not be read from the device here).

    Returns:
        ``first`` [K, P, n] first cell of every run (-1 past a bin's last run or in an empty bin),
        ``level`` [K, P] ``b``, and ``count`` [K, P] the runs each bin needs.
    """
    length = (end - start).clamp(min=0)
    level, size, count = _run_size(length, cap)
    j = torch.arange(most, device=start.device)  # [n]
    first = torch.where(j < count[..., None] - 1, start[..., None] + j * size[..., None], -1)
    first = torch.where(j == count[..., None] - 1, (end - size)[..., None], first)
    return first, level, count


def _run_size(length: Tensor, cap: int) -> tuple[Tensor, Tensor, Tensor]:
    """Level ``b = min(floor(log2 L), cap)``, run size ``2^b`` and run count ``ceil(L / 2^b)``.

    Args:
        length: int64 bin lengths ``L >= 0`` (any shape); cap: the highest level of the table.

    Returns:
        ``level``, ``size`` and ``count``, each shaped like ``length`` (count 0 for empty bins).
    """
    level = torch.zeros_like(length)
    for b in range(1, cap + 1):
        level += length >= (1 << b)
    size = torch.ones_like(level).bitwise_left_shift_(level)
    return level, size, (length + size - 1).div(size, rounding_mode="floor")


def _runs_needed(length: Tensor, caps: int) -> Tensor:
    """[caps, K] the most runs any bin of a RoI needs at each level cap ``0 .. caps - 1``
    (``length`` [K, P]); at least 1."""
    top = _run_size(length, caps - 1)[0]  # [K, P] floor(log2 L), at most caps - 1
    cap = torch.arange(caps, device=length.device)[:, None, None]  # [caps, 1, 1]
    size = torch.bitwise_left_shift(1, torch.minimum(top, cap))  # [caps, K, P]: 2^level
    count = (length + size - 1).div(size, rounding_mode="floor")  # as _run_size, per cap
    return count.amax(dim=2).clamp(min=1)


def _plan_runs(
    h_start: Tensor,
    h_end: Tensor,
    w_start: Tensor,
    w_end: Tensor,
    height: int,
    width: int,
    num_cells: int,
    channels: int,
) -> _RunPlan:
    """Choose the sparse table's levels and lay out how each bin reads it.

    More levels mean fewer reads per bin but more tables to build. Each pair of caps is priced
    per channel as the cells read (runs per bin, the most of any bin of the RoI, summed over all
    bins) plus the cells written to build the tables; the cheapest pair whose tables fit in
    ``_TABLE_ELEMENTS`` values wins (the first one, caps in increasing order, on ties). Many RoIs
    on a small map get every level (at most 4 reads per bin); a few RoIs on a big map get few
    levels.

    The prices of every pair are computed on the device, and the host reads the choice together
    with the RoIs' block sizes in one transfer. The caps tried go up to ``log2`` of the map's
    side: a cap beyond the longest bin reads no fewer cells and builds more tables, so it is
    never cheapest, and the choice is the one that trying only the caps up to the longest bin
    would make.

    Args:
        h_start, h_end: [K, H_out]; w_start, w_end: [K, W_out] int64 bin bounds, inside the map.
        height, width: H, W of the feature map.
        num_cells: N * H * W, the cells of one table; channels: C.
    """
    # Bins lie inside the map, so no bin is longer than its side: caps 0 .. floor(log2 side).
    top_y, top_x = max(height, 1).bit_length(), max(width, 1).bit_length()
    runs_y = _runs_needed((h_end - h_start).clamp(min=0), top_y)  # [top_y, K]
    runs_x = _runs_needed((w_end - w_start).clamp(min=0), top_x)  # [top_x, K]
    bins = h_start.shape[1] * w_start.shape[1]
    reads = (runs_y[:, None, :] * runs_x[None, :, :]).sum(dim=2) * bins  # [top_y, top_x]
    tables = torch.arange(1, top_y + 1)[:, None] * torch.arange(1, top_x + 1)[None, :]  # host
    too_big = (tables > 1) & (tables * num_cells * channels > _TABLE_ELEMENTS)
    cost = reads + (2 * (tables - 1) * num_cells).to(reads.device)  # a table cell ~ two reads
    cost = cost.masked_fill(too_big.to(reads.device), torch.iinfo(cost.dtype).max)
    best = cost.flatten().argmin()  # the first cheapest pair in (cap_y, cap_x) order; on device
    # [K] runs per bin at those caps (index_select: indexing with a 0-d tensor reads it on the host)
    rows = runs_y.index_select(0, (best // top_x)[None])[0]
    cols = runs_x.index_select(0, (best % top_x)[None])[0]
    order = torch.sort(rows * cols, stable=True).indices  # [K], as _chunks orders them
    # The one host sync: the choice and the block sizes of the RoIs in area order.
    plan = torch.cat([best[None], rows[order], cols[order]]).tolist()
    cap_y, cap_x = divmod(plan[0], top_x)
    num_rois = rows.shape[0]
    rows_list, cols_list = plan[1 : 1 + num_rois], plan[1 + num_rois :]
    first_y, level_y, _ = _runs(h_start, h_end, cap_y, max(rows_list))
    first_x, level_x, _ = _runs(w_start, w_end, cap_x, max(cols_list))
    groups = _group(rows_list, cols_list, bins * channels)
    level = level_y[:, :, None] * (cap_x + 1) + level_x[:, None, :]
    return _RunPlan(
        cap_y,
        cap_x,
        (cap_y + 1) * (cap_x + 1),
        order,
        groups,
        first_y[order],
        first_x[order],
        level[order],
    )


def _span_table(
    spans: Tensor, num_images: int, height: int, width: int, cap_y: int, cap_x: int
) -> Tensor:
    """Fill a 2-D sparse table in place: maxima over blocks of ``2^a`` rows by ``2^b`` columns.

    Level ``(a, b)`` is table ``t = a * (cap_x + 1) + b``; its row ``t * M + i`` holds, for the cell
    ``i = (n * H + y) * W + x``, the maximum over rows ``y .. min(y + 2^a, H) - 1`` and columns
    ``x .. min(x + 2^b, W) - 1`` of image ``n``. Each level is the elementwise maximum of the
    level one below and itself shifted by half a block, so building costs one pass over the
    feature map per level, however many RoIs read it.

    Args:
        spans: [(cap_y + 1) * (cap_x + 1) * M + 1, C] with level (0, 0) (one row per cell,
            M = N * H * W) filled; the last row (padding) is not touched.
        num_images, height, width: N, H, W; cap_y, cap_x: the highest levels to fill.

    Returns:
        ``spans``, filled.
    """
    num_cells, channels = num_images * height * width, spans.shape[1]

    def level(a: int, b: int) -> Tensor:
        t = a * (cap_x + 1) + b
        return spans[t * num_cells : (t + 1) * num_cells]

    def shifted_max(prev: Tensor, cur: Tensor, shift: int, size: int) -> None:
        """cur[:, i] = max(prev[:, i], prev[:, i + shift]) along dim 1 of length ``size``."""
        shift = min(shift, size)
        torch.maximum(prev[:, : size - shift], prev[:, shift:], out=cur[:, : size - shift])
        cur[:, size - shift :] = prev[:, size - shift :]  # blocks cut at the border

    for a in range(cap_y + 1):
        if a > 0:
            shape = (num_images, height, width * channels)
            shifted_max(level(a - 1, 0).view(shape), level(a, 0).view(shape), 1 << (a - 1), height)
        for b in range(1, cap_x + 1):
            shape = (num_images * height, width, channels)
            shifted_max(level(a, b - 1).view(shape), level(a, b).view(shape), 1 << (b - 1), width)
    return spans


def _bin_max(spans: Tensor, batch: Tensor, height: int, width: int, plan: _RunPlan) -> Tensor:
    """The maximum over every RoI-pooling bin: the largest of its runs in the sparse table.

    Args:
        spans: [tables * N * H * W + 1, C] sparse table of values or keys (:func:`_span_table`);
            the last row is padding, a value that never wins (``-inf``, or the padding key of
            :func:`_cell_keys`). batch: [K] image of every RoI, in input order.
        plan: from :func:`_plan_runs`.

    Returns:
        [K, H_out, W_out, C] bin maxima in ``plan.order`` (the padding value for empty bins).
    """
    channels, num_cells = spans.shape[1], (spans.shape[0] - 1) // plan.tables
    pad_row = spans.shape[0] - 1
    out_h, out_w = plan.first_y.shape[1], plan.first_x.shape[1]
    batch = batch[plan.order]
    result = spans.new_empty(batch.shape[0], out_h, out_w, channels)
    for start, end, n_y, n_x in plan.groups:
        k, r = end - start, slice(start, end)
        rows = plan.first_y[r, :, :n_y]  # [k, H_out, n_y]
        cols = plan.first_x[r, :, :n_x]  # [k, W_out, n_x]
        cell = (batch[r, None, None] * height + rows) * width  # [k, H_out, n_y]
        cell = cell[:, :, None, :, None] + cols[:, None, :, None, :]  # [k, H_out, W_out, n_y, n_x]
        cell += (plan.level[r] * num_cells)[..., None, None]
        used = (rows >= 0)[:, :, None, :, None] & (cols >= 0)[:, None, :, None, :]
        cell = torch.where(used, cell, pad_row).flatten()
        runs = spans.index_select(0, cell).view(k, out_h, out_w, n_y * n_x, channels)
        if n_y * n_x > 1:
            torch.amax(runs, dim=3, out=result[r])
        else:
            result[r] = runs[:, :, :, 0]
    return result


def _axis_samples(
    start: Tensor, bin_size: Tensor, grid: Tensor, max_grid: int, bins: int, size: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Bilinear sample positions and weights along one axis, as torchvision's RoIAlign computes them.

    Sample ``i`` of bin ``p`` sits at ``start + p * bin + (i + 0.5) * bin / grid``. It is dropped if
    it lies outside ``[-1, size]``, clamped to ``>= 0``, and split between cells ``low`` and
    ``high = low + 1`` (both the last cell at the far border) with weights ``1 - frac`` and ``frac``.

    Args:
        start: [K] window start in feature cells; bin_size: [K]; grid: [K] int64 samples per bin.
        max_grid: ``max(grid.max(), 1)``, from the caller (reading it here would be a host sync).
        bins: H_out or W_out; size: H or W of the feature map.

    Returns:
        ``low, high`` [K, P, G] int64 and ``w_low, w_high`` [K, P, G] weights, already divided by
        ``grid`` (the average), 0 for dropped samples and for padding (``i >= grid``).
    """
    p = torch.arange(bins, dtype=start.dtype, device=start.device)[None, :, None]  # [1, P, 1]
    i = torch.arange(max_grid, device=start.device)[None, None, :]  # [1, 1, G]
    grid_f = grid.to(start.dtype)[:, None, None]  # [K, 1, 1]
    bin_k = bin_size[:, None, None]
    # Same operation order as the C++ kernel, so float32 positions are bit-identical. [K, P, G]
    coord = start[:, None, None] + p * bin_k + (i + 0.5).to(start.dtype) * bin_k / grid_f
    used = (i < grid[:, None, None]) & (coord >= -1.0) & (coord <= size)
    coord = torch.where(used, coord, 0.0).clamp(min=0)  # unused (also 0 / 0 for grid 0): weight 0
    low = coord.floor().long()
    at_border = low >= size - 1
    low = torch.where(at_border, size - 1, low)
    high = torch.where(at_border, low, low + 1)
    frac = torch.where(at_border, 0.0, coord - low.to(coord.dtype))
    scale = used.to(start.dtype) / grid_f.clamp(min=1)
    return low, high, (1 - frac) * scale, frac * scale


def _window(low: Tensor, high: Tensor, weight: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """First cell and length of the cells each RoI's samples touch with non-zero weight: [K] each."""
    used = weight > 0
    origin = torch.where(used, low, size).flatten(1).amin(dim=1).clamp(max=size - 1)
    last = torch.where(used, high, 0).flatten(1).amax(dim=1)
    return origin, (last - origin + 1).clamp(min=1)


def _weight_matrix(
    low: Tensor, high: Tensor, w_low: Tensor, w_high: Tensor, origin: Tensor, length: int
) -> Tensor:
    """Sum the sample weights of every bin per cell of the RoI's window: [k, P, length]."""
    matrix = w_low.new_zeros(low.shape[0], low.shape[1], length)
    offset = origin[:, None, None]
    matrix.scatter_add_(2, (low - offset).clamp(0, length - 1), w_low)
    matrix.scatter_add_(2, (high - offset).clamp(0, length - 1), w_high)
    return matrix


def roi_align(
    input: Tensor,
    boxes: Tensor | Sequence[Tensor],
    output_size: int | Sequence[int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> Tensor:
    """RoIAlign (Mask R-CNN §3), same arguments and results as ``torchvision.ops.roi_align``.

    The box is scaled by ``spatial_scale`` (minus half a cell when ``aligned``), not rounded, and
    split into ``H_out x W_out`` bins. Each bin averages ``g_h x g_w`` bilinear samples at
    ``start + p * bin + (i + 0.5) * bin / g``, where ``g = sampling_ratio`` if it is positive and
    ``ceil(box_size / output_size)`` (adaptive, per box) otherwise. Samples more than one cell
    outside the map count as 0. With ``aligned=False`` boxes smaller than one cell are enlarged
    to one cell (the legacy Detectron behaviour); ``aligned=True`` gives the pixel-exact version.

    Args:
        input: [N, C, H, W] float feature maps.
        boxes: [K, 5] ``(batch_index, x1, y1, x2, y2)`` or a list of N tensors [L_i, 4], in image
            pixels, same dtype as ``input``.
        output_size: ``H_out`` = ``W_out``, or the pair ``(H_out, W_out)``.
        spatial_scale: feature cells per image pixel (1/16 for a stride-16 backbone).
        sampling_ratio: samples per bin along each axis; ``<= 0`` means adaptive.
        aligned: shift the box by -0.5 cell so that sample positions line up with pixel centres.

    Returns:
        [K, C, H_out, W_out] pooled features, differentiable with respect to ``input``.

    Raises:
        TypeError: if ``input`` or ``boxes`` is not a floating tensor, or their dtypes differ.
        ValueError: on wrong shapes, NaN/inf in ``boxes``, x2 < x1 or y2 < y1, a batch index
            outside ``[0, N)``, a non-positive ``output_size`` or ``spatial_scale``, or a
            non-integer ``sampling_ratio``.

    Chapter: book/06_fast_rcnn (section "RoI pooling").
    """
    rois = _as_rois(input, boxes, spatial_scale)
    out_h, out_w = _output_size(output_size)
    if isinstance(sampling_ratio, bool) or not isinstance(sampling_ratio, int):
        raise ValueError(
            f"sampling_ratio must be an int (<= 0 for adaptive), got {sampling_ratio!r}"
        )
    _, channels, height, width = input.shape
    num_rois = rois.shape[0]
    if num_rois == 0 or channels == 0 or height == 0 or width == 0:
        return input.new_zeros(num_rois, channels, out_h, out_w)

    box = rois[:, 1:] * spatial_scale - (0.5 if aligned else 0.0)  # [K, 4] feature cells, unrounded
    per_axis = []  # per axis: box start [K], extent [K], samples per bin [K]
    for (lo, hi), bins in (((1, 3), out_h), ((0, 2), out_w)):
        extent = box[:, hi] - box[:, lo]  # [K]
        if not aligned:
            extent = extent.clamp(min=1.0)  # legacy: boxes smaller than a cell become one cell
        if sampling_ratio > 0:
            grid = torch.full_like(extent, sampling_ratio, dtype=torch.int64)
        else:
            grid = torch.ceil(extent / bins).long()  # adaptive; 0 for an empty aligned box
        per_axis.append((box[:, lo], extent, grid))
    if sampling_ratio > 0:
        max_grids = [sampling_ratio, sampling_ratio]
    else:  # adaptive: one host sync for both axes
        max_grids = torch.stack([grid.max() for _, _, grid in per_axis]).clamp(min=1).tolist()
    axes = []  # per axis: (low, high, w_low, w_high) samples, window origin [K], window length [K]
    for (start, extent, grid), max_grid, bins, size in zip(
        per_axis, max_grids, (out_h, out_w), (height, width), strict=True
    ):
        low, high, w_low, w_high = _axis_samples(start, extent / bins, grid, max_grid, bins, size)
        axes.append(((low, high, w_low, w_high), *_window(low, high, w_low + w_high, size)))
    (y_samples, y_origin, y_len), (x_samples, x_origin, x_len) = axes
    order, groups = _chunks(y_len, x_len, channels)
    # Everything per RoI in area order, so that a group is a slice.
    batch, y_origin, x_origin = rois[order, 0].long(), y_origin[order], x_origin[order]
    y_samples = [t[order] for t in y_samples]
    x_samples = [t[order] for t in x_samples]

    table = _cell_table(input)  # [N * H * W, C]
    arange = partial(torch.arange, device=input.device)
    output = input.new_zeros(num_rois, channels, out_h, out_w)
    for start, end, len_y, len_x in groups:
        k, r = end - start, slice(start, end)
        w_y = _weight_matrix(*(t[r] for t in y_samples), y_origin[r], len_y)  # [k, H_out, ly]
        w_x = _weight_matrix(*(t[r] for t in x_samples), x_origin[r], len_x)  # [k, W_out, lx]
        rows = (y_origin[r, None] + arange(len_y)).clamp(max=height - 1)  # [k, ly]
        cols = (x_origin[r, None] + arange(len_x)).clamp(max=width - 1)  # [k, lx]
        # Table row of every window cell: [k, ly, lx].
        cell = (batch[r, None, None] * height + rows[:, :, None]) * width + cols[:, None, :]
        window = table.index_select(0, cell.flatten()).view(k, len_y, len_x * channels)
        along_y = torch.bmm(w_y, window).view(k, out_h, len_x, channels)  # [k, H_out, lx, C]
        pooled = torch.matmul(w_x[:, None], along_y)  # [k, H_out, W_out, C]
        output.index_copy_(0, order[r], pooled.permute(0, 3, 1, 2))
    return output
