"""Importance criteria behind one interface: each one against a hand-computed example in node and
tree scope, a user's own criterion registered and named in a spec, calibration data rules
(API and CLI), and every criterion's pruning proven by the mask-equivalence check."""

from __future__ import annotations

import math
import zlib
from pathlib import Path

import numpy as np
import onnx
import pytest

import cli
import ir
import models
import pipeline
from passes.analyses import Masks, Scores
from passes.base import PassContext
from passes.criteria import CRITERIA, Criterion, register_criterion

# Conv a: 1x1, 2 -> 3 channels, filters f0=[1,0], f1=[3,4], f2=[0,2]; Conv b (the leaf):
# 1x1, 3 -> 1, weights [2, 1, 3]. b's output is the graph output, so only a's group is pruned.
WA = np.array([[1, 0], [3, 4], [0, 2]], np.float32).reshape(3, 2, 1, 1)
WB = np.array([[2, 1, 3]], np.float32).reshape(1, 3, 1, 1)
LEAF = np.array([2.0, 1.0, 3.0])   # Σ_k n(W_b^{k,i}) with one filter k: l1 = l2 = |w|

# Two calibration samples [2, 2, 2, 2] chosen so a's maps have known ranks:
# sample 0: x0 = e00, x1 = e11  -> maps f·x: [1·e00 (rank 1), diag(3,4) (2), 2·e11 (1)]
# sample 1: x0 = ones, x1 = I   -> [ones (1), [[7,3],[3,7]] (2), 2·I (2)]
CALIB_X = np.array([[[[1, 0], [0, 0]], [[0, 0], [0, 1]]],
                    [[[1, 1], [1, 1]], [[1, 0], [0, 1]]]], np.float32)


def conv_pair(wa=WA, wb=WB) -> onnx.ModelProto:
    b = models.Builder(0, name="pair")
    x = b.input("x", [1, 2, 2, 2])
    a = b.op("Conv", [x, b.const(wa)], kernel_shape=[1, 1])
    return b.build([b.op("Conv", [a, b.const(wb)], kernel_shape=[1, 1])])


def gemm_pair() -> onnx.ModelProto:
    """The same weights as fully connected layers: x [N, 2] -> Gemm a (3) -> Gemm b (1)."""
    b = models.Builder(0, name="fc")
    x = b.input("x", [1, 2])
    a = b.op("Gemm", [x, b.const(WA.reshape(3, 2))], transB=1)
    return b.build([b.op("Gemm", [a, b.const(WB.reshape(1, 3))], transB=1)])


def scores(model, criterion, scope, calib=None, seed=0) -> np.ndarray:
    graph = ir.lower(model)
    ctx = PassContext(original=model, seed=seed, calib_data=calib)
    pipeline.Pipeline.parse(f"tag,trees,classify,score{{criterion={criterion} scope={scope}}}").run(graph, ctx)
    by_group = ctx.get(Scores).by_group
    assert len(by_group) == 1
    return next(iter(by_group.values()))


# --------------------------------------------------------------------------- hand-computed
FPGM_NODE = np.array([math.sqrt(20) + math.sqrt(5), math.sqrt(20) + math.sqrt(13), math.sqrt(5) + math.sqrt(13)])
HAND = {  # criterion -> node-scope scores of a's three channels
    "l1": np.array([1.0, 7.0, 2.0]),
    "l2": np.array([1.0, 5.0, 2.0]),
    "fpgm": FPGM_NODE,
    "hrank": np.array([1.0, 2.0, 1.5]),
    "hrank-star": np.array([1.0, 2.0, 1.5]),  # a convolution: rank, as hrank
}


@pytest.mark.parametrize("criterion", sorted(HAND))
def test_criterion_matches_hand_computed_scores_in_node_and_tree_scope(criterion):
    calib = CALIB_X
    node = scores(conv_pair(), criterion, "node", calib)
    tree = scores(conv_pair(), criterion, "tree", calib)
    np.testing.assert_allclose(node, HAND[criterion], rtol=1e-6)
    np.testing.assert_allclose(tree, HAND[criterion] * LEAF, rtol=1e-6)


def test_hrank_star_is_l1_on_fully_connected_layers_and_hrank_is_not():
    # hrank on a [N, 3] output: each (sample, channel) value is a 1x1 map, rank 1 iff non-zero.
    # x = [1, 0] -> a = [1, 3, 0]; x = [0, 1] -> a = [0, 4, 2]: mean ranks [0.5, 1, 0.5]
    x = np.array([[1, 0], [0, 1]], np.float32)
    np.testing.assert_allclose(scores(gemm_pair(), "hrank", "node", x), [0.5, 1.0, 0.5])
    np.testing.assert_allclose(scores(gemm_pair(), "hrank-star", "node", x), [1.0, 7.0, 2.0])
    np.testing.assert_allclose(scores(gemm_pair(), "hrank-star", "tree", x), np.array([1.0, 7.0, 2.0]) * LEAF)


def test_hrank_averages_over_batches_of_any_size():
    # the same two samples in two batches of one give the same averages
    batches = [(CALIB_X[:1], None), (CALIB_X[1:], None)]
    np.testing.assert_allclose(scores(conv_pair(), "hrank", "node", batches), HAND["hrank"])


def test_random_is_seeded_by_the_runs_seed_and_the_node():
    model = conv_pair()
    name = next(n.name for n in model.graph.node)
    want = np.random.default_rng([7, zlib.crc32(name.encode())]).random(3)
    np.testing.assert_allclose(scores(model, "random", "node", seed=7), want)
    np.testing.assert_allclose(scores(model, "random", "tree", seed=7), want * LEAF)
    assert not np.allclose(scores(model, "random", "node", seed=8), want)


def test_taylor_is_weight_times_gradient_of_the_loss():
    # MSE against zero targets: out[n, p] = Σ_c wb_c (f_c · x[n, :, p]);
    # L = mean_{n,p} out² -> dL/dWa[c, i] = Σ_{n,p} 2 out[n,p] wb_c x[n,i,p] / (N·P)
    x = CALIB_X
    y = np.zeros((2, 1, 2, 2), np.float32)
    wa, wb = WA.reshape(3, 2).astype(np.float64), WB.reshape(3).astype(np.float64)
    xs = x.reshape(2, 2, 4).astype(np.float64)                     # [N, Cin, P]
    a = np.einsum("ci,nip->ncp", wa, xs)
    out = np.einsum("c,ncp->np", wb, a)
    grad = np.einsum("np,c,nip->ci", 2 * out, wb, xs) / out.size
    want = np.abs(wa * grad).sum(axis=1)
    np.testing.assert_allclose(scores(conv_pair(), "taylor", "node", (x, y)), want, rtol=1e-4)
    np.testing.assert_allclose(scores(conv_pair(), "taylor", "tree", (x, y)), want * LEAF, rtol=1e-4)


def test_taylor_with_class_labels_uses_cross_entropy(tmp_path):
    # logits = Gemm b (Gemm a (x)) with 1 output would be one class; use 3 classes: b is [3, 3]
    b = models.Builder(0, name="cls")
    x_in = b.input("x", [1, 2])
    a = b.op("Gemm", [x_in, b.const(WA.reshape(3, 2))], transB=1)
    wb = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32)
    model = b.build([b.op("Gemm", [a, b.const(wb)], transB=1)])
    x = np.array([[1, 0], [0, 1]], np.float32)
    y = np.array([0, 2], np.int64)
    logits = x @ WA.reshape(3, 2).T.astype(np.float64)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    dlogits = (p - np.eye(3)[y]) / len(y)                        # mean cross-entropy
    grad = dlogits.T @ x                                          # dL/dWa (b is the identity)
    want = np.abs(WA.reshape(3, 2) * grad).sum(axis=1)
    np.savez(tmp_path / "calib.npz", x=x, y=y)
    np.testing.assert_allclose(scores(model, "taylor", "node", str(tmp_path / "calib.npz")), want, rtol=1e-4)


# --------------------------------------------------------------------------- registry
def test_a_users_criterion_is_registered_and_named_in_a_spec():
    @register_criterion
    class Reverse(Criterion):
        """Keeps the first channels: score = minus the channel index."""
        name = "test-reverse-index"

        def channel_scores(self, w, axis):
            return -np.arange(w.shape[axis], dtype=np.float64)

    try:
        np.testing.assert_allclose(scores(conv_pair(), "test-reverse-index", "node"), [0, -1, -2])
        result = pipeline.prune(models.chain(), passes="tag,trees,classify,score{criterion=test-reverse-index "
                                "scope=node},mask{ratio=0.5},slice,infer-shapes,validate")
        assert result.report["verified"]
        first = result.report["groups"][0]
        assert first["kept"] == list(range(first["channels_after"]))   # the first channels kept
        assert "test-reverse-index" in result.report["spec"]
    finally:
        CRITERIA.pop("test-reverse-index", None)


def test_unknown_criterion_names_the_known_ones():
    with pytest.raises(pipeline.SpecError, match="hrank-star.*taylor|fpgm"):
        pipeline.Pipeline.parse("tag,trees,classify,score{criterion=nope}")


def test_register_rejects_what_is_not_a_criterion():
    with pytest.raises(TypeError):
        register_criterion(int)

    class NoName(Criterion):
        pass

    with pytest.raises(TypeError):
        register_criterion(NoName)


# --------------------------------------------------------------------------- calibration data
@pytest.mark.parametrize("criterion", ["hrank", "hrank-star", "taylor"])
def test_a_data_criterion_without_calibration_data_is_a_clear_error(criterion):
    with pytest.raises(pipeline.PipelineError, match=f"criterion '{criterion}' needs calibration data"):
        pipeline.prune(conv_pair(), criterion=criterion)


def test_taylor_without_labels_says_so():
    with pytest.raises(pipeline.PipelineError, match="taylor.*needs labels"):
        pipeline.prune(conv_pair(), criterion="taylor", calib_data=CALIB_X)


@pytest.mark.parametrize("bad, words", [
    ("missing", ["no such data file"]),
    ("noX", ["missing array x"]),
    ("shape", ["shape [2, 3, 2, 2]"]),
    ("dtype", ["float64"]),
    ("bare", ["not an .npz"]),
])
def test_cli_bad_calibration_data_is_one_line_and_writes_nothing(tmp_path, capsys, bad, words):
    model = tmp_path / "m.onnx"
    onnx.save(conv_pair(), str(model))
    calib = tmp_path / "calib.npz"
    if bad == "noX":
        np.savez(calib, y=np.zeros(2, np.int64))
    elif bad == "shape":
        np.savez(calib, x=np.zeros((2, 3, 2, 2), np.float32))
    elif bad == "dtype":
        np.savez(calib, x=np.zeros((2, 2, 2, 2), np.float64))
    elif bad == "bare":
        calib = tmp_path / "calib.npy"
        np.save(calib, np.zeros((2, 2, 2, 2), np.float32))
    out = tmp_path / "out.onnx"
    code = cli.main(["prune", str(model), "-o", str(out), "--criterion", "hrank", "--calib", str(calib)])
    err = capsys.readouterr().err
    assert code == 1
    assert "Traceback" not in err and len(err.splitlines()) == 1 and err.startswith("error:")
    for w in words:
        assert w in err
    assert not out.exists()


def test_cli_data_criterion_without_calib_is_one_line(tmp_path, capsys):
    model = tmp_path / "m.onnx"
    onnx.save(conv_pair(), str(model))
    out = tmp_path / "out.onnx"
    code = cli.main(["prune", str(model), "-o", str(out), "--criterion", "hrank"])
    err = capsys.readouterr().err
    assert code == 1 and len(err.splitlines()) == 1 and "--calib" in err
    assert not out.exists()


def test_cli_prune_with_calib_npz(tmp_path, capsys):
    model = tmp_path / "m.onnx"
    onnx.save(conv_pair(), str(model))
    np.savez(tmp_path / "calib.npz", x=CALIB_X)
    out = tmp_path / "out.onnx"
    code = cli.main(["prune", str(model), "-o", str(out), "--criterion", "hrank", "--scope", "node",
                     "--calib", str(tmp_path / "calib.npz"), "--ratio", "0.4"])
    assert code == 0, capsys.readouterr().err
    pruned = onnx.load(str(out))
    wa = next(onnx.numpy_helper.to_array(t) for t in pruned.graph.initializer if t.dims[0] != 1)
    # ranks [1, 2, 1.5]: channel 0 (rank 1) goes, filters f1 and f2 stay
    np.testing.assert_array_equal(wa.reshape(-1, 2), WA.reshape(3, 2)[[1, 2]])


# --------------------------------------------------------------------------- proof holds
@pytest.mark.parametrize("criterion", ["l1", "l2", "fpgm", "random", "hrank", "hrank-star", "taylor"])
@pytest.mark.parametrize("scope", ["node", "tree"])
def test_every_criterion_prunes_a_residual_model_and_verifies(criterion, scope):
    model = models.many_to_many()
    x = np.random.default_rng(0).standard_normal((6, 3, 8, 8)).astype(np.float32)
    out_shape = [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
    y = np.random.default_rng(1).standard_normal([6] + out_shape[1:]).astype(np.float32)
    result = pipeline.prune(model, ratio=0.5, criterion=criterion, scope=scope, calib_data=(x, y))
    assert result.report["verified"]
    assert result.report["params_after"] < result.report["params_before"]


def test_criteria_choose_different_channels():
    model = models.many_to_many()
    x = np.random.default_rng(0).standard_normal((6, 3, 8, 8)).astype(np.float32)
    kept = {}
    for c in ("l1", "fpgm", "random", "hrank"):
        graph = ir.lower(model)
        ctx = PassContext(original=model, calib_data=x)
        pipeline.Pipeline.parse(f"tag,trees,classify,score{{criterion={c} scope=node}},mask{{ratio=0.5}}").run(graph, ctx)
        kept[c] = dict(ctx.get(Masks).kept)
    assert len({str(sorted(k.items())) for k in kept.values()}) > 1


def test_readme_criterion_example_runs():
    import re

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", readme, flags=re.S) if "register_criterion" in b]
    assert blocks, "the README lost its custom-criterion example"
    try:
        exec(compile(blocks[0], "README.md", "exec", dont_inherit=True), {})
        # max |w| per filter of a: [1, 4, 2]
        np.testing.assert_allclose(scores(conv_pair(), "max-abs", "node"), [1.0, 4.0, 2.0])
        np.testing.assert_allclose(scores(conv_pair(), "max-abs", "tree"), np.array([1.0, 4.0, 2.0]) * LEAF)
    finally:
        CRITERIA.pop("max-abs", None)


def fixed_batch_model() -> onnx.ModelProto:
    """conv a -> Reshape to [1, 12] (written for batch 1, as some exporters do) -> Gemm."""
    b = models.Builder(0, name="fixed")
    x = b.input("x", [1, 2, 2, 2])
    a = b.op("Conv", [x, b.const(WA)], kernel_shape=[1, 1])
    flat = b.op("Reshape", [a, b.const(np.array([1, 12], np.int64), "shape")])
    return b.build([b.op("Gemm", [flat, b.const(np.ones((3, 12), np.float32))], transB=1)])


@pytest.mark.parametrize("criterion", ["hrank", "taylor"])
def test_data_criteria_run_a_fixed_batch_model_one_sample_at_a_time(criterion):
    y = np.array([0, 2], np.int64)
    got = scores(fixed_batch_model(), criterion, "node", (CALIB_X, y))
    batched = scores(fixed_batch_model(), criterion, "node", [(CALIB_X[:1], y[:1]), (CALIB_X[1:], y[1:])])
    np.testing.assert_allclose(got, batched, rtol=1e-5)
    if criterion == "hrank":
        np.testing.assert_allclose(got, HAND["hrank"])
