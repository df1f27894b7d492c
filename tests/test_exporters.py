"""ONNX files from other exporters and converters: the dynamo exporter (opset 18+, BatchNorm
folded into Conv, its own node names), ``onnx.version_converter`` from opset 9 up, all pruned and
proven by the mask-equivalence check."""

from __future__ import annotations

import warnings

import onnx
import pytest

import pipeline
from torchvision_models import seeded


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_dynamo_export_prunes_and_stays_equivalent(name, tmp_path):
    import torch

    path = tmp_path / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(seeded(name), (torch.randn(1, 3, 64, 64),), dynamo=True, verbose=False).save(str(path))
    model = onnx.load(str(path))
    assert {o.domain: o.version for o in model.opset_import}[""] >= 18
    assert not any(n.op_type == "BatchNormalization" for n in model.graph.node)  # folded into Conv
    rep = pipeline.prune(model, ratio=0.5).report
    assert rep["verified"] is True
    assert rep["params_after"] < 0.4 * rep["params_before"]
    left = [g for g in rep["groups"] if not g.get("pruned")]
    assert all("graph output" in g["reason"] for g in left), left


# the dynamo exporter's own idioms (benchmarks/dynamo_zoo.py): ShuffleNet's torch.chunk as Split-18
# num_outputs; BERT's Kᵀ through [-1, S, D] (batch and heads merged); Llama's repeat_kv merged with it
# into [KV·n_rep, S, D] (the head split's lookahead passes that merge for free; --gqa queries
# recognizes it, and repeat_kv's V merge though dynamo sets allowzero=1 on it)
@pytest.mark.parametrize("name,heads,gqa", [("shufflenet_v2_x0_5", None, None), ("bert", (4, 2), None),
                                            ("llama", (2, 1), None), ("llama", (4, 2), "queries")])
def test_dynamo_idioms_prune_and_stay_equivalent(name, heads, gqa, tmp_path):
    import torch

    from benchmarks import dynamo_zoo

    model, feeds = dynamo_zoo.build(name)
    path = tmp_path / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, tuple(torch.from_numpy(v) for v in feeds.values()), dynamo=True,
                          input_names=list(feeds), verbose=False).save(str(path))
    rep = pipeline.prune(onnx.load(str(path)), ratio=0.5, sample_inputs=feeds, gqa=gqa).report
    assert rep["verified"] is True
    left = [g for g in rep["groups"] if not g.get("pruned")]
    kept = "gqa=queries keeps every KV head"
    assert all("graph output" in g["reason"] or gqa and kept in g["reason"] for g in left), left
    if heads:
        attention = [(g["channels_before"], g["channels_after"]) for g in rep["groups"]
                     if g.get("heads") and kept not in (g.get("reason") or "")]
        assert attention and set(attention) == {heads}, attention
    if gqa:  # K and V of both layers
        assert sum(kept in (g.get("reason") or "") for g in left) == 4, left


@pytest.mark.parametrize("target", [13, 18, 21])
def test_version_converted_model_prunes_and_stays_equivalent(target, tmp_path):
    """Exported at opset 9 (attribute forms), converted up (the converter cannot go down past
    BatchNormalization-15)."""
    from torchvision_models import export

    model = onnx.load(str(export("resnet18", tmp_path, size=64, opset=9)))
    converted = onnx.version_converter.convert_version(model, target)
    assert {o.domain: o.version for o in converted.opset_import}[""] == target
    rep = pipeline.prune(converted, ratio=0.5).report
    assert rep["verified"] is True
    assert rep["params_after"] < 0.4 * rep["params_before"]
