"""Which guessed input values kill the process: one single-op model per (op, port) whose input is a
size, shape, count, step, length, axis or index, with that port a GRAPH INPUT, each run through

    onnxpruner prune model.onnx -o out.onnx           (no --inputs: the values are guessed)

in its own process with a timeout. Rerun with

    nice -n 19 .venv/bin/python benchmarks/guess_audit.py [--match SUBSTR] [--timeout 60] [--out FILE.md]
                                                          # default benchmarks/out/latest/; about 70 s

Every model is built with onnx.helper at opset <= 21 (the port's graph input declared with a fixed
shape, every other input an initializer or a float graph input) and checked with onnx.checker.
The outcome of each: ``ok`` (exit 0), ``error`` (a non-zero exit with one ``error:`` line and no
traceback: its first line is shown), ``SIGNAL`` (killed by a signal: SIGFPE, SIGSEGV, SIGABRT...),
``hang`` (past the timeout), ``BUG`` (anything else: a traceback, several lines). A fixed input
(``fixed``) is one the case feeds through ``--inputs`` with good values instead, to show the model
itself is fine when its values are given.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "benchmarks")]

import outputs  # noqa: E402

CLI = [str(ROOT / ".venv" / "bin" / "onnxpruner")]

F, I64, I32, B = TensorProto.FLOAT, TensorProto.INT64, TensorProto.INT32, TensorProto.BOOL


def model(op: str, inputs: list, out_type=F, attrs: dict | None = None, opset: int = 21, n_out: int = 1,
          extra_out=()) -> onnx.ModelProto:
    """One ``op`` node. ``inputs``: (name, elem type, shape, value or None) in port order, ``None``
    for an empty optional slot; a value makes it an initializer, else it is a graph input."""
    names, graph_in, inits = [], [], []
    for item in inputs:
        if item is None:
            names.append("")
            continue
        name, et, shape, value = item
        names.append(name)
        if value is None:
            graph_in.append(helper.make_tensor_value_info(name, et, shape))
        else:
            dtype = helper.tensor_dtype_to_np_dtype(et)
            inits.append(numpy_helper.from_array(np.asarray(value, dtype).reshape(shape), name))
    outs = [f"y{i}" for i in range(n_out)]
    types = [out_type] + list(extra_out) + [out_type] * n_out
    node = helper.make_node(op, names, outs, **(attrs or {}))
    graph = helper.make_graph([node], f"{op}_audit", graph_in,
                              [helper.make_tensor_value_info(o, types[i], None) for i, o in enumerate(outs)],
                              initializer=inits)
    return _checked(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8))


def _checked(m: onnx.ModelProto) -> onnx.ModelProto:
    """``m`` with its outputs' shapes as inference gives them, checked by onnx.checker (which
    wants output shapes: an output whose rank inference cannot tell is left without one, as
    exporters leave it, and that model is checked by inference alone)."""
    inferred = {vi.name: vi for vi in onnx.shape_inference.infer_shapes(m, strict_mode=True).graph.output}
    for vi in m.graph.output:
        got = inferred.get(vi.name)
        if got is not None and got.type.tensor_type.HasField("shape"):
            vi.type.CopyFrom(got.type)
    onnx.checker.check_model(m) if all(vi.type.tensor_type.HasField("shape") for vi in m.graph.output) else None
    return m


def _ranked(m: onnx.ModelProto, good: dict) -> onnx.ModelProto:
    """An output inference left without a shape gets the rank ONNX Runtime gives it on the good
    values (every dim unnamed), as an exporter that traced it writes: onnx.checker wants one."""
    if all(vi.type.tensor_type.HasField("shape") for vi in m.graph.output):
        return m
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    feeds = {vi.name: good[vi.name] if vi.name in good else
             rng.standard_normal([d.dim_value for d in vi.type.tensor_type.shape.dim]).astype(np.float32)
             for vi in m.graph.input if vi.name not in {t.name for t in m.graph.initializer}}
    values = ort.InferenceSession(m.SerializeToString()).run(None, feeds)
    for vi, value in zip(m.graph.output, values):
        if not vi.type.tensor_type.HasField("shape"):
            vi.type.tensor_type.shape.SetInParent()
            for _ in range(np.ndim(value)):
                vi.type.tensor_type.shape.dim.add()
    onnx.checker.check_model(m)
    return m


def x(shape, name="x"):
    return (name, F, shape, None)


def c(name, et, shape, value):
    return (name, et, shape, value)


def g(name, et, shape):
    return (name, et, shape, None)


# name -> (op, port, model, good values for the graph inputs the case guesses)
def cases() -> dict:
    out = {}

    def add(name, op, port, m, good):
        out[name] = (op, port, _ranked(m, good), good)

    add("col2im_block_shape", "Col2Im", "block_shape",
        model("Col2Im", [x([1, 5, 5]), c("image_shape", I64, [2], [5, 5]), g("block_shape", I64, [2])]),
        {"block_shape": np.array([1, 5], np.int64)})
    add("col2im_image_shape", "Col2Im", "image_shape",
        model("Col2Im", [x([1, 5, 5]), g("image_shape", I64, [2]), c("block_shape", I64, [2], [1, 5])]),
        {"image_shape": np.array([5, 5], np.int64)})
    add("stft_frame_step", "STFT", "frame_step",
        model("STFT", [x([1, 64, 1]), g("frame_step", I64, []), None, c("frame_length", I64, [], 16)], opset=17),
        {"frame_step": np.array(8, np.int64)})
    add("stft_frame_length", "STFT", "frame_length",
        model("STFT", [x([1, 64, 1]), c("frame_step", I64, [], 8), None, g("frame_length", I64, [])], opset=17),
        {"frame_length": np.array(16, np.int64)})
    add("dft_length", "DFT", "dft_length",
        model("DFT", [x([1, 16, 1]), g("dft_length", I64, [])], opset=20),
        {"dft_length": np.array(16, np.int64)})
    add("dft_axis", "DFT", "axis",
        model("DFT", [x([1, 16, 1]), None, g("axis", I64, [])], opset=20),
        {"axis": np.array(1, np.int64)})
    add("range_delta", "Range", "delta",
        model("Range", [c("start", I64, [], 0), c("limit", I64, [], 10), g("delta", I64, [])], out_type=I64),
        {"delta": np.array(1, np.int64)})
    add("range_limit", "Range", "limit",
        model("Range", [c("start", I64, [], 0), g("limit", I64, []), c("delta", I64, [], 1)], out_type=I64),
        {"limit": np.array(10, np.int64)})
    add("range_float_delta", "Range", "delta (float, guessed normal)",
        model("Range", [c("start", F, [], 0), c("limit", F, [], 10), g("delta", F, [])]),
        {"delta": np.array(1, np.float32)})
    add("tile_repeats", "Tile", "repeats",
        model("Tile", [x([2, 3]), g("repeats", I64, [2])]), {"repeats": np.array([2, 2], np.int64)})
    add("resize_sizes", "Resize", "sizes",
        model("Resize", [x([1, 1, 4, 4]), None, None, g("sizes", I64, [4])]),
        {"sizes": np.array([1, 1, 8, 8], np.int64)})
    add("resize_scales", "Resize", "scales (float, guessed normal)",
        model("Resize", [x([1, 1, 4, 4]), None, g("scales", F, [4])]),
        {"scales": np.array([1, 1, 2, 2], np.float32)})
    add("upsample_scales", "Upsample", "scales (float, guessed normal)",
        model("Upsample", [x([1, 1, 4, 4]), g("scales", F, [4])], opset=9),
        {"scales": np.array([1, 1, 2, 2], np.float32)})
    add("onehot_depth", "OneHot", "depth",
        model("OneHot", [c("indices", I64, [3], [0, 1, 2]), g("depth", I64, []), c("values", F, [2], [0, 1])]),
        {"depth": np.array(4, np.int64)})
    add("onehot_indices", "OneHot", "indices",
        model("OneHot", [g("indices", I64, [3]), c("depth", I64, [], 4), c("values", F, [2], [0, 1])]),
        {"indices": np.array([0, 1, 2], np.int64)})
    add("topk_k", "TopK", "K",
        model("TopK", [x([2, 8]), g("k", I64, [1])], n_out=2, extra_out=[I64]), {"k": np.array([3], np.int64)})
    add("slice_steps", "Slice", "steps",
        model("Slice", [x([8]), c("starts", I64, [1], [0]), c("ends", I64, [1], [8]), c("axes", I64, [1], [0]),
                        g("steps", I64, [1])]), {"steps": np.array([2], np.int64)})
    add("slice_starts", "Slice", "starts",
        model("Slice", [x([8]), g("starts", I64, [1]), c("ends", I64, [1], [8])]), {"starts": np.array([2], np.int64)})
    add("slice_axes", "Slice", "axes",
        model("Slice", [x([8, 4]), c("starts", I64, [1], [0]), c("ends", I64, [1], [2]), g("axes", I64, [1])]),
        {"axes": np.array([1], np.int64)})
    add("maxunpool_output_shape", "MaxUnpool", "output_shape",
        model("MaxUnpool", [x([1, 1, 2, 2]), c("I", I64, [1, 1, 2, 2], [5, 7, 13, 15]),
                            g("output_shape", I64, [4])], attrs={"kernel_shape": [2, 2], "strides": [2, 2]}),
        {"output_shape": np.array([1, 1, 4, 4], np.int64)})
    add("maxunpool_indices", "MaxUnpool", "I",
        model("MaxUnpool", [x([1, 1, 2, 2]), g("I", I64, [1, 1, 2, 2])], attrs={"kernel_shape": [2, 2], "strides": [2, 2]}),
        {"I": np.array([5, 7, 13, 15], np.int64).reshape(1, 1, 2, 2)})
    add("centercroppad_shape", "CenterCropPad", "shape",
        model("CenterCropPad", [x([4, 4]), g("shape", I64, [2])], opset=18), {"shape": np.array([2, 6], np.int64)})
    add("expand_shape", "Expand", "shape",
        model("Expand", [x([1, 3]), g("shape", I64, [2])]), {"shape": np.array([2, 3], np.int64)})
    add("constantofshape_input", "ConstantOfShape", "input",
        model("ConstantOfShape", [g("shape", I64, [2])]), {"shape": np.array([2, 3], np.int64)})
    add("reshape_shape", "Reshape", "shape",
        model("Reshape", [x([2, 6]), g("shape", I64, [2])]), {"shape": np.array([3, 4], np.int64)})
    add("nms_max_output", "NonMaxSuppression", "max_output_boxes_per_class",
        model("NonMaxSuppression", [x([1, 4, 4], "boxes"), x([1, 1, 4], "scores"), g("max_out", I64, [1]),
                                    c("iou", F, [1], [0.5]), c("score", F, [1], [0.0])], out_type=I64),
        {"max_out": np.array([2], np.int64)})
    add("roialign_batch_indices", "RoiAlign", "batch_indices",
        model("RoiAlign", [x([1, 2, 8, 8]), c("rois", F, [1, 4], [0, 0, 4, 4]), g("batch_indices", I64, [1])],
              attrs={"output_height": 2, "output_width": 2}), {"batch_indices": np.array([0], np.int64)})
    add("roialign_rois", "RoiAlign", "rois (float, guessed normal)",
        model("RoiAlign", [x([1, 2, 8, 8]), g("rois", F, [1, 4]), c("batch_indices", I64, [1], [0])],
              attrs={"output_height": 2, "output_width": 2}), {"rois": np.array([[0, 0, 4, 4]], np.float32)})
    add("maxroipool_rois", "MaxRoiPool", "rois (float, guessed normal)",
        model("MaxRoiPool", [x([1, 2, 8, 8]), g("rois", F, [1, 5])], attrs={"pooled_shape": [2, 2]}),
        {"rois": np.array([[0, 0, 0, 4, 4]], np.float32)})
    add("gridsample_grid", "GridSample", "grid (float, guessed normal)",
        model("GridSample", [x([1, 1, 4, 4]), g("grid", F, [1, 2, 2, 2])]),
        {"grid": np.zeros([1, 2, 2, 2], np.float32)})
    add("affinegrid_size", "AffineGrid", "size",
        model("AffineGrid", [x([1, 2, 3], "theta"), g("size", I64, [4])], opset=20),
        {"size": np.array([1, 1, 4, 4], np.int64)})
    add("unique_x", "Unique", "X",
        model("Unique", [g("u", I64, [6])], out_type=I64), {"u": np.arange(6, dtype=np.int64)})
    add("split_split", "Split", "split",
        model("Split", [x([6]), g("split", I64, [2])], n_out=2), {"split": np.array([2, 4], np.int64)})
    add("split_num_outputs", "Split", "split (zero-length outputs)",
        model("Split", [x([6]), g("split", I64, [3])], n_out=3), {"split": np.array([2, 2, 2], np.int64)})
    add("reducesum_axes", "ReduceSum", "axes",
        model("ReduceSum", [x([2, 3]), g("axes", I64, [1])]), {"axes": np.array([1], np.int64)})
    add("reducemean_axes", "ReduceMean", "axes",
        model("ReduceMean", [x([2, 3]), g("axes", I64, [1])], opset=18), {"axes": np.array([1], np.int64)})
    add("pad_pads", "Pad", "pads",
        model("Pad", [x([2, 3]), g("pads", I64, [4])]), {"pads": np.array([1, 1, 1, 1], np.int64)})
    add("pad_axes", "Pad", "axes",
        model("Pad", [x([2, 3]), c("pads", I64, [2], [1, 1]), None, g("axes", I64, [1])]),
        {"axes": np.array([1], np.int64)})
    for win in ("BlackmanWindow", "HannWindow", "HammingWindow"):
        add(f"{win.lower()}_size", win, "size",
            model(win, [g("size", I64, [])], opset=17), {"size": np.array(8, np.int64)})
    add("melweightmatrix_num_mel_bins", "MelWeightMatrix", "num_mel_bins",
        model("MelWeightMatrix", [g("bins", I64, []), c("dft", I64, [], 16), c("rate", I64, [], 8000),
                                  c("lo", F, [], 0), c("hi", F, [], 4000)], opset=17), {"bins": np.array(4, np.int64)})
    add("melweightmatrix_dft_length", "MelWeightMatrix", "dft_length",
        model("MelWeightMatrix", [c("bins", I64, [], 4), g("dft", I64, []), c("rate", I64, [], 8000),
                                  c("lo", F, [], 0), c("hi", F, [], 4000)], opset=17), {"dft": np.array(16, np.int64)})
    add("melweightmatrix_sample_rate", "MelWeightMatrix", "sample_rate",
        model("MelWeightMatrix", [c("bins", I64, [], 4), c("dft", I64, [], 16), g("rate", I64, []),
                                  c("lo", F, [], 0), c("hi", F, [], 4000)], opset=17), {"rate": np.array(8000, np.int64)})
    add("trilu_k", "Trilu", "k",
        model("Trilu", [x([4, 4]), g("k", I64, [])]), {"k": np.array(1, np.int64)})
    add("scatternd_indices", "ScatterND", "indices",
        model("ScatterND", [x([4]), g("indices", I64, [2, 1]), c("updates", F, [2], [1, 2])]),
        {"indices": np.array([[0], [2]], np.int64)})
    add("scatterelements_indices", "ScatterElements", "indices",
        model("ScatterElements", [x([4]), g("indices", I64, [2]), c("updates", F, [2], [1, 2])]),
        {"indices": np.array([0, 2], np.int64)})
    add("gathernd_indices", "GatherND", "indices",
        model("GatherND", [x([4, 3]), g("indices", I64, [2, 1])]), {"indices": np.array([[0], [2]], np.int64)})
    add("gather_indices", "Gather", "indices",
        model("Gather", [x([10, 4]), g("ids", I64, [2, 3])]), {"ids": np.ones([2, 3], np.int64)})
    add("gatherelements_indices", "GatherElements", "indices",
        model("GatherElements", [x([3, 4]), g("indices", I64, [3, 2])]), {"indices": np.ones([3, 2], np.int64)})
    add("squeeze_axes", "Squeeze", "axes",
        model("Squeeze", [x([1, 3]), g("axes", I64, [1])]), {"axes": np.array([0], np.int64)})
    add("unsqueeze_axes", "Unsqueeze", "axes",
        model("Unsqueeze", [x([3]), g("axes", I64, [1])]), {"axes": np.array([0], np.int64)})
    add("cumsum_axis", "CumSum", "axis",
        model("CumSum", [x([2, 3]), g("axis", I64, [])]), {"axis": np.array(1, np.int64)})
    add("reversesequence_lens", "ReverseSequence", "sequence_lens",
        model("ReverseSequence", [x([4, 2]), g("lens", I64, [2])]), {"lens": np.array([4, 3], np.int64)})
    add("compress_condition", "Compress", "condition",
        model("Compress", [x([4]), g("cond", B, [4])]), {"cond": np.array([1, 0, 1, 1], bool)})
    add("lstm_sequence_lens", "LSTM", "sequence_lens",
        model("LSTM", [x([3, 2, 4]), c("W", F, [1, 20, 4], np.full(80, 0.1)), c("R", F, [1, 20, 5], np.full(100, 0.1)),
                       None, g("lens", I32, [2])], attrs={"hidden_size": 5}),
        {"lens": np.array([3, 2], np.int32)})
    add("gru_sequence_lens", "GRU", "sequence_lens",
        model("GRU", [x([3, 2, 4]), c("W", F, [1, 15, 4], np.full(60, 0.1)), c("R", F, [1, 15, 5], np.full(75, 0.1)),
                      None, g("lens", I32, [2])], attrs={"hidden_size": 5}),
        {"lens": np.array([3, 2], np.int32)})
    add("div_int_divisor", "Div", "B (integer)",
        model("Div", [c("a", I64, [3], [6, 7, 8]), g("b", I64, [3])], out_type=I64), {"b": np.array([1, 2, 3], np.int64)})
    add("div_int32_divisor", "Div", "B (int32)",
        model("Div", [c("a", I32, [3], [6, 7, 8]), g("b", I32, [3])], out_type=I32), {"b": np.array([1, 2, 3], np.int32)})
    add("mod_divisor", "Mod", "B (integer)",
        model("Mod", [c("a", I64, [3], [6, 7, 8]), g("b", I64, [3])], out_type=I64), {"b": np.array([1, 2, 3], np.int64)})
    add("mod_fmod_divisor", "Mod", "B (integer, fmod=1)",
        model("Mod", [c("a", I64, [3], [6, 7, 8]), g("b", I64, [3])], out_type=I64, attrs={"fmod": 1}),
        {"b": np.array([1, 2, 3], np.int64)})
    add("einsum_control", "Einsum", "(no integer port: a float control)",
        model("Einsum", [x([2, 3], "a"), x([3, 4], "b")], attrs={"equation": "ij,jk->ik"}), {})
    add("bitshift_amount", "BitShift", "Y",
        model("BitShift", [c("a", TensorProto.UINT32, [2], [8, 16]), g("s", TensorProto.UINT32, [2])],
              out_type=TensorProto.UINT32, attrs={"direction": "RIGHT"}), {"s": np.array([1, 2], np.uint32)})
    add("if_cond", "If", "cond", _if_model(), {"cond": np.array(True)})
    add("col2im_block_shape_via_chain", "Col2Im", "block_shape (through Cast, Unsqueeze, Concat)",
        _chain_col2im(), {"b0": np.array(5, np.int32)})
    add("div_int_via_cast", "Div", "B (an int32 input cast to int64)", _chain_div(), {"b": np.array([1, 2, 3], np.int32)})
    add("token_ids_mean_pool", "Gather, Div", "token ids and a mask (a control: ids index a table, the mask is cast to float)",
        _mean_pool(), {"ids": np.ones([2, 5], np.int64), "mask": np.ones([2, 5], np.int64)})
    add("loop_trip_count", "Loop", "M", _loop_model(), {"M": np.array(3, np.int64)})
    return out


def _chain_col2im():
    """Col2Im's block shape [1, b0] built from an int32 scalar input: Cast, Unsqueeze, Concat (b0 = 5
    fits x [1, 5, 5]: any other value makes ONNX Runtime read past the input, unchecked)."""
    nodes = [helper.make_node("Cast", ["b0"], ["b64"], to=I64),
             helper.make_node("Unsqueeze", ["b64", "ax"], ["b1"]),
             helper.make_node("Concat", ["one", "b1"], ["block"], axis=0),
             helper.make_node("Col2Im", ["x", "image", "block"], ["y0"])]
    graph = helper.make_graph(nodes, "chain_audit", [helper.make_tensor_value_info("x", F, [1, 5, 5]),
                                                     helper.make_tensor_value_info("b0", I32, [])],
                              [helper.make_tensor_value_info("y0", F, None)],
                              initializer=[numpy_helper.from_array(np.array([0], np.int64), "ax"),
                                           numpy_helper.from_array(np.array([1], np.int64), "one"),
                                           numpy_helper.from_array(np.array([5, 5], np.int64), "image")])
    return _checked(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=8))


def _chain_div():
    nodes = [helper.make_node("Cast", ["b"], ["b64"], to=I64), helper.make_node("Div", ["a", "b64"], ["y0"])]
    graph = helper.make_graph(nodes, "div_audit", [helper.make_tensor_value_info("b", I32, [3])],
                              [helper.make_tensor_value_info("y0", I64, None)],
                              initializer=[numpy_helper.from_array(np.array([6, 7, 8], np.int64), "a")])
    return _checked(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=8))


def _mean_pool():
    """A sentence encoder's tail: embed the ids, a MatMul, mean over the tokens the mask keeps
    (the mask cast to float divides: never an integer division)."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Gather", ["table", "ids"], ["e"]),
             helper.make_node("MatMul", ["e", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["o"]),
             helper.make_node("Cast", ["mask"], ["m"], to=F), helper.make_node("Unsqueeze", ["m", "ax"], ["m3"]),
             helper.make_node("Mul", ["o", "m3"], ["om"]), helper.make_node("ReduceSum", ["om", "one"], ["s"]),
             helper.make_node("ReduceSum", ["m3", "one"], ["n"]), helper.make_node("Add", ["n", "eps"], ["n1"]),
             helper.make_node("Div", ["s", "n1"], ["y0"])]
    inits = {"table": rng.standard_normal([10, 8]), "w1": rng.standard_normal([8, 16]),
             "w2": rng.standard_normal([16, 8]), "eps": np.array(1e-6)}
    graph = helper.make_graph(nodes, "pool_audit", [helper.make_tensor_value_info("ids", I64, ["batch", "seq"]),
                                                    helper.make_tensor_value_info("mask", I64, ["batch", "seq"])],
                              [helper.make_tensor_value_info("y0", F, None)],
                              initializer=[numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()]
                              + [numpy_helper.from_array(np.array([-1], np.int64), "ax"),
                                 numpy_helper.from_array(np.array([1], np.int64), "one")])
    return _checked(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=8))


def _if_model():
    then = helper.make_graph([helper.make_node("Identity", ["x"], ["t"])], "then", [],
                             [helper.make_tensor_value_info("t", F, [2])])
    other = helper.make_graph([helper.make_node("Neg", ["x"], ["e"])], "else", [],
                              [helper.make_tensor_value_info("e", F, [2])])
    node = helper.make_node("If", ["cond"], ["y0"], then_branch=then, else_branch=other)
    graph = helper.make_graph([node], "if_audit", [helper.make_tensor_value_info("x", F, [2]),
                                                   helper.make_tensor_value_info("cond", B, [])],
                              [helper.make_tensor_value_info("y0", F, None)])
    return _checked(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=8))


def _loop_model():
    body = helper.make_graph([helper.make_node("Identity", ["c_in"], ["c_out"]),
                              helper.make_node("Add", ["v_in", "x"], ["v_out"])], "body",
                             [helper.make_tensor_value_info("i", I64, []), helper.make_tensor_value_info("c_in", B, []),
                              helper.make_tensor_value_info("v_in", F, [2])],
                             [helper.make_tensor_value_info("c_out", B, []), helper.make_tensor_value_info("v_out", F, [2])])
    node = helper.make_node("Loop", ["M", "", "x"], ["y0"], body=body)
    graph = helper.make_graph([node], "loop_audit", [helper.make_tensor_value_info("x", F, [2]),
                                                     helper.make_tensor_value_info("M", I64, [])],
                              [helper.make_tensor_value_info("y0", F, None)])
    return _checked(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=8))


def run(path: Path, out: Path, timeout: float, inputs: Path | None = None) -> tuple[str, str]:
    """(outcome, first line) of ``onnxpruner prune path -o out`` in its own process."""
    cmd = CLI + ["prune", str(path), "-o", str(out)] + (["--inputs", str(inputs)] if inputs else [])
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=path.parent)
    except subprocess.TimeoutExpired:
        return "hang", f"no exit in {timeout:g} s"
    err = [line for line in proc.stderr.splitlines() if line.strip()]
    if proc.returncode < 0:
        return "SIGNAL", signal.Signals(-proc.returncode).name
    if proc.returncode == 0:
        return "ok", ""
    if len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in proc.stderr:
        return "error", err[0][len("error: "):]
    return "BUG", (err[-1] if err else f"exit {proc.returncode}, no stderr")[:200]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--match", default="")
    ap.add_argument("--timeout", type=float, default=60)
    ap.add_argument("--out", type=Path, default=outputs.LATEST / "guess_audit.md", help="write the table here")
    outputs.add_argument(ap)
    args = ap.parse_args(argv)
    outputs.check([args.out], args.update_tracked)
    rows = ["| case | op | port | guessed | given good values (--inputs) |", "|---|---|---|---|---|"]
    bad = 0
    with tempfile.TemporaryDirectory(prefix="guess_audit_") as tmp:
        for name, (op, port, m, good) in cases().items():
            if args.match not in name:
                continue
            d = Path(tmp) / name
            d.mkdir()
            path = d / "model.onnx"
            onnx.save(m, path)
            outcome, line = run(path, d / "out.onnx", args.timeout)
            given = "-"
            if good:
                np.savez(d / "good.npz", **good)
                g_out, g_line = run(path, d / "out_given.onnx", args.timeout, d / "good.npz")
                given = g_out + (f": {g_line}" if g_line else "")
            line, given = (t.replace(str(path), "model.onnx") for t in (line, given))
            bad += outcome in ("SIGNAL", "hang", "BUG")
            row = f"| {name} | {op} | {port} | {outcome}{': ' + line if line else ''} | {given} |"
            rows.append(row)
            print(row, flush=True)
    text = "\n".join(rows) + f"\n\n{bad} case(s) crashed, hung or failed badly without --inputs\n"
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("```\n$ nice -n 19 .venv/bin/python benchmarks/guess_audit.py --out benchmarks/out/guess_audit.md --update-tracked\n```\n\n" + text)
    print(text.splitlines()[-1])
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
