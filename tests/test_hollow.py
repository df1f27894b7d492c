"""One decoded copy of the weights: ``ir.hollow`` splits a model into a proto without its large
weights and their arrays, every lowering shares them, and validate zeroes the masked original's
weights in place in them and restores them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

import ir
import pipeline
from models import Builder
from passes import validate
from passes.analyses import LeafZeroing, SliceRecord
from passes.base import Pass, PassContext, PassResult, PipelineError
from passes.infer_shapes import lower_input


def _wide(seed: int = 0) -> onnx.ModelProto:
    """A residual CNN whose convolutions hold more than ``LIGHT_LIMIT`` elements (hollowed)."""
    b = Builder(seed, name="wide")
    x = b.input("x", [1, 3, 8, 8])
    s0 = b.relu(b.conv(x, 3, 32))
    r1 = b.conv(b.relu(b.conv(s0, 32, 24)), 24, 32)
    s1 = b.relu(b.op("Add", [s0, r1]))
    return b.build([b.conv(s1, 32, 4, k=1)])


def _arrays(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def test_hollow_splits_the_large_weights_out_and_filled_puts_them_back():
    model = _wide()
    odd = numpy_helper.from_array(np.arange(2000, dtype=np.float32), "odd")  # raw, but with a segment
    odd.segment.begin, odd.segment.end = 0, 2000
    typed = onnx.helper.make_tensor("typed", TensorProto.FLOAT, [1100], np.ones(1100, np.float32))  # float_data
    model.graph.initializer.extend([odd, typed])
    before = model.SerializeToString()

    hollow, weights = ir.hollow(model)

    assert model.SerializeToString() == before                       # the given model is not changed
    large = {t.name for t in model.graph.initializer if np.prod(t.dims) > 1024} - {"odd", "typed"}
    assert set(weights) == large and len(large) == 2
    given = {t.name: t.SerializeToString() for t in model.graph.initializer}
    for t in hollow.graph.initializer:  # in place, without data; the others as they were
        if t.name in weights:
            assert list(t.dims) == list(weights[t.name].shape) and not t.HasField("raw_data")
        else:
            assert t.SerializeToString() == given[t.name]
    assert all(not a.flags.writeable for a in weights.values())
    assert ir.filled(hollow, weights).SerializeToString() == before
    assert ir.filled(hollow, {}) is hollow


def test_lowerings_of_a_hollow_model_share_its_arrays_and_raise_bit_identical():
    model = _wide()
    hollow, weights = ir.hollow(model)
    a, b = ir.lower(hollow, weights), ir.lower(hollow, weights)
    for name, arr in weights.items():
        assert a.initializer(name).array is arr and b.initializer(name).array is arr
    back, plain = ir.raise_model(a), ir.raise_model(ir.lower(model))
    assert [t.SerializeToString() for t in back.graph.initializer] == \
        [t.SerializeToString() for t in plain.graph.initializer]


def test_prune_of_a_file_keeps_one_copy_and_its_result_names_the_original(tmp_path):
    model = _wide()
    path = tmp_path / "wide.onnx"
    path.write_bytes(model.SerializeToString())
    result = pipeline.prune(path, ratio=0.5)

    assert result.report["verified"] is True
    assert result.weights and all(not t.HasField("raw_data") for t in result.original.graph.initializer
                                  if t.name in result.weights)
    # the masked original's zeroing was undone: the original is whole again
    assert ir.filled(result.original, result.weights).SerializeToString() == model.SerializeToString()
    assert result.report["params_after"] < result.report["params_before"]


def test_prune_of_a_caller_model_leaves_it_and_returns_it_as_the_original():
    model = _wide()
    before = model.SerializeToString()
    result = pipeline.prune(model, ratio=0.5)
    assert result.report["verified"] is True
    assert result.original is model and result.weights == {}
    assert model.SerializeToString() == before


@dataclass(frozen=True)
class _Corrupt(Pass):
    """A transform gone wrong after slicing: the result's largest weight changed."""

    name: ClassVar[str] = "test-corrupt-weight"
    preserves: ClassVar[tuple[type, ...]] = (SliceRecord,)

    def run(self, graph, ctx):
        init = max(graph.initializers.values(), key=lambda i: i.size)
        graph.replace_initializer(ir.Initializer.from_array(init.name, init.array + 1.0))
        return PassResult(True)


@pytest.mark.parametrize("from_file", [False, True])
def test_validate_restores_the_weights_it_zeroed_in_place_when_the_proof_fails(monkeypatch, tmp_path, from_file):
    model = _wide()
    if from_file:  # a file's map: the zeroed pages are read from the file again, no values kept
        (tmp_path / "m.onnx").write_bytes(model.SerializeToString())
        hollow, weights, _ = ir.read_hollow(tmp_path / "m.onnx")
    else:
        hollow, weights = ir.hollow(model)
    zeroed_in_place = []
    restore = validate._restore
    monkeypatch.setattr(validate, "_restore", lambda saved: (zeroed_in_place.append(
        [held is None for *_, held in saved]), restore(saved)))
    passes = pipeline.Pipeline.parse(pipeline.build_spec(0.5)).passes
    pipe = pipeline.Pipeline(passes[:-1] + [_Corrupt()] + passes[-1:])
    with pytest.raises(PipelineError, match="mask-equivalence"):
        pipe.run(lower_input(hollow, weights), PassContext(original=hollow, weights=weights))
    assert zeroed_in_place and zeroed_in_place[0] and set(zeroed_in_place[0]) == {from_file}
    for name, arr in _arrays(model).items():
        if name in weights:
            np.testing.assert_array_equal(weights[name], arr)
            assert not weights[name].flags.writeable


def test_a_weight_another_node_reads_is_zeroed_in_a_copy():
    """Two Convs read one weight: zeroing it for one leaf must not zero the other's."""
    b = Builder(3, name="tied")
    x = b.input("x", [1, 32, 8, 8])
    w = b.weight(32, 32, 3, 3)
    y1 = b.op("Conv", [x, w], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    y2 = b.op("Conv", [x, w], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    model = b.build([y1, y2])
    hollow, weights = ir.hollow(model)
    first = model.graph.node[0].name
    record = SliceRecord((LeafZeroing(first, 1, 1, (0, 5)),), ())
    saved: list = []
    g = validate._masked_graph(hollow, record, weights, saved)
    assert saved == []
    assert not np.any(weights[w][:, [0, 5]] == 0)
    masked = g.initializer(g.inputs_of(first)[1].name).array
    assert masked is not weights[w] and not np.any(masked[:, [0, 5]])
    assert g.initializer(g.inputs_of(g.node(model.graph.node[1].name))[1].name).array is weights[w]


def test_the_screen_times_the_original_with_its_weights_back_inside(tmp_path, capsys):
    import cli

    path, out = tmp_path / "wide.onnx", tmp_path / "out.onnx"
    path.write_bytes(_wide().SerializeToString())
    assert cli.main(["prune", str(path), "-o", str(out), "--latency"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if "ORT latency" in line)
    assert "n/a" not in row and "not timed" not in row


def test_the_excision_follows_protobuf_s_merging_and_gives_up_on_other_bytes():
    from ir import onnx_io, wire

    a, b = _wide(0), _wide(1)
    twice = a.SerializeToString() + onnx.ModelProto(graph=b.graph).SerializeToString()  # graph field twice
    merged = onnx.ModelProto.FromString(twice)
    data, cut = wire.excised(twice, onnx_io._ITEMSIZES, onnx_io.LIGHT_LIMIT)
    large = [t for t in merged.graph.initializer if np.prod(t.dims) > 1024]
    assert [name for name, *_ in cut] == [t.name for t in large][:len(cut)] and len(cut) == 2  # b's: names taken
    for (name, dims, dtype, (start, end)), t in zip(cut, large):
        assert twice[start:end] == t.raw_data and dims == list(t.dims) and dtype == t.data_type
    hollow = onnx.ModelProto.FromString(data)
    assert hollow.SerializeToString() == ir.hollow(merged)[0].SerializeToString()
    assert wire.excised(b"\x0b\x00", {}, 0) is None and wire.excised(b"\x3a\xff", {}, 0) is None


def _odd_tensors() -> list[onnx.TensorProto]:
    """Large tensors ``read_hollow`` must leave whole, as ``hollow`` does."""
    seg = numpy_helper.from_array(np.arange(2000, dtype=np.float32), "seg")  # raw, but with a segment
    seg.segment.begin, seg.segment.end = 0, 2000
    typed = onnx.helper.make_tensor("typed", TensorProto.FLOAT, [1100], np.ones(1100, np.float32))  # float_data
    short = numpy_helper.from_array(np.arange(1500, dtype=np.float32), "short")
    short.raw_data = short.raw_data[:-4]                                      # bytes that do not fit its dims
    dup = numpy_helper.from_array(np.full(1200, 3, np.int64), "w0")           # a second tensor of a name
    return [seg, typed, short, dup]


@pytest.mark.parametrize("odd", [False, True])
def test_read_hollow_is_hollow_of_load_without_decoding_the_weights(tmp_path, odd):
    model = _wide()
    model.graph.initializer.append(numpy_helper.from_array(np.arange(1500, dtype=np.float64), "f64"))
    if odd:
        model.graph.initializer.extend(_odd_tensors())
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    before = path.read_bytes()

    hollow, weights, external = ir.read_hollow(path)
    expected, copied = ir.hollow(ir.load(path)[0])

    assert external == frozenset()
    assert hollow.SerializeToString() == expected.SerializeToString()
    assert weights.keys() == copied.keys() and len(weights) == 3 + odd  # w0's second tensor is large
    for name, arr in weights.items():
        assert arr.dtype == copied[name].dtype and np.array_equal(arr, copied[name]) and not arr.flags.writeable
    assert ir.filled(hollow, weights).SerializeToString() == model.SerializeToString()
    w = weights["f64"]
    w.flags.writeable = True
    w[:] = -1
    neighbours = {k: a.copy() for k, a in weights.items() if k != "f64"}
    assert ir.revert(w) and np.array_equal(w, copied["f64"])       # read from the file again
    assert all(np.array_equal(weights[k], a) for k, a in neighbours.items())
    assert not ir.revert(copied["f64"], dry_run=True)              # not a view of a file's map
    del hollow, weights, w
    assert path.read_bytes() == before


@pytest.mark.filterwarnings("ignore:The onnxtxt format is experimental")
def test_read_hollow_reads_external_data_and_text_files_too(tmp_path):
    model = _wide()
    ext = tmp_path / "ext.onnx"
    onnx.save(onnx.ModelProto.FromString(model.SerializeToString()), str(ext), save_as_external_data=True,
              all_tensors_to_one_file=True, location="ext.data", size_threshold=1024)  # save changes the model
    hollow, weights, external = ir.read_hollow(ext)
    assert weights and set(weights) <= external  # a weight of 1024 elements or fewer stays in the proto
    assert [numpy_helper.to_array(t).tolist() for t in ir.filled(hollow, weights).graph.initializer] == \
        [numpy_helper.to_array(t).tolist() for t in model.graph.initializer]
    text = tmp_path / "m.onnxtxt"
    onnx.save(model, str(text), format="onnxtxt")
    hollow, weights, _ = ir.read_hollow(text)
    assert ir.filled(hollow, weights).SerializeToString() == onnx.load(str(text)).SerializeToString()


def test_pruning_a_file_takes_its_weights_from_the_file_and_proves_the_same(tmp_path):
    model = _wide()
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    from_file, from_proto = pipeline.prune(path, ratio=0.5), pipeline.prune(model, ratio=0.5)
    assert from_file.report["verified"] and from_proto.report["verified"]
    assert from_file.model.graph.initializer == from_proto.model.graph.initializer
    assert path.read_bytes() == model.SerializeToString()
