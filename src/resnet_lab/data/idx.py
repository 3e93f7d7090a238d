"""A pure reader for the IDX format of MNIST and Fashion-MNIST (LeCun et al., "The MNIST database").

An IDX file is a 4-byte magic number ``0x00 0x00 <dtype code> <ndim>``, then ``ndim`` big-endian
uint32 dimensions, then the data in row-major order. Files may be gzip-compressed (``.gz``).
The reader checks the magic number, the dimensions and the data length, and names the file in
every error, so a half-downloaded or mislabelled file fails loudly instead of training on garbage.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

__all__ = ["IDX_DTYPES", "IDXError", "read_idx", "write_idx"]

# dtype code (third magic byte) -> numpy dtype; IDX data are big-endian.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


class IDXError(ValueError):
    """A file is not a valid IDX file (bad magic number, bad dimensions, truncated data)."""


def _read_bytes(path: Path) -> bytes:
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:  # zlib.error: a damaged deflate stream (not an OSError)
        raise IDXError(
            f"cannot read IDX file {path}: {e}. The file is damaged or incomplete; "
            "delete it and get it again (see docs/DATA.md)."
        ) from e


def read_idx(path: str | os.PathLike, *, expected_ndim: int | None = None) -> np.ndarray:
    """Read one IDX file (plain or ``.gz``) into a numpy array of its stored shape.

    Args:
        path: the file, e.g. ``train-images-idx3-ubyte.gz``.
        expected_ndim: if given, the number of dimensions the file must have (3 for images,
            1 for labels).

    Returns:
        The array in native byte order (``uint8`` for (Fashion-)MNIST).

    Raises:
        IDXError: bad magic number, unexpected number of dimensions, or truncated/extra data;
            the message names the file.
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise IDXError(f"IDX file {path} is truncated: {len(raw)} bytes, shorter than the 4-byte header")
    zero0, zero1, code, ndim = raw[0], raw[1], raw[2], raw[3]
    if raw[:2] == b"\x1f\x8b":  # gzip's own magic: a compressed file under a plain name
        raise IDXError(f"{path} is gzip-compressed but its name does not end in .gz: rename it to {path.name}.gz "
                       f"(or gunzip it)")
    if zero0 != 0 or zero1 != 0 or code not in IDX_DTYPES or ndim == 0:
        raise IDXError(
            f"{path} is not an IDX file: magic number {raw[:4].hex()} "
            f"(expected 0000 + dtype code in {sorted(hex(c) for c in IDX_DTYPES)} + ndim >= 1, "
            "e.g. 00000803 for images, 00000801 for labels)"
        )
    if expected_ndim is not None and ndim != expected_ndim:
        raise IDXError(f"IDX file {path} has {ndim} dimensions, expected {expected_ndim}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise IDXError(f"IDX file {path} is truncated inside its header ({len(raw)} of {header} bytes)")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = IDX_DTYPES[code]
    expected = math.prod(dims) * dtype.itemsize  # Python ints: 2^32-1 x 3 does not wrap around
    got = len(raw) - header
    if got < expected:
        raise IDXError(
            f"IDX file {path} is truncated: dimensions {dims} need {expected} data bytes, "
            f"found {got}. Delete it and get it again (see docs/DATA.md)."
        )
    if got > expected:
        raise IDXError(f"IDX file {path} has {got - expected} bytes beyond its dimensions {dims}")
    arr = np.frombuffer(raw, dtype=dtype, count=expected // dtype.itemsize, offset=header)
    return arr.reshape(dims).astype(dtype.newbyteorder("="), copy=True)


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write ``array`` as an IDX file (gzip-compressed when ``path`` ends in ``.gz``).

    Args:
        path: destination file.
        array: uint8/int8/int16/int32/float32/float64 data, 1 to 255 dimensions.

    Raises:
        ValueError: a dtype IDX has no code for, or a 0-dimensional array (its header would read
            as "not an IDX file").
    """
    array = np.asarray(array)
    codes = {np.dtype(v).newbyteorder("="): k for k, v in IDX_DTYPES.items()}
    dt = array.dtype.newbyteorder("=")
    if dt not in codes:
        raise ValueError(f"IDX cannot store dtype {array.dtype}; expected one of {sorted(map(str, codes))}")
    if not 1 <= array.ndim <= 255:  # the header's ndim byte; read_idx (and every IDX reader) refuses 0
        raise ValueError(f"IDX stores 1 to 255 dimensions, got a {array.ndim}-dimensional array; "
                         "reshape it, e.g. array.reshape(1)")
    code = codes[dt]
    payload = (
        bytes([0, 0, code, array.ndim])
        + struct.pack(f">{array.ndim}I", *array.shape)
        + array.astype(IDX_DTYPES[code], copy=False).tobytes()
    )
    path = Path(path)
    if path.name.endswith(".gz"):
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)
