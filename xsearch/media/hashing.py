"""Content hashes that identify a file wherever it moves."""

from __future__ import annotations

import hashlib

__all__ = ["SAMPLE_ABOVE", "content_hash"]

#: Files above this size are hashed by samples (size + head + middle + tail), not read whole.
SAMPLE_ABOVE = 16 * 1024 * 1024
_SAMPLE = 1024 * 1024


def content_hash(path: bytes, size: int | None = None) -> str:
    """BLAKE2b of the content: whole for files up to 16 MiB, sampled above.

    Sampling keeps re-hashing of large videos cheap; the size is part of the digest so that
    two sampled files only collide when their size and the three sampled MiB agree.
    """
    h = hashlib.blake2b(digest_size=20)
    with open(path, "rb") as fh:
        if size is None:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(0)
        if size <= SAMPLE_ABOVE:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
            return h.hexdigest()
        h.update(size.to_bytes(8, "little"))
        for offset in (0, size // 2 - _SAMPLE // 2, size - _SAMPLE):
            fh.seek(offset)
            h.update(fh.read(_SAMPLE))
    return "s:" + h.hexdigest()
