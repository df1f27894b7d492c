"""Export torchvision classification models (random init, perturbed) with the legacy exporter.

torchvision's compiled part cannot load here; its model definitions work once the
``torchvision::nms`` / ``qnms`` op schemas exist, so they are defined before the import.
"""

from __future__ import annotations

from pathlib import Path

import torch

import exporting


def import_torchvision():
    for schema in ("nms", "qnms"):
        try:
            torch.library.define(f"torchvision::{schema}",
                                 "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        except RuntimeError:  # already defined in this process
            pass
    import torchvision

    return torchvision


# model -> input side; VGG and AlexNet keep 224 so their adaptive pooling stays an identity
SIZES = {"resnet18": 64, "resnet50": 64, "vgg16_bn": 224, "squeezenet1_1": 64, "alexnet": 224,
         "densenet121": 64, "mobilenet_v2": 64, "googlenet": 64}


def seeded(name: str, seed: int = 0, **kwargs):
    """torchvision model ``name`` in eval mode (``kwargs`` to its builder), random init,
    perturbed so that no two weights are identical (the exporter would otherwise share fresh
    BatchNorm tensors)."""
    tv = import_torchvision()
    torch.manual_seed(seed)
    if name in ("googlenet", "inception_v3"):
        kwargs = {"aux_logits": False, "init_weights": True, **kwargs}
    model = tv.models.get_model(name, weights=None, **kwargs).eval()
    exporting.perturb(model, 0.01)
    with torch.no_grad():
        for key, buf in model.named_buffers():
            if key.endswith("running_var"):
                buf.copy_(torch.rand_like(buf) + 0.5)
            elif key.endswith("running_mean"):
                buf.copy_(torch.randn_like(buf) * 0.1)
    return model


def export(name: str, folder: Path, size: int | None = None, seed: int = 0, opset: int = 17) -> Path:
    """Export ``seeded(name, seed)`` to ``folder/name[_opN].onnx`` (cached)."""
    path = Path(folder) / (f"{name}.onnx" if opset == 17 else f"{name}_op{opset}.onnx")
    if path.exists():
        return path
    model = seeded(name, seed)
    side = size or SIZES.get(name, 224)
    return exporting.export(model, torch.randn(1, 3, side, side), path, opset=opset,
                            input_names=["input"], output_names=["logits"])
