"""Decoder language models (issue 16): Llama (MHA and GQA), Qwen2 (GQA) and GPT-2 from
``transformers`` configs, exported with and without a KV cache (``decoder_models``).

- Rotary embeddings: the head split's lookahead sees through ``q·cos + rotate_half(q)·sin``, so
  Q, K and V keep one class per head and whole heads go (a head's rotary pairs stay together).
- GQA: repeat_kv's Expand + Reshape repeat each KV head's id over its query heads; Q·Kᵀ and A·V
  couple them, so a KV group (one KV head, its query heads) goes whole.
- KV cache: ``past_*`` inputs and ``present_*`` outputs shrink with their heads; the report's
  ``interface`` gives their new shapes; ``keep_io`` refuses it with a named reason.
- A greedy generation loop: the pruned model fed its own, smaller cache generates the tokens the
  masked original generates with the full one.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import decoder_models as dm
import pipeline
from passes.analyses import SliceRecord
from passes.runtime import run_model
from passes.validate import masked_original


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("decoders")


def shapes(model: onnx.ModelProto, kind: str) -> dict[str, list]:
    values = model.graph.input if kind == "input" else model.graph.output
    return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in values}


def head_groups(report: dict) -> list[tuple[int, int]]:
    return [(g["channels_before"], g["channels_after"]) for g in report["groups"] if g.get("heads")]


@pytest.mark.parametrize("kind,groups", [("llama", 4), ("llama-gqa", 2), ("qwen2", 2)])
def test_rotary_and_gqa_attention_prune_whole_heads_or_kv_groups(kind, groups, folder):
    result = pipeline.prune(dm.export(kind, folder), ratio=0.5)
    rep = result.report
    assert rep["verified"] is True and rep["max_abs_diff"] < 1e-3
    # one group per layer: Q, K and V roots, classes are heads (MHA) or KV groups (GQA)
    assert head_groups(rep) == [(groups, groups // 2)] * 2
    attn = [g for g in rep["groups"] if g.get("heads")]
    assert all(sorted(r.rsplit("/", 2)[-2] for r in g["roots"]) == ["k_proj", "q_proj", "v_proj"] for g in attn)
    mlp = [(g["channels_before"], g["channels_after"]) for g in rep["groups"]
           if g.get("pruned") and not g.get("heads") and not g.get("stream")]
    assert mlp == [(64, 32)] * 2
    inits = {t.name: tuple(t.dims) for t in result.model.graph.initializer}
    q = inits["model.model.layers.0.self_attn.q_proj.weight"]
    k = inits["model.model.layers.0.self_attn.k_proj.weight"]
    assert q == (16, 16)                      # half the query heads (2 of 4, head dim 8), half the hidden width
    assert k == ((16, 16) if groups == 4 else (8, 16))  # GQA: 1 of 2 KV heads, with its 2 query heads
    assert rep["params_after"] < 0.35 * rep["params_before"]


def stream_group(report: dict) -> dict:
    (group,) = [g for g in report["groups"] if g.get("stream")]
    return group


@pytest.mark.parametrize("kind", ["llama", "qwen2", "gpt2"])
def test_embedding_fed_residual_stream_prunes_the_hidden_width(kind, folder):
    """The embedding Gather's table is a root (its columns): the residual stream through every
    block's RMSNorm / LayerNorm (decomposed or not) is one group, the lm_head its leaf."""
    path = dm.export(kind, folder)
    result = pipeline.prune(path, ratio=0.5)
    rep = result.report
    assert rep["verified"] is True and rep["max_abs_diff"] < 1e-3
    hidden = stream_group(rep)
    assert (hidden["channels_before"], hidden["channels_after"]) == (32, 16)
    # GPT-2's static position ids are constant: its position embedding is a constant added to the stream
    embeds = ["/model/transformer/wte/Gather"] if kind == "gpt2" else ["/model/model/embed_tokens/Gather"]
    assert [r for r in hidden["roots"] if r.endswith("Gather")] == embeds
    inits = {t.name: tuple(t.dims) for t in result.model.graph.initializer}
    table = "model.transformer.wte.weight" if kind == "gpt2" else "model.model.embed_tokens.weight"
    assert inits[table] == (dm.VOCAB, 16)
    assert inits["model.lm_head.weight"] == (dm.VOCAB, 16)   # the lm_head reads the kept columns
    if kind == "gpt2":  # LayerNormalization: rewritten with the statistics of the full width
        assert [d for n, d in inits.items() if n.startswith("/model/transformer/ln_f/") and "scale" in n] == [(16,)]
    else:  # the decomposed RMSNorm's weight
        assert inits["model.model.norm.weight"] == (16,)
    assert shapes(result.model, "output")["logits"] == [1, dm.SEQ, dm.VOCAB]
    # the hidden width has its own ratio: stream=0 keeps it while heads and MLP prune
    rep0 = pipeline.prune(path, ratio=0.5, stream=0.0).report
    assert rep0["verified"] is True and stream_group(rep0)["channels_after"] == 32
    assert any(g.get("heads") and g["pruned"] for g in rep0["groups"])
    assert rep0["params_after"] > rep["params_after"]


def test_tied_lm_head_follows_the_embedding_table_and_stays_tied(folder):
    path = dm.export("llama-tied", folder)
    original = onnx.load(str(path))
    assert [t.name for t in original.graph.initializer if t.name.endswith("embed_tokens.weight")] \
        and not [t for t in original.graph.initializer if "lm_head" in t.name]
    result = pipeline.prune(path, ratio=0.5)
    assert result.report["verified"] is True
    assert stream_group(result.report)["channels_after"] == 16
    tables = [t for t in result.model.graph.initializer if t.dims[:1] == [dm.VOCAB]]
    assert [(t.name, tuple(t.dims)) for t in tables] == [("model.model.embed_tokens.weight", (dm.VOCAB, 16))]
    readers = [n.op_type for n in result.model.graph.node if "model.model.embed_tokens.weight" in n.input]
    assert sorted(readers) == ["Gather", "Transpose"]   # one table, read by the lookup and the lm_head


@pytest.mark.parametrize("kind,kv", [("llama-gqa", 2), ("qwen2", 2), ("gpt2", 4)])
def test_kv_cache_inputs_and_outputs_shrink_with_their_heads(kind, kv, folder, tmp_path):
    import onnxruntime as ort

    path = dm.export(kind, folder, cache=True)
    result = pipeline.prune(path, ratio=0.5)
    rep = result.report
    assert rep["verified"] is True
    assert head_groups(rep) == [(kv, kv // 2)] * 2
    # heads (KV groups), MLP and hidden width at 0.5: more than 55% of the parameters go
    assert rep["params_after"] <= 0.45 * rep["params_before"]
    layers, _, dim = dm.geometry(dm.config(kind)[1])
    changed = {e["name"]: (e["kind"], e["shape_before"], e["shape_after"]) for e in rep["interface"]}
    names = [f"{w}_{x}_{i}" for w in ("past", "present") for x in ("key", "value") for i in range(layers)]
    assert sorted(changed) == sorted(names)
    for name, (io, before, after) in changed.items():
        assert io == ("input" if name.startswith("past") else "output")
        assert before[1] == kv and after[1] == kv // 2 and before[2:] == after[2:]
    assert shapes(result.model, "input")["past_key_0"] == [1, kv // 2, dm.PAST, dim]
    # the written file runs in a fresh ONNX Runtime session, fed a cache of the new shape
    out = tmp_path / "pruned.onnx"
    onnx.save(result.model, str(out))
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    feeds = dm.feeds(kind, cache=True, batch=1)
    feeds = {k: (v[:, : kv // 2] if k.startswith("past") else v) for k, v in feeds.items()}
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
    assert got["present_key_1"].shape == (1, kv // 2, dm.PAST + dm.SEQ, dim)
    assert got["logits"].shape == (1, dm.SEQ, dm.VOCAB)


def test_keep_io_refuses_to_change_the_cache_shapes(folder):
    path = dm.export("llama-gqa", folder, cache=True)
    rep = pipeline.prune(path, ratio=0.5, keep_io=True).report
    assert rep["verified"] is True and "interface" not in rep
    assert all(a == b for a, b in head_groups(rep))   # the heads stay: their cache is the runtime's contract
    reasons = [g["reason"] for g in rep["groups"] if not g.get("pruned")]
    assert any("graph input 'past_value_0' (keep-io)" in r for r in reasons), reasons
    # the same through the spec; the MLP still prunes
    spec = "tag,trees{keep-io=true},classify,score,mask{ratio=0.5},slice,infer-shapes,validate"
    result = pipeline.prune(path, passes=spec)
    assert shapes(result.model, "input") == shapes(onnx.load(str(path)), "input")
    assert shapes(result.model, "output") == shapes(onnx.load(str(path)), "output")
    assert [g["channels_after"] for g in result.report["groups"] if g.get("pruned") and not g.get("stream")] == [32, 32]
    assert stream_group(result.report)["channels_after"] == 16  # the hidden width is no interface


class _Record(pipeline.Instrument):
    def after(self, p, graph, ctx, result, seconds):
        if ctx.has(SliceRecord):
            self.record = ctx.get(SliceRecord)


def _generate(model: onnx.ModelProto, prompt: list[int], steps: int, kv: int, layers: int, dim: int):
    """Greedy decoding, one token a step, with a cache window of PAST slots (the oldest dropped)."""
    past = {f"past_{w}_{i}": np.zeros((1, kv, dm.PAST, dim), np.float32)
            for i in range(layers) for w in ("key", "value")}
    tokens, logits = list(prompt), []
    for step in range(len(prompt) + steps - 1):
        feeds = {"input_ids": np.array([[tokens[step]]], np.int64),
                 "attention_mask": np.ones((1, dm.PAST + 1), np.int64), **past}
        out = run_model(model, feeds)
        names = [o.name for o in model.graph.output]
        got = dict(zip(names, out))
        past = {n.replace("present", "past"): v[:, :, 1:] for n, v in got.items() if n.startswith("present")}
        if step >= len(prompt) - 1:
            logits.append(got["logits"][0, -1])
            tokens.append(int(np.argmax(got["logits"][0, -1])))
    return tokens, np.stack(logits)


@pytest.mark.parametrize("kind", ["llama-gqa", "gpt2"])
def test_greedy_generation_with_the_smaller_cache_matches_the_masked_original(kind, folder):
    path = dm.export(kind, folder, cache=True, seq=1)  # a decode step: one token, PAST cached
    rec = _Record()
    result = pipeline.prune(path, ratio=0.5, instruments=[rec])
    assert result.report["verified"] is True
    kept = shapes(result.model, "input")["past_key_0"][1]
    assert kept == dm.geometry(dm.config(kind)[1])[1] // 2
    check_generation(path, kind, result.model, rec.record, kept)


def check_generation(path, kind: str, pruned, record, kept: int) -> None:
    """Six greedy tokens after a 3-token prompt, the pruned decode step (``kept`` KV heads in its
    cache) against the masked original: the same tokens, logits within 1e-3; and pruning changed
    what the model computes (the check is not vacuous)."""
    original = onnx.load(str(path))
    masked = masked_original(original, record)
    layers, kv, dim = dm.geometry(dm.config(kind)[1])
    prompt = [5, 17, 42]
    want, want_logits = _generate(masked, prompt, 6, kv, layers, dim)
    got, got_logits = _generate(pruned, prompt, 6, kept, layers, dim)
    assert got == want
    np.testing.assert_allclose(got_logits, want_logits, rtol=1e-3, atol=1e-4)
    assert not np.allclose(_generate(original, prompt, 6, kv, layers, dim)[1], want_logits, atol=1e-3)


def test_cli_prints_the_new_cache_shapes_and_keep_io_keeps_them(folder, tmp_path, capsys):
    import cli

    path = str(dm.export("llama-gqa", folder, cache=True))
    assert cli.main(["prune", path, "-o", str(tmp_path / "a.onnx"), "--ratio", "0.5"]) == 0
    out = capsys.readouterr().out
    assert f"input past_key_0: [1, 2, {dm.PAST}, 8] -> [1, 1, {dm.PAST}, 8]" in out
    assert f"output present_value_1: [1, 2, {dm.PAST + dm.SEQ}, 8] -> [1, 1, {dm.PAST + dm.SEQ}, 8]" in out
    assert cli.main(["prune", path, "-o", str(tmp_path / "b.onnx"), "--ratio", "0.5", "--keep-io"]) == 0
    out = capsys.readouterr().out
    assert "past_key_0: [" not in out and "(keep-io)" in out
    assert shapes(onnx.load(str(tmp_path / "b.onnx")), "input") == shapes(onnx.load(path), "input")


def dynamic_attention(heads: int = 4, head_dim: int = 4, rotary: str = "slice"):
    """One attention block with a symbolic batch and sequence, its head splits written as exporters
    write them for dynamic axes (``[0, 0, -1, D]``, merged back by ``[0, 0, -1]``), rotary on Q and
    K (rotate_half as Slice/Neg/Concat or Split/Neg/Concat; cos/sin [1, 1, S, D] broadcast over the
    heads, fed as inputs)."""
    import models

    b = models.Builder(7)
    c = heads * head_dim
    x = b.input("x", ["batch", "seq", c])
    cos = b.input("cos", [1, 1, "seq", head_dim])
    sin = b.input("sin", [1, 1, "seq", head_dim])

    def split(t):
        t = b.op("Reshape", [t, b.const(np.array([0, 0, -1, head_dim], np.int64), "shape")])
        return b.op("Transpose", [t], perm=[0, 2, 1, 3])

    def rope(t):
        half = head_dim // 2
        if rotary == "slice":
            lo = b.op("Slice", [t, b.const(np.array([0]), "s"), b.const(np.array([half]), "s"),
                                b.const(np.array([3]), "s")])
            hi = b.op("Slice", [t, b.const(np.array([half]), "s"), b.const(np.array([head_dim]), "s"),
                                b.const(np.array([3]), "s")])
        else:
            lo, hi = b.op("Split", [t, b.const(np.array([half, half]), "s")], n_out=2, axis=3)
        rot = b.op("Concat", [b.op("Neg", [hi]), lo], axis=-1)
        return b.op("Add", [b.op("Mul", [t, cos]), b.op("Mul", [rot, sin])])

    q = rope(split(b.op("MatMul", [x, b.weight(c, c)])))
    k = rope(split(b.op("MatMul", [x, b.weight(c, c)])))
    v = split(b.op("MatMul", [x, b.weight(c, c)]))
    scores = b.op("MatMul", [q, b.op("Transpose", [k], perm=[0, 1, 3, 2])])
    ctx = b.op("MatMul", [b.op("Softmax", [scores], axis=-1), v])
    merged = b.op("Reshape", [b.op("Transpose", [ctx], perm=[0, 2, 1, 3]),
                              b.const(np.array([0, 0, -1], np.int64), "shape")])
    return b.build([b.relu(b.op("MatMul", [merged, b.weight(c, c)]))])


@pytest.mark.parametrize("rotary", ["slice", "split"])
def test_heads_prune_with_symbolic_batch_and_sequence(rotary):
    model = dynamic_attention(rotary=rotary)
    result = pipeline.prune(model, ratio=0.5)
    rep = result.report
    assert rep["verified"] is True
    assert head_groups(rep) == [(4, 2)]
    inits = {t.name: tuple(t.dims) for t in result.model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    assert sorted(v for v in inits.values()) == [(8, 16)] + [(16, 8)] * 3  # q, k, v lose 2 heads; the output projection's rows
    # the 0/-1 targets adapt as they are: the batch and sequence stay symbolic
    assert shapes(result.model, "input")["x"] == ["batch", "seq", 16]


@pytest.mark.parametrize("kind,kv", [("llama-gqa", 2), ("gpt2", 4)])
def test_dynamic_axes_with_given_inputs_prune_everything_and_stay_dynamic(kind, kv, folder):
    """A dynamic-axes export pruned with the caller's inputs (a dynamic cache needs consistent
    ones: mask length = past + seq): the given sizes make every computed Reshape / Expand target
    fold for the analyses, yet the pruned file keeps computing the batch, sequence and cache
    entries (only the pruned counts are constants), so it runs at other sizes and matches the
    masked original there, its cache with the kept heads."""
    path = dm.export(kind, folder, cache=True, dynamic=True)
    rec = _Record()
    result = pipeline.prune(path, ratio=0.5, sample_inputs=dm.feeds(kind, cache=True), instruments=[rec])
    rep = result.report
    assert rep["verified"] is True
    assert head_groups(rep) == [(kv, kv // 2)] * 2
    mlp = 128 if kind == "gpt2" else 64
    assert [(g["channels_before"], g["channels_after"]) for g in rep["groups"]
            if g["pruned"] and not g.get("heads") and not g.get("stream")] == [(mlp, mlp // 2)] * 2
    assert stream_group(rep)["channels_after"] == 16
    assert rep["params_after"] <= 0.45 * rep["params_before"]
    assert shapes(result.model, "input")["past_key_0"] == ["batch", kv // 2, "past", 8]
    masked = masked_original(onnx.load(str(path)), rec.record)
    kept = {name: list(idx) for name, _, _, idx in rec.record.interface}
    for batch, seq, past in [(3, 5, 6), (1, 1, 9)]:   # other sizes than the proof's (2, 4, 3)
        feeds = dm.feeds(kind, cache=True, batch=batch, seq=seq, past=past, seed=5)
        want = run_model(masked, feeds)
        got = run_model(result.model, {k: (v[:, kept[k]] if k in kept else v) for k, v in feeds.items()})
        np.testing.assert_allclose(got[0], want[0], rtol=1e-4, atol=1e-4)
        assert got[1].shape == (batch, kv // 2, past + seq, 8)
