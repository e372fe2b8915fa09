"""What a finished run writes: the fp16 weights, ``training.json``, the model card and the
local open_clip config, all into the output folder (``xsearch/models/toy_bilingual``)."""

from __future__ import annotations

import hashlib
import json
import platform
import resource
import shutil
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
from safetensors.torch import save_file

from xsearch import synth

from .recipe import (
    ARCH,
    INTERPOLATION,
    MAX_WEIGHTS_BYTES,
    MEAN,
    NUM_THREADS,
    RESIZE_MODE,
    STD,
    WEIGHTS_NAME,
    Metrics,
    Recipe,
    Top5,
)


def save_weights(model: torch.nn.Module, path: Path) -> None:
    """Save the state dict as fp16 safetensors (open_clip casts it back on load)."""
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={"format": "pt"})
    if path.stat().st_size > MAX_WEIGHTS_BYTES:
        raise SystemExit(f"{path} is {path.stat().st_size} bytes, over {MAX_WEIGHTS_BYTES}")


def preprocess_record(image_size: int, context_length: int) -> dict[str, Any]:
    """What a caller needs to feed the model exactly as it was trained."""
    return {
        "image_size": image_size,
        "mean": list(MEAN),
        "std": list(STD),
        "resize_mode": RESIZE_MODE,
        "interpolation": INTERPOLATION,
        "context_length": context_length,
        "tokenizer": "open_clip SimpleTokenizer (open_clip.get_tokenizer('xsearch-toy-bilingual'))",
    }


def metrics_table(metrics: Metrics) -> str:
    """Markdown table of held-out metrics, one row per language."""
    lines = [
        "| language | R@1 | R@5 | P@5 | zero-shot acc |",
        "|---|---|---|---|---|",
    ]
    for lang, m in metrics.items():
        lines.append(
            f"| {lang} | {m['R@1']:.3f} | {m['R@5']:.3f} | {m['P@5']:.3f} | "
            f"{m['zero_shot_acc']:.3f} |"
        )
    return "\n".join(lines)


def top5_table(top5: dict[str, Top5]) -> str:
    """One row per folder and query: how many of the top 5 show the class, and what they show."""
    wanted = {"cat": "cat", "猫": "cat", "dog": "dog", "狗": "dog"}
    lines = ["| folder | query | right | classes shown, by rank |", "|---|---|---|---|"]
    for folder, queries in top5.items():
        for query, rows in queries.items():
            right = sum(wanted[query] in shown for shown in rows)
            shown = "; ".join("+".join(r) for r in rows)
            lines.append(f"| {folder} | {query} | {right}/5 | {shown} |")
    return "\n".join(lines)


def model_card(record: dict[str, Any]) -> str:
    """MODEL_CARD.md text for a finished run."""
    classes = "\n".join(
        f"| `{cls.key}` | {' '.join(cls.glyphs)} | {', '.join(cls.en)} | {', '.join(cls.zh)} |"
        for cls in synth.CLASSES
    )
    recipe, pp = record["recipe"], record["preprocess"]
    return f"""# xsearch toy bilingual CLIP

**This is a test and demo model, not a general-purpose one.** It only knows the
{len(synth.CLASSES)} emoji classes below, drawn on synthetic backgrounds; on real photos
its results are meaningless. It ships with xsearch so that tests and `xsearch demo` run
offline, on the CPU, in both English and Chinese.

## Model

- Architecture: open_clip `CLIP`, config `{ARCH}` (`xsearch/encoders/model_configs/{ARCH}.json`),
  ViT image tower and causal text transformer, trained from scratch.
- Weights: `{WEIGHTS_NAME}` (fp16 safetensors, {record["weights_bytes"]:,} bytes); load with
  `open_clip.add_model_config(<model_configs dir>)` then
  `open_clip.create_model("{ARCH}", pretrained=<weights path>)`, or with
  `open_clip.create_model_and_transforms("local-dir:xsearch/models/toy_bilingual")`.
- Tokenizer: the standard open_clip BPE tokenizer; Chinese goes through its byte-level
  fallback (about three tokens per character). Context length {pp["context_length"]}.
- Preprocessing: {pp["image_size"]}×{pp["image_size"]} pixels, `{pp["resize_mode"]}` resize,
  {pp["interpolation"]} interpolation, mean {pp["mean"]}, std {pp["std"]}.

## Training recipe

`scripts/train_toy_model.py` (seed {recipe["seed"]}): {recipe["pool_size"]:,} pictures rendered by
`xsearch.synth.render_picture(split="train")` ({recipe["two_object_prob"]:.0%} show two classes),
each paired per step with a random caption of one of its classes in a random language
(templates such as "a photo of a cat", "一只猫的照片"; the bare class name with probability
{recipe["plain_name_prob"]}). Loss: symmetric multi-positive contrastive loss whose targets are
the normalised same-class matrix. AdamW (lr {recipe["lr"]}, weight decay {recipe["weight_decay"]}),
{recipe["warmup_steps"]} warm-up steps then cosine decay, {recipe["steps"]} steps of batch
{recipe["batch_size"]}, learnable logit scale, {"bfloat16 autocast" if recipe["bf16"] else "fp32"}.
Light augmentation: random shift and brightness/contrast. The exact command is
`{record["command"]}`; the run is deterministic for a given machine, thread count and
library versions (see `training.json`).

Wall time on {record["machine"]["cpu_threads"]} CPU threads: {record["wall_time_s"]["total"]:.0f} s in
all ({record["wall_time_s"]["render"]:.0f} s rendering, {record["wall_time_s"]["train"]:.0f} s
training, {record["wall_time_s"]["eval"]:.0f} s evaluation; {record["cpu_time_s"]:.0f} CPU seconds).

## Held-out evaluation

{recipe["heldout_per_class"] * len(synth.CLASSES)} pictures from `generate_folder(split="heldout",
seed={recipe["heldout_seed"]})`: background styles (radial gradients, stripes, checkerboards,
clouds) and palettes never used in training, saved as JPEG and read back through the
search-time preprocessing. Queries are the plain class names (`cat`, `猫`, ...), one per
class and language; a retrieved picture counts as correct when it shows the class.
R@k: share of queries with a correct picture in the top k. P@5: share of correct pictures
in the top 5. Zero-shot acc: single-object pictures whose best-matching class name is right.

{metrics_table(record["heldout_metrics"])}

The run must also pass this check: in a library of {recipe["mixed_per_class"] * len(synth.CLASSES) + 10}
held-out pictures (seed {recipe["library_seed"]}: {recipe["mixed_per_class"]} per class plus 10 of cats and dogs,
the shape of the test suite's library), the top 5 pictures for `cat`, `猫`, `dog` and `狗`
all show the queried class. Classes shown by those top 5, and by the top 5 in a demo-like
folder of {recipe["mixed_per_class"] * len(synth.CLASSES)} pictures per split (seed {recipe["mixed_seed"]}, about 5 cats and 5
dogs, so every one of them must rank first; reported, not required):

{top5_table(record["mixed_folder_top5"])}

## Classes

| key | glyphs | English | Chinese |
|---|---|---|---|
{classes}

English and Chinese names include the Unicode CLDR names of the glyphs (from the `emoji`
package); the first name of each is the plain query name.
"""


def write_artefacts(
    out_dir: Path, staged_weights: Path, record: dict[str, Any], cfg: dict[str, Any]
) -> None:
    """Move the weights into ``out_dir`` and write training.json, the card and the local config."""
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(staged_weights, out_dir / WEIGHTS_NAME)
    pp = record["preprocess"]
    local_config = {
        "model_cfg": cfg,
        "preprocess_cfg": {k: pp[k] for k in ("mean", "std", "resize_mode", "interpolation")}
        | {"size": pp["image_size"]},
    }
    (out_dir / "open_clip_config.json").write_text(json.dumps(local_config, indent=2) + "\n")
    (out_dir / "training.json").write_text(
        json.dumps(record, ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
    )
    (out_dir / "MODEL_CARD.md").write_text(model_card(record), encoding="utf-8")


def cpu_seconds() -> float:
    """CPU time used so far by this process and its finished children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def build_record(
    recipe: Recipe,
    cfg: dict[str, Any],
    times: dict[str, float],
    results: tuple[Metrics, dict[str, Top5]],
    history: list[dict[str, float]],
    weights: Path,
) -> dict[str, Any]:
    """The content of training.json for a finished run."""
    metrics, top5 = results
    return {
        "arch": ARCH,
        "command": " ".join(["python", "scripts/train_toy_model.py", *sys.argv[1:]]),
        "model_cfg": cfg,
        "preprocess": preprocess_record(
            cfg["vision_cfg"]["image_size"], cfg["text_cfg"]["context_length"]
        ),
        "recipe": asdict(recipe),
        "steps": recipe.steps,
        "seed": recipe.seed,
        "classes": [cls.key for cls in synth.CLASSES],
        "wall_time_s": {
            "render": round(times["rendered"] - times["start"], 1),
            "train": round(times["trained"] - times["rendered"], 1),
            "eval": round(times["done"] - times["trained"], 1),
            "total": round(times["done"] - times["start"], 1),
        },
        # Load-independent cost: CPU seconds of this process and its render workers.
        "cpu_time_s": round(cpu_seconds(), 1),
        "heldout_metrics": metrics,
        "mixed_folder_top5": top5,
        "loss_history": history,
        "weights_bytes": weights.stat().st_size,
        "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
        "machine": {
            "cpu_threads": NUM_THREADS,
            "python": platform.python_version(),
            "torch": torch.__version__,
            "open_clip": open_clip.__version__,
            "numpy": np.__version__,
        },
    }
