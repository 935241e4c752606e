"""HDF5's Fletcher32 checksum filter (filter 3), checked the way the HDF5 library checks it.

Why: the reader undoes the HDF5 filter pipeline itself (``nwb.py``), so it must also refuse a
chunk whose checksum fails, as h5py does ("data error detected by Fletcher32 checksum"):
otherwise a flipped byte in a checksummed file reads as a different value with no error.

HDF5 sums the chunk as big-endian 16-bit words, folding both sums to 16 bits every 360 words
(``H5_checksum_fletcher32``). Folding keeps a sum's value modulo 65535 and never turns a
positive sum into 0, so the folded result is the exact sum modulo 65535 written in 1…65535
(0 only for an all-zero chunk): here both sums are taken at once with numpy, not word by word.
The stored value is the last 4 bytes of the chunk, little-endian; files of HDF5 before 1.6.3
stored it with the bytes of each half swapped, which the library also accepts.
"""

from __future__ import annotations

import struct

import numpy as np

_MOD = 65535


#: words per chunk up to which the weighted sum fits an int64 without reducing each product
_EXACT_WORDS = 10_000_000


def checksum(data: bytes) -> int:
    """HDF5's Fletcher32 of ``data``."""
    words = np.frombuffer(data, ">u2", count=len(data) // 2).astype(np.int64)
    if len(data) % 2:  # an odd last byte counts as the high byte of a word
        words = np.append(words, data[-1] << 8)
    if not words.any():  # no positive sum, nothing folded: both 0
        return 0
    weights = np.arange(words.size, 0, -1, dtype=np.int64)  # word i is in n - i running sums
    if words.size > _EXACT_WORDS:
        words, weights = words % _MOD, weights % _MOD
        total2 = int((words * weights % _MOD).sum())
    else:
        total2 = int(np.dot(words, weights))
    sum1 = int(words.sum()) % _MOD or _MOD  # positive sums fold to 1…65535
    sum2 = total2 % _MOD or _MOD
    return (sum2 << 16) | sum1


def strip(chunk: bytes) -> bytes | None:
    """The chunk without its checksum, or ``None`` when the checksum does not match."""
    if len(chunk) < 4:
        return None
    body = chunk[:-4]
    (stored,) = struct.unpack("<I", chunk[-4:])
    value = checksum(body)
    swapped = ((value & 0x00FF00FF) << 8) | ((value >> 8) & 0x00FF00FF)
    return body if stored in (value, swapped) else None
