"""Telling images from videos by their first bytes, not their names."""

from __future__ import annotations

import os

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


# ISO base media brands of videos (MP4, QuickTime, 3GP, DASH, ...).
_VIDEO_BRANDS = {
    b"isom",
    b"iso2",
    b"iso4",
    b"iso5",
    b"iso6",
    b"mp41",
    b"mp42",
    b"avc1",
    b"qt  ",
    b"M4V ",
    b"M4A ",
    b"3gp4",
    b"3gp5",
    b"3gp6",
    b"3g2a",
    b"dash",
    b"MSNV",
    b"XAVC",
}


def _named_as_image(path: bytes) -> bool:
    return os.path.splitext(path)[1].lower() in (b".heic", b".heif", b".hif", b".avif")


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
        if head[8:12] in _IMAGE_BRANDS:
            return "image"
        # A brand of neither kind (a damaged one, most often) leaves it to the extension:
        # a .heic whose brand lost a bit is a broken picture, not a video FFmpeg can't open.
        return None if head[8:12] not in _VIDEO_BRANDS and _named_as_image(path) else "video"
    if head.startswith(
        (b"\x1a\x45\xdf\xa3", b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3", b"FLV", b"OggS")
    ):
        return "video"
    if head.startswith((b"\x00\x00\x00\x0cjP", b"\xff\x4f\xff\x51")):
        return "image"
    if len(head) > 188 and head[0] == 0x47:
        return "video"
    return None
