"""The random-graph fuzzer's long run: N seeded random DAGs (tests/fuzz_graphs.py) pruned at
seeded ratios, every invariant checked; prints the broken ones and a count.

    .venv/bin/python benchmarks/fuzz.py [--n 500] [--start 0]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import fuzz_graphs  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--start", type=int, default=0)
    args = ap.parse_args()
    start, problems = time.perf_counter(), []
    for seed in range(args.start, args.start + args.n):
        found = fuzz_graphs.check(seed)
        problems += found
        for p in found:
            print(p, flush=True)
    print(f"{args.n} random graphs, {len(problems)} broken invariants, {time.perf_counter() - start:.0f} s")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
