"""A deterministic fuzz corpus: small valid seeds of every supported format, and mutants of them.

``make_seeds`` writes one small, non-uniform file per format (stills and short clips);
``make_mutants`` derives damaged copies from them, reproducibly from ``seed``: truncations,
byte flips, junk blocks, headers that lie about dimensions, oversized PNG text chunks, and
files that reach Pillow's less-travelled decoders (SGI, DDS, a bare MPF header). Each
:class:`Mutant` says whether its damage is *certain* to leave no decodable picture (an empty
file, text named ``.png``, a cut before the header that declares the size), so that a test
can demand an error for those and only "no crash, no hang" for the rest.

Nothing here touches the network; the whole corpus takes about half a second on two cores.
"""

from __future__ import annotations

import random
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw, PngImagePlugin, TiffImagePlugin

from .hostile import png_chunk
from .videos import write_video

__all__ = [
    "SEEDS",
    "Mutant",
    "SeedUnavailableError",
    "make_mutants",
    "make_seeds",
    "video_codec",
    "video_codecs",
]

Rng = np.random.Generator


class SeedUnavailableError(RuntimeError):
    """A seed format cannot be written with the installed libraries: say so, never skip it."""


# -- content -----------------------------------------------------------------------------------


def _picture(rng: Rng, size: tuple[int, int] = (96, 72)) -> Image.Image:
    """Noise with a few solid shapes over it: structure for codecs, never a uniform image."""
    w, h = size
    im = Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8))
    draw = ImageDraw.Draw(im)
    for _ in range(4):
        x0, y0 = int(rng.integers(0, w - 8)), int(rng.integers(0, h - 8))
        x1, y1 = x0 + int(rng.integers(8, w // 2)), y0 + int(rng.integers(8, h // 2))
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=color)
    return im


def _frame_at(i: int, _t: float) -> Image.Image:
    """Frame ``i`` of every clip: a square sliding over noise that changes each frame."""
    im = _picture(np.random.default_rng(1000 + i), (64, 64))
    ImageDraw.Draw(im).rectangle((4 * i, 20, 4 * i + 16, 36), fill=(255, 255, 0))
    return im


# -- still seeds -------------------------------------------------------------------------------


def _save(im: Image.Image, path: Path, fmt: str, **params: object) -> None:
    try:
        im.save(path, fmt, **params)
    except Exception as exc:  # a missing codec must be loud: the corpus would silently shrink
        raise SeedUnavailableError(f"cannot write {path.name} as {fmt}: {exc}") from exc


def _jpeg_exif6(path: Path, rng: Rng) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x0132] = "2021:07:04 12:30:00"
    _save(_picture(rng).transpose(Image.Transpose.ROTATE_90), path, "JPEG", exif=exif.tobytes())


def _png_rgba(path: Path, rng: Rng) -> None:
    im = _picture(rng).convert("RGBA")
    im.putalpha(Image.fromarray(rng.integers(0, 256, (72, 96), dtype=np.uint8)))
    _save(im, path, "PNG")


def _png_palette(path: Path, rng: Rng) -> None:
    pal = _picture(rng).convert("P", palette=Image.Palette.ADAPTIVE, colors=32)
    _save(pal, path, "PNG", transparency=0)


def _png_grey16(path: Path, rng: Rng) -> None:
    deep = rng.integers(0, 65536, (48, 64), dtype=np.uint16)
    deep[8:40, 8:56] = np.linspace(0, 65535, 48, dtype=np.uint16)
    _save(Image.fromarray(deep), path, "PNG")


def _gif_anim(path: Path, rng: Rng) -> None:
    frames = [
        _picture(rng, (80, 60)).convert("P", palette=Image.Palette.ADAPTIVE) for _ in range(3)
    ]
    _save(frames[0], path, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def _bilevel(rng: Rng, size: tuple[int, int] = (160, 120)) -> Image.Image:
    """A scanned-page look: mostly white, black 'text' bars and a little speckle."""
    w, h = size
    page = np.ones((h, w), dtype=bool)
    for y in range(8, h - 8, 10):
        x = 8
        while x < w - 16:
            n = int(rng.integers(4, 20))
            page[y : y + 5, x : x + n] = False
            x += n + int(rng.integers(3, 8))
    page ^= rng.random((h, w)) < 0.01
    return Image.fromarray(page)


def _tiff_multipage(path: Path, rng: Rng) -> None:
    pages = [
        (_picture(rng).convert("L"), "packbits"),
        (_bilevel(rng), "group4"),
        (_picture(rng), "tiff_lzw"),
    ]
    try:
        with TiffImagePlugin.AppendingTiffWriter(str(path), new=True) as tf:
            for im, compression in pages:
                im.save(tf, "TIFF", compression=compression)
                tf.newFrame()
    except Exception as exc:
        raise SeedUnavailableError(f"cannot write a multi-page TIFF: {exc}") from exc


def _heic(path: Path, rng: Rng) -> None:
    import pillow_heif

    pillow_heif.register_heif_opener()
    _save(_picture(rng), path, "HEIF", quality=70)


def _avif(path: Path, rng: Rng) -> None:
    if "AVIF" not in Image.SAVE:
        import pillow_heif

        if hasattr(pillow_heif, "register_avif_opener"):
            pillow_heif.register_avif_opener()
    _save(_picture(rng), path, "AVIF", quality=60)


def _mpo(path: Path, rng: Rng) -> None:
    left, right = _picture(rng), _picture(rng)
    _save(left, path, "MPO", save_all=True, append_images=[right])


def _still(fmt: str, convert: str | None = None, **params: object) -> Callable[[Path, Rng], None]:
    def write(path: Path, rng: Rng) -> None:
        im = _picture(rng)
        _save(im.convert(convert) if convert else im, path, fmt, **params)

    return write


# -- video seeds -------------------------------------------------------------------------------

_CLIP_FRAMES = 12
_CLIP_RATE = 8
# Without it Matroska writes a random segment UID and the time of writing.
_BITEXACT = {"fflags": "+bitexact"}


def video_codec(candidates: tuple[str, ...]) -> str:
    """The first of ``candidates`` the installed PyAV can encode with; raises if none."""
    for name in candidates:
        try:
            av.codec.Codec(name, "w")
        except Exception:
            continue
        return name
    raise SeedUnavailableError(f"PyAV has none of the encoders {', '.join(candidates)}")


def _clip(*candidates: str) -> Callable[[Path, Rng], None]:
    def write(path: Path, _rng: Rng) -> None:
        codec = video_codec(candidates)
        if codec == "mjpeg":
            _write_mjpeg(path)
            return
        write_video(
            path,
            _frame_at,
            list(range(_CLIP_FRAMES)),
            time_base=Fraction(1, _CLIP_RATE),
            rate=_CLIP_RATE,
            size=(64, 64),
            codec=codec,
            container_options=_BITEXACT,
        )

    return write


def _write_mjpeg(path: Path) -> None:
    # write_video fixes yuv420p, which FFmpeg's MJPEG encoder refuses as non-full-range.
    with av.open(str(path), "w", options=_BITEXACT) as out:
        stream = out.add_stream("mjpeg", rate=_CLIP_RATE)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuvj420p"
        for i in range(_CLIP_FRAMES):
            frame = av.VideoFrame.from_image(_frame_at(i, i / _CLIP_RATE))
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode())


@dataclass(frozen=True)
class _Seed:
    write: Callable[[Path, Rng], None]
    kind: str
    # The container layout the mutators parse: jpeg, png, gif, bmp, tiff, webp, isobmff, ...
    layout: str
    # Video encoders to try, in order of preference.
    codecs: tuple[str, ...] = ()


def _video(layout: str, *codecs: str) -> _Seed:
    return _Seed(_clip(*codecs), "video", layout, codecs)


SEEDS: dict[str, _Seed] = {
    "jpeg_baseline.jpg": _Seed(_still("JPEG", quality=90), "image", "jpeg"),
    "jpeg_progressive.jpg": _Seed(_still("JPEG", progressive=True), "image", "jpeg"),
    "jpeg_cmyk.jpg": _Seed(_still("JPEG", "CMYK"), "image", "jpeg"),
    "jpeg_exif6.jpg": _Seed(_jpeg_exif6, "image", "jpeg"),
    "png_rgba.png": _Seed(_png_rgba, "image", "png"),
    "png_palette.png": _Seed(_png_palette, "image", "png"),
    "png_grey16.png": _Seed(_png_grey16, "image", "png"),
    "gif_anim.gif": _Seed(_gif_anim, "image", "gif"),
    "webp_lossy.webp": _Seed(_still("WEBP", quality=70), "image", "webp"),
    "webp_lossless.webp": _Seed(_still("WEBP", lossless=True), "image", "webp"),
    "tiff_lzw.tif": _Seed(_still("TIFF", compression="tiff_lzw"), "image", "tiff"),
    "tiff_g4.tif": _Seed(
        lambda p, r: _save(_bilevel(r), p, "TIFF", compression="group4"), "image", "tiff"
    ),
    "tiff_multipage.tif": _Seed(_tiff_multipage, "image", "tiff"),
    "bmp.bmp": _Seed(_still("BMP"), "image", "bmp"),
    "heic.heic": _Seed(_heic, "image", "isobmff"),
    "avif.avif": _Seed(_avif, "image", "isobmff"),
    "mpo_stereo.mpo": _Seed(_mpo, "image", "jpeg"),
    "clip_h264.mp4": _video("isobmff", "libx264", "mpeg4"),
    "clip_h264.mkv": _video("ebml", "libx264", "mpeg4"),
    "clip_mpeg4.avi": _video("riff", "mpeg4"),
    "clip_mjpeg.avi": _video("riff", "mjpeg"),
    "clip_h264.mov": _video("isobmff", "libx264", "mpeg4"),
    "clip_vp9.webm": _video("ebml", "libvpx-vp9", "libvpx"),
    "clip_wmv2.wmv": _video("asf", "wmv2", "wmv1", "msmpeg4"),
    "clip_msmpeg4.asf": _video("asf", "msmpeg4", "msmpeg4v2", "wmv2"),
}


def make_seeds(root: Path) -> dict[str, str]:
    """Write every seed into ``root``; returns file name → "image" or "video".

    Raises :class:`SeedUnavailableError` when a format cannot be written here.
    """
    root.mkdir(parents=True, exist_ok=True)
    for i, (name, spec) in enumerate(SEEDS.items()):
        spec.write(root / name, np.random.default_rng(i))
    return {name: spec.kind for name, spec in SEEDS.items()}


def video_codecs() -> dict[str, str]:
    """Video seed name → the encoder its clip is written with here (fallbacks included)."""
    return {name: video_codec(spec.codecs) for name, spec in SEEDS.items() if spec.codecs}


# -- layouts: where each format keeps its header -----------------------------------------------


@dataclass(frozen=True)
class _Layout:
    # Cutting the file anywhere before this offset loses what declares the picture's size.
    dims_end: int
    # Byte ranges that are header (metadata, tables), as opposed to coded pixels.
    header: tuple[tuple[int, int], ...]


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_segments(data: bytes) -> Iterator[tuple[int, int, int]]:
    """(marker, offset, end) of each segment up to and including the first SOS."""
    i = 2
    while i + 4 <= len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        end = i + 2 + struct.unpack(">H", data[i + 2 : i + 4])[0]
        yield marker, i, end
        if marker == 0xDA:
            return
        i = end


def _png_chunks(data: bytes) -> Iterator[tuple[bytes, int, int]]:
    """(type, offset, end) of each chunk."""
    i = 8
    while i + 8 <= len(data):
        (length,) = struct.unpack(">I", data[i : i + 4])
        yield data[i + 4 : i + 8], i, i + 12 + length
        i += 12 + length


def _iso_boxes(data: bytes) -> Iterator[tuple[bytes, int, int]]:
    i = 0
    while i + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[i : i + 8])
        if size == 1:
            (size,) = struct.unpack(">Q", data[i + 8 : i + 16])
        size = size or len(data) - i
        yield kind, i, i + size
        i += size


def _ebml_vint(data: bytes, i: int, *, keep_marker: bool) -> tuple[int, int]:
    first = data[i]
    n = 9 - first.bit_length()
    value = first if keep_marker else first & (0xFF >> n)
    for b in data[i + 1 : i + n]:
        value = value << 8 | b
    return value, i + n


def _ebml_elements(data: bytes, i: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(id, offset, payload offset, end) of the elements between ``i`` and ``end``."""
    while i < end:
        ident, j = _ebml_vint(data, i, keep_marker=True)
        size, k = _ebml_vint(data, j, keep_marker=False)
        stop = min(end, k + size)
        yield ident, i, k, stop
        i = stop


def _tiff_ifd0(data: bytes) -> tuple[str, int, int]:
    order = "<" if data[:2] == b"II" else ">"
    (ifd,) = struct.unpack(order + "I", data[4:8])
    (count,) = struct.unpack(order + "H", data[ifd : ifd + 2])
    return order, ifd, count


def _layout(data: bytes, kind: str) -> _Layout:
    n = len(data)
    if kind == "jpeg":
        segs = list(_jpeg_segments(data))
        sof = next(end for m, _, end in segs if m in _SOF)
        return _Layout(sof, ((0, segs[-1][2]),))
    if kind == "png":
        idat = next(off for t, off, _ in _png_chunks(data) if t == b"IDAT")
        return _Layout(33, ((0, idat + 8),))
    if kind == "gif":
        return _Layout(10, ((0, 13 + (3 << ((data[10] & 7) + 1) if data[10] & 0x80 else 0)),))
    if kind == "bmp":
        return _Layout(26, ((0, struct.unpack("<I", data[10:14])[0]),))
    if kind == "tiff":
        _, ifd, count = _tiff_ifd0(data)
        end = ifd + 2 + 12 * count + 4
        return _Layout(end if ifd == 8 else max(end, ifd), ((0, 8), (ifd, end)))
    if kind == "webp":
        return _Layout(30, ((0, 30),))
    if kind == "isobmff":
        boxes = [(k, o, e) for k, o, e in _iso_boxes(data) if k in (b"ftyp", b"meta", b"moov")]
        return _Layout(max(e for _, _, e in boxes), tuple((o, e) for _, o, e in boxes))
    if kind == "ebml":
        _, (_, _, seg, seg_end) = list(_ebml_elements(data, 0, n))[:2]
        parts = list(_ebml_elements(data, seg, seg_end))
        tracks = next(e for i, _, _, e in parts if i == 0x1654AE6B)
        cluster = next(o for i, o, _, _ in parts if i == 0x1F43B675)
        return _Layout(tracks, ((0, cluster),))
    if kind == "riff":
        hdrl = 12 + 8 + struct.unpack("<I", data[16:20])[0]
        return _Layout(hdrl, ((0, hdrl),))
    if kind == "asf":
        (size,) = struct.unpack("<Q", data[16:24])
        return _Layout(size, ((0, size),))
    raise ValueError(f"no layout for {kind!r}")


# -- dimension lies ----------------------------------------------------------------------------


# Each patches the stored width and height in place, clamped to what the field can hold, and
# returns what it wrote.
def _lie_jpeg(data: bytearray, w: int, h: int) -> tuple[int, int]:
    sof = next(off for m, off, _ in _jpeg_segments(bytes(data)) if m in _SOF)
    w, h = min(w, 65535), min(h, 65535)
    data[sof + 5 : sof + 9] = struct.pack(">HH", h, w)
    return w, h


def _lie_png(data: bytearray, w: int, h: int) -> tuple[int, int]:
    data[16:24] = struct.pack(">II", w, h)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return w, h


def _lie_gif(data: bytearray, w: int, h: int) -> tuple[int, int]:
    w, h = min(w, 65535), min(h, 65535)
    data[6:10] = struct.pack("<HH", w, h)
    return w, h


def _lie_bmp(data: bytearray, w: int, h: int) -> tuple[int, int]:
    data[18:26] = struct.pack("<ii", w, h)
    return w, h


def _lie_tiff(data: bytearray, w: int, h: int) -> tuple[int, int]:
    order, ifd, count = _tiff_ifd0(bytes(data))
    wrote = [w, h]
    for k in range(count):
        at = ifd + 2 + 12 * k
        tag, typ = struct.unpack(order + "HH", data[at : at + 4])
        if tag in (256, 257):
            value = (w if tag == 256 else h) if typ != 3 else min(w if tag == 256 else h, 65535)
            data[at + 8 : at + 12] = struct.pack(order + ("H2x" if typ == 3 else "I"), value)
            wrote[tag - 256] = value
    return wrote[0], wrote[1]


def _lie_webp(data: bytearray, w: int, h: int) -> tuple[int, int]:
    chunk = bytes(data[12:16])
    if chunk == b"VP8 ":  # keyframe header: 14-bit sizes after the 9d 01 2a start code
        w, h = min(w, 16383), min(h, 16383)
        data[26:30] = struct.pack("<HH", w, h)
    elif chunk == b"VP8L":  # 14 bits each of width-1 and height-1: no zero
        w, h = min(max(w, 1), 16384), min(max(h, 1), 16384)
        bits = struct.unpack("<I", data[21:25])[0] & ~0x0FFFFFFF
        data[21:25] = struct.pack("<I", bits | (w - 1) | (h - 1) << 14)
    else:  # VP8X: 24 bits each of width-1 and height-1
        w, h = min(max(w, 1), 1 << 24), min(max(h, 1), 1 << 24)
        data[24:30] = (w - 1).to_bytes(3, "little") + (h - 1).to_bytes(3, "little")
    return w, h


_LIARS: dict[str, Callable[[bytearray, int, int], tuple[int, int]]] = {
    "jpeg": _lie_jpeg,
    "png": _lie_png,
    "gif": _lie_gif,
    "bmp": _lie_bmp,
    "tiff": _lie_tiff,
    "webp": _lie_webp,
}
_LIES = {"huge": (1_000_000, 1_000_000), "zero": (0, 0), "wide": (65_535, 1)}


# -- mutants -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mutant:
    """One damaged file and how it came about."""

    name: str
    # The seed it was made from, or None for files built from scratch.
    source: str | None
    # What was done to it, with the offsets and sizes involved.
    mutation: str
    # True when the damage leaves nothing decodable (the only right outcome is an error).
    certain: bool
    kind: str


Mutation = Callable[[bytes, _Layout, Rng], tuple[bytes, str, bool] | None]


def _in_spans(spans: tuple[tuple[int, int], ...], rng: Rng, n: int) -> np.ndarray:
    starts = [s for s, e in spans if e > s]
    ends = [e for s, e in spans if e > s]
    pick = rng.integers(0, len(starts), n)
    return np.array([int(rng.integers(starts[p], ends[p])) for p in pick])


def _truncate_header(data: bytes, lay: _Layout, rng: Rng) -> tuple[bytes, str, bool]:
    cut = int(rng.integers(1, min(lay.dims_end, len(data))))
    what = f"truncated to {cut} of {len(data)} bytes, before the size is declared ({lay.dims_end})"
    return data[:cut], what, True


def _truncate(data: bytes, lay: _Layout, rng: Rng) -> tuple[bytes, str, bool]:
    frac = float(rng.choice([0.1, 0.25, 0.5, 0.75, 0.9, 0.99]))
    cut = max(1, int(len(data) * frac))
    return data[:cut], f"truncated to {cut} of {len(data)} bytes ({frac:.0%})", cut < lay.dims_end


def _flip(where: str) -> Mutation:
    def mutate(data: bytes, lay: _Layout, rng: Rng) -> tuple[bytes, str, bool] | None:
        spans = lay.header if where == "header" else _body(lay, len(data))
        if not spans:
            return None
        out = bytearray(data)
        at = _in_spans(spans, rng, int(rng.integers(1, 9)))
        for i in at:
            out[i] ^= 1 << int(rng.integers(0, 8))
        return bytes(out), f"bit flips in the {where} at {sorted(at.tolist())}", False

    return mutate


def _body(lay: _Layout, n: int) -> tuple[tuple[int, int], ...]:
    edges = sorted(lay.header)
    spans, at = [], 0
    for s, e in edges:
        if s > at:
            spans.append((at, s))
        at = max(at, e)
    if at < n:
        spans.append((at, n))
    return tuple(spans)


def _junk(overwrite: bool) -> Mutation:
    def mutate(data: bytes, lay: _Layout, rng: Rng) -> tuple[bytes, str, bool]:
        body = _body(lay, len(data)) or ((8, len(data)),)
        at = int(_in_spans(body, rng, 1)[0])
        block = rng.integers(0, 256, int(rng.integers(16, 513)), dtype=np.uint8).tobytes()
        tail = data[at + len(block) :] if overwrite else data[at:]
        verb = "overwrote" if overwrite else "inserted"
        return data[:at] + block + tail, f"{verb} {len(block)} junk bytes at {at}", False

    return mutate


def _dims(lie: str) -> Callable[[str], Mutation | None]:
    def for_layout(kind: str) -> Mutation | None:
        liar = _LIARS.get(kind)
        if liar is None:
            return None

        def mutate(data: bytes, _lay: _Layout, _rng: Rng) -> tuple[bytes, str, bool]:
            out = bytearray(data)
            w, h = liar(out, *_LIES[lie])
            return bytes(out), f"header claims {lie} dimensions {w}×{h}", False

        return mutate

    return for_layout


_GENERIC: dict[str, Mutation] = {
    "trunc": _truncate,
    "fliphdr": _flip("header"),
    "flipbody": _flip("body"),
    "insjunk": _junk(overwrite=False),
    "owjunk": _junk(overwrite=True),
}


def _mutations_for(kind: str, per_seed: int, rng: random.Random) -> list[tuple[str, Mutation]]:
    """A header cut, a dimension lie where the format has one, then other damage: no lie
    twice (it would give the same file), generic damage again only once all have been used."""
    lies = [(f"dims{lie}", m) for lie in _LIES if (m := _dims(lie)(kind))]
    rng.shuffle(lies)
    chosen: list[tuple[str, Mutation]] = [("trunchdr", _truncate_header), *lies[:1]]
    pool = list(_GENERIC.items()) + lies[1:]
    while len(chosen) < per_seed:
        rng.shuffle(pool)
        chosen += pool
        pool = list(_GENERIC.items())
    return chosen[:per_seed]


def make_mutants(seeds_dir: Path, out: Path, *, per_seed: int = 4, seed: int = 0) -> list[Mutant]:
    """Write ``per_seed`` mutants of each seed in ``seeds_dir``, plus the hand-built hostile
    files, into ``out``. The same ``seed`` gives byte-identical files."""
    out.mkdir(parents=True, exist_ok=True)
    mutants: list[Mutant] = []
    for name, spec in SEEDS.items():
        data = (seeds_dir / name).read_bytes()
        lay = _layout(data, spec.layout)
        stem, ext = name.rsplit(".", 1)
        salt = zlib.crc32(name.encode())
        picker = random.Random(seed * 1_000_003 + salt)
        for n, (label, mutate) in enumerate(_mutations_for(spec.layout, per_seed, picker)):
            result = mutate(data, lay, np.random.default_rng([seed, salt, n]))
            if result is None:
                continue
            body, what, certain = result
            file = f"{stem}.{n}-{label}.{ext}"
            (out / file).write_bytes(body)
            mutants.append(Mutant(file, name, what, certain, spec.kind))
    for file, body, source, what, certain in _hostile(seeds_dir, seed):
        (out / file).write_bytes(body)
        mutants.append(
            Mutant(file, source, what, certain, "video" if file.endswith(".mp4") else "image")
        )
    return mutants


# -- hand-built hostile files ------------------------------------------------------------------

# Decompresses to 16 × MAX_TEXT_CHUNK, from about 16 KiB on disk.
_TEXT_BOMB_BYTES = 16 * PngImagePlugin.MAX_TEXT_CHUNK


def _zeros_deflated(n: int) -> bytes:
    packer = zlib.compressobj(9)
    block = bytes(1 << 20)
    return b"".join(packer.compress(block) for _ in range(n >> 20)) + packer.flush()


def _png_text_bombs(png: bytes) -> Iterator[tuple[str, bytes, str]]:
    idat = next(off for t, off, _ in _png_chunks(png) if t == b"IDAT")
    deflated = _zeros_deflated(_TEXT_BOMB_BYTES)
    chunks = {
        "ztxt": png_chunk(b"zTXt", b"Comment\x00\x00" + deflated),
        "itxt": png_chunk(b"iTXt", b"Comment\x00\x01\x00\x00\x00" + deflated),
    }
    for label, chunk in chunks.items():
        what = f"{label} chunk inflating to {_TEXT_BOMB_BYTES:,} bytes before IDAT"
        yield f"png_rgba.{label}-bomb.png", png[:idat] + chunk + png[idat:], what


# (compression, bytes per channel, dimension, channels): modes Pillow accepts, so that the
# damage reaches its RLE, raw and 16-bit decoders; compression 2 is neither RLE nor raw.
_SGI_KINDS = ((1, 1, 3, 3), (0, 2, 3, 3), (0, 1, 3, 4), (2, 1, 2, 1))


def _sgi(rng: Rng, compression: int, bpc: int, dim: int, zsize: int) -> tuple[bytes, str]:
    """An SGI header of a valid mode and random size, with random data far too short for it
    (for RLE, the offset tables themselves are random)."""
    xs, ys = (int(v) for v in rng.integers(16, 400, 2))
    head = struct.pack(">HBBHHHH", 474, compression, bpc, dim, xs, ys, zsize).ljust(512, b"\x00")
    body = rng.integers(0, 256, int(rng.integers(0, 600)), dtype=np.uint8).tobytes()
    what = f"SGI compression={compression} bpc={bpc} {xs}×{ys}×{zsize}, {len(body)} data bytes"
    return head + body, what


def _dds(width: int, height: int, fourcc: bytes | None, data_len: int) -> bytes:
    """A DDS header for a ``width``×``height`` texture followed by ``data_len`` zero bytes."""
    flags = 0x1 | 0x2 | 0x4 | 0x1000
    if fourcc:
        pixel_format = struct.pack("<II4s5I", 32, 0x4, fourcc, 0, 0, 0, 0, 0)
    else:
        pixel_format = struct.pack(
            "<II4s5I", 32, 0x41, b"\0\0\0\0", 32, 0xFF0000, 0xFF00, 0xFF, 0xFF000000
        )
    header = struct.pack("<7I", 124, flags, height, width, 0, 0, 0) + bytes(44)
    header += pixel_format + struct.pack("<5I", 0x1000, 0, 0, 0, 0)
    return b"DDS " + header + bytes(data_len)


def _mpf_only(mpo: bytes) -> tuple[bytes, bytes]:
    """The MPO's first frame cut after its MPF (APP2) segment, and after its SOS header."""
    segs = list(_jpeg_segments(mpo))
    app2 = next(end for m, _, end in segs if m == 0xE2)
    return mpo[:app2] + b"\xff\xd9", mpo[: segs[-1][2]] + b"\xff\xd9"


def _hostile(seeds_dir: Path, seed: int) -> Iterator[tuple[str, bytes, str | None, str, bool]]:
    """(name, bytes, source seed, what, certain) of the files built by hand."""
    rng = np.random.default_rng([seed, 77])
    for ext in ("jpg", "png", "mp4"):
        yield f"empty.{ext}", b"", None, "empty file", True
    text = b"This is not a picture.\nJust some notes, saved with the wrong name.\n" * 4
    yield "not_an_image.png", text, None, "a text file named .png", True
    png = (seeds_dir / "png_rgba.png").read_bytes()
    for name, body, what in _png_text_bombs(png):
        yield name, body, "png_rgba.png", what, False
    for n, sgi_kind in enumerate(_SGI_KINDS):
        body, what = _sgi(rng, *sgi_kind)
        for ext in ("sgi", "jpg"):
            yield f"garbage_sgi{n}.{ext}", body, None, what, True
    textures = [
        ("dxt1", 1024, 1024, b"DXT1", 1000),
        ("rgba", 512, 512, None, 600),
        ("huge", 16384, 16384, b"DXT5", 256),
    ]
    for label, w, h, fourcc, size in textures:
        what = f"DDS claiming a {w}×{h} {label} texture with {size} data bytes"
        for ext in ("dds", "jpg"):
            yield f"garbage_dds_{label}.{ext}", _dds(w, h, fourcc, size), None, what, True
    bare, headers = _mpf_only((seeds_dir / "mpo_stereo.mpo").read_bytes())
    for ext in ("mpo", "jpg"):
        yield f"garbage_mpf_only.{ext}", bare, "mpo_stereo.mpo", "MPF header, no frame", True
        what = "MPF and SOS headers of frame 1, no scan data, no frame 2"
        yield f"garbage_mpf_noscan.{ext}", headers, "mpo_stereo.mpo", what, True
