"""The same batch plan serially, with 2 local processes, and on a local Ray: speed-ups side by
side, and whether all three summaries agree (they must: each job is ``pipeline.prune`` alone).

    .venv/bin/python benchmarks/batch.py [--jobs 2]

The plan: 10 torchvision classification models (random init, exported once into the cache
outside the repo) × ratios 0.3 and 0.5 = 20 jobs, each verified by the mask-equivalence check.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from workflows import batch  # noqa: E402

CACHE = Path(os.environ.get("ONNXPRUNER_CACHE", Path.home() / ".cache" / "onnxpruner"))
MODELS = ["resnet18", "resnet50", "squeezenet1_1", "mobilenet_v2", "densenet121", "googlenet",
          "mnasnet0_5", "efficientnet_b0", "shufflenet_v2_x0_5", "regnet_x_400mf"]


def exported() -> list[str]:
    from torchvision_models import export

    CACHE.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [str(export(m, CACHE, size=64)) for m in MODELS]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    paths = exported()
    jobs = batch.make_jobs(paths, [{"name": "r30", "ratio": 0.3}, {"name": "r50", "ratio": 0.5}])
    runs = {}
    with tempfile.TemporaryDirectory() as tmp, open(os.devnull, "w") as quiet:
        for label, executor, n in [("serial (--jobs 1)", "local", 1),
                                   (f"local processes (--jobs {args.jobs})", "local", args.jobs),
                                   (f"local Ray (--executor ray --jobs {args.jobs})", "ray", args.jobs)]:
            start = time.perf_counter()
            result = batch.run_batch(jobs, Path(tmp) / executor / str(n), executor, n, stream=quiet)
            runs[label] = (time.perf_counter() - start, result)
    base_seconds, base = runs["serial (--jobs 1)"]
    print(f"plan: {len(MODELS)} torchvision models × 2 ratios = {len(jobs)} jobs "
          f"(each pruned, verified, written with its report)")
    print(f"{'executor':<40} {'seconds':>8} {'speed-up':>9}  summary == serial")
    for label, (seconds, result) in runs.items():
        same = batch.comparable(result.rows) == batch.comparable(base.rows)
        print(f"{label:<40} {seconds:8.1f} {base_seconds / seconds:8.2f}x  {same}")
    failed = [r for r in base.rows if r["error"]]
    verified = sum(1 for r in base.rows if r.get("verified") is True)
    print(f"jobs verified: {verified}/{len(jobs)}; failed: {len(failed)}")
    for r in failed:
        print(f"  {r['model']}/{r['variant']}: {r['error']}")
    print(f"(wall-clock seconds include process start-up; Ray's include starting the local instance; "
          f"{os.cpu_count()} CPU cores here)")


if __name__ == "__main__":
    main()
