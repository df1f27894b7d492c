"""Residual streams through normalizations: the stream's channels prune when every writer goes,
the pruned normalization keeps the original statistics, and the proof zeroes the writers."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import pipeline
import stream_models
from exporting import export, perturb
from passes import slice as slice_pass
from test_passes import Recorder


@pytest.mark.parametrize("name", sorted(stream_models.STREAMS))
def test_stream_models_match_golden(name, golden):
    rec = Recorder()
    result = pipeline.prune(stream_models.STREAMS[name](), ratio=0.5, instruments=[rec])
    assert result.report["verified"] is True
    golden(f"streams_{name}", "".join(rec.sections))


@pytest.mark.parametrize("name", sorted(set(stream_models.STREAMS) - {"groupnorm_block", "computed_weights", "small_blockers",
                                                                   "computed_operands", "coat_blockers",
                                                                   "poolformer_stream", "cait_stream",
                                                                   "focal_gates", "token_mixing"}))
def test_stream_group_prunes_through_every_layernorm_and_is_proven(name):
    result = pipeline.prune(stream_models.STREAMS[name](), ratio=0.5)
    rep = result.report
    assert rep["verified"] is True and rep["max_abs_diff"] < 1e-4
    stream = [g for g in rep["groups"] if g.get("stream")]
    assert len(stream) == 1 and stream[0]["channels_before"] == 8 and stream[0]["channels_after"] == 4
    assert len(stream[0]["roots"]) == 3  # the embedding and each block's output projection
    ops = [n.op_type for n in result.model.graph.node]
    assert "LayerNormalization" not in ops  # each became its corrected decomposed form
    onnx.checker.check_model(result.model, full_check=True)


def test_stream_ratio_is_apart_from_the_channel_ratio():
    model = stream_models.vit_stream()
    spec = "tag,trees,classify,score,mask{ratio=0.5 stream=0.25},slice,infer-shapes,validate"
    rep = pipeline.prune(model, passes=spec).report
    assert rep["verified"] is True
    assert [g["channels_after"] for g in rep["groups"] if g.get("stream")] == [6]
    assert sorted(g["channels_after"] for g in rep["groups"] if g.get("pruned") and not g.get("stream")) == [6, 8]
    api = pipeline.prune(model, ratio=0.5, stream=0.0).report
    assert [g["channels_after"] for g in api["groups"] if g.get("stream")] == [8]
    assert api["verified"] is True


def test_without_zeroing_the_writers_the_proof_rejects_the_stream(monkeypatch):
    """The masked original must zero the stream at its roots and constants: with the leaves'
    weights alone the normalization sees the removed channels and the proof fails, so the
    stream group is left alone with that reason."""
    monkeypatch.setattr(slice_pass, "stream_zeroings", lambda *a: [])
    rep = pipeline.prune(stream_models.vit_stream(), ratio=0.5).report
    stream = [g for g in rep["groups"] if g.get("stream")][0]
    assert stream["channels_after"] == 8 and "mask-equivalence" in stream["reason"]


def test_pruned_layernorm_equals_the_original_on_a_stream_with_zeros():
    """The decomposed form's statistics count the removed channels as zeros, as the original
    LayerNormalization does (checked at opset 18, where ReduceMean takes its axes as an input)."""
    model = stream_models.vit_stream(opset=18)
    result = pipeline.prune(model, ratio=0.5)
    assert result.report["verified"] is True
    reduce = [n for n in result.model.graph.node if n.op_type == "ReduceMean"]
    assert reduce and all(len(n.input) == 2 for n in reduce)
    kept = {t.name: t for t in result.model.graph.initializer if "stream_kept_fraction" in t.name}
    assert kept and all(np.isclose(onnx.numpy_helper.to_array(t), 0.5) for t in kept.values())


@pytest.mark.parametrize("opset", [17, 18])
@pytest.mark.parametrize("rms", [False, True])
def test_decomposed_layernorm_and_rmsnorm_prune_the_stream(rms, opset):
    result = pipeline.prune(stream_models.decoder_stream(rms=rms, opset=opset), ratio=0.5)
    rep = result.report
    assert rep["verified"] is True and rep["max_abs_diff"] < 1e-4
    assert [(g["channels_before"], g["channels_after"]) for g in rep["groups"] if g.get("stream")] == [(8, 4)]
    names = [n.name for n in result.model.graph.node]
    # every mean over the stream is scaled; LayerNorm's centered variance gets its (1 - r)·mean²
    assert sum(n.endswith("stream_scaled_mean") for n in names) == (3 if rms else 6)
    assert sum(n.endswith("stream_gone_var") for n in names) == (0 if rms else 3)


def test_uncorrected_means_fail_the_proof(monkeypatch):
    """Without the kept/original correction the pruned statistics differ and the stream group
    is left alone by the proof (the correction is what makes it hold)."""
    from passes.op_rules import SLICE_RULES

    monkeypatch.setitem(SLICE_RULES, "ReduceMean", lambda rw, ins, outs: None)
    rep = pipeline.prune(stream_models.decoder_stream(), ratio=0.5).report
    stream = [g for g in rep["groups"] if g.get("stream")][0]
    assert stream["channels_after"] == 8 and "mask-equivalence" in stream["reason"]


@pytest.mark.parametrize("opset", [18, 21])
def test_groupnormalization_prunes_whole_groups(opset):
    """Per-group (opset 18) or per-channel (21) scale and bias; ``num_groups`` counts the kept."""
    result = pipeline.prune(stream_models.groupnorm_block(opset), ratio=0.5)
    rep = result.report
    assert rep["verified"] is True and rep["max_abs_diff"] < 1e-4
    assert sorted((g["channels_before"], g["channels_after"]) for g in rep["groups"] if g.get("pruned")) == \
        [(4, 2), (4, 2)]  # a channel of the group is a whole group of 2 or 3 channels
    assert [a.i for n in result.model.graph.node if n.op_type == "GroupNormalization"
            for a in n.attribute if a.name == "num_groups"] == [2, 2, 2]


class _UNetBlock:
    """torch's GroupNorm as the legacy exporter writes it: Reshape [N, G, -1] ->
    InstanceNormalization -> Reshape(Shape(x)) -> Mul(weight) -> Add(bias)."""

    @staticmethod
    def export(path):
        import torch

        class Block(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.c1, self.n1 = torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.GroupNorm(4, 16)
                self.c2, self.n2 = torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.GroupNorm(4, 16)
                self.c3 = torch.nn.Conv2d(16, 5, 1)

            def forward(self, x):
                h = torch.nn.functional.silu(self.n1(self.c1(x)))
                return self.c3(h + torch.nn.functional.silu(self.n2(self.c2(h))))

        torch.manual_seed(0)
        model = perturb(Block().eval(), 0.1)
        return export(model, torch.randn(1, 3, 8, 8), path)


def test_exported_torch_groupnorm_block_prunes_whole_groups(tmp_path):
    rep = pipeline.prune(_UNetBlock.export(tmp_path / "unet_block.onnx"), ratio=0.5).report
    assert rep["verified"] is True
    assert [(g["channels_before"], g["channels_after"]) for g in rep["groups"] if g.get("pruned")] == [(4, 2)]
    assert rep["params_after"] < 0.6 * rep["params_before"]


def test_weights_computed_from_initializers_are_roots_and_leaves():
    """The standardized and the gained convolutions prune like plain ones; each computed weight
    becomes the cut initializer it computes, and its chain goes."""
    result = pipeline.prune(stream_models.computed_weights(), ratio=0.5)
    rep = result.report
    assert rep["verified"] is True and rep["max_abs_diff"] < 1e-4
    assert [(g["channels_before"], g["channels_after"]) for g in rep["groups"] if g.get("pruned")] == [(8, 4), (6, 3)]
    ops = [n.op_type for n in result.model.graph.node]
    assert ops == ["Conv", "Relu", "Conv", "Relu", "Conv"]


def _weight_normalized_convs(kind: str, path):
    """A residual block whose convolutions standardize their weights as timm's ScaledStdConv2d
    (NF-ResNet: a training-mode BatchNormalization over each filter, times gain), BiT's StdConv2d
    (var_mean over each filter), or torch's weight_norm parametrization (g · v / ||v||)."""
    import torch
    import torch.nn.functional as F

    class ScaledStd(torch.nn.Conv2d):
        def __init__(self, cin, cout):
            super().__init__(cin, cout, 3, padding=1)
            self.gain = torch.nn.Parameter(torch.ones(cout, 1, 1, 1))
            self.scale = (cin * 9) ** -0.5

        def forward(self, x):
            w = F.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None,
                             weight=(self.gain * self.scale).view(-1), training=True, momentum=0.,
                             eps=1e-6).reshape_as(self.weight)
            return F.conv2d(x, w, self.bias, self.stride, self.padding)

    class BiTStd(torch.nn.Conv2d):
        def forward(self, x):
            v, m = torch.var_mean(self.weight, dim=[1, 2, 3], keepdim=True, unbiased=False)
            return F.conv2d(x, (self.weight - m) / torch.sqrt(v + 1e-10), self.bias, self.stride, self.padding)

    def conv(cin, cout):
        if kind == "nf":
            return ScaledStd(cin, cout)
        if kind == "bit":
            return BiTStd(cin, cout, 3, padding=1)
        return torch.nn.utils.parametrizations.weight_norm(torch.nn.Conv2d(cin, cout, 3, padding=1))

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2, self.c3 = conv(3, 8), conv(8, 8), torch.nn.Conv2d(8, 5, 1)

        def forward(self, x):
            h = torch.relu(self.c1(x))
            return self.c3(h + torch.relu(self.c2(h)) * 0.2)

    torch.manual_seed(0)
    model = perturb(Block().eval(), 0.1)
    return export(model, torch.randn(1, 3, 8, 8), path)


@pytest.mark.parametrize("kind", ["nf", "bit", "weight_norm"])
def test_exported_weight_standardized_convs_prune(kind, tmp_path):
    rep = pipeline.prune(_weight_normalized_convs(kind, tmp_path / f"{kind}.onnx"), ratio=0.5).report
    assert rep["verified"] is True and rep["max_abs_diff"] < 1e-4
    assert [(g["channels_before"], g["channels_after"]) for g in rep["groups"] if g.get("pruned")] == [(8, 4)]


def test_expand_tile_pad_and_reductions_along_other_axes_pass_channels():
    rep = pipeline.prune(stream_models.small_blockers(), ratio=0.5).report
    assert rep["verified"] is True and rep["max_abs_diff"] < 1e-4
    assert [(g["channels_before"], g["channels_after"]) for g in rep["groups"] if g.get("pruned")] == [(8, 4), (6, 3)]


def _recognizer_tail(path, dynamic: bool):
    """torch's F.pad (pads computed by a small constant sub-graph), amin / sum over non-channel
    axes, then a recognizer's ``reshape(b, c * h, w)`` read from the tensor's own Shape."""
    import torch
    import torch.nn.functional as F

    class Tail(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2 = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Conv2d(8, 8, 3)
            self.fc = torch.nn.Linear(8 * 4, 5)

        def forward(self, x):
            h = torch.relu(self.c2(F.pad(torch.relu(self.c1(x)), (1, 1, 1, 1))))
            h = h - h.amin(dim=3, keepdim=True)
            h = h.sum(dim=2, keepdim=True) + h
            b, c, hh, w = h.shape
            return self.fc(h.reshape(b, c * hh, w).permute(0, 2, 1))

    torch.manual_seed(0)
    return export(Tail().eval(), torch.randn(1, 3, 4, 12), path, input_names=["x"], output_names=["y"],
                  dynamic_axes={"x": {0: "b", 3: "w"}, "y": {0: "b", 1: "w"}} if dynamic else None)


@pytest.mark.parametrize("dynamic", [False, True])
def test_computed_pads_reductions_and_a_self_adapting_reshape_prune(dynamic, tmp_path):
    rep = pipeline.prune(_recognizer_tail(tmp_path / "tail.onnx", dynamic), ratio=0.5).report
    assert rep["verified"] is True
    assert [(g["channels_before"], g["channels_after"]) for g in rep["groups"] if g.get("pruned")] == [(8, 4), (8, 4)]


def test_cli_stream_flag(tmp_path, capsys):
    import json

    import cli

    model, out, report = tmp_path / "vit_stream.onnx", tmp_path / "out.onnx", tmp_path / "report.json"
    onnx.save(stream_models.vit_stream(), str(model))
    assert cli.main(["prune", str(model), "-o", str(out), "--ratio", "0.5", "--stream", "0.75",
                     "--report", str(report)]) == 0
    groups = json.loads(report.read_text())["groups"]
    assert [g["channels_after"] for g in groups if g.get("stream")] == [2]
    assert cli.main(["prune", str(model), "-o", str(tmp_path / "x.onnx"), "--stream", "1.5"]) == 2
    assert not (tmp_path / "x.onnx").exists()
    assert "stream must be in [0, 1)" in capsys.readouterr().err


def test_operands_computed_from_initializers_are_cut_and_a_large_one_is_gathered(monkeypatch):
    """BEiT's qkv bias Concat(q_bias, zeros, v_bias) is read as the constant it is (the heads
    prune instead of stopping at 'untracked data') and frozen to its cut value; the relative-
    position bias [1, H, S, S] gathered from its [R, H] table keeps its chain with a Gather of
    the kept heads after it (freezing it would grow the model past the table)."""
    result = pipeline.prune(stream_models.computed_operands(), ratio=0.5)
    rep = result.report
    assert rep["verified"] is True
    assert [(g["channels_before"], g["channels_after"]) for g in rep["groups"] if g.get("pruned")][0] == (4, 2)
    inits = {t.name: tuple(t.dims) for t in result.model.graph.initializer}
    assert (19, 4) in inits.values()           # the table stays whole
    assert not any(len(d) == 4 for d in inits.values())   # no frozen [1, H, S, S] bias
    gathers = [n for n in result.model.graph.node if n.op_type == "Gather" and n.name.endswith("/kept")]
    assert len(gathers) == 1 and onnx.helper.get_attribute_value(gathers[0].attribute[0]) == 1
    assert rep["params_after"] < rep["params_before"]
    from passes.op_rules import computed
    monkeypatch.setattr(computed, "OPERAND_OPS", ())
    blocked = pipeline.prune(stream_models.computed_operands(), ratio=0.5).report
    assert any("untracked data" in (g.get("reason") or "") for g in blocked["groups"] if g["channels_before"] == 24)


def test_float_scales_from_constants_and_a_pointwise_conv_along_the_channels_pass(monkeypatch):
    """CoaT: Resize's scales Concat(ones, twos) fold to numbers (1 on the channel axis), and a
    kernel-1 Conv whose spatial axis holds the channels carries them to the head; the two
    convolutions feeding the stack are coupled and prune together."""
    rep = pipeline.prune(stream_models.coat_blockers(), ratio=0.5).report
    assert rep["verified"] is True
    assert [(g["channels_before"], g["channels_after"]) for g in rep["groups"] if g.get("pruned")] == [(8, 4)]
    assert len([g for g in rep["groups"] if g.get("pruned")][0]["roots"]) == 2
    from passes.op_rules import channels, reindex
    with monkeypatch.context() as patch:
        patch.setattr(reindex, "constant_value", lambda *a: None)
        rep = pipeline.prune(stream_models.coat_blockers(), ratio=0.5).report
        assert "Resize with computed scales" in [g for g in rep["groups"] if g["channels_before"] == 8][0]["reason"]
    monkeypatch.setattr(channels, "pointwise_along", lambda view, axis: False)
    rep = pipeline.prune(stream_models.coat_blockers(), ratio=0.5).report
    assert "reads channels on axis 2" in [g for g in rep["groups"] if g["channels_before"] == 8][0]["reason"]


def test_groupnorm_with_one_group_prunes_the_stream_with_the_original_statistics(monkeypatch):
    """PoolFormer's GroupNorm(1, C) as torch writes it (Reshape → InstanceNormalization over the
    flattened C×H×W): a stream, pruned like a LayerNorm; the decomposed form keeps the original
    statistics (kept fraction 0.5), and without the writers zeroed the proof rejects it."""
    result = pipeline.prune(stream_models.poolformer_stream(), ratio=0.5)
    rep = result.report
    assert rep["verified"] is True and rep["max_abs_diff"] < 1e-4
    stream = [g for g in rep["groups"] if g.get("stream")]
    assert [(g["channels_before"], g["channels_after"]) for g in stream] == [(8, 4)]
    assert len(stream[0]["roots"]) == 2   # the stem and the MLP block's last convolution
    assert "InstanceNormalization" not in [n.op_type for n in result.model.graph.node]
    kept = [t for t in result.model.graph.initializer if "stream_kept_fraction" in t.name]
    assert len(kept) == 3 and all(np.isclose(onnx.numpy_helper.to_array(t), 0.5) for t in kept)
    monkeypatch.setattr(slice_pass, "stream_zeroings", lambda *a: [])
    rep = pipeline.prune(stream_models.poolformer_stream(), ratio=0.5).report
    stream = [g for g in rep["groups"] if g.get("stream")][0]
    assert stream["channels_after"] == 8 and "mask-equivalence" in stream["reason"]


def test_a_class_token_read_twice_is_gathered_by_each_reader(monkeypatch):
    """CaiT: the Expand-ed class token is concatenated before the patches and added to the class
    stream; both readers pick the kept channels with a Gather of their own and the stream (four
    writers: patch embedding, the patches' MLP, two class-attention outputs) prunes, proven.
    The proof zeroes the token at its Expand: without the stream zeroings it fails."""
    result = pipeline.prune(stream_models.cait_stream(), ratio=0.5)
    rep = result.report
    assert rep["verified"] is True
    stream = [g for g in rep["groups"] if g.get("stream")]
    assert [(g["channels_before"], g["channels_after"], len(g["roots"])) for g in stream] == [(8, 4, 4)]
    nodes = result.model.graph.node
    gathers = [n for n in nodes if n.op_type == "Gather" and n.name.endswith("/kept")]
    assert sorted(n.name.split(".in")[0].rstrip("0123456789") for n in gathers) == ["Add", "Concat"]
    assert [list(t.dims) for t in result.model.graph.initializer if t.name.startswith("cls")] == [[1, 1, 8]]
    monkeypatch.setattr(slice_pass, "stream_zeroings", lambda *a: [])
    rep = pipeline.prune(stream_models.cait_stream(), ratio=0.5).report
    assert "mask-equivalence" in [g for g in rep["groups"] if g.get("stream")][0]["reason"]


def test_a_one_channel_gate_broadcast_over_the_channels_stays_and_the_rest_prunes(monkeypatch):
    """FocalNet: ``ctx * gates[:, l:l+1]`` no longer joins the gate's channel to ctx's eight;
    the group of q, ctx and the gates (two roots) prunes, both gates kept, proven."""
    result = pipeline.prune(stream_models.focal_gates(), ratio=0.5)
    rep = result.report
    assert rep["verified"] is True
    group = [g for g in rep["groups"] if g["channels_before"] == 18][0]
    assert group.get("pruned") and len(group["roots"]) == 2 and group["channels_after"] < 18
    split = [n for n in result.model.graph.node if n.op_type == "Split"][0]
    sizes = [t for t in result.model.graph.initializer if t.name == split.input[1]][0]
    assert onnx.numpy_helper.to_array(sizes)[-1] == 2   # both gates stay
    from passes.op_rules import channels
    monkeypatch.setattr(channels, "_without_gates", lambda view, rank: view.labeled())
    rep = pipeline.prune(stream_models.focal_gates(), ratio=0.5).report
    assert "combines channels on different axes" in [g for g in rep["groups"] if g["channels_before"] == 18][0]["reason"]


def test_channels_on_the_row_axis_of_a_matmul_pass_through_token_mixing(monkeypatch):
    """ResMLP: the token-mixing Linear multiplies each channel's row of tokens on its own, so the
    residual channels pass through it (it is then no root) and prune with the embedding and the
    channel MLP's output, proven; before, the MatMul stopped them."""
    result = pipeline.prune(stream_models.token_mixing(), ratio=0.5)
    rep = result.report
    assert rep["verified"] is True
    residual = [g for g in rep["groups"] if g["channels_before"] == 8 and len(g["roots"]) == 2]
    assert len(residual) == 1 and residual[0].get("pruned") and residual[0]["channels_after"] == 4
    inits = {t.name: tuple(t.dims) for t in result.model.graph.initializer}
    weights = [inits[n.input[1]] for n in result.model.graph.node if n.op_type == "MatMul"]
    assert weights == [(6, 4), (4, 4), (4, 8), (8, 4)]   # the token mixing's [T, T] weight stays


def test_an_operand_computed_through_a_gemm_of_constants_is_not_read_as_a_constant():
    """SwinV2-CR's position bias is an MLP (Gemm, Relu, Gemm) over a constant coordinate table:
    its Gemms are roots that prune, so the bias is no constant of the model (freezing it made
    every proof fail); a Concat of initializers is one (BEiT's qkv bias)."""
    from ir import lower
    from models import Builder
    from passes.op_rules.computed import computed_weights

    b = Builder(34, name="position_mlp")
    x = b.input("x", [1, 4, 8])
    coords = b.weight(4, 2, prefix="coords")
    bias = b.gemm(b.relu(b.gemm(coords, 2, 16)), 16, 8)                 # [4, 8] from an MLP of constants
    qkv_bias = b.op("Concat", [b.weight(4, prefix="q"), b.weight(4, prefix="v")], axis=0)
    y = b.op("Add", [b.op("Add", [b.op("MatMul", [x, b.weight(8, 8)]), bias]), qkv_bias])
    computed = computed_weights(lower(b.build([b.relu(y)])))
    assert list(computed) == [qkv_bias]


def test_tf2onnx_channel_layernorm_with_its_scale_folded_into_the_inverse_std_prunes_the_stream():
    """tf2onnx's LayerNorm over the channels (``stream_models.tf2onnx_channel_norm``): the scale
    and shift carry channels only through gamma and beta, so each reader Gathers their kept
    channels, the proof zeroes gamma and beta there, and the mean seen through tf2onnx's Reshape
    gets the variance correction. Before, the Mul(x, m) blocked the stream ("untracked data")."""
    result = pipeline.prune(stream_models.tf2onnx_channel_norm(), ratio=0.5)
    rep = result.report
    assert rep["verified"] is True and rep["max_abs_diff"] < 1e-4
    stream = [g for g in rep["groups"] if g.get("stream")]
    assert [(g["channels_before"], g["channels_after"]) for g in stream] == [(8, 4)]
    names = [n.name for n in result.model.graph.node]
    assert sum(n.endswith("stream_gone_var") for n in names) == 4  # one per norm: the Reshape is seen through
    # each chain is read only by its own nodes and its two readers, which keep the same channels:
    # gamma and beta are cut in place (no Gather), so the chain computes the kept channels only
    assert not [n for n in result.model.graph.node if n.op_type == "Gather"]
    widths = sorted(t.dims[1] for t in result.model.graph.initializer if t.name.startswith(("gamma", "beta")))
    assert widths == [4] * 8
    onnx.checker.check_model(result.model, full_check=True)


def test_a_derived_chain_read_elsewhere_stays_whole_and_its_reader_gathers():
    """A per-channel constant scaled by a per-position gate (``m = Sigmoid(mean over the image's
    channels) * gamma``) read by ``Mul(x, m)`` and by something else (a pooled graph output):
    cutting gamma would change that other reader, so the chain stays whole and ``Mul(x, m)``
    Gathers its kept channels. (In a stream the proof zeroes gamma, so there such a chain's other
    readers would fail the proof: the group would stay whole.)"""
    from models import Builder

    b = Builder(43, name="gated_scale")
    x = b.input("image", [1, 3, 6, 6])
    gate = b.op("Sigmoid", [b.op("ReduceMean", [x], axes=[1], keepdims=1)])
    m = b.op("Mul", [gate, b.const((b.rng.random([1, 8, 1, 1]) + 0.5).astype(np.float32), "gamma")])
    h = b.op("Mul", [b.relu(b.conv(x, 3, 8)), m])
    model = b.build([b.conv(h, 8, 4), b.op("ReduceMean", [m], axes=[1, 2, 3], keepdims=0)])
    result = pipeline.prune(model, ratio=0.5)
    rep = result.report
    assert rep["verified"] is True
    assert [(g["channels_before"], g["channels_after"]) for g in rep["groups"] if g.get("pruned")] == [(8, 4)]
    gathers = [n for n in result.model.graph.node if n.op_type == "Gather"]
    assert len(gathers) == 1 and gathers[0].output[0] in [i for n in result.model.graph.node
                                                          if n.op_type == "Mul" for i in n.input]
    assert [list(t.dims) for t in result.model.graph.initializer if t.name.startswith("gamma")] == [[1, 8, 1, 1]]


def test_a_channel_varying_operand_without_a_constant_behind_it_still_blocks():
    """The derived-operand rule reads constants only: the same norm with gamma replaced by a
    computed activation of the channels stays a barrier (unknown means barrier)."""
    from passes.op_rules.derived import derived_constants
    import ir

    g = ir.lower(stream_models.tf2onnx_channel_norm())
    shift_mul = [n for n in g.nodes() if n.op_type == "Mul" and any(
        i is not None and g.const_array(i) is not None and g.const_array(i).shape == (1, 8, 1, 1)
        for i in g.inputs_of(n))][0]
    m = g.outputs_of(shift_mul)[0].name
    found = derived_constants(g, m, 1, 4, 8, {v.name: (1, 1, 4, 4) for v in g.values()})
    assert found is not None and [f[3] for f in found] == [1]
    assert derived_constants(g, m, 1, 4, 8, {}) is None  # a leaf of unknown shape: not proven constant
