"""Progress of long work (fine-tuning epochs, sensitivity sweeps, ORT validation, batch jobs).

One switch for the whole process, set by the command line (``--progress``, ``--quiet``):

- ``auto`` (the default): a tqdm bar on stderr when stderr is a terminal, nothing otherwise;
- ``bar``: a tqdm bar even when stderr is not a terminal;
- ``json``: one JSON object a line on stderr per event, for scripts:
  ``{"event": "start"|"update"|"end"|"note", "task": ..., "done": ..., "total": ..., ...}``;
- ``off``: nothing.

Code reports with ``with task("name", total) as t: ... t.update(1, loss=0.3)``; ``note(name,
**fields)`` is one event without a bar (a json line only). Bars are transient (``leave=False``):
what stays on the screen is what the command prints at its end.
"""

from __future__ import annotations

import json
import sys
import time

MODES = ("auto", "bar", "json", "off")
_state = {"mode": "auto", "stream": None}


def configure(mode: str = "auto", stream=None) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown progress mode {mode!r}; known: {', '.join(MODES)}")
    _state.update(mode=mode, stream=stream)


def stream():
    return _state["stream"] if _state["stream"] is not None else sys.stderr


def mode() -> str:
    """The mode in effect: ``bar``, ``json`` or ``off`` (``auto`` resolved)."""
    m = _state["mode"]
    if m == "auto":
        s = stream()
        return "bar" if hasattr(s, "isatty") and s.isatty() else "off"
    return m


def quiet() -> bool:
    """Asked for nothing (``--quiet`` / ``off``): not even the line a step prints when it ends."""
    return _state["mode"] == "off"


def _emit(fields: dict) -> None:
    s = stream()
    s.write(json.dumps(fields, default=str) + "\n")
    s.flush()


def note(name: str, **fields) -> None:
    """One event with no bar (json mode only), e.g. a finished epoch's numbers."""
    if mode() == "json":
        _emit({"event": "note", "task": name, **fields})


class Task:
    def __init__(self, name: str, total: int | None = None, unit: str = "it"):
        self.name, self.total, self.done = name, total, 0
        self.mode = mode()
        self._bar = None
        self._start = time.perf_counter()
        if self.mode == "bar":
            from tqdm import tqdm
            self._bar = tqdm(total=total, desc=name, unit=unit, leave=False, file=stream(),
                             dynamic_ncols=True, disable=False)
        elif self.mode == "json":
            _emit({"event": "start", "task": name, "total": total})

    def update(self, n: int = 1, **info) -> None:
        self.done += n
        if self._bar is not None:
            if info:
                self._bar.set_postfix({k: (round(v, 4) if isinstance(v, float) else v) for k, v in info.items()},
                                      refresh=False)
            self._bar.update(n)
        elif self.mode == "json":
            _emit({"event": "update", "task": self.name, "done": self.done, "total": self.total, **info})

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.mode == "json":
            _emit({"event": "end", "task": self.name, "done": self.done, "total": self.total,
                   "seconds": round(time.perf_counter() - self._start, 3)})
            self.mode = "off"

    def __enter__(self) -> "Task":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def task(name: str, total: int | None = None, unit: str = "it") -> Task:
    return Task(name, total, unit)
