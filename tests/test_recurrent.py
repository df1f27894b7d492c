"""Recurrent networks: LSTM, GRU and RNN units prune as channels, proven by the mask-equivalence
check, on hand-built graphs (golden dumps) and on PyTorch exports (a bidirectional-LSTM CRNN, a
GRU, LSTMs whose initial states are graph inputs)."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import ir
import models
from exporting import export, perturb
import pipeline
from passes.analyses import Trees
from passes.base import PassContext
from passes.op_rules import recurrent, table
from test_passes import Recorder


def _groups(report, op):
    return [g for g in report["groups"] if any(op in r for r in g["roots"])]


@pytest.mark.parametrize("name", sorted(models.RECURRENT))
def test_recurrent_passes_match_golden(name, golden):
    rec = Recorder()
    result = pipeline.prune(models.RECURRENT[name](), ratio=0.5, instruments=[rec])
    assert result.report["verified"] is True
    golden(f"recurrent_{name}", "".join(rec.sections))


@pytest.mark.parametrize("name", ["lstm_chain", "gru_bidirectional", "rnn_reverse_state_input"])
@pytest.mark.parametrize("scope,criterion", [("tree", "l1"), ("node", "l2"), ("tree", "fpgm")])
def test_recurrent_units_prune_and_stay_equivalent(name, scope, criterion):
    model = models.RECURRENT[name]()
    rep = pipeline.prune(model, ratio=0.5, scope=scope, criterion=criterion).report
    assert rep["verified"] is True and rep["max_abs_diff"] < 1e-4
    units = [g for g in rep["groups"] if any(op in r for op in ("LSTM", "GRU", "RNN") for r in g["roots"])]
    assert units and all(g["pruned"] and g["channels_after"] == g["channels_before"] // 2 for g in units), units


def test_lstm_slices_gate_rows_peepholes_and_states():
    """Unit j goes from every gate block of W, R, B (i,o,f,c), the peepholes (i,o,f), R's
    columns and the initial states; hidden_size follows."""
    model = models.lstm_chain()
    result = pipeline.prune(model, ratio=0.5)
    lstm = next(n for n in result.model.graph.node if n.op_type == "LSTM")
    group = _groups(result.report, "LSTM")[0]
    kept = np.array(group["kept"])
    inits = {t.name: numpy_helper.to_array(t) for t in result.model.graph.initializer}
    before = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    old = next(n for n in model.graph.node if n.op_type == "LSTM")
    w_kept = np.array(next(g for g in result.report["groups"] if g["roots"] == ["MatMul3"])["kept"])
    rows = np.concatenate([kept + k * 6 for k in range(4)])
    assert onnx.helper.get_attribute_value(next(a for a in lstm.attribute if a.name == "hidden_size")) == 3
    np.testing.assert_array_equal(inits[lstm.input[1]], before[old.input[1]][:, rows][:, :, w_kept])
    np.testing.assert_array_equal(inits[lstm.input[2]], before[old.input[2]][:, rows][:, :, kept])
    np.testing.assert_array_equal(inits[lstm.input[3]], before[old.input[3]][:, np.concatenate([rows, rows + 24])])
    np.testing.assert_array_equal(inits[lstm.input[5]], before[old.input[5]][:, :, kept])
    np.testing.assert_array_equal(inits[lstm.input[7]], before[old.input[7]][:, np.concatenate([kept + k * 6 for k in range(3)])])
    assert inits[lstm.input[4]].tolist() == [5, 3]  # sequence lengths are per sample: untouched


def test_state_given_as_graph_input_keeps_its_shape():
    """A non-constant initial state is the user's interface: the input keeps its shape and the
    pruned node reads the kept units through a Gather."""
    result = pipeline.prune(models.rnn_reverse_state_input(), ratio=0.5)
    h0 = next(i for i in result.model.graph.input if i.name == "h0")
    assert [d.dim_value for d in h0.type.tensor_type.shape.dim] == [1, 2, 6]
    rnn = next(n for n in result.model.graph.node if n.op_type == "RNN")
    gather = next(n for n in result.model.graph.node if n.output[0] == rnn.input[5])
    assert gather.op_type == "Gather" and gather.input[0] == "h0"
    assert result.report["verified"] is True


def test_state_reaching_a_graph_output_is_left_whole_with_its_reason():
    rep = pipeline.prune(models.lstm_state_output(), ratio=0.5).report
    (lstm,) = _groups(rep, "LSTM")
    assert not lstm["pruned"] and "reaches graph output" in lstm["reason"]
    feeding = next(g for g in rep["groups"] if g["roots"] == ["MatMul3"])
    assert feeding["pruned"] and rep["verified"] is True  # the input size is a leaf: it still prunes


def test_the_recurrent_leaf_is_what_makes_the_proof_hold(monkeypatch):
    """Without R's columns zeroed in the masked original (the unit's state feeds every unit's
    gates), the mask-equivalence check fails and the group is left alone: the proof is not vacuous."""
    def without_self_leaf(view):
        spec = recurrent._recurrent_root(view)
        return spec and dataclasses.replace(spec, self_leaf=None)

    monkeypatch.setitem(table.ROOT_RULES, "LSTM", without_self_leaf)
    rep = pipeline.prune(models.lstm_chain(), ratio=0.5).report
    (lstm,) = _groups(rep, "LSTM")
    assert not lstm["pruned"] and "mask-equivalence" in lstm["reason"]


def test_bidirectional_units_pair_by_direction_in_layout_1():
    """Batch-first layout (which ONNX Runtime's CPU kernels do not run, so nothing proves a cut
    there): Y [B, T, 2, H] and Y_h [B, 2, H] carry the unit on their last axis; reshaped to
    [B, T, 2·H] every id appears once per direction."""
    model = models.gru_bidirectional(layout=1)
    graph = ir.lower(model)
    ctx = pipeline.Pipeline.parse("tag,trees").run(graph, PassContext(original=model))
    trees = ctx.get(Trees)
    gru = next(n for n in graph.topo_nodes() if n.op_type == "GRU")
    y, yh = graph.outputs_of(gru)
    root = next(r for r in trees.roots if r.node == gru.name)
    ids = np.arange(root.first_id, root.first_id + 6)
    assert (trees.maps[y.name].axis, trees.maps[yh.name].axis) == (3, 2)
    reshaped = graph.consumers(y)[0][0]
    m = trees.maps[graph.outputs_of(reshaped)[0].name]
    assert m.axis == 2 and m.ids.tolist() == np.tile(ids, 2).tolist()


# ----------------------------------------------------------------------------- PyTorch exports
torch = pytest.importorskip("torch")


def _export(module, args, path, names):
    return export(perturb(module, 0.1, seed=0).eval(), args, path, input_names=names)


class Crnn(torch.nn.Module):
    """A text recognizer: conv stack -> bidirectional 2-layer LSTM over the width -> classes."""

    def __init__(self, classes: int = 37):
        super().__init__()
        nn = torch.nn
        self.cnn = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                                 nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d((4, 1)))
        self.rnn = nn.LSTM(32, 48, num_layers=2, bidirectional=True)
        self.fc = nn.Linear(96, classes)

    def forward(self, x):
        f = self.cnn(x)
        b, c, h, w = f.shape
        y, _ = self.rnn(f.reshape(b, c * h, w).permute(2, 0, 1))
        return self.fc(y)


class GruClassifier(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.inp, self.rnn, self.out = torch.nn.Linear(20, 64), torch.nn.GRU(64, 64, batch_first=True), torch.nn.Linear(64, 5)

    def forward(self, x):
        y, _ = self.rnn(torch.relu(self.inp(x)))
        return self.out(y[:, -1])


class LstmWithState(torch.nn.Module):
    def __init__(self, bidirectional: bool):
        super().__init__()
        self.inp = torch.nn.Linear(8, 16)
        self.rnn = torch.nn.LSTM(16, 32, bidirectional=bidirectional)
        self.out = torch.nn.Linear(64 if bidirectional else 32, 4)

    def forward(self, x, h0, c0):
        y, _ = self.rnn(self.inp(x), (h0, c0))
        return self.out(y)


def _torch_models(tmp):
    torch.manual_seed(0)  # the modules' initial weights too: not whatever RNG state earlier tests left
    return {
        "crnn": _export(Crnn(), (torch.randn(1, 1, 8, 24),), tmp / "crnn.onnx", ["x"]),
        "gru": _export(GruClassifier(), (torch.randn(2, 7, 20),), tmp / "gru.onnx", ["x"]),
        "lstm_h0": _export(LstmWithState(False), (torch.randn(5, 2, 8), torch.randn(1, 2, 32), torch.randn(1, 2, 32)),
                           tmp / "lstm_h0.onnx", ["x", "h0", "c0"]),
        "bilstm_h0": _export(LstmWithState(True), (torch.randn(5, 2, 8), torch.randn(2, 2, 32), torch.randn(2, 2, 32)),
                             tmp / "bilstm_h0.onnx", ["x", "h0", "c0"]),
    }


@pytest.fixture(scope="module")
def torch_models(tmp_path_factory):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _torch_models(tmp_path_factory.mktemp("recurrent"))


@pytest.mark.parametrize("name", ["crnn", "gru", "lstm_h0", "bilstm_h0"])
def test_pytorch_recurrent_models_lose_over_40_percent_proven(name, torch_models):
    """PyTorch writes W, R, B as Slice/Concat/Unsqueeze of its own tensors (gates reordered):
    read as constants, cut as new initializers; h0/c0 inputs keep their shape."""
    path = torch_models[name]
    before = path.read_bytes()
    result = pipeline.prune(path, ratio=0.5)
    rep = result.report
    assert rep["verified"] is True
    assert rep["params_after"] <= 0.6 * rep["params_before"], (rep["params_before"], rep["params_after"])
    rnn = [g for g in rep["groups"] if any(op in r for op in ("LSTM", "GRU") for r in g["roots"])]
    assert rnn and all(g["pruned"] for g in rnn), rnn
    left = [g["reason"] for g in rep["groups"] if not g["pruned"]]
    assert all("graph output" in r for r in left), left
    shapes = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in result.model.graph.input}
    original = onnx.load(str(path))
    assert shapes == {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in original.graph.input}
    assert path.read_bytes() == before


def test_a_parameter_target_counts_every_gate_row(torch_models):
    """The cost model follows PyTorch's re-indexed weights to the LSTM and counts R, B and the
    states as cut by the unit: a 50% parameter target is met as predicted."""
    rep = pipeline.prune(torch_models["crnn"], target_params=0.5).report
    assert rep["verified"] is True and rep["target"]["met"] is True
    assert abs(rep["target"]["predicted_reduction"] - rep["target"]["achieved"]) < 0.01


# ----------------------------------------------------------------------------- tied weights
def _tied_linear() -> onnx.ModelProto:
    """One Linear 8->16 (W1) applied to two inputs, each followed by its own head."""
    from onnx import TensorProto, helper as h

    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
               for n, s in (("W1", (8, 16)), ("W2", (16, 4)), ("W3", (16, 4)))]
    nodes = [h.make_node("MatMul", ["x", "W1"], ["a"]), h.make_node("Relu", ["a"], ["ar"]),
             h.make_node("MatMul", ["ar", "W2"], ["y1"]), h.make_node("MatMul", ["z", "W1"], ["b"]),
             h.make_node("Relu", ["b"], ["br"]), h.make_node("MatMul", ["br", "W3"], ["y2"])]
    graph = h.make_graph(nodes, "tied", [h.make_tensor_value_info(n, TensorProto.FLOAT, [2, 8]) for n in "xz"],
                         [h.make_tensor_value_info(n, TensorProto.FLOAT, [2, 4]) for n in ("y1", "y2")], weights)
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])


def test_a_weight_two_nodes_read_is_cut_once_for_both():
    """Before: each reader was a group of its own, each cut W1 its own way and the result held two
    8x8 copies (W1's 128 parameters, none removed); now their channels are coupled (trees.tied)."""
    result = pipeline.prune(_tied_linear(), ratio=0.5)
    rep = result.report
    assert rep["verified"] is True and rep["max_abs_diff"] < 1e-5
    assert [(g["channels_before"], g["channels_after"]) for g in rep["groups"] if g.get("pruned")] == [(16, 8)]
    assert sorted((t.name, tuple(t.dims)) for t in result.model.graph.initializer) == [
        ("W1", (8, 8)), ("W2", (8, 4)), ("W3", (8, 4))]


def _lstm_cell_loop(path):
    """``nn.LSTMCell`` stepped in Python from zero states (``torch.zeros(batch, H)``: the exporter
    writes ``ConstantOfShape`` of a computed shape), as hand-written CRNNs do; head on the last h."""
    import torch

    class CellLoop(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.cell = torch.nn.LSTMCell(6, 12)
            self.head = torch.nn.Linear(12, 3)

        def forward(self, x):  # x [B, T, 6]
            h = torch.zeros(x.size(0), 12)
            c = torch.zeros(x.size(0), 12)
            for t in range(x.shape[1]):
                h, c = self.cell(x[:, t], (h, c))
            return self.head(h)

    return export(perturb(CellLoop(), 0.1, seed=0).eval(), (torch.randn(2, 4, 6),), path,
                  input_names=["x"], dynamic_axes={"x": {0: "batch"}})


def test_an_lstm_cell_stepped_from_zero_states_prunes_its_hidden_units(tmp_path):
    """Before: every step a group of its own, each blocked ('Add mixes pruned channels with untracked
    data': f * c0 with c0 = ConstantOfShape zeros), 0 removed. Now the steps, which read one weight,
    are one group; the zero states are cut by a Gather where each step reads them."""
    model = onnx.load(str(_lstm_cell_loop(tmp_path / "cell_loop.onnx")))
    assert any(n.op_type == "ConstantOfShape" for n in model.graph.node)
    result = pipeline.prune(model, ratio=0.5)
    rep = result.report
    assert rep["verified"] is True and rep["max_abs_diff"] < 1e-4
    assert [(g["channels_before"], g["channels_after"]) for g in rep["groups"] if g.get("pruned")] == [(12, 6)]
    dims = sorted(tuple(t.dims) for t in result.model.graph.initializer if len(t.dims) == 2)
    # W_ih and W_hh cut once for every step, the head's inputs; the first step's Gemm reads the zero
    # h0 at full width through a copy of W_hh with its rows cut only (left: it computes zeros)
    assert dims == [(3, 6), (24, 6), (24, 6), (24, 12)], dims
    assert rep["params_after"] == 645 and rep["params_before"] == 999
