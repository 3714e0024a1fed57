"""Assertions that explain themselves to a student, and the inputs the grading tests are built from.

A grading test builds a :class:`Case` (a title and the arguments), calls the student's function
with :func:`call` (which works on copies and turns any exception into a readable failure), and
compares with an ``expect_*`` helper. Every failure is a :class:`Failure`: the input, what was
expected, what came back, where they first differ, and a hint. Some checks also know the answers
of typical mistakes (``diagnoses``) and name the mistake when the student's answer equals one.

Chapter: book/exercises
"""

from __future__ import annotations

import copy
import linecache
import math
import numbers
import os
import sysconfig
from collections.abc import Callable, Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

Diagnoses = Iterable[tuple[str, Callable[[], Any]]]
"""Pairs ``(hint, wrong_answer)``: if the student's result equals ``wrong_answer()``, say ``hint``."""

_MAX_ROWS = 8
_MAX_COLS = 8


@dataclass
class Case:
    """One input of a grading test: a title that says what is special about it, and the arguments.

    The arguments are passed to the student's function positionally, in order; their names are
    only for the report.
    """

    title: str
    args: dict[str, Any]
    hint: str = ""

    def __str__(self) -> str:  # the pytest id
        return self.title

    def inputs(self) -> list[Any]:
        """Fresh copies of the arguments, for the reference implementation."""
        return [copy.deepcopy(value) for value in self.args.values()]


@dataclass
class Picture:
    """Boxes to draw next to a failure: layers of ``[x1, y1, x2, y2]`` lists, each with a colour."""

    title: str
    layers: list[dict[str, Any]] = field(default_factory=list)

    def add(
        self, label: str, boxes: Any, color: str, *, dashed: bool = False, texts=None
    ) -> Picture:
        rows = boxes.tolist() if isinstance(boxes, Tensor) else [list(map(float, b)) for b in boxes]
        self.layers.append(
            {"label": label, "boxes": rows, "color": color, "dashed": dashed, "texts": texts}
        )
        return self

    def to_dict(self) -> dict[str, Any]:
        return {"title": self.title, "layers": self.layers}


class Failure(AssertionError):
    """A test failure written for the student.

    Attributes:
        summary: what went wrong, one line ("expected 0.0, got 0.04").
        case: the input that showed it.
        expected, got: the two values, already formatted for display ("" to leave out).
        hint: what usually causes this.
        detail: extra lines, e.g. the line of the student's code that raised.
        picture: boxes to draw, or None.
        not_implemented: the function still raises ``NotImplementedError``.
    """

    def __init__(
        self,
        summary: str,
        *,
        case: Case | None = None,
        expected: str = "",
        got: str = "",
        hint: str = "",
        detail: str = "",
        picture: Picture | None = None,
        not_implemented: bool = False,
    ) -> None:
        super().__init__(summary)
        self.summary = summary
        self.case = case
        self.expected = expected
        self.got = got
        self.hint = hint or (case.hint if case is not None else "")
        self.detail = detail
        self.picture = picture
        self.not_implemented = not_implemented

    @property
    def headline(self) -> str:
        """One line for score tables: the case and the summary."""
        return f"{self.case.title}: {self.summary}" if self.case is not None else self.summary

    def render(self) -> str:
        """The full explanation, several lines."""
        lines = [self.headline]
        if self.case is not None and not self.not_implemented:
            for i, (name, value) in enumerate(self.case.args.items()):
                label = "input:" if i == 0 else ""
                lines.append(_labelled(f"{label:<10}{name} = ", show(value)))
        if self.expected:
            lines.append(_labelled("expected: ", self.expected))
        if self.got:
            lines.append(_labelled("got:      ", self.got))
        if self.detail:
            lines.append(self.detail)
        if self.hint:
            lines.append(f"hint: {self.hint}")
        return "\n".join(lines)


def _labelled(label: str, text: str) -> str:
    """``label`` then ``text``, with the text's continuation lines indented under its first."""
    pad = "\n" + " " * len(label)
    return label + pad.join(text.splitlines() or [""])


# --------------------------------------------------------------------------- calling the student


def call(student: Callable[..., Any], case: Case, *, new_tensor: bool = False) -> Any:
    """Call the student's function on copies of the case's arguments.

    Args:
        student: the function.
        case: the input.
        new_tensor: the result must be a new tensor: not an argument itself, nor a view of one.

    Raises:
        Failure: if the function raises (``NotImplementedError`` is reported as "not implemented
            yet"), if it changed one of its arguments in place, or (with ``new_tensor``) if its
            result shares memory with an argument.
    """
    args = case.inputs()
    try:
        got = student(*args)
    except NotImplementedError:
        raise Failure(
            "not implemented yet (the function raises NotImplementedError)",
            case=case,
            hint="replace `raise NotImplementedError` with your code, run the cell, then check again",
            not_implemented=True,
        ) from None
    except Exception as error:  # the student's bug, reported, never re-raised
        raise Failure(
            f"your function raised {type(error).__name__}: {error}",
            case=case,
            detail=_where(error),
        ) from None
    for (name, original), passed in zip(case.args.items(), args, strict=True):
        if not _same(original, passed):
            raise Failure(
                f"your function changed its argument `{name}` in place",
                case=case,
                hint="do not modify the inputs: compute into new tensors (e.g. x.clone()) instead",
            )
    if new_tensor:
        for index in aliased_arguments(got, args):
            name = list(case.args)[index]
            raise Failure(
                f"your result shares memory with the argument `{name}` (it is `{name}` itself "
                "or a view of it): return a new tensor",
                case=case,
                hint="a caller that changes the result would change its input too: return "
                "x.clone() (or build the result with torch.stack / arithmetic) even when there "
                "is nothing to convert",
            )
    return got


def aliased_arguments(got: Any, args: Sequence[Any]) -> list[int]:
    """The positions of the tensor arguments whose memory the tensor ``got`` shares.

    A result that came from the notebook's kernel (see :mod:`coursepkg.grading.judge`) carries
    the answer, found there, in ``grader_aliases``.
    """
    if not isinstance(got, Tensor):
        return []
    if hasattr(got, "grader_aliases"):
        return list(got.grader_aliases)
    return [
        i
        for i, a in enumerate(args)
        if isinstance(a, Tensor) and got.numel() and a.numel() and _shares_memory(got, a)
    ]


def _shares_memory(a: Tensor, b: Tensor) -> bool:
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def expect_raises(student: Callable[..., Any], case: Case, error: type[Exception]) -> None:
    """Calling the student's function on the case must raise ``error`` (e.g. ``ValueError``).

    Raises:
        Failure: if it returns, or raises something else.
    """
    try:
        got = student(*case.inputs())
    except NotImplementedError:
        raise Failure(
            "not implemented yet (the function raises NotImplementedError)",
            case=case,
            not_implemented=True,
        ) from None
    except error:
        return
    except Exception as other:
        raise Failure(
            f"expected a {error.__name__}, but your function raised {type(other).__name__}: {other}",
            case=case,
            detail=_where(other),
        ) from None
    raise Failure(
        f"expected a {error.__name__}, but your function returned", case=case, got=show(got)
    )


def _library_dirs() -> tuple[str, ...]:
    """Python's own library folders and coursepkg's: code there is not the student's."""
    paths = sysconfig.get_paths()
    dirs = {paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib") if key in paths}
    dirs.add(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # editable installs
    return tuple(sorted(dirs))


def _where(error: BaseException) -> str:
    """The deepest line of the student's own code in the traceback, e.g. ``line 7: x = ...``.

    An exception the student's function raised in the notebook's kernel arrives here rebuilt,
    with that line already found there (``grader_where``).
    """
    if hasattr(error, "grader_where"):
        return str(error.grader_where)
    libraries = _library_dirs()
    tb, found = error.__traceback__, None
    while tb is not None:
        if not os.path.abspath(tb.tb_frame.f_code.co_filename).startswith(libraries):
            found = tb
        tb = tb.tb_next
    if found is None:
        return ""
    code = found.tb_frame.f_code
    text = linecache.getline(code.co_filename, found.tb_lineno).strip()
    where = f"line {found.tb_lineno} of {code.co_name}()"
    return f"raised at {where}: {text}" if text else f"raised at {where}"


def _same(a: Any, b: Any) -> bool:
    """Equal values, types and shapes (used to detect arguments changed in place)."""
    if isinstance(a, Tensor):
        return isinstance(b, Tensor) and a.dtype == b.dtype and bool(torch.equal(a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    return a == b


# --------------------------------------------------------------------------- comparing results


DIAGNOSE: ContextVar[bool] = ContextVar("DIAGNOSE", default=True)
"""Whether failures look for a known mistake. The runner turns it off after a question's first
failure: only the first failure is shown, and the known mistakes cost time to compute."""


def _diagnose(got: Any, diagnoses: Diagnoses, same: Callable[[Any, Any], bool]) -> str:
    """The hint of the first known mistake whose answer equals ``got``, else ""."""
    if not DIAGNOSE.get():
        return ""
    for hint, wrong in diagnoses:
        try:
            if same(got, wrong()):
                return hint
        except Exception:  # a diagnosis that does not apply to this input
            continue
    return ""


def expect_tensor(
    got: Any,
    expected: Tensor,
    case: Case,
    *,
    atol: float = 1e-5,
    rtol: float = 1e-4,
    check_dtype: bool = True,
    exact_dtype: bool = False,
    diagnoses: Diagnoses = (),
    picture: Picture | None = None,
) -> None:
    """``got`` must be a tensor with ``expected``'s shape, dtype kind and values.

    Floating-point results compare with ``atol``/``rtol`` (NaN never matches); integer and bool
    results must be equal. With ``check_dtype`` a floating result must also have exactly
    ``expected``'s dtype (functions follow the dtype of their inputs); with ``exact_dtype`` any
    result must (e.g. int64 indices, as torchvision's ``nms`` returns, not int32).

    Raises:
        Failure: describing the first difference.
    """

    def fail(summary: str, hint: str = "") -> Failure:
        return Failure(
            summary,
            case=case,
            expected=show(expected),
            got=show(got),
            hint=hint or _diagnose(got, diagnoses, _tensors_match) or case.hint,
            picture=picture,
        )

    if not isinstance(got, Tensor):
        raise fail(
            f"expected a torch.Tensor, got {type(got).__name__}",
            "return a tensor (torch.tensor(...), torch.stack(...), ...), not a list or an array",
        )
    if list(got.shape) != list(expected.shape):
        raise fail(f"wrong shape: expected {list(expected.shape)}, got {list(got.shape)}")
    kind = _kind(expected.dtype)
    if _kind(got.dtype) != kind:
        raise fail(f"wrong dtype: expected a {kind} tensor ({_dtype(expected)}), got {_dtype(got)}")
    if check_dtype and kind == "floating-point" and got.dtype != expected.dtype:
        raise fail(
            f"wrong dtype: expected {_dtype(expected)}, got {_dtype(got)}",
            "the result must have the dtype of the input boxes: build it from them "
            "(arithmetic on the inputs, or x.new_zeros(...)) instead of a fresh float32 tensor",
        )
    if exact_dtype and got.dtype != expected.dtype:
        raise fail(
            f"wrong dtype: expected {_dtype(expected)}, got {_dtype(got)}",
            f"return a {_dtype(expected)} tensor (torch.tensor(..., dtype=torch.{_dtype(expected)}) "
            f"or .to(torch.{_dtype(expected)})), as the statement asks",
        )
    if not _tensors_match(got, expected, atol=atol, rtol=rtol):
        raise fail(_first_difference(got, expected, atol=atol, rtol=rtol))


def _kind(dtype: torch.dtype) -> str:
    if dtype == torch.bool:
        return "bool"
    return "floating-point" if dtype.is_floating_point else "integer"


def _dtype(t: Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def _tensors_match(got: Any, expected: Any, *, atol: float = 1e-5, rtol: float = 1e-4) -> bool:
    if not (isinstance(got, Tensor) and isinstance(expected, Tensor)):
        return False
    if got.shape != expected.shape or _kind(got.dtype) != _kind(expected.dtype):
        return False
    if expected.dtype.is_floating_point:
        return bool(
            torch.allclose(got.double(), expected.double(), atol=atol, rtol=rtol, equal_nan=True)
        )
    return bool(torch.equal(got.long(), expected.long()))


def _first_difference(got: Tensor, expected: Tensor, *, atol: float, rtol: float) -> str:
    if expected.dtype.is_floating_point:
        g, e = got.double(), expected.double()
        bad = ~torch.isclose(g, e, atol=atol, rtol=rtol)
    else:
        bad = got.long() != expected.long()
    where = torch.nonzero(bad)[0].tolist() if bool(bad.any()) else []
    if not where and got.dim() > 0:
        return "wrong values"
    g_val, e_val = got[tuple(where)].item(), expected[tuple(where)].item()
    return f"wrong value at {where}: expected {_num(e_val)}, got {_num(g_val)}"


def _as_number(value: Any) -> float | None:
    """A real number from a Python/NumPy scalar or a one-element tensor, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, Tensor):
        return float(value.item()) if value.numel() == 1 and not value.dtype == torch.bool else None
    if isinstance(value, numbers.Real):
        return float(value)
    if hasattr(value, "item") and getattr(value, "size", None) == 1:  # NumPy scalars and arrays
        try:
            return _as_number(value.item())
        except (TypeError, ValueError):
            return None
    return None


def expect_number(
    got: Any,
    expected: float,
    case: Case,
    *,
    atol: float = 1e-6,
    rtol: float = 1e-5,
    diagnoses: Diagnoses = (),
    picture: Picture | None = None,
) -> None:
    """``got`` must be a real number (a float, or a one-element tensor) close to ``expected``.

    Raises:
        Failure: if it is not a number or not close.
    """
    number = _as_number(got)

    def same(a: Any, b: Any) -> bool:
        a, b = _as_number(a), _as_number(b)
        return a is not None and b is not None and math.isclose(a, b, rel_tol=rtol, abs_tol=atol)

    if number is None:
        raise Failure(
            f"expected a number, got {type(got).__name__}",
            case=case,
            expected=_num(expected),
            got=show(got),
            hint="return a single number, e.g. float(value)",
        )
    if not same(number, expected):
        raise Failure(
            f"expected {_num(expected)}, got {_num(number)}",
            case=case,
            hint=_diagnose(got, diagnoses, same) or case.hint,
            picture=picture,
        )


def expect_int_list(
    got: Any, expected: Sequence[int], case: Case, *, diagnoses: Diagnoses = ()
) -> None:
    """``got`` must be a sequence of integers equal to ``expected``.

    Lists, tuples, ranges, 1-D integer arrays and tensors are accepted.

    Raises:
        Failure: if it is not a sequence of integers or differs.
    """
    values = _int_list(got)
    if values is None:
        raise Failure(
            f"expected a list of ints, got {show(got)}",
            case=case,
            expected=str(list(expected)),
            hint="return a list of Python ints, e.g. list(range(...))",
        )
    if values != list(expected):
        missing = sorted(set(expected) - set(values))
        extra = sorted(set(values) - set(expected))
        parts = [
            f"missing {_short(missing)}" if missing else "",
            f"extra {_short(extra)}" if extra else "",
        ]
        summary = ", ".join(p for p in parts if p) or "same values in a different order"
        raise Failure(
            summary,
            case=case,
            expected=_short(list(expected)),
            got=_short(values),
            hint=_diagnose(values, diagnoses, lambda a, b: list(a) == list(b)) or case.hint,
        )


def _int_list(got: Any) -> list[int] | None:
    """The values of a 1-D sequence of integers (list, tuple, range, tensor, array), else None."""
    if hasattr(got, "ndim") and hasattr(got, "tolist"):  # tensors and NumPy arrays
        if got.ndim != 1:
            return None
        got = got.tolist()  # floats stay floats, and are refused below
    if isinstance(got, (str, bytes, dict)) or not isinstance(got, Iterable):
        return None
    values = list(got)
    if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in values):
        return None
    return [int(v) for v in values]


# --------------------------------------------------------------------------- showing values


def _num(value: float) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    text = f"{float(value):.6g}"
    return text if any(c in text for c in ".einf") else text + ".0"  # 3.0, not 3: a float


def _short(values: list[Any], limit: int = 20) -> str:
    if len(values) <= limit:
        return str(values)
    return f"[{', '.join(map(str, values[:limit]))}, ... ({len(values)} values)]"


def show(value: Any) -> str:
    """A compact, readable rendering of an input or a result (tensors are cut to 8 rows)."""
    if isinstance(value, Tensor):
        return _show_tensor(value)
    if isinstance(value, dict):
        inner = [f"{k!r}: {show(v)}" for k, v in value.items()]
        if any("\n" in line for line in inner):
            return "{\n  " + ",\n  ".join(line.replace("\n", "\n  ") for line in inner) + "\n}"
        return "{" + ", ".join(inner) + "}"
    if (
        isinstance(value, (list, tuple))
        and value
        and all(isinstance(v, (dict, Tensor)) for v in value)
    ):
        shown = [show(v) for v in value[:4]]
        more = [f"... ({len(value)} items)"] if len(value) > 4 else []
        return "[\n  " + ",\n  ".join(s.replace("\n", "\n  ") for s in shown + more) + "\n]"
    text = repr(value)
    return text if len(text) <= 300 else text[:300] + f"... ({len(text)} characters)"


def _show_tensor(t: Tensor) -> str:
    tail = f"  (shape {list(t.shape)}, {_dtype(t)})"
    if t.numel() == 0 or t.dim() > 2:
        return f"tensor(...){tail}" if t.numel() else f"tensor([]){tail}"
    t = t.detach().cpu()
    if t.dim() == 0:
        return f"tensor({_num(t.item())}){tail}"

    def row(values: list[Any]) -> str:
        items = [_num(v) for v in values[:_MAX_COLS]]
        if len(values) > _MAX_COLS:
            items.append(f"... ({len(values)} values)")
        return "[" + ", ".join(items) + "]"

    if t.dim() == 1:
        return f"tensor({row(t.tolist())}){tail}"
    rows = [row(r) for r in t[:_MAX_ROWS].tolist()]
    if t.shape[0] > _MAX_ROWS:
        rows.append(f"... ({t.shape[0]} rows)")
    return "tensor([" + ",\n        ".join(rows) + f"]){tail}"


# --------------------------------------------------------------------------- inputs


def generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed``: every random test case is reproducible."""
    return torch.Generator().manual_seed(seed)


def random_boxes(
    n: int, g: torch.Generator, *, size: float = 100.0, dtype: torch.dtype = torch.float32
) -> Tensor:
    """``[n, 4]`` random xyxy boxes with corners in ``[0, size)`` and sides up to ``size / 2``."""
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * size
    wh = torch.rand(n, 2, generator=g, dtype=torch.float64) * size / 2
    return torch.cat([xy, xy + wh], dim=1).to(dtype)


def grid_boxes(
    n: int, g: torch.Generator, *, grid: int = 8, dtype: torch.dtype = torch.float32
) -> Tensor:
    """``[n, 4]`` boxes with integer corners on a small grid.

    Many pairs touch, coincide or have zero area: the inputs where an IoU without clamping, the
    "+1" convention or a careless division shows.
    """
    a = torch.randint(0, grid, (n, 2), generator=g)
    b = torch.randint(0, grid, (n, 2), generator=g)
    return torch.cat([torch.minimum(a, b), torch.maximum(a, b)], dim=1).to(dtype)


def tied_scores(n: int, g: torch.Generator, levels: int = 5) -> Tensor:
    """``[n]`` float32 scores in ``(0, 1]`` taking only ``levels`` values, so ties are common."""
    return (torch.randint(1, levels + 1, (n,), generator=g) / levels).float()
