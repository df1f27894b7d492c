"""Fine-tuning checkpoints: what a resumable run keeps in its ``--checkpoint`` folder.

``progress.json`` (the settings the run was made with, the history, the best epoch), ``checkpoint``
(ORT's training state with the optimizer) and ``best.npz`` (the best epoch's weights) change
together after every epoch, through ``ir.files.Staged`` (all three renamed, or none). A resume
must match every setting (model, data, each training option) or is refused naming the one that
differs; a damaged file is refused naming it. Example::

    saved = read_progress(folder, settings_of(model, config, train, val), restart=False)
    ...after an epoch...
    save_epoch(folder, state, weights_if_best, settings, history, best)
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import onnx

from ir import files

from .base import PassError


def settings_of(model: onnx.ModelProto, config, train, val) -> dict:
    """What a checkpoint was made with; a resume must match every entry (named by its option)."""
    def digest(data) -> str | None:
        if data is None:
            return None
        h = hashlib.sha256()
        for x, y in data.batches:
            h.update(np.ascontiguousarray(x).tobytes())
            h.update(np.ascontiguousarray(y).tobytes())
        return h.hexdigest()[:16]

    settings = {"model": hashlib.sha256(model.SerializeToString()).hexdigest()[:16],
                "data": digest(train), "val": digest(val)}
    for k, v in asdict(config).items():
        settings[k.replace("_", "-")] = list(v) if isinstance(v, tuple) else v
    return settings


# settings that finetune gained after checkpoints were first written, with the value every run
# had before: a checkpoint without the entry was made with that value, and resumes under it
ADDED_LATER = {"keep-start": False, "holdout": 0.0, "warmup": 0.0}


class CheckpointError(PassError):
    """A checkpoint folder that cannot be resumed; one line naming the folder and the reason."""


def read_progress(folder: Path, settings: dict, restart: bool) -> dict | None:
    """The saved progress to resume from (the folder is made if missing); None to start afresh.
    Refuses (``CheckpointError``) a damaged file or one made with other settings, unless ``restart``."""
    if folder.exists() and not folder.is_dir():
        raise CheckpointError(f"--checkpoint {folder}: is not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    progress_file = folder / "progress.json"
    if restart or not progress_file.exists():
        return None
    try:
        saved = json.loads(progress_file.read_text())
        made_with, history, best = saved["settings"], saved["history"], saved["best"]
        if not (isinstance(made_with, dict) and isinstance(history, list) and isinstance(best, dict)):
            raise ValueError("unexpected content")
        if not (folder / "checkpoint").is_file() or (best["epoch"] > 0 and not (folder / "best.npz").is_file()):
            raise ValueError("its checkpoint files are missing")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{progress_file}: damaged checkpoint ({reason}); "
                              f"--force starts over (the folder is rewritten)") from None
    for key in settings:
        was = made_with.get(key, ADDED_LATER.get(key))
        if was != settings[key]:
            what = {"model": "a different model", "data": "different training data (--data)",
                    "val": "different validation data (--val)"}.get(key)
            differs = what or f"--{key} {was!r}, this run has {settings[key]!r}"
            raise CheckpointError(f"{folder}: the checkpoint was made with {differs}; resume with the same "
                                  f"settings, or --force to start over")
    return saved


def save_epoch(folder: Path, state, best_weights: dict | None, settings: dict, history: list, best: dict) -> None:
    """After an epoch: the training state, the best weights (when this epoch is the best) and the
    progress, committed together."""
    from onnxruntime.training.api import CheckpointState

    with files.Staged() as staged:
        if best_weights is not None:
            with open(staged.path_for(folder / "best.npz"), "wb") as fh:
                np.savez(fh, **best_weights)
        CheckpointState.save_checkpoint(state, staged.path_for(folder / "checkpoint"), include_optimizer_state=True)
        staged.write_bytes(folder / "progress.json",
                           json.dumps({"settings": settings, "history": history, "best": best}).encode())
