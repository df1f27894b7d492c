"""The IR: lossless lowering and raising, subgraphs, external data, verification, mutation,
printing and load errors."""

from __future__ import annotations

import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import ir
import models
from passes.inputs import sample_inputs


# --------------------------------------------------------------------------- helpers
def _run(model: onnx.ModelProto | str, feeds: dict) -> list[np.ndarray]:
    src = model if isinstance(model, str) else model.SerializeToString()
    sess = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _assert_same_outputs(a, b, feeds):
    out_a, out_b = _run(a, feeds), _run(b, feeds)
    assert len(out_a) == len(out_b)
    for x, y in zip(out_a, out_b):
        assert x.dtype == y.dtype and x.shape == y.shape
        assert np.array_equal(x, y)


def _inits(model: onnx.ModelProto) -> dict[str, tuple]:
    return {t.name: (t.data_type, tuple(t.dims), numpy_helper.to_array(t).tobytes())
            for t in model.graph.initializer}


def _vi_key(vi: onnx.ValueInfoProto) -> tuple:
    return vi.name, vi.type.SerializeToString(), vi.doc_string


def _if_model(shadowing: bool = False) -> onnx.ModelProto:
    """y = Relu(x); out = If(cond, then: y * 2, else: Neg(y)); both branches read the outer y.
    ``shadowing``: both branches name their output alike (legal: sibling scopes), so lowering
    keeps the If opaque."""
    two = numpy_helper.from_array(np.array(2.0, np.float32), "two")
    then_out, else_out = ("branch_out", "branch_out") if shadowing else ("then_out", "else_out")
    then_g = helper.make_graph(
        [helper.make_node("Mul", ["y", "two"], [then_out], name="then_mul")], "then_branch",
        [], [helper.make_tensor_value_info(then_out, TensorProto.FLOAT, [2, 3])], [two],
        doc_string="the then branch")
    else_g = helper.make_graph(
        [helper.make_node("Neg", ["y"], [else_out], name="else_neg")], "else_branch",
        [], [helper.make_tensor_value_info(else_out, TensorProto.FLOAT, [2, 3])])
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="relu"),
             helper.make_node("If", ["cond"], ["out"], name="if", then_branch=then_g,
                              else_branch=else_g)]
    graph = helper.make_graph(
        nodes, "if_graph",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
         helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [2, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8,
                              producer_name="tests")
    onnx.checker.check_model(model, full_check=True)
    return model


def _tiny_graph() -> tuple[ir.Graph, ir.Node]:
    g = ir.Graph(name="g")
    g.add_input(ir.Value("x", ir.tensor_type(np.float32, [1, 4])))
    relu = g.add_node(ir.Node("relu", "Relu"), inputs=["x"], outputs=["y"])
    g.set_outputs(["y"])
    return g, relu


# --------------------------------------------------------------------------- round trip
@pytest.mark.parametrize("name", sorted(models.PATTERNS))
def test_round_trip_is_lossless(name):
    model = models.PATTERNS[name]()
    model.doc_string = "model doc"
    model.graph.doc_string = f"graph doc of {name}"
    model.producer_version = "9.9"
    model.model_version = 7
    helper.set_model_props(model, {"author": "tests", "pattern": name})
    back = ir.raise_model(ir.lower(model))

    onnx.checker.check_model(back)
    assert back.ir_version == model.ir_version
    assert ({o.domain: o.version for o in back.opset_import}
            == {o.domain: o.version for o in model.opset_import})
    assert back.producer_name == "tests" and back.producer_version == "9.9"
    assert back.model_version == 7 and back.doc_string == "model doc"
    assert ({p.key: p.value for p in back.metadata_props}
            == {"author": "tests", "pattern": name})
    assert back.graph.doc_string == f"graph doc of {name}"
    assert back.graph.name == model.graph.name

    # value_info: same entries, same types
    assert model.graph.value_info or name not in ("many_to_many", "flatten_gemm")
    assert ({vi.name: _vi_key(vi) for vi in back.graph.value_info}
            == {vi.name: _vi_key(vi) for vi in model.graph.value_info})
    # graph inputs and outputs, in order, with their types
    assert [_vi_key(vi) for vi in back.graph.input] == [_vi_key(vi) for vi in model.graph.input]
    assert [_vi_key(vi) for vi in back.graph.output] == [_vi_key(vi) for vi in model.graph.output]
    # nodes: same names, ops, domains, wiring and attributes (verbatim)
    def node_key(n):
        return (n.op_type, n.domain, list(n.input), list(n.output),
                [a.SerializeToString() for a in n.attribute])
    assert ({n.name: node_key(n) for n in back.graph.node}
            == {n.name: node_key(n) for n in model.graph.node})
    # initializers bit-identical, by name
    assert _inits(back) == _inits(model)

    _assert_same_outputs(model, back, sample_inputs(model, seed=len(name)))


def test_an_if_reading_a_computed_value_is_lowered_and_raised_back():
    """Its branch nodes are IR nodes (ir/bodies.py); the If reads cond and both branches'
    outputs; raising puts the nodes and the weight only one branch reads back in the bodies."""
    model = _if_model()
    graph = ir.lower(model)
    assert [v.name for v in graph.inputs_of("if")] == ["cond", "then_out", "else_out"]
    assert sorted(n.name for n, _ in graph.consumers("y")) == ["else_neg", "then_mul"]
    assert not graph.implicit_inputs_of("if") and ir.verify(graph) == []
    back = ir.raise_model(graph)
    onnx.checker.check_model(back, full_check=True)
    assert [n.name for n in back.graph.node] == ["relu", "if"] and not back.graph.initializer
    bodies = {a.name: a.g for a in back.graph.node[1].attribute}
    assert [n.name for n in bodies["then_branch"].node] == ["then_mul"]
    assert [t.name for t in bodies["then_branch"].initializer] == ["two"]
    assert bodies["then_branch"].doc_string == "the then branch"
    x = np.random.default_rng(3).standard_normal((2, 3)).astype(np.float32)
    for cond in (True, False):
        _assert_same_outputs(model, back, {"x": x, "cond": np.array(cond)})


def test_round_trip_of_if_with_outer_scope_subgraphs():
    model = _if_model(shadowing=True)
    graph = ir.lower(model)

    uses = graph.consumers("y")
    assert (graph.node("if"), ir.IMPLICIT_PORT) in uses
    assert [v.name for v in graph.implicit_inputs_of("if")] == ["y"]
    assert ir.verify(graph) == []

    back = ir.raise_model(graph)
    onnx.checker.check_model(back, full_check=True)
    if_before = next(n for n in model.graph.node if n.op_type == "If")
    if_after = next(n for n in back.graph.node if n.op_type == "If")
    assert ({a.name: a.SerializeToString() for a in if_after.attribute}
            == {a.name: a.SerializeToString() for a in if_before.attribute})
    # the producer of the outer value is still ordered before the If that reads it
    names = [n.name for n in back.graph.node]
    assert names.index("relu") < names.index("if")

    x = np.random.default_rng(3).standard_normal((2, 3)).astype(np.float32)
    for cond in (True, False):
        feeds = {"x": x, "cond": np.array(cond)}
        _assert_same_outputs(model, back, feeds)


def test_port_table_and_known_type_match_what_they_stand_in_for():
    """verify and raise read port_table instead of inputs_of/outputs_of/implicit_inputs_of, and
    initializer types come from known_type instead of make_tensor_type_proto: the same answers."""
    for graph in (ir.lower(_if_model(shadowing=True)), ir.lower(models.many_to_many())):
        table = graph.port_table()
        assert [n.name for n, *_ in table] == [n.name for n in graph.nodes()]
        for node, ins, outs, implicit in table:
            assert ins == [v.name if v else "" for v in graph.inputs_of(node)]
            assert outs == [v.name if v else "" for v in graph.outputs_of(node)]
            assert list(implicit) == [v.name for v in graph.implicit_inputs_of(node)]
            assert sorted(implicit) == sorted(src[1] for src, ports in
                                              graph._g._pred[("n", node.name)].items() if ir.IMPLICIT_PORT in ports)
    assert any(implicit for *_, implicit in ir.lower(_if_model(shadowing=True)).port_table())
    for elem, dims in ((TensorProto.FLOAT, [64, 3, 7, 7]), (TensorProto.INT64, []), (TensorProto.FLOAT16, [0, 5])):
        made = helper.make_tensor_type_proto(elem, dims)
        assert ir.graph.known_type(elem, dims).SerializeToString() == made.SerializeToString()
        assert ir.graph.known_type(elem, dims).tensor_type.HasField("shape")


def test_outer_value_read_only_by_a_subgraph_is_not_dead():
    graph = ir.lower(_if_model(shadowing=True))
    graph.remove_dead()
    assert graph.has_node("relu")  # the If reads y from inside its branches
    assert ir.verify(graph) == []


# --------------------------------------------------------------------------- external data
def test_external_data_load_and_save(tmp_path):
    model = models.chain()
    src = tmp_path / "src" / "m.onnx"
    src.parent.mkdir()
    onnx.save(onnx.ModelProto.FromString(model.SerializeToString()), str(src),
              save_as_external_data=True, all_tensors_to_one_file=True,
              size_threshold=0, location="w.data")
    names = {t.name for t in model.graph.initializer}

    loaded, external = ir.load(src)
    assert isinstance(loaded, onnx.ModelProto)
    assert external == frozenset(names)
    assert _inits(loaded) == _inits(model)  # data really read from w.data

    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "pruned.onnx"
    model2 = ir.raise_model(ir.lower(loaded))
    ir.save(model2, out, external)
    assert sorted(p.name for p in out_dir.iterdir()) == ["pruned.onnx", "pruned.onnx.data"]
    assert (out_dir / "pruned.onnx.data").stat().st_size > 0
    # the weights live in the data file, not in the model file
    plain = onnx.load(str(out), load_external_data=False)
    for t in plain.graph.initializer:
        assert onnx.external_data_helper.uses_external_data(t), t.name
        location = {e.key: e.value for e in t.external_data}["location"]
        assert location == "pruned.onnx.data"

    reloaded, external2 = ir.load(out)
    assert external2 == frozenset(names)
    assert _inits(reloaded) == _inits(model)
    feeds = sample_inputs(model, seed=11)
    _assert_same_outputs(model, reloaded, feeds)
    # the source files are untouched
    assert sorted(p.name for p in src.parent.iterdir()) == ["m.onnx", "w.data"]


def test_lower_refuses_external_data_that_was_not_loaded(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(models.chain(), str(path), save_as_external_data=True,
              all_tensors_to_one_file=True, size_threshold=0, location="w.data")
    with pytest.raises(ir.ModelLoadError, match="external data"):
        ir.lower(onnx.load(str(path), load_external_data=False))


def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path):
    out = tmp_path / "m.onnx"
    out.write_bytes(b"old")
    model = models.chain()
    ir.save(model, out)
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]
    assert onnx.load(str(out)).SerializeToString() == model.SerializeToString()


# --------------------------------------------------------------------------- verify
def test_verify_reports_every_problem_at_once():
    g = ir.Graph(name="broken")
    g.add_input(ir.Value("x", ir.tensor_type(np.float32, [1, 4])))
    g.add_node(ir.Node("first", "Add"), inputs=["x", "ghost_a"], outputs=["a"])
    g.add_node(ir.Node("second", "Mul"), inputs=["ghost_b", "a"], outputs=["b"])
    g.set_outputs(["b"])
    problems = ir.verify(g)
    assert isinstance(problems, list)
    text = "\n".join(problems)
    assert len(problems) == 2, problems
    assert any("'first'" in p and "'ghost_a'" in p for p in problems), text
    assert any("'second'" in p and "'ghost_b'" in p for p in problems), text
    assert all("\n" not in p for p in problems)


def test_verify_reports_missing_output_and_bad_initializer_together():
    g = ir.Graph(name="broken")
    g.add_input(ir.Value("x", ir.tensor_type(np.float32, [1, 4])))
    good = ir.Initializer.from_array("w", np.ones((4,), np.float32))
    # an initializer whose declared type disagrees with its data
    bad = ir.Initializer("w", ir.tensor_type(np.float32, [5]), source=good.array)
    g.add_initializer(bad)
    g.add_node(ir.Node("add", "Add"), inputs=["x", "w"], outputs=["y"])
    g.set_outputs(["y", "nowhere"])
    problems = ir.verify(g)
    assert any("'nowhere'" in p for p in problems), problems
    assert any("'w'" in p for p in problems), problems


def test_verify_is_empty_for_sound_graphs():
    g, _ = _tiny_graph()
    assert ir.verify(g) == []
    for name, factory in sorted(models.PATTERNS.items()):
        assert ir.verify(ir.lower(factory())) == [], name


# --------------------------------------------------------------------------- mutation
def test_every_mutation_bumps_the_version():
    g = ir.Graph(name="g")

    def bumps(fn, *args, **kwargs):
        before = g.version
        result = fn(*args, **kwargs)
        assert g.version > before, fn.__name__
        return result

    x = bumps(g.add_input, ir.Value("x", ir.tensor_type(np.float32, [1, 4])))
    bumps(g.add_value, ir.Value("spare"))
    w = bumps(g.add_initializer, ir.Initializer.from_array("w", np.ones((4,), np.float32)))
    add = bumps(g.add_node, ir.Node("add", "Add"), inputs=[x.name, w.name], outputs=["y"])
    bumps(g.add_node, ir.Node("relu", "Relu"), inputs=["y"], outputs=["z"])
    bumps(g.set_outputs, ["z"])
    bumps(g.replace_initializer, ir.Initializer.from_array("w", np.zeros((4,), np.float32)))
    bumps(g.set_value_type, "y", ir.tensor_type(np.float32, [1, 4]))
    bumps(g.replace_node, add.with_attr("note", 1))
    bumps(g.set_input, "relu", 0, "x")
    bumps(g.remove_node, "add")
    bumps(g.remove_value, "w")
    bumps(g.remove_value, "spare")
    g.add_node(ir.Node("dead", "Neg"), inputs=["x"], outputs=["unused"])
    assert bumps(g.remove_dead) == 1
    assert not g.has_node("dead") and g.has_node("relu")
    assert ir.verify(g) == []


def test_consumers_sorted_and_counting_each_use():
    g = ir.Graph(name="g")
    g.add_input(ir.Value("x", ir.tensor_type(np.float32, [1, 4])))
    g.add_node(ir.Node("b_first", "Relu"), inputs=["x"], outputs=["r"])
    add = g.add_node(ir.Node("a_second", "Add"), inputs=["x", "x"], outputs=["s"])
    g.add_node(ir.Node("c_third", "Mul"), inputs=["r", "x"], outputs=["t"])
    g.set_outputs(["s", "t"])
    uses = [(n.name, port) for n, port in g.consumers("x")]
    # by graph order (not by name), then port; Add(x, x) is two uses
    assert uses == [("b_first", 0), ("a_second", 0), ("a_second", 1), ("c_third", 1)]
    assert g.inputs_of(add) == [g.value("x"), g.value("x")]
    assert [v.name for v in g.inputs_of("c_third")] == ["r", "x"]
    assert g.producer("s") is add and g.producer_port("s") == 0
    assert g.consumers("t") == []
    # the count without the sorted list, and the membership tests, agree with the lists
    assert [g.num_consumers(v) for v in ("x", "r", "s", "t")] == [4, 1, 0, 0]
    assert [g.is_graph_output(v) for v in ("s", "t", "x")] == [True, True, False]
    g.set_outputs(["t"])
    assert not g.is_graph_output("s") and g.is_graph_output(g.value("t"))
    assert g.is_graph_input("x") and not g.is_graph_input("r")
    g.add_initializer(ir.Initializer.from_array("w", np.ones((4,), np.float32)))
    g.add_input(g.value("w"))  # an initializer listed among the inputs (IR < 4)
    assert g.is_graph_input("w") and g.input_names == ["x", "w"]
    assert g.remove_dead() == 2  # a_second (s no longer an output), then w (read by nobody)
    assert not g.is_graph_input("w") and g.input_names == ["x"]
    assert g.num_consumers("x") == 2


def test_topo_index_is_the_topological_order_of_the_current_version():
    from passes.op_rules.folding import topo_index

    g, _ = _tiny_graph()
    first = topo_index(g)
    assert first == {"relu": 0} and topo_index(g) is first  # kept while the graph does not change
    g.add_node(ir.Node("neg", "Neg"), inputs=["x"], outputs=["n"])
    g.add_node(ir.Node("add", "Add"), inputs=["y", "n"], outputs=["z"])
    assert topo_index(g) == {n.name: i for i, n in enumerate(g.topo_nodes())}
    assert set(topo_index(g)) == {"relu", "neg", "add"} and topo_index(g)["add"] == 2


def test_add_node_refuses_a_second_producer():
    g, relu = _tiny_graph()
    with pytest.raises(ir.GraphError, match="'y'"):
        g.add_node(ir.Node("neg", "Neg"), inputs=["x"], outputs=["y"])
    assert g.producer("y") is relu
    with pytest.raises(ir.GraphError):
        g.add_node(ir.Node("relu", "Relu"), inputs=["x"], outputs=["other"])  # same node name
    w = g.add_initializer(ir.Initializer.from_array("w", np.ones((4,), np.float32)))
    with pytest.raises(ir.GraphError, match="'w'"):
        g.add_node(ir.Node("makes_w", "Neg"), inputs=["x"], outputs=["w"])
    assert g.producer("w") is None and g.initializer("w") is w


def test_refused_add_node_leaves_the_graph_unchanged():
    g, relu = _tiny_graph()
    before = ir.dump(g)
    version = g.version
    with pytest.raises(ir.GraphError):
        g.add_node(ir.Node("neg", "Neg"), inputs=["x"], outputs=["y"])
    # a refused mutation must not leave a half-added node behind
    assert not g.has_node("neg")
    assert [n.name for n, _ in g.consumers("x")] == ["relu"]
    assert g.version == version
    assert ir.dump(g) == before
    assert ir.verify(g) == []


def _named_model(names: list[str]) -> onnx.ModelProto:
    nodes, prev = [], "x"
    for i, name in enumerate(names):
        nodes.append(helper.make_node("Relu", [prev], [f"v{i}"], name=name))
        prev = f"v{i}"
    graph = helper.make_graph(nodes, "names",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [1, 4])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_lowering_makes_empty_and_duplicate_node_names_unique():
    model = _named_model(["", "dup", "dup", "", "keep", "dup"])
    graph = ir.lower(model)
    order = graph.topo_nodes()
    names = [n.name for n in order]
    assert len(set(names)) == len(names) == 6
    assert all(names), names
    assert names[1] == "dup" and names[4] == "keep"  # the first of each name is kept
    # the wiring follows the nodes, not the names
    assert [graph.inputs_of(n)[0].name for n in order] == ["x", "v0", "v1", "v2", "v3", "v4"]
    back = ir.raise_model(graph)
    onnx.checker.check_model(back)
    assert len({n.name for n in back.graph.node}) == 6
    # ONNX Runtime rejects the original (two nodes named "dup"); the raised model runs
    x = np.random.default_rng(5).standard_normal((1, 4)).astype(np.float32)
    (y,) = _run(back, {"x": x})
    assert np.array_equal(y, np.maximum(x, 0))


def test_lowering_keeps_names_that_were_already_unique():
    # "dup_1" is unique in the file: only the repeated "dup" may be renamed
    graph = ir.lower(_named_model(["dup", "dup", "dup_1"]))
    names = [n.name for n in graph.topo_nodes()]
    assert len(set(names)) == 3
    assert names[0] == "dup" and names[2] == "dup_1", names


# --------------------------------------------------------------------------- printer
@pytest.mark.parametrize("name", ["chain", "many_to_many", "caffe_style_opset9", "barrier"])
def test_dump_is_deterministic_and_names_every_node(name):
    model = models.PATTERNS[name]()
    text = ir.dump(ir.lower(model))
    assert text == ir.dump(ir.lower(models.PATTERNS[name]()))
    assert text == ir.dump(ir.lower(onnx.ModelProto.FromString(model.SerializeToString())))
    lines = text.splitlines()
    for node in model.graph.node:
        assert sum(1 for line in lines if line.endswith(f"  # {node.name}")) == 1, node.name
    for init in model.graph.initializer:
        assert any(line.strip().startswith(f"@{init.name}:") for line in lines), init.name


def test_dump_changes_when_a_weight_changes():
    graph = ir.lower(models.chain())
    before = ir.dump(graph)
    name, init = next(iter(graph.initializers.items()))
    graph.replace_initializer(ir.Initializer.from_array(name, init.array + 1))
    assert ir.dump(graph) != before


# --------------------------------------------------------------------------- load errors
def _assert_one_line_naming(exc: ir.ModelLoadError, path):
    msg = str(exc)
    assert "\n" not in msg.strip(), msg
    assert str(path) in msg, msg


def test_load_missing_file(tmp_path):
    path = tmp_path / "absent.onnx"
    with pytest.raises(ir.ModelLoadError) as info:
        ir.load(path)
    _assert_one_line_naming(info.value, path)
    assert not path.exists()


def test_load_directory(tmp_path):
    path = tmp_path / "folder.onnx"
    path.mkdir()
    with pytest.raises(ir.ModelLoadError) as info:
        ir.load(str(path))
    _assert_one_line_naming(info.value, path)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_load_random_bytes(tmp_path, seed):
    path = tmp_path / "noise.onnx"
    data = np.random.default_rng(seed).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    path.write_bytes(data)
    with pytest.raises(ir.ModelLoadError) as info:
        ir.load(path)
    _assert_one_line_naming(info.value, path)
    assert path.read_bytes() == data


def test_load_missing_external_data_file(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(models.chain(), str(path), save_as_external_data=True,
              all_tensors_to_one_file=True, size_threshold=0, location="w.data")
    os.remove(tmp_path / "w.data")
    with pytest.raises(ir.ModelLoadError) as info:
        ir.load(path)
    _assert_one_line_naming(info.value, path)


@pytest.mark.parametrize("name", ["many_to_one", "if_crossing", "shape_reshape", "no_initializers"])
def test_the_model_is_written_in_pieces_that_are_its_serialization(name, tmp_path):
    from ir.onnx_io import serialized

    if name == "no_initializers":
        x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
        model = onnx.helper.make_model(onnx.helper.make_graph([onnx.helper.make_node("Relu", ["x"], ["y"])], "g", [x],
                                       [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])]),
                                       opset_imports=[onnx.helper.make_opsetid("", 17)])
    else:
        model = getattr(models, name)()
    model.metadata_props.add(key="k", value="v")
    model.graph.value_info.add().name = "late"  # a graph field after the initializers
    assert b"".join(serialized(model)) == model.SerializeToString()
    ir.save(model, tmp_path / "m.onnx")
    assert (tmp_path / "m.onnx").read_bytes() == model.SerializeToString()
