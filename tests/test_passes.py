"""Each pass on the hand-built pattern models: golden dumps, hand-computed scores (paper
Eq. 1-4), mask options, shared initializers, op-table semantics, and the equivalence proof."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

import ir
import models
import pipeline
from passes import op_rules
from passes.analyses import Masks, Patterns, Scores, Tags, Trees, render
from passes.base import Pass, PassContext, PassResult
from passes.score import filter_norms
from passes.validate import run_model


class Recorder(pipeline.Instrument):
    """Text of every pass's result: its analyses, or the IR for transforms."""

    def __init__(self):
        self.sections: list[str] = []

    def after(self, p, graph, ctx, result, seconds):
        body = "".join(render(ctx.get(k)) for k in p.provides if ctx.has(k) and k.__name__ != "SliceRecord")
        if p.name in ("slice", "infer-shapes"):
            body += ir.dump(graph)
        if p.name == "validate":
            body += f"verified {ctx.report['verified']}\n"
        self.sections.append(f"== {p.name} (changed={result.changed})\n{body}")


@pytest.mark.parametrize("name", sorted(models.PATTERNS))
def test_every_pass_matches_golden(name, golden):
    rec = Recorder()
    result = pipeline.prune(models.PATTERNS[name](), ratio=0.5, instruments=[rec])
    assert result.report["verified"] is True
    golden(f"passes_{name}", "".join(rec.sections))


@pytest.mark.parametrize("name", sorted(models.PATTERNS))
@pytest.mark.parametrize("scope", ["tree", "node"])
@pytest.mark.parametrize("criterion", ["l1", "l2"])
def test_pattern_models_prune_and_stay_equivalent(name, scope, criterion):
    model = models.PATTERNS[name]()
    result = pipeline.prune(model, ratio=0.5, scope=scope, criterion=criterion)
    assert result.report["verified"] is True
    assert result.report["max_abs_diff"] < 1e-4
    assert result.report["params_after"] < result.report["params_before"]
    onnx.checker.check_model(result.model, full_check=True)


def analyses(model, spec="tag,trees,classify,score{criterion=l1 scope=tree},mask{ratio=0.5}"):
    graph = ir.lower(model)
    ctx = pipeline.Pipeline.parse(spec).run(graph, PassContext(original=model))
    return graph, ctx


def inits(model) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def conv_weight(graph, node):
    return graph.const_array(graph.inputs_of(node)[1])


# ------------------------------------------------------------------ patterns and groups
def test_patterns_of_the_four_structures():
    expect = {"chain": "one-to-one", "one_to_many": "one-to-many",
              "many_to_one": "many-to-one", "many_to_many": "many-to-many"}
    for name, pattern in expect.items():
        _, ctx = analyses(models.PATTERNS[name]())
        assert ctx.get(Patterns).groups[0].pattern == pattern, name


def test_residual_add_joins_every_root_into_one_group():
    graph, ctx = analyses(models.many_to_many())
    group = ctx.get(Patterns).groups[0]
    assert len(group.roots) == 3 and group.channels == 8
    # each channel of the group is one id from each root
    assert all(len(m) == 3 for m in group.members)


def test_graph_output_and_barriers_are_never_pruned():
    for factory, blocker in [(models.graph_output, "reaches graph output"),
                             (models.barrier, "com.microsoft.Trilu"), (models.barrier, "LRN")]:
        _, ctx = analyses(factory())
        reasons = [g.blocked for g in ctx.get(Patterns).groups if g.blocked]
        assert any(blocker in r for r in reasons), (factory.__name__, reasons)
        masks = ctx.get(Masks)
        for g in ctx.get(Patterns).groups:
            if g.blocked:
                assert g.id not in masks.kept


def test_unknown_op_is_a_barrier_even_when_elementwise():
    assert op_rules.role_of("Gelu", "com.microsoft") == "barrier"  # the table's; passes/contrib.py rewrites it
    assert op_rules.role_of("Trilu", "com.microsoft") == "barrier"
    assert op_rules.role_of("NoSuchOp") == "barrier"
    assert op_rules.role_of("Relu") == "next-no-process"
    _, ctx = analyses(models.barrier())
    tag = [t for t in ctx.get(Tags).by_node.values() if t.op_type == "Trilu"][0]
    assert tag.role == "barrier" and "not in the node attribute library" in tag.reason


def test_concat_carries_offsets():
    graph, ctx = analyses(models.concat())
    trees = ctx.get(Trees)
    leaf = [lf for lf in trees.leaves if lf.node == "Conv20"][0]
    a, c = trees.roots[0], trees.roots[1]
    # 6 channels of a, then 3 untracked MaxPool channels, then 4 channels of c
    assert leaf.ids.tolist() == list(range(a.first_id, a.first_id + 6)) + [-1] * 3 + \
        list(range(c.first_id, c.first_id + 4))


def test_flatten_expands_each_channel_into_its_columns():
    graph, ctx = analyses(models.flatten_gemm())
    leaf = [lf for lf in ctx.get(Trees).leaves if lf.node == "Gemm14"][0]
    assert len(leaf.ids) == 6 * 4 * 4
    assert leaf.ids.tolist() == np.repeat(np.arange(6), 16).tolist()


# ------------------------------------------------------------------ scores: paper Eq. 1-4
def tree_score_by_hand(graph, roots, leaves, channel_positions, criterion="l1"):
    """Σ_roots n(W_root^i) × Σ_leaves Σ_k n(W_leaf^{k,i}), written out with loops."""
    out = []
    for i in range(len(next(iter(channel_positions.values())))):
        root_sum = sum(_norm(conv_weight(graph, r)[i], criterion) for r in roots)
        leaf_sum = 0.0
        for node, in_axis in leaves:
            w = conv_weight(graph, node)
            cols = channel_positions[node][i]
            for k in range(w.shape[0] if in_axis == 1 else w.shape[1]):
                part = w[k][cols] if in_axis == 1 else w[:, k][cols]
                leaf_sum += _norm(part, criterion)
        out.append(root_sum * leaf_sum)
    return np.array(out)


def _norm(a, criterion):
    a = np.asarray(a, dtype=np.float64)
    return np.abs(a).sum() if criterion == "l1" else np.sqrt(np.square(a).sum())


def test_score_docstring_example():
    b = models.Builder(0, name="tiny")
    x = b.input("x", [1, 1, 4, 4])
    a = b.op("Conv", [x, b.const(np.array([1, 3], np.float32).reshape(2, 1, 1, 1))], kernel_shape=[1, 1])
    y = b.op("Conv", [a, b.const(np.array([2, 1], np.float32).reshape(1, 2, 1, 1))], kernel_shape=[1, 1])
    model = b.build([y])
    _, ctx = analyses(model, "tag,trees,classify,score{criterion=l1 scope=tree}")
    assert ctx.get(Scores).by_group[0].tolist() == [2.0, 3.0]
    _, ctx = analyses(model, "tag,trees,classify,score{criterion=l1 scope=node}")
    assert ctx.get(Scores).by_group[0].tolist() == [1.0, 3.0]


@pytest.mark.parametrize("criterion", ["l1", "l2"])
def test_eq1_one_to_one(criterion):
    graph, ctx = analyses(models.chain(), f"tag,trees,classify,score{{criterion={criterion} scope=tree}}")
    positions = {"Conv16": [[i] for i in range(8)]}
    want = tree_score_by_hand(graph, ["Conv4"], [("Conv16", 1)], positions, criterion)
    np.testing.assert_allclose(ctx.get(Scores).by_group[0], want, rtol=1e-6)


@pytest.mark.parametrize("criterion", ["l1", "l2"])
def test_eq2_one_to_many(criterion):
    graph, ctx = analyses(models.one_to_many(), f"tag,trees,classify,score{{criterion={criterion} scope=tree}}")
    positions = {"Conv10": [[i] for i in range(8)], "Conv16": [[i] for i in range(8)]}
    want = tree_score_by_hand(graph, ["Conv4"], [("Conv10", 1), ("Conv16", 1)], positions, criterion)
    np.testing.assert_allclose(ctx.get(Scores).by_group[0], want, rtol=1e-6)


@pytest.mark.parametrize("criterion", ["l1", "l2"])
def test_eq3_many_to_one(criterion):
    graph, ctx = analyses(models.many_to_one(), f"tag,trees,classify,score{{criterion={criterion} scope=tree}}")
    positions = {"Conv21": [[i] for i in range(8)]}
    want = tree_score_by_hand(graph, ["Conv3", "Conv13"], [("Conv21", 1)], positions, criterion)
    np.testing.assert_allclose(ctx.get(Scores).by_group[0], want, rtol=1e-6)


def test_eq4_many_to_many_with_a_gemm_leaf():
    graph, ctx = analyses(models.many_to_many(), "tag,trees,classify,score{criterion=l2 scope=tree}")
    group = ctx.get(Patterns).groups[0]
    roots = list(group.roots)
    conv_leaves = [(n, 1) for n in group.leaves if n.startswith("Conv")]
    positions = {n: [[i] for i in range(8)] for n, _ in conv_leaves}
    partial = tree_score_by_hand(graph, roots, conv_leaves, positions, "l2")
    root_term = sum(filter_norms(conv_weight(graph, r), 0, "l2") for r in roots)
    gemm = conv_weight(graph, "Gemm46")            # [5, 8], transB: input channels on axis 1
    gemm_term = np.sqrt(np.square(gemm.astype(np.float64))).sum(axis=0)
    want = partial + root_term * gemm_term
    np.testing.assert_allclose(ctx.get(Scores).by_group[0], want, rtol=1e-6)


def test_flatten_gemm_leaf_scores_sum_over_each_channels_columns():
    graph, ctx = analyses(models.flatten_gemm(), "tag,trees,classify,score{criterion=l2 scope=tree}")
    w = conv_weight(graph, "Gemm14").astype(np.float64)   # [16, 96]
    leaf = np.array([np.sqrt(np.square(w[:, c * 16:(c + 1) * 16]).sum(axis=1)).sum() for c in range(6)])
    root = filter_norms(conv_weight(graph, "Conv4"), 0, "l2")
    np.testing.assert_allclose(ctx.get(Scores).by_group[0], root * leaf, rtol=1e-6)


def test_tree_and_node_scope_can_choose_different_channels():
    _, tree = analyses(models.chain(), "tag,trees,classify,score{criterion=l1 scope=tree},mask{ratio=0.5}")
    _, node = analyses(models.chain(), "tag,trees,classify,score{criterion=l1 scope=node},mask{ratio=0.5}")
    assert tree.get(Masks).kept != node.get(Masks).kept


# ------------------------------------------------------------------ mask options
def kept_counts(spec, model=None):
    _, ctx = analyses(model or models.many_to_many(), "tag,trees,classify,score," + spec)
    return {g: len(k) for g, k in ctx.get(Masks).kept.items()}


def test_mask_ratio_round_to_min_keep():
    assert kept_counts("mask{ratio=0.5}") == {0: 4, 1: 4, 2: 4}
    assert kept_counts("mask{ratio=0.7}") == {0: 3, 1: 3, 2: 3}        # floor(0.7*8)=5 removed
    assert kept_counts("mask{ratio=0.7 round-to=4}") == {0: 4, 1: 4, 2: 4}
    assert kept_counts("mask{ratio=0.9 min-keep=2}") == {0: 2, 1: 2, 2: 2}
    assert kept_counts("mask{ratio=0}") == {0: 8, 1: 8, 2: 8}


def test_mask_per_node_ratios_and_ignore():
    assert kept_counts("mask{ratio=0.5 ratios=Conv10:0.25}") == {0: 4, 1: 6, 2: 4}
    # ignore keeps a node's output channels; its inputs may still shrink (Conv24 reads group 0)
    counts = kept_counts("mask{ratio=0.5 ignore=Conv24}")
    assert 2 not in counts and counts[0] == 4 and counts[1] == 4
    _, ctx = analyses(models.many_to_many(), "tag,trees,classify,score,mask{ratio=0.5 ignore=nope}")
    assert any("nope" in n for n in ctx.get(Masks).notes)


def _wide_chain(width: int):
    b = models.Builder(5, name="wide")
    y = b.relu(b.conv(b.input("x", [1, 3, 4, 4]), 3, width))
    return b.build([b.conv(y, width, 2, k=1)])


def test_round_to_default_rounds_only_wide_groups():
    from passes.mask import apply_round_to, round_for

    assert [round_for(n, -1) for n in (12, 32, 33, 64)] == [1, 1, 8, 8]
    assert apply_round_to(64, 44, -1) == 40           # 20 kept -> 24
    assert apply_round_to(64, 44, 1) == 44            # round-to=1: off
    assert apply_round_to(20, 10, 8) == 4             # an explicit value rounds every group
    assert kept_counts("mask{ratio=0.7}", _wide_chain(64)) == {0: 24}
    assert kept_counts("mask{ratio=0.7 round-to=1}", _wide_chain(64)) == {0: 20}
    assert kept_counts("mask{ratio=0.7}", _wide_chain(30)) == {0: 9}  # narrow: as the ratio says


@pytest.mark.parametrize("bad", ["mask{ratio=1}", "mask{ratio=-0.1}", "mask{round-to=0}",
                                 "mask{round-to=-2}", "mask{ratios=a:1.5}", "mask{min-keep=0}"])
def test_mask_rejects_bad_options(bad):
    with pytest.raises(pipeline.SpecError):
        pipeline.Pipeline.parse("tag,trees,classify,score," + bad)


# ------------------------------------------------------------------ shared initializers
def shared_model():
    """Two conv+BN branches whose BNs share one scale through Identity (as PyTorch exports
    deduplicated fresh BatchNorm weights), and two convs sharing one bias initializer."""
    b = models.Builder(11, name="shared")
    x = b.input("x", [1, 3, 8, 8])
    scale = b.const(np.ones(8, np.float32), "shared_scale")
    bias = b.const(np.linspace(-1, 1, 8).astype(np.float32), "shared_bias")
    ident = b.op("Identity", [scale])
    outs = []
    for s in (scale, ident):
        c = b.op("Conv", [x, b.weight(8, 3, 3, 3), bias], kernel_shape=[3, 3], pads=[1] * 4)
        bn = b.op("BatchNormalization", [c, s, b.weight(8, prefix="beta"),
                                         b.const(np.zeros(8, np.float32), "mean"),
                                         b.const(np.ones(8, np.float32), "var")])
        outs.append(b.op("Conv", [b.relu(bn), b.weight(4, 8, 1, 1)], kernel_shape=[1, 1]))
    return b.build([b.op("Add", outs)])


def test_shared_initializers_are_unshared_before_slicing():
    model = shared_model()
    result = pipeline.prune(model, ratio=0.5)
    assert result.report["verified"] is True
    pruned = result.model
    onnx.checker.check_model(pruned, full_check=True)
    shapes = {t.name: tuple(t.dims) for t in pruned.graph.initializer}
    # every BN scale and conv bias in the pruned model has 4 channels: each consumer got its own
    bn_scales = [n.input[1] for n in pruned.graph.node if n.op_type == "BatchNormalization"]
    conv_bias = [n.input[2] for n in pruned.graph.node if n.op_type == "Conv" and len(n.input) > 2]
    assert len(set(bn_scales)) == 2 and len(set(conv_bias)) == 2
    assert all(shapes[n] == (4,) for n in bn_scales + conv_bias)
    assert not any(n.op_type == "Identity" for n in pruned.graph.node)
    # the input model was not modified
    scale = [t.name for t in model.graph.initializer if t.name.startswith("shared_scale")][0]
    assert inits(model)[scale].shape == (8,)


def test_untouched_initializers_stay_bit_identical():
    model = models.barrier()
    result = pipeline.prune(model, ratio=0.5)
    before, after = inits(model), inits(result.model)
    graph, ctx = analyses(model)
    pruned_nodes = {n for g in ctx.get(Patterns).groups if not g.blocked for n in g.roots + g.leaves}
    for node in graph.nodes():
        if node.name in pruned_nodes:
            continue
        for v in graph.inputs_of(node):
            if v is not None and v.name in before and v.name in after:
                assert before[v.name].tobytes() == after[v.name].tobytes(), v.name


# ------------------------------------------------------------------ op semantics
def one_op_model(op, attrs=None, extra_inputs=(), opset=17, tail_in=6):
    """conv(3->6) -> OP -> conv(tail_in->4)."""
    b = models.Builder(12, opset=opset, name=op.lower())
    x = b.input("x", [1, 3, 8, 8])
    c = b.relu(b.conv(x, 3, 6))
    y = b.op(op, [c, *[b.const(a, "k") for a in extra_inputs]], **(attrs or {}))
    return b.build([b.conv(y, tail_in, 4, k=1)])


def first_group(model):
    _, ctx = analyses(model)
    return ctx.get(Patterns).groups[0]


@pytest.mark.parametrize("op,attrs,extra,opset,mixes", [
    ("Softmax", {"axis": 1}, (), 17, True),
    ("Softmax", {"axis": 3}, (), 17, False),
    ("Softmax", {"axis": 2}, (), 11, False),    # opset < 13 coerces to 2-D at axis 2: C stays outside
    ("Softmax", {"axis": 1}, (), 11, True),
    ("LRN", {"size": 3}, (), 17, True),
    ("ReduceMax", {"axes": [1], "keepdims": 1}, (), 17, True),
    # a mean over the channels is a statistic of a stream: it scales by kept/original (test_streams)
    ("ReduceMean", {"axes": [1], "keepdims": 1}, (), 17, False),
    ("ReduceMean", {"axes": [2, 3], "keepdims": 1}, (), 17, False),
    ("ReduceMax", {"axes": [3], "keepdims": 1}, (), 13, False),
    ("LayerNormalization", {"axis": 1}, (np.ones((6, 8, 8), np.float32),), 17, True),
    ("LayerNormalization", {"axis": -1}, (np.ones(8, np.float32),), 17, False),
])
def test_mixing_ops_block_only_over_the_channel_axis(op, attrs, extra, opset, mixes):
    reduces_channels = op.startswith("Reduce") and 1 in attrs["axes"]
    model = one_op_model(op, attrs, extra, opset, tail_in=1 if reduces_channels else 6)
    group = first_group(model)
    assert bool(group.blocked) == mixes, group.blocked
    result = pipeline.prune(model, ratio=0.5)
    assert result.report["verified"] is True


def test_transpose_and_reshape_carry_channels():
    b = models.Builder(13, name="transpose")
    x = b.input("x", [1, 3, 4, 4])
    c = b.relu(b.conv(x, 3, 6))
    t = b.op("Transpose", [c], perm=[0, 2, 3, 1])            # channels last
    t = b.op("Transpose", [t], perm=[0, 3, 1, 2])            # and back
    r = b.op("Reshape", [t, b.const(np.array([0, -1], np.int64), "shape")])
    model = b.build([b.gemm(r, 6 * 16, 4)])
    group = first_group(model)
    assert group.blocked is None and group.leaves == ("Gemm17",)
    result = pipeline.prune(model, ratio=0.5)
    assert result.report["verified"] is True


def test_explicit_reshape_constant_is_rewritten():
    b = models.Builder(14, name="reshape")
    x = b.input("x", [2, 3, 4, 4])
    c = b.relu(b.conv(x, 3, 6))
    r = b.op("Reshape", [c, b.const(np.array([2, 96], np.int64), "shape")])
    model = b.build([b.gemm(r, 96, 4)])
    result = pipeline.prune(model, ratio=0.5)
    assert result.report["verified"] is True
    reshape = [n for n in result.model.graph.node if n.op_type == "Reshape"][0]
    assert inits(result.model)[reshape.input[1]].tolist() == [2, 48]


def test_an_equivalence_violation_is_caught():
    """A pass that corrupts the pruned model after slicing must make validate fail."""

    @dataclass(frozen=True)
    class SwapFilters(Pass):
        name: ClassVar[str] = "swap-filters-test"

        def run(self, graph, ctx):
            node = graph.node("Conv16")
            w = np.array(graph.const_array(graph.inputs_of(node)[1]))
            w[[0, 1]] = w[[1, 0]]
            op_rules.Rewriter(graph, node, 17).set_const(1, w)
            return PassResult(True)

    pipeline.register(SwapFilters)
    try:
        spec = pipeline.build_spec(0.5).replace("slice,", "slice,swap-filters-test{},")
        spec = spec.replace("swap-filters-test{}", "swap-filters-test")
        with pytest.raises(pipeline.PipelineError, match="mask-equivalence"):
            pipeline.prune(models.chain(), passes=spec)
    finally:
        del pipeline.REGISTRY["swap-filters-test"]


# ------------------------------------------------------------------ the tables agree
TABLE_II = ["Conv", "ConvTranspose", "Gemm", "MatMul", "Mul", "Relu", "Sigmoid", "Softmax", "Tanh",
            "MaxPool", "AveragePool", "Flatten", "GlobalAveragePool", "Pad", "Reshape", "Transpose",
            "ReduceMean", "ReduceMax", "Pow", "Sqrt", "Erf", "Unsqueeze", "Resize", "Slice", "Cast",
            "Add", "Concat", "BatchNormalization", "Sub", "Div", "Gather"]
ALSO = ["Identity", "Dropout", "Clip", "LeakyRelu", "PRelu", "HardSigmoid", "HardSwish", "Sum",
        "Max", "Min", "GlobalMaxPool", "LRN"]


def test_op_table_covers_table_ii_and_the_issue_list():
    missing = [op for op in TABLE_II + ALSO if op not in op_rules.CHANNEL_RULES]
    assert missing == []


def test_every_weight_bearing_op_has_a_slice_rule_and_roots_are_in_the_table():
    assert [op for op in op_rules.WEIGHT_BEARING if op not in op_rules.SLICE_RULES] == []
    assert [op for op in op_rules.ROOT_RULES if op not in op_rules.CHANNEL_RULES] == []
    assert [op for op in op_rules.SLICE_RULES if op not in op_rules.CHANNEL_RULES] == []


def test_ratio_zero_is_a_no_op_and_output_is_deterministic():
    model = models.many_to_many()
    zero = pipeline.prune(model, ratio=0.0)
    assert zero.report["params_after"] == zero.report["params_before"]
    assert inits(zero.model).keys() == inits(model).keys()
    one = pipeline.prune(model, ratio=0.5).model.SerializeToString()
    two = pipeline.prune(model, ratio=0.5).model.SerializeToString()
    assert one == two


def test_a_group_that_cannot_be_proven_is_left_alone_with_its_reason(monkeypatch):
    """With a broken slice rule for BatchNormalization (it keeps the wrong entries), the groups
    through a BN fail the proof: they are left alone and said so; the others are still pruned."""
    good = op_rules.SLICE_RULES["BatchNormalization"]

    def reversed_bn(rw, ins, outs):
        axis, keep, rank = ins[0]
        good(rw, {0: (axis, keep[::-1].copy(), rank)}, outs)

    monkeypatch.setitem(op_rules.SLICE_RULES, "BatchNormalization", reversed_bn)
    result = pipeline.prune(models.chain(), ratio=0.5)
    assert result.report["verified"] is True
    groups = {tuple(g["roots"]): g for g in result.report["groups"]}
    assert "mask-equivalence" in groups[("Conv4",)]["reason"]    # conv -> BN: unproven
    assert groups[("Conv4",)]["channels_after"] == 8
    assert groups[("Conv16",)]["pruned"] is True                   # no BN: still pruned
    assert "ignore=Conv4" in result.report["spec"]


def _cast_reshape_model():
    """A Reshape target computed through float arithmetic: inference leaves it symbolic, the
    shape folder does not read it, only a run of the model knows it."""
    b = models.Builder(3, name="cast_reshape")
    x = b.input("x", [1, 3, 8, 8])
    c = b.relu(b.conv(x, 3, 40))
    target = b.op("Add", [b.const(np.array([1, 2560], np.float32), "s"), b.const(np.zeros(2, np.float32), "z")])
    y = b.op("Reshape", [c, b.op("Cast", [target], to=onnx.TensorProto.INT64)])
    return b.build([b.gemm(y, 2560, 5)])


def test_runtime_shapes_run_the_model_with_its_weights_by_reference(monkeypatch):
    from passes import tag as tag_mod
    from passes import validate as runner  # tag runs ORT through validate.Runnable, as the proof does

    seen = []
    real_run = runner.run_model

    def spy(model, feeds, *args, **kwargs):
        seen.append((model, feeds))
        return real_run(model, feeds, *args, **kwargs)

    monkeypatch.setattr(runner, "run_model", spy)
    graph = ir.lower(_cast_reshape_model())
    shapes = tag_mod.static_shapes(graph, 17)
    reshape = [n for n in graph.topo_nodes() if n.op_type == "Reshape"][0]
    assert shapes[graph.outputs_of(reshape)[0].name] == (1, 2560)
    (model, feeds), = seen
    assert all(t.dims == [] or np.prod(t.dims) <= ir.onnx_io.LIGHT_LIMIT for t in model.graph.initializer)
    gemm_w = graph.inputs_of([n for n in graph.topo_nodes() if n.op_type == "Gemm"][0])[1].name
    assert feeds[gemm_w] is graph.initializer(gemm_w).array  # the IR's own array, not a copy


def _vit_like_model():
    """torchvision ViT's attention reshape in small: Reshape(r, Concat(Slice(Shape(r), 0, e), [-1]))
    with the Slice end ``e`` computed by Mod; inference leaves the vectors' lengths unknown."""
    b = models.Builder(4, name="vit_like")
    r = b.relu(b.conv(b.input("x", [1, 3, 4, 4]), 3, 6))
    end = b.op("Reshape", [b.op("Mod", [b.const(np.array(7, np.int64), "a"), b.const(np.array(4, np.int64), "m")]),
                           b.const(np.array([1], np.int64), "one")])
    head = b.op("Slice", [b.op("Shape", [r]), b.const(np.array([0], np.int64), "zero"), end])
    y = b.op("Reshape", [r, b.op("Concat", [head, b.const(np.array([-1], np.int64), "rest")], axis=0)])
    return b.build([b.conv(y, 6, 2, k=1)])


def test_folded_shape_vectors_need_no_run(monkeypatch):
    """The vectors' lengths are read off the folded values; ONNX Runtime is not run."""
    from passes import tag as tag_mod

    graph = ir.lower(_vit_like_model())
    plain = tag_mod._folded_static_shapes(graph, 17, 3)
    vectors = [graph.outputs_of(n)[0].name for n in graph.topo_nodes() if n.op_type in ("Slice", "Concat")]
    assert not any(tag_mod._static(plain.get(v)) for v in vectors)  # what inference leaves
    from passes import validate

    monkeypatch.setattr(validate, "run_model", lambda *a, **k: pytest.fail("ONNX Runtime was run"))
    shapes = tag_mod.static_shapes(graph, 17)
    assert [shapes[v] for v in vectors] == [(3,), (4,)]


def test_validate_runs_both_models_with_their_weights_by_reference(monkeypatch):
    from passes import validate

    seen = []
    real_run = validate.run_model

    def spy(model, feeds, *args, **kwargs):
        seen.append((model, feeds))
        return real_run(model, feeds, *args, **kwargs)

    monkeypatch.setattr(validate, "run_model", spy)
    b = models.Builder(6, name="wide")
    y = b.relu(b.conv(b.input("x", [1, 16, 8, 8]), 16, 64))
    result = pipeline.prune(b.build([b.conv(y, 64, 4, k=1)]), ratio=0.5)
    assert result.report["verified"]
    assert len(seen) == 2  # the masked original, then the result: neither fell back
    for model, feeds in seen:
        assert all(np.prod(t.dims) <= ir.onnx_io.LIGHT_LIMIT for t in model.graph.initializer)
        assert any(a.size > ir.onnx_io.LIGHT_LIMIT for a in feeds.values())  # fed, not copied in


def test_validate_falls_back_to_weights_inside_when_an_input_weight_fails(monkeypatch):
    """An op whose ORT kernel needs a constant where a weight became a graph input: the light run
    fails and the whole model (weights inside) runs instead; the proof still holds."""
    from passes import validate

    real_run = validate.run_model
    calls = []

    def picky(model, feeds, *args, **kwargs):
        light = any(a.size > ir.onnx_io.LIGHT_LIMIT for n, a in feeds.items() if n != "x")
        calls.append(light)
        if light:
            raise RuntimeError("weight must be a constant initializer")
        return real_run(model, feeds, *args, **kwargs)

    monkeypatch.setattr(validate, "run_model", picky)
    b = models.Builder(6, name="wide")
    y = b.relu(b.conv(b.input("x", [1, 16, 8, 8]), 16, 64))
    result = pipeline.prune(b.build([b.conv(y, 64, 4, k=1)]), ratio=0.5)
    assert result.report["verified"] and calls == [True, False, True, False]


def _count_scaled(batch_too: bool, batch="N") -> onnx.ModelProto:
    """conv -> y / sqrt(C) -> conv, C read off y by Shape (Swin's (C // heads) ** -0.5 idiom);
    with ``batch_too`` the number is C * N, N the dynamic batch."""
    from models import Builder

    b = Builder(14, name="count_scaled")
    x = b.input("x", [batch, 3, 8, 8])
    y = b.relu(b.conv(x, 3, 8))
    dims = b.op("Shape", [y])
    count = b.op("Gather", [dims, b.const(np.array(1, np.int64), "i")], axis=0)
    if batch_too:
        count = b.op("Mul", [count, b.op("Gather", [dims, b.const(np.array(0, np.int64), "i")], axis=0)])
    scale = b.op("Sqrt", [b.op("Cast", [count], to=TensorProto.FLOAT)])
    return b.build([b.conv(b.op("Div", [y, scale]), 8, 4)])


def test_a_channel_count_used_as_a_number_keeps_its_original_value():
    """The masked original divides by sqrt(8) whatever it zeroes, so the pruned model keeps 8:
    the count is frozen to its folded value and the conv's channels prune, proven."""
    model = _count_scaled(False)
    rep = pipeline.prune(model, ratio=0.5, sample_inputs={"x": np.ones((2, 3, 8, 8), np.float32)}).report
    assert rep["verified"] is True
    assert [(g["channels_before"], g["channels_after"]) for g in rep["groups"] if g["pruned"]] == [(8, 4)]
    pruned = pipeline.prune(model, ratio=0.5).model
    x = np.random.default_rng(0).standard_normal((3, 3, 8, 8)).astype(np.float32)  # another batch size
    assert run_model(pruned, {"x": x})[0].shape == (3, 4, 8, 8)


def test_a_channel_count_mixed_with_a_dynamic_batch_still_blocks():
    """C * N changes with the batch: no single number may stand for it, so the channels stay."""
    rep = pipeline.prune(_count_scaled(True), ratio=0.5).report
    assert rep["verified"] is True
    whole = [g for g in rep["groups"] if not g["pruned"] and g["channels_before"] == 8]
    assert whole and "read by Shape, reaches a Sqrt" in whole[0]["reason"], rep["groups"]


def test_slice_copies_kept_runs_as_compress_does():
    """``slices._take`` copies runs of kept positions as blocks along an inner axis of a large
    weight (VGG's first Linear keeps 49 positions per channel): the same array as np.compress,
    for runs, for scattered positions (compress itself) and for nothing kept."""
    from passes.op_rules.slices import RUN_COPY_MIN, _take, _take_axes

    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 1024, 4, 40), dtype=np.float32)
    assert w.size >= RUN_COPY_MIN
    per_channel = rng.random(64) < 0.5
    gaps_of_one = np.arange(1024) % 20 != 7
    for axis, keep in [(1, np.repeat(per_channel, 16)), (3, np.repeat(rng.random(2) < 2, 20)), (1, gaps_of_one),
                       (1, rng.random(1024) < 0.5), (1, np.zeros(1024, bool)), (0, rng.random(8) < 0.5),
                       (2, np.array([True, True, False, True]))]:
        got = _take(w, axis, keep)
        assert got.dtype == w.dtype and np.array_equal(got, np.compress(keep, w, axis=axis)), (axis, keep)
    rows = rng.random(8) < 0.5   # a take along axis 0 and one along an inner axis: one pass
    for axis, keep in [(1, np.repeat(per_channel, 16)), (3, gaps_of_one[:40]), (1, rng.random(1024) < 0.5)]:
        got = _take_axes(w, [(axis, keep), (0, rows)])
        assert np.array_equal(got, np.compress(keep, np.compress(rows, w, axis=0), axis=axis)), axis
    assert np.array_equal(_take_axes(w, [(1, gaps_of_one), (2, rows[:4])]),
                          np.compress(rows[:4], np.compress(gaps_of_one, w, axis=1), axis=2))


def test_unique_ids_is_np_unique():
    from passes.analyses import unique_ids

    rng = np.random.default_rng(1)
    for a in [np.zeros(0, np.int64), np.array([5]), rng.integers(-3, 40, 500), rng.integers(0, 5, (7, 3)),
              np.arange(10)[::-1].astype(np.int32)]:
        got, want = unique_ids(a), np.unique(a)
        assert got.dtype == want.dtype and np.array_equal(got, want), a


def test_in_sorted_is_isin_for_a_sorted_distinct_set():
    from passes.analyses import in_sorted, unique_ids

    rng = np.random.default_rng(0)
    for _ in range(300):
        values = rng.integers(-3, 50, rng.integers(0, 40))
        members = unique_ids(rng.integers(0, 50, rng.integers(0, 30)))
        assert (in_sorted(values, members) == np.isin(values, members)).all()


def test_folded_shapes_are_remembered_until_the_graph_or_the_shapes_change():
    from passes.infer_shapes import value_shapes
    from passes.op_rules import fold_shapes

    graph = ir.lower(models.shape_reshape())
    shapes = value_shapes(graph)
    first = fold_shapes(graph, shapes, 17)
    assert first.static and fold_shapes(graph, dict(shapes), 17) is first   # equal shapes: the same result
    assert fold_shapes(graph, shapes, 13) is not first                      # another opset: folded again
    other = dict(shapes, **{next(iter(first.static)): (7,)})
    assert fold_shapes(graph, other, 17) is not first
    again = fold_shapes(graph, shapes, 17)
    graph.set_value_type(graph.inputs[0].name, graph.inputs[0].type)          # a mutation bumps the version
    assert fold_shapes(graph, shapes, 17) is not again
