"""The part of the grader that runs inside the student's kernel: it only calls functions.

After the notebook has run, the grader appends one cell that executes *this file's source text*
(read by the grader from its own installed package, never imported by name in the kernel, whose
``sys.path`` starts with the notebook's folder) and calls :func:`serve`. For each question,
``serve`` forks a child that connects to the grader's test process (:mod:`coursepkg.grading.judge`)
over a Unix socket and answers its requests: "call your function on these arguments". It sends
back only *data* (the return value, the arguments after the call, what the function printed, or
the exception it raised), encoded as plain values and tensors that the judge decodes with
``torch.load(weights_only=True)``.

The tests, the counting of passes and failures and the score all live in the judge, a process no
student code ever runs in. Whatever the notebook does to its kernel (patch ``json``, ``pytest``,
``open``, ``sys.exit``, shadow ``coursepkg``, print fake results) can only change the values its
functions return, and those are what the tests check.

This file must stay self-contained: the standard library and torch only.

Chapter: book/exercises
"""

from __future__ import annotations

import builtins
import io
import linecache
import os
import socket
import struct
import sys
import sysconfig
from typing import Any

import torch

GRADING_ENV = "COURSEPKG_GRADING"
"""Set by the grader in the kernels it starts: ``check`` then does nothing (the grader runs the
tests itself, after the whole notebook has run)."""

HARNESS_FILENAME = "<coursepkg grader harness>"
"""The file name the harness source is compiled under in the kernel (left out of tracebacks)."""

MAX_FRAME = 1 << 28  # bytes; a larger message is a protocol error
_MAX_DEPTH = 20  # nesting of returned containers encoded before giving up on a value

# --------------------------------------------------------------------------- the wire format
# A message is an 8-byte length and the bytes of ``torch.save(value)``, where ``value`` holds
# only None, bool, int, float, str, tensors, lists and tuples. Python containers and other types
# are encoded as tagged tuples ``(tag, ...)``; a bare tuple in an encoded value is always a tag.


def send(sock: socket.socket, value: Any) -> None:
    """Send one message."""
    buffer = io.BytesIO()
    torch.save(value, buffer)
    data = buffer.getvalue()
    sock.sendall(struct.pack("!Q", len(data)) + data)


def receive(sock: socket.socket) -> Any:
    """Receive one message; None when the other side closed the connection.

    Raises:
        ConnectionError: on a malformed message.
    """
    head = _read_exactly(sock, 8)
    if head is None:
        return None
    (size,) = struct.unpack("!Q", head)
    if size > MAX_FRAME:
        raise ConnectionError(f"message of {size} bytes is too large")
    data = _read_exactly(sock, size)
    if data is None:
        raise ConnectionError("connection closed in the middle of a message")
    try:
        return torch.load(io.BytesIO(data), weights_only=True)
    except Exception as error:  # whatever the bytes were, they are not a value of ours
        raise ConnectionError(f"unreadable message: {type(error).__name__}") from None


def _read_exactly(sock: socket.socket, size: int) -> bytes | None:
    chunks, left = [], size
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def encode(value: Any, depth: int = 0) -> Any:
    """``value`` as plain data for :func:`send` (see :func:`decode`)."""
    if value is None or isinstance(value, (bool, str, bytes)):
        return value
    if type(value) in (int, float):
        return value
    if depth > _MAX_DEPTH:
        return ("opaque", type(value).__name__, "(nested too deeply)")
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().as_subclass(torch.Tensor)
        return ("tensor", tensor.clone() if tensor.is_contiguous() else tensor.contiguous())
    if isinstance(value, torch.Generator):
        return ("generator", value.get_state())
    if isinstance(value, (int, float)):  # subclasses (numpy scalars are handled below)
        kind = "int" if isinstance(value, int) else "float"
        return ("number", kind, type(value).__name__, int(value) if kind == "int" else float(value))
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(value, numpy.ndarray) and value.dtype != object:
        return ("ndarray", torch.from_numpy(value.copy()))
    if numpy is not None and isinstance(value, numpy.generic) and value.dtype != object:
        return ("numpy scalar", value.dtype.str, value.item())
    if isinstance(value, range):
        return ("range", value.start, value.stop, value.step)
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        items = [encode(v, depth + 1) for v in value]
        return ("namedtuple", type(value).__name__, [str(f) for f in value._fields], items)
    if isinstance(value, (list, tuple)):
        tag = "tuple" if isinstance(value, tuple) else "list"
        return (tag, [encode(v, depth + 1) for v in value])
    if isinstance(value, dict):
        return ("dict", [(encode(k, depth + 1), encode(v, depth + 1)) for k, v in value.items()])
    try:
        text = repr(value)[:200]
    except Exception:
        text = "?"
    return ("opaque", type(value).__name__, text)


def decode(value: Any) -> Any:
    """The value that :func:`encode` encoded; types the grader does not know come back as
    stand-ins that only carry their type's name and repr."""
    if not isinstance(value, tuple):
        return value
    tag, *rest = value
    if tag == "tensor":
        return rest[0]
    if tag == "generator":
        return torch.Generator().set_state(rest[0])
    if tag == "number":
        kind, name, number = rest
        return int(number) if kind == "int" else float(number)
    if tag == "ndarray":
        return rest[0].numpy()
    if tag == "numpy scalar":
        import numpy

        return numpy.dtype(rest[0]).type(rest[1])
    if tag == "range":
        return range(*rest)
    if tag == "namedtuple":
        import collections

        name, fields, items = rest
        return collections.namedtuple(name, fields, rename=True)(*map(decode, items))
    if tag == "list":
        return [decode(v) for v in rest[0]]
    if tag == "tuple":
        return tuple(decode(v) for v in rest[0])
    if tag == "dict":
        return {decode(k): decode(v) for k, v in rest[0]}
    name, text = str(rest[0]), str(rest[1])
    return type(name, (Opaque,), {"__repr__": lambda self: text})()


class Opaque:
    """Stands in for a returned object of a type the grader does not decode (shown by its repr)."""


# --------------------------------------------------------------------------- in the kernel


def serve(
    namespace: dict[str, Any],
    address: str,
    token: str,
    names: list[str],
    *,
    output_limit: int,
    library_dirs: list[str],
) -> None:
    """Answer the judge's calls to the notebook's functions ``names``, one forked child each.

    Args:
        namespace: the notebook's variables.
        address: the judge's Unix socket.
        token: proves to the judge that the connection comes from this cell.
        names: the questions, in order.
        output_limit: characters of printed output kept per question.
        library_dirs: folders whose code is not the student's (left out of "raised at" lines).
    """
    for name in names:
        function = namespace.get(name)
        pid = os.fork() if hasattr(os, "fork") else -1
        if pid > 0:
            os.waitpid(pid, 0)
            continue
        try:
            if pid == 0:
                os.setpgid(0, 0)
            _serve_question(function, name, address, token, output_limit, tuple(library_dirs))
        except BaseException:  # noqa: BLE001 -- the child reports nothing: the judge sees EOF
            pass
        finally:
            if pid == 0:
                os._exit(0)


class _Capture(io.TextIOBase):
    """The child's ``sys.stdout``/``sys.stderr``: keeps ``limit`` characters, counts the rest."""

    def __init__(self, limit: int) -> None:
        self.limit, self.kept, self.dropped = limit, [], 0
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        text = str(text)
        room = max(self.limit - self.size, 0)
        self.kept.append(text[:room])
        self.size += min(room, len(text))
        self.dropped += max(len(text) - room, 0)
        return len(text)

    def state(self) -> tuple[str, int]:
        return "".join(self.kept), self.dropped


def _serve_question(
    function: Any, name: str, address: str, token: str, output_limit: int, libraries: tuple
) -> None:
    capture = _Capture(output_limit)
    if hasattr(os, "fork"):  # in the child: the kernel's streams belong to its I/O thread
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.close(devnull)
    sys.stdin, sys.stdout, sys.stderr = io.StringIO(), capture, capture
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(address)
    send(sock, (token, name, _describe(function)))
    while True:
        request = receive(sock)
        if request is None:
            return
        args = [decode(a) for a in request]
        try:
            got = function(*args)
        except BaseException as error:  # noqa: BLE001 -- every exception is the student's answer
            mro = [c.__name__ for c in type(error).__mro__]
            try:
                message = str(error)[:2000]
            except BaseException:  # noqa: BLE001
                message = "(unprintable message)"
            reply: tuple = ("raised", mro, message, _where(error, libraries), *capture.state())
        else:
            aliases = _aliases(got, args)
            reply = ("returned", encode(got), [encode(a) for a in args], aliases, *capture.state())
        send(sock, reply)


def _aliases(got: Any, args: list[Any]) -> list[int]:
    """The positions of the tensor arguments whose memory the returned tensor shares."""
    if not isinstance(got, torch.Tensor) or not got.numel():
        return []
    try:
        ptr = got.untyped_storage().data_ptr()
        return [
            i
            for i, a in enumerate(args)
            if isinstance(a, torch.Tensor) and a.numel() and a.untyped_storage().data_ptr() == ptr
        ]
    except Exception:
        return []


def _describe(function: Any) -> tuple[str, str, str]:
    """(what it is, its type's name, its module): "missing", "not callable" or "callable"."""
    if function is None:
        return ("missing", "NoneType", "")
    kind = "callable" if callable(function) else "not callable"
    return (kind, type(function).__name__, str(getattr(function, "__module__", None) or ""))


def _where(error: BaseException, libraries: tuple[str, ...]) -> str:
    """The deepest line of the student's own code in the traceback, e.g. ``line 7 of f(): x = 1``."""
    tb, found = error.__traceback__, None
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename != HARNESS_FILENAME and not os.path.abspath(filename).startswith(libraries):
            found = tb
        tb = tb.tb_next
    if found is None:
        return ""
    code = found.tb_frame.f_code
    text = linecache.getline(code.co_filename, found.tb_lineno).strip()
    where = f"line {found.tb_lineno} of {code.co_name}()"
    return f"raised at {where}: {text}" if text else f"raised at {where}"


def library_dirs() -> list[str]:
    """Python's own library folders and coursepkg's: code there is not the student's."""
    paths = sysconfig.get_paths()
    dirs = {paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib") if key in paths}
    dirs.add(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # editable installs
    return sorted(dirs)


def rebuild_exception(mro: list[str], message: str, where: str) -> Exception:
    """A stand-in for the exception the student's function raised, for the judge's tests.

    It has the student's exception's class name and derives from the nearest built-in exception
    class in its MRO (so ``except ValueError`` matches a student's ``class MyError(ValueError)``);
    ``SystemExit``, ``KeyboardInterrupt`` and other non-``Exception`` classes become plain
    ``Exception`` subclasses, so that they are reported like any other error.
    """
    base: type[Exception] = Exception
    for name in mro:
        candidate = getattr(builtins, name, None)
        if isinstance(candidate, type) and issubclass(candidate, BaseException):
            if issubclass(candidate, Exception):
                base = candidate
            break
    name = str(mro[0]) if mro else "Exception"
    cls = type(name, (base,), {"__init__": _init, "__str__": lambda self: self.args[0]})
    error = cls(message)
    error.grader_where = where  # type: ignore[attr-defined]
    return error


def _init(self: BaseException, message: str) -> None:
    BaseException.__init__(self, message)


HARNESS_CELL = """\
_grader_namespace = {{"__name__": "coursepkg_grader_harness"}}
exec(compile({source!r}, {filename!r}, "exec"), _grader_namespace)
_grader_namespace["serve"](
    globals(), {address!r}, {token!r}, {names!r},
    output_limit={output_limit!r}, library_dirs={library_dirs!r},
)
del _grader_namespace
"""
"""The cell the grader appends: this file's source, then :func:`serve` on the notebook's
variables; formatted by :func:`harness_cell`."""


def harness_cell(address: str, token: str, names: list[str], output_limit: int) -> str:
    """The source of the cell that serves the notebook's functions ``names`` to the judge."""
    with open(os.path.abspath(__file__), encoding="utf-8") as f:
        source = f.read()
    return HARNESS_CELL.format(
        source=source,
        filename=HARNESS_FILENAME,
        address=address,
        token=token,
        names=list(names),
        output_limit=int(output_limit),
        library_dirs=library_dirs(),
    )
