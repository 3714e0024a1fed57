"""Tests for coursepkg.viz (on matplotlib's Agg backend: nothing is displayed)."""

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from coursepkg.data import ShapesDataset  # noqa: E402
from coursepkg.viz import (  # noqa: E402
    class_color,
    draw_boxes,
    plot_history,
    plot_pr_curve,
    show_detections,
    show_grid,
    show_image,
)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def _rects(ax):
    return [p for p in ax.patches if isinstance(p, Rectangle)]


def test_show_image_puts_pixel_edges_on_integers():
    fig, ax = plt.subplots()
    image = torch.rand(3, 5, 7)
    shown = show_image(ax, image)
    assert shown.get_extent() == [0, 7, 5, 0]
    np.testing.assert_allclose(shown.get_array(), image.permute(1, 2, 0).numpy())
    grey = show_image(ax, torch.full((1, 4, 6), 255, dtype=torch.uint8))
    assert grey.get_extent() == [0, 6, 4, 0] and float(grey.get_array().max()) == 1.0
    assert show_image(ax, torch.zeros(4, 6)).get_array().shape == (4, 6)


def test_show_image_errors():
    _, ax = plt.subplots()
    with pytest.raises(TypeError, match="torch.Tensor"):
        show_image(ax, np.zeros((3, 4, 4)))
    with pytest.raises(ValueError, match=r"got \[4, 4, 3\]"):
        show_image(ax, torch.zeros(4, 4, 3))


def test_draw_boxes_geometry_and_captions():
    _, ax = plt.subplots()
    boxes = torch.tensor([[1.0, 2.0, 5.0, 10.0], [0.0, 0.0, 3.0, 3.0]])
    patches = draw_boxes(ax, boxes, torch.tensor([1, 0]), torch.tensor([0.9, 0.456]),
                         class_names=["circle", "square"])  # fmt: skip
    assert len(patches) == 2 and _rects(ax) == patches
    assert patches[0].get_xy() == (1.0, 2.0)
    assert (patches[0].get_width(), patches[0].get_height()) == (4.0, 8.0)
    assert [t.get_text() for t in ax.texts] == ["square 0.90", "circle 0.46"]
    assert patches[0].get_edgecolor() == class_color(1)
    assert patches[1].get_edgecolor() == class_color(0)


def test_draw_boxes_without_labels_and_with_one_colour():
    _, ax = plt.subplots()
    draw_boxes(ax, torch.tensor([[0.0, 0, 1, 1], [1, 1, 2, 2], [2, 2, 2, 2]]), color="red",
               linestyle="--")  # fmt: skip
    assert len(_rects(ax)) == 3 and len(ax.texts) == 0
    assert all(p.get_linestyle() == "--" for p in _rects(ax))
    assert all(p.get_edgecolor() == (1.0, 0.0, 0.0, 1.0) for p in _rects(ax))
    draw_boxes(ax, torch.zeros(0, 4))
    assert len(_rects(ax)) == 3
    draw_boxes(ax, torch.tensor([[0.0, 0, 1, 1]]), labels=[3])
    assert ax.texts[-1].get_text() == "3"


def test_draw_boxes_errors():
    _, ax = plt.subplots()
    boxes = torch.tensor([[0.0, 0, 1, 1], [1, 1, 2, 2]])
    with pytest.raises(TypeError, match="floating-point"):
        draw_boxes(ax, boxes.long())
    with pytest.raises(ValueError, match=r"labels must be \[N\] with N = 2"):
        draw_boxes(ax, boxes, labels=[0])
    with pytest.raises(ValueError, match=r"scores must be \[N\] with N = 2"):
        draw_boxes(ax, boxes, scores=torch.ones(3))
    with pytest.raises(ValueError, match="labels must index class_names"):
        draw_boxes(ax, boxes, labels=[0, 2], class_names=["a", "b"])
    with pytest.raises(ValueError, match="row 0"):
        draw_boxes(ax, torch.tensor([[2.0, 0, 1, 1]]))


def test_show_detections_draws_truth_dashed_and_predictions_solid():
    image = torch.rand(3, 20, 20)
    target = {
        "boxes": torch.tensor([[1.0, 1, 5, 5], [6, 6, 9, 12]]),
        "labels": torch.tensor([0, 1]),
    }
    prediction = {
        "boxes": torch.tensor([[1.0, 1, 6, 5], [6, 6, 9, 11], [0, 0, 20, 20]]),
        "scores": torch.tensor([0.9, 0.6, 0.1]),
        "labels": torch.tensor([0, 1, 1]),
    }
    ax = show_detections(image, target, prediction, class_names=["a", "b"], score_thresh=0.5,
                         title="demo")  # fmt: skip
    styles = [p.get_linestyle() for p in _rects(ax)]
    assert styles == ["--", "--", "-", "-"]  # the 0.1 prediction is below the threshold
    assert [t.get_text() for t in ax.texts] == ["a", "b", "a 0.90", "b 0.60"]
    assert ax.get_title() == "demo"
    only_image = show_detections(image)
    assert _rects(only_image) == []


def test_show_grid_uses_dataset_class_names():
    data = ShapesDataset(5, image_size=(32, 32), max_size=16, seed=0)
    fig = show_grid(data, n=4, ncols=3)
    assert len(fig.axes) == 6  # 2 rows x 3 columns, two left empty
    panels = fig.axes[:4]
    for i, ax in enumerate(panels):
        assert len(_rects(ax)) == len(data[i][1]["labels"])
        names = {t.get_text() for t in ax.texts}
        assert names <= set(data.classes)
    assert not fig.axes[5].axison
    # A plain list of pairs works too, and n larger than the list shows what there is.
    fig = show_grid([data[0], data[1]], n=10, ncols=4)
    assert len(fig.axes) == 2


def test_show_grid_errors():
    with pytest.raises(ValueError, match="n and ncols"):
        show_grid([], n=0)
    with pytest.raises(ValueError, match="empty"):
        show_grid([], n=3)


def test_plot_history_dict_with_steps_and_epochs():
    history = {
        "step": [1, 2, 3, 4, 5, 6],
        "lr": [0.1] * 6,
        "train_loss": [3.0, 2.5, 2.0, 1.8, 1.5, 1.4],
        "epoch": [1, 2],
        "epoch_loss": [2.5, 1.6],
        "val_map": [0.1, float("nan")],
        "val_map_50": [0.2, 0.35],
        "best_epoch": 2,
    }
    fig = plot_history(history)
    loss_ax, metric_ax = fig.axes
    lines = {line.get_label(): line for line in loss_ax.lines}
    assert set(lines) == {"train_loss", "epoch_loss"}  # lr is not plotted by default
    np.testing.assert_allclose(lines["train_loss"].get_xdata(), history["step"])
    np.testing.assert_allclose(lines["epoch_loss"].get_xdata(), [3, 6])  # ends of the epochs
    metric = {line.get_label(): line for line in metric_ax.lines}
    np.testing.assert_allclose(metric["val_map"].get_ydata(), [0.1])  # NaN skipped
    np.testing.assert_allclose(metric["val_map_50"].get_xdata(), [1, 2])
    assert metric_ax.get_xlabel() == "epoch"
    fig = plot_history(history, keys=["lr"])
    assert len(fig.axes) == 1 and fig.axes[0].lines[0].get_label() == "lr"


@dataclass(eq=False)
class _TwoTableHistory(Mapping):
    """Like coursepkg.engine.training.History: a dataclass that is also a mapping over two tables."""

    per_step: dict = field(default_factory=dict)
    per_epoch: dict = field(default_factory=dict)

    def __getitem__(self, key):
        return self.per_step[key] if key in self.per_step else self.per_epoch[key]

    def __iter__(self) -> Iterator[str]:
        yield from self.per_step
        yield from self.per_epoch

    def __len__(self) -> int:
        return len(self.per_step) + len(self.per_epoch)


def test_plot_history_reads_mapping_dataclasses_as_mappings():
    history = _TwoTableHistory(
        per_step={"step": [1.0, 2.0], "train_loss": [1.0, 0.5]},
        per_epoch={"epoch": [1.0, 2.0], "val_map": [0.2, 0.4]},
    )
    fig = plot_history(history)
    assert [line.get_label() for ax in fig.axes for line in ax.lines] == ["train_loss", "val_map"]
    # Same number of steps and epochs: the name decides the axis.
    assert [ax.get_xlabel() for ax in fig.axes] == ["step", "epoch"]


def test_plot_history_plain_lists_and_tensors():
    fig = plot_history({"loss": torch.tensor([1.0, 0.5, 0.25])})
    np.testing.assert_allclose(fig.axes[0].lines[0].get_xdata(), [1, 2, 3])
    assert fig.axes[0].get_xlabel() == "index"


def test_plot_history_errors():
    with pytest.raises(TypeError, match="mapping"):
        plot_history([1.0, 2.0])
    with pytest.raises(ValueError, match="no loss or metric series"):
        plot_history({"lr": [0.1], "train_loss": []})
    with pytest.raises(ValueError, match=r"keys \['val_map'\]"):
        plot_history({"train_loss": [1.0]}, keys=["val_map"])


def test_plot_pr_curve():
    ax = plot_pr_curve([0.25, 0.5, 0.75], torch.tensor([1.0, 1.0, 0.75]), label="AP = 0.69")
    (line,) = ax.lines
    np.testing.assert_allclose(line.get_xdata(), [0.25, 0.5, 0.75])
    np.testing.assert_allclose(line.get_ydata(), [1.0, 1.0, 0.75])
    assert line.get_drawstyle() == "steps-post"
    assert ax.get_legend().get_texts()[0].get_text() == "AP = 0.69"
    assert ax.get_xlim() == (0, 1.02)


def test_plot_pr_curve_errors():
    with pytest.raises(ValueError, match="one length"):
        plot_pr_curve([0.1, 0.2], [1.0])
    with pytest.raises(ValueError, match="one length"):
        plot_pr_curve([[0.1]], [[1.0]])
    with pytest.raises(ValueError, match=r"precision must lie in \[0, 1\]"):
        plot_pr_curve([0.1], [1.5])


def test_glue_returns_the_value_and_refuses_names_the_prose_cannot_use():
    from coursepkg.viz import glue

    assert glue("map_50", 0.73) == 0.73  # outside a notebook: the value comes back unchanged
    for bad in ("", "map 50", "map-50", None, 3):
        with pytest.raises(ValueError, match="name must be a non-empty identifier"):
            glue(bad, 1.0)


def test_show_source_shows_the_package_definition():
    from coursepkg.ops.nms import nms_reference
    from coursepkg.viz import show_source

    code = show_source(nms_reference)
    assert code.data.startswith("def nms_reference(") and "iou_threshold" in code.data
    with pytest.raises(TypeError, match="fn must be a function or class"):
        show_source("def f(): pass")


def test_draw_pipeline_places_stages_left_to_right_and_branches_top_to_bottom():
    from coursepkg.viz import draw_pipeline

    fig, ax = plt.subplots()
    drawn = draw_pipeline(["image", "CNN", ["classifier", "box regressor"], "NMS"], ax, highlight=[1])
    assert [len(column) for column in drawn] == [1, 1, 2, 1]
    xs = [column[0].get_x() for column in drawn]
    assert xs == sorted(xs) and len(set(xs)) == 4
    top, bottom = drawn[2]
    assert top.get_y() > bottom.get_y()  # the first caption of a branch is drawn on top
    assert drawn[1][0].get_edgecolor() != drawn[0][0].get_edgecolor()  # the highlighted stage
    # one arrow per pair of boxes in neighbouring stages: 1 + 2 + 2
    assert sum(1 for t in ax.texts if t.get_text() == "") == 5
    assert {t.get_text() for t in ax.texts} >= {"image", "CNN", "classifier", "box regressor", "NMS"}
    plt.close(fig)


def test_draw_pipeline_joins_equal_branches_lane_by_lane():
    from coursepkg.viz import draw_pipeline

    fig, ax = plt.subplots()
    drawn = draw_pipeline(["features", ["scores", "deltas"], ["flat scores", "flat deltas"]], ax)
    arrows = [t for t in ax.texts if t.get_text() == ""]
    assert len(arrows) == 2 + 2  # fan-out to two branches, then lane to lane (not 2 x 2)
    # the lane arrows stay level: scores -> flat scores, deltas -> flat deltas
    lane_arrows = [a for a in arrows if a.xyann[0] > drawn[1][0].get_x()]
    assert sorted(round(a.xy[1] - a.xyann[1], 9) for a in lane_arrows) == [0.0, 0.0]
    plt.close(fig)


@pytest.mark.parametrize(
    ("stages", "kwargs", "error", "match"),
    [
        ([], {}, ValueError, "stages must be"),
        ("image", {}, ValueError, "stages must be"),
        (["image", []], {}, ValueError, r"stages\[1\]"),
        (["image", [3]], {}, TypeError, r"stages\[1\] captions must be str"),
        (["image", " "], {}, ValueError, "empty caption"),
        (["image", "CNN"], {"highlight": [2]}, ValueError, "highlight"),
    ],
)
def test_draw_pipeline_errors(stages, kwargs, error, match):
    from coursepkg.viz import draw_pipeline

    with pytest.raises(error, match=match):
        draw_pipeline(stages, **kwargs)
    plt.close("all")


def test_glue_hands_the_prose_plain_python_numbers():
    """numpy 2 writes np.float64(0.44) as the value's text: the page must read 0.44."""
    from coursepkg.viz import glue

    for value, plain in [
        (np.float64(0.44), 0.44),
        (np.int64(7), 7),
        (np.array(0.5), 0.5),
        (torch.tensor(0.25), 0.25),
        (torch.tensor([3]), 3),
    ]:
        out = glue("x", value)
        assert type(out) is type(plain) and out == plain
        assert repr(out) == repr(plain)
    assert glue("x", "1,024") == "1,024"
    with pytest.raises(ValueError, match="shape"):
        glue("x", np.zeros(2))
    with pytest.raises(ValueError, match="shape"):
        glue("x", torch.zeros(2, 2))
    with pytest.raises(ValueError, match="NaN"):
        glue("x", float("nan"))
    with pytest.raises(ValueError, match="NaN"):
        glue("x", np.float32("nan"))
