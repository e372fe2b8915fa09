"""Telling images from videos by their first bytes, not their names."""

from __future__ import annotations

__all__ = ["sniff"]

_IMAGE_BRANDS = {
    b"heic",
    b"heix",
    b"hevc",
    b"hevx",
    b"heim",
    b"heis",
    b"mif1",
    b"msf1",
    b"avif",
    b"avis",
}


def sniff(path: bytes) -> str | None:
    """'image', 'video', or None when the header is not one xsearch recognises."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(32)
    except OSError:
        return None
    if head.startswith(
        (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM", b"II*\x00", b"MM\x00*", b"8BPS")
    ):
        return "image"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "video"
    if head[4:8] == b"ftyp":
        return "image" if head[8:12] in _IMAGE_BRANDS else "video"
    if head.startswith(
        (b"\x1a\x45\xdf\xa3", b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3", b"FLV", b"OggS")
    ):
        return "video"
    if head.startswith((b"\x00\x00\x00\x0cjP", b"\xff\x4f\xff\x51")):
        return "image"
    if len(head) > 188 and head[0] == 0x47:
        return "video"
    return None
