"""The pass manager: spec parsing and printing, the registry, the static requires check,
instruments, error messages, and a user's own pass used by name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import onnx
import pytest

import ir
import models
import pipeline
from passes.analyses import Patterns, Scores, Tags
from passes.base import Pass, PassContext, PassResult

CANONICAL = ("tag,trees{keep-io=false gqa=groups},classify,score{criterion=l1 scope=tree},"
             "mask{ratio=0.5 ratios= round-to=-1 min-keep=1 ignore= rank=layer normalize=max "
             "max-ratio=0.9 target-flops=0 target-params=0 heads=-1 stream=-1},slice,infer-shapes,"
             "validate{ort=true equivalence=true rtol=0.001 atol=0.0001}")


def test_spec_prints_canonically_with_defaults_and_round_trips():
    pipe = pipeline.Pipeline.parse(pipeline.DEFAULT_SPEC)
    assert pipe.spec() == CANONICAL
    assert pipeline.Pipeline.parse(pipe.spec()).spec() == CANONICAL
    custom = pipeline.Pipeline.parse(" tag , trees,classify,score{scope=node criterion=l2},"
                                     "mask{ratio=0.3 round-to=8 ratios=a:0.2,b:0.4 ignore=x,y}")
    assert custom.spec() == ("tag,trees{keep-io=false gqa=groups},classify,score{criterion=l2 scope=node},"
                             "mask{ratio=0.3 ratios=a:0.2,b:0.4 round-to=8 min-keep=1 ignore=x,y "
                             "rank=layer normalize=max max-ratio=0.9 target-flops=0 target-params=0 heads=-1 stream=-1}")
    assert custom.passes[4].ratios == {"a": 0.2, "b": 0.4}
    assert custom.passes[4].ignore == ("x", "y")


def test_registry_keys_equal_pass_names_and_modules():
    for name, cls in pipeline.REGISTRY.items():
        assert cls.name == name
        assert cls.__module__ == "passes." + name.replace("-", "_")


@pytest.mark.parametrize("spec,message", [
    ("tag,trees,prune-it", "unknown pass 'prune-it'; known passes: classify"),
    ("tag,score{criterion=l3}", "unknown criterion 'l3'"),
    ("tag,mask{fraction=0.5}", "has no option 'fraction'; its options: ratio, ratios, round-to"),
    ("tag,mask{ratio=half}", "cannot read 'half'"),
    ("tag,mask{ratio=0.5", "unbalanced"),
    ("", "empty pass spec"),
])
def test_spec_errors_name_what_exists(spec, message):
    with pytest.raises(pipeline.SpecError, match=message.replace("(", r"\(")):
        pipeline.Pipeline.parse(spec)


def test_requires_checked_before_anything_runs():
    pipe = pipeline.Pipeline.parse("tag,trees,classify,mask{ratio=0.5}")
    with pytest.raises(pipeline.SpecError, match="'mask' requires Scores.*add 'score' before it"):
        pipe.check()
    graph = ir.lower(models.chain())
    version = graph.version
    with pytest.raises(pipeline.SpecError):
        pipe.run(graph, PassContext())
    assert graph.version == version  # nothing ran


def test_analyses_given_up_front_satisfy_requires():
    graph = ir.lower(models.chain())
    ctx = pipeline.Pipeline.parse("tag,trees,classify").run(graph, PassContext())
    # a compiler can run the analyses, then continue piecewise from its own context
    ctx = pipeline.Pipeline.parse("score{scope=node}").run(graph, ctx)
    assert ctx.get(Scores).scope == "node"
    assert ctx.has(Patterns) and ctx.has(Tags)


@dataclass(frozen=True)
class CountOps(Pass):
    """A user's own pass: counts nodes of one op type."""

    name: ClassVar[str] = "count-ops"
    op: str = "Conv"

    def run(self, ir_graph, ctx):
        n = sum(1 for node in ir_graph.nodes() if node.op_type == self.op)
        ctx.report["counted"] = n
        return PassResult(False, {"count": n})


def test_user_pass_registered_and_used_by_name_in_a_spec():
    pipeline.register(CountOps)
    try:
        spec = pipeline.build_spec(0.5).replace("slice,", "slice,count-ops{op=Conv},")
        result = pipeline.prune(models.chain(), passes=spec)
        entry = [p for p in result.report["passes"] if p["name"] == "count-ops"][0]
        assert entry["stats"] == {"count": 3}
        assert "count-ops{op=Conv}" in result.report["spec"]
        assert result.report["verified"] is True
    finally:
        del pipeline.REGISTRY["count-ops"]


def test_register_rejects_what_is_not_a_pass():
    with pytest.raises(TypeError):
        pipeline.register(object)


@dataclass(frozen=True)
class Explode(Pass):
    name: ClassVar[str] = "explode"

    def run(self, ir_graph, ctx):
        raise RuntimeError("boom")


@dataclass(frozen=True)
class Vandal(Pass):
    """Breaks the IR: rewires a node to a value nothing produces."""

    name: ClassVar[str] = "vandal"

    def run(self, ir_graph, ctx):
        node = next(n for n in ir_graph.topo_nodes() if n.op_type == "Relu")
        ir_graph.set_input(node, 0, "nowhere")
        return PassResult(True)


def test_a_failing_pass_is_named_with_those_before_it():
    pipeline.register(Explode)
    try:
        with pytest.raises(pipeline.PipelineError, match=r"pass 'explode' failed \(after: tag, trees\): boom"):
            pipeline.Pipeline.parse("tag,trees,explode,classify").run(ir.lower(models.chain()))
    finally:
        del pipeline.REGISTRY["explode"]


def test_verify_after_every_pass_catches_a_broken_ir_and_can_be_turned_off():
    pipeline.register(Vandal)
    try:
        pipe = pipeline.Pipeline.parse("tag,vandal")
        with pytest.raises(pipeline.PipelineError, match="'vandal'.*IR verification failed.*nowhere"):
            pipe.run(ir.lower(models.chain()))
        pipe.run(ir.lower(models.chain()), verify=False)  # the user asked for no verification
    finally:
        del pipeline.REGISTRY["vandal"]


def test_verify_checks_the_first_graph_and_each_change_not_an_unchanged_graph_again(monkeypatch):
    checked, versions = [], []
    verify = ir.verify
    monkeypatch.setattr(ir, "verify", lambda g: checked.append(g.version) or verify(g))

    class Versions(pipeline.Instrument):
        def after(self, p, graph, ctx, result, seconds):
            versions.append(graph.version)

    graph = ir.lower(models.chain())
    pipeline.Pipeline.parse("tag,trees,classify,score,mask{ratio=0.5},slice,infer-shapes").run(
        graph, PassContext(original=models.chain()), [Versions()])
    changed = [v for i, v in enumerate(versions) if i == 0 or v != versions[i - 1]]
    assert checked == changed and len(changed) >= 2 and len(versions) == 7


def test_transform_drops_analyses_it_does_not_provide():
    graph = ir.lower(models.chain())
    ctx = pipeline.Pipeline.parse("tag,trees,classify,score,mask{ratio=0.5},slice").run(graph, PassContext(
        original=models.chain()))
    assert not ctx.has(Tags) and not ctx.has(Patterns)


def test_instruments_time_and_dump(tmp_path):
    timing = pipeline.TimingInstrument()
    dump = pipeline.DumpInstrument(["mask", "slice"], tmp_path)
    pipeline.prune(models.chain(), instruments=[timing, dump])
    assert [name for name, _ in timing.rows] == ["tag", "trees", "classify", "score", "mask",
                                                 "slice", "infer-shapes", "validate"]
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["05-mask.txt", "06-slice.txt"]
    assert "# Masks" in (tmp_path / "05-mask.txt").read_text()


def test_output_records_the_spec_and_report_fields():
    result = pipeline.prune(models.chain(), ratio=0.5, scope="node")
    meta = {p.key: p.value for p in result.model.metadata_props}
    assert meta[pipeline.SPEC_METADATA_KEY] == result.report["spec"]
    assert "scope=node" in result.report["spec"]
    for key in ("params_before", "params_after", "flops_before", "flops_after", "groups", "passes",
                "verified", "max_abs_diff"):
        assert key in result.report
    assert result.report["flops_after"] < result.report["flops_before"]
    onnx.checker.check_model(result.model, full_check=True)


def test_report_counts_the_original_on_the_shapes_tag_established(monkeypatch):
    """One source for shapes: the original's FLOPs are counted on ``tag``'s shapes (kept in the
    context), not by computing the static shapes (inference, folding, maybe an ORT run) again."""
    import passes.cost
    from passes.cost import count_flops

    for build in (models.chain, models.shape_reshape):
        model = build()
        want = count_flops(ir.lower(model))
        calls = []
        real = passes.cost.static_shapes
        monkeypatch.setattr(passes.cost, "static_shapes", lambda g, o, **kw: calls.append(g) or real(g, o, **kw))
        report = pipeline.prune(model, ratio=0.5).report
        monkeypatch.undo()
        assert report["flops_before"] == want
        assert len(calls) == 1   # the pruned model's count only


def test_pruned_flops_are_counted_on_the_inputs_the_proof_ran_on():
    """A model that runs only on the inputs given (a Reshape to [1, 16, 8]: the guessed batch of
    2 does not run) with symbolic input dims: the pruned model's FLOPs are counted on the given
    inputs' shapes, as the original's are. khmersm's transformer read 43,069,440 -> 2,140,032
    (x0.050) when the pruned count guessed its own inputs, failed to run, and counted the
    symbolic MatMuls as nothing."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 16)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal((16, 8)).astype(np.float32), "w2"),
             numpy_helper.from_array(np.array([1, 16, 8], np.int64), "target")]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], "fc1"), helper.make_node("Relu", ["h"], ["r"], "relu"),
             helper.make_node("MatMul", ["r", "w2"], ["o"], "fc2"),
             helper.make_node("Reshape", ["o", "target"], ["y"], "view")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = rng.standard_normal((1, 16, 8)).astype(np.float32)
    report = pipeline.prune(model, ratio=0.5, sample_inputs={"x": x}).report
    assert report["verified"] is True and report["params_after"] == report["params_before"] // 2
    # both MatMuls lose half the hidden width: 2 * 16 * (8 * 8 + 8 * 8) of 2 * 16 * (8 * 16 + 16 * 8)
    assert (report["flops_before"], report["flops_after"]) == (2 * 16 * 256, 2 * 16 * 128)
