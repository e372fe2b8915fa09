"""How good are the zero-shot tags? (issue 22)

    python -m bench.tags [--per-class 20]

With the bundled toy model and the shipped vocabulary (3,184 concepts), on generated
held-out emoji scenes (``xsearch.tag_eval``):

1. calibration: thresholds for the softmax and the margin score picked for the best
   micro-F1 on 1- and 2-object scenes of one seed, scored on another seed;
2. the top tag's precision and recall per class, English and Chinese, on single-object
   scenes (``--per-class`` pictures of each of the 49 classes).

Prints both tables and writes JSON to bench/results/tags.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from xsearch.labels import LANGUAGES
from xsearch.tag_eval import TOP_SEED, calibration_table, embed_scenes, top_tag_figures, toy_tagger

RESULTS = Path(__file__).parent / "results"
CALIBRATION_SEED, TEST_SEED = 101, 202


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-class", type=int, default=20)
    parser.add_argument(
        "--full-vocabulary",
        action="store_true",
        help="all 3,184 concepts instead of the 49 that the toy model knows",
    )
    args = parser.parse_args()
    encoder, tagger = toy_tagger(full=args.full_vocabulary)
    print(f"vocabulary: {len(tagger.banks['en'].keys)} concepts")
    calibrate = embed_scenes(encoder, per_class=10, seed=CALIBRATION_SEED, two_object_prob=0.3)
    test = embed_scenes(encoder, per_class=10, seed=TEST_SEED, two_object_prob=0.3)
    table = calibration_table(tagger, calibrate, test)
    print(
        f"logit scale {tagger.logit_scale:.2f}; calibration (threshold on seed "
        f"{CALIBRATION_SEED}, scored on seed {TEST_SEED}, {len(test.truth)} scenes)"
    )
    print(f"{'method':8} {'lang':4} {'threshold':>10} {'precision':>9} {'recall':>7} {'F1':>6}")
    for method, langs in table.items():
        for lang, row in langs.items():
            print(
                f"{method:8} {lang:4} {row['threshold']:10.4f} {row['precision']:9.3f} "
                f"{row['recall']:7.3f} {row['f1']:6.3f}"
            )
    single = embed_scenes(encoder, per_class=args.per_class, seed=TOP_SEED)
    figures = {lang: top_tag_figures(tagger, single, lang) for lang in LANGUAGES}
    print(f"\ntop tag, {args.per_class} single-object scenes per class (seed {TOP_SEED})")
    print(f"{'class':12} {'en P':>6} {'en R':>6} {'zh P':>6} {'zh R':>6}")
    for en, zh in zip(figures["en"], figures["zh"], strict=True):
        print(
            f"{en.key:12} {en.precision:6.2f} {en.recall:6.2f} {zh.precision:6.2f} {zh.recall:6.2f}"
        )
    macro = {
        lang: {
            "precision": sum(f.precision for f in rows) / len(rows),
            "recall": sum(f.recall for f in rows) / len(rows),
        }
        for lang, rows in figures.items()
    }
    for lang, m in macro.items():
        print(f"macro {lang}: precision {m['precision']:.3f} recall {m['recall']:.3f}")
    RESULTS.mkdir(exist_ok=True)
    name = "tags_full.json" if args.full_vocabulary else "tags.json"
    (RESULTS / name).write_text(
        json.dumps(
            {
                "logit_scale": tagger.logit_scale,
                "calibration": table,
                "top_tag": {
                    lang: {f.key: [f.precision, f.recall, f.support] for f in rows}
                    for lang, rows in figures.items()
                },
                "macro": macro,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
