"""The protobuf wire format of an ONNX file, read without decoding it: ``excised`` cuts the
data of the large graph initializers out of a file's bytes, so that parsing the rest is quick
and each weight's array can be a view of the file as mapped (``onnx_io.read_hollow``), instead
of two copies out of a decoded message.

Only the fields on the way are read: ModelProto.graph (7, every occurrence: protobuf merges
them, their initializers concatenated in order), GraphProto.initializer (5), and each
TensorProto's fields (a tensor with any field beyond dims, data_type, name, raw_data,
doc_string and a zero data_location is left whole). Everything else is copied by its wire
type unread; bytes that are not the wire format give None.
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


def fields(buf, i: int, end: int):
    """(field, wire type, start, end) of each length-delimited field (wire type 2: its payload)
    of the message at ``buf[i:end]``; ValueError / IndexError where it is not the wire format."""
    for field, wire, value, _, _ in every_field(buf, i, end):
        if wire == 2:
            yield field, wire, value[0], value[1]


def every_field(buf, i: int, end: int):
    """(field, wire type, value (a varint's number, a payload's (start, end), else None), the
    field's first byte, its end) of each field of the message at ``buf[i:end]``."""
    while i < end:
        first = i
        key, i = varint(buf, i)
        field, wire = key >> 3, key & 7
        value = None
        if wire == 0:
            value, i = varint(buf, i)
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        elif wire == 2:
            length, i = varint(buf, i)
            if i + length > end:
                raise ValueError("field past its message")
            value = (i, i + length)
            i += length
        else:  # groups (3, 4) are not in onnx.proto
            raise ValueError(f"wire type {wire}")
        yield field, wire, value, first, i
    if i != end:
        raise ValueError("field past its message")


def encode(value: int) -> bytes:
    """``value`` as a varint."""
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_PLAIN = {1, 2, 8, 9, 12, 14}  # a TensorProto's dims, data_type, name, raw_data, doc_string, data_location


def _plain_tensor(buf, t0: int, t1: int, itemsizes: dict[int, int], limit: int):
    """(name, dims, data_type, raw span) of a TensorProto that holds nothing but those fields,
    its data as ``raw_data`` (the last one) of exactly its size, more than ``limit`` elements of
    a type in ``itemsizes``, stored in the file (data_location 0); else None."""
    dims, dtype, name, raw = [], 0, b"", None
    for field, wire, value, _, _ in every_field(buf, t0, t1):
        if field not in _PLAIN:
            return None
        if field == 1:
            if wire == 0:
                dims.append(value)
            elif wire == 2:
                i, e = value
                while i < e:
                    d, i = varint(buf, i)
                    dims.append(d)
            else:
                return None
        elif field == 2 and wire == 0:
            dtype = value
        elif field == 8 and wire == 2:
            name = bytes(buf[value[0]:value[1]])
        elif field == 9 and wire == 2:
            raw = value
        elif field == 14 and wire == 0 and value == 0 or field == 12 and wire == 2:
            continue
        else:
            return None
    n = 1
    for d in dims:
        n *= d
    size = itemsizes.get(dtype)
    if raw is None or size is None or n <= limit or raw[1] - raw[0] != n * size or any(d >= 1 << 62 for d in dims):
        return None
    return name.decode("utf-8"), dims, dtype, raw


def excised(buf, itemsizes: dict[int, int], limit: int):
    """The ModelProto in ``buf`` without the data of its large plain graph initializers, as
    bytes, and each one's (name, dims, data_type, (start, end) of its data in ``buf``), in order;
    a name's second tensor is left whole. None when ``buf`` is not the wire format this walk
    knows. Parsing the bytes gives ``onnx_io.hollow``'s model: those tensors hold their name,
    type, dims and doc string, no data."""
    out, cut, names = bytearray(), [], set()
    try:
        for field, wire, value, first, end in every_field(buf, 0, len(buf)):
            if field != 7 or wire != 2:
                out += buf[first:end]
                continue
            graph = bytearray()
            for gfield, gwire, gvalue, gfirst, gend in every_field(buf, value[0], value[1]):
                plain = _plain_tensor(buf, *gvalue, itemsizes, limit) if gfield == 5 and gwire == 2 else None
                if plain is None or plain[0] in names:
                    graph += buf[gfirst:gend]
                    continue
                names.add(plain[0])
                cut.append(plain)
                tensor = bytearray()
                for tfield, _, _, tfirst, tend in every_field(buf, *gvalue):
                    if tfield != 9:
                        tensor += buf[tfirst:tend]
                graph += b"\x2a" + encode(len(tensor)) + tensor  # field 5, length-delimited
            out += b"\x3a" + encode(len(graph)) + graph  # field 7, length-delimited
    except (IndexError, ValueError, RecursionError, UnicodeDecodeError):
        return None
    return bytes(out), cut
