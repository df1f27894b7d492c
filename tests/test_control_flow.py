"""Control flow: a network inside the branches of an If prunes inside them, each branch proven
by the mask-equivalence check as a model of its own (``subgraphs.py``); a branch reading a value
computed outside it stays whole, with its reason."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import models
import pipeline
from passes import subgraphs
from passes.validate import run_model


def _bodies(model):
    return {a.name: a.g for n in model.graph.node if n.op_type == "If" for a in n.attribute
            if a.type == onnx.AttributeProto.GRAPH}


@pytest.mark.parametrize("name", sorted(models.CONTROL_FLOW))
def test_if_branches_match_golden(name, golden):
    result = pipeline.prune(models.CONTROL_FLOW[name](), ratio=0.5)
    rep = result.report
    lines = [f"verified {rep['verified']} params {rep['params_before']} -> {rep['params_after']}"]
    lines += [f"branch {b['node']}/{b['branch']}: " + (f"{b['params_before']} -> {b['params_after']} verified {b['verified']}"
                                                       if b["pruned"] else f"whole: {b['reason']}") for b in rep["branches"]]
    lines += [f"group {g['id']} {','.join(g['roots'])}: {g['channels_before']} -> {g['channels_after']}"
              + (f" ({g['reason']})" if g.get("reason") else "") for g in rep["groups"]]
    for attr, body in sorted(_bodies(result.model).items()):
        lines.append(f"== {attr}")
        lines += [f"{n.op_type}({', '.join(n.input)}) -> {', '.join(n.output)}" for n in body.node]
        lines += [f"@{t.name}: {list(t.dims)}" for t in body.initializer]
    golden(f"control_flow_{name}", "\n".join(lines) + "\n")


def test_both_branches_prune_and_the_if_still_selects_them():
    model = models.if_branches()
    result = pipeline.prune(model, ratio=0.5)
    rep = result.report
    assert rep["verified"] is True and rep["params_after"] < 0.4 * rep["params_before"]
    assert [b["pruned"] and b["verified"] for b in rep["branches"]] == [True, True]
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    for rate in (16000, 8000):  # the given inputs only ever ran one branch: both still run
        (y,) = run_model(result.model, {"x": x, "sr": np.array(rate, np.int64)})
        assert y.shape == (1, 4)
    onnx.checker.check_model(result.model, full_check=True)


def test_a_branch_reading_a_value_computed_outside_takes_it_as_an_input():
    """The else body reads a Conv of the enclosing graph: the value becomes the body's input,
    sampled from the model's own run, so the body prunes; the outer Conv's channels, read inside
    the body, stay whole with that reason."""
    rep = pipeline.prune(models.if_branches(read_outer=True), ratio=0.5).report
    assert rep["verified"] is True and all(b["pruned"] and b["verified"] for b in rep["branches"])
    inner = [g for g in rep["groups"] if g["roots"][0].startswith("If11/else_branch:Conv")]
    assert inner and all(g["pruned"] for g in inner)
    outer = next(g for g in rep["groups"] if g["roots"] == ["Conv7"])
    assert not outer["pruned"] and "read inside a subgraph" in outer["reason"]


def test_a_branch_whose_outer_value_cannot_be_computed_stays_whole():
    model = models.if_branches(read_outer=True)
    feeds = {"x": np.zeros((1, 2, 8, 8), np.float32), "sr": np.array(16000, np.int64)}  # 2 channels, not 3

    def refuse(body, given, shapes):
        raise RuntimeError("not on these inputs")

    model, branches = subgraphs.prune_branches(model, refuse, feeds)
    (else_branch,) = [b for b in branches.items if b.attr == "else_branch"]
    assert else_branch.report is None and "does not compute" in else_branch.reason


def test_input_shapes_reach_the_branches_pruned_on_their_own():
    """``--input-shape`` fixes a symbolic dim of a graph input a branch reads: the branch, pruned
    as a model of its own, runs (and is proven) on that shape, not on a default size."""
    model = models.if_branches()
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "height", "width"
    rep = pipeline.prune(model, ratio=0.5, input_shapes={"x": [1, 3, 12, 20]}).report
    assert rep["inputs"]["x"]["shape"] == [1, 3, 12, 20]
    assert [b["pruned"] and b["verified"] for b in rep["branches"]] == [True, True]
    assert all(b["inputs"]["x"] == {"shape": [1, 3, 12, 20], "dtype": "float32", "from": "input-shape"}
               for b in rep["branches"])


def test_weights_of_the_enclosing_graph_move_into_the_body_that_alone_reads_them(tmp_path):
    """PyTorch's scripted ``if`` keeps each branch's weights in the enclosing graph: they are
    copied in, cut there, and the originals dropped (a weight read elsewhere too stays)."""
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class Net(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.a, self.b, self.fc = nn.Conv1d(1, c, 5, padding=2), nn.Conv1d(c, c, 3, padding=1), nn.Linear(c, 2)

        def forward(self, x):
            return self.fc(torch.relu(self.b(torch.relu(self.a(x)))).mean(dim=2))

    class TwoRates(nn.Module):
        def __init__(self):
            super().__init__()
            self.k16, self.k8 = Net(16), Net(12)

        def forward(self, x, sr):
            if bool(sr == 16000):
                return self.k16(x)
            return self.k8(x)

    path = tmp_path / "two_rates.onnx"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(torch.jit.script(TwoRates().eval()), (torch.randn(2, 1, 64), torch.tensor(16000)),
                          str(path), dynamo=False, opset_version=17, do_constant_folding=False,
                          input_names=["x", "sr"])
    original = onnx.load(str(path))
    assert all(subgraphs.outer_names(g) - {"x"} for g in _bodies(original).values())  # weights read from outside
    result = pipeline.prune(path, ratio=0.5)
    rep = result.report
    assert rep["verified"] is True and rep["params_after"] < 0.4 * rep["params_before"]
    assert all(b["pruned"] for b in rep["branches"])
    assert all(subgraphs.outer_names(g) == {"x"} for g in _bodies(result.model).values())
    assert not result.model.graph.initializer  # nothing left outside the bodies
