"""Small transformer models exported offline with the legacy exporter (random init, perturbed).

Hugging Face ``transformers`` models are built from small configs (no hub access); torchvision's
ViT from its definition. ``transformers`` imports torchvision when present, so the torchvision
op schemas are defined first (``import_torchvision``).
"""

from __future__ import annotations

from pathlib import Path

import torch

import exporting
from torchvision_models import import_torchvision

KINDS = ("bert", "gpt2", "hf-vit", "tv-vit")


class _LastHidden(torch.nn.Module):
    """Plain tensor in, plain tensor out: the exporter then sees one input and one output."""

    def __init__(self, model, kind: str):
        super().__init__()
        self.model, self.kind = model, kind

    def forward(self, x):
        if self.kind == "hf-vit":
            return self.model(pixel_values=x).logits
        if self.kind == "tv-vit":
            return self.model(x)
        return self.model(input_ids=x).last_hidden_state


def build(kind: str, seed: int = 0):
    """``(module, example_input)`` for a small model of ``kind`` (hidden 32, 2 layers, 4 heads,
    MLP 64)."""
    import_torchvision()
    torch.manual_seed(seed)
    if kind == "tv-vit":
        from torchvision.models.vision_transformer import VisionTransformer

        model = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=32,
                                  mlp_dim=64, num_classes=10)
        example = torch.randn(1, 3, 32, 32)
    else:
        import transformers as hf

        if kind == "bert":
            model = hf.BertModel(hf.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
                                               num_attention_heads=4, intermediate_size=64,
                                               max_position_embeddings=32))
            example = torch.randint(0, 100, (1, 16))
        elif kind == "gpt2":
            model = hf.GPT2Model(hf.GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_positions=32,
                                               bos_token_id=0, eos_token_id=0))
            example = torch.randint(0, 100, (1, 16))
        elif kind == "hf-vit":
            model = hf.ViTForImageClassification(hf.ViTConfig(image_size=32, patch_size=8, hidden_size=32,
                                                              num_hidden_layers=2, num_attention_heads=4,
                                                              intermediate_size=64, num_labels=10))
            example = torch.randn(1, 3, 32, 32)
        else:
            raise ValueError(f"unknown transformer kind {kind!r}; known: {', '.join(KINDS)}")
    return exporting.perturb(_LastHidden(model.eval(), kind).eval(), 0.01), example


def export(kind: str, folder: Path, seed: int = 0) -> Path:
    path = Path(folder) / f"{kind}.onnx"
    if path.exists():
        return path
    model, example = build(kind, seed)
    return exporting.export(model, (example,), path, input_names=["input"], output_names=["output"])


def attention_block(seed: int = 0, heads: int = 4, head_dim: int = 4, seq: int = 4, residual: bool = False,
                    einsum: bool = False, dynamo_kt: bool = False, batch: int = 1):
    """One hand-built multi-head self-attention as PyTorch-free ONNX: x [1, S, C] → separate Q, K,
    V projections (MatMul + bias) → Reshape [1, S, H, D] → Transpose → Q·Kᵀ / √D → Softmax →
    ·V → Transpose → Reshape [1, S, C] → output projection (+ x when ``residual``). ``einsum``:
    the two products as Einsum (MaxViT's form) instead of MatMul. ``dynamo_kt``: Kᵀ as the torch
    dynamo exporter writes it, batch and heads merged for a 3-D Transpose ([B, H, S, D] -> [-1, S, D]
    -> [B·H, D, S] -> [B, H, D, S])."""
    import numpy as np

    import models

    b = models.Builder(seed)
    c = heads * head_dim
    x = b.input("x", [batch, seq, c])

    def proj(src):
        return b.op("Add", [b.op("MatMul", [src, b.weight(c, c)]), b.weight(c, prefix="b")])

    def split(t, perm):
        shape = b.const(np.array([batch, seq, heads, head_dim], np.int64), "shape")
        return b.op("Transpose", [b.op("Reshape", [t, shape])], perm=perm)

    q = split(proj(x), [0, 2, 1, 3])
    k = split(proj(x), [0, 2, 1, 3] if einsum or dynamo_kt else [0, 2, 3, 1])
    if dynamo_kt:
        flat = b.op("Reshape", [k, b.const(np.array([-1, seq, head_dim], np.int64), "shape")])
        k = b.op("Reshape", [b.op("Transpose", [flat], perm=[0, 2, 1]),
                             b.const(np.array([batch, heads, head_dim, seq], np.int64), "shape")])
    v = split(proj(x), [0, 2, 1, 3])
    scale = b.const(np.array(np.sqrt(head_dim), np.float32), "scale")
    if einsum:
        scores = b.op("Div", [b.op("Einsum", [q, k], equation="bhid,bhjd->bhij"), scale])
        ctx = b.op("Einsum", [b.op("Softmax", [scores], axis=-1), v], equation="bhij,bhjd->bhid")
    else:
        scores = b.op("Div", [b.op("MatMul", [q, k]), scale])
        ctx = b.op("MatMul", [b.op("Softmax", [scores], axis=-1), v])
    merged = b.op("Reshape", [b.op("Transpose", [ctx], perm=[0, 2, 1, 3]),
                              b.const(np.array([batch, seq, c], np.int64), "shape")])
    y = proj(merged)
    if residual:
        y = b.op("Add", [y, x])
    return b.build([b.op("Relu", [y])])
