"""The one rule for every file the program writes, and the rule for reading external data.

It lives in ``ir/`` because model I/O (``ir.load``, ``ir.save``) lives here, and ``ir`` is the
lowest layer: the training engine's checkpoints (passes), the pipeline, the workflows (batch,
sensitivity, demo) and the command line all import it, so all of them write through this module.

Writing (``check_writes`` first, then ``Staged``):

- a path is refused (``FileRefused``, a usage error: exit 2, one line) when it resolves (realpath,
  symlinks followed) to a file the command reads, to another output of the same command, or to an
  existing non-regular file (folder, FIFO, device, socket);
- each part is written to a fresh temporary beside its target (``.NAME.<pid>.<random>.tmp``, never
  appended to) and renamed; the parts of one result are renamed only when all are written, and a
  failed rename puts back what was there;
- temporaries are removed on every exit path: the ``with`` block on exceptions (SIGINT and SIGTERM
  arrive as exceptions once ``interrupts()`` is installed), ``remove_temporaries()`` at exit, and a
  temporary left by a killed process (its pid no longer alive) when the next run writes there.

Example::

    check_writes({"-o": "out.onnx", "--report": "r.json"}, reads={"model": "in.onnx"})
    with Staged() as staged:
        staged.write_bytes("out.onnx", model_bytes)
        staged.write_bytes("r.json", report_bytes)
    # both are in place, or neither changed
"""

from __future__ import annotations

import atexit
import os
import re
import secrets
import signal
import stat
import sys
from typing import Iterable, Mapping

from .wire import fields

_LIVE: set[str] = set()          # temporaries this process created and has not renamed or removed


class FileRefused(ValueError):
    """A path the program will not write (or read); the message is one line naming it."""


class Interrupted(BaseException):
    """SIGINT or SIGTERM, raised where the program was so that every ``with``/``finally`` cleans up.
    A BaseException like KeyboardInterrupt, so that ``except Exception`` never swallows it."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


_received: list[int] = []  # the signals ``interrupts()``' handler raised since it was installed


def _raise_interrupted(signum, frame):
    _received.append(signum)
    raise Interrupted(signum)


def interrupts() -> None:
    """SIGINT and SIGTERM raise ``Interrupted`` in the main thread (exit 130 / 143 by convention)."""
    _received.clear()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _raise_interrupted)
    if not getattr(sys.unraisablehook, "passes_interrupts", False):
        sys.unraisablehook = _passing_interrupts(sys.unraisablehook)


def _passing_interrupts(hook):
    """An unraisable-exception hook that prints no ``Interrupted``: a signal whose handler ran
    inside a callback Python cannot propagate from (a weakref's, a ``__del__``) printed "Exception
    ignored in ..." and a traceback, and was lost. The signal is sent again a moment later, from a
    thread (raised here, its handler would run inside this hook), to land where the program is."""
    def passing(unraisable):
        if isinstance(unraisable.exc_value, Interrupted):
            import threading

            again = threading.Timer(0.01, os.kill, (os.getpid(), unraisable.exc_value.signum))
            again.daemon = True
            again.start()
            return
        hook(unraisable)
    passing.passes_interrupts = True
    return passing


def reraise_interrupt() -> None:
    """``Interrupted`` again when a signal arrived and native code swallowed its exception into an
    error of its own (ONNX Runtime's session set-up reports "initialization failed"): called where
    such an error is caught, so Ctrl-C is never blamed on the user's inputs."""
    if _received:
        raise Interrupted(_received[-1])


# ----------------------------------------------------------------------------- the rule
def _real(path: str | os.PathLike) -> str:
    return os.path.realpath(os.fspath(path))


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def check_writes(writes: Mapping[str, str | os.PathLike | None], reads: Mapping[str, object] = {},
                 folders_ok: Iterable[str] = (), new_folders: bool = False) -> None:
    """Refuse any output that would destroy an input, another output or a non-regular file.

    ``writes``: label (``-o``, ``--report``…) -> path (None: not given). ``reads``: label -> a
    path or a list of paths the command reads (use ``model_files`` for a model: it adds its
    external-data files). Labels in ``folders_ok`` name outputs that are folders (batch ``-o``);
    ``new_folders``: the caller creates missing parent folders (else a missing one is refused)."""
    read_paths: list[tuple[str, str, str]] = []
    for label, paths in reads.items():
        if paths is None:
            continue
        for p in ([paths] if isinstance(paths, (str, os.PathLike)) else paths):
            if p is not None and os.path.exists(p):
                read_paths.append((label, os.fspath(p), _real(p)))
    seen: dict[str, str] = {}
    for label, path in writes.items():
        if path is None or os.fspath(path) == "":
            continue
        path = os.fspath(path)
        real = _real(path)
        is_folder = label in folders_ok
        folder = os.path.dirname(real)
        if not is_folder and not new_folders and not os.path.isdir(folder):
            raise FileRefused(f"{label} {path}: output folder {os.path.dirname(path) or '.'!r} does not exist")
        try:
            mode = os.stat(path).st_mode
        except OSError:
            mode = None
        if mode is not None and not stat.S_ISREG(mode) and not (is_folder and stat.S_ISDIR(mode)):
            raise FileRefused(f"{label} {path}: is {_kind(mode)}, not a regular file; refusing to write there")
        for rlabel, rpath, rreal in read_paths:
            inside = is_folder and rreal.startswith(real.rstrip(os.sep) + os.sep)
            if rreal == real or inside:
                raise FileRefused(f"{label} {path}: is the {rlabel} {rpath}" + (" (inside it)" if inside else "")
                                  + "; refusing to overwrite an input")
        if real in seen:
            raise FileRefused(f"{label} {path}: is also {seen[real]}; give each output its own path")
        seen[real] = f"{label} {path}"


def model_files(path: str | os.PathLike) -> list[str]:
    """A model file and the external-data files it names (what writing must never touch)."""
    out = [os.fspath(path)]
    if not _names_location(path):  # no tensor names a data file: no need to parse the model
        return out
    try:
        import onnx
        from onnx import external_data_helper

        model = onnx.load(os.fspath(path), load_external_data=False)
        base = os.path.dirname(os.fspath(path))
        for t in external_data_helper._get_all_tensors(model):
            if external_data_helper.uses_external_data(t):
                loc = {e.key: e.value for e in t.external_data}.get("location")
                if loc:
                    out.append(os.path.join(base, loc))
    except Exception:  # not a model: the read reports it, with its own words
        pass
    return sorted(set(out), key=out.index)


def _names_location(path: str | os.PathLike) -> bool:
    """Whether the file's bytes contain ``location``, the key every external-data entry carries
    (mapped, not read: no copy of a large file), outside the tensors' numeric data (``_payloads``:
    skipped unread, they hold no key). True when unsure (unreadable, empty, a folder): the
    caller's parse then decides."""
    import mmap

    try:
        with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            try:
                skips = _payloads(mm, 0, len(mm), "model", [])
            except (IndexError, ValueError, RecursionError):  # not the wire format we know: every byte
                return mm.find(b"location") >= 0
            pos = 0
            for start, end in skips + [(len(mm), len(mm))]:
                if mm.find(b"location", pos, start) >= 0:
                    return True
                pos = end
            return False
    except (OSError, ValueError):
        return True


# protobuf messages (onnx.proto) on the way to a TensorProto: field number -> the message it holds
_HOLDS = {"model": {7: "graph", 25: "function"},
          "graph": {1: "node", 5: "tensor", 15: "sparse"},
          "function": {7: "node"},
          "node": {5: "attribute"},
          "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
          "sparse": {1: "tensor", 2: "tensor"},
          "tensor": {}}
_NUMBERS = (4, 5, 7, 9, 10, 11)   # TensorProto's float/int32/int64/raw/double/uint64 data
_SMALL = 4096                     # a message this short is searched whole, not walked


def _payloads(mm, i: int, end: int, kind: str, out: list) -> list[tuple[int, int]]:
    """The spans (start, end) of the tensors' numeric data in the ``kind`` message at
    ``mm[i:end]`` (protobuf wire format), appended to ``out`` in file order. Only messages of
    ``_SMALL`` bytes or more are walked (the rest are searched whole); ValueError / IndexError
    when the bytes are not the wire format."""
    holds = _HOLDS[kind]
    for field, _, s, e in fields(mm, i, end):
        if kind == "tensor" and field in _NUMBERS:
            out.append((s, e))
        elif field in holds and e - s >= _SMALL:
            _payloads(mm, s, e, holds[field], out)
    return out


def model_writes(label: str, path: str | os.PathLike | None) -> dict[str, str | None]:
    """The files a model output at ``path`` may become: the model and ``<path>.data``."""
    if path is None:
        return {}
    return {label: os.fspath(path), f"{label} (its external data)": os.fspath(path) + ".data"}


# ----------------------------------------------------------------------------- names
_SAFE = re.compile(r"[^./\\\x00-\x1f\x7f][^/\\\x00-\x1f\x7f]*")


def safe_component(name: object, what: str) -> str:
    """``name`` if it is one harmless path component (no slash or backslash, no control
    character, not starting with a dot, at most 128 chars); else ``FileRefused`` naming ``what``."""
    if not isinstance(name, str) or not _SAFE.fullmatch(name) or len(name) > 128:
        raise FileRefused(f"{what} {name!r} is not a safe folder name (one path component: no '/' "
                          f"or '\\', not starting with a dot)")
    return name


# ----------------------------------------------------------------------------- reading
def inside_folder(folder: str | os.PathLike, location: str, what: str) -> str:
    """The resolved path of ``location`` (relative to ``folder``) if it is a regular file inside
    ``folder`` after symlinks are resolved; else ``FileRefused`` naming ``what``."""
    if not location or os.path.isabs(location):
        raise FileRefused(f"{what}: external data location {location!r} is not a relative path")
    base = _real(folder)
    real = _real(os.path.join(base, location))
    if not real.startswith(base.rstrip(os.sep) + os.sep):
        raise FileRefused(f"{what}: external data location {location!r} resolves outside the model's folder")
    try:
        mode = os.stat(real).st_mode
    except OSError:
        raise FileRefused(f"{what}: external data file {location!r} does not exist") from None
    if not stat.S_ISREG(mode):
        raise FileRefused(f"{what}: external data {location!r} is {_kind(mode)}, not a regular file")
    return real


# ----------------------------------------------------------------------------- writing
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_TMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _sweep_stale(folder: str, name: str) -> None:
    """Remove temporaries for ``name`` left by killed processes (their pid is gone)."""
    _remove_dead(folder, lambda m: m["name"] == name and int(m["pid"]) != os.getpid())


def remove_stale(folder: str | os.PathLike) -> None:
    """Remove every temporary in ``folder`` whose process is gone (a killed worker's)."""
    _remove_dead(folder, lambda m: True)


def _remove_dead(folder, wanted) -> None:
    """Unlink the temporaries in ``folder`` that ``wanted`` picks and whose process is gone."""
    try:
        entries = os.listdir(folder)
    except OSError:
        return
    for entry in entries:
        m = _TMP.match(entry)
        if m and wanted(m) and not _alive(int(m["pid"])):
            try:
                os.unlink(os.path.join(folder, entry))
            except OSError:
                pass  # gone already, or not ours to remove: the sweep is best effort


def _write_error(exc: OSError, target) -> OSError:
    """An OSError that names the file the user asked for, not our temporary."""
    err = OSError(f"cannot write {os.fspath(target)}: {exc.strerror or exc}")
    err.errno = exc.errno
    return err


def temporary(target: str | os.PathLike) -> str:
    """A new empty temporary file beside ``target``, registered for removal; returns its path."""
    target = os.fspath(target)
    folder = os.path.dirname(target) or "."
    name = os.path.basename(target)
    _sweep_stale(folder, name)
    while True:
        tmp = os.path.join(folder, f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        except OSError as exc:
            raise _write_error(exc, target) from None
        os.close(fd)
        _LIVE.add(tmp)
        return tmp


def discard(tmp: str) -> None:
    _LIVE.discard(tmp)
    try:
        os.unlink(tmp)
    except OSError:
        pass


def remove_temporaries() -> None:
    """Remove every temporary this process still holds (on exit, on an interrupt)."""
    for tmp in list(_LIVE):
        discard(tmp)


atexit.register(remove_temporaries)


class Staged:
    """Files written together: each part goes to a temporary beside its target and all are
    renamed at ``commit()`` (at the end of a ``with`` block that raised nothing). An error names
    the target, not the temporary."""

    def __init__(self):
        self.parts: list[tuple[str, str]] = []   # (temporary, target)

    def __enter__(self) -> "Staged":
        return self

    def __exit__(self, kind, exc, tb) -> None:
        if kind is None:
            self.commit()
        else:
            self.discard()

    def path_for(self, target: str | os.PathLike) -> str:
        """A temporary to write ``target``'s content into (by any writer: savefig, np.savez…)."""
        tmp = temporary(target)
        self.parts.append((tmp, os.fspath(target)))
        return tmp

    def write_bytes(self, target: str | os.PathLike, data: bytes) -> None:
        self.write_chunks(target, (data,))

    def write_chunks(self, target: str | os.PathLike, chunks: Iterable[bytes]) -> None:
        """``target``'s content, written chunk by chunk as ``chunks`` makes them."""
        tmp = self.path_for(target)
        try:
            with open(tmp, "wb") as fh:
                for chunk in chunks:
                    fh.write(chunk)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise _write_error(exc, target) from None

    def discard(self) -> None:
        for tmp, _ in self.parts:
            discard(tmp)
        self.parts = []

    def commit(self) -> None:
        """Rename every part into place; if one rename fails, the ones done are undone."""
        mask = _umask()
        backups: list[tuple[str, str | None]] = []   # (target, hard link to what was there)
        try:
            for tmp, target in self.parts:
                os.chmod(tmp, 0o666 & ~mask)
                backup = None
                if os.path.isfile(target):
                    backup = temporary(target)
                    os.unlink(backup)
                    try:
                        os.link(target, backup)
                    except OSError:
                        _LIVE.discard(backup)
                        backup = None
                os.replace(tmp, target)
                _LIVE.discard(tmp)
                backups.append((target, backup))
        except BaseException as exc:
            for done, backup in reversed(backups):
                try:
                    if backup is not None:
                        os.replace(backup, done)
                        _LIVE.discard(backup)
                    else:
                        os.unlink(done)
                except OSError:
                    pass
            self.discard()
            for _, backup in backups:
                if backup is not None:
                    discard(backup)
            if isinstance(exc, OSError):
                raise _write_error(exc, target) from None
            raise
        for _, backup in backups:
            if backup is not None:
                discard(backup)
        self.parts = []


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """One file, atomically."""
    with Staged() as staged:
        staged.write_bytes(path, data)
