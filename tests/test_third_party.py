"""Models the team never exported: PaddleOCR's networks as paddle2onnx and others wrote them
(``third_party.py``). They prune with no unexpected barrier and stay mask-equivalent; what is left
alone is the head feeding the graph output, a Softmax over channels, or a computed reshape."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import pipeline
from conftest import fetched_or_skip
from third_party import models

# model -> (largest share of float parameters that may remain at ratio 0.5, blockers allowed)
EXPECTED = {
    # at 0.2 on an image of strokes (below): on random images, or once 0.3 of its channels are
    # masked, its Sigmoid is 0 everywhere and the proof would compare nothing
    "ch_PP-OCRv4_det_infer": (0.7, ("graph output",)),
    "ch_PP-OCRv4_rec_infer": (0.5, ("Reshape to a computed shape", "Reshape with an unknown per-sample shape")),
    "ch_ppocr_mobile_v2.0_cls_infer": (0.35, ("Softmax over the channel axis",)),
    "PP-OCRv6_det_tiny": (0.35, ("graph output",)),
    # bidirectional LSTM units prune (W, R, B gate rows; the classifier's columns); its Reshape_101
    # target is read (one non-static element as -1) and its channel map found to vary with the
    # symbolic dims: the same group stays, the same 5,490,634 parameters kept
    "common": (0.75, ("graph output", "Reshape to a computed shape whose channel map depends on symbolic dims")),
}


# model -> (ratio, inputs) where the default 0.5 on guessed inputs proves nothing
PROVEN_ON = {"ch_PP-OCRv4_det_infer": (0.2, "strokes")}


def _strokes() -> dict:
    """A normalized white 64x64 image with eight dark vertical strokes: text to the detector."""
    img = np.full((1, 3, 64, 64), 2.2, np.float32)
    for c in range(8, 56, 6):
        img[:, :, 24:34, c:c + 3] = -2.0
    return {"x": img}


@pytest.fixture(scope="module")
def paths():
    return fetched_or_skip(models)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_third_party_model_prunes_and_stays_equivalent(name, paths):
    keep_at_most, allowed = EXPECTED[name]
    original = onnx.load(str(paths[name]))
    before = original.SerializeToString()
    ratio, inputs = PROVEN_ON.get(name, (0.5, None))
    rep = pipeline.prune(paths[name], ratio=ratio, sample_inputs=_strokes() if inputs else None).report
    assert rep["verified"] is True
    assert 0 < rep["params_after"] < keep_at_most * rep["params_before"]
    left = [g for g in rep["groups"] if not g.get("pruned")]
    assert all(any(a in g["reason"] for a in allowed) for g in left), [g["reason"] for g in left]
    assert onnx.load(str(paths[name])).SerializeToString() == before  # the input is never modified


def test_text_detector_on_guessed_inputs_is_refused_naming_its_one_value_output(paths):
    """Its Sigmoid underflows to 0 everywhere on random images: it was "verified" on outputs that
    any logits below -88 match. Now one error naming the output, with the --inputs hint."""
    from passes.inputs import InputsError

    with pytest.raises(pipeline.PipelineError) as info:
        pipeline.prune(paths["ch_PP-OCRv4_det_infer"], ratio=0.5)
    assert isinstance(info.value.__cause__, InputsError), repr(info.value)
    text = str(info.value.__cause__)
    assert "output 'sigmoid_0.tmp_0'" in text and "the same value (0) everywhere" in text and "--inputs" in text


def test_weight_only_quantized_model_is_left_whole_and_says_why(paths):
    """PP-OCRv6's tiny recognizer computes each weight as Cast(int8) × scale: not a constant we
    may cut without dequantizing it, so nothing is pruned and inspect names the reason."""
    path = paths["PP-OCRv6_rec_tiny"]
    rep = pipeline.prune(path, ratio=0.5).report
    assert rep["verified"] is True and rep["params_after"] == rep["params_before"]
    info = pipeline.inspect(path)
    assert any(b["op"] == "Conv" and "weight is not a constant" in b["reason"] for b in info["barriers"]), info["barriers"]


# Silero VAD (third_party.trained_models): the frame, the LSTM state and the sample rate agree
SILERO = ("silero_vad", "silero_vad_op18_ifless", "silero_vad_half", "silero_vad_16k_op15")


@pytest.mark.parametrize("name", SILERO)
def test_voice_activity_models_lose_a_fifth_inside_their_if_branches(name, trained):
    """Each branch of the If is pruned as a model of its own and proven (the 8 kHz one on the
    frame resized to a length it runs on); what leaves a body and the state stay whole."""
    path = trained[f"silero-vad/{name}"]
    model = onnx.load(str(path))
    rng = np.random.default_rng(0)
    feeds = {"input": (rng.standard_normal((1, 576)) * 0.1).astype(np.float32),
             "state": np.zeros((2, 1, 128), np.float32)}
    for sr in (i for i in model.graph.input if i.name == "sr"):  # the 16 kHz-only exports have none
        feeds["sr"] = np.full([1] * len(sr.type.tensor_type.shape.dim), 16000, np.int64)
    rep = pipeline.prune(path, ratio=0.5, sample_inputs=feeds).report
    assert rep["verified"] is True
    assert rep["params_after"] < 0.8 * rep["params_before"], (rep["params_before"], rep["params_after"])


@pytest.fixture(scope="module")
def wake_words():
    from third_party import wake_word_models

    return fetched_or_skip(wake_word_models)


@pytest.mark.parametrize("name", ["alexa_v0.1", "hey_jarvis_v0.1", "hey_mycroft_v0.1", "hey_rhasspy_v0.1",
                                  "timer_v0.1", "weather_v0.1"])
def test_wake_word_mlps_lose_their_hidden_units_through_layernorm(name, wake_words):
    """openWakeWord's trained classifiers (never exported by us): both hidden layers lose half
    their units, through the decomposed LayerNorm where there is one (its mean and variance keep
    the original width), proven; the one-unit score head (or the timer's Softmax) stays."""
    path = wake_words[name]
    original = onnx.load(str(path))
    rep = pipeline.prune(path, ratio=0.5).report
    assert rep["verified"] is True
    assert rep["params_after"] < 0.55 * rep["params_before"], (rep["params_before"], rep["params_after"])
    pruned = [g for g in rep["groups"] if g.get("pruned")]
    assert len(pruned) >= 2 and all(g["channels_after"] == g["channels_before"] // 2 for g in pruned)
    if any(n.op_type == "ReduceMean" for n in original.graph.node):   # a LayerNorm written out
        assert any(g.get("stream") for g in pruned)


def test_model_the_full_checker_rejects_is_refused_naming_the_node(tmp_path):
    """speechmos' AECMOS (torch 1.9's export) runs in ONNX Runtime at a batch of one, but its
    graph output declares rank 1 where shape inference finds a scalar: the input's own fault, so
    one line blames the input and names the node, exit 1, nothing written, the input untouched."""
    import subprocess
    import sys
    from pathlib import Path

    from third_party import aecmos_model

    path = fetched_or_skip(aecmos_model)
    before = path.read_bytes()
    out = tmp_path / "out.onnx"
    console = Path(sys.executable).parent / "onnxpruner"
    proc = subprocess.run([str(console), "prune", str(path), "-o", str(out), "--ratio", "0.3", "--no-latency",
                           "--input-shape", "input:1,3,64,160"], capture_output=True, text=True)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and not out.exists() and path.read_bytes() == before
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in proc.stderr, proc.stderr
    assert "the input fails onnx.checker" in lines[0] and "Concat_49" in lines[0], lines[0]


def test_npm_tarball_without_network_is_unavailable_and_leaves_no_file(tmp_path, monkeypatch):
    """No registry (here a closed local port): ``Unavailable`` (the tests skip, as for wheels),
    nothing half-written in the cache."""
    import third_party

    monkeypatch.setattr(third_party, "CACHE", tmp_path)
    monkeypatch.setattr(third_party, "REGISTRY", "http://127.0.0.1:9")
    with pytest.raises(third_party.Unavailable, match="could not be fetched"):
        third_party.npm_models({"openwakeword-js@0.1.27": ("package/models/hello_deepa.onnx",)})
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
