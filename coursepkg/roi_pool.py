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
* RoI pooling is separable too: a max over a rectangle is the max over its rows of the max over
  its columns. Stage A pools every row of the RoI over each column bin, stage B pools those rows
  over each row bin; bins are padded to the largest bin with a value that never wins. Without
  autograd that is all. With it, the search must also say *which* cell won, the first maximum in
  row-major order (torchvision's argmax, where the gradient goes). ``max(dim)`` would say so but
  is slow; instead the same search maximises one int64 key per value: the value's order in the
  high 32 bits, the complement of its index in the low 32 bits, so equal values are won by the
  first cell and the index can be read back. The differentiable output is then a plain gather
  of the winners: the backward pass touches only K x C x H_out x W_out values, and gradients
  agree with torchvision even on ties (common after ReLU).
* RoIs are sorted by window size and processed in chunks of a few MiB, so one big box does not
  pad all others, memory stays bounded and the allocator reuses the same buffers.

Chapter: book/06_fast_rcnn (section "RoI pooling", with RoI Align).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from functools import partial

import torch
from torch import Tensor

from coursepkg.boxes import check_boxes

# Values gathered per chunk (8 MiB of float32): small enough for the allocator to reuse the
# buffer from chunk to chunk instead of page-faulting fresh memory each time.
_CHUNK_ELEMENTS = 1 << 21


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
    check_boxes(rois[:, 1:], "boxes")  # floating point, finite, x2 >= x1 and y2 >= y1
    batch_index = rois[:, 0]
    bad = (batch_index != batch_index.round()) | (batch_index < 0) | (batch_index >= input.shape[0])
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
        ``order`` [K] (RoI indices sorted by area) and ``(start, end, rows, cols)`` per group:
        the slice of ``order`` and the block size that covers all its RoIs.
    """
    order = torch.sort((rows * cols).cpu(), stable=True).indices
    rows_list, cols_list = rows.cpu()[order].tolist(), cols.cpu()[order].tolist()
    groups, start, max_r, max_c = [], 0, 0, 0
    for i, (r, c) in enumerate(zip(rows_list, cols_list, strict=True)):
        new_r, new_c = max(max_r, r), max(max_c, c)
        if i > start and (i + 1 - start) * new_r * new_c * per_cell > _CHUNK_ELEMENTS:
            groups.append((start, i, max_r, max_c))
            start, new_r, new_c = i, r, c
        max_r, max_c = new_r, new_c
    groups.append((start, len(rows_list), max_r, max_c))
    return order.to(rows.device), groups


def _channels_last(input: Tensor) -> Tensor:
    """[N, C, H, W] -> [N * H * W, C]: one row per feature cell, so a gather fetches all channels."""
    return input.permute(0, 2, 3, 1).reshape(-1, input.shape[1])


def _cell_keys(input: Tensor, levels: int) -> Tensor:
    """int64 keys, one per feature value, whose maximum is the first cell holding the maximum.

    High 32 bits: the value's rank. For 16/32-bit floats that is the float32 bit pattern made
    monotonic (negative floats get their magnitude bits flipped); for float64, the rank among the
    distinct values. Low 32 bits: ``2^32 - 1 - j`` with ``j = i * C + c`` the value's index in the
    channels-last features (cell ``i = (n * H + y) * W + x``, channel ``c``), so among equal values
    of one channel the first cell in row-major order has the largest key, and the winner's
    index is the bitwise complement of the key's low 32 bits. ``+ 0.0`` makes -0.0 equal to +0.0
    (they compare equal).

    Args:
        input: [N, C, H, W] features with N * H * W * C < 2^31.
        levels: sparse-table levels to leave room for (see :func:`_span_levels`).

    Returns:
        [(levels + 1) * M + 1, C] with M = N * H * W: the keys of every cell, channels last, in
        the first M rows; the rows between are left for the caller to fill. The last row is
        padding: the lowest rank, so it never wins a bin that has a cell in it, and the index
        ``c`` of cell 0 (an empty bin reads some value there; the caller replaces it with 0).
    """
    num_images, channels, height, width = input.shape
    num_cells = num_images * height * width
    values = input.detach().permute(0, 2, 3, 1)  # [N, H, W, C], a view
    if input.dtype == torch.float64:
        rank = torch.unique(values + 0.0, return_inverse=True)[1]  # dense rank, ties equal
    else:
        bits = (values.float() + 0.0).view(torch.int32)
        rank = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    keys = torch.empty(
        (levels + 1) * num_cells + 1, channels, dtype=torch.int64, device=input.device
    )
    level0 = keys[:num_cells]
    level0.view(num_images, height, width, channels).copy_(rank)
    index = torch.arange(num_cells * channels, device=input.device).view(num_cells, channels)
    level0.bitwise_left_shift_(32).bitwise_or_(index.bitwise_xor_(0xFFFFFFFF))
    keys[-1] = torch.arange(channels, device=input.device).bitwise_xor_(0xFFFFFFFF)
    keys[-1] |= torch.iinfo(torch.int32).min << 32
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
    a row), clipped to the map; its output is the maximum there, or 0 if the clipped bin is empty.

    Args:
        input: [N, C, H, W] float feature maps.
        boxes: [K, 5] ``(batch_index, x1, y1, x2, y2)`` or a list of N tensors [L_i, 4], in image
            pixels, same dtype as ``input``.
        output_size: ``H_out`` = ``W_out``, or the pair ``(H_out, W_out)``.
        spatial_scale: feature cells per image pixel (1/16 for VGG-16's conv5).

    Returns:
        [K, C, H_out, W_out] pooled features. The gradient of each output goes to the cell that
        held the maximum (the first one in row-major order on ties), like torchvision's argmax.
        Feature values are not checked: a NaN feature wins its bin (torchvision skips it).

    Raises:
        TypeError: if ``input`` or ``boxes`` is not a floating tensor, or their dtypes differ.
        ValueError: on wrong shapes, NaN/inf in ``boxes``, x2 < x1 or y2 < y1, a batch index
            outside ``[0, N)``, or a non-positive ``output_size`` or ``spatial_scale``.

    Chapter: book/06_fast_rcnn (section "RoI pooling").
    """
    rois = _as_rois(input, boxes, spatial_scale)
    out_h, out_w = _output_size(output_size)
    num_images, channels, height, width = input.shape
    num_rois = rois.shape[0]
    if num_rois == 0 or channels == 0 or height == 0 or width == 0:
        return input.new_zeros(num_rois, channels, out_h, out_w)

    # Window in whole feature cells, rounded like torchvision's C++ (half away from zero).
    corners = _round_half_away_from_zero(rois[:, 1:] * spatial_scale).long()  # [K, 4]
    h_start, h_end = _pool_bins(corners[:, 1::2], height, out_h, input.dtype)  # [K, H_out] each
    w_start, w_end = _pool_bins(corners[:, 0::2], width, out_w, input.dtype)  # [K, W_out] each
    empty = (h_end <= h_start)[:, :, None] | (w_end <= w_start)[:, None, :]  # [K, H_out, W_out]
    first, level, levels = _column_runs(w_start, w_end)  # [K, W_out, 2], [K, W_out]
    num_cells = num_images * height * width
    col = torch.where((w_end > w_start)[..., None], first + (level * num_cells)[..., None], -1)
    row0 = h_start[:, 0]  # [K] first row any bin uses (bins are sorted)
    num_rows = (h_end[:, -1] - row0).clamp(min=1)  # [K] rows in the window
    order, groups = _chunks(num_rows, torch.full_like(num_rows, 2 * out_w), channels)
    # Everything per RoI in area order, so that a group is a slice.
    batch, row0, h_start, h_end, col = (
        t[order] for t in (rois[:, 0].long(), row0, h_start, h_end, col)
    )
    geometry = (order, batch, row0, h_start, h_end, col, height, width, groups)

    if not (torch.is_grad_enabled() and input.requires_grad):
        spans = input.new_empty((levels + 1) * num_cells + 1, channels)
        spans[:num_cells].view(num_images, height, width, channels).copy_(input.permute(0, 2, 3, 1))
        spans[-1] = -math.inf
        pooled = _bin_max(_span_levels(spans, width, levels), *geometry)  # [K, H_out, W_out, C]
        pooled.masked_fill_(empty[..., None], 0.0)  # empty bins are 0
        return pooled.permute(0, 3, 1, 2).contiguous()  # [K, C, H_out, W_out]

    # The gradient of a max goes to the winning cell only: find the winners with keys (no grad),
    # then gather them, so autograd routes the gradient like torchvision's argmax.
    if num_cells * channels >= 2**31:
        raise ValueError(
            f"roi_pool with gradients needs fewer than 2^31 input values, got {input.numel()}"
        )
    with torch.no_grad():
        keys = _span_levels(_cell_keys(input, levels), width, levels)
        index = _winner_index(_bin_max(keys, *geometry))  # [K, H_out, W_out, C] int32
    table = input.permute(0, 2, 3, 1).reshape(-1)  # [N * H * W * C], differentiable
    pooled = table.index_select(0, index.flatten()).view(index.shape)
    pooled = pooled.masked_fill(empty[..., None], 0.0)  # empty bins are 0
    return pooled.permute(0, 3, 1, 2).contiguous()  # [K, C, H_out, W_out]


def _span_levels(spans: Tensor, width: int, levels: int) -> Tensor:
    """Fill a sparse table in place: maxima over runs of ``2^b`` columns, ``b = 1 .. levels``.

    Row ``b * M + i`` holds, for the cell ``i = (n * H + y) * W + x``, the maximum of image row
    ``y`` over columns ``x .. min(x + 2^b, W) - 1``. Level ``b`` is the elementwise maximum of
    level ``b - 1`` and itself shifted by ``2^(b - 1)`` columns, so the table costs ``levels``
    passes over the feature map, however many RoIs read it.

    Args:
        spans: [(levels + 1) * M + 1, C] with level 0 (one row per cell, M = N * H * W) filled;
            the last row (padding) is not touched.
        width: W; levels: the highest level to fill.

    Returns:
        ``spans``, filled.
    """
    num_cells, channels = (spans.shape[0] - 1) // (levels + 1), spans.shape[1]
    for b in range(1, levels + 1):
        prev = spans[(b - 1) * num_cells : b * num_cells].view(-1, width, channels)
        cur = spans[b * num_cells : (b + 1) * num_cells].view(-1, width, channels)
        shift = min(1 << (b - 1), width)
        torch.maximum(prev[:, : width - shift], prev[:, shift:], out=cur[:, : width - shift])
        cur[:, width - shift :] = prev[:, width - shift :]  # runs cut at the right border
    return spans


def _column_runs(w_start: Tensor, w_end: Tensor) -> tuple[Tensor, Tensor, int]:
    """The two runs of ``2^b`` columns that cover each column bin exactly: where they start.

    A bin of ``L >= 1`` columns ``[s, e)`` is the union of the runs ``[s, s + 2^b)`` and
    ``[e - 2^b, e)`` with ``b = floor(log2 L)``; they overlap, which a maximum does not mind.

    Args:
        w_start, w_end: [K, W_out] int64 column bin bounds (``w_end <= w_start``: empty bin).

    Returns:
        ``first`` [K, W_out, 2] the runs' first columns, ``level`` [K, W_out] ``b`` (0 for empty
        bins), and the highest level any bin needs.
    """
    length = w_end - w_start
    levels = max(int(length.max()), 1).bit_length() - 1
    level = torch.zeros_like(length)
    for b in range(1, levels + 1):
        level += length >= (1 << b)
    first = torch.stack([w_start, w_end - torch.ones_like(level).bitwise_left_shift(level)], dim=-1)
    return first, level, levels


def _bin_max(
    spans: Tensor,
    order: Tensor,
    batch: Tensor,
    row0: Tensor,
    h_start: Tensor,
    h_end: Tensor,
    col: Tensor,
    height: int,
    width: int,
    groups: list[tuple[int, int, int, int]],
) -> Tensor:
    """The maximum over every RoI-pooling bin, separably: columns, then rows.

    Stage A reads, for every window row, the maximum over each column bin as the larger of two
    runs from the sparse table (:func:`_span_levels`, :func:`_column_runs`): two reads, however
    wide the bin. Stage B takes the maximum over the rows of each row bin.

    Args:
        spans: [(levels + 1) * N * H * W + 1, C] sparse table of values or keys; the last row is
            padding, a value that never wins (``-inf``, or the padding key of :func:`_cell_keys`).
        order: [K] RoI indices in processing order (from :func:`_chunks`); the other per-RoI
            tensors are in this order. batch, row0: [K] image and first window row of every RoI;
            h_start, h_end: [K, H_out] row bin bounds; col: [K, W_out, 2] table offset
            (``level * N * H * W + column``) of the two runs of every column bin, -1 if it is empty.
        groups: ``(start, end, rows, _)`` slices of ``order`` from :func:`_chunks`.

    Returns:
        [K, H_out, W_out, C] bin maxima in input RoI order (the padding value for empty bins).
    """
    channels, out_h, out_w = spans.shape[1], h_start.shape[1], col.shape[1]
    pad_row = spans.shape[0] - 1
    arange = partial(torch.arange, device=spans.device)
    result = spans.new_empty(order.shape[0], out_h, out_w, channels)
    for start, end, rows, _ in groups:
        k, r = end - start, slice(start, end)
        bh = int((h_end[r] - h_start[r]).max().clamp(min=1))
        # Stage A, columns: every window row, max over each column bin -> [k, rows, W_out, C].
        row = row0[r, None] + arange(rows)  # [k, rows]
        inside = (row < h_end[r, -1:])[:, :, None, None] & (col[r, None] >= 0)
        cell = ((batch[r, None] * height + row) * width)[:, :, None, None] + col[r, None]
        cell = torch.where(inside, cell, pad_row).flatten()  # [k * rows * W_out * 2]
        pair = spans.index_select(0, cell).view(k, rows, out_w, 2, channels)
        row_table = spans.new_empty(k * rows + 1, out_w * channels)  # + a padding row
        row_table[-1].view(out_w, channels).copy_(spans[-1])
        row_max = row_table[:-1].view(k, rows, out_w, channels)
        torch.maximum(pair[:, :, :, 0], pair[:, :, :, 1], out=row_max)
        # Stage B, rows: max over the stage-A rows of each row bin -> [k, H_out, W_out, C].
        rel = h_start[r, :, None] - row0[r, None, None] + arange(bh)  # [k, H_out, bh]
        inside = rel + row0[r, None, None] < h_end[r, :, None]
        pick = torch.where(inside, arange(k)[:, None, None] * rows + rel, k * rows).flatten()
        best = row_table.index_select(0, pick).view(k, out_h, bh, out_w, channels).amax(dim=2)
        result.index_copy_(0, order[r], best)
    return result


def _axis_samples(
    start: Tensor, bin_size: Tensor, grid: Tensor, bins: int, size: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Bilinear sample positions and weights along one axis, as torchvision's RoIAlign computes them.

    Sample ``i`` of bin ``p`` sits at ``start + p * bin + (i + 0.5) * bin / grid``. It is dropped if
    it lies outside ``[-1, size]``, clamped to ``>= 0``, and split between cells ``low`` and
    ``high = low + 1`` (both the last cell at the far border) with weights ``1 - frac`` and ``frac``.

    Args:
        start: [K] window start in feature cells; bin_size: [K]; grid: [K] int64 samples per bin.
        bins: H_out or W_out; size: H or W of the feature map.

    Returns:
        ``low, high`` [K, P, G] int64 and ``w_low, w_high`` [K, P, G] weights, already divided by
        ``grid`` (the average), 0 for dropped samples and for padding (``i >= grid``).
    """
    max_grid = max(int(grid.max()), 1)
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
    axes = []  # per axis: (low, high, w_low, w_high) samples, window origin [K], window length [K]
    for (lo, hi), bins, size in (((1, 3), out_h, height), ((0, 2), out_w, width)):
        extent = box[:, hi] - box[:, lo]  # [K]
        if not aligned:
            extent = extent.clamp(min=1.0)  # legacy: boxes smaller than a cell become one cell
        if sampling_ratio > 0:
            grid = torch.full_like(extent, sampling_ratio, dtype=torch.int64)
        else:
            grid = torch.ceil(extent / bins).long()  # adaptive; 0 for an empty aligned box
        low, high, w_low, w_high = _axis_samples(box[:, lo], extent / bins, grid, bins, size)
        axes.append(((low, high, w_low, w_high), *_window(low, high, w_low + w_high, size)))
    (y_samples, y_origin, y_len), (x_samples, x_origin, x_len) = axes
    order, groups = _chunks(y_len, x_len, channels)
    # Everything per RoI in area order, so that a group is a slice.
    batch, y_origin, x_origin = rois[order, 0].long(), y_origin[order], x_origin[order]
    y_samples = [t[order] for t in y_samples]
    x_samples = [t[order] for t in x_samples]

    table = _channels_last(input)  # [N * H * W, C]
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
