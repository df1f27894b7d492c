"""Training and validation data for ``finetune`` (and the data criteria, schedules, sensitivity):
``.npz`` files, ``(x, y)`` arrays or iterables of batches as ``Batches``; every mismatch with the
model is one ``DataError`` line raised before any training starts."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx


class DataError(ValueError):
    """Training data that does not fit the model; the message is one line for the user."""


# ----------------------------------------------------------------------------- data
@dataclass
class Batches:
    """Training or validation data as a list of ``(x, y)`` batches."""

    batches: list[tuple[np.ndarray, np.ndarray]]
    where: str
    # calibration of a model with more inputs than x (a state, a scalar): the run's
    # ``inputs.ProofInputs`` and seed, from which the other inputs are made for each batch's size
    others: Any = None

    def __len__(self) -> int:
        return sum(len(x) for x, _ in self.batches)


def load_npz(path: str | os.PathLike, need_y: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """Arrays ``x`` and ``y`` of an ``.npz`` file (``allow_pickle=False``); ``y`` is None when
    it is absent and not ``need_y`` (calibration data). Anything else is one ``DataError`` line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such data file")
    wanted = "arrays x and y" if need_y else "an array x"
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):  # a plain .npy array
            raise DataError(f"{path}: not an .npz file with {wanted} (one bare array)")
        with data:
            missing = [k for k in (("x", "y") if need_y else ("x",)) if k not in data.files]
            if missing:
                needs = "'x' and 'y'" if need_y else "'x', optionally 'y'"
                raise DataError(f"{path}: missing array{'s' if len(missing) > 1 else ''} "
                                f"{', '.join(missing)} (needs {needs})")
            return data["x"], data["y"] if "y" in data.files else None
    except DataError:
        raise
    except ValueError as exc:
        raise DataError(f"{path}: cannot read ({str(exc).splitlines()[0]})") from None
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: not an .npz file ({type(exc).__name__})") from None


def as_batches(data: Any, batch_size: int, what: str) -> Batches:
    """A path, ``(x, y)`` arrays, or an iterable of ``(x, y)`` batches -> ``Batches``."""
    if isinstance(data, Batches):
        return data
    if isinstance(data, (str, os.PathLike)):
        x, y = load_npz(data)
        return _split(np.asarray(x), np.asarray(y), batch_size, str(data))
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], np.ndarray):
        return _split(data[0], np.asarray(data[1]), batch_size, what)
    batches = []
    for i, item in enumerate(data):
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise DataError(f"{what}: batch {i} is not an (x, y) pair")
        x, y = np.asarray(item[0]), np.asarray(item[1])
        if len(x) != len(y):
            raise DataError(f"{what}: batch {i} has {len(x)} inputs but {len(y)} targets")
        batches.append((x, y))
    if not batches:
        raise DataError(f"{what}: no batches")
    return Batches(batches, what)


def _split(x: np.ndarray, y: np.ndarray, batch_size: int, where: str) -> Batches:
    if len(x) != len(y):
        raise DataError(f"{where}: {len(x)} inputs but {len(y)} targets")
    if len(x) == 0:
        raise DataError(f"{where}: empty")
    return Batches([(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(x), batch_size)], where)


def input_dtype(value) -> np.dtype:
    """The numpy dtype a graph input (an IR ``Value``) takes: token ids int64; float32 when its
    type is not stated."""
    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(value.elem_type)) if value.elem_type else np.dtype(np.float32)


def check_data(data: Batches, input_shape: tuple, n_classes: int | None, loss: str, out_shape: tuple,
               x_dtype=np.float32) -> None:
    """Shape, dtype and label-range checks, all before training starts; ``x_dtype``: what the
    model's input takes (``input_dtype``; token ids: int64)."""
    for i, (x, y) in enumerate(data.batches):
        if x.dtype != x_dtype:
            raise DataError(f"{data.where}: x has dtype {x.dtype}, the model takes {np.dtype(x_dtype)}")
        refuse_non_finite(x, "x", data, i)
        if y.dtype.kind == "f":
            refuse_non_finite(y, "y", data, i)
        if not _fits(x.shape, input_shape):
            raise DataError(f"{data.where}: x has shape {list(x.shape)}, the model takes {_show(input_shape)}")
        if loss == "ce":
            if y.dtype != np.int64:
                raise DataError(f"{data.where}: y has dtype {y.dtype}; class labels must be int64")
            if y.ndim != 1:
                raise DataError(f"{data.where}: y has shape {list(y.shape)}; class labels are 1-D")
            if n_classes is not None and len(y) and (y.min() < 0 or y.max() >= n_classes):
                raise DataError(f"{data.where}: labels span {int(y.min())}..{int(y.max())}, "
                                f"the model has {n_classes} classes")
        else:
            if y.dtype != np.float32:
                raise DataError(f"{data.where}: y has dtype {y.dtype}; mse targets must be float32")
            if not _fits(y.shape, out_shape):
                raise DataError(f"{data.where}: y has shape {list(y.shape)}, the model outputs {_show(out_shape)}")


def refuse_non_finite(arr: np.ndarray, what: str, data: Batches, batch: int) -> None:
    """NaN or inf in the data would train a model of NaN weights: refused before training."""
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        row = sum(len(b) for b, _ in data.batches[:batch]) + int(np.argwhere(~np.isfinite(arr))[0][0])
        raise DataError(f"{data.where}: {what} has {bad} non-finite value{'s' if bad > 1 else ''} "
                        f"(NaN or inf), the first in sample {row}")


def _fits(shape: tuple, model_shape: tuple) -> bool:
    """Same rank, and every fixed non-batch dim of the model's shape matches."""
    return len(shape) == len(model_shape) and all(
        not isinstance(d, int) or d == s for d, s in zip(model_shape[1:], shape[1:]))


def _show(model_shape: tuple) -> list:
    return ["N" if not isinstance(d, int) else d for d in model_shape]


def split_holdout(data: Batches, fraction: float, seed: int, batch_size: int) -> tuple[Batches, Batches]:
    """``(train, held out)``: a seeded draw of ``fraction`` of the samples kept out of training, to
    choose the epoch on data the model was not trained on (never the user's validation data).
    Batches of differing shapes (an iterable of batches) are held out whole."""
    rng = np.random.default_rng([seed, 17])
    try:
        x = np.concatenate([b[0] for b in data.batches])
        y = np.concatenate([b[1] for b in data.batches])
    except ValueError:   # batches of their own shapes: hold out whole batches
        order = rng.permutation(len(data.batches))
        k = min(len(order) - 1, max(1, round(fraction * len(order))))
        if k < 1:
            raise DataError(f"{data.where}: one batch, nothing to hold out for choosing the epoch") from None
        held = set(order[:k].tolist())
        return (Batches([b for i, b in enumerate(data.batches) if i not in held], data.where),
                Batches([b for i, b in enumerate(data.batches) if i in held], data.where + " (held out)"))
    k = max(1, round(fraction * len(x)))
    if k >= len(x):
        raise DataError(f"{data.where}: {len(x)} samples, too few to hold {fraction:g} of them out")
    order = rng.permutation(len(x))
    keep, held = np.sort(order[k:]), np.sort(order[:k])
    return (_split(x[keep], y[keep], batch_size, data.where),
            _split(x[held], y[held], batch_size, data.where + " (held out)"))
