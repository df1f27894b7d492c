"""Hugging Face ``transformers`` architectures beyond BERT/GPT-2/ViT, pruned from the command line.

    .venv/bin/python benchmarks/hf_zoo.py [--models distilbert,roberta,...] [--timeout 600]
                                          [--out benchmarks/out/latest/hf_zoo.md] [--update-tracked]

Each model is built from a tiny config of ``transformers``' own definition (random init, seed 0,
hidden 16-64, 1-2 layers per stage, vocab 100, images 32-64 px, audio 1,600 samples; no hub access,
no weights), weights perturbed (the exporter shares identical tensors), exported with the legacy
exporter at opset 17 without constant folding (``tests/exporting.py``) into a cache outside the
repository (``$ONNXPRUNER_ZOO_CACHE/hf``), its example inputs saved beside it as ``.npz`` (token ids,
an attention mask with padding, pixels, audio). Then, one model at a time in a child process:

    onnxpruner prune MODEL.onnx -o OUT.onnx --ratio 0.5 --inputs MODEL.npz --report R.json --no-latency

Printed per model: groups pruned/total, the share of float parameters removed, the proof, the
prune's seconds, the first blocker of the largest group left whole (by channels) and the most
frequent blockers of the other groups left whole (``zoo.blockers``); a model that
fails to build, export or prune is a row with its one-line error.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks"), str(ROOT / "tests")]

import outputs  # noqa: E402

CACHE = Path(os.environ.get("ONNXPRUNER_ZOO_CACHE", Path.home() / ".cache" / "onnxpruner-zoo")) / "hf"
TEXT = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=40)
VIT = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
           intermediate_size=64)


def _text(cls, config_cls, **kw):
    return lambda hf: (getattr(hf, cls)(getattr(hf, config_cls)(**{**TEXT, **kw})), "text")


def _image(cls, config_cls, size=32, **kw):
    return lambda hf: (getattr(hf, cls)(getattr(hf, config_cls)(**kw)), ("image", size))


def _encoder(hf, cls, config_cls, kind, **kw):
    return getattr(hf, cls)(getattr(hf, config_cls)(**kw)).get_encoder(), kind


_AUDIO = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, conv_dim=(16, 16),
              conv_stride=(5, 2), conv_kernel=(10, 3), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
              vocab_size=100)

BUILDERS = {
    "distilbert": lambda hf: (hf.DistilBertModel(hf.DistilBertConfig(vocab_size=100, dim=32, n_layers=2, n_heads=4,
                                                                     hidden_dim=64, max_position_embeddings=40)),
                              "text"),
    "roberta": _text("RobertaModel", "RobertaConfig"),
    "albert": _text("AlbertModel", "AlbertConfig", embedding_size=16),
    "electra": _text("ElectraModel", "ElectraConfig", embedding_size=16),
    "deberta-v2": _text("DebertaV2Model", "DebertaV2Config", relative_attention=True, pos_att_type=["p2c", "c2p"],
                        position_buckets=8, max_relative_positions=16),
    "mpnet": _text("MPNetModel", "MPNetConfig"),
    "xlm-roberta": _text("XLMRobertaModel", "XLMRobertaConfig"),
    "t5-encoder": lambda hf: (hf.T5EncoderModel(hf.T5Config(vocab_size=100, d_model=32, d_kv=8, d_ff=64, num_layers=2,
                                                            num_heads=4)), "text"),
    "bart-encoder": lambda hf: _encoder(hf, "BartModel", "BartConfig", "text", vocab_size=100, d_model=32,
                                        encoder_layers=2, decoder_layers=1, encoder_attention_heads=4,
                                        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64,
                                        max_position_embeddings=40),
    "deit": _image("DeiTModel", "DeiTConfig", **VIT),
    "beit": _image("BeitModel", "BeitConfig", use_relative_position_bias=True, **VIT),
    "swin": _image("SwinModel", "SwinConfig", image_size=32, patch_size=2, embed_dim=16, depths=[1, 1],
                   num_heads=[2, 4], window_size=4),
    "convnext": _image("ConvNextModel", "ConvNextConfig", num_stages=2, hidden_sizes=[16, 32], depths=[1, 1],
                       image_size=32),
    "convnextv2": _image("ConvNextV2Model", "ConvNextV2Config", num_stages=2, hidden_sizes=[16, 32], depths=[1, 1],
                         image_size=32),
    "resnet": _image("ResNetModel", "ResNetConfig", embedding_size=16, hidden_sizes=[32, 64], depths=[1, 1]),
    "regnet": _image("RegNetModel", "RegNetConfig", embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1],
                     groups_width=8),
    "mobilevit": _image("MobileViTModel", "MobileViTConfig", size=64, image_size=64, hidden_sizes=[32, 48, 64],
                        neck_hidden_sizes=[8, 16, 24, 24, 32, 40, 80]),
    "segformer": _image("SegformerModel", "SegformerConfig", num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1],
                        hidden_sizes=[16, 32], patch_sizes=[7, 3], strides=[4, 2], num_attention_heads=[1, 2],
                        mlp_ratios=[2, 2]),
    "dinov2": _image("Dinov2Model", "Dinov2Config", **VIT),
    "levit": _image("LevitModel", "LevitConfig", size=64, image_size=64, hidden_sizes=[32, 48, 64],
                    num_attention_heads=[2, 3, 4], depths=[1, 1, 1], key_dim=[8, 8, 8]),
    "poolformer": _image("PoolFormerModel", "PoolFormerConfig", hidden_sizes=[16, 32, 48, 64], depths=[1, 1, 1, 1]),
    "efficientnet": _image("EfficientNetModel", "EfficientNetConfig", size=64, image_size=64, width_coefficient=0.25,
                           depth_coefficient=0.25, hidden_dim=320),
    "whisper-encoder": lambda hf: _encoder(hf, "WhisperModel", "WhisperConfig", ("mel", 16, 32), vocab_size=100,
                                           d_model=32, encoder_layers=2, decoder_layers=1, encoder_attention_heads=4,
                                           decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64,
                                           num_mel_bins=16, max_source_positions=16, max_target_positions=16,
                                           pad_token_id=1, bos_token_id=0, eos_token_id=0, decoder_start_token_id=0),
    "wav2vec2": lambda hf: (hf.Wav2Vec2Model(hf.Wav2Vec2Config(**_AUDIO)), "audio"),
    "hubert": lambda hf: (hf.HubertModel(hf.HubertConfig(**_AUDIO)), "audio"),
    "clip-vision": _image("CLIPVisionModel", "CLIPVisionConfig", **VIT),
    "clip-text": _text("CLIPTextModel", "CLIPTextConfig"),
}
MODELS = list(BUILDERS)


def inputs(kind) -> dict:
    """The example inputs by name (numpy): token ids with a padded attention mask, pixels, mel
    features or raw audio."""
    import numpy as np

    rng = np.random.default_rng(0)
    if kind == "text":
        mask = np.ones((1, 16), np.int64)
        mask[0, 12:] = 0  # padding: the mask is not all ones, so it matters in the proof
        return {"input_ids": rng.integers(3, 100, (1, 16)).astype(np.int64), "attention_mask": mask}
    if kind == "audio":
        return {"input_values": rng.standard_normal((1, 1600)).astype(np.float32)}
    if kind[0] == "mel":
        return {"input_features": rng.standard_normal((1, *kind[1:])).astype(np.float32)}
    return {"pixel_values": rng.standard_normal((1, 3, kind[1], kind[1])).astype(np.float32)}


def export(name: str, folder: Path = CACHE) -> tuple[Path, Path]:
    """``folder/NAME.onnx`` and ``folder/NAME.npz`` (its inputs), built and exported when missing."""
    folder.mkdir(parents=True, exist_ok=True)
    path, feeds_path = folder / f"{name}.onnx", folder / f"{name}.npz"
    if path.exists() and feeds_path.exists():
        return path, feeds_path
    import numpy as np
    import torch

    import exporting
    from torchvision_models import import_torchvision

    import_torchvision()  # the torchvision op schemas first: transformers imports torchvision
    import transformers as hf

    torch.manual_seed(0)
    model, kind = BUILDERS[name](hf)
    feeds = inputs(kind)
    wrapped = exporting.perturb(_First(model.eval(), list(feeds)).eval(), 0.01)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    exporting.export(wrapped, tuple(torch.from_numpy(v) for v in feeds.values()), tmp, input_names=list(feeds),
                     output_names=["output"])
    np.savez(feeds_path, **feeds)
    tmp.replace(path)
    return path, feeds_path


class _First:  # a torch.nn.Module made on first use (torch imported lazily)
    def __new__(cls, model, names):
        import torch

        class First(torch.nn.Module):
            """Named inputs in, the first output (last hidden state or logits) out."""

            def __init__(self):
                super().__init__()
                self.model = model

            def forward(self, *args):
                return self.model(**dict(zip(names, args)))[0]

        return First()


def measure(name: str, timeout: float) -> dict:
    """Export (cached), then the CLI's prune in a child process; the row's fields."""
    code = f"import sys; sys.path[:0] = {[str(ROOT / 'benchmarks')]!r}; import hf_zoo; hf_zoo.export({name!r})"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    if done.returncode:
        return {"model": name, "error": "export: " + outputs.last_line(done.stderr)}
    rep, stderr, seconds = outputs.cli_prune(CACHE / f"{name}.onnx", 0.5, timeout, CACHE / f"{name}.npz")
    if rep is None:
        return {"model": name, "error": outputs.last_line(stderr), "traceback": "Traceback" in stderr}
    return {"model": name, **outputs.report_fields(rep), "seconds": seconds}


HEADER = ("| model | params | groups pruned/total | float params removed | verified | prune s "
          "| first blocker of the largest group left whole | blockers of the others |\n"
          "|---|---|---|---|---|---|---|---|")


def row(r: dict) -> str:
    if "error" in r:
        return f"| {r['model']} | - | - | - | - | - | **failed**: {r['error']} | - |"
    return (f"| {r['model']} | {r['params']:,} | {r['pruned']}/{r['groups']} | {r['removed']:.1%} "
            f"| {'yes' if r['verified'] else '**no**'} | {r['seconds']:.0f} | {str(r['blocker']).replace('|', '/')} "
            f"| {str(r['others']).replace('|', '/')} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per model, export and prune each")
    ap.add_argument("--out", type=Path, default=outputs.LATEST / "hf_zoo.md", help="write the table here")
    outputs.add_argument(ap)
    args = ap.parse_args(argv)
    names = [m for m in args.models.split(",") if m]
    unknown = [m for m in names if m not in BUILDERS]
    if unknown:
        ap.error(f"unknown model {unknown[0]!r}; known: {', '.join(MODELS)}")
    outputs.check([args.out], args.update_tracked)

    outputs.zoo_sweep(names, outputs.within(measure, args.timeout), row, args.out, [HEADER])
    return 0


if __name__ == "__main__":
    sys.exit(main())
