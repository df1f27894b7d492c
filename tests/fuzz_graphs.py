"""A random-graph fuzzer, independent of the hypothesis recipes in test_property.py.

``random_model(seed)`` grows a DAG from a pool of live tensors: each step picks an op and inputs
among *any* earlier tensors whose shapes fit (fan-out, long skips, Add/Mul between distant
branches, Concat of unrelated tensors, channel Split/Slice, depthwise and grouped Conv, pooling,
an op outside the table as a barrier), then a head (1x1 conv, or GAP -> Flatten -> Gemm), and
sometimes an intermediate tensor as a second graph output. ``check(seed)`` prunes it at a seeded
ratio and returns the broken invariants (empty list: fine):

- the pipeline returns or raises one of its own one-line errors (nothing else escapes);
- output names and shapes are unchanged and the pruned model runs in ONNX Runtime;
- what is shipped is proven (``verified`` is True) and never has more parameters;
- the same seed and ratio give the same bytes twice.

Used by tests/test_fuzz.py (a few dozen seeds in CI) and benchmarks/fuzz.py (hundreds).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto

import models

H = 8


def random_model(seed: int) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    b = models.Builder(seed, name=f"fuzz{seed}")
    x = b.input("x", [1, 3, H, H])
    live: list[tuple[str, int, int]] = [(x, 3, H)]     # (name, channels, height)

    def pick(pred=lambda t: True):
        cands = [t for t in live if pred(t)]
        return cands[int(rng.integers(len(cands)))] if cands else None

    for _ in range(int(rng.integers(3, 10))):
        kind = rng.choice(["conv", "conv", "conv", "add", "mul", "concat", "split", "slice",
                           "depthwise", "group", "pool", "act", "barrier"])
        t = pick()
        name, c, h = t
        if kind == "conv":
            cout = int(rng.integers(2, 9))
            y = b.conv(name, c, cout, k=int(rng.choice([1, 3])), bias=bool(rng.integers(2)))
            if rng.integers(2):
                y = b.bn(y, cout)
            live.append((b.relu(y) if rng.integers(2) else y, cout, h))
        elif kind in ("add", "mul"):
            other = pick(lambda u: u[1] == c and u[2] == h)
            op = "Add" if kind == "add" else "Mul"
            live.append((b.op(op, [name, other[0]]), c, h))
        elif kind == "concat":
            other = pick(lambda u: u[2] == h)
            live.append((b.op("Concat", [name, other[0]], axis=1), c + other[1], h))
        elif kind == "split" and c >= 2 and c % 2 == 0:
            halves = b.op("Split", [name, b.const(np.array([c // 2, c // 2], np.int64), "split")],
                          n_out=2, axis=1)
            live += [(halves[0], c // 2, h), (halves[1], c // 2, h)]
        elif kind == "slice" and c >= 3:
            start = int(rng.integers(0, c - 1))
            end = int(rng.integers(start + 1, c + 1))
            y = b.op("Slice", [name, b.const(np.array([start], np.int64), "s"),
                               b.const(np.array([end], np.int64), "e"), b.const(np.array([1], np.int64), "a")])
            live.append((y, end - start, h))
        elif kind == "depthwise":
            live.append((b.relu(b.conv(name, c, c, k=3, group=c)), c, h))
        elif kind == "group" and c % 2 == 0:
            cout = 2 * int(rng.integers(1, 5))
            live.append((b.conv(name, c, cout, k=1, group=2), cout, h))
        elif kind == "pool" and h >= 4:
            live.append((b.op(str(rng.choice(["MaxPool", "AveragePool"])), [name], kernel_shape=[2, 2],
                              strides=[2, 2]), c, h // 2))
        elif kind == "act":
            live.append((b.op(str(rng.choice(["Relu", "Sigmoid", "Tanh", "LeakyRelu"])), [name]), c, h))
        elif kind == "barrier":   # outside the op table: nothing may be pruned through it
            live.append((b.op("Trilu", [name], domain="com.microsoft"), c, h))
    name, c, h = live[-1]
    shapes = {}    # given, not inferred: shape inference stops at the barrier
    if rng.integers(2):
        y = b.op("Flatten", [b.op("GlobalAveragePool", [name])], axis=1)
        shapes[b.gemm(y, c, 5)] = [1, 5]
    else:
        shapes[b.conv(name, c, 4, k=1)] = [1, 4, h, h]
    if len(live) > 2 and rng.integers(3) == 0:
        extra, c2, h2 = live[int(rng.integers(1, len(live) - 1))]
        shapes.setdefault(extra, [1, c2, h2, h2])
    return b.build(list(shapes), shapes=shapes)


def _run(model: onnx.ModelProto, feed: dict) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feed)


def _params(model: onnx.ModelProto) -> int:
    return sum(int(np.prod(t.dims)) for t in model.graph.initializer if t.data_type == TensorProto.FLOAT)


def check(seed: int) -> list[str]:
    """The invariants broken by pruning ``random_model(seed)`` at a seeded ratio."""
    import pipeline
    from passes.base import PassError

    import ir

    model = random_model(seed)
    ratio = float(np.random.default_rng(seed + 10**6).choice([0.0, 0.25, 0.5, 0.75]))
    try:
        result = pipeline.prune(model, ratio=ratio, seed=seed)
    except (pipeline.PipelineError, PassError, ir.ModelLoadError, pipeline.SpecError) as exc:
        text = str(exc)
        return [] if "\n" not in text.strip() else [f"seed {seed}: a multi-line error: {text!r}"]
    except Exception as exc:  # anything else escaping is a bug of ours
        return [f"seed {seed}: {type(exc).__name__}: {exc}"]
    problems = []
    feed = {"x": np.random.default_rng(seed).standard_normal((1, 3, H, H)).astype(np.float32)}
    before, after = _run(model, feed), _run(result.model, feed)
    if [o.name for o in model.graph.output] != [o.name for o in result.model.graph.output]:
        problems.append(f"seed {seed}: output names changed")
    if [a.shape for a in before] != [a.shape for a in after]:
        problems.append(f"seed {seed}: output shapes {[a.shape for a in before]} -> {[a.shape for a in after]}")
    if result.report["verified"] is not True:
        problems.append(f"seed {seed}: shipped unproven (verified {result.report['verified']})")
    if _params(result.model) > _params(model):
        problems.append(f"seed {seed}: more parameters after pruning")
    if ratio == 0.0 and not all(np.array_equal(a, b) for a, b in zip(before, after)):
        problems.append(f"seed {seed}: ratio 0 changed the outputs")
    again = pipeline.prune(model, ratio=ratio, seed=seed)
    if again.model.SerializeToString() != result.model.SerializeToString():
        problems.append(f"seed {seed}: two runs gave different bytes")
    return problems
