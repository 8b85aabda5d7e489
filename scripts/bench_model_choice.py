"""Share of `model=auto`'s choice and the self-check in CPU rife chunks (issue 20, item 2).

    PYTHONPATH=$PWD .venv/bin/python scripts/bench_model_choice.py [--target-s 60] [--json out.json]

Prints one line per chunk and a Markdown table (see `services/gpu_interp/bench_budget.py`).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from services.gpu_interp.bench_budget import TABLE_HEADER, measure, render_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target-s", type=float, default=60.0, help="engine seconds per chunk (splitter)")
    parser.add_argument("--runs", type=int, default=2, help="chunks per size (the first meets a new size)")
    parser.add_argument(
        "--frames",
        default="",
        help="source frames per size instead of the splitter's rule, e.g. 320x240=97,960x540=69",
    )
    parser.add_argument("--json", help="write the rows here too")
    args = parser.parse_args()
    frames = {}
    for item in filter(None, args.frames.split(",")):
        size, count = item.split("=")
        width, height = (int(v) for v in size.split("x"))
        frames[(width, height)] = int(count)
    rows = measure(target_s=args.target_s, runs=args.runs, frames=frames)
    print("\n".join([*TABLE_HEADER, *render_rows(rows)]))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump([asdict(r) | {"share": r.share} for r in rows], handle, indent=1)


if __name__ == "__main__":
    main()
