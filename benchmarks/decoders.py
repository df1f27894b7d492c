"""Decoder language models with a KV cache (issue 16): heads (KV groups), MLP and hidden width at
ratio 0.5, the command behind the README's decoder numbers.

    .venv/bin/python benchmarks/decoders.py                 # llama-gqa qwen2 gpt2, static and dynamic
    .venv/bin/python benchmarks/decoders.py llama-gqa --dynamic
    .venv/bin/python benchmarks/decoders.py llama-gqa qwen2 --gqa queries   # KV heads kept, query heads thinned

Each model is a tiny random-init ``transformers`` config (``tests/decoder_models.py``: hidden 32,
2 layers, 4 query heads, MLP 64 (GPT-2 128), vocab 96), exported with a KV cache into a cache folder
outside the repo, pruned with the default pipeline (given consistent inputs: mask length = past +
sequence), and written. The written file is then loaded in a fresh ONNX Runtime session and fed a
cache of its new shape (with dynamic axes, at other sizes than the proof's too), and compared with
the masked original. Printed: parameters before -> after, the proof, the groups, the new cache
shapes, the largest difference from the masked original in the independent session.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import numpy as np  # noqa: E402
import onnx  # noqa: E402

import decoder_models as dm  # noqa: E402
import pipeline  # noqa: E402
from passes.analyses import SliceRecord  # noqa: E402
from passes.validate import masked_original  # noqa: E402

CACHE = Path(tempfile.gettempdir()) / "onnxpruner-decoders"


class _Record(pipeline.Instrument):
    def after(self, p, graph, ctx, result, seconds):
        if ctx.has(SliceRecord):
            self.record = ctx.get(SliceRecord)


def measure(kind: str, dynamic: bool, ratio: float = 0.5, gqa: str | None = None) -> str:
    import onnxruntime as ort

    CACHE.mkdir(parents=True, exist_ok=True)
    start = time.time()
    path = dm.export(kind, CACHE, cache=True, dynamic=dynamic)
    rec = _Record()
    result = pipeline.prune(path, ratio=ratio, instruments=[rec], gqa=gqa,
                            sample_inputs=dm.feeds(kind, cache=True) if dynamic else None)
    rep = result.report
    out = CACHE / f"{path.stem}.pruned.onnx"
    onnx.save(result.model, str(out))
    groups = [f"{'heads' if g.get('heads') else 'hidden' if g.get('stream') else 'mlp'} "
              f"{g['channels_before']}->{g['channels_after']}" for g in rep["groups"] if g["pruned"]]
    whole = [g.get("reason") for g in rep["groups"] if not g["pruned"]]
    cache_shapes = {e["name"]: e["shape_after"] for e in rep.get("interface", [])}
    masked = masked_original(onnx.load(str(path)), rec.record)
    masked_sess = ort.InferenceSession(masked.SerializeToString(), providers=["CPUExecutionProvider"])
    pruned_sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])  # the file, fresh
    kept = {name: list(idx) for name, _, _, idx in rec.record.interface}
    sizes = [(1, dm.SEQ, dm.PAST)] + ([(3, 5, 6), (1, 1, 9)] if dynamic else [])
    diffs = []
    for batch, seq, past in sizes:
        feeds = dm.feeds(kind, cache=True, batch=batch, seq=seq, past=past, seed=11)
        want = masked_sess.run(None, feeds)
        got = pruned_sess.run(None, {k: (v[:, kept[k]] if k in kept else v) for k, v in feeds.items()})
        diffs.append(f"B{batch} S{seq} P{past}: {float(np.max(np.abs(got[0] - want[0]))):.1e}")
    removed = 1 - rep["params_after"] / rep["params_before"]
    return (f"{kind}{' dynamic' if dynamic else ''}{f' gqa={gqa}' if gqa else ''}: params {rep['params_before']:,} -> {rep['params_after']:,} "
            f"(-{100 * removed:.1f}%) verified {rep['verified']} max abs diff {rep['max_abs_diff']:.1e}\n"
            f"  groups pruned: {', '.join(groups)}; left whole: {whole}\n"
            f"  past_key_0 {cache_shapes.get('past_key_0')}, present_key_0 {cache_shapes.get('present_key_0')}\n"
            f"  fresh ORT session on {out.name}, logits vs masked original: {'; '.join(diffs)} "
            f"({time.time() - start:.0f} s)")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("kinds", nargs="*", default=["llama-gqa", "qwen2", "gpt2"])
    ap.add_argument("--dynamic", action="store_true", help="dynamic axes only (default: both)")
    ap.add_argument("--static", action="store_true", help="static axes only (default: both)")
    ap.add_argument("--gqa", choices=("groups", "queries"), help="GQA mode (default: groups, KV groups whole)")
    args = ap.parse_args(argv)
    modes = [True] if args.dynamic else [False] if args.static else [False, True]
    for kind in args.kinds:
        for dynamic in modes:
            print(measure(kind, dynamic, gqa=args.gqa), flush=True)


if __name__ == "__main__":
    main()
