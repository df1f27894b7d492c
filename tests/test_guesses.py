"""Guessed inputs never reach a kernel that dies on them (``passes/guesses.py``).

Each case is a single-op model of ``benchmarks/guess_audit.py`` whose integer input is a graph
input; the command runs in a subprocess, where a SIGFPE would otherwise kill pytest itself. Before
``guesses.KILLERS``: Col2Im's block shape, STFT's frame length and an integer Div / Mod divisor
killed ``onnxpruner prune`` with SIGFPE (Col2Im and STFT even with ``--inputs``: the report's
``flops_after`` reran the pruned graph on fresh zeros), and ReverseSequence on zero lengths
returned memory ONNX Runtime never wrote (the proof failed, blaming the result).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import guess_audit  # noqa: E402

from passes.guesses import unguessable, zero_given  # noqa: E402

CONSOLE = ROOT / ".venv" / "bin" / "onnxpruner"
CASES = guess_audit.cases()

# case -> (the input refused, words of the port)
REFUSED = {
    "col2im_block_shape": ("block_shape", "the block shape of the unnamed Col2Im"),
    "stft_frame_length": ("frame_length", "the frame length of the unnamed STFT"),
    "div_int_divisor": ("b", "the integer divisor of the unnamed Div"),
    "div_int32_divisor": ("b", "the integer divisor of the unnamed Div"),
    "mod_divisor": ("b", "the integer divisor of the unnamed Mod"),
    "reversesequence_lens": ("lens", "the sequence lengths of the unnamed ReverseSequence"),
    "col2im_block_shape_via_chain": ("b0", "the block shape of the unnamed Col2Im (node 3) (through 'block')"),
    "div_int_via_cast": ("b", "the integer divisor of the unnamed Div (node 1) (through 'b64')"),
}


def _prune(tmp_path: Path, case: str, inputs: dict | None = None) -> subprocess.CompletedProcess:
    path = tmp_path / f"{case}.onnx"
    onnx.save(CASES[case][2], path)
    cmd = [str(CONSOLE), "prune", str(path), "-o", str(tmp_path / "out.onnx"), "--latency"]
    if inputs is not None:
        np.savez(tmp_path / "in.npz", **inputs)
        cmd += ["--inputs", str(tmp_path / "in.npz")]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path)


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_a_guess_that_kills_is_refused_before_anything_runs(tmp_path, case):
    name, port = REFUSED[case]
    proc = _prune(tmp_path, case)
    assert proc.returncode == 1, (proc.returncode, proc.stderr)   # was -8 (SIGFPE) for all but ReverseSequence
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: input {name!r} of "), proc.stderr
    assert f"sets {port}" in lines[0] and "cannot be guessed" in lines[0] and "--inputs" in lines[0]
    assert not (tmp_path / "out.onnx").exists()


@pytest.mark.parametrize("case", ["col2im_block_shape", "stft_frame_length", "div_int_divisor",
                                  "reversesequence_lens", "col2im_block_shape_via_chain"])
def test_given_values_prune_and_are_timed(tmp_path, case):
    proc = _prune(tmp_path, case, CASES[case][3])
    assert proc.returncode == 0, (proc.returncode, proc.stderr)   # Col2Im, STFT: -8 with --inputs too
    assert "verified True" in proc.stdout and "ORT latency" in proc.stdout


def test_a_given_zero_that_kills_is_refused(tmp_path):
    proc = _prune(tmp_path, "col2im_block_shape", {"block_shape": np.array([0, 5], np.int64)})
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: inputs: 'block_shape' of "), proc.stderr
    assert "holds a zero there" in lines[0] and "Col2Im" in lines[0]


@pytest.mark.parametrize("case", ["gather_indices", "mod_fmod_divisor", "col2im_image_shape",
                                  "onehot_indices", "lstm_sequence_lens"])
def test_integer_inputs_whose_zeros_are_harmless_still_prune(tmp_path, case):
    proc = _prune(tmp_path, case)
    assert proc.returncode == 0, (proc.returncode, proc.stderr)
    assert "verified True" in proc.stdout


def test_a_mean_over_a_guessed_mask_of_zeros_is_zero_everywhere_and_proves_nothing(tmp_path):
    """The zeros guessed for the mask run (the mask is cast to float: no integer division), but
    the mean over no token is 0 everywhere whatever the weights: the proof compares nothing, so
    the run stops naming the output, with the --inputs hint; with a mask of ones it is proven."""
    proc = _prune(tmp_path, "token_ids_mean_pool")
    assert proc.returncode == 1 and not (tmp_path / "out.onnx").exists(), (proc.returncode, proc.stderr)
    line = proc.stderr.strip()
    assert line.startswith("error:") and "\n" not in line and "Traceback" not in line, line
    assert "output 'y0'" in line and "the same value (0) everywhere" in line and "--inputs" in line, line
    proc = _prune(tmp_path, "token_ids_mean_pool", {"ids": np.ones([2, 5], np.int64), "mask": np.ones([2, 5], np.int64)})
    assert proc.returncode == 0, (proc.returncode, proc.stderr)
    assert "verified True" in proc.stdout


def test_the_onnx_wheels_col2im_without_inputs_names_its_block_shape(tmp_path):
    src = Path(onnx.__file__).parent / "backend" / "test" / "data" / "node" / "test_col2im" / "model.onnx"
    if not src.exists():
        pytest.skip("the installed onnx wheel ships no node/test_col2im")
    proc = subprocess.run([str(CONSOLE), "prune", str(src), "-o", str(tmp_path / "out.onnx")],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 1, (proc.returncode, proc.stderr)    # was -8: SIGFPE in the input probe
    assert proc.stderr.startswith("error: input 'block_shape' of ") and "Col2Im" in proc.stderr


def _chain(*nodes, inputs, inits=()):
    graph = helper.make_graph(list(nodes), "g", inputs, [helper.make_tensor_value_info("y", TensorProto.INT64, None)],
                              initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in inits])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


def test_arithmetic_and_float_casts_end_the_flow():
    b = helper.make_tensor_value_info("b", TensorProto.INT64, [3])
    a = [("a", np.array([6, 7, 8], np.int64)), ("one", np.array([1], np.int64))]
    plus_one = _chain(helper.make_node("Add", ["b", "one"], ["b1"]), helper.make_node("Div", ["a", "b1"], ["y"]),
                      inputs=[b], inits=a)
    assert unguessable(plus_one, ["b"]) == {}
    to_float = _chain(helper.make_node("Cast", ["b"], ["f"], to=TensorProto.FLOAT),
                      helper.make_node("Div", ["f", "f"], ["y"]), inputs=[b], inits=a)
    assert unguessable(to_float, ["b"]) == {}
    dividend = _chain(helper.make_node("Div", ["b", "a"], ["y"]), inputs=[b], inits=a)
    assert unguessable(dividend, ["b"]) == {}
    times = _chain(helper.make_node("Mul", ["one", "b"], ["m"]), helper.make_node("Div", ["a", "m"], ["y"]),
                   inputs=[b], inits=a)
    assert "integer divisor" in unguessable(times, ["b"])["b"]
    # a sum of all zeros is zero, but a given [0, 3] sums to 3: the given check follows carries only
    summed = _chain(helper.make_node("ReduceSum", ["b"], ["s"]), helper.make_node("Div", ["a", "s"], ["y"]),
                    inputs=[b], inits=a)
    assert "b" in unguessable(summed, ["b"])
    assert zero_given(summed, {"b": np.array([0, 3, 0], np.int64)}) == {}
    assert "holds a zero" in zero_given(times, {"b": np.array([1, 0, 2], np.int64)})["b"]
    assert zero_given(times, {"b": np.array([1, 2, 3], np.int64)}) == {}


def test_the_element_type_decides_an_integer_division():
    def div(op, elem_type, **attrs):
        graph = helper.make_graph([helper.make_node(op, ["a", "b"], ["y"], **attrs)], "g",
                                  [helper.make_tensor_value_info(n, elem_type, [3]) for n in ("a", "b")],
                                  [helper.make_tensor_value_info("y", elem_type, [3])])
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    assert "b" in unguessable(div("Div", TensorProto.INT32), ["a", "b"])
    assert unguessable(div("Div", TensorProto.UINT8), ["a", "b"]) == {}   # no ORT kernel: its load failure says so
    assert unguessable(div("Div", TensorProto.FLOAT), ["a", "b"]) == {}   # an infinity, no signal
    assert "b" in unguessable(div("Mod", TensorProto.INT8), ["a", "b"])   # every integer Mod kernel divides
    assert unguessable(div("Mod", TensorProto.INT8, fmod=1), ["a", "b"]) == {}


def test_an_opset_6_model_is_refused_before_its_conversion_is_checked(tmp_path):
    # support.upgraded runs the model as given (onnx.reference) and converted (ONNX Runtime) on
    # default inputs: the converted integer Div died there of SIGFPE
    graph = helper.make_graph([helper.make_node("Div", ["a", "b"], ["y"]), helper.make_node("Relu", ["x"], ["z"])], "g",
                              [helper.make_tensor_value_info("a", TensorProto.INT64, [3]),
                               helper.make_tensor_value_info("b", TensorProto.INT64, [3]),
                               helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
                              [helper.make_tensor_value_info("y", TensorProto.INT64, [3]),
                               helper.make_tensor_value_info("z", TensorProto.FLOAT, [3])])
    path = tmp_path / "op6.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 6)], ir_version=3), path)
    proc = subprocess.run([str(CONSOLE), "prune", str(path), "-o", str(tmp_path / "out.onnx")],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert proc.stderr.startswith(f"error: input 'b' of {path} sets the integer divisor"), proc.stderr


def test_a_mean_pool_over_an_attention_mask_proves_on_guessed_inputs(tmp_path):
    """The same model with its mask named as Hugging Face names it: the guess is a mask of ones
    (``inputs.attends``), the pooled output depends on the weights, and the proof compares it."""
    model = onnx.ModelProto()
    model.CopyFrom(CASES["token_ids_mean_pool"][2])
    for vi in model.graph.input:
        if vi.name == "mask":
            vi.name = "attention_mask"
    for node in model.graph.node:
        node.input[:] = ["attention_mask" if i == "mask" else i for i in node.input]
    path = tmp_path / "attention_mask_pool.onnx"
    onnx.save(model, path)
    proc = subprocess.run([str(CONSOLE), "prune", str(path), "-o", str(tmp_path / "out.onnx"), "--no-latency"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, (proc.returncode, proc.stderr)
    assert "verified True" in proc.stdout
