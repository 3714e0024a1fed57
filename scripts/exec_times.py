"""Print how long each page of the last book build took to execute (Jupyter Book's own timings).

Usage: python scripts/exec_times.py [BUILD_DIR] [--budget SECONDS] [--record {cpu,gpu}]
(BUILD_DIR defaults to _build; scripts/build_book.sh runs this after every build). A page over the
budget (180 s: a chapter's CPU-profile limit on 2 cores) is marked; the exit status stays 0, since
the timing depends on the machine.

``--record cpu`` (after a full build in the cpu profile) or ``--record gpu`` (after a build on a GPU
machine) also stores the times in the package's ``coursepkg/engine/chapter_times.json``, which the
chapters' openers read (commit it). ``--machine`` describes the machine in words; by default it is
the CPU core count and OMP_NUM_THREADS, or the GPU's name.
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
from datetime import date
from pathlib import Path


def execution_seconds(build_dir: Path) -> dict[str, float]:
    """docname -> seconds, read from the Sphinx environment that myst-nb annotates."""
    with (build_dir / ".doctrees" / "environment.pickle").open("rb") as f:
        env = pickle.load(f)
    times = {}
    for docname, data in getattr(env, "nb_metadata", {}).items():
        exec_data = data.get("exec_data") or {}
        if exec_data.get("runtime") is not None:
            times[docname] = float(exec_data["runtime"])
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("build_dir", nargs="?", default="_build", type=Path)
    parser.add_argument("--budget", type=float, default=180.0)
    parser.add_argument("--record", choices=("cpu", "gpu"), default=None,
                        help="store the times as this device's build in coursepkg's chapter_times.json")
    parser.add_argument("--machine", default=None, help="the machine in words (default: detected)")
    parser.add_argument("--times-file", type=Path, default=None, help="where to record (default: the package's)")
    args = parser.parse_args(argv)
    try:
        times = execution_seconds(args.build_dir)
    except FileNotFoundError:
        print(f"no build found in {args.build_dir}", file=sys.stderr)
        return 0
    if not times:
        print("no page was executed in this build (cached or execution off)")
        return 0
    print(f"==> execution time per page (budget {args.budget:.0f} s)")
    width = max(len(name) for name in times)
    for name, seconds in sorted(times.items()):
        flag = "  OVER BUDGET" if seconds > args.budget else ""
        print(f"    {name:<{width}}  {seconds:7.1f} s{flag}")
    print(f"    {'total':<{width}}  {sum(times.values()):7.1f} s")
    if args.record:
        from coursepkg.engine.chapter_times import record_chapter_times

        machine = args.machine or describe_machine(args.record)
        pages = {name.removeprefix("book/"): seconds for name, seconds in times.items() if name.startswith("book/")}
        path = record_chapter_times(pages, args.record, machine, date.today().isoformat(), args.times_file)
        print(f"==> recorded as the {args.record} build ({machine}) in {path}")
    return 0


def describe_machine(device: str) -> str:
    """The build machine in words: CPU cores and torch threads, or the GPU's name."""
    if device == "gpu":
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("--record gpu needs a CUDA GPU on this machine")
        return f"1 {torch.cuda.get_device_name(0)}"
    threads = os.environ.get("OMP_NUM_THREADS")
    cores = f"{os.cpu_count()} CPU cores"
    return f"{cores}, {threads} torch thread{'s' if threads != '1' else ''}" if threads else cores


if __name__ == "__main__":
    sys.exit(main())
