"""The superblock of an HDF5 file (versions 2 and 3, what ``libver="latest"`` writes): its
checksum and the "open for write" flag that a killed writer leaves set."""

from pathlib import Path

SIGNATURE = b"\x89HDF\r\n\x1a\n"
_M32 = 0xFFFFFFFF


def _rot(x, k):
    return ((x << k) | (x >> (32 - k))) & _M32


def lookup3(data: bytes, initval: int = 0) -> int:
    """Bob Jenkins' lookup3 `hashlittle`, the checksum of HDF5 superblocks v2/v3."""
    n = len(data)
    a = b = c = (0xDEADBEEF + n + initval) & _M32
    i = 0
    while n > 12:
        a = (a + int.from_bytes(data[i : i + 4], "little")) & _M32
        b = (b + int.from_bytes(data[i + 4 : i + 8], "little")) & _M32
        c = (c + int.from_bytes(data[i + 8 : i + 12], "little")) & _M32
        a = (a - c) & _M32
        a ^= _rot(c, 4)
        c = (c + b) & _M32  # noqa: E702
        b = (b - a) & _M32
        b ^= _rot(a, 6)
        a = (a + c) & _M32  # noqa: E702
        c = (c - b) & _M32
        c ^= _rot(b, 8)
        b = (b + a) & _M32  # noqa: E702
        a = (a - c) & _M32
        a ^= _rot(c, 16)
        c = (c + b) & _M32  # noqa: E702
        b = (b - a) & _M32
        b ^= _rot(a, 19)
        a = (a + c) & _M32  # noqa: E702
        c = (c - b) & _M32
        c ^= _rot(b, 4)
        b = (b + a) & _M32  # noqa: E702
        n -= 12
        i += 12
    if n == 0:
        return c
    tail = data[i : i + n] + bytes(12 - n)
    a = (a + int.from_bytes(tail[0:4], "little")) & _M32
    b = (b + int.from_bytes(tail[4:8], "little")) & _M32
    c = (c + int.from_bytes(tail[8:12], "little")) & _M32
    c ^= b
    c = (c - _rot(b, 14)) & _M32  # noqa: E702
    a ^= c
    a = (a - _rot(c, 11)) & _M32  # noqa: E702
    b ^= a
    b = (b - _rot(a, 25)) & _M32  # noqa: E702
    c ^= b
    c = (c - _rot(b, 16)) & _M32  # noqa: E702
    a ^= c
    a = (a - _rot(c, 4)) & _M32  # noqa: E702
    b ^= a
    b = (b - _rot(a, 14)) & _M32  # noqa: E702
    c ^= b
    c = (c - _rot(b, 24)) & _M32  # noqa: E702
    return c


def h5_write_flag_set(path: Path) -> bool:
    """The superblock (v2/v3) says a writer has the file open: set by a killed writer too."""
    with open(path, "rb") as fd:
        head = fd.read(12)  # signature, superblock version, sizes, status flags
    return head[:8] == SIGNATURE and head[8] in (2, 3) and head[11] != 0


def clear_h5_write_flag(path: Path) -> bool:
    """What `h5clear -s` does: reset the 'open for write' flag a killed writer leaves behind.

    Files opened with libver="latest" (superblock v3, as hloc and this package write them) keep
    this flag set when the process dies; HDF5 then refuses to open them at all. Returns True if
    cleared. Only call it when no live process has the file open for writing.
    """
    with open(path, "r+b") as fd:
        head = bytearray(fd.read(64))
        if head[:8] != SIGNATURE or head[8] not in (2, 3):
            return False
        end = 12 + 4 * head[9]  # signature, version, sizes, flags, 4 addresses
        if int.from_bytes(head[end : end + 4], "little") != lookup3(bytes(head[:end])):
            return False  # not the layout we know: leave it alone
        if head[11] == 0:
            return False
        head[11] = 0
        fd.seek(0)
        fd.write(bytes(head[:end]) + lookup3(bytes(head[:end])).to_bytes(4, "little"))
    return True
