"""Transformers: whole attention heads and MLP channels prune (BERT, GPT-2 and ViT from
``transformers``, built from small configs; torchvision's ViT with its packed in-projection),
proven by the mask-equivalence check; what stays (the residual stream through LayerNorm) is left
alone with a named reason.

Heads: a Reshape [B,S,C]→[B,S,H,D] whose output reaches a MatMul of two activations keeps the
channel ids on the head axis and couples each head's D channels, so a class is a whole head; Q·Kᵀ
and A·V couple the heads of their operands; the merge Reshape spreads a head back over its D
columns of the output projection (the leaf). Q, K, V are the group's roots.

PyTorch without constant folding exports ``Linear`` on 3-D input as ``MatMul(x, Transpose(W))``:
the transposed initializer is a constant weight (``Graph.const_array``), sliced where it is stored
(``Rewriter.set_const`` writes through the Transpose)."""

from __future__ import annotations

import json

import onnx
import pytest

import cli
import models
import pipeline
from passes.inputs import sample_inputs
from passes.runtime import run_model
from transformer_models import attention_block, export


def linear_mlp() -> onnx.ModelProto:
    """x[1, 4, 8] -> MatMul(Transpose(W1 [16, 8])) + b1 -> Relu -> MatMul(Transpose(W2 [8, 16])) -> y"""
    b = models.Builder(3)
    x = b.input("x", [1, 4, 8])
    h = b.op("MatMul", [x, b.op("Transpose", [b.weight(16, 8)], perm=[1, 0])])
    h = b.relu(b.op("Add", [b.weight(16, prefix="b"), h]))
    y = b.op("MatMul", [h, b.op("Transpose", [b.weight(8, 16)], perm=[1, 0])])
    return b.build([y])


def test_matmul_with_a_transposed_initializer_prunes_in_the_initializer_layout():
    model = linear_mlp()
    result = pipeline.prune(model, ratio=0.5)
    rep = result.report
    assert rep["verified"] is True
    hidden = [g for g in rep["groups"] if g["channels_before"] == 16]
    assert len(hidden) == 1 and hidden[0]["channels_after"] == 8
    # the weights stay behind their Transposes, sliced where they are stored: W1 [16, 8] and
    # W2 [8, 16] lose half of the hidden axis
    inits = {t.name: tuple(t.dims) for t in result.model.graph.initializer}
    transposes = [n for n in result.model.graph.node if n.op_type == "Transpose"]
    assert [inits[n.input[0]] for n in transposes] == [(8, 8), (8, 8)]
    assert rep["params_after"] == 8 * 8 + 8 + 8 * 8
    feeds = sample_inputs(model, 0)
    assert run_model(result.model, feeds)[0].shape == run_model(model, feeds)[0].shape


def test_attention_heads_are_pruned_whole_with_their_reshapes_rewritten():
    model = attention_block(heads=4, head_dim=4)
    result = pipeline.prune(model, ratio=0.5)
    rep = result.report
    assert rep["verified"] is True
    heads = [g for g in rep["groups"] if g.get("pruned")]
    assert len(heads) == 1
    group = heads[0]
    assert group["pattern"] == "many-to-one" and len(group["roots"]) == 3 and len(group["leaves"]) == 1
    assert (group["channels_before"], group["channels_after"]) == (4, 2)
    shapes = sorted(tuple(onnx.numpy_helper.to_array(t).tolist()) for t in result.model.graph.initializer
                    if t.data_type == onnx.TensorProto.INT64)
    assert shapes == [(1, 4, 2, 4)] * 3 + [(1, 4, 8)]  # 2 heads of 4, merged back into 8 columns
    feeds = sample_inputs(model, 0)
    assert run_model(result.model, feeds)[0].shape == run_model(model, feeds)[0].shape


def test_dynamo_key_transpose_through_the_merged_batch_axis_prunes_heads():
    """The dynamo exporter's Kᵀ merges batch and heads ([1, H, S, D] -> [-1, S, D]), transposes in
    3-D and splits them back: with a batch of one, axis 0 holds exactly the heads."""
    model = attention_block(heads=4, head_dim=4, dynamo_kt=True)
    result = pipeline.prune(model, ratio=0.5)
    rep = result.report
    assert rep["verified"] is True
    (group,) = [g for g in rep["groups"] if g.get("pruned")]
    assert (group["channels_before"], group["channels_after"]) == (4, 2) and len(group["roots"]) == 3
    shapes = sorted(tuple(onnx.numpy_helper.to_array(t).tolist()) for t in result.model.graph.initializer
                    if t.data_type == onnx.TensorProto.INT64)
    assert (1, 2, 4, 4) in shapes and (-1, 4, 4) in shapes     # [B, H, D, S] with 2 heads; -1 adapts
    # a batch of two: axis 0 mixes samples and heads, the heads stay whole
    rep = pipeline.prune(attention_block(heads=4, head_dim=4, dynamo_kt=True, batch=2), ratio=0.5).report
    assert rep["verified"] is True and not any(g.get("pruned") and g["channels_before"] == 4 for g in rep["groups"])
    assert any("batch axis" in (g.get("reason") or "") for g in rep["groups"])


def test_einsum_attention_prunes_heads_and_an_einsum_contracting_channels_blocks():
    rep = pipeline.prune(attention_block(einsum=True), ratio=0.5).report
    assert rep["verified"] is True
    assert [(g["channels_before"], g["channels_after"]) for g in rep["groups"] if g.get("heads")] == [(4, 2)]

    b = models.Builder(1)
    x = b.input("x", [1, 4, 8])
    h = b.relu(b.op("MatMul", [x, b.weight(8, 6)]))
    y = b.op("Einsum", [h, b.weight(6, 5)], equation="bsc,cd->bsd")  # sums over the channels
    rep = pipeline.prune(b.build([b.relu(y)]), ratio=0.5).report
    assert rep["verified"] is True
    assert [g["reason"] for g in rep["groups"]] == [f"Einsum contracts the channel axis (node {b.nodes[2].name!r})"]


def test_heads_prune_even_when_the_output_projection_joins_a_residual():
    rep = pipeline.prune(attention_block(residual=True), ratio=0.5).report
    assert rep["verified"] is True
    assert [(g["channels_before"], g["channels_after"]) for g in rep["groups"] if g.get("pruned")] == [(4, 2)]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("transformers")


def named_blocker(reason: str) -> bool:
    """A reason for leaving a group alone names the node that blocked it, or the graph output."""
    return "(node '" in reason or "graph output" in reason


# per model: heads of each layer's attention group, MLP channels, residual stream channels (the
# ViTs' stream is written by the patch embedding, position embedding, class token and each
# block's output projections; BERT's and GPT-2's by a token-embedding table, which is no root)
EXPECTED = {"bert": (4, 64, None), "gpt2": (4, 128, None), "hf-vit": (4, 64, 32), "tv-vit": (4, 64, 32)}


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_transformer_heads_and_mlp_channels_prune_and_stay_equivalent(kind, folder):
    n_heads, mlp, stream = EXPECTED[kind]
    result = pipeline.prune(export(kind, folder), ratio=0.5)
    rep = result.report
    assert rep["verified"] is True and rep["max_abs_diff"] < 1e-3
    pruned = sorted((g["channels_before"], g["channels_after"]) for g in rep["groups"] if g.get("pruned"))
    # two layers: each loses half its heads (Q, K, V and the output projection's columns) and
    # half its MLP channels; the stream, through every LayerNorm, loses half its channels
    assert pruned == sorted([(n_heads, n_heads // 2)] * 2 + [(mlp, mlp // 2)] * 2
                            + ([(stream, stream // 2)] if stream else [])), pruned
    assert [g["channels_before"] for g in rep["groups"] if g.get("stream") and g.get("pruned")] == \
        ([stream] if stream else [])
    assert rep["params_after"] < 0.8 * rep["params_before"]
    left = [g for g in rep["groups"] if not g.get("pruned")]
    assert all(named_blocker(g["reason"]) for g in left), [g["reason"] for g in left]


def test_heads_option_sets_the_head_ratio_apart_from_the_channel_ratio(folder):
    path = export("bert", folder)
    spec = ("tag,trees,classify,score,mask{ratio=0.5 heads=0.25},slice,infer-shapes,validate")
    rep = pipeline.prune(path, passes=spec).report
    assert rep["verified"] is True
    heads = [g for g in rep["groups"] if g.get("heads")]
    others = [g for g in rep["groups"] if g.get("pruned") and not g.get("heads")]
    assert [(g["channels_before"], g["channels_after"]) for g in heads] == [(4, 3), (4, 3)]
    assert [(g["channels_before"], g["channels_after"]) for g in others] == [(64, 32), (64, 32)]
    plain = pipeline.prune(path, ratio=0.5).report  # without `heads`, heads follow the ratio
    assert [g["channels_after"] for g in plain["groups"] if g.get("heads")] == [2, 2]


def test_cli_heads_flag(folder, tmp_path, capsys):
    out, report = tmp_path / "bert.pruned.onnx", tmp_path / "report.json"
    code = cli.main(["prune", str(export("bert", folder)), "-o", str(out), "--ratio", "0.5",
                     "--heads", "0.75", "--report", str(report)])
    assert code == 0 and out.exists()
    groups = json.loads(report.read_text())["groups"]
    assert [g["channels_after"] for g in groups if g.get("heads")] == [1, 1]
    assert cli.main(["prune", str(export("bert", folder)), "-o", str(tmp_path / "x.onnx"),
                     "--heads", "1.5"]) == 2
    assert not (tmp_path / "x.onnx").exists()
    assert "heads must be in [0, 1)" in capsys.readouterr().err


def test_swin_window_attention_prunes_whole_heads(tmp_path):
    """Swin's packed qkv [.., 3, H, D] keeps one class per head (its Q, K and V coupled), and its
    relative position bias, a table gathered by a constant index, loses the removed heads."""
    from torchvision_models import export as export_tv

    rep = pipeline.prune(export_tv("swin_t", tmp_path, size=64), ratio=0.5).report
    assert rep["verified"] is True
    heads = [(g["channels_before"], g["channels_after"]) for g in rep["groups"] if g.get("heads")]
    assert heads == [(3, 2)] * 2 + [(6, 3)] * 2 + [(12, 6)] * 6 + [(24, 12)] * 2
    # the residual stream prunes too: the attention scale (C // heads) ** -0.5 that x's Shape
    # computes keeps its original value (45.8% of the parameters removed before that, 74% after)
    assert rep["params_after"] < 0.3 * rep["params_before"]


def test_a_token_type_embedding_of_constant_ids_is_cut_once():
    """ALBERT/ELECTRA (embedding 16 < hidden): the token-type embedding is ``Gather(table,
    Expand(zeros))``, a value computed from constants only, added to the word embedding. The
    table's Gather is a root of the embedding group (its columns cut where they are stored), so the
    Add's operand must not be cut again by a Gather of kept positions after it (ONNX Runtime
    refused the result: index out of range)."""
    import numpy as np
    from onnx import TensorProto

    b = models.Builder(5)
    ids = b.input("ids", [1, 6], TensorProto.INT64)
    words = b.op("Gather", [b.weight(20, 8), ids])
    zeros = b.op("Expand", [b.const(np.zeros((1, 1), np.int64), "t"), b.const(np.array([1, 6], np.int64), "s")])
    h = b.op("Add", [words, b.op("Gather", [b.weight(2, 8), zeros])])
    model = b.build([b.op("MatMul", [h, b.weight(8, 4)])])
    result = pipeline.prune(model, ratio=0.5)
    assert result.report["verified"]
    embedding = next(g for g in result.report["groups"] if g["channels_before"] == 8)
    assert embedding["pruned"] and embedding["channels_after"] == 4


@pytest.mark.parametrize("length", [70, 600])
def test_a_position_embedding_computed_by_a_long_chain_of_constants_is_read_as_a_constant(length):
    """DINOv2 interpolates its position embedding to the input size in the graph: 65 nodes
    (Resize and its shape arithmetic) from the table to the Add with the patch embedding; BEiT's
    relative-position bias takes 546. Read as the constant it is, the embedding's channels are
    cut with the patches' (here the group prunes); it was blamed as untracked data (the chain
    walk stopped at 64 nodes)."""
    import numpy as np

    b = models.Builder(7)
    x = b.input("x", [1, 4, 8])
    pos = b.weight(1, 4, 16)
    for _ in range(length):  # a chain of constant arithmetic, longer than the old walk's 64 nodes
        pos = b.op("Mul", [pos, b.const(np.array(1.0, np.float32), "one")])
    h = b.op("Add", [b.op("MatMul", [x, b.weight(8, 16)]), pos])
    model = b.build([b.op("MatMul", [b.relu(h), b.weight(16, 4)])])
    result = pipeline.prune(model, ratio=0.5)
    assert result.report["verified"]
    hidden = next(g for g in result.report["groups"] if g["channels_before"] == 16)
    assert hidden["pruned"] and hidden["channels_after"] == 8, hidden.get("reason")


@pytest.mark.slow
def test_hf_zoo_albert_and_dinov2_prune_from_the_command_line(tmp_path, monkeypatch):
    """``benchmarks/hf_zoo.py`` end to end on the two models whose fixes the tests above pin
    (ALBERT's token-type embedding, DINOv2's interpolated position embedding): exported from tiny
    configs, pruned by the CLI, proven, and written as a table."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    out = tmp_path / "hf.md"
    run = subprocess.run([sys.executable, str(root / "benchmarks" / "hf_zoo.py"), "--models", "albert,dinov2",
                          "--out", str(out)], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "ONNXPRUNER_ZOO_CACHE": str(tmp_path)}, cwd=root)
    assert run.returncode == 0, run.stderr
    text = out.read_text()
    assert "2 of 2 models ran; verified 2/2" in text and "failed 0" in text, text


def test_a_bias_gathered_by_a_large_int64_index_is_read_as_a_constant():
    """BEiT's relative-position bias is gathered from its table by an int64 index built in the
    graph from a [17, 17] constant (ScatterND): integer data larger than a shape operand, but
    64-bit, so an index, not a quantized weight (int8/uint8 Cast × scale stays a barrier). The
    bias is read as a constant and the heads it is added to prune."""
    import numpy as np

    b = models.Builder(9)
    x = b.input("x", [1, 4, 8])
    index = b.const(np.random.default_rng(0).integers(0, 40, (16, 8)).astype(np.int64), "index")
    bias = b.op("ReduceSum", [b.op("Gather", [b.weight(40), index]), b.const(np.array([1], np.int64), "axes")],
                keepdims=0)
    h = b.op("Add", [b.op("MatMul", [x, b.weight(8, 16)]), bias])
    model = b.build([b.op("MatMul", [b.relu(h), b.weight(16, 4)])])
    result = pipeline.prune(model, ratio=0.5)
    assert result.report["verified"]
    hidden = next(g for g in result.report["groups"] if g["channels_before"] == 16)
    assert hidden["pruned"] and hidden["channels_after"] == 8, hidden.get("reason")
