"""ONNX Runtime's inference part, imported without torch.

The training build (onnxruntime-training-cpu) checks, while ``import onnxruntime`` runs, whether
its PyTorch front end loads: ``onnxruntime.capi.onnxruntime_validation`` imports
``onnxruntime.training.ortmodule``, which imports torch (about 1.7 s and 300 MiB of a 2.9 s
import). Inference needs none of it. ``import_ort()`` imports ``onnxruntime`` with that one
module marked absent for the duration (Python's import system then raises ImportError for it
at once, which the check takes as "no ORTModule in this build"), and unmarks it afterwards, so
``onnxruntime.training`` (fine-tuning, Taylor gradients) still imports, torch with it, when a
training path asks for it. Once ``onnxruntime`` is imported, in any way, it is returned as is.

Example::

    ort = import_ort()
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
"""

from __future__ import annotations

import sys

_ORTMODULE = "onnxruntime.training.ortmodule"


def import_ort():
    """The ``onnxruntime`` module, imported without torch when this process imports it first."""
    if "onnxruntime" in sys.modules:
        return sys.modules["onnxruntime"]
    marked = _ORTMODULE not in sys.modules
    if marked:
        sys.modules[_ORTMODULE] = None  # type: ignore[assignment]  # "absent": ImportError on import
    try:
        import onnxruntime
    except Exception:  # Ctrl-C inside its extension's set-up comes back as "initialization failed"
        from ir import files

        files.reraise_interrupt()
        raise
    finally:
        if marked and sys.modules.get(_ORTMODULE, 0) is None:
            del sys.modules[_ORTMODULE]
    return onnxruntime
