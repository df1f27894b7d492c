"""Models the team never exported: PaddleOCR's networks as paddle2onnx and others wrote them
(``third_party.py``). They prune with no unexpected barrier and stay mask-equivalent; what is left
alone is the head feeding the graph output, a Softmax over channels, or a computed reshape."""

from __future__ import annotations

import onnx
import pytest

import pipeline
from third_party import Unavailable, models

# model -> (largest share of float parameters that may remain at ratio 0.5, blockers allowed)
EXPECTED = {
    "ch_PP-OCRv4_det_infer": (0.35, ("graph output",)),
    "ch_PP-OCRv4_rec_infer": (0.5, ("Reshape to a computed shape", "Reshape with an unknown per-sample shape")),
    "ch_ppocr_mobile_v2.0_cls_infer": (0.35, ("Softmax over the channel axis",)),
    "PP-OCRv6_det_tiny": (0.35, ("graph output",)),
}


@pytest.fixture(scope="module")
def paths():
    try:
        return models()
    except Unavailable as exc:  # no network: nothing to test here
        pytest.skip(str(exc))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_third_party_model_prunes_and_stays_equivalent(name, paths):
    keep_at_most, allowed = EXPECTED[name]
    original = onnx.load(str(paths[name]))
    before = original.SerializeToString()
    rep = pipeline.prune(paths[name], ratio=0.5).report
    assert rep["verified"] is True
    assert 0 < rep["params_after"] < keep_at_most * rep["params_before"]
    left = [g for g in rep["groups"] if not g.get("pruned")]
    assert all(any(a in g["reason"] for a in allowed) for g in left), [g["reason"] for g in left]
    assert onnx.load(str(paths[name])).SerializeToString() == before  # the input is never modified


def test_weight_only_quantized_model_is_left_whole_and_says_why(paths):
    """PP-OCRv6's tiny recognizer computes each weight as Cast(int8) × scale: not a constant we
    may cut without dequantizing it, so nothing is pruned and inspect names the reason."""
    path = paths["PP-OCRv6_rec_tiny"]
    rep = pipeline.prune(path, ratio=0.5).report
    assert rep["verified"] is True and rep["params_after"] == rep["params_before"]
    info = pipeline.inspect(path)
    assert any(b["op"] == "Conv" and "weight is not a constant" in b["reason"] for b in info["barriers"]), info["barriers"]
