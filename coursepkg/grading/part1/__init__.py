"""Part I questions: sliding windows, boxes and IoU, non-maximum suppression, evaluation.

Each question's tests are the pytest module ``test_<name>.py`` beside this file. They compare the
student's function with the package's reference implementation on the worked examples, on edge
cases (empty, touching, identical, zero-area, exactly at a threshold, ties) and on seeded random
inputs of several sizes.

Chapter: book/exercises
"""

from pathlib import Path

from coursepkg.grading.questions import question

_HERE = Path(__file__).parent

QUESTIONS = (
    question(
        "window_positions", 2, "01_sliding_windows", "top-left positions of a sliding window", _HERE
    ),
    question(
        "window_boxes", 2, "01_sliding_windows", "every window of an image as an xyxy box", _HERE
    ),
    question(
        "box_convert", 2, "02_boxes_iou", "convert boxes between xyxy, xywh and cxcywh", _HERE
    ),
    question("iou", 2, "02_boxes_iou", "IoU of two boxes, plain Python", _HERE),
    question(
        "iou_pairwise", 3, "02_boxes_iou", "IoU of every pair of two box sets, vectorised", _HERE
    ),
    question("nms", 3, "03_nms", "greedy non-maximum suppression", _HERE),
    question("batched_nms", 2, "03_nms", "class-aware non-maximum suppression", _HERE),
    question(
        "match_detections", 3, "04_evaluation", "true and false positives of one class (VOC)", _HERE
    ),
    question("ap_all_point", 2, "04_evaluation", "all-point interpolated average precision", _HERE),
    question("ap_11_point", 2, "04_evaluation", "11-point interpolated average precision", _HERE),
    question("mean_average_precision", 3, "04_evaluation", "VOC mAP over classes", _HERE),
)
