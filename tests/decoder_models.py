"""Small decoder language models (Llama MHA/GQA, Qwen2 GQA, GPT-2) from ``transformers`` configs,
exported offline with the legacy exporter, with or without a KV cache, static or dynamic axes.

Inputs: ``input_ids`` [B, S], ``attention_mask`` [B, P+S] (without it the exporter needs
``aten::diff``, unsupported at opset 17), with a cache ``past_key_i`` / ``past_value_i``
[B, KV, P, D]; outputs ``logits`` [B, S, V] and, with a cache, ``present_key_i`` /
``present_value_i`` [B, KV, P+S, D]. Random init, weights perturbed so none are shared.
"""

from __future__ import annotations

from pathlib import Path

import torch

import exporting
from torchvision_models import import_torchvision

KINDS = ("llama", "llama-gqa", "llama-tied", "qwen2", "gpt2")
VOCAB, SEQ, PAST = 96, 4, 3


def config(kind: str, layers: int = 2):
    import_torchvision()  # transformers imports torchvision: its op schemas first
    import transformers as hf

    common = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                  num_attention_heads=4, max_position_embeddings=64, tie_word_embeddings=False)
    if kind == "llama":
        return hf.LlamaForCausalLM, hf.LlamaConfig(num_key_value_heads=4, **common)
    if kind == "llama-gqa":
        return hf.LlamaForCausalLM, hf.LlamaConfig(num_key_value_heads=2, **common)
    if kind == "llama-tied":  # lm_head shares the embedding table
        return hf.LlamaForCausalLM, hf.LlamaConfig(num_key_value_heads=2, **dict(common, tie_word_embeddings=True))
    if kind == "qwen2":
        return hf.Qwen2ForCausalLM, hf.Qwen2Config(num_key_value_heads=2, **common)
    if kind == "gpt2":
        return hf.GPT2LMHeadModel, hf.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=layers, n_head=4,
                                                 n_positions=64, bos_token_id=0, eos_token_id=0,
                                                 tie_word_embeddings=False)
    raise ValueError(f"unknown decoder kind {kind!r}; known: {', '.join(KINDS)}")


class _Flat(torch.nn.Module):
    """Plain tensors in and out: ids, mask, then the cache as past_key_i/past_value_i."""

    def __init__(self, model, layers: int, cache: bool):
        super().__init__()
        self.model, self.layers, self.cache = model, layers, cache

    def forward(self, input_ids, attention_mask, *past):
        kwargs = dict(input_ids=input_ids, attention_mask=attention_mask, use_cache=self.cache)
        if self.cache:
            from transformers import DynamicCache

            cache = DynamicCache()
            for i in range(self.layers):
                cache.update(past[2 * i], past[2 * i + 1], i)
            kwargs["past_key_values"] = cache
        out = self.model(**kwargs)
        if not self.cache:
            return out.logits
        flat = []
        pkv = out.past_key_values
        for i in range(self.layers):
            layer = pkv.layers[i] if hasattr(pkv, "layers") else None
            k, v = (layer.keys, layer.values) if layer is not None else (pkv[i][0], pkv[i][1])
            flat += [k, v]
        return (out.logits, *flat)


def build(kind: str, seed: int = 0, attn: str | None = None, layers: int = 2):
    import_torchvision()
    torch.manual_seed(seed)
    cls, cfg = config(kind, layers)
    if attn is not None:  # "eager": repeat_kv at every sequence length (SDPA regroups a lone query)
        cfg._attn_implementation = attn
    return exporting.perturb(cls(cfg).eval(), 0.02), cfg


def geometry(cfg) -> tuple[int, int, int]:
    """(layers, kv heads, head dim) of a config."""
    layers = cfg.num_hidden_layers
    heads = cfg.num_attention_heads
    kv = getattr(cfg, "num_key_value_heads", None) or heads
    return layers, kv, cfg.hidden_size // heads


def io_names(layers: int, cache: bool):
    inputs = ["input_ids", "attention_mask"]
    outputs = ["logits"]
    if cache:
        for i in range(layers):
            inputs += [f"past_key_{i}", f"past_value_{i}"]
            outputs += [f"present_key_{i}", f"present_value_{i}"]
    return inputs, outputs


def export(kind: str, folder: Path, cache: bool = False, dynamic: bool = False, seed: int = 0,
           batch: int = 1, seq: int = SEQ, past: int = PAST, attn: str | None = None,
           layers: int = 2) -> Path:
    tag = f"{kind}{'-cache' if cache else ''}{'-dyn' if dynamic else ''}{'' if seq == SEQ else f'-s{seq}'}"
    tag += (f"-{attn}" if attn else "") + ("" if layers == 2 else f"-L{layers}")
    path = Path(folder) / f"{tag}.onnx"
    if path.exists():
        return path
    model, cfg = build(kind, seed, attn, layers)
    layers, kv, dim = geometry(cfg)
    wrapper = _Flat(model, layers, cache).eval()
    ids = torch.randint(0, VOCAB, (batch, seq))
    p = past if cache else 0
    mask = torch.ones(batch, p + seq, dtype=torch.int64)
    args = [ids, mask]
    if cache:
        for _ in range(layers):
            args += [torch.randn(batch, kv, p, dim), torch.randn(batch, kv, p, dim)]
    inputs, outputs = io_names(layers, cache)
    axes = None
    if dynamic:
        axes = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "total"},
                "logits": {0: "batch", 1: "seq"}}
        for n in inputs[2:]:
            axes[n] = {0: "batch", 2: "past"}
        for n in outputs[1:]:
            axes[n] = {0: "batch", 2: "total"}
    return exporting.export(wrapper, tuple(args), path, input_names=inputs, output_names=outputs,
                            dynamic_axes=axes)


def feeds(kind: str, cache: bool, batch: int = 2, seq: int = SEQ, past: int = PAST, seed: int = 0,
          layers: int = 2) -> dict:
    """Inputs that agree with each other (mask length = past + seq): what a dynamic-axes export
    needs, since one size per symbolic dim cannot make ``total`` = ``past`` + ``seq``."""
    import numpy as np

    _, cfg = config(kind, layers)
    layers, kv, dim = geometry(cfg)
    rng = np.random.default_rng(seed)
    p = past if cache else 0
    out = {"input_ids": rng.integers(0, VOCAB, (batch, seq)).astype(np.int64),
           "attention_mask": np.ones((batch, p + seq), np.int64)}
    if cache:
        for i in range(layers):
            out[f"past_key_{i}"] = rng.standard_normal((batch, kv, p, dim)).astype(np.float32)
            out[f"past_value_{i}"] = rng.standard_normal((batch, kv, p, dim)).astype(np.float32)
    return out
