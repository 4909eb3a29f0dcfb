"""Readers for the containers that hold photos inside packages: Qt binary resources (``.rcc``,
:func:`read_rcc`, zlib or zstd entries) and Enlightenment's Eet files (Edje ``.edj``,
:func:`read_eet`). Pure byte parsing, no decoding of the images."""

from __future__ import annotations

import struct
import zlib
from typing import Dict


class RccError(ValueError):
    pass


RCC_COMPRESSED, RCC_DIRECTORY, RCC_COMPRESSED_ZSTD = 0x01, 0x02, 0x04


def _zstd_decompress(payload: bytes) -> bytes:
    try:
        import zstandard
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise RccError("this .rcc holds zstd-compressed files (Qt 6): pip install zstandard") from e
    return zstandard.ZstdDecompressor().decompressobj().decompress(payload)


def read_rcc(data: bytes) -> Dict[str, bytes]:
    """The files of a Qt binary resource (``rcc --binary``) as ``{"/path/in/rcc": bytes}``.

    Format: ``"qres"``, then big-endian uint32 version (1-3), tree, data and names offsets, and
    (version >= 3) overall flags. Tree nodes are 14 bytes (+8 for the modification time from
    version 2): name offset (u32), flags (u16), then for a directory the child count and the
    index of the first child (u32, u32), for a file country/language (u16, u16) and the data
    offset (u32). Names: u16 length, u32 hash, UTF-16BE. Data: u32 size, then the bytes; zlib
    ones (flag 1) start with the u32 uncompressed size (``qCompress``), zstd ones (flag 4) are
    one zstd frame.
    """
    if len(data) < 20 or data[:4] != b"qres":
        raise RccError("not a Qt resource file (no 'qres' magic)")
    version, tree, payload, names = struct.unpack(">IIII", data[4:20])
    if version not in (1, 2, 3):
        raise RccError(f"unsupported .rcc version {version}")
    node_size = 14 if version == 1 else 22
    n = len(data)

    def u32(at: int) -> int:
        if at + 4 > n:
            raise RccError(f"truncated .rcc (offset {at})")
        return struct.unpack(">I", data[at : at + 4])[0]

    def name(offset: int) -> str:
        at = names + offset
        if at + 6 > n:
            raise RccError("name offset out of range")
        length = struct.unpack(">H", data[at : at + 2])[0]
        raw = data[at + 6 : at + 6 + 2 * length]
        if len(raw) != 2 * length:
            raise RccError("truncated name")
        return raw.decode("utf-16-be")

    out: Dict[str, bytes] = {}

    def walk(index: int, prefix: str, depth: int) -> None:
        if depth > 64:
            raise RccError("directory tree too deep (corrupt .rcc?)")
        at = tree + index * node_size
        if at + 14 > n:
            raise RccError(f"tree node {index} out of range")
        name_offset, flags = struct.unpack(">IH", data[at : at + 6])
        path = "" if index == 0 else f"{prefix}/{name(name_offset)}"
        if flags & RCC_DIRECTORY:
            count, first = struct.unpack(">II", data[at + 6 : at + 14])
            for child in range(first, first + count):
                walk(child, path, depth + 1)
            return
        offset = u32(at + 10)
        size = u32(payload + offset)
        blob = data[payload + offset + 4 : payload + offset + 4 + size]
        if len(blob) != size:
            raise RccError(f"truncated data of {path}")
        if flags & RCC_COMPRESSED:
            expected = struct.unpack(">I", blob[:4])[0]
            blob = zlib.decompress(blob[4:])
            if len(blob) != expected:
                raise RccError(f"{path}: {len(blob)} bytes after zlib, header says {expected}")
        elif flags & RCC_COMPRESSED_ZSTD:
            blob = _zstd_decompress(blob)
        out[path] = blob

    walk(0, "", 0)
    return out


EET_MAGIC_FILE2 = 0x1EE70F42


def read_eet(data: bytes) -> Dict[str, bytes]:
    """The uncompressed or zlib-compressed entries of an Eet file (Enlightenment's ``.edj``).

    Header: big-endian magic 0x1EE70F42, entry count, dictionary count; per entry six int32:
    data offset, stored size, uncompressed size, name offset, name size, flags (bit 0
    compressed, bit 1 ciphered, bit 2 alias; compressed = zlib when bits 3+ are 0). Ciphered,
    alias and lz4 entries are skipped. Edje stores lossy images as plain JPEG bytes.
    """
    if len(data) < 12:
        raise ValueError("not an Eet file (too short)")
    magic, count, _ = struct.unpack(">III", data[:12])
    if magic != EET_MAGIC_FILE2:
        raise ValueError(f"not an Eet file (magic {magic:#x})")
    out = {}
    for i in range(count):
        at = 12 + 24 * i
        if at + 24 > len(data):
            raise ValueError("truncated Eet directory")
        offset, size, data_size, name_offset, name_size, flags = struct.unpack(
            ">6i", data[at : at + 24]
        )
        name = data[name_offset : name_offset + name_size].rstrip(b"\0").decode("utf-8", "replace")
        blob = data[offset : offset + size]
        if flags & 0b110 or len(blob) != size:
            continue
        if flags & 1:
            if flags >> 3:
                continue  # lz4 and friends
            blob = zlib.decompress(blob)
            if len(blob) != data_size:
                continue
        out[name] = blob
    return out
