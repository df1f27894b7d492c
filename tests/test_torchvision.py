"""Real models exported from PyTorch (torchvision definitions, random init): every ratio and
scope prunes, verifies (mask-equivalence), shrinks parameters and FLOPs, keeps output shapes."""

from __future__ import annotations

import warnings

import onnx
import pytest

import pipeline
from passes.inputs import sample_inputs
from passes.runtime import run_model
from torchvision_models import SIZES, export

MODELS = sorted(SIZES)


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("torchvision")
    cache = {}

    def get(name, opset=17):
        if (name, opset) not in cache:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cache[name, opset] = export(name, folder, opset=opset)
        return cache[name, opset]

    return get


@pytest.mark.parametrize("name", MODELS)
def test_torchvision_model_prunes_at_every_ratio_and_scope(name, exported):
    path = exported(name)
    original = onnx.load(str(path))
    feeds = sample_inputs(original, 0)
    want_shapes = [o.shape for o in run_model(original, feeds)]
    last_params = None
    for scope in ("tree", "node"):
        for ratio in (0.3, 0.5, 0.7):
            result = pipeline.prune(path, ratio=ratio, scope=scope)
            rep = result.report
            assert rep["verified"] is True, (name, scope, ratio)
            assert rep["params_after"] < rep["params_before"]
            assert rep["flops_after"] < rep["flops_before"]
            got = run_model(result.model, feeds)
            assert [o.shape for o in got] == want_shapes
            pruned_groups = [g for g in rep["groups"] if g.get("pruned")]
            assert pruned_groups, "no group was pruned"
            if scope == "tree":  # a larger ratio removes more
                assert last_params is None or rep["params_after"] < last_params
                last_params = rep["params_after"]
    # the only groups left alone are the classifier heads feeding the graph output
    left = [g for g in rep["groups"] if not g.get("pruned")]
    assert all("graph output" in g["reason"] for g in left), left


@pytest.mark.parametrize("name,opset", [("resnet18", 9), ("mobilenet_v2", 9), ("squeezenet1_1", 11),
                                        ("efficientnet_b0", 13), ("googlenet", 9)])
def test_older_opset_exports_prune_and_stay_equivalent(name, opset, exported):
    """Old forms: Clip/Pad/Dropout with attributes, Upsample-era ops, opset-9 BatchNormalization;
    EfficientNet's squeeze-excitation Mul couples its two branches."""
    model = onnx.load(str(exported(name, opset)))
    assert model.opset_import[0].version == opset
    result = pipeline.prune(model, ratio=0.5)
    assert result.report["verified"] is True
    assert result.report["params_after"] < 0.6 * result.report["params_before"]
    left = [g for g in result.report["groups"] if not g.get("pruned")]
    assert all("graph output" in g["reason"] for g in left), left
