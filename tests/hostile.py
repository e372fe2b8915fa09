"""A corpus of hostile and awkward inputs, generated on the fly."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def quadrant_image() -> Image.Image:
    """64×48, red in the top-left quadrant, blue elsewhere: orientation is visible."""
    im = Image.new("RGB", (64, 48), (0, 0, 255))
    im.paste((255, 0, 0), (0, 0, 32, 24))
    return im


# For EXIF orientation n, the transform that turns the upright picture into what is stored.
_STORED = {
    1: [],
    2: [Image.Transpose.FLIP_LEFT_RIGHT],
    3: [Image.Transpose.ROTATE_180],
    4: [Image.Transpose.FLIP_TOP_BOTTOM],
    5: [Image.Transpose.TRANSPOSE],
    6: [Image.Transpose.ROTATE_90],
    7: [Image.Transpose.TRANSVERSE],
    8: [Image.Transpose.ROTATE_270],
}


def oriented_jpeg(path: Path, orientation: int) -> None:
    im = quadrant_image()
    for op in _STORED[orientation]:
        im = im.transpose(op)
    exif = Image.Exif()
    exif[0x0112] = orientation
    im.save(path, "JPEG", quality=95, exif=exif.tobytes())


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def pixel_bomb(path: Path) -> None:
    """A 57-byte PNG whose header claims 3,000,000 × 48 pixels."""
    header = b"\x89PNG\r\n\x1a\n" + png_chunk(
        b"IHDR", struct.pack(">IIBBBBB", 3_000_000, 48, 8, 2, 0, 0, 0)
    )
    body = png_chunk(b"IDAT", zlib.compress(b"\x00" * 4)[:12])
    data = (header + body)[:57]
    path.write_bytes(data.ljust(57, b"\x00"))


def make_corpus(root: Path) -> dict[str, str]:
    """Write every hostile input below ``root``; returns file name → expected outcome."""
    root.mkdir(parents=True, exist_ok=True)
    expected: dict[str, str] = {}
    rng = np.random.default_rng(5)
    photo = Image.fromarray((rng.random((120, 160, 3)) * 255).astype(np.uint8))

    (root / "zero.jpg").write_bytes(b"")
    expected["zero.jpg"] = "failed"

    buf = io.BytesIO()
    photo.save(buf, "JPEG", quality=90)
    (root / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) * 2 // 3])
    expected["truncated.jpg"] = "partial"

    buf = io.BytesIO()
    photo.save(buf, "PNG")
    (root / "truncated.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    expected["truncated.png"] = "partial"

    (root / "text.jpg").write_text("this is not a picture\n")
    expected["text.jpg"] = "skipped"

    pixel_bomb(root / "bomb.png")
    expected["bomb.png"] = "failed"

    photo.convert("CMYK").save(root / "cmyk.jpg", "JPEG")
    expected["cmyk.jpg"] = "indexed"

    deep = (np.linspace(0, 65535, 64 * 48).reshape(48, 64)).astype(np.uint16)
    Image.fromarray(deep).save(root / "sixteen.png")
    expected["sixteen.png"] = "indexed"

    pal = photo.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    pal.info["transparency"] = 0
    pal.save(root / "palette.png", transparency=0)
    expected["palette.png"] = "indexed"

    for n in range(1, 9):
        oriented_jpeg(root / f"orient{n}.jpg", n)
        expected[f"orient{n}.jpg"] = "indexed"

    frames = [Image.new("RGB", (40, 30), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    frames[0].save(root / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    expected["anim.gif"] = "indexed"

    try:
        import pillow_heif

        pillow_heif.register_heif_opener()
        photo.save(root / "phone.heic", quality=80)
        expected["phone.heic"] = "indexed"
    except Exception as exc:  # an encoder-less libheif build: make that visible, not silent
        raise RuntimeError(f"cannot write a HEIC test file: {exc}") from exc

    photo.save(root / "really-png.jpg", "PNG")
    expected["really-png.jpg"] = "indexed"

    names = [
        "with space.jpg",
        "猫の写真.jpg",
        "🐱 emoji.jpg",
        "-leading-dash.jpg",
        "x" * 200 + ".jpg",
    ]
    for name in names:
        photo.save(root / name, "JPEG")
        expected[name] = "indexed"
    raw = os.fsencode(root) + b"/latin1-\xe9t\xe9.jpg"
    with open(raw, "wb") as fh:
        photo.save(fh, "JPEG")
    expected["latin1-\ufffdt\ufffd.jpg"] = "indexed"

    loop_dir = root / "loop"
    loop_dir.mkdir()
    photo.save(loop_dir / "inside.jpg", "JPEG")
    expected["inside.jpg"] = "indexed"
    (loop_dir / "back").symlink_to(root, target_is_directory=True)
    (root / "dangling.jpg").symlink_to(root / "nowhere.jpg")
    expected["dangling.jpg"] = "skipped"

    (root / ".hidden.jpg").write_bytes(b"")
    (root / ".DS_Store").write_bytes(b"junk")
    return expected
