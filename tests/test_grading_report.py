"""coursepkg.grading.report: the score table of a folder of notebooks ends with a summary table."""

from coursepkg.grading.notebooks import NotebookResult
from coursepkg.grading.report import format_summary, format_table
from coursepkg.grading.results import QuestionResult


def _nb(path, *questions, error=""):
    results = [QuestionResult(name, points, status) for name, points, status in questions]
    return NotebookResult(path=path, exercise=path.split("/")[-1].split(".")[0], questions=results, error=error)


def _results():
    return [
        _nb("ex/02_boxes_iou.ipynb", ("box_convert", 2, "passed"), ("iou", 2, "passed"), ("iou_pairwise", 3, "failed")),
        _nb("ex/03_nms.ipynb", ("nms", 3, "passed"), ("batched_nms", 2, "passed")),
        _nb("ex/broken.ipynb", error="not a notebook: the file is not JSON"),
    ]


def test_summary_has_one_line_per_notebook_and_the_total():
    results = _results()
    lines = format_summary(results).splitlines()
    assert lines[0] == "summary"
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:]}
    assert rows["ex/02_boxes_iou.ipynb"] == ["4", "/", "7", "57", "%", "2/3", "questions"]
    assert rows["ex/03_nms.ipynb"] == ["5", "/", "5", "100", "%", "2/2", "questions"]
    assert rows["ex/broken.ipynb"][:4] == ["0", "/", "?", "not"]
    assert "not a notebook" in lines[4]
    assert lines[-1].split() == ["all", "notebooks", "9", "/", "12", "75", "%", "4/5", "questions"]


def test_table_of_one_notebook_has_no_summary_and_of_several_ends_with_it():
    results = _results()
    assert "summary" not in format_table(results[:1])
    table = format_table(results)
    assert table.endswith(format_summary(results))
