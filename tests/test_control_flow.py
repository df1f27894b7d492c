"""Control flow: a network inside the branches of an If prunes inside them, each branch proven
by the mask-equivalence check as a model of its own (``subgraphs.py``); an If whose branches read
a value computed outside is lowered into the graph (``ir/bodies.py``): channels cross into and
out of its branches, each changed branch proven by a run that takes it."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import dataclasses

import ir
import ir.bodies
import models
import pipeline
from passes import cost, subgraphs, tag, validate
from passes.analyses import SliceRecord
from passes.validate import run_model


def _bodies(model, ops=("If",)):
    return {a.name: a.g for n in model.graph.node if n.op_type in ops for a in n.attribute
            if a.type == onnx.AttributeProto.GRAPH}


@pytest.mark.parametrize("name", sorted(models.CONTROL_FLOW))
def test_if_branches_match_golden(name, golden):
    result = pipeline.prune(models.CONTROL_FLOW[name](), ratio=0.5)
    rep = result.report
    lines = [f"verified {rep['verified']} params {rep['params_before']} -> {rep['params_after']}"]
    lines += [f"branch {b['node']}/{b['branch']}: " + (f"{b['params_before']} -> {b['params_after']} verified {b['verified']}"
                                                       if b["pruned"] else f"whole: {b['reason']}") for b in rep.get("branches", [])]
    lines += [f"group {g['id']} {','.join(g['roots'])}: {g['channels_before']} -> {g['channels_after']}"
              + (f" ({g['reason']})" if g.get("reason") else "") for g in rep["groups"]]
    for attr, body in sorted(_bodies(result.model, ("If", "Loop", "Scan")).items()):
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


def _shadowing(model):
    """The model with the else branch's first value renamed to the then branch's (legal: sibling
    scopes), so it is not lowered into the graph: its branches are pruned as models of their own."""
    bodies = _bodies(model)
    old, new = bodies["else_branch"].node[0].output[0], bodies["then_branch"].node[0].output[0]
    for n in bodies["else_branch"].node:
        n.output[:] = [new if o == old else o for o in n.output]
        n.input[:] = [new if i == old else i for i in n.input]
    return model


def test_a_branch_reading_a_value_computed_outside_takes_it_as_an_input():
    """Not lowered (a name shadows another): the else body reads a Conv of the enclosing graph;
    the value becomes the body's input, sampled from the model's own run, so the body prunes;
    the outer Conv's channels, read inside the body, stay whole with that reason."""
    rep = pipeline.prune(_shadowing(models.if_branches(read_outer=True)), ratio=0.5).report
    assert rep["verified"] is True and all(b["pruned"] and b["verified"] for b in rep["branches"])
    inner = [g for g in rep["groups"] if g["roots"][0].startswith("If11/else_branch:Conv")]
    assert inner and all(g["pruned"] for g in inner)
    outer = next(g for g in rep["groups"] if g["roots"] == ["Conv7"])
    assert not outer["pruned"] and "read inside a subgraph" in outer["reason"]


def test_a_branch_whose_outer_value_cannot_be_computed_stays_whole():
    model = _shadowing(models.if_branches(read_outer=True))
    feeds = {"x": np.zeros((1, 2, 8, 8), np.float32), "sr": np.array(16000, np.int64)}  # 2 channels, not 3

    def refuse(body, given, shapes):
        raise RuntimeError("not on these inputs")

    model, branches = subgraphs.prune_branches(model, refuse, feeds)
    (else_branch,) = [b for b in branches.items if b.attr == "else_branch"]
    assert else_branch.report is None and "does not compute" in else_branch.reason


def test_channels_cross_into_and_out_of_lowered_branches():
    """The outer conv read by both branches prunes with its leaves inside them; the branches'
    last convs, returned as the If's output, are one group (a channel goes from both) whose leaf
    is the outer conv after the If; the pruned model runs either branch, each proven."""
    model = models.if_crossing()
    assert ir.bodies.lowered_ifs(model) == {3}
    result = pipeline.prune(model, ratio=0.5)
    rep = result.report
    assert rep["verified"] is True and "branches" not in rep
    groups = {tuple(g["roots"]): g for g in rep["groups"]}
    outer = groups[("Conv7",)]
    assert outer["channels_after"] == 4 and sorted(outer["leaves"]) == ["Conv3504", "Conv3604"]
    out = groups[("Conv3510", "Conv3604")]
    assert out["channels_after"] == 3 and out["leaves"] == ["Conv15"]
    onnx.checker.check_model(result.model, full_check=True)
    assert [n.op_type for n in result.model.graph.node].count("Conv") == 2  # the rest back in the bodies
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    masked = validate.masked_original(model, _record(model))
    for rate in (16000, 8000):
        feeds = {"x": x, "sr": np.array(rate, np.int64)}
        (got,), (want,) = run_model(result.model, feeds), run_model(masked, feeds)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def _record(model):
    """The slice record of pruning ``model`` at 0.5 (what validate masks the original by)."""
    seen = {}

    class Keep(pipeline.Instrument):
        def after(self, p, graph, ctx, result, seconds):
            if p.name == "slice":
                seen["record"] = ctx.get(SliceRecord)

    pipeline.prune(model, ratio=0.5, instruments=[Keep()])
    return seen["record"]


def test_the_untaken_branch_is_proven_by_running_it(monkeypatch):
    """The proof inputs take the else branch (``sr`` = 0): the then branch's cut is proven only by
    the run with the condition fixed. A masked original that forgets the then branch's leaf of
    the outer conv passes the plain run and fails that one: the group is left whole, with why;
    without the forced runs it would ship unproven."""
    model = models.if_crossing()
    real = validate._masked_graph

    def forgetful(original, record, *shared):
        kept = tuple(z for z in (record.zeroings if record else ()) if z.node != "Conv3504")
        return real(original, record and dataclasses.replace(record, zeroings=kept), *shared)

    monkeypatch.setattr(validate, "_masked_graph", forgetful)
    rep = pipeline.prune(model, ratio=0.5).report
    outer = next(g for g in rep["groups"] if g["roots"] == ["Conv7"])
    assert rep["verified"] is True and outer["channels_after"] == 8
    assert "then_branch of If 'If11' forced" in outer["reason"]
    monkeypatch.setattr(validate, "_forced_branches", lambda g, record: [])
    rep = pipeline.prune(model, ratio=0.5).report
    assert next(g for g in rep["groups"] if g["roots"] == ["Conv7"])["channels_after"] == 4


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


def _loop_and_scan(trips: int | None = 3) -> onnx.ModelProto:
    """A Loop (``trips`` iterations; a graph input when None) multiplying a [1, 8] state by an
    outer weight, then a Scan over the 5 rows of ``seq`` [5, 1, 8] multiplying each by another."""
    h = onnx.helper
    rng = np.random.default_rng(5)
    w_loop = onnx.numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), "w_loop")
    w_scan = onnx.numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), "w_scan")
    loop_body = h.make_graph(
        [h.make_node("Identity", ["cond_in"], ["cond_out"]), h.make_node("MatMul", ["state", "w_loop"], ["state_out"])],
        "loop_body", [h.make_tensor_value_info("i", onnx.TensorProto.INT64, []),
                      h.make_tensor_value_info("cond_in", onnx.TensorProto.BOOL, []),
                      h.make_tensor_value_info("state", onnx.TensorProto.FLOAT, None)],
        [h.make_tensor_value_info("cond_out", onnx.TensorProto.BOOL, []),
         h.make_tensor_value_info("state_out", onnx.TensorProto.FLOAT, None)])
    scan_body = h.make_graph(
        [h.make_node("MatMul", ["row", "w_scan"], ["row_out"]), h.make_node("Add", ["acc", "row_out"], ["acc_out"])],
        "scan_body", [h.make_tensor_value_info("acc", onnx.TensorProto.FLOAT, [1, 8]),
                      h.make_tensor_value_info("row", onnx.TensorProto.FLOAT, [1, 8])],
        [h.make_tensor_value_info("acc_out", onnx.TensorProto.FLOAT, [1, 8]),
         h.make_tensor_value_info("row_out", onnx.TensorProto.FLOAT, [1, 8])])
    inits = [w_loop, w_scan, onnx.numpy_helper.from_array(np.array(True), "go")]
    inputs = [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 8]),
              h.make_tensor_value_info("seq", onnx.TensorProto.FLOAT, [5, 1, 8])]
    if trips is None:
        inputs.append(h.make_tensor_value_info("trips", onnx.TensorProto.INT64, []))
    else:
        inits.append(onnx.numpy_helper.from_array(np.array(trips, np.int64), "trips"))
    nodes = [h.make_node("Loop", ["trips", "go", "x"], ["looped"], body=loop_body),
             h.make_node("Scan", ["looped", "seq"], ["acc", "rows"], body=scan_body, num_scan_inputs=1)]
    graph = h.make_graph(nodes, "loop_scan", inputs, [h.make_tensor_value_info("acc", onnx.TensorProto.FLOAT, [1, 8]),
                                                      h.make_tensor_value_info("rows", onnx.TensorProto.FLOAT, [5, 1, 8])],
                         inits)
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=8)


def test_flops_count_what_runs_inside_bodies_and_recurrent_nodes():
    """If: the larger branch (8 filters: 2·64·8·27 + 2·64·8·72 + 2·8·4); Loop: its body × a
    constant trip count (3 × 2·8·8), once when the count is an input; Scan: its body × the scan
    axis (5 × 2·8·8); LSTM: 2·T·B·4H·(I + H) over the steps (T=5, B=2, I=8, H=6)."""
    def flops(model):
        g = ir.lower(model)
        return cost.body_flops(g, tag.static_shapes(g, ir.opset_of(g)))

    assert flops(models.if_branches()) == {"If5": 2 * 64 * 8 * 27 + 2 * 64 * 8 * 72 + 2 * 8 * 4}
    model = _loop_and_scan()
    onnx.checker.check_model(model, full_check=True)
    assert flops(model) == {"Loop_0": 3 * 128, "Scan_1": 5 * 128}
    assert flops(_loop_and_scan(trips=None))["Loop_0"] == 128
    g = ir.lower(models.lstm_chain())
    shapes = tag.static_shapes(g, ir.opset_of(g))
    assert cost.recurrent_flops(g, shapes) == {"LSTM16": (2 * 5 * 2 * 24 * 8, 2 * 5 * 2 * 24 * 6)}
    assert cost.count_flops(g) == sum(cost.flops_by_node(g, shapes).values()) + 2 * 5 * 2 * 24 * 14


def test_the_report_counts_bodies_before_and_after_their_pruning():
    """Bodies pruned on their own are counted as they were before and as they are after."""
    rep = pipeline.prune(models.if_branches(), ratio=0.5).report
    assert rep["flops_before"] == 2 * 64 * 8 * 27 + 2 * 64 * 8 * 72 + 2 * 8 * 4
    assert 0 < rep["flops_after"] < 0.4 * rep["flops_before"]
    rep = pipeline.prune(models.lstm_chain(), ratio=0.5).report
    assert rep["flops_before"] == 1320 + 2 * 5 * 2 * 24 * 14 and rep["flops_after"] < 0.4 * rep["flops_before"]


def test_a_scripted_if_reading_an_outer_conv_prunes_across_its_branches(tmp_path):
    """PyTorch's scripted ``if`` on a flag, each branch a conv of the trunk's output: the trunk's
    channels cross into both branches, the branches' convs are one group through the If's output
    (a channel goes from both), each branch proven by a run that takes it."""
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.trunk, self.a, self.b = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 12, 3, padding=1), \
                nn.Conv2d(16, 12, 1)
            self.head = nn.Conv2d(12, 8, 3, padding=1)
            self.fc = nn.Linear(8, 3)

        def forward(self, x, flag):
            t = torch.relu(self.trunk(x))
            if bool(flag > 0):
                y = torch.relu(self.a(t))
            else:
                y = torch.relu(self.b(t))
            return self.fc(torch.relu(self.head(y)).mean(dim=(2, 3)))

    path = tmp_path / "scripted_if.onnx"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(torch.jit.script(Net().eval()), (torch.randn(1, 3, 8, 8), torch.tensor(1)), str(path),
                          dynamo=False, opset_version=17, do_constant_folding=False, input_names=["x", "flag"])
    model = onnx.load(str(path))
    assert len(ir.bodies.lowered_ifs(model)) == 1
    result = pipeline.prune(path, ratio=0.5)
    rep = result.report
    assert rep["verified"] is True and rep["params_after"] < 0.4 * rep["params_before"]
    assert {g["channels_before"]: g["channels_after"] for g in rep["groups"] if g["pruned"]} == {16: 8, 12: 6, 8: 4}
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    for flag in (1, 0):
        (y,) = run_model(result.model, {"x": x, "flag": np.array(flag, np.int64)})
        assert y.shape == (1, 3)
    (if_node,) = [n for n in result.model.graph.node if n.op_type == "If"]
    assert all(len(a.g.initializer) == 2 for a in if_node.attribute)  # each branch's conv weight and bias


def test_a_data_criterion_says_it_cannot_read_a_lowered_branch():
    x = np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)
    with pytest.raises(pipeline.PipelineError, match="inside a branch of an If lowered into the graph"):
        pipeline.prune(models.if_crossing(), ratio=0.5, criterion="hrank", calib_data=(x, None))


def test_branches_returning_different_channels_are_a_barrier():
    """The else branch returns an untracked graph input where the then branch returns its pruned
    conv: the two would differ in width once cut, so that conv's group stays whole, with why;
    the outer conv still prunes into both branches' readers."""
    model = models.if_crossing()
    (if_node,) = [n for n in model.graph.node if n.op_type == "If"]
    else_branch = next(a for a in if_node.attribute if a.name == "else_branch")
    z = onnx.helper.make_tensor_value_info("z", onnx.TensorProto.FLOAT, [1, 5, 8, 8])
    model.graph.input.append(z)
    out = else_branch.g.output[0].name
    else_branch.g.CopyFrom(onnx.helper.make_graph([onnx.helper.make_node("Neg", ["z"], [out])], else_branch.g.name,
                                                  [], list(else_branch.g.output)))
    rep = pipeline.prune(model, ratio=0.5).report
    groups = {tuple(g["roots"]): g for g in rep["groups"]}
    assert rep["verified"] is True
    assert groups[("Conv3510",)]["channels_after"] == 5
    assert "If branches return different channels as output 0" in groups[("Conv3510",)]["reason"]
    assert groups[("Conv7",)]["channels_after"] == 4


def test_a_branch_the_proof_inputs_cannot_run_leaves_its_groups_whole():
    """The then branch adds an 8×8 map to its first conv's output: on the proof's larger frames
    the model before pruning cannot run it, so no cut that reaches it is proven: those groups stay
    whole, with that reason (the proof's own run took the else branch)."""
    model = models.if_crossing()
    for vi in [model.graph.input[0]] + [vi for n in model.graph.node if n.op_type == "If"
                                          for a in n.attribute for vi in a.g.output]:
        dims = vi.type.tensor_type.shape.dim
        dims[2].dim_param, dims[3].dim_param = "height", "width"
    (if_node,) = [n for n in model.graph.node if n.op_type == "If"]
    then = next(a for a in if_node.attribute if a.name == "then_branch").g
    relu = next(n for n in then.node if n.op_type == "Relu")
    then.initializer.append(onnx.numpy_helper.from_array(np.ones((1, 1, 8, 8), np.float32), "frame"))
    then.node.insert(list(then.node).index(relu) + 1, onnx.helper.make_node("Add", [relu.output[0], "frame"], ["framed"]))
    for n in then.node[list(then.node).index(relu) + 2:]:
        n.input[:] = ["framed" if i == relu.output[0] else i for i in n.input]
    rep = pipeline.prune(model, ratio=0.5).report
    assert rep["verified"] is True and rep["inputs"]["x"]["shape"][2] != 8
    groups = {tuple(g["roots"]): g for g in rep["groups"]}
    for roots in (("Conv7",), ("Conv3504",), ("Conv3510", "Conv3604")):
        assert not groups[roots]["pruned"], roots
        assert "then_branch of If 'If11' is not proven: the model before pruning does not run it" in groups[roots]["reason"]


def _feeds(model, seed=7):
    rng = np.random.default_rng(seed)
    return {i.name: rng.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim]).astype(np.float32)
            for i in model.graph.input if i.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}


@pytest.mark.parametrize("kind", ["Loop", "Scan"])
def test_an_outer_value_prunes_into_its_leaves_inside_loop_and_scan_bodies(kind):
    """``t`` reaches a MatMul inside the body through a Relu: that body head is lowered into the
    graph (loop-invariant: it reads only outer values and a body weight), so ``t``'s channels go
    with the body weight's rows, sliced inside the body; ``v``, added to the body's state, stays a
    barrier. The pruned model runs its body as before and matches the masked original."""
    model = models.loop_reading_outer(kind)
    assert ir.bodies.hoisted_nodes(model) == {3: ([0, 1], ["w_in"])}
    result = pipeline.prune(model, ratio=0.5)
    rep = result.report
    groups = {tuple(g["roots"]): g for g in rep["groups"]}
    assert rep["verified"] is True
    assert groups[("MatMul_t",)]["channels_after"] == 8 and groups[("MatMul_t",)]["leaves"] == ["MatMul_3_body_1"]
    assert groups[("MatMul_v",)]["reason"] == f"read inside a subgraph of {kind} node '{kind}_0'"
    onnx.checker.check_model(result.model, full_check=True)
    (body,) = _bodies(result.model, (kind,)).values()
    assert [n.op_type for n in body.node[:2]] == ["Relu", "MatMul"]  # back at the head of the body
    assert {t.name: list(t.dims) for t in body.initializer}["w_in"] == [8, 8]
    assert [n.op_type for n in result.model.graph.node if n.op_type in ("Relu", "MatMul")] == ["MatMul", "Relu", "MatMul", "MatMul"]
    masked = validate.masked_original(model, _record(model))
    feeds = _feeds(model)
    for got, want in zip(run_model(result.model, feeds), run_model(masked, feeds)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    times = 3 if kind == "Loop" else 5
    rows = 5 * 2 * 8 * 8 if kind == "Scan" else 0  # the Scan body's own MatMul(row, w_row)
    assert rep["flops_before"] == 2 * 8 * 16 + 2 * 8 * 8 + 2 * 8 * 4 + times * 2 * 16 * 8 + rows
    assert rep["flops_after"] == 2 * 8 * 8 + 2 * 8 * 8 + 2 * 8 * 4 + times * 2 * 8 * 8 + rows


def test_a_loop_body_the_proof_inputs_do_not_run_leaves_its_groups_whole():
    """A Loop running 0 times (a constant trip count, or one the proof inputs give) proves nothing
    about its body: the group reaching into it stays whole, with why; with inputs that run it,
    it prunes."""
    whole = "body of Loop 'Loop_0' is not proven: the model before pruning runs it no time on the proof inputs"
    rep = pipeline.prune(models.loop_reading_outer("Loop", trips=0), ratio=0.5).report
    outer = next(g for g in rep["groups"] if g["roots"] == ["MatMul_t"])
    assert rep["verified"] is True and not outer["pruned"] and whole in outer["reason"]
    model = models.loop_reading_outer("Loop")
    go = next(t for t in model.graph.initializer if t.name == "go")
    go.CopyFrom(onnx.numpy_helper.from_array(np.array(False), "go"))  # its condition false on entry
    rep = pipeline.prune(model, ratio=0.5).report
    assert whole in next(g for g in rep["groups"] if g["roots"] == ["MatMul_t"])["reason"]
    x = np.ones((1, 8), np.float32)
    for trips, pruned in ((0, False), (2, True)):
        rep = pipeline.prune(models.loop_reading_outer("Loop", trips=None), ratio=0.5,
                             sample_inputs={"x": x, "trips": np.array(trips, np.int64)}).report
        outer = next(g for g in rep["groups"] if g["roots"] == ["MatMul_t"])
        assert rep["verified"] is True and outer["pruned"] is pruned, trips


def test_a_loop_body_left_idle_or_forgotten_by_the_mask_fails_the_proof(monkeypatch):
    """The check is what stands between a cut inside a body and shipping it: a masked original
    that forgets the body's leaf fails the run (the body ran); without the trip-count check a
    Loop run 0 times would ship its body's cut unproven."""
    real = validate._masked_graph

    def forgetful(original, record, *shared):
        kept = tuple(z for z in (record.zeroings if record else ()) if z.node != "MatMul_3_body_1")
        return real(original, record and dataclasses.replace(record, zeroings=kept), *shared)

    with monkeypatch.context() as m:
        m.setattr(validate, "_masked_graph", forgetful)
        rep = pipeline.prune(models.loop_reading_outer("Scan"), ratio=0.5).report
        outer = next(g for g in rep["groups"] if g["roots"] == ["MatMul_t"])
        assert not outer["pruned"] and "mask-equivalence check failed" in outer["reason"]
    monkeypatch.setattr(validate, "_idle_bodies", lambda probe, record, feeds: None)
    rep = pipeline.prune(models.loop_reading_outer("Loop", trips=0), ratio=0.5).report
    assert next(g for g in rep["groups"] if g["roots"] == ["MatMul_t"])["pruned"]


def test_a_scripted_for_loop_reading_an_outer_conv_prunes_into_its_body(tmp_path):
    """PyTorch's scripted ``for`` loop exports a Loop whose body convolves the trunk's output:
    the trunk's channels reach that conv inside the body, proven on inputs that run the loop
    (``n`` = 3); the default proof inputs (``n`` = 0) run it no time, so it stays whole there."""
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.trunk, self.step, self.head = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 8, 1), nn.Linear(8, 3)

        def forward(self, x, n: int):
            t = torch.relu(self.trunk(x))
            s = torch.zeros(x.shape[0], 8, x.shape[2], x.shape[3])
            for _ in range(n):
                s = torch.tanh(s + self.step(t))
            return self.head(s.mean(dim=(2, 3)))

    path = tmp_path / "scripted_loop.onnx"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(torch.jit.script(Net().eval()), (torch.randn(1, 3, 8, 8), 3), str(path),
                          dynamo=False, opset_version=17, do_constant_folding=False, input_names=["x", "n"])
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    result = pipeline.prune(path, ratio=0.5, sample_inputs={"x": x, "n": np.array(3, np.int64)})
    rep = result.report
    trunk = next(g for g in rep["groups"] if g["roots"] == ["/trunk/Conv"])
    assert rep["verified"] is True and trunk["channels_after"] == 8 and trunk["leaves"] == ["/step/Conv"]
    (body,) = _bodies(result.model, ("Loop",)).values()
    step = next(n for n in body.node if n.op_type == "Conv")
    weights = {t.name: t for t in list(body.initializer) + list(result.model.graph.initializer)}
    assert list(weights[step.input[1]].dims) == [8, 8, 1, 1]
    for n in (0, 5):
        (y,) = run_model(result.model, {"x": x, "n": np.array(n, np.int64)})
        assert y.shape == (1, 3)
    rep = pipeline.prune(path, ratio=0.5).report
    trunk = next(g for g in rep["groups"] if g["roots"] == ["/trunk/Conv"])
    assert not trunk["pruned"] and "runs it no time on the proof inputs" in trunk["reason"]


def _loop_with_inner_chain():
    """``loop_reading_outer`` with its body's head two MatMuls deep: t -> Relu -> MatMul [16, 16]
    -> Relu -> MatMul [16, 8], so a group lies wholly inside the lowered head."""
    model = models.loop_reading_outer("Loop")
    body = next(a.g for a in model.graph.node[3].attribute if a.name == "body")
    mm = body.node[1]
    mm.input[0] = "mr"
    body.node.insert(1, onnx.helper.make_node("MatMul", ["t_relu", "w_mid"], ["m"]))
    body.node.insert(2, onnx.helper.make_node("Relu", ["m"], ["mr"]))
    w = np.random.default_rng(3).standard_normal((16, 16)).astype(np.float32)
    body.initializer.append(onnx.numpy_helper.from_array(w, "w_mid"))
    onnx.checker.check_model(model, full_check=True)
    return model


def test_a_group_wholly_inside_a_loop_body_prunes_and_a_data_criterion_says_it_cannot_read_it():
    model = _loop_with_inner_chain()
    rep = pipeline.prune(model, ratio=0.5).report
    groups = {tuple(g["roots"]): g for g in rep["groups"]}
    assert rep["verified"] is True
    assert groups[("MatMul_t",)]["channels_after"] == 8 and groups[("MatMul_3_body_1",)]["channels_after"] == 8
    x = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    with pytest.raises(pipeline.PipelineError, match="inside the body of Loop 'Loop_0' lowered into the graph"):
        pipeline.prune(model, ratio=0.5, criterion="hrank", calib_data=(x, None))


def test_the_target_cost_model_scales_a_lowered_head_by_its_runs():
    """A head lowered from a Loop body runs every iteration: the target solver's FLOP terms scale
    its nodes by the trip count (so cutting it saves that many times), their sum the model's."""
    model = models.loop_reading_outer("Loop")
    g = ir.lower(model)
    shapes = tag.static_shapes(g, ir.opset_of(g))
    assert cost.head_times(g, shapes) == {"Relu_3_body_0": 3, "MatMul_3_body_1": 3}
    assert cost.body_flops(g, shapes) == {"Loop_0": 2 * 2 * 16 * 8}
    assert cost.body_flops(g, shapes, heads=False) == {"Loop_0": 0}
    assert cost.count_flops(g, shapes) == 2 * 8 * 16 + 2 * 8 * 8 + 2 * 8 * 4 + 3 * 2 * 16 * 8
    rep = pipeline.prune(model, target_flops=0.3).report
    assert rep["verified"] is True and rep["flops_after"] <= 0.7 * rep["flops_before"]


@pytest.mark.parametrize("op, pruned", [("Identity", True), ("Sub", False)])
def test_a_computed_trip_count_is_read_off_the_proof_run(op, pruned):
    """The trip count computed in the graph (Size(x) = 8, or Size(x) - Size(x) = 0) is read off a
    run of the model before pruning on the proof inputs: 8 runs prove the body's cut, 0 none."""
    model = models.loop_reading_outer("Loop", trips=None)
    del model.graph.input[-1]
    model.graph.node.insert(0, onnx.helper.make_node("Size", ["x"], ["n8"], name="Size_n"))
    model.graph.node.insert(1, onnx.helper.make_node(op, ["n8"] * (2 if op == "Sub" else 1), ["trips"], name="Trips"))
    rep = pipeline.prune(model, ratio=0.5).report
    outer = next(g for g in rep["groups"] if g["roots"] == ["MatMul_t"])
    assert rep["verified"] is True and outer["pruned"] is pruned
    assert pruned or "runs it no time on the proof inputs" in outer["reason"]


def test_a_body_node_the_head_cannot_hold_keeps_the_outer_value_whole():
    """A Shape of ``t`` inside the body (its channel count would change under the body's feet)
    stays in the body: ``t`` is read inside it, a barrier, whatever its leaves."""
    model = models.loop_reading_outer("Loop")
    body = next(a.g for a in model.graph.node[3].attribute if a.name == "body")
    body.node.insert(0, onnx.helper.make_node("Shape", ["t"], ["t_shape"]))
    body.node.append(onnx.helper.make_node("Size", ["t_shape"], ["t_rank"]))
    body.node.append(onnx.helper.make_node("CastLike", ["t_rank", "s_out"], ["t_rank_f"]))
    rep = pipeline.prune(model, ratio=0.5).report
    outer = next(g for g in rep["groups"] if g["roots"] == ["MatMul_t"])
    assert not outer["pruned"] and outer["reason"] == "read inside a subgraph of Loop node 'Loop_0'"
