"""Issue 4: videos are sampled with exact times and come back as time ranges."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import pytest

from xsearch import Engine, IndexOptions, Settings
from xsearch.media.video import DecodeState, sample_frames, video_thumbnail

from .conftest import TINY
from .videos import noise, solid, write_audio_only, write_video


def _stored_times(engine: Engine, path: Path) -> list[tuple[float, float, float]]:
    store = engine.store()
    state = store.states_under([os.fsencode(path)])[os.fsencode(path)]
    return [(r.t, r.t_start, r.t_end) for r in store.media_vectors(state.id)]  # type: ignore[misc]


def test_ntsc_timestamps_are_exact(tmp_path: Path) -> None:
    tb = Fraction(1, 30000)
    pts = [i * 1001 for i in range(90)]  # 3 s at 29.97 fps
    clip = tmp_path / "v" / "ntsc.mp4"
    clip.parent.mkdir()
    written = write_video(
        clip, lambda i, t: noise(i // 15), pts, time_base=tb, rate=Fraction(30000, 1001)
    )
    state = DecodeState()
    info, frames = sample_frames(os.fsencode(clip), interval=1.0, state=state)
    got = [f.t for f in frames]
    assert not state.notes
    assert info.fps == pytest.approx(29.97, abs=0.01)
    assert got and set(got) <= set(written)
    # Regular samples one second apart, plus the scene cuts every 15 frames.
    assert got[0] == 0.0 and written[30] in got and written[60] in got


def test_variable_frame_rate_and_offset_start(tmp_path: Path) -> None:
    tb = Fraction(1, 1000)
    offset = 5000  # the stream starts at 5 s
    gaps = [40, 40, 200, 33, 500, 41, 41, 700, 100, 40] * 3
    pts = [offset]
    for g in gaps:
        pts.append(pts[-1] + g)
    clip = tmp_path / "vfr.mkv"
    written = write_video(clip, lambda i, t: noise(i), pts, time_base=tb, rate=25)
    expected = {round(t - offset / 1000, 6) for t in written}
    _, frames = sample_frames(os.fsencode(clip), interval=0.5, state=DecodeState())
    got = [round(f.t, 6) for f in frames]
    assert got[0] == 0.0
    assert set(got) <= expected and len(got) >= 5


def test_static_clip_keeps_few_frames(tmp_path: Path) -> None:
    clip = tmp_path / "v" / "static.mp4"
    clip.parent.mkdir()
    write_video(
        clip,
        lambda i, t: solid((30, 120, 200)),
        list(range(0, 600)),
        time_base=Fraction(1, 10),
        rate=10,
    )
    with Engine(Settings(store=tmp_path / "s", model=TINY)) as engine:
        report = engine.index([clip.parent], IndexOptions(workers=0))
        assert report.counts["indexed"] == 1
        times = _stored_times(engine, clip)
        assert 1 <= len(times) <= 3
        # The kept frames still cover the whole minute.
        assert times[0][1] == 0.0 and times[-1][2] >= 59.0
        hit = engine.search("sky", limit=1)[0]
        assert hit.media_type == "video" and hit.duration == pytest.approx(60.0, abs=0.2)
        assert hit.segments and hit.segments[0].start == 0.0


def test_truncated_video_is_partial_and_audio_only_is_skipped(tmp_path: Path) -> None:
    folder = tmp_path / "media"
    folder.mkdir()
    clip = folder / "cut.mkv"
    write_video(
        clip, lambda i, t: noise(i // 10), list(range(100)), time_base=Fraction(1, 10), rate=10
    )
    data = clip.read_bytes()
    clip.write_bytes(data[: int(len(data) * 0.6)])
    write_audio_only(folder / "song.mp4")
    outcomes = {}
    with Engine(Settings(store=tmp_path / "s", model=TINY)) as engine:
        report = engine.index(
            [folder],
            IndexOptions(workers=0),
            on_outcome=lambda o: outcomes.__setitem__(Path(o.display).name, o),
        )
        assert outcomes["cut.mkv"].outcome == "partial", outcomes
        assert outcomes["song.mp4"].outcome == "skipped"
        assert outcomes["song.mp4"].reason == "no-video-stream"
        assert report.counts["partial"] == 1
        times = _stored_times(engine, clip)
        assert times and times[-1][0] < 8.0
        again = engine.index([folder], IndexOptions(workers=0))
        assert again.encoder_calls == 0 and again.counts["unchanged"] == 1


def test_thumbnail_of_a_frame(tmp_path: Path) -> None:
    clip = tmp_path / "t.mp4"
    write_video(
        clip,
        lambda i, t: solid((255, 0, 0)) if t < 1 else solid((0, 0, 255)),
        list(range(20)),
        time_base=Fraction(1, 10),
        rate=10,
    )
    jpeg = video_thumbnail(os.fsencode(clip), 1.5, size=64)
    from io import BytesIO

    from PIL import Image

    im = Image.open(BytesIO(jpeg)).convert("RGB")
    r, _g, b = im.getpixel((10, 10))  # type: ignore[misc]
    assert b > 200 and r < 60
