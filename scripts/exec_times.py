"""Print how long each page of the last book build took to execute (Jupyter Book's own timings).

Usage: python scripts/exec_times.py [BUILD_DIR] [--budget SECONDS]
(BUILD_DIR defaults to _build; scripts/build_book.sh runs this after every build). A page over the
budget (180 s: a chapter's CPU-profile limit on 2 cores) is marked; the exit status stays 0, since
the timing depends on the machine.
"""

from __future__ import annotations

import argparse
import pickle
import sys
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
