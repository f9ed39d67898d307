"""The ``.npy`` codec of shard members: canonical bytes out, zero-copy views in.

``encode_npy`` gives identical bytes for identical arrays (no pickles), so shards are
byte-identical across reruns. ``decode_npy_view`` reads a member as a view of its buffer
(no copy), checking the magic, the header and that the data fill the member exactly.
"""

from __future__ import annotations

import functools
import io

import numpy as np

NPY_MAGIC = b"\x93NUMPY"
Buffer = bytearray | np.ndarray  # a member's bytes (an ndarray is uint8, 1-D)


class NpyError(ValueError):
    """Bytes that are not a well-formed ``.npy`` array."""


def encode_npy(array: np.ndarray) -> bytes:
    """``.npy`` bytes of an array (no pickles), identical for identical arrays."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def decode_npy(data: bytes) -> np.ndarray:
    """An array from ``.npy`` bytes (a copy; no pickles)."""
    return np.load(io.BytesIO(data), allow_pickle=False)


@functools.lru_cache(maxsize=64)
def npy_header(header: bytes) -> tuple[tuple[int, ...], bool, np.dtype]:
    """``(shape, fortran_order, dtype)`` of an ``.npy`` header (magic included), parsed once.

    Every window of a dataset has the same few headers, so the parse (a ``literal_eval``)
    is cached by their bytes.
    """
    fp = io.BytesIO(header)
    try:
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp)
    except ValueError as err:
        raise NpyError(f"bad .npy header: {err}") from None
    if dtype.hasobject:
        raise NpyError("object arrays are not allowed")
    return shape, fortran, dtype


def decode_npy_view(buf: Buffer) -> np.ndarray:
    """An ``.npy`` member as a view of its bytes (no copy; writable, as the buffer is)."""
    if bytes(buf[:6]) != NPY_MAGIC or len(buf) < 10:
        raise NpyError("not an .npy member (bad magic)")
    major = int(buf[6])
    size_bytes = 2 if major == 1 else 4
    header_len = int.from_bytes(bytes(buf[8 : 8 + size_bytes]), "little")
    offset = 8 + size_bytes + header_len
    shape, fortran, dtype = npy_header(bytes(buf[:offset]))
    count = int(np.prod(shape, dtype=np.int64))
    if offset + count * dtype.itemsize != len(buf):
        raise NpyError(
            f".npy member holds {len(buf) - offset} data bytes, its header says "
            f"{count * dtype.itemsize}"
        )
    array = np.frombuffer(buf, dtype=dtype, count=count, offset=offset)
    return array.reshape(shape, order="F" if fortran else "C")
