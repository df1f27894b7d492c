"""The protobuf wire format of an ONNX file, read without decoding it: where a model's graph
initializers keep their bytes (``raw_data``), so their arrays can be views of the file as read
instead of two copies out of a decoded message (``onnx_io.hollow``).

Only the fields on the way are read: ModelProto.graph (7, every occurrence: protobuf merges
them, their initializers concatenated in order), GraphProto.initializer (5), and in each
TensorProto its name (8) and raw_data (9), the last occurrence of each (what a parser keeps).
Anything else is skipped by its wire type; bytes that are not the wire format give None.
"""

from __future__ import annotations


def varint(buf, i: int) -> tuple[int, int]:
    """The varint at ``buf[i]`` and the offset after it; ValueError past 10 bytes."""
    value = shift = 0
    while True:
        b = buf[i]
        value |= (b & 0x7F) << shift
        i += 1
        if b < 0x80:
            return value, i
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(buf, i: int, end: int):
    """(field, start, end) of each length-delimited field of the message at ``buf[i:end]``."""
    while i < end:
        key, i = varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            _, i = varint(buf, i)
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        elif wire == 2:
            length, i = varint(buf, i)
            if i + length > end:
                raise ValueError("field past its message")
            yield field, i, i + length
            i += length
        else:  # groups (3, 4) are not in onnx.proto
            raise ValueError(f"wire type {wire}")
    if i != end:
        raise ValueError("field past its message")


def initializer_data(buf) -> list[tuple[str, tuple[int, int] | None]] | None:
    """For each graph initializer of the ModelProto in ``buf``, in order: its name and the
    (start, end) of its ``raw_data`` in ``buf`` (None without one); None when ``buf`` is not
    the wire format this walk knows."""
    out: list[tuple[str, tuple[int, int] | None]] = []
    try:
        for field, g0, g1 in _fields(buf, 0, len(buf)):
            if field != 7:
                continue
            for gfield, t0, t1 in _fields(buf, g0, g1):
                if gfield != 5:
                    continue
                name, raw = b"", None
                for tfield, s, e in _fields(buf, t0, t1):
                    if tfield == 8:
                        name = bytes(buf[s:e])
                    elif tfield == 9:
                        raw = (s, e)
                out.append((name.decode("utf-8"), raw))
    except (IndexError, ValueError, RecursionError, UnicodeDecodeError):
        return None
    return out
