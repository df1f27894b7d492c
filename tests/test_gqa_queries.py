"""GQA query heads thinned within their KV groups (issue 16: ``gqa=queries``, CLI ``--gqa queries``).

Every KV head stays (k/v projections, their rotary, the KV cache keep their shapes); each KV group
loses the same number of query heads, the lowest-scored of that group; q_proj loses their rows,
o_proj their columns, and repeat_kv's Expand repeats each KV head n_rep' times instead of n_rep.
Proven by the mask-equivalence check, run at other sizes with dynamic axes, and by greedy
generation against the masked original.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import decoder_models as dm
import pipeline
from passes.op_rules.gqa import class_blocks, even_drop
from passes.runtime import run_model
from passes.validate import masked_original
from test_decoders import _Record, check_generation, head_groups, shapes


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("gqa_queries")


def q_groups(rep: dict) -> list[dict]:
    return [g for g in rep["groups"] if g.get("heads") and g["roots"][0].endswith("q_proj/MatMul")]


def expand_targets(model: onnx.ModelProto) -> list[list[int]]:
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return [inits[n.input[1]].tolist() for n in model.graph.node if n.op_type == "Expand" and n.input[1] in inits]


@pytest.mark.parametrize("kind", ["llama-gqa", "qwen2"])
@pytest.mark.parametrize("cache", [False, True])
def test_query_heads_go_evenly_from_every_kv_group_and_kv_heads_stay(kind, cache, folder):
    path = dm.export(kind, folder, cache=cache)
    original = onnx.load(str(path))
    result = pipeline.prune(path, ratio=0.5, gqa="queries")
    rep = result.report
    assert rep["verified"] is True and rep["max_abs_diff"] < 1e-3
    qs = q_groups(rep)
    assert [(g["channels_before"], g["channels_after"]) for g in qs] == [(4, 2)] * 2
    for g in qs:  # one query head of each KV group (heads 0,1 read KV head 0; 2,3 read KV head 1)
        assert sorted(k // 2 for k in g["kept"]) == [0, 1]
    kv = [g for g in rep["groups"] if g.get("heads") and g not in qs]
    assert len(kv) == 4 and all(not g["pruned"] and "gqa=queries keeps every KV head" in g["reason"] for g in kv)
    inits = {t.name: tuple(t.dims) for t in result.model.graph.initializer}
    a = "model.model.layers.0.self_attn."
    assert inits[a + "q_proj.weight"] == (16, 16)   # 2 of 4 query heads (dim 8), hidden 32 -> 16
    assert inits[a + "k_proj.weight"] == (16, 16)   # both KV heads stay
    assert inits[a + "v_proj.weight"] == (16, 16)
    assert inits[a + "o_proj.weight"] == (16, 16)
    # the cache is untouched: same inputs and outputs as the original
    assert "interface" not in rep
    assert shapes(result.model, "input") == shapes(original, "input")
    assert shapes(result.model, "output") == shapes(original, "output")
    # repeat_kv repeats each KV head once now (n_rep 2 -> 1)
    total = dm.PAST + dm.SEQ if cache else dm.SEQ
    assert expand_targets(result.model) == [[1, 2, 1, total, 8]] * 4
    # the default removes whole KV groups instead: k_proj loses a head
    groups = pipeline.prune(path, ratio=0.5).report
    assert head_groups(groups) == [(2, 1)] * 2
    assert rep["params_after"] > groups["params_after"]


def test_heads_ratio_sets_the_query_heads_and_odd_counts_round_down_per_group(folder):
    path = dm.export("llama-gqa", folder)
    rep = pipeline.prune(path, ratio=0.5, heads=0.0, gqa="queries").report
    assert [g["channels_after"] for g in q_groups(rep)] == [4, 4]
    # heads=0.3 of 4 is one head: not a multiple of the 2 KV groups, so none go
    rep = pipeline.prune(path, ratio=0.5, heads=0.3, gqa="queries").report
    assert rep["verified"] is True and [g["channels_after"] for g in q_groups(rep)] == [4, 4]
    # at most n_rep - 1 per group: every KV group keeps a query head
    rep = pipeline.prune(path, ratio=0.5, heads=0.9, gqa="queries").report
    assert rep["verified"] is True and [g["channels_after"] for g in q_groups(rep)] == [2, 2]


def test_even_drop_ranks_within_each_kv_group():
    scores = np.array([0.1, 0.9, 0.8, 0.7, 0.5, 0.6])   # 3 KV groups of 2 query heads
    assert even_drop((0, 0, 1, 1, 2, 2), scores, 3).tolist() == [0, 3, 4]
    assert even_drop((0, 0, 1, 1, 2, 2), scores, 2).tolist() == []   # 2 cannot split over 3 groups
    assert even_drop((0, 0, 0, 1, 1, 1), np.arange(6.0)[::-1], 6).tolist() == [1, 2, 4, 5]  # n_rep - 1 each
    blocks = {10: (0, 2), 11: (0, 2), 12: (1, 2)}
    assert class_blocks([10, 11, 12], blocks)[1] == "gqa=queries: its KV groups have different numbers of query heads"
    assert class_blocks([10, 13], blocks)[1] == "gqa=queries: its query heads do not map one to one onto KV groups"
    assert class_blocks([13, 14], blocks) == ((), None)


def test_mha_and_gpt2_are_unchanged_by_gqa_queries(folder):
    for kind in ("llama", "gpt2"):
        path = dm.export(kind, folder)
        a = pipeline.prune(path, ratio=0.5).report
        b = pipeline.prune(path, ratio=0.5, gqa="queries").report
        assert b["verified"] is True and a["params_after"] == b["params_after"]
        assert head_groups(a) == head_groups(b)


@pytest.mark.parametrize("kind", ["llama-gqa", "qwen2"])
def test_dynamic_axes_keep_running_at_other_sizes(kind, folder):
    path = dm.export(kind, folder, cache=True, dynamic=True)
    rec = _Record()
    result = pipeline.prune(path, ratio=0.5, gqa="queries", sample_inputs=dm.feeds(kind, cache=True),
                            instruments=[rec])
    rep = result.report
    assert rep["verified"] is True and [g["channels_after"] for g in q_groups(rep)] == [2, 2]
    assert shapes(result.model, "input")["past_key_0"] == ["batch", 2, "past", 8]
    assert rec.record.interface == ()
    masked = masked_original(onnx.load(str(path)), rec.record)
    for batch, seq, past in [(3, 5, 6), (1, 1, 9)]:   # other sizes than the proof's (2, 4, 3)
        feeds = dm.feeds(kind, cache=True, batch=batch, seq=seq, past=past, seed=5)
        want = run_model(masked, feeds)
        got = run_model(result.model, feeds)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)
        assert got[1].shape == (batch, 2, past + seq, 8)


@pytest.mark.parametrize("kind", ["llama-gqa", "qwen2"])
def test_greedy_generation_with_the_full_cache_matches_the_masked_original(kind, folder):
    # a decode step (one token, PAST cached); eager attention: repeat_kv at one token too
    path = dm.export(kind, folder, cache=True, seq=1, attn="eager")
    rec = _Record()
    result = pipeline.prune(path, ratio=0.5, gqa="queries", instruments=[rec])
    assert result.report["verified"] is True
    kv = dm.geometry(dm.config(kind)[1])[1]
    assert shapes(result.model, "input")["past_key_0"][1] == kv   # the cache keeps every KV head
    check_generation(path, kind, result.model, rec.record, kv)


def test_cli_and_spec_choose_the_mode_and_reject_others(folder, tmp_path, capsys):
    import cli

    path = str(dm.export("llama-gqa", folder, cache=True))
    out = tmp_path / "q.onnx"
    assert cli.main(["prune", path, "-o", str(out), "--ratio", "0.5", "--gqa", "queries"]) == 0
    text = capsys.readouterr().out
    assert "past_key_0: [" not in text
    pruned = onnx.load(str(out))
    inits = {t.name: tuple(t.dims) for t in pruned.graph.initializer}
    assert inits["model.model.layers.0.self_attn.q_proj.weight"] == (16, 16)
    assert shapes(pruned, "input") == shapes(onnx.load(path), "input")
    spec = "tag,trees{gqa=queries},classify,score,mask{ratio=0.5},slice,infer-shapes,validate"
    rep = pipeline.prune(path, passes=spec).report
    assert rep["verified"] is True and [g["channels_after"] for g in q_groups(rep)] == [2, 2]
    bad = "tag,trees{gqa=heads},classify,score,mask{ratio=0.5},slice,infer-shapes,validate"
    assert cli.main(["prune", path, "-o", str(tmp_path / "x.onnx"), "--passes", bad]) != 0
    err = capsys.readouterr().err
    assert "error:" in err and "gqa" in err and "Traceback" not in err
    assert not (tmp_path / "x.onnx").exists()
    with pytest.raises(SystemExit):
        cli.main(["prune", path, "-o", str(tmp_path / "y.onnx"), "--gqa", "heads"])
    assert "invalid choice" in capsys.readouterr().err


def test_sdpa_grouped_query_form_is_left_whole_with_its_reason(folder):
    """SDPA exports a lone query (a decode step) by regrouping the query heads onto the KV axis
    ([B, H, 1, D] -> [B, KV, n_rep, D]) instead of repeating K and V: a query head kept in one
    group and removed in another is no single slice of that axis in the channel maps, so with
    gqa=queries the heads stay whole (the cache too), with that reason; the default prunes KV groups."""
    path = dm.export("llama-gqa", folder, cache=True, seq=1)
    result = pipeline.prune(path, ratio=0.5, gqa="queries")
    rep = result.report
    assert rep["verified"] is True and "interface" not in rep
    qs = q_groups(rep)
    assert [(g["channels_before"], g["channels_after"]) for g in qs] == [(4, 4)] * 2
    assert all("grouped-query SDPA form" in g["reason"] for g in qs)
    assert shapes(result.model, "input") == shapes(onnx.load(str(path)), "input")
    assert any(g["pruned"] for g in rep["groups"] if not g.get("heads"))   # MLP and hidden width still go


def gqa_block(form: str, heads: int = 4, kv: int = 2, dim: int = 4, seq: int = 3):
    """One GQA attention with constant shapes: repeat_kv as ``Unsqueeze -> Expand -> Reshape``
    (``form="expand"``) or as a Gather of the KV heads along the head axis (``"gather"``)."""
    import models

    b = models.Builder(11)
    c, n_rep = heads * dim, heads // kv
    x = b.input("x", [1, seq, c])

    def split(t, h):
        t = b.op("Reshape", [t, b.const(np.array([1, seq, h, dim], np.int64), "shape")])
        return b.op("Transpose", [t], perm=[0, 2, 1, 3])

    def repeat(t):
        if form == "gather":
            return b.op("Gather", [t, b.const(np.repeat(np.arange(kv), n_rep).astype(np.int64), "idx")], axis=1)
        t = b.op("Unsqueeze", [t, b.const(np.array([2], np.int64), "ax")])
        t = b.op("Expand", [t, b.const(np.array([1, kv, n_rep, seq, dim], np.int64), "shape")])
        return b.op("Reshape", [t, b.const(np.array([1, heads, seq, dim], np.int64), "shape")])

    q = split(b.op("MatMul", [x, b.weight(c, c)]), heads)
    k = repeat(split(b.op("MatMul", [x, b.weight(c, kv * dim)]), kv))
    v = repeat(split(b.op("MatMul", [x, b.weight(c, kv * dim)]), kv))
    scores = b.op("MatMul", [q, b.op("Transpose", [k], perm=[0, 1, 3, 2])])
    ctx = b.op("MatMul", [b.op("Softmax", [scores], axis=-1), v])
    merged = b.op("Reshape", [b.op("Transpose", [ctx], perm=[0, 2, 1, 3]),
                              b.const(np.array([1, seq, c], np.int64), "shape")])
    return b.build([b.relu(b.op("MatMul", [merged, b.weight(c, c)]))])


def test_constant_repeat_kv_targets_are_rewritten():
    result = pipeline.prune(gqa_block("expand", heads=6, kv=2), ratio=0.5, gqa="queries")
    rep = result.report
    assert rep["verified"] is True
    (q,) = [g for g in rep["groups"] if g.get("heads") and g["pruned"]]
    assert q["channels_before"] == 6 and q["channels_after"] == 4   # 3 of 6 rounds down to 2: one per group
    assert sorted(k // 3 for k in q["kept"]) == [0, 0, 1, 1]
    assert expand_targets(result.model) == [[1, 2, 2, 3, 4]] * 2     # n_rep 3 -> 2
    inits = {numpy_helper.to_array(t).tolist().__repr__(): t for t in result.model.graph.initializer
             if t.data_type == onnx.TensorProto.INT64}
    assert repr([1, 4, 3, 4]) in inits                                # the merge: 6 heads -> 4
    dims = sorted(tuple(t.dims) for t in result.model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT)
    assert dims == [(16, 24), (24, 8), (24, 8), (24, 16)]             # q, o lose 2 heads of 4; k, v whole


def test_gather_form_of_repeat_kv_stays_a_barrier_in_either_mode():
    """repeat_kv as a Gather of the KV heads along the head axis: not in the table (a Gather that
    picks channels), so the attention stays whole in either mode, and gqa=queries does not
    change that; the MLP-free block's heads are all left with the Gather's reason."""
    model = gqa_block("gather")
    for gqa in ("queries", None):
        rep = pipeline.prune(model, ratio=0.5, gqa=gqa).report
        assert rep["verified"] is True
        heads = [g for g in rep["groups"] if g.get("heads")]
        assert len(heads) == 3 and not any(g["pruned"] for g in heads)
        assert any("Gather picks along the channel axis" in g["reason"] for g in heads)
