"""Does keyword fusion (``--hybrid``) help? Precision@10 with and without it (issue 7).

    python -m bench.hybrid_fusion

The same generated pictures (8 classes × 12, bundled toy model) are laid out three ways,
and every class is searched by its English and its Chinese name:

* ``camera names``: every file is ``DCIM/100CAMERA/IMG_nnnn.jpg``, so no word in a path
  says anything about its content;
* ``named folders``: half the pictures of each class sit in a folder named after it, in
  English or Chinese ("2023 cat photos", "小猫 相册"), the rest as above;
* ``misleading``: like ``named folders``, but a quarter of those folders hold pictures of
  another class than their name says.

Prints the table and writes JSON to bench/results/hybrid_fusion.json.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from xsearch import Engine, IndexOptions, Settings
from xsearch.synth import class_by_key, render_scene

RESULTS = Path(__file__).parent / "results"
KEYS = ("cat", "dog", "car", "tree", "apple", "fish", "house", "flower")
PER_CLASS = 12


def _layout(root: Path, kind: str) -> dict[Path, str]:
    """Write the pictures; returns each file's true class."""
    rng = np.random.default_rng(3)
    truth: dict[Path, str] = {}
    n = 0
    for k, key in enumerate(KEYS):
        cls = class_by_key(key)
        for i in range(PER_CLASS):
            folder = root / "DCIM" / "100CAMERA"
            if kind != "camera names" and i % 2 == 0:
                shown_key = key
                if kind == "misleading" and i % 8 == 0:
                    shown_key = KEYS[(k + 1) % len(KEYS)]
                shown = class_by_key(shown_key)
                folder = root / (
                    f"2023 {shown.en[0]} photos" if i % 4 == 0 else f"{shown.zh[0]} 相册"
                )
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"IMG_{n:04d}.jpg"
            render_scene(rng, [cls], 96, split="heldout").save(path, quality=90)
            truth[path] = key
            n += 1
    return truth


def _precision(engine: Engine, truth: dict[Path, str], hybrid: bool) -> float:
    scores = []
    for key in KEYS:
        cls = class_by_key(key)
        for text in (cls.en[0], cls.zh[0]):
            hits = engine.search(text, limit=10, hybrid=hybrid)
            scores.append(sum(truth[Path(h.path)] == key for h in hits) / 10)
    return float(np.mean(scores))


def main() -> None:
    rows = []
    for kind in ("camera names", "named folders", "misleading"):
        work = Path(tempfile.mkdtemp(prefix="xsearch-hybrid-"))
        try:
            truth = _layout(work / "pictures", kind)
            with Engine(Settings(store=work / "store", model="toy-bilingual", device="cpu")) as e:
                e.index([work / "pictures"], IndexOptions(workers=0))
                row = {
                    "layout": kind,
                    "vectors": round(_precision(e, truth, hybrid=False), 3),
                    "hybrid": round(_precision(e, truth, hybrid=True), 3),
                }
        finally:
            shutil.rmtree(work, ignore_errors=True)
        rows.append(row)
        print(
            f"{row['layout']:15} precision@10  vectors {row['vectors']:.3f}  hybrid {row['hybrid']:.3f}"
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "hybrid_fusion.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
