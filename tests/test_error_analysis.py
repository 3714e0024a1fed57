"""Tests of coursepkg.evaluation.error_analysis: one hand-built scene per TIDE error type, with
the ΔAP worked out by hand; bad inputs; and the authors' package ``tidecv`` as the oracle of the
six ΔAP on seeded random detections."""

from __future__ import annotations

import pytest
import torch

from coursepkg.evaluation.error_analysis import ERROR_TYPES, error_breakdown

TIDE_NAMES = dict(zip(ERROR_TYPES, ("Cls", "Loc", "Both", "Dupe", "Bkg", "Miss"), strict=True))


def image(pred_rows, gt_rows, crowd=None):
    """One image from rows ``(x1, y1, x2, y2, label, score)`` and ``(x1, y1, x2, y2, label)``."""
    p = torch.tensor(pred_rows, dtype=torch.float64).reshape(-1, 6)
    t = torch.tensor(gt_rows, dtype=torch.float64).reshape(-1, 5)
    target = {"boxes": t[:, :4], "labels": t[:, 4].long()}
    if crowd is not None:
        target["iscrowd"] = torch.tensor(crowd)
    return {"boxes": p[:, :4], "labels": p[:, 4].long(), "scores": p[:, 5]}, target


# The base scene: object A of class 0, object B of class 1, each found exactly (AP 1).
A, B = [0, 0, 10, 10], [20, 20, 30, 30]
C = [40, 40, 50, 50]  # a third object of class 0 where a case needs one
BASE_PREDS = [[*A, 0, 0.9], [*B, 1, 0.8]]
BASE_GTS = [[*A, 0], [*B, 1]]

# 101-point AP of a class whose curve is flat at precision p up to recall r: p * (100 r + 1) / 101.
HALF_AT_HALF = 51 / 101  # precision 1 up to recall 0.5, then nothing


CASES = {
    # A class-1 detection on the class-0 object C (no one found C): fixing relabels it a TP of C.
    # Class 0: precision 1 to recall 0.5; class 1: FP then TP, precision 0.5 throughout.
    "classification": (
        [[*C, 1, 0.95]],
        [[*C, 0]],
        1 - (HALF_AT_HALF + 0.5) / 2,
    ),
    # A class-0 detection on C shifted by half its height: IoU 50/150 = 1/3 in [0.1, 0.5].
    # Class 0: FP, TP with 2 objects: precision 0.5 up to recall 0.5.
    "localisation": (
        [[40, 45, 50, 55, 0, 0.95]],
        [[*C, 0]],
        1 - (0.5 * HALF_AT_HALF + 1) / 2,
    ),
    # A class-1 detection on A shifted (IoU 1/3, wrong class, and no class-1 object near).
    "both": ([[0, 5, 10, 15, 1, 0.95]], [], 1 - (1 + 0.5) / 2),
    # A second class-0 detection on A (IoU 1 with a taken object) ranked above the TP of C.
    # Class 0: TP, FP, TP with 2 objects: precision 1 to recall 0.5, then 2/3 to recall 1.
    "duplicate": (
        [[*A, 0, 0.7], [*C, 0, 0.5]],
        [[*C, 0]],
        1 - ((51 + 50 * 2 / 3) / 101 + 1) / 2,
    ),
    # A class-0 detection far from every object, ranked first.
    "background": ([[60, 60, 70, 70, 0, 0.95]], [], 1 - (0.5 + 1) / 2),
    # Object C, no detection anywhere near it.
    "missed": ([], [[*C, 0]], 1 - (HALF_AT_HALF + 1) / 2),
}


@pytest.mark.parametrize("kind", ERROR_TYPES)
def test_each_error_type_alone(kind):
    extra_preds, extra_gts, expected = CASES[kind]
    preds, targets = image(BASE_PREDS + extra_preds, BASE_GTS + extra_gts)
    result = error_breakdown([preds], [targets])
    assert result.counts == {name: int(name == kind) for name in ERROR_TYPES}
    assert result.num_true_positives == 2 + (kind == "duplicate")  # the duplicate case adds C's TP
    assert result.ap == pytest.approx(1 - expected, abs=1e-12)
    for name in ERROR_TYPES:  # fixing the one error gives AP 1; fixing anything else, nothing
        assert result.delta_ap[name] == pytest.approx(expected if name == kind else 0.0, abs=1e-12)


def test_the_base_scene_is_perfect():
    preds, targets = image(BASE_PREDS, BASE_GTS)
    result = error_breakdown([preds], [targets])
    assert result.ap == 1.0 and all(v == 0 for v in result.delta_ap.values())
    assert result.confusion.tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 0]]
    assert result.tp_iou.tolist() == [1.0, 1.0] and result.tp_labels.tolist() == [0, 1]


def test_confusion_matrix_rows_true_columns_predicted():
    # classification (true 0, predicted 1), background (predicted 0), missed (true 1)
    preds, targets = image(
        BASE_PREDS + [[*C, 1, 0.7], [60, 60, 70, 70, 0, 0.6]],
        BASE_GTS + [[*C, 0], [80, 80, 90, 90, 1]],
    )
    result = error_breakdown([preds], [targets], num_classes=3)
    expected = torch.zeros(4, 4, dtype=torch.int64)
    expected[0, 0] = expected[1, 1] = 1
    expected[0, 1] = 1  # the class-1 detection of the class-0 object C
    expected[3, 0] = 1  # the class-0 detection on the background
    expected[1, 3] = 1  # the class-1 object nobody found
    assert torch.equal(result.confusion, expected)


def test_only_the_best_of_several_errors_on_one_object_is_fixed():
    # Two localisation errors on C, scored 0.95 and 0.92, above the TP of A (0.9). The oracle turns
    # the first into the TP of C and removes the second: class 0 becomes TP, TP (AP 1). Were the
    # second left as a FP between them, class 0 would stay below 1.
    preds, targets = image(
        BASE_PREDS + [[40, 45, 50, 55, 0, 0.95], [40, 35, 50, 45, 0, 0.92]], BASE_GTS + [[*C, 0]]
    )
    result = error_breakdown([preds], [targets])
    assert result.counts["localisation"] == 2 and result.counts["missed"] == 0
    assert result.ap + result.delta_ap["localisation"] == pytest.approx(1.0, abs=1e-12)


def test_error_on_an_object_already_found_is_removed_not_made_a_tp():
    # A class-1 detection on A, which the class-0 TP already took: fixing only removes it.
    preds, targets = image(BASE_PREDS + [[*A, 1, 0.95]], BASE_GTS)
    result = error_breakdown([preds], [targets])
    assert result.counts["classification"] == 1
    assert result.delta_ap["classification"] == pytest.approx(0.25, abs=1e-12)  # 0.75 -> 1
    assert result.confusion[0, 1] == 1


def test_an_image_without_objects_has_only_background_errors():
    empty, targets = image([[*A, 0, 0.9], [*B, 1, 0.3]], [])
    preds, base_targets = image(BASE_PREDS, BASE_GTS)
    result = error_breakdown([preds, empty], [base_targets, targets])
    assert result.counts["background"] == 2 and sum(result.counts.values()) == 2


def test_thresholds_decide_localisation_or_duplicate():
    # IoU 1/3 with C is a localisation error at t_b = 0.1 and background at t_b = 0.4.
    preds, targets = image(BASE_PREDS + [[40, 45, 50, 55, 0, 0.95]], BASE_GTS + [[*C, 0]])
    assert error_breakdown([preds], [targets]).counts["localisation"] == 1
    result = error_breakdown([preds], [targets], bg_iou_thresh=0.4)
    assert result.counts["background"] == 1 and result.counts["missed"] == 1
    # At t_f = 0.3 the same detection is a true positive of C.
    assert error_breakdown([preds], [targets], fg_iou_thresh=0.3).ap == 1.0


def test_crowd_regions_absorb_detections():
    crowd_box = [60, 60, 100, 100]
    preds, targets = image(
        BASE_PREDS + [[62, 62, 72, 72, 0, 0.95]], BASE_GTS + [[*crowd_box, 0]], crowd=[0, 0, 1]
    )
    result = error_breakdown([preds], [targets])
    assert result.ap == 1.0 and sum(result.counts.values()) == 0
    # Without the crowd flag the region is an object: the detection is a background error
    # (IoU 0.0625 <= 0.1) and the region a missed object.
    del targets["iscrowd"]
    result = error_breakdown([preds], [targets])
    assert result.counts["background"] == 1 and result.counts["missed"] == 1


def test_only_the_best_detections_per_image_count():
    preds, targets = image(BASE_PREDS + [[60, 60, 70, 70, 0, 0.5]], BASE_GTS)
    assert error_breakdown([preds], [targets]).counts["background"] == 1
    result = error_breakdown([preds], [targets], detections_per_img=2)
    assert result.ap == 1.0 and sum(result.counts.values()) == 0


def test_no_detections_and_no_objects():
    preds, targets = image([], [])
    result = error_breakdown([preds], [targets])
    assert result.ap == 0.0 and sum(result.counts.values()) == 0
    assert result.confusion.shape == (1, 1)


# --------------------------------------------------------------------------------------------
# Bad inputs
# --------------------------------------------------------------------------------------------


def _good():
    return image(BASE_PREDS, BASE_GTS)


def test_rejects_a_dict_instead_of_a_list():
    preds, targets = _good()
    with pytest.raises(TypeError, match="preds must be a list"):
        error_breakdown(preds, [targets])


def test_rejects_wrong_shapes():
    preds, targets = _good()
    preds["boxes"] = preds["boxes"][:, :3]
    with pytest.raises(ValueError, match=r"preds\[0\]\['boxes'\] must be \[N, 4\]"):
        error_breakdown([preds], [targets])
    preds, targets = _good()
    preds["scores"] = preds["scores"][:1]
    with pytest.raises(ValueError, match=r"preds\[0\]\['scores'\] must be \[2\]"):
        error_breakdown([preds], [targets])


def test_rejects_nan():
    preds, targets = _good()
    preds["scores"][1] = float("nan")
    with pytest.raises(ValueError, match="scores"):
        error_breakdown([preds], [targets])
    preds, targets = _good()
    targets["boxes"][0, 2] = float("nan")
    with pytest.raises(ValueError, match=r"targets\[0\]\['boxes'\]"):
        error_breakdown([preds], [targets])


def test_rejects_boxes_that_look_like_xywh():
    preds, targets = _good()
    preds["boxes"][1] = torch.tensor([20.0, 20.0, 10.0, 10.0], dtype=torch.float64)  # x, y, w, h
    with pytest.raises(ValueError, match=r"preds\[0\]\['boxes'\].*row 1"):
        error_breakdown([preds], [targets])


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"fg_iou_thresh": 1.5}, ValueError, "fg_iou_thresh"),
        ({"bg_iou_thresh": float("nan")}, ValueError, "bg_iou_thresh"),
        ({"fg_iou_thresh": 0.3, "bg_iou_thresh": 0.4}, ValueError, "bg_iou_thresh must be <="),
        ({"detections_per_img": 0}, ValueError, "detections_per_img"),
        ({"detections_per_img": 2.0}, TypeError, "detections_per_img"),
        ({"num_classes": 1}, ValueError, "num_classes"),
    ],
)
def test_rejects_bad_settings(kwargs, error, message):
    preds, targets = _good()
    with pytest.raises(error, match=message):
        error_breakdown([preds], [targets], **kwargs)


# --------------------------------------------------------------------------------------------
# tidecv, the authors' package, as the oracle
# --------------------------------------------------------------------------------------------


def random_dataset(seed: int, num_images: int = 40, num_classes: int = 4):
    """Objects and detections with every kind of error: jittered boxes (some a little, some a lot),
    swapped labels, duplicates, boxes on the background, missed objects, empty images, and one
    image with more than 100 detections. Continuous random scores (no ties)."""
    g = torch.Generator().manual_seed(seed)
    preds, targets = [], []
    for i in range(num_images):
        num_gt = int(torch.randint(0, 7, (1,), generator=g))
        xy = torch.rand(num_gt, 2, generator=g, dtype=torch.float64) * 100
        wh = torch.rand(num_gt, 2, generator=g, dtype=torch.float64) * 40 + 8
        gt_boxes, gt_labels = (
            torch.cat([xy, xy + wh], 1),
            torch.randint(0, num_classes, (num_gt,), generator=g),
        )
        num_det = int(torch.randint(0, 10, (1,), generator=g)) if num_gt else 0
        source = torch.randint(0, max(num_gt, 1), (num_det,), generator=g)  # repeats: duplicates
        scale = torch.where(
            torch.rand(num_det, 1, generator=g) < 0.7, 0.1, 0.6
        )  # mostly small jitter
        jitter = (torch.rand(num_det, 4, generator=g, dtype=torch.float64) - 0.5) * scale
        det_boxes = (
            gt_boxes[source] + jitter * wh[source].repeat(1, 2) if num_gt else torch.zeros(0, 4)
        )
        swap = torch.rand(num_det, generator=g) < 0.2
        det_labels = torch.where(
            swap,
            torch.randint(0, num_classes, (num_det,), generator=g),
            gt_labels[source] if num_gt else 0,
        )
        num_bkg = 120 if i == 1 else int(torch.randint(0, 3, (1,), generator=g))
        bxy = torch.rand(num_bkg, 2, generator=g, dtype=torch.float64) * 140
        det_boxes = torch.cat([det_boxes.double(), torch.cat([bxy, bxy + 12], 1)])
        det_labels = torch.cat(
            [det_labels.long(), torch.randint(0, num_classes, (num_bkg,), generator=g)]
        )
        det_boxes = torch.cat(
            [
                det_boxes[:, :2].minimum(det_boxes[:, 2:]),
                det_boxes[:, :2].maximum(det_boxes[:, 2:]),
            ],
            1,
        )
        scores = torch.rand(len(det_boxes), generator=g, dtype=torch.float64)
        preds.append({"boxes": det_boxes, "scores": scores, "labels": det_labels})
        targets.append({"boxes": gt_boxes, "labels": gt_labels})
    return preds, targets


def tidecv_breakdown(tidecv, preds, targets):
    """AP, the six ΔAP (percent) and the error counts from tidecv; boxes go in as [x, y, w, h]."""
    gt, detections = tidecv.Data("gt"), tidecv.Data("preds")
    for i, (pred, target) in enumerate(zip(preds, targets, strict=True)):
        gt.add_image(i, f"image {i}")  # so that images without objects are evaluated too
        for (x1, y1, x2, y2), label in zip(
            target["boxes"].tolist(), target["labels"].tolist(), strict=True
        ):
            gt.add_ground_truth(i, label, [x1, y1, x2 - x1, y2 - y1])
        rows = zip(
            pred["boxes"].tolist(), pred["scores"].tolist(), pred["labels"].tolist(), strict=True
        )
        for (x1, y1, x2, y2), score, label in rows:
            detections.add_detection(i, label, score, [x1, y1, x2 - x1, y2 - y1])
    tide = tidecv.TIDE()
    run = tide.evaluate(gt, detections, mode=tidecv.TIDE.BOX)
    counts = {error.short_name: n for error, n in run.count_errors().items()}
    return run.ap, tide.get_main_errors()["preds"], counts


@pytest.mark.parametrize("seed", range(6))
def test_equals_tidecv_on_random_detections(seed):
    tidecv = pytest.importorskip("tidecv")
    preds, targets = random_dataset(seed)
    ap, delta_ap, counts = tidecv_breakdown(tidecv, preds, targets)
    result = error_breakdown(preds, targets)
    # Same definitions and the same 101-point sums, added in another order: agreement to rounding
    # (measured: about 1e-13 AP points). 1e-9 points would still catch a single detection, object
    # or recall sample treated differently (each moves AP by far more than 1e-6 points here).
    assert result.ap * 100 == pytest.approx(ap, abs=1e-9)
    for name in ERROR_TYPES:
        assert result.delta_ap[name] * 100 == pytest.approx(delta_ap[TIDE_NAMES[name]], abs=1e-9), (
            name
        )
        assert result.counts[name] == counts[TIDE_NAMES[name]], name
    assert all(
        result.counts[name] > 0
        for name in ("classification", "localisation", "background", "missed")
    )


def test_tidecv_agrees_on_the_hand_built_cases():
    tidecv = pytest.importorskip("tidecv")
    for kind, (extra_preds, extra_gts, expected) in CASES.items():
        preds, targets = image(BASE_PREDS + extra_preds, BASE_GTS + extra_gts)
        _, delta_ap, _ = tidecv_breakdown(tidecv, [preds], [targets])
        assert delta_ap[TIDE_NAMES[kind]] == pytest.approx(100 * expected, abs=1e-9), kind


# --------------------------------------------------------------------------------------------
# The bar chart
# --------------------------------------------------------------------------------------------


def test_plot_error_breakdown_draws_one_bar_per_type_first_on_top():
    import matplotlib.pyplot as plt

    from coursepkg.viz import plot_error_breakdown

    preds, targets = image(BASE_PREDS + CASES["background"][0], BASE_GTS)
    delta_ap = error_breakdown([preds], [targets]).delta_ap
    ax = plot_error_breakdown(delta_ap, title="one background error")
    widths = [bar.get_width() for bar in ax.patches]
    tops = [bar.get_y() for bar in ax.patches]
    assert widths == pytest.approx(list(delta_ap.values()))
    assert tops == sorted(tops, reverse=True)  # ERROR_TYPES read from the top down
    labels = {t.get_position()[1]: t.get_text() for t in ax.get_yticklabels()}
    assert [labels[y] for y in sorted(labels, reverse=True)] == list(ERROR_TYPES)
    assert ax.get_title() == "one background error"
    plt.close("all")


def test_plot_error_breakdown_rejects_bad_values():
    from coursepkg.viz import plot_error_breakdown

    with pytest.raises(TypeError, match="delta_ap must be a mapping"):
        plot_error_breakdown([0.1, 0.2])
    with pytest.raises(ValueError, match="at least one"):
        plot_error_breakdown({})
    with pytest.raises(ValueError, match=r"delta_ap\['missed'\] must be finite and >= 0"):
        plot_error_breakdown({"missed": float("nan")})
    with pytest.raises(TypeError, match=r"delta_ap\['missed'\] must be a number"):
        plot_error_breakdown({"missed": "0.1"})


def test_equals_tidecv_on_a_trained_detectors_detections():
    """The capstone's kind of input: a detector's own output (up to 100 scored boxes per image,
    many overlapping, five classes), here a small RetinaNet trained for a few steps."""
    tidecv = pytest.importorskip("tidecv")
    from coursepkg.data import ShapesDataset
    from coursepkg.engine.recipes import retinanet_recipe
    from coursepkg.engine.training import fit, predict
    from coursepkg.models.retinanet import RetinaNet

    torch.manual_seed(0)
    model = RetinaNet(retinanet_recipe("smoke").config)
    fit(model, ShapesDataset(16, (96, 96), seed=3), epochs=2, batch_size=4, lr=4e-3, progress=False)
    held_out = ShapesDataset(8, (96, 96), seed=4)
    targets = [held_out[i][1] for i in range(len(held_out))]
    preds = predict(model, [held_out[i][0] for i in range(len(held_out))])
    assert sum(len(p["boxes"]) for p in preds) > 50  # a real, crowded output, not a toy one
    ap, delta_ap, counts = tidecv_breakdown(tidecv, preds, targets)
    result = error_breakdown(preds, targets)
    assert result.ap * 100 == pytest.approx(ap, abs=1e-9)
    for name in ERROR_TYPES:
        assert result.delta_ap[name] * 100 == pytest.approx(delta_ap[TIDE_NAMES[name]], abs=1e-9), name
        assert result.counts[name] == counts[TIDE_NAMES[name]], name
