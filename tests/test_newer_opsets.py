"""Models at opset 22..28 or IR version 11..14, which ONNX Runtime 1.19.2 (the proof) does not load:
``support.downgraded`` relabels them as opset 21 / IR 10 when nothing they use changed after 21
(``passes/newer_opsets.py``, written by ``tools/newer_opsets.py`` from onnx 1.23.2), and refuses
them in one line naming the node, op, attribute, type or field otherwise.

The models are built with onnx.helper of onnx 1.17 (opset imports and IR versions set by hand); a
field IR 11 added is written as raw protobuf bytes, which onnx 1.17 reads as an unknown field.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import models
import pipeline
from passes import newer_opsets as newer
from passes.support import UnsupportedModelError, downgraded

ROOT = Path(__file__).resolve().parent.parent
NEWER_ONNX = Path(os.environ.get("ONNXPRUNER_NEWER_ONNX_PYTHON", "/work/venvs/jax/bin/python"))


def _at(model: onnx.ModelProto, opset: int, ir_version: int = 10) -> onnx.ModelProto:
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            o.version = opset
    model.ir_version = ir_version
    return model


def _single(op: str, opset: int, shape=(1, 2, 4, 4), inputs=(), **attrs) -> onnx.ModelProto:
    """x -> Conv (a prunable 1x1, 4 channels) -> ``op`` -> Conv -> y, at ``opset``; ``shape[1]``
    over 256: ``w1`` is a weight a hollow read keeps apart."""
    rng = np.random.default_rng(0)
    w1 = helper.make_tensor("w1", TensorProto.FLOAT, [4, shape[1], 1, 1],
                            rng.standard_normal(4 * shape[1]).astype(np.float32).tobytes(), raw=True)
    w2 = helper.make_tensor("w2", TensorProto.FLOAT, [3, 4, 1, 1], rng.standard_normal(12).tolist())
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], name="conv1"),
             helper.make_node(op, ["a", *inputs], ["b"], name="the_op", **attrs),
             helper.make_node("Conv", ["b", "w2"], ["y"], name="conv2")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", "c", "h", "w"])], [w1, w2])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)


def _refused(model, *words) -> str:
    with pytest.raises(UnsupportedModelError) as info:
        pipeline.prune(model, ratio=0.5)
    line = str(info.value)
    assert "\n" not in line and all(w in line for w in words), line
    return line


# ----------------------------------------------------------------------------- the table
def test_the_table_is_what_the_newer_onnx_gives():
    """tools/newer_opsets.py --check under the newer onnx (skipped where that venv is absent)."""
    if not NEWER_ONNX.exists():
        pytest.skip(f"no newer onnx at {NEWER_ONNX} (set ONNXPRUNER_NEWER_ONNX_PYTHON)")
    proc = subprocess.run([str(NEWER_ONNX), str(ROOT / "tools" / "newer_opsets.py"), "--check"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_table_agrees_with_onnx_1_17():
    """Its invariants, against what the project's onnx (1.17, opset 22) knows: a new op does not
    exist at 21 and stays new; every other op exists at 21; every bump at 22 that onnx 1.17 has is
    in the table and the other way round; an added attribute is not in the op at 21, a reviewed
    existing one is; every refusal has a reason; type and field numbers agree with onnx 1.17's."""
    kinds = {"types", "new", "changed"}
    at22 = {s.name for s in onnx.defs.get_all_schemas_with_history() if s.domain == "" and s.since_version == 22}
    assert at22 == {op for op, bumps in newer.OPS.items() if 22 in bumps}
    assert newer.MAX_OPSET >= 23 and newer.MAX_IR_VERSION >= 11
    for op, bumps in newer.OPS.items():
        assert all(21 < v <= newer.MAX_OPSET for v in bumps), op
        try:
            old = onnx.defs.get_schema(op, 21, "")
        except onnx.defs.SchemaError:
            old = None
        if "new" in bumps.values():
            assert old is None and set(bumps.values()) == {"new"}, op
            continue
        assert old is not None, op
        for v, change in bumps.items():
            assert change in kinds or change.startswith("attribute "), (op, v, change)
            if change != "types":
                assert newer.WHY.get(f"{op} {v}"), (op, v)
            if change.startswith("attribute "):
                name, eq, _ = change[len("attribute "):].partition("=")
                assert (name in old.attributes) == bool(eq), (op, v, change)
    assert set(newer.TYPE_NAMES).isdisjoint(onnx.TensorProto.DataType.values())
    assert min(newer.TYPE_NAMES) == max(onnx.TensorProto.DataType.values()) + 1
    for kind, fields in newer.FIELDS.items():
        known = {f.number: f.name for f in getattr(onnx, kind).DESCRIPTOR.fields}
        assert all(fields[n] == name for n, name in known.items()), kind


# ----------------------------------------------------------------------------- converted down
@pytest.mark.parametrize("opset, ir_version", [(22, 10), (23, 10), (28, 14), (17, 11), (23, 11)])
def test_a_model_using_nothing_newer_is_converted_down_pruned_and_proven(opset, ir_version):
    given = _at(models.chain(), opset, ir_version)
    kept = given.SerializeToString()
    result = pipeline.prune(given, ratio=0.5)
    assert given.SerializeToString() == kept  # the caller's model is never changed
    assert result.report["verified"] is True and result.report["params_after"] < result.report["params_before"]
    out = result.model
    assert [o.version for o in out.opset_import if o.domain in ("", "ai.onnx")] == [min(opset, 21)]
    assert out.ir_version == 10
    meta = {p.key: p.value for p in out.metadata_props}
    assert meta.get("onnxpruner.converted_from_opset") == (str(opset) if opset > 21 else None)
    assert meta.get("onnxpruner.converted_from_ir_version") == (str(ir_version) if ir_version > 10 else None)


def test_a_stale_value_info_does_not_stop_the_conversion():
    """jax2onnx 0.17.1 leaves value_info with shapes of another layout; the passes recompute it."""
    model = _at(models.chain(), 23)
    value = model.graph.node[0].output[0]
    model.graph.value_info.append(helper.make_tensor_value_info(value, TensorProto.FLOAT, [1, 99, 8, 8]))
    assert pipeline.prune(model, ratio=0.5).report["verified"] is True


def test_the_command_line_converts_a_file_down_and_leaves_it_untouched(tmp_path):
    model = tmp_path / "m.onnx"
    onnx.save(_at(models.chain(), 23, 11), str(model))
    before = model.read_bytes()
    out = tmp_path / "out.onnx"
    proc = subprocess.run([str(Path(sys.executable).parent / "onnxpruner"), "prune", str(model), "-o", str(out),
                           "--ratio", "0.5", "--no-latency"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "note: converted from opset 23 to 21 by relabelling" in proc.stdout
    assert "note: IR version 11 saved as 10" in proc.stdout and "verified True" in proc.stdout
    assert model.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "out.onnx"]
    written = onnx.load(str(out))
    assert written.ir_version == 10 and [o.version for o in written.opset_import] == [21]


def test_a_hollow_read_is_relabelled_without_copying_its_weights(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(_single("Relu", 23, shape=(1, 300, 2, 2)), str(path))
    model, _, _, weights = pipeline.open_model(path, hollowed=True)
    assert weights and all(not a.flags.writeable and a.base is not None for a in weights.values())
    assert model.opset_import[0].version == 21


def test_a_reviewed_attribute_at_its_default_is_converted_and_otherwise_refused():
    pool = dict(kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 1, 1])
    assert pipeline.prune(_single("MaxPool", 22, ceil_mode=0, **pool), ratio=0.5).report["verified"] is True
    assert pipeline.prune(_single("MaxPool", 22, **pool), ratio=0.5).report["verified"] is True
    _refused(_single("MaxPool", 22, ceil_mode=1, **pool), "'the_op'", "MaxPool", "ceil_mode=1", "opset 22")
    _refused(_single("AveragePool", 23, ceil_mode=1, **pool), "'the_op'", "ceil_mode=1")
    # an attribute added after 21: a node that sets it is refused (the checker at 21 would reject it too)
    model = _single("SpaceToDepth", 28, blocksize=2)
    assert downgraded(model, "<model>").opset_import[0].version == 21
    model.graph.node[1].attribute.append(helper.make_attribute("mode", "CRD"))
    _refused(model, "'the_op'", "SpaceToDepth", "mode=CRD", "opset 28")


def test_a_new_op_is_refused_naming_the_node_and_the_opset_it_exists_from(tmp_path):
    model = _single("RMSNormalization", 23, inputs=["scale"], axis=1)
    model.graph.initializer.append(helper.make_tensor("scale", TensorProto.FLOAT, [4], [1.0] * 4))
    line = _refused(model, "node 'the_op'", "RMSNormalization", "exists from opset 23", "7..21")
    assert line.startswith("<model>: ")
    path = tmp_path / "rms.onnx"
    onnx.save(model, str(path))
    out = tmp_path / "out.onnx"
    proc = subprocess.run([str(Path(sys.executable).parent / "onnxpruner"), "prune", str(path), "-o", str(out)],
                          capture_output=True, text=True)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and not out.exists() and len(lines) == 1 and "Traceback" not in proc.stderr
    assert lines[0].startswith(f"error: {path}: node 'the_op' is op RMSNormalization, which exists from opset 23")


def test_an_op_whose_semantics_changed_is_refused():
    model = _single("Mod", 28, inputs=["m"], fmod=1)
    model.graph.initializer.append(helper.make_tensor("m", TensorProto.FLOAT, [1], [3.0]))
    _refused(model, "'the_op'", "Mod", "changed at opset 28", newer.WHY["Mod 28"])
    assert pipeline.prune(_at(model, 27), ratio=0.5).report["verified"] is True  # Mod is the same up to 27


def test_a_new_op_inside_a_subgraph_or_a_local_function_is_refused():
    then = helper.make_graph([helper.make_node("Swish", ["a"], ["t"], name="inner")], "then", [],
                             [helper.make_tensor_value_info("t", TensorProto.FLOAT, [1, 4, 4, 4])])
    other = helper.make_graph([helper.make_node("Relu", ["a"], ["e"], name="relu")], "else", [],
                              [helper.make_tensor_value_info("e", TensorProto.FLOAT, [1, 4, 4, 4])])
    model = _single("If", 24, then_branch=then, else_branch=other)
    model.graph.node[1].input[:] = ["cond"]
    model.graph.initializer.append(helper.make_tensor("cond", TensorProto.BOOL, [], [True]))
    _refused(model, "node 'inner'", "Swish", "exists from opset 24")
    _refused(_at(model, 23), "No Op registered for Swish")  # nor is it an op at 23: the checker says so
    fn = helper.make_function("local", "Act", ["i"], ["o"], [helper.make_node("Swish", ["i"], ["o"], name="f_swish")],
                              [helper.make_opsetid("", 24)])
    model = _single("Act", 21)
    model.graph.node[1].domain = "local"
    model.opset_import.append(helper.make_opsetid("local", 1))
    model.functions.append(fn)
    _refused(model, "node 'f_swish' (in function local.Act)", "Swish", "exists from opset 24")


@pytest.mark.parametrize("where", ["initializer", "cast", "value_info"])
def test_an_element_type_opset_21_lacks_is_refused(where):
    model = _single("Relu", 23)
    if where == "initializer":  # float4e2m1 (23), one byte holding two values
        t = onnx.TensorProto(name="w4", data_type=23, dims=[2], raw_data=b"\x11")
        model.graph.initializer.append(t)
        words = ["initializer 'w4'", "float4e2m1"]
    elif where == "cast":
        model = _single("Cast", 24, to=24)  # float8e8m0
        words = ["node 'the_op'", "attribute to", "float8e8m0"]
    else:
        model.graph.value_info.append(helper.make_tensor_value_info("a", 25, None))  # uint2
        words = ["value 'a'", "uint2"]
    _refused(model, *words)


def test_casts_to_the_fnuz_float8_types_are_refused_from_opset_24():
    model = _single("Cast", 23, to=TensorProto.FLOAT8E4M3FNUZ)
    model.graph.node.insert(2, helper.make_node("Cast", ["b"], ["b32"], name="back", to=TensorProto.FLOAT))
    model.graph.node[3].input[0] = "b32"
    assert downgraded(model, "<model>").opset_import[0].version == 21
    with pytest.raises(UnsupportedModelError, match="float8e4m3fnuz, whose casts changed at opset 24"):
        downgraded(_at(model, 24), "<model>")


def _with_field(model: onnx.ModelProto, number: int, payload: bytes, node: int | None = None) -> onnx.ModelProto:
    """``model`` with a length-delimited field ``number`` that onnx 1.17 does not know (on a node)."""
    def field(data: bytes) -> bytes:
        key, n = (number << 3) | 2, len(data)
        return bytes([key & 0x7F | 0x80, key >> 7]) + bytes([n]) + data
    if node is None:
        return onnx.ModelProto.FromString(model.SerializeToString() + field(payload))
    target = model.graph.node[node]
    target.ParseFromString(target.SerializeToString() + field(payload))
    return model


def test_a_field_ir_11_added_is_refused_naming_it():
    config = b"\x0a\x02c0\x10\x02"  # DeviceConfigurationProto(name="c0", num_devices=2)
    model = _with_field(_at(models.chain(), 21, 11), 26, config)
    _refused(model, "the model has field configuration (ModelProto field 26)", "IR version 11")
    model = _with_field(_at(models.chain(), 23, 11), 10, b"\x0a\x02c0", node=0)
    name = model.graph.node[0].name
    _refused(model, f"node '{name}' has field device_configurations (NodeProto field 10)")


def test_a_field_ir_11_added_is_seen_in_a_file_with_external_data(tmp_path):
    """A hollow read of such a file copies the model's known fields only: the file is read again."""
    model = _single("Relu", 23, shape=(1, 300, 2, 2))
    model.ir_version = 11
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path), save_as_external_data=True, location="m.data", size_threshold=0)
    assert pipeline.prune(path, ratio=0.5).report["verified"] is True
    path.write_bytes(path.read_bytes() + b"\xd2\x01\x04\x0a\x02c0")  # ModelProto field 26: configuration
    before = path.read_bytes()
    with pytest.raises(UnsupportedModelError, match="the model has field configuration"):
        pipeline.prune(path, ratio=0.5)
    assert path.read_bytes() == before


def test_opsets_and_ir_versions_beyond_the_table_stay_refused():
    _refused(_at(models.chain(), newer.MAX_OPSET + 1), f"opset {newer.MAX_OPSET + 1}", "7..21",
             f"22..{newer.MAX_OPSET}")
    _refused(_at(models.chain(), 21, newer.MAX_IR_VERSION + 1), f"IR version {newer.MAX_IR_VERSION + 1}")
    model = models.chain()
    model.opset_import.append(helper.make_opsetid("ai.onnx.ml", 6))
    _refused(model, "opset 6 of ai.onnx.ml", "<= 5")


def test_a_converted_model_that_fails_strict_shape_inference_at_21_is_refused():
    # QuantizeLinear 23 lets x and y_scale differ in type; at 21 one type parameter binds both
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT16, [2])
    y = helper.make_tensor_value_info("y", TensorProto.UINT8, [2])
    scale = helper.make_tensor("s", TensorProto.FLOAT, [], [0.5])
    graph = helper.make_graph([helper.make_node("QuantizeLinear", ["x", "s"], ["y"], name="q")], "g", [x], [y], [scale])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)], ir_version=10)
    with pytest.raises(UnsupportedModelError, match="fails onnx's checks there"):
        downgraded(model, "<model>")
