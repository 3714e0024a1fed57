"""Plotting for the course: images with boxes, sample grids, training curves, PR curves, errors.

Everything draws with matplotlib on axes you pass in (or creates a figure) and returns what it
drew, so tests and notebooks can inspect it. Images are shown with ``extent=(0, W, H, 0)``: pixel
column ``j`` fills ``[j, j + 1)``, exactly the course's continuous box coordinates, so a box
``(2, 1, 5, 4)`` frames pixels 2..4 and rows 1..3 with no half-pixel shift.

Conventions: ground truth is drawn dashed, predictions solid with their scores; a class keeps one
colour (matplotlib's ``tab10``/``tab20`` cycle by label) in every figure.

Chapter: book/data_and_conventions
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator
from torch import Tensor

from coursepkg.ops.validation import check_boxes, check_int


def class_color(label: int) -> tuple[float, float, float, float]:
    """The colour of class ``label``: ``tab10`` for up to 10 classes' worth of labels, then ``tab20``.

    Raises:
        TypeError: if ``label`` is not an int.
        ValueError: if it is negative (dataset labels are ``0..K-1``; Python's ``-1 % 10`` would
            quietly give class 9's colour).

    Chapter: book/data_and_conventions
    """
    label = check_int(label, "label", low=0)
    cmap = plt.get_cmap("tab10" if label < 10 else "tab20")
    return cmap(label % cmap.N)


def show_image(ax: Axes, image: Tensor) -> AxesImage:
    """Show an image tensor so that pixel ``(i, j)`` covers ``[j, j + 1) x [i, i + 1)``.

    Args:
        ax: the axes to draw on.
        image: ``[3, H, W]`` (RGB) or ``[1, H, W]`` / ``[H, W]`` (grey) float in ``[0, 1]``, or
            uint8 in ``0..255``; any device.

    Returns:
        The ``AxesImage``.

    Raises:
        TypeError: if ``image`` is not a tensor.
        ValueError: if its shape is not one of the above.

    Chapter: book/data_and_conventions
    """
    if not isinstance(image, Tensor):
        raise TypeError(f"image must be a torch.Tensor, got {type(image).__name__}")
    if not (image.dim() == 2 or (image.dim() == 3 and image.shape[0] in (1, 3))):
        raise ValueError(f"image must be [3, H, W], [1, H, W] or [H, W], got {list(image.shape)}")
    array = image.detach().cpu()
    array = array.float() / 255.0 if array.dtype == torch.uint8 else array.float()
    array = array.clamp(0.0, 1.0)
    height, width = array.shape[-2:]
    extent = (0, width, height, 0)
    if array.dim() == 3 and array.shape[0] == 3:
        return ax.imshow(array.permute(1, 2, 0).numpy(), extent=extent, interpolation="nearest")
    grey = array.reshape(height, width).numpy()
    return ax.imshow(grey, cmap="gray", vmin=0, vmax=1, extent=extent, interpolation="nearest")


def _as_1d(values: object, name: str, length: int) -> Tensor:
    tensor = torch.as_tensor(values).detach().cpu()
    if tensor.shape != (length,):
        raise ValueError(f"{name} must be [N] with N = {length} boxes, got {list(tensor.shape)}")
    return tensor


def draw_boxes(
    ax: Axes,
    boxes: Tensor,
    labels: Tensor | Sequence[int] | None = None,
    scores: Tensor | Sequence[float] | None = None,
    class_names: Sequence[str] | None = None,
    color: str | tuple | None = None,
    *,
    linestyle: str = "-",
    linewidth: float = 1.5,
    fontsize: float = 7.0,
) -> list[Rectangle]:
    """Draw xyxy boxes, with a caption ``"name score"`` above each when labels or scores are given.

    Args:
        ax: the axes (usually after :func:`show_image`).
        boxes: ``[N, 4]`` float xyxy in pixels.
        labels: ``[N]`` class indices (colour and name), or None.
        scores: ``[N]`` scores, printed with two decimals, or None.
        class_names: names indexed by label; without them the label number is printed.
        color: one colour for every box; default: the class colour (:func:`class_color`), or
            ``"yellow"`` without labels.
        linestyle: ``"-"`` for predictions, ``"--"`` for ground truth (the course's habit).
        linewidth: line width in points.
        fontsize: caption size in points.

    Returns:
        The ``N`` rectangles, in order (one caption text per box that has one).

    Raises:
        TypeError / ValueError: for bad boxes (see :func:`coursepkg.ops.boxes.check_boxes`), labels or
            scores of the wrong length, or a label outside ``class_names``.

    Chapter: book/data_and_conventions
    """
    check_boxes(boxes)
    boxes = boxes.detach().cpu()
    n = boxes.shape[0]
    label_list = None if labels is None else [int(v) for v in _as_1d(labels, "labels", n)]
    score_list = None if scores is None else [float(v) for v in _as_1d(scores, "scores", n)]
    if label_list and class_names is not None:
        bad = [v for v in label_list if not 0 <= v < len(class_names)]
        if bad:
            raise ValueError(
                f"labels must index class_names (0..{len(class_names) - 1}), got {bad}"
            )
    patches = []
    for i, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
        label = None if label_list is None else label_list[i]
        edge = color if color is not None else ("yellow" if label is None else class_color(label))
        rect = Rectangle(
            (x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=edge,
            linestyle=linestyle, linewidth=linewidth,
        )  # fmt: skip
        ax.add_patch(rect)
        patches.append(rect)
        parts = []
        if label is not None:
            parts.append(class_names[label] if class_names is not None else str(label))
        if score_list is not None:
            parts.append(f"{score_list[i]:.2f}")
        if parts:
            ax.text(
                x1, y1, " ".join(parts), fontsize=fontsize, color="white", va="bottom",
                bbox={"facecolor": edge, "alpha": 0.7, "pad": 1, "linewidth": 0},
                clip_on=True,
            )  # fmt: skip
    return patches


def show_detections(
    image: Tensor,
    target: Mapping[str, Tensor] | None = None,
    prediction: Mapping[str, Tensor] | None = None,
    class_names: Sequence[str] | None = None,
    ax: Axes | None = None,
    *,
    score_thresh: float = 0.0,
    title: str | None = None,
) -> Axes:
    """Show an image with its ground truth (dashed) and predictions (solid, with scores).

    Args:
        image: ``[3, H, W]`` image.
        target: ``{"boxes": [G, 4], "labels": [G]}`` or None.
        prediction: ``{"boxes": [D, 4], "scores": [D], "labels": [D]}`` or None; predictions
            scoring below ``score_thresh`` are not drawn.
        class_names: names indexed by label.
        ax: the axes; default a new 4 x 4 inch figure.
        score_thresh: hide weaker predictions.
        title: optional axes title.

    Returns:
        The axes.

    Chapter: book/data_and_conventions
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    show_image(ax, image)
    if target is not None:
        draw_boxes(ax, target["boxes"], target.get("labels"), None, class_names, linestyle="--")
    if prediction is not None:
        scores = prediction.get("scores")
        keep = slice(None)
        if scores is not None:
            keep = torch.as_tensor(scores).detach().cpu() >= score_thresh
        boxes = prediction["boxes"].detach().cpu()[keep]
        labels = prediction.get("labels")
        labels = None if labels is None else torch.as_tensor(labels).detach().cpu()[keep]
        scores = None if scores is None else torch.as_tensor(scores).detach().cpu()[keep]
        draw_boxes(ax, boxes, labels, scores, class_names, linestyle="-")
    ax.set_axis_off()
    if title is not None:
        ax.set_title(title, fontsize=9)
    return ax


def show_grid(
    samples: Sequence[tuple[Tensor, Mapping[str, Tensor]]],
    n: int = 8,
    ncols: int = 4,
    class_names: Sequence[str] | None = None,
    *,
    size: float = 2.6,
) -> Figure:
    """A grid of the first ``n`` samples of a dataset (or list of ``(image, target)``) with boxes.

    Args:
        samples: a detection dataset or a sequence of ``(image, target)`` pairs.
        n: how many samples to show (at most ``len(samples)``).
        ncols: columns of the grid.
        class_names: names indexed by label; default ``samples.classes`` when it exists.
        size: inches per panel.

    Returns:
        The figure.

    Raises:
        ValueError: if ``n`` or ``ncols`` is not positive or ``samples`` is empty.

    Chapter: book/data_and_conventions
    """
    if n < 1 or ncols < 1:
        raise ValueError(f"n and ncols must be >= 1, got n={n}, ncols={ncols}")
    count = min(n, len(samples))
    if count == 0:
        raise ValueError("samples is empty: nothing to show")
    if class_names is None:
        class_names = getattr(samples, "classes", None)
    ncols = min(ncols, count)
    nrows = math.ceil(count / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= count:
            ax.set_axis_off()
            continue
        image, target = samples[i]
        show_detections(image, target, class_names=class_names, ax=ax)
    fig.tight_layout()
    return fig


AXIS_KEYS = ("step", "epoch")  # history keys that are x axes, never curves


def _history_dict(history: object) -> dict[str, np.ndarray]:
    """Every 1-D numeric series of ``history`` as float64 arrays (scalars and empties skipped)."""
    if hasattr(history, "keys") and hasattr(history, "__getitem__"):  # a Mapping, or duck-typed
        raw = {str(k): history[k] for k in history.keys()}
    elif dataclasses.is_dataclass(history) and not isinstance(history, type):
        raw = dataclasses.asdict(history)
    else:
        raise TypeError(
            f"history must be a mapping of name -> list of floats (or a dataclass), "
            f"got {type(history).__name__}"
        )
    out = {}
    for name, values in raw.items():
        if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
            continue  # a scalar such as "best_epoch" is not a curve
        try:
            array = np.asarray(torch.as_tensor(values, dtype=torch.float64).cpu())
        except (TypeError, ValueError, RuntimeError):
            continue  # not numbers (a nested dict, a list of strings)
        if array.ndim == 1 and array.size > 0:
            out[name] = array
    return out


def _x_axis(name: str, length: int, series: dict[str, np.ndarray]) -> tuple[str, np.ndarray]:
    """Which axis a series runs along: ``epoch`` or ``step`` when their lengths match, else index."""
    per_epoch_name = name.startswith(("val_", "epoch_"))
    matches = [a for a in AXIS_KEYS if a in series and len(series[a]) == length]
    if len(matches) == 2:  # as many steps as epochs: the name decides
        matches = ["epoch" if per_epoch_name else "step"]
    if matches:
        return matches[0], series[matches[0]]
    return "index", np.arange(1, length + 1, dtype=np.float64)


def plot_history(
    history: object,
    keys: Sequence[str] | None = None,
    *,
    size: tuple[float, float] = (10.0, 3.5),
) -> Figure:
    """Training curves: losses on the left (per step), metrics such as mAP on the right (per epoch).

    Args:
        history: a mapping of ``name -> list of floats`` (anything with ``keys()`` and ``[]``,
            like the ``History`` that :func:`coursepkg.engine.training.fit` returns, or a plain dict or
            dataclass), for example ``{"step": [...], "train_loss": [...], "epoch": [...],
            "epoch_loss": [...], "val_map": [...], "val_map_50": [...]}``. ``"step"`` and
            ``"epoch"``, when present, are the x axes of the series of the same length (names
            starting with ``val_`` or ``epoch_`` break the tie); other series are plotted
            against 1, 2, ... Per-epoch losses are drawn at the end of their epoch on the step
            axis. NaN entries (epochs without evaluation) are skipped.
        keys: the series to draw; default every ``*loss*`` series and every ``val_*`` or
            ``*map*`` series (so ``lr``, ``grad_norm`` or timings are left out unless asked for).
            Names containing ``loss`` go to the loss panel, the others to the metric panel.
        size: figure size in inches.

    Returns:
        The figure: one panel per non-empty group (losses, metrics).

    Raises:
        TypeError: if ``history`` is not a mapping or dataclass.
        ValueError: if a requested key is missing or nothing is left to plot.

    Chapter: book/data_and_conventions
    """
    series = _history_dict(history)
    if keys is None:
        keys = [
            k for k in series
            if k not in AXIS_KEYS and ("loss" in k.lower() or k.startswith("val_") or "map" in k)
        ]  # fmt: skip
    else:
        missing = [k for k in keys if k not in series]
        if missing:
            raise ValueError(f"keys {missing} are not non-empty series of history {sorted(series)}")
    if not keys:
        raise ValueError(f"history holds no loss or metric series to plot, only {sorted(series)}")
    groups = [
        [k for k in keys if "loss" in k.lower()],
        [k for k in keys if "loss" not in k.lower()],
    ]
    panels = [
        (group, title) for group, title in zip(groups, ("loss", "metric"), strict=True) if group
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=size, squeeze=False)
    for ax, (group, title) in zip(axes[0], panels, strict=True):
        axis_names = set()
        has_steps = any(_x_axis(k, len(series[k]), series)[0] == "step" for k in group)
        for name in group:
            values = series[name]
            axis, x = _x_axis(name, len(values), series)
            if axis == "epoch" and has_steps:
                # Put per-epoch points at the step that ended their epoch.
                x = x * (series["step"][-1] / series["epoch"][-1])
                axis = "step"
            axis_names.add(axis)
            keep = ~np.isnan(values)
            ax.plot(x[keep], values[keep], marker="." if keep.sum() < 30 else None, label=name)
        ax.set_xlabel(" / ".join(sorted(axis_names)))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps and epochs are whole
        ax.set_ylabel(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_pr_curve(
    recall: Tensor | Sequence[float],
    precision: Tensor | Sequence[float],
    ax: Axes | None = None,
    label: str | None = None,
) -> Axes:
    """Plot a precision-recall curve (recall on x, as a step function) on ``[0, 1] x [0, 1]``.

    Args:
        recall: ``[N]`` recall values in ``[0, 1]``, in the order of the ranked detections.
        precision: ``[N]`` precision values in ``[0, 1]``.
        ax: the axes; default a new figure.
        label: legend entry (for example ``"AP = 0.75"``).

    Returns:
        The axes.

    Raises:
        ValueError: if the lengths differ, an input is not 1-D, or a value is outside ``[0, 1]``.

    Chapter: book/04_evaluation
    """
    r = torch.as_tensor(recall, dtype=torch.float64).detach().cpu()
    p = torch.as_tensor(precision, dtype=torch.float64).detach().cpu()
    if r.dim() != 1 or p.dim() != 1 or r.shape != p.shape:
        raise ValueError(
            f"recall and precision must be [N] of one length, got {list(r.shape)} and "
            f"{list(p.shape)}"
        )
    for name, values in (("recall", r), ("precision", p)):
        if values.numel() and not bool(((values >= 0) & (values <= 1)).all()):
            raise ValueError(
                f"{name} must lie in [0, 1], got min {values.min()}, max {values.max()}"
            )
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 3.5))
    ax.step(r.numpy(), p.numpy(), where="post", label=label)
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.grid(alpha=0.3)
    if label is not None:
        ax.legend(fontsize=8)
    return ax


def plot_error_breakdown(
    delta_ap: Mapping[str, float],
    ax: Axes | None = None,
    title: str | None = None,
) -> Axes:
    """Bar chart of the AP each error type costs (TIDE's ΔAP), one horizontal bar per type.

    Draws what :func:`coursepkg.evaluation.error_breakdown` returns in ``delta_ap`` (Bolya et al.,
    "TIDE: A General Toolbox for Identifying Object Detection Errors", ECCV 2020), first type at
    the top, each bar labelled with its value. ΔAP is a fraction of AP, as everywhere in the
    course (``tidecv`` prints percent).

    Args:
        delta_ap: error type -> ΔAP, finite and ``>= 0``, in the order to draw.
        ax: the axes; default a new figure.
        title: the axes' title (for example the detector's name).

    Returns:
        The axes; ``ax.patches`` holds the bars in the order of ``delta_ap``.

    Raises:
        TypeError: if ``delta_ap`` is not a mapping of names to numbers.
        ValueError: if it is empty or a value is negative or not finite.

    Chapter: book/04_evaluation
    """
    if not isinstance(delta_ap, Mapping):
        raise TypeError(
            f"delta_ap must be a mapping of error types to ΔAP, got {type(delta_ap).__name__}"
        )
    if not delta_ap:
        raise ValueError("delta_ap must name at least one error type, got an empty mapping")
    names = [str(name) for name in delta_ap]
    values = []
    for name, value in delta_ap.items():
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
            raise TypeError(f"delta_ap[{name!r}] must be a number, got {type(value).__name__}")
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"delta_ap[{name!r}] must be finite and >= 0, got {value}")
        values.append(float(value))
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 0.35 * len(names) + 0.8))
    positions = np.arange(len(names))[::-1]  # the first type at the top
    bars = ax.barh(positions, values, color=[plt.cm.tab10(i % 10) for i in range(len(names))])
    ax.bar_label(bars, labels=[f"{v:.3f}" for v in values], padding=2, fontsize=8)
    ax.set_yticks(positions, names)
    ax.set_xlim(0, max(max(values) * 1.3, 0.01))
    ax.set_xlabel("ΔAP (AP gained by fixing)")
    if title is not None:
        ax.set_title(title)
    return ax


def show_source(fn: object) -> object:
    """Display the source of ``fn`` as highlighted Python, on the website and in Jupyter/Colab.

    The chapters use it to show a package function (a readable ``*_reference``) exactly as the
    package defines it, instead of carrying a second copy.

    Args:
        fn: a function or class defined in Python.

    Returns:
        An ``IPython.display.Code`` object (the notebook renders it as the cell's output).
    """
    from IPython.display import Code  # only where a notebook asks for it

    if not (inspect.isfunction(fn) or inspect.isclass(fn) or inspect.ismethod(fn)):
        raise TypeError(
            f"fn must be a function or class defined in Python, got {type(fn).__name__}"
        )
    return Code(inspect.getsource(fn), language="python")


def _plain_number(name: str, value: object) -> object:
    """``value`` as a Python number when it is a numpy or torch number; see :func:`glue`."""
    if isinstance(value, (np.ndarray, np.generic, torch.Tensor)):
        count = value.numel() if isinstance(value, torch.Tensor) else value.size
        if count != 1:
            shape = tuple(value.shape)
            raise ValueError(f"glue({name!r}) needs one number, got an array of shape {shape}")
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        raise ValueError(f"glue({name!r}) got NaN: the page would print 'nan' as a result")
    return value


def glue(name: str, value: object) -> object:
    """Hand a computed number to the page's prose, where ``{glue:text}`name:.2f``` shows it.

    On the website, Jupyter Book replaces the role with the value this cell computed, so a
    number in the text is always the one the page's own run produced. Elsewhere (Colab, plain
    Jupyter) there is no book build to read it, and this only returns the value.

    A numpy scalar or a one-element tensor is handed over as the plain Python number it holds:
    the prose formats the value's text, and numpy 2 writes ``np.float64(0.44)`` where the page
    must read ``0.44`` (a format such as ``:.2f`` then fails the build).

    Args:
        name: the key the prose refers to.
        value: a number (Python, numpy scalar, 0-d array or one-element tensor) or a string.

    Returns:
        ``value`` as a Python ``int``/``float``/``bool`` when it was a numpy or torch number,
        otherwise unchanged.

    Raises:
        TypeError, ValueError: if ``name`` is not a non-empty string of letters, digits and ``_``
            (the prose's role must be able to name it), if ``value`` is an array or tensor of more
            than one element, or if it is NaN (a page would print "nan" as a result).
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"name must be a non-empty identifier such as 'map_50', got {name!r}")
    value = _plain_number(name, value)
    try:
        from myst_nb import glue as myst_glue  # installed with the book's extra
    except ImportError:
        return value
    myst_glue(name, value, display=False)
    return value


def draw_pipeline(
    stages: Sequence[str | Sequence[str]],
    ax: Axes | None = None,
    *,
    title: str | None = None,
    highlight: Sequence[int] = (),
    box_width: float = 1.6,
    box_height: float = 0.8,
    gap: float = 0.5,
    fontsize: float = 8.5,
) -> list[list[Rectangle]]:
    """Draw a detector's pipeline as boxes joined by arrows, left to right.

    Each stage is a caption (``"\\n"`` breaks lines) or a sequence of captions drawn one above the
    other: parallel branches (for example a head's classifier and box regressor), each joined to
    every box of the stages before and after it, except that two neighbouring stages with the same
    number of branches are joined lane by lane (branch ``k`` to branch ``k``).

    Args:
        stages: the stages in order; a stage is a str or a non-empty sequence of str.
        ax: axes to draw on; None makes a figure sized to the pipeline.
        title: axes title.
        highlight: indices of stages drawn in a stronger colour (what a chapter introduces).
        box_width, box_height, gap: box size and the horizontal space between stages, in data units.
        fontsize: caption size.

    Returns:
        One list of the drawn boxes per stage, top to bottom.

    Raises:
        ValueError: for no stages, an empty stage or caption, or a highlight index out of range.
        TypeError: for a caption that is not a str.

    Chapter: book/05_rcnn, book/06_fast_rcnn, book/07_faster_rcnn (the pipeline figures).
    """
    if isinstance(stages, str) or not isinstance(stages, Sequence) or len(stages) == 0:
        raise ValueError(f"stages must be a non-empty sequence of captions, got {stages!r}")
    columns: list[list[str]] = []
    for i, stage in enumerate(stages):
        branch = [stage] if isinstance(stage, str) else list(stage)
        if not branch:
            raise ValueError(f"stages[{i}] must be a caption or a non-empty sequence of captions")
        for caption in branch:
            if not isinstance(caption, str):
                raise TypeError(f"stages[{i}] captions must be str, got {type(caption).__name__}")
            if not caption.strip():
                raise ValueError(f"stages[{i}] has an empty caption")
        columns.append(branch)
    for i in highlight:
        if not isinstance(i, int) or not 0 <= i < len(columns):
            raise ValueError(f"highlight must hold stage indices in [0, {len(columns)}), got {i!r}")

    rows = max(len(c) for c in columns)
    width = len(columns) * box_width + (len(columns) - 1) * gap
    height = rows * box_height + (rows - 1) * gap / 2
    if ax is None:
        _, ax = plt.subplots(figsize=(max(4.0, 1.35 * width), max(1.2, 1.35 * height)))
    drawn: list[list[Rectangle]] = []
    for i, branch in enumerate(columns):
        x = i * (box_width + gap)
        # Centre the column's boxes vertically around height / 2.
        span = len(branch) * box_height + (len(branch) - 1) * gap / 2
        y0 = (height - span) / 2
        colour = "tab:orange" if i in highlight else "tab:blue"
        boxes = []
        for k, caption in enumerate(branch):
            y = y0 + (len(branch) - 1 - k) * (box_height + gap / 2)  # first caption on top
            box = Rectangle(
                (x, y),
                box_width,
                box_height,
                facecolor=colour,
                alpha=0.18,
                edgecolor=colour,
                linewidth=1.5,
            )
            ax.add_patch(box)
            ax.text(
                x + box_width / 2,
                y + box_height / 2,
                caption,
                ha="center",
                va="center",
                fontsize=fontsize,
            )
            boxes.append(box)
        drawn.append(boxes)
    for left, right in zip(drawn[:-1], drawn[1:], strict=True):
        # Lanes: two stages with the same number of branches (more than one) join box k to box k;
        # otherwise every box joins every box of the next stage.
        lanes = len(left) == len(right) > 1
        pairs = zip(left, right, strict=True) if lanes else ((a, b) for a in left for b in right)
        for a, b in pairs:
            start = (a.get_x() + box_width, a.get_y() + box_height / 2)
            end = (b.get_x(), b.get_y() + box_height / 2)
            ax.annotate(
                "",
                xy=end,
                xytext=start,
                arrowprops={"arrowstyle": "->", "color": "0.3", "linewidth": 1.2},
            )
    ax.set_xlim(-0.05, width + 0.05)
    ax.set_ylim(-0.05, height + 0.05)
    ax.set_aspect("equal")
    ax.axis("off")
    if title is not None:
        ax.set_title(title, fontsize=fontsize + 1.5)
    return drawn
