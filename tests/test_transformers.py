"""Transformers: MLP channels prune (BERT and ViT from ``transformers``, torchvision's ViT), proven
by the mask-equivalence check; what stays (the residual stream through LayerNorm, attention
heads behind computed Reshapes, GPT-2's Conv1D reshapes) is left alone with a named reason.

PyTorch without constant folding exports ``Linear`` on 3-D input as ``MatMul(x, Transpose(W))``:
the transposed initializer is a constant weight (``Graph.const_array``), rewritten as a new
initializer when sliced."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import models
import pipeline
from passes.validate import run_model, sample_inputs
from transformer_models import export


def linear_mlp() -> onnx.ModelProto:
    """x[1, 4, 8] -> MatMul(Transpose(W1 [16, 8])) + b1 -> Relu -> MatMul(Transpose(W2 [8, 16])) -> y"""
    b = models.Builder(3)
    x = b.input("x", [1, 4, 8])
    h = b.op("MatMul", [x, b.op("Transpose", [b.weight(16, 8)], perm=[1, 0])])
    h = b.relu(b.op("Add", [b.weight(16, prefix="b"), h]))
    y = b.op("MatMul", [h, b.op("Transpose", [b.weight(8, 16)], perm=[1, 0])])
    return b.build([y])


def test_matmul_with_a_transposed_initializer_prunes_and_loses_the_transpose():
    model = linear_mlp()
    result = pipeline.prune(model, ratio=0.5)
    rep = result.report
    assert rep["verified"] is True
    hidden = [g for g in rep["groups"] if g["channels_before"] == 16]
    assert len(hidden) == 1 and hidden[0]["channels_after"] == 8
    inits = {t.name: tuple(t.dims) for t in result.model.graph.initializer}
    matmuls = [n for n in result.model.graph.node if n.op_type == "MatMul"]
    # both weights are now plain initializers in MatMul layout, sliced along the hidden axis
    assert [inits.get(n.input[1]) for n in matmuls] == [(8, 8), (8, 8)]
    assert not any(n.op_type == "Transpose" for n in result.model.graph.node)
    feeds = sample_inputs(model, 0)
    assert run_model(result.model, feeds)[0].shape == run_model(model, feeds)[0].shape


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("transformers")


def named_blocker(reason: str) -> bool:
    """A reason for leaving a group alone names the node that blocked it, or the graph output."""
    return "(node '" in reason or "graph output" in reason


@pytest.mark.parametrize("kind", ["bert", "hf-vit", "tv-vit"])
def test_transformer_mlp_channels_prune_and_stay_equivalent(kind, folder):
    result = pipeline.prune(export(kind, folder), ratio=0.5)
    rep = result.report
    assert rep["verified"] is True and rep["max_abs_diff"] < 1e-3
    pruned = [g for g in rep["groups"] if g.get("pruned")]
    # one MLP intermediate group per layer (2 layers, 64 -> 32 channels)
    assert len(pruned) == 2, [g["roots"] for g in pruned]
    assert all(g["channels_before"] == 64 and g["channels_after"] == 32 for g in pruned)
    assert rep["params_after"] <= rep["params_before"] - 2 * 2 * 32 * 32
    left = [g for g in rep["groups"] if not g.get("pruned")]
    assert all(named_blocker(g["reason"]) for g in left), [g["reason"] for g in left]


def test_gpt2_prunes_what_it_can_prove_and_names_the_rest(folder):
    result = pipeline.prune(export("gpt2", folder), ratio=0.5)
    rep = result.report
    assert rep["verified"] is True
    left = [g for g in rep["groups"] if not g.get("pruned")]
    assert all(named_blocker(g["reason"]) for g in left), [g["reason"] for g in left]
    out = run_model(result.model, sample_inputs(result.model, 0))[0]
    assert out.shape == (1, 16, 32) and np.isfinite(out).all()
