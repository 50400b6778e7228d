"""Run the coding benchmark sections and assemble bench/results/coding.json and coding.md."""
from __future__ import annotations

import argparse
import importlib
import json
import time
from dataclasses import asdict

from threadpoolctl import threadpool_limits

from bench.common import RESULTS, write_results

SECTIONS = ["reference", "phase", "images", "csc", "models", "wht"]
PARTS = RESULTS / "coding_parts"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.coding")
    parser.add_argument("--quick", action="store_true", help="small grids (a smoke run)")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=SECTIONS)
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads for ours and the references")
    args = parser.parse_args()
    PARTS.mkdir(parents=True, exist_ok=True)
    for name in args.sections:
        module = importlib.import_module(f"bench.coding.{name}")
        t0 = time.perf_counter()
        with threadpool_limits(args.threads):
            section = module.run(args.quick)
        payload = asdict(section) | {"seconds": time.perf_counter() - t0, "quick": args.quick}
        (PARTS / f"{name}.json").write_text(json.dumps(payload, indent=1, default=float))
        print(f"{name}: {payload['seconds']:.1f}s, {len(section.rows)} rows", flush=True)
    parts = [json.loads((PARTS / f"{n}.json").read_text()) for n in SECTIONS if (PARTS / f"{n}.json").exists()]
    rows = [r for p in parts for r in p["rows"]]
    md = ["# Sparse coding benchmark", "",
          f"BLAS threads: {args.threads}; timings are medians over warm repeats on this machine.", ""]
    md += [p["markdown"] for p in parts]
    extra = {"sections": {p["name"]: {"seconds": p["seconds"], "quick": p["quick"], "plots": p["plots"],
                                      **p["extra"]} for p in parts}}
    write_results("coding", rows, "\n".join(md), extra)


if __name__ == "__main__":
    main()
