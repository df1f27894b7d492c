"""Property-based tests: random small CNN DAGs mixing the blocks the pruner supports.

A hypothesis strategy draws a *recipe* (plain tuples and numbers, so a falsifying example prints
as something that can be pasted back into ``@example``); ``build(recipe)`` turns it into an ONNX
model with ``models.Builder``. Blocks:

- ``("conv", cout, k, bias, bn, act)``: Conv(+bias) -> optional BatchNormalization -> activation
  (Relu / Sigmoid / LeakyRelu / Clip with scalar min/max inputs / HardSwish, or none);
- ``("residual", op, k, bn, relu)``: ``op(x, Conv(x) [-> BN])`` with ``op`` Add or Sum, optional Relu;
- ``("concat", c1, c2, act)``: ``Concat(axis=1)`` of two conv branches of the current tensor;
- ``("depthwise", bias)``: Conv(group=C) -> BN -> Relu;
- ``("pool", op, stride)``: MaxPool / AveragePool, 3x3 stride 1 pad 1 or 2x2 stride 2;
- ``("scale",)``: Caffe-style per-channel ``Add(Mul(x, s[C,1,1]), t[C,1,1])``;
- ``("dropout",)``;
- ``("blocker", op, cout, relu)``: ``Conv -> LRN`` (mixes channels) or
  ``Conv -> com.microsoft.Trilu`` (outside the op table); that conv must never be pruned.

The head is a final 1x1 conv or GlobalAveragePool -> Flatten -> Gemm(transB=1); sometimes one
intermediate feature map is also a graph output. Input [1|N, 3, 8, 8], opset 17 or 13, IR 8.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import ir
import models
import pipeline

PROFILE = "onnxpruner-property"
settings.register_profile(PROFILE, max_examples=200, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
MAIN = settings.get_profile(PROFILE)
# the secondary properties reuse the generator; fewer examples keep the file fast
SECONDARY = settings(MAIN, max_examples=60)

ALL_PASSES = ["tag", "trees", "classify", "score", "mask", "slice", "infer-shapes", "validate"]
ACTS_17 = ["Relu", "Sigmoid", "LeakyRelu", "Clip", "HardSwish", None]
ACTS_13 = ["Relu", "Sigmoid", "LeakyRelu", "Clip", None]  # HardSwish is opset 14+
CHANNELS = st.integers(2, 8)


# --------------------------------------------------------------------------- generator
@st.composite
def blocks(draw, opset: int, force_blocker: bool = False) -> list[tuple]:
    acts = ACTS_17 if opset >= 14 else ACTS_13
    n = draw(st.integers(2, 6))
    kinds = ["conv", "conv", "residual", "concat", "depthwise", "pool", "scale", "dropout",
             "conv", "residual", "blocker"]
    out: list[tuple] = []
    h = 8
    for _ in range(n):
        kind = draw(st.sampled_from(kinds))
        if kind == "conv":
            out.append(("conv", draw(CHANNELS), draw(st.sampled_from([1, 3])), draw(st.booleans()),
                        draw(st.booleans()), draw(st.sampled_from(acts))))
        elif kind == "residual":
            out.append(("residual", draw(st.sampled_from(["Add", "Sum"])), draw(st.sampled_from([1, 3])),
                        draw(st.booleans()), draw(st.booleans())))
        elif kind == "concat":
            out.append(("concat", draw(CHANNELS), draw(CHANNELS), draw(st.sampled_from(acts))))
        elif kind == "depthwise":
            out.append(("depthwise", draw(st.booleans())))
        elif kind == "pool":
            stride = draw(st.sampled_from([1, 2])) if h >= 4 else 1
            h = h // 2 if stride == 2 else h
            out.append(("pool", draw(st.sampled_from(["MaxPool", "AveragePool"])), stride))
        elif kind == "scale":
            out.append(("scale",))
        elif kind == "dropout":
            out.append(("dropout",))
        else:
            out.append(_blocker(draw))
    if force_blocker and not any(b[0] == "blocker" for b in out):
        out.insert(draw(st.integers(0, len(out))), _blocker(draw))
    return out


def _blocker(draw) -> tuple:
    return ("blocker", draw(st.sampled_from(["LRN", "Trilu"])), draw(CHANNELS), draw(st.booleans()))


@st.composite
def recipes(draw, force_blocker: bool = False) -> dict:
    opset = draw(st.sampled_from([17, 17, 13]))
    body = draw(blocks(opset, force_blocker))
    head = draw(st.one_of(st.tuples(st.just("conv"), CHANNELS), st.tuples(st.just("gemm"), CHANNELS)))
    extra = draw(st.one_of(st.none(), st.integers(0, len(body) - 1)))
    return {"seed": draw(st.integers(0, 2**16)), "opset": opset,
            "batch": draw(st.sampled_from([1, "N"])), "blocks": body, "head": head,
            "extra_output": extra}


def _act(b: models.Builder, x: str, act: str | None) -> str:
    if act is None:
        return x
    if act == "LeakyRelu":
        return b.op("LeakyRelu", [x], alpha=0.1)
    if act == "Clip":
        return b.op("Clip", [x, b.const(np.array(0, np.float32), "lo"), b.const(np.array(6, np.float32), "hi")])
    return b.op(act, [x])


def build(recipe: dict) -> tuple[onnx.ModelProto, list[tuple[str, str]], dict[str, list]]:
    """The model, the (conv node, blocker op) pairs the recipe placed, and each output's shape."""
    b = models.Builder(recipe["seed"], opset=recipe["opset"], ir_version=8, name="prop")
    batch = recipe["batch"]
    cur = b.input("x", [batch, 3, 8, 8])
    c, h = 3, 8
    feats: list[tuple[str, list]] = []
    blockers: list[tuple[str, str]] = []
    for blk in recipe["blocks"]:
        kind = blk[0]
        if kind == "conv":
            _, cout, k, bias, bn, act = blk
            y = b.conv(cur, c, cout, k=k, bias=bias)
            if bn:
                y = b.bn(y, cout)
            cur, c = _act(b, y, act), cout
        elif kind == "residual":
            _, op, k, bn, relu = blk
            branch = b.conv(cur, c, c, k=k, bias=not bn)
            if bn:
                branch = b.bn(branch, c)
            cur = b.op(op, [cur, branch])
            if relu:
                cur = b.relu(cur)
        elif kind == "concat":
            _, c1, c2, act = blk
            left = _act(b, b.conv(cur, c, c1, k=1), act)
            right = _act(b, b.conv(cur, c, c2, k=3), act)
            cur, c = b.op("Concat", [left, right], axis=1), c1 + c2
        elif kind == "depthwise":
            cur = b.relu(b.bn(b.conv(cur, c, c, k=3, bias=blk[1], group=c), c))
        elif kind == "pool":
            _, op, stride = blk
            if stride == 1:
                cur = b.op(op, [cur], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1])
            else:
                cur, h = b.op(op, [cur], kernel_shape=[2, 2], strides=[2, 2]), h // 2
        elif kind == "scale":
            scaled = b.op("Mul", [cur, b.weight(c, 1, 1, prefix="scale")])
            cur = b.op("Add", [scaled, b.weight(c, 1, 1, prefix="shift")])
        elif kind == "dropout":
            cur = b.op("Dropout", [cur])
        elif kind == "blocker":
            _, op, cout, relu = blk
            y = b.conv(cur, c, cout, k=3)
            conv_node = b.nodes[-1].name
            if op == "LRN":
                cur = b.op("LRN", [y], size=3)
            else:
                cur = b.op("Trilu", [y], domain="com.microsoft")
            blockers.append((conv_node, op))
            if relu:
                cur = b.relu(cur)
            c = cout
        else:  # pragma: no cover - generator and builder out of sync
            raise AssertionError(kind)
        feats.append((cur, [batch, c, h, h]))
    kind, n = recipe["head"]
    if kind == "conv":
        out, out_shape = b.conv(cur, c, n, k=1), [batch, n, h, h]
    else:
        pooled = b.op("Flatten", [b.op("GlobalAveragePool", [cur])], axis=1)
        out, out_shape = b.gemm(pooled, c, n), [batch, n]
    shapes = {out: out_shape}
    if recipe["extra_output"] is not None:
        name, shape = feats[recipe["extra_output"]]
        shapes[name] = shape
    outputs = list(shapes)
    # shapes are given for every output: ONNX inference cannot see through com.microsoft ops
    return b.build(outputs, shapes=shapes), blockers, shapes


def feeds_for(model: onnx.ModelProto, seed: int) -> dict[str, np.ndarray]:
    dims = [d.dim_value if d.HasField("dim_value") else 2
            for d in model.graph.input[0].type.tensor_type.shape.dim]
    rng = np.random.default_rng(seed + 1)
    return {model.graph.input[0].name: rng.standard_normal(dims).astype(np.float32)}


def run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


class VerifyEveryPass(pipeline.Instrument):
    def __init__(self):
        self.seen: list[str] = []

    def after(self, p, graph, ctx, result, seconds):
        problems = ir.verify(graph)
        assert problems == [], f"ir.verify after pass {p.name!r}: {problems}"
        self.seen.append(p.name)


def _check_generated(model, shapes, feeds) -> list[np.ndarray]:
    """The generator itself: the model runs and its outputs have the shapes we declared."""
    outs = run(model, feeds)
    batch = next(iter(feeds.values())).shape[0]
    for got, vi in zip(outs, model.graph.output):
        want = [batch if d == "N" else d for d in shapes[vi.name]]
        assert list(got.shape) == want, (vi.name, got.shape, want)
    return outs


# --------------------------------------------------------------------------- properties
SPECS = st.tuples(st.sampled_from([0.3, 0.5, 0.7]), st.sampled_from(["tree", "node"]),
                  st.sampled_from(["l1", "l2"]))


@settings(MAIN)
@given(recipe=recipes(), spec=SPECS)
@example(recipe={"seed": 0, "opset": 17, "batch": "N", "head": ("gemm", 5), "extra_output": 1,
                 "blocks": [("conv", 8, 3, True, True, "Clip"), ("residual", "Sum", 3, True, True),
                            ("concat", 3, 4, "HardSwish"), ("depthwise", False), ("scale",),
                            ("blocker", "LRN", 6, True)]},
         spec=(0.5, "tree", "l1"))
def test_prune_is_verified_valid_and_keeps_output_shapes(recipe, spec):
    ratio, scope, criterion = spec
    model, blockers, shapes = build(recipe)
    feeds = feeds_for(model, recipe["seed"])
    before = _check_generated(model, shapes, feeds)
    inst = VerifyEveryPass()

    result = pipeline.prune(model, ratio=ratio, scope=scope, criterion=criterion,
                            seed=recipe["seed"], instruments=[inst])
    report = result.report

    # 1. mask-equivalence proven, a valid model, graph outputs unchanged in shape, no growth
    assert report["verified"] is True, report
    onnx.checker.check_model(result.model, full_check=True)
    after = run(result.model, feeds)
    assert [o.name for o in result.model.graph.output] == [o.name for o in model.graph.output]
    assert [a.shape for a in after] == [b.shape for b in before]
    assert report["params_after"] <= report["params_before"]
    assert report["flops_after"] <= report["flops_before"]
    # 2. the IR is sound after each of the eight passes
    assert inst.seen == ALL_PASSES
    # 5. a conv feeding LRN / com.microsoft.Trilu is left alone, and the report says why
    _check_blockers(report, blockers)


def _check_blockers(report: dict, blockers: list[tuple[str, str]]) -> None:
    for conv, op in blockers:
        groups = [g for g in report["groups"] if conv in g["roots"]]
        assert len(groups) == 1, (conv, report["groups"])
        g = groups[0]
        assert g["pruned"] is False, g
        assert g["channels_after"] == g["channels_before"], g
        assert g["reason"] and op in g["reason"], g


@settings(MAIN)
@given(recipe=recipes(force_blocker=True), spec=SPECS)
def test_blockers_leave_their_conv_unpruned(recipe, spec):
    ratio, scope, criterion = spec
    model, blockers, _ = build(recipe)
    assert blockers
    result = pipeline.prune(model, ratio=ratio, scope=scope, criterion=criterion, seed=recipe["seed"])
    assert result.report["verified"] is True
    _check_blockers(result.report, blockers)
    # and the blocked conv's weights are untouched in the pruned model
    got = {t.name: t for t in result.model.graph.initializer}
    nodes = {n.name: n for n in result.model.graph.node}
    for conv, _ in blockers:
        w_name = next(n for n in model.graph.node if n.name == conv).input[1]
        orig = next(t for t in model.graph.initializer if t.name == w_name)
        new_w = got[nodes[conv].input[1]]
        assert list(new_w.dims)[0] == list(orig.dims)[0], (conv, new_w.dims, orig.dims)


@settings(SECONDARY)
@given(recipe=recipes(), scope=st.sampled_from(["tree", "node"]), criterion=st.sampled_from(["l1", "l2"]))
def test_ratio_zero_is_a_no_op(recipe, scope, criterion):
    model, _, shapes = build(recipe)
    feeds = feeds_for(model, recipe["seed"])
    before = _check_generated(model, shapes, feeds)
    result = pipeline.prune(model, ratio=0.0, scope=scope, criterion=criterion, seed=recipe["seed"])
    assert result.report["verified"] is True
    assert result.report["params_after"] == result.report["params_before"]
    assert all(g["channels_after"] == g["channels_before"] for g in result.report["groups"])
    after = run(result.model, feeds)
    assert len(after) == len(before)
    for a, b in zip(after, before):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


@settings(SECONDARY)
@given(recipe=recipes(), spec=SPECS)
def test_pruning_is_deterministic(recipe, spec):
    ratio, scope, criterion = spec
    model, _, _ = build(recipe)
    original = model.SerializeToString()
    first = pipeline.prune(model, ratio=ratio, scope=scope, criterion=criterion, seed=recipe["seed"])
    # a fresh copy of the same model: nothing may depend on object identity or earlier runs
    again = onnx.ModelProto()
    again.ParseFromString(model.SerializeToString())
    second = pipeline.prune(again, ratio=ratio, scope=scope, criterion=criterion, seed=recipe["seed"])
    assert first.model.SerializeToString() == second.model.SerializeToString()
    assert first.report["groups"] == second.report["groups"]
    assert model.SerializeToString() == original  # the input model is never modified
