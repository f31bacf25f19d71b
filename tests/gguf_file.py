"""A small GGUF reader and writer, for making malformed model files in tests.

A file is read into a ``GGUFFile``: the header fields, the metadata as a list
of ``KV`` (key, type, value) in file order, the tensor infos as a list of
``TensorInfo``, and where the tensor data starts. Change any of it (or the
bytes ``header_bytes()`` returns) and ``write()`` a new file: the header is
serialized again and the original tensor data copied after it (in the
kernel, with copy_file_range, so a 100 MB model takes a few milliseconds).

Values are not checked on writing: the point is to write what a careful
writer would not.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional, Union

MAGIC = b"GGUF"

# gguf_type
UINT8, INT8, UINT16, INT16, UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY, UINT64, INT64, FLOAT64 = range(13)
SCALAR_FORMATS = {
    UINT8: "<B", INT8: "<b", UINT16: "<H", INT16: "<h", UINT32: "<I", INT32: "<i",
    FLOAT32: "<f", BOOL: "<?", UINT64: "<Q", INT64: "<q", FLOAT64: "<d",
}
TYPE_NAMES = {
    UINT8: "u8", INT8: "i8", UINT16: "u16", INT16: "i16", UINT32: "u32", INT32: "i32", FLOAT32: "f32",
    BOOL: "bool", STRING: "str", ARRAY: "arr", UINT64: "u64", INT64: "i64", FLOAT64: "f64",
}

# ggml_type values (ggml.h) that a tensor may have, and their (block size, bytes per block)
GGML_TYPES = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 36),
    10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292), 16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74),
    18: ("IQ3_XXS", 256, 98), 19: ("IQ1_S", 256, 50), 20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82), 23: ("IQ4_XS", 256, 136), 24: ("I8", 1, 1), 25: ("I16", 1, 2),
    26: ("I32", 1, 4), 27: ("I64", 1, 8), 28: ("F64", 1, 8), 29: ("IQ1_M", 256, 56), 30: ("BF16", 1, 2),
    34: ("TQ1_0", 256, 54), 35: ("TQ2_0", 256, 66), 39: ("MXFP4", 32, 17), 40: ("NVFP4", 64, 36),
    41: ("Q1_0", 128, 18), 42: ("Q2_0", 64, 18),
}
GGML_TYPE_COUNT = 43
F32, F16, Q4_0, Q4_1, Q8_0, I32, F64, BF16 = 0, 1, 2, 3, 8, 26, 28, 30


@dataclass
class KV:
    key: Union[str, bytes]
    type: int
    value: Any  # a scalar, a str (or bytes), or for ARRAY a list
    array_type: Optional[int] = None  # element type of an ARRAY
    raw: Optional[bytes] = field(default=None, repr=False, compare=False)  # serialized, once written

    @property
    def type_name(self) -> str:
        if self.type == ARRAY:
            return "arr[%s]" % TYPE_NAMES.get(self.array_type, self.array_type)
        return TYPE_NAMES.get(self.type, str(self.type))

    def copy(self) -> "KV":
        value = list(self.value) if isinstance(self.value, list) else self.value
        return KV(self.key, self.type, value, self.array_type)

    def serialize(self) -> bytes:
        if self.raw is None:
            out = bytearray()
            _string(out, self.key)
            out += struct.pack("<I", self.type & 0xFFFFFFFF)
            if self.type == ARRAY:
                out += struct.pack("<I", self.array_type & 0xFFFFFFFF)
                out += struct.pack("<Q", len(self.value))
                _array(out, self.array_type, self.value)
            else:
                _value(out, self.type, self.value)
            self.raw = bytes(out)
        return self.raw


@dataclass
class TensorInfo:
    name: Union[str, bytes]
    dims: List[int]
    type: int
    offset: int  # relative to the start of the data section

    def nbytes(self) -> int:
        _, block, size = GGML_TYPES[self.type]
        n = 1
        for d in self.dims:
            n *= d
        return n // block * size

    def copy(self) -> "TensorInfo":
        return TensorInfo(self.name, list(self.dims), self.type, self.offset)


@dataclass
class GGUFFile:
    path: Path
    version: int
    kvs: List[KV]
    tensors: List[TensorInfo]
    data_offset: int  # in the original file
    file_size: int
    # header counts as written; None: the real lengths of kvs and tensors
    n_tensors: Optional[int] = None
    n_kv: Optional[int] = None
    # tensor data to write instead of the original's, by tensor name; with
    # it, every tensor's data is laid out again (offsets recomputed)
    data: dict = field(default_factory=dict)
    # where each tensor's data is in the original file: name -> (offset, size)
    source: dict = field(default_factory=dict, repr=False)
    header_len: int = 0  # in the original file
    relaid: bool = False  # offsets recomputed: the data is written tensor by tensor

    def clone(self) -> "GGUFFile":
        """A copy to mutate: KV objects are shared until edit() copies one."""
        return GGUFFile(self.path, self.version, list(self.kvs), [t.copy() for t in self.tensors],
                        self.data_offset, self.file_size, self.n_tensors, self.n_kv, dict(self.data), self.source, self.header_len,
                        self.relaid)

    # ------------------------------------------------------------ access
    def index(self, key: str) -> int:
        for i, kv in enumerate(self.kvs):
            if kv.key == key:
                return i
        raise KeyError(key)

    def kv(self, key: str) -> KV:
        return self.kvs[self.index(key)]

    def edit(self, key: str) -> KV:
        """The key's KV, copied into this file so that it can be changed."""
        i = self.index(key)
        self.kvs[i] = self.kvs[i].copy()
        return self.kvs[i]

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self.kv(key).value
        except KeyError:
            return default

    def set(self, key: str, value: Any, type_: Optional[int] = None, array_type: Optional[int] = None) -> None:
        """Sets a key's value (and type, if given); adds the key if missing."""
        try:
            i = self.index(key)
        except KeyError:
            if type_ is None:
                raise
            self.kvs.append(KV(key, type_, value, array_type))
            return
        old = self.kvs[i]
        self.kvs[i] = KV(key, old.type if type_ is None else type_, value,
                         old.array_type if array_type is None else array_type)

    def remove(self, key: str) -> None:
        self.kvs = [kv for kv in self.kvs if kv.key != key]

    def tensor(self, name: str) -> TensorInfo:
        for t in self.tensors:
            if t.name == name:
                return t
        raise KeyError(name)

    def read_tensor(self, name: str) -> bytes:
        """A tensor's data as the original file has it."""
        off, size = self.source[name]
        with open(self.path, "rb") as f:
            f.seek(off)
            return f.read(size)

    @property
    def arch(self) -> str:
        return self.get("general.architecture")

    @property
    def alignment(self) -> int:
        a = self.get("general.alignment", 32)
        return a if isinstance(a, int) and a > 0 else 32

    # ------------------------------------------------------------ writing
    def header_bytes(self, fields: Optional[list] = None) -> bytes:
        """The header (up to the tensor infos' end, no padding). With a list
        ``fields``, appends (offset, size, label) for each fixed-size field."""
        out = bytearray()

        def put(label: str, data: bytes) -> None:
            if fields is not None:
                fields.append((len(out), len(data), label))
            out.extend(data)

        out += MAGIC
        put("version", struct.pack("<I", self.version & 0xFFFFFFFF))
        put("n_tensors", struct.pack("<Q", (len(self.tensors) if self.n_tensors is None else self.n_tensors) & (2**64 - 1)))
        put("n_kv", struct.pack("<Q", (len(self.kvs) if self.n_kv is None else self.n_kv) & (2**64 - 1)))
        for kv in self.kvs:
            if fields is not None:
                raw = kv.serialize()
                klen = len(kv.key.encode() if isinstance(kv.key, str) else kv.key)
                fields.append((len(out), 8, "kv %s: key length" % kv.key))
                fields.append((len(out) + 8 + klen, 4, "kv %s: type" % kv.key))
                if kv.type == ARRAY:
                    fields.append((len(out) + 12 + klen, 4, "kv %s: array type" % kv.key))
                    fields.append((len(out) + 16 + klen, 8, "kv %s: array length" % kv.key))
                    if kv.array_type == STRING and kv.value:
                        fields.append((len(out) + 24 + klen, 8, "kv %s: first string's length" % kv.key))
                elif kv.type == STRING:
                    fields.append((len(out) + 12 + klen, 8, "kv %s: string length" % kv.key))
                else:
                    fields.append((len(out) + 12 + klen, len(raw) - 12 - klen, "kv %s: value" % kv.key))
            out += kv.serialize()
        for t in self.tensors:
            name = t.name.encode() if isinstance(t.name, str) else t.name
            put("tensor %s: name length" % t.name, struct.pack("<Q", len(name)))
            out += name
            put("tensor %s: n_dims" % t.name, struct.pack("<I", len(t.dims) & 0xFFFFFFFF))
            for j, d in enumerate(t.dims):
                put("tensor %s: ne[%d]" % (t.name, j), struct.pack("<Q", d & (2**64 - 1)))
            put("tensor %s: type" % t.name, struct.pack("<I", t.type & 0xFFFFFFFF))
            put("tensor %s: offset" % t.name, struct.pack("<Q", t.offset & (2**64 - 1)))
        return bytes(out)

    def relayout(self) -> None:
        """Recomputes every tensor's offset from its type and shape (after a
        change of type or shape, with new data in ``data``)."""
        self.relaid = True
        off = 0
        for t in self.tensors:
            t.offset = off
            off += _pad(t.nbytes(), self.alignment)

    def write(self, dest: Union[str, Path], header: Optional[bytes] = None, truncate_at: Optional[int] = None) -> Path:
        """Writes the header (``header`` if given, else this file's), padding to
        the alignment, then the tensor data: the original's, copied whole, or
        with ``data`` set, tensor by tensor at their offsets (new data for the
        tensors it names, the original's for the others, cut or zero-filled to
        the size each tensor needs now). ``truncate_at`` cuts the result."""
        if header is None:
            header = self.header_bytes()
        pad = (-len(header)) % self.alignment
        dest = Path(dest)
        with open(self.path, "rb") as src, open(dest, "wb") as out:
            out.write(header)
            out.write(b"\0" * pad)
            start = len(header) + pad
            if not self.data and not self.relaid:
                n = self.file_size - self.data_offset
                if truncate_at is not None:
                    n = max(0, min(n, truncate_at - start))
                copy_range(src, out, self.data_offset, n)
            else:
                for t in self.tensors:
                    if truncate_at is not None and start + t.offset >= truncate_at:
                        break
                    out.seek(start + t.offset)
                    size = t.nbytes()
                    if t.name in self.data:
                        out.write(self.data[t.name][:size])
                    elif t.name in self.source:
                        off, n = self.source[t.name]
                        copy_range(src, out, off, min(n, size))
                end = start + (max((t.offset + _pad(t.nbytes(), self.alignment) for t in self.tensors), default=0))
                out.truncate(end)
            if truncate_at is not None:
                out.truncate(min(truncate_at, out.seek(0, os.SEEK_END)))
        return dest


def _pad(n: int, alignment: int) -> int:
    return n + (-n) % alignment


def _string(out: bytearray, s: Union[str, bytes]) -> None:
    b = s.encode("utf-8") if isinstance(s, str) else s
    out += struct.pack("<Q", len(b))
    out += b


def _array(out: bytearray, type_: int, values: list) -> None:
    fmt = SCALAR_FORMATS.get(type_)
    if fmt and fmt not in ("<?",):
        try:
            out += struct.pack("<%d%s" % (len(values), fmt[1]), *values)
            return
        except struct.error:
            pass  # a value out of its type's range: written bit by bit below
    if type_ == STRING:
        parts = []
        for v in values:
            b = v.encode("utf-8") if isinstance(v, str) else v
            parts.append(struct.pack("<Q", len(b)))
            parts.append(b)
        out += b"".join(parts)
        return
    for v in values:
        _value(out, type_, v)


def _value(out: bytearray, type_: int, v: Any) -> None:
    if type_ == STRING:
        _string(out, v)
    elif type_ in SCALAR_FORMATS:
        fmt = SCALAR_FORMATS[type_]
        if fmt in ("<f", "<d"):
            out += struct.pack(fmt, float(v))
        elif fmt == "<?":
            out += struct.pack("<B", int(v) & 0xFF)
        else:
            bits = struct.calcsize(fmt) * 8
            v = int(v) & ((1 << bits) - 1)
            out += struct.pack(fmt.upper(), v)  # as unsigned: any bit pattern
    elif type_ == ARRAY:
        raise ValueError("nested arrays are written with raw bytes")
    else:
        raise ValueError("no serialization for gguf type %r" % type_)


def copy_range(src, dst, offset: int, n: int) -> None:
    """Copies n bytes of src from offset to dst's current position."""
    src_off = offset
    dst.flush()  # copy_file_range writes at the descriptor's position
    while n > 0:
        try:
            done = os.copy_file_range(src.fileno(), dst.fileno(), n, src_off)
        except (AttributeError, OSError):
            src.seek(src_off)
            while n > 0:
                chunk = src.read(min(n, 1 << 22))
                if not chunk:
                    return
                dst.write(chunk)
                n -= len(chunk)
            return
        if done == 0:
            return
        src_off += done
        n -= done
    dst.seek(0, os.SEEK_END)


class _Reader:
    def __init__(self, data: bytes):  # noqa: D107
        self.data = data
        self.pos = 0

    def read(self, fmt: str) -> Any:
        v = struct.unpack_from(fmt, self.data, self.pos)[0]
        self.pos += struct.calcsize(fmt)
        return v

    def string(self) -> str:
        n = self.read("<Q")
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b.decode("utf-8")

    def value(self, type_: int) -> Any:
        if type_ == STRING:
            return self.string()
        if type_ == BOOL:
            return bool(self.read("<B"))
        return self.read(SCALAR_FORMATS[type_])


def read(path: Union[str, Path]) -> GGUFFile:
    """Reads a well-formed GGUF file's header."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        chunk = 1 << 22
        data = f.read(chunk)
        while True:
            try:
                return _parse(path, data, size)
            except struct.error:
                if len(data) >= size:
                    raise
                data += f.read(chunk)
                chunk *= 2


def _parse(path: Path, data: bytes, size: int) -> GGUFFile:
    r = _Reader(data)
    if r.data[:4] != MAGIC:
        raise ValueError("not a GGUF file: %s" % path)
    r.pos = 4
    version = r.read("<I")
    n_tensors = r.read("<Q")
    n_kv = r.read("<Q")
    kvs = []
    for _ in range(n_kv):
        kv_start = r.pos
        key = r.string()
        type_ = r.read("<I")
        if type_ == ARRAY:
            at = r.read("<I")
            n = r.read("<Q")
            if at in SCALAR_FORMATS and at != BOOL:
                fmt = SCALAR_FORMATS[at]
                w = struct.calcsize(fmt)
                if r.pos + n * w > len(r.data):
                    raise struct.error("short")
                value = list(struct.unpack_from("<%d%s" % (n, fmt[1]), r.data, r.pos))
                r.pos += n * w
            else:
                value = [r.value(at) for _ in range(n)]
            kvs.append(KV(key, type_, value, at))
        else:
            kvs.append(KV(key, type_, r.value(type_)))
        kvs[-1].raw = bytes(r.data[kv_start:r.pos])
    tensors = []
    for _ in range(n_tensors):
        name = r.string()
        nd = r.read("<I")
        dims = [r.read("<Q") for _ in range(nd)]
        tensors.append(TensorInfo(name, dims, r.read("<I"), r.read("<Q")))
    g = GGUFFile(path, version, kvs, tensors, 0, size)
    g.data_offset = r.pos + (-r.pos) % g.alignment
    g.header_len = r.pos
    g.source = {t.name: (g.data_offset + t.offset, t.nbytes()) for t in tensors}
    return g
