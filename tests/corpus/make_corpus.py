"""Write the third-party corpus: small ONNX files as other exporters write them.

Each source runs in the environment that has its exporter (never the project's venv, except
``torch`` and ``helper``, which need only torch / onnx), and is run by hand, once; the files are
committed, and the tests only read them (the exporters are not test dependencies):

    .venv/bin/python                tests/corpus/make_corpus.py helper torch   # torch also writes raw/ for the next two
    /work/venvs/sim/bin/python      tests/corpus/make_corpus.py onnxsim onnxslim
    /work/venvs/skl/bin/python      tests/corpus/make_corpus.py skl2onnx
    /work/venvs/tf/bin/python       tests/corpus/make_corpus.py tf2onnx
    /work/venvs/paddle/bin/python   tests/corpus/make_corpus.py paddle2onnx
    /work/venvs/jax/bin/python      tests/corpus/make_corpus.py jax2onnx

The venvs (outside the repo, one per exporter):

    python3.11 -m venv /work/venvs/sim    && /work/venvs/sim/bin/pip install onnxsim==0.8.1 onnxslim onnx==1.17.0
    python3.11 -m venv /work/venvs/skl    && /work/venvs/skl/bin/pip install skl2onnx==1.20.0 scikit-learn onnxruntime
    python3.11 -m venv /work/venvs/tf     && /work/venvs/tf/bin/pip install tensorflow-cpu==2.21.0 tf2onnx==1.17.0
    python3.11 -m venv /work/venvs/paddle && /work/venvs/paddle/bin/pip install paddlepaddle==3.3.1 paddle2onnx==2.1.0 packaging
    python3.11 -m venv /work/venvs/jax    && /work/venvs/jax/bin/pip install jax2onnx==0.17.1

Pins used: onnx 1.17.0 + torch 2.13.0 (the project's), onnxsim 0.8.1, onnxslim, skl2onnx 1.20.0,
tensorflow-cpu 2.21.0 + tf2onnx 1.17.0, paddlepaddle 3.3.1 + paddle2onnx 2.1.0, jax2onnx 0.17.1
(each source records the versions it really ran with in MANIFEST).

Weights are random but seeded (and perturbed, so no exporter deduplicates equal tensors); every
file stays under 500 KB. MANIFEST has one tab-separated line per file:
``file  source  exporter-and-version  inputs`` where inputs is ``;``-separated
``name:dtype[d1,d2,…]`` with ``=V`` for a constant value (``sr:int64[]=16000``) or ``<N`` for
integers drawn below N (token ids): what the tests feed the model.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RAW = HERE / "raw"  # torch exports before simplification (not committed)
MANIFEST = HERE / "MANIFEST"
MAX_BYTES = 500 * 1024


def record(path: Path, source: str, exporter: str, inputs: str) -> None:
    """Check the file and put its line in MANIFEST (replacing an older line for it)."""
    import onnx

    size = path.stat().st_size
    assert size < MAX_BYTES, f"{path.name} is {size} bytes"
    onnx.load(str(path))  # readable
    lines = MANIFEST.read_text().splitlines() if MANIFEST.exists() else []
    header = "# file\tsource\texporter\tinputs"
    lines = [ln for ln in lines if ln and not ln.startswith("#") and ln.split("\t")[0] != path.name]
    lines.append("\t".join([path.name, source, exporter, inputs]))
    MANIFEST.write_text("\n".join([header, *sorted(lines)]) + "\n")
    print(f"wrote {path.name} ({size} bytes): {inputs}")


def version(dist: str) -> str:
    from importlib.metadata import version as v

    return f"{dist} {v(dist)}"


# ---------------------------------------------------------------- onnx.helper: Caffe2-era IR 3
def helper() -> None:
    """IR-3, opset-9 files whose initializers are ALSO listed as graph inputs, with Caffe2-style
    names (``fire2/squeeze1x1_w_0``): what every file of the old model zoo looks like."""
    import onnx
    from onnx import TensorProto, helper as h, numpy_helper

    rng = np.random.default_rng(9)
    exporter = f"onnx.helper ({version('onnx')}), IR 3, opset 9"

    def build(name, nodes, inits, x_shape, out_name, out_shape):
        graph = h.make_graph(
            nodes, name,
            [h.make_tensor_value_info("data_0", TensorProto.FLOAT, x_shape)]
            + [h.make_tensor_value_info(k, TensorProto.FLOAT, v.shape) for k, v in inits.items()],
            [h.make_tensor_value_info(out_name, TensorProto.FLOAT, out_shape)],
            [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()])
        model = h.make_model(graph, opset_imports=[h.make_opsetid("", 9)], producer_name="onnx-caffe2")
        model.ir_version = 3
        onnx.checker.check_model(model)
        path = HERE / f"{name}.onnx"
        onnx.save(model, str(path))
        record(path, "onnx.helper", exporter, f"data_0:float32{list(x_shape)}".replace(" ", ""))

    def conv(nodes, inits, x, name, cin, cout, k, stride=1, pad=0, relu=True, group=1):
        w, b = f"{name}_w_0", f"{name}_b_0"
        inits[w] = rng.standard_normal((cout, cin // group, k, k)) * (2.0 / (cin * k * k / group)) ** 0.5
        inits[b] = rng.standard_normal(cout) * 0.1
        nodes.append(h.make_node("Conv", [x, w, b], [f"{name}_1"], name=name, kernel_shape=[k, k],
                                 strides=[stride, stride], pads=[pad] * 4, group=group))
        if not relu:
            return f"{name}_1"
        nodes.append(h.make_node("Relu", [f"{name}_1"], [f"{name}_2"], name=f"{name}_relu"))
        return f"{name}_2"

    # SqueezeNet-style: conv, maxpool, two fire modules (squeeze 1x1, expand 1x1 + 3x3, Concat),
    # conv10, GlobalAveragePool, Softmax
    nodes, inits = [], {}
    x = conv(nodes, inits, "data_0", "conv1", 3, 16, 3, stride=2)
    nodes.append(h.make_node("MaxPool", [x], ["pool1_0"], name="pool1", kernel_shape=[3, 3], strides=[2, 2]))
    x, cin = "pool1_0", 16
    for fire, (sq, ex) in (("fire2", (8, 16)), ("fire3", (8, 16))):
        s = conv(nodes, inits, x, f"{fire}/squeeze1x1", cin, sq, 1)
        e1 = conv(nodes, inits, s, f"{fire}/expand1x1", sq, ex, 1)
        e3 = conv(nodes, inits, s, f"{fire}/expand3x3", sq, ex, 3, pad=1)
        nodes.append(h.make_node("Concat", [e1, e3], [f"{fire}/concat_0"], name=f"{fire}/concat", axis=1))
        x, cin = f"{fire}/concat_0", 2 * ex
    x = conv(nodes, inits, x, "conv10", cin, 10, 1)
    nodes.append(h.make_node("GlobalAveragePool", [x], ["pool10_0"], name="pool10"))
    nodes.append(h.make_node("Flatten", ["pool10_0"], ["flat_0"], name="flatten", axis=1))
    nodes.append(h.make_node("Softmax", ["flat_0"], ["softmaxout_1"], name="softmax", axis=1))
    build("ir3_squeezenet", nodes, inits, (1, 3, 32, 32), "softmaxout_1", (1, 10))

    # AlexNet / CaffeNet-style: conv-relu-LRN-maxpool twice, then Gemm (transB=1) with Dropout
    nodes, inits = [], {}
    x = conv(nodes, inits, "data_0", "conv1", 3, 12, 5, stride=2, pad=2)
    nodes.append(h.make_node("LRN", [x], ["norm1_1"], name="norm1", size=5, alpha=1e-4, beta=0.75, bias=1.0))
    nodes.append(h.make_node("MaxPool", ["norm1_1"], ["pool1_1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]))
    x = conv(nodes, inits, "pool1_1", "conv2", 12, 24, 3, pad=1, group=2)
    x = conv(nodes, inits, x, "conv3", 24, 24, 3, pad=1)
    nodes.append(h.make_node("MaxPool", [x], ["pool5_1"], name="pool5", kernel_shape=[2, 2], strides=[2, 2]))
    nodes.append(h.make_node("Flatten", ["pool5_1"], ["flat_1"], name="flatten", axis=1))
    feats = 24 * 4 * 4
    for i, (fin, fout) in enumerate(((feats, 48), (48, 32), (32, 10)), 6):
        w, b = f"fc{i}_w_0", f"fc{i}_b_0"
        inits[w] = rng.standard_normal((fout, fin)) * (2.0 / fin) ** 0.5
        inits[b] = rng.standard_normal(fout) * 0.1
        src = "flat_1" if i == 6 else f"drop{i - 1}_1"
        nodes.append(h.make_node("Gemm", [src, w, b], [f"fc{i}_1"], name=f"fc{i}", transB=1))
        if i < 8:
            nodes.append(h.make_node("Relu", [f"fc{i}_1"], [f"fc{i}_2"], name=f"relu{i}"))
            nodes.append(h.make_node("Dropout", [f"fc{i}_2"], [f"drop{i}_1"], name=f"drop{i}", ratio=0.5))
    nodes.append(h.make_node("Softmax", ["fc8_1"], ["prob_1"], name="prob"))
    build("ir3_caffenet", nodes, inits, (1, 3, 32, 32), "prob_1", (1, 10))


# ---------------------------------------------------------------- torch: state, scalar, token ids
def _perturb(model, seed):
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g) * 0.1)
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)
    return model.eval()


def _resblock_cnn():
    """conv+BN+ReLU stem, a residual block, a depthwise separable branch, a Concat, a dense head."""
    import torch
    from torch import nn

    def cbr(cin, cout, k=3, s=1, g=1):
        return nn.Sequential(nn.Conv2d(cin, cout, k, s, k // 2, groups=g, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = cbr(3, 16, s=2)
            self.a1, self.a2 = cbr(16, 24), nn.Sequential(nn.Conv2d(24, 16, 3, 1, 1), nn.BatchNorm2d(16))
            self.dw, self.pw = cbr(16, 16, g=16), cbr(16, 24, k=1)
            self.mix = cbr(40, 32, s=2)
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(32, 24), nn.ReLU(), nn.Linear(24, 10))

        def forward(self, x):
            x = self.stem(x)
            x = torch.relu(x + self.a2(self.a1(x)))
            x = torch.cat([x, self.pw(self.dw(x))], 1)
            x = self.mix(x).mean((2, 3), keepdim=True)
            return self.head(x)

    return Net()


def _mobile_cnn():
    """Inverted residuals (expand 1x1, depthwise 3x3, project 1x1) with Hardswish, SE-free."""
    from torch import nn

    class IR(nn.Module):
        def __init__(self, c, e):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(c, e, 1, bias=False), nn.BatchNorm2d(e), nn.Hardswish(),
                                      nn.Conv2d(e, e, 3, 1, 1, groups=e, bias=False), nn.BatchNorm2d(e), nn.Hardswish(),
                                      nn.Conv2d(e, c, 1, bias=False), nn.BatchNorm2d(c))

        def forward(self, x):
            return x + self.body(x)

    return nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.Hardswish(),
                         IR(16, 48), IR(16, 32), nn.Conv2d(16, 40, 1), nn.BatchNorm2d(40), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(40, 10))


def torch_() -> None:
    """Exports with torch's exporter of the shapes users bring: a recurrent model with a state
    input and a scalar sample-rate input, a token-id model; and the raw CNN exports that the
    onnxsim / onnxslim sources simplify (raw/, not committed)."""
    import torch
    from torch import nn

    exporter = f"torch.onnx.export ({version('torch')}, dynamo=False), opset 17"
    torch.manual_seed(0)

    class VAD(nn.Module):
        """Silero-style: conv front end, a GRU whose state [layers, batch, hidden] is an input and
        an output, and a head chosen by the int64 scalar ``sr`` (If on sr == 16000)."""

        def __init__(self):
            super().__init__()
            self.front = nn.Sequential(nn.Conv1d(8, 32, 3, padding=1), nn.BatchNorm1d(32), nn.ReLU(),
                                       nn.Conv1d(32, 32, 3, padding=1), nn.ReLU())
            self.gru = nn.GRU(32, 24, batch_first=True)
            self.head16 = nn.Sequential(nn.Linear(24, 16), nn.ReLU(), nn.Linear(16, 1))
            self.head8 = nn.Sequential(nn.Linear(24, 16), nn.ReLU(), nn.Linear(16, 1))

        def forward(self, x, state, sr):
            y = self.front(x.transpose(1, 2)).transpose(1, 2)
            y, hn = self.gru(y, state)
            y = y[:, -1]
            if bool(sr == 16000):
                out = self.head16(y)
            else:
                out = self.head8(y)
            return torch.sigmoid(out), hn

    vad = torch.jit.script(_perturb(VAD(), 1))  # scripted: the branch on sr stays an ONNX If
    args = (torch.randn(1, 10, 8), torch.zeros(1, 1, 24), torch.tensor(16000))
    path = HERE / "torch_gru_state_sr.onnx"
    torch.onnx.export(vad, args, str(path), dynamo=False, opset_version=17, do_constant_folding=False,
                      input_names=["input", "state", "sr"], output_names=["output", "stateN"],
                      dynamic_axes={"input": {0: "batch", 1: "frames"}, "state": {1: "batch"},
                                    "output": {0: "batch"}, "stateN": {1: "batch"}})
    record(path, "torch", exporter.replace("export (", "export of a torch.jit.script module ("),
           "input:float32[2,10,8];state:float32[1,2,24];sr:int64[]=16000")

    class Tokens(nn.Module):
        """Embedding (Gather on int64 ids) -> Conv1d+BN+ReLU -> depthwise Conv1d -> mean -> MLP."""

        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(100, 32)
            self.conv = nn.Sequential(nn.Conv1d(32, 48, 3, padding=1), nn.BatchNorm1d(48), nn.ReLU(),
                                      nn.Conv1d(48, 48, 3, padding=1, groups=48), nn.ReLU())
            self.mlp = nn.Sequential(nn.Linear(48, 64), nn.ReLU(), nn.Linear(64, 5))

        def forward(self, ids):
            y = self.conv(self.emb(ids).transpose(1, 2)).mean(2)
            return self.mlp(y)

    path = HERE / "torch_embed_tokens.onnx"
    torch.onnx.export(_perturb(Tokens(), 2), (torch.randint(0, 100, (1, 12)),), str(path), dynamo=False,
                      opset_version=17, do_constant_folding=False, input_names=["input_ids"],
                      output_names=["logits"], dynamic_axes={"input_ids": {0: "batch", 1: "seq"}})
    record(path, "torch", exporter, "input_ids:int64[2,12]<100")

    RAW.mkdir(exist_ok=True)
    for name, net, seed in (("resblock", _resblock_cnn(), 3), ("mobile", _mobile_cnn(), 4)):
        torch.onnx.export(_perturb(net, seed), (torch.randn(1, 3, 32, 32),), str(RAW / f"{name}.onnx"),
                          dynamo=False, opset_version=13, do_constant_folding=False, input_names=["input"],
                          output_names=["output"], dynamic_axes={"input": {0: "N"}, "output": {0: "N"}})
    print(f"raw exports in {RAW}")


# ---------------------------------------------------------------- onnxsim / onnxslim
def onnxsim() -> None:
    import onnx
    from onnxsim import simplify

    model, ok = simplify(onnx.load(str(RAW / "resblock.onnx")))
    assert ok
    path = HERE / "onnxsim_resblock.onnx"
    onnx.save(model, str(path))
    record(path, "onnxsim", f"torch.onnx.export (torch 2.13.0, opset 13) + onnxsim.simplify ({version('onnxsim')})",
           "input:float32[2,3,32,32]")


def onnxslim() -> None:
    import onnx
    import onnxslim as slim

    for name in ("mobile", "resblock"):
        model = slim.slim(onnx.load(str(RAW / f"{name}.onnx")))
        path = HERE / f"onnxslim_{name}.onnx"
        onnx.save(model, str(path))
        record(path, "onnxslim", f"torch.onnx.export (torch 2.13.0, opset 13) + onnxslim.slim ({version('onnxslim')})",
               "input:float32[2,3,32,32]")


# ---------------------------------------------------------------- skl2onnx
def skl2onnx() -> None:
    from sklearn.datasets import load_digits
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from skl2onnx import to_onnx

    x, y = load_digits(return_X_y=True)
    x = x.astype(np.float32)
    exporter = f"skl2onnx.to_onnx ({version('skl2onnx')}, {version('scikit-learn')}), target opset 17"
    jobs = (
        ("skl_mlp_zipmap", MLPClassifier(hidden_layer_sizes=(32, 16), max_iter=60, random_state=0), {}),
        ("skl_scaler_mlp", make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(32,), max_iter=60, random_state=0)), {}),
        ("skl_mlp_nozipmap", MLPClassifier(hidden_layer_sizes=(24, 24), activation="tanh", max_iter=60, random_state=1),
         {"options": {"zipmap": False}}),
    )
    import warnings

    for name, est, extra in jobs:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est.fit(x, y)
        model = to_onnx(est, x[:1], target_opset={"": 17, "ai.onnx.ml": 3}, **extra)
        path = HERE / f"{name}.onnx"
        path.write_bytes(model.SerializeToString())
        record(path, "skl2onnx", exporter, "X:float32[2,64]")
    # a regressor: a plain float output, tanh hidden layers
    reg = make_pipeline(StandardScaler(), MLPRegressor(hidden_layer_sizes=(32, 16), max_iter=60, random_state=2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reg.fit(x, y.astype(np.float32))
    model = to_onnx(reg, x[:1], target_opset={"": 17, "ai.onnx.ml": 3})
    path = HERE / "skl_scaler_mlpregressor.onnx"
    path.write_bytes(model.SerializeToString())
    record(path, "skl2onnx", exporter, "X:float32[2,64]")


# ---------------------------------------------------------------- tf2onnx
def tf2onnx() -> None:
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf
    import tf2onnx as t2o

    tf.keras.utils.set_random_seed(0)
    L = tf.keras.layers
    inp = L.Input((32, 32, 3), name="image")
    x = L.Conv2D(16, 3, strides=2, padding="same", use_bias=False)(inp)
    x = L.ReLU()(L.BatchNormalization()(x))
    y = L.ReLU()(L.BatchNormalization()(L.Conv2D(16, 3, padding="same")(x)))
    y = L.BatchNormalization()(L.Conv2D(16, 3, padding="same")(y))
    x = L.ReLU()(L.Add()([x, y]))
    z = L.ReLU()(L.BatchNormalization()(L.DepthwiseConv2D(3, padding="same")(x)))
    z = L.ReLU()(L.Conv2D(24, 1)(z))
    x = L.Concatenate()([x, z])
    x = L.ReLU()(L.BatchNormalization()(L.Conv2D(32, 3, strides=2, padding="same")(x)))
    x = L.GlobalAveragePooling2D()(x)
    x = L.Dense(24, activation="relu")(x)
    out = L.Dense(10, name="logits")(x)
    cnn = tf.keras.Model(inp, out)
    _keras_perturb(cnn)
    spec = (tf.TensorSpec((None, 32, 32, 3), tf.float32, name="image"),)
    exporter = f"tf2onnx.convert.from_keras ({version('tf2onnx')}, {version('tensorflow-cpu')}), opset 17"
    for name, extra, note in (("tf2onnx_cnn_nhwc", {}, ""),
                              ("tf2onnx_cnn_nhwc_noopt", {"optimizers": {}}, ", optimizers off")):
        path = HERE / f"{name}.onnx"
        t2o.convert.from_keras(cnn, input_signature=spec, opset=17, output_path=str(path), **extra)
        record(path, "tf2onnx", exporter + note, "image:float32[2,32,32,3]")

    # a Keras MLP and an LSTM with its initial state as inputs
    inp = L.Input((20,), name="features")
    x = L.Dense(48, activation="relu")(inp)
    x = L.Dropout(0.2)(x)
    x = L.Dense(32, activation="relu")(x)
    mlp = tf.keras.Model(inp, L.Dense(3, activation="softmax")(x))
    _keras_perturb(mlp)
    path = HERE / "tf2onnx_mlp.onnx"
    t2o.convert.from_keras(mlp, input_signature=(tf.TensorSpec((None, 20), tf.float32, name="features"),),
                           opset=17, output_path=str(path))
    record(path, "tf2onnx", exporter, "features:float32[2,20]")

    seq = L.Input((12, 6), name="seq")
    h0 = L.Input((16,), name="h0")
    c0 = L.Input((16,), name="c0")
    x = L.Conv1D(16, 3, padding="same", activation="relu")(seq)
    x = L.LSTM(16)(x, initial_state=[h0, c0])
    x = L.Dense(12, activation="relu")(x)
    lstm = tf.keras.Model([seq, h0, c0], L.Dense(2)(x))
    _keras_perturb(lstm)
    path = HERE / "tf2onnx_lstm_state.onnx"
    t2o.convert.from_keras(lstm, input_signature=(tf.TensorSpec((None, 12, 6), tf.float32, name="seq"),
                                                  tf.TensorSpec((None, 16), tf.float32, name="h0"),
                                                  tf.TensorSpec((None, 16), tf.float32, name="c0")),
                           opset=17, output_path=str(path))
    record(path, "tf2onnx", exporter, "seq:float32[2,12,6];h0:float32[2,16];c0:float32[2,16]")


def _keras_perturb(model) -> None:
    rng = np.random.default_rng(7)
    for layer in model.layers:
        ws = layer.get_weights()
        if not ws:
            continue
        if layer.__class__.__name__ == "BatchNormalization":  # gamma, beta, mean, var
            ws = [w + rng.standard_normal(w.shape).astype(w.dtype) * 0.1 for w in ws[:3]] + [ws[3] + rng.random(ws[3].shape).astype(ws[3].dtype)]
        else:
            ws = [w + rng.standard_normal(w.shape).astype(w.dtype) * 0.05 for w in ws]
        layer.set_weights(ws)


# ---------------------------------------------------------------- paddle2onnx
def paddle2onnx() -> None:
    import paddle
    import paddle2onnx as p2o
    from paddle import nn

    paddle.seed(0)

    def cbr(cin, cout, k=3, s=1, g=1):
        return nn.Sequential(nn.Conv2D(cin, cout, k, s, k // 2, groups=g, bias_attr=False), nn.BatchNorm2D(cout), nn.ReLU())

    class Net(nn.Layer):
        def __init__(self):
            super().__init__()
            self.stem = cbr(3, 16, s=2)
            self.b1, self.b2 = cbr(16, 16), nn.Sequential(nn.Conv2D(16, 16, 3, 1, 1), nn.BatchNorm2D(16))
            self.dw, self.pw = cbr(16, 16, g=16), cbr(16, 16, k=1)
            self.mix = cbr(32, 24, s=2)
            self.fc1, self.fc2 = nn.Linear(24, 16), nn.Linear(16, 10)

        def forward(self, x):
            x = self.stem(x)
            x = nn.functional.relu(x + self.b2(self.b1(x)))
            x = paddle.concat([x, self.pw(self.dw(x))], 1)
            x = self.mix(x).mean((2, 3))
            return self.fc2(nn.functional.relu(self.fc1(x)))

    class MLP(nn.Layer):
        def __init__(self):
            super().__init__()
            self.l1, self.l2, self.l3 = nn.Linear(16, 40), nn.Linear(40, 24), nn.Linear(24, 4)

        def forward(self, x):
            return self.l3(nn.functional.relu(self.l2(nn.functional.relu(self.l1(x)))))

    import tempfile

    exporter = f"paddle.jit.save + paddle2onnx.export ({version('paddle2onnx')}, {version('paddlepaddle')}), opset 13"
    for name, net, shape, in_name in (("paddle_cnn", Net(), [None, 3, 32, 32], "x"), ("paddle_mlp", MLP(), [None, 16], "x")):
        rng = np.random.default_rng(5)
        for p in net.parameters():
            p.set_value(p.numpy() + rng.standard_normal(p.shape).astype("float32") * 0.05)
        for layer in net.sublayers():
            if isinstance(layer, nn.BatchNorm2D):
                layer._mean.set_value(rng.standard_normal(layer._mean.shape).astype("float32") * 0.1)
                layer._variance.set_value(rng.random(layer._variance.shape).astype("float32") + 0.5)
        net.eval()
        with tempfile.TemporaryDirectory() as tmp:
            prefix = f"{tmp}/{name}"
            paddle.jit.save(net, prefix, input_spec=[paddle.static.InputSpec(shape, "float32", in_name)])
            model_file = next(p for p in (f"{prefix}.json", f"{prefix}.pdmodel") if Path(p).exists())
            path = HERE / f"{name}.onnx"
            p2o.export(model_file, f"{prefix}.pdiparams", str(path), opset_version=13)
        dims = ",".join(str(d if d and d > 0 else 2) for d in shape)
        record(path, "paddle2onnx", exporter, f"{in_name}:float32[{dims}]")


# ---------------------------------------------------------------- jax2onnx
def jax2onnx() -> None:
    """A flax.nnx CNN (NHWC, as JAX writes it) and MLP through jax2onnx's default opset (23),
    and the CNN converted down to opset 21 with onnx.version_converter (both kept: the original
    tests the up-front opset check)."""
    import jax.numpy as jnp
    import onnx
    from flax import nnx
    from jax2onnx import to_onnx

    class CNN(nnx.Module):
        def __init__(self, rngs):
            self.c1 = nnx.Conv(3, 16, (3, 3), strides=(2, 2), rngs=rngs)
            self.bn1 = nnx.BatchNorm(16, use_running_average=True, rngs=rngs)
            self.c2 = nnx.Conv(16, 16, (3, 3), rngs=rngs)
            self.c3 = nnx.Conv(16, 24, (3, 3), strides=(2, 2), rngs=rngs)
            self.fc1 = nnx.Linear(24, 16, rngs=rngs)
            self.fc2 = nnx.Linear(16, 10, rngs=rngs)

        def __call__(self, x):
            x = nnx.relu(self.bn1(self.c1(x)))
            x = nnx.relu(x + self.c2(x))
            x = nnx.relu(self.c3(x)).mean(axis=(1, 2))
            return self.fc2(nnx.relu(self.fc1(x)))

    class MLP(nnx.Module):
        def __init__(self, rngs):
            self.l1, self.l2, self.l3 = nnx.Linear(16, 40, rngs=rngs), nnx.Linear(40, 24, rngs=rngs), nnx.Linear(24, 4, rngs=rngs)

        def __call__(self, x):
            return self.l3(nnx.gelu(self.l2(nnx.relu(self.l1(x)))))

    exporter = f"jax2onnx.to_onnx ({version('jax2onnx')}, {version('jax')}, {version('flax')})"
    for name, net, shape, label in (("jax_cnn", CNN(nnx.Rngs(0)), ("B", 32, 32, 3), "image"),
                                    ("jax_mlp", MLP(nnx.Rngs(1)), ("B", 16), "x")):
        _nnx_perturb(net)
        model = to_onnx(net, [shape])
        opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
        path = HERE / f"{name}_opset{opset}.onnx"
        onnx.save(model, str(path))
        in_name = model.graph.input[0].name
        dims = ",".join("2" if isinstance(d, str) else str(d) for d in shape)
        record(path, "jax2onnx", f"{exporter}, opset {opset}", f"{in_name}:float32[{dims}]")
        if opset > 21:
            down = onnx.version_converter.convert_version(model, 21)
            down.ir_version = min(down.ir_version, 10)
            path = HERE / f"{name}_opset21.onnx"
            onnx.save(down, str(path))
            record(path, "jax2onnx", f"{exporter}, opset {opset} + onnx.version_converter ({version('onnx')}) to 21",
                   f"{in_name}:float32[{dims}]")


def _nnx_perturb(net) -> None:
    import jax
    import jax.numpy as jnp
    from flax import nnx

    key = jax.random.PRNGKey(11)
    for path, var in nnx.iter_graph(net):
        if isinstance(var, nnx.Param) or isinstance(var, nnx.BatchStat):
            key, sub = jax.random.split(key)
            noise = jax.random.normal(sub, var.value.shape) * 0.1
            var.value = jnp.abs(var.value + noise) + 0.5 if path[-1] == "var" else var.value + noise


SOURCES = {"helper": helper, "torch": torch_, "onnxsim": onnxsim, "onnxslim": onnxslim, "skl2onnx": skl2onnx,
           "tf2onnx": tf2onnx, "paddle2onnx": paddle2onnx, "jax2onnx": jax2onnx}

if __name__ == "__main__":
    unknown = [a for a in sys.argv[1:] if a not in SOURCES]
    if unknown or len(sys.argv) < 2:
        sys.exit(f"usage: make_corpus.py {{{'|'.join(SOURCES)}}} ...")
    for arg in sys.argv[1:]:
        SOURCES[arg]()
