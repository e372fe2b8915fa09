"""The checks a trained toy model must pass, on held-out pictures it never saw.

:func:`evaluate` reloads the saved weights through open_clip and measures text→image
retrieval over the plain class names in both languages on a held-out folder (other seed,
background styles and palettes), and the cat/dog top 5 in mixed folders;
:func:`check_results` fails the run when they fall short.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import open_clip
import torch
from PIL import Image

from xsearch import synth

from .recipe import ARCH, Metrics, Recipe, Top5, create_model, eval_transform


@torch.no_grad()
def encode_folder(model: Any, paths: list[Path], image_size: int) -> torch.Tensor:
    """Normalised image embeddings of the files, through the search-time preprocessing."""
    transform = eval_transform(image_size)
    features = []
    for start in range(0, len(paths), 256):
        batch = []
        for path in paths[start : start + 256]:
            with Image.open(path) as image:
                batch.append(transform(image.convert("RGB")))
        features.append(model.encode_image(torch.stack(batch), normalize=True))
    return torch.cat(features)


@torch.no_grad()
def encode_queries(model: Any, tokenizer: Any, lang: synth.Language) -> torch.Tensor:
    """Normalised embeddings of the plain class names in ``lang``, in CLASSES order."""
    queries = [synth.class_query(cls, lang) for cls in synth.CLASSES]
    features: torch.Tensor = model.encode_text(tokenizer(queries), normalize=True)
    return features


def retrieval_metrics(
    model: Any, tokenizer: Any, folder: list[tuple[Path, list[str]]], image_size: int
) -> Metrics:
    """Text→image R@1, R@5 and P@5 per language over plain class-name queries.

    A retrieved picture is correct when it shows the queried class. Also reports
    zero-shot classification accuracy (picture→class name) on single-object pictures.
    """
    keys = [cls.key for cls in synth.CLASSES]
    truth = torch.zeros(len(folder), len(keys), dtype=torch.bool)
    for i, (_, present) in enumerate(folder):
        truth[i, [keys.index(k) for k in present]] = True
    images = encode_folder(model, [path for path, _ in folder], image_size)
    single = truth.sum(dim=1) == 1
    out: dict[str, dict[str, float]] = {}
    for lang in synth.LANGUAGES:
        similarity = encode_queries(model, tokenizer, lang) @ images.T
        top = similarity.topk(5, dim=1).indices
        hits = truth.T.gather(1, top).float()
        predicted = similarity.argmax(dim=0)
        zero_shot = truth[torch.arange(len(folder)), predicted][single].float().mean()
        out[lang] = {
            "R@1": round(hits[:, 0].mean().item(), 4),
            "R@5": round((hits.sum(dim=1) > 0).float().mean().item(), 4),
            "P@5": round(hits.mean().item(), 4),
            "zero_shot_acc": round(zero_shot.item(), 4),
        }
    return out


@torch.no_grad()
def mixed_folder_top5(
    model: Any, tokenizer: Any, folder: list[tuple[Path, list[str]]], image_size: int
) -> Top5:
    """Classes shown by the top-5 pictures for cat/dog queries in both languages."""
    images = encode_folder(model, [path for path, _ in folder], image_size)
    queries = {"cat": "cat", "猫": "cat", "dog": "dog", "狗": "dog"}
    text = model.encode_text(tokenizer(list(queries)), normalize=True)
    top = (text @ images.T).topk(5, dim=1).indices
    return {
        query: [folder[int(i)][1] for i in row] for query, row in zip(queries, top, strict=True)
    }


def library_folder(recipe: Recipe, workdir: Path) -> list[tuple[Path, list[str]]]:
    """The gating folder: held-out pictures of every class plus extra cats and dogs."""
    folder = workdir / "library"
    pictures = synth.generate_folder(
        folder,
        recipe.mixed_per_class * len(synth.CLASSES),
        seed=recipe.library_seed,
        split="heldout",
        size=128,
    )
    pets = [synth.class_by_key("cat"), synth.class_by_key("dog")]
    return pictures + synth.generate_folder(
        folder / "pets", 10, seed=recipe.library_seed + 7, split="heldout", size=128, classes=pets
    )


def mixed_folder_ok(top5: Top5) -> bool:
    """True when every top-5 picture shows the queried class."""
    wanted = {"cat": "cat", "猫": "cat", "dog": "dog", "狗": "dog"}
    return all(wanted[q] in present for q, rows in top5.items() for present in rows)


def evaluate(
    weights: Path, recipe: Recipe, image_size: int, workdir: Path
) -> tuple[Metrics, dict[str, Top5]]:
    """Reload the saved weights through open_clip and run the checks.

    Returns the held-out retrieval metrics, and the cat/dog top 5 in a mixed folder
    of each split (fresh seeds: the train split is what ``xsearch demo`` shows) and in
    the library folder that gates the run.
    """
    model = create_model(pretrained=str(weights)).eval()
    tokenizer = open_clip.get_tokenizer(ARCH)
    n_classes = len(synth.CLASSES)
    heldout = synth.generate_folder(
        workdir / "heldout",
        recipe.heldout_per_class * n_classes,
        seed=recipe.heldout_seed,
        split="heldout",
        size=224,
    )
    top5: dict[str, Top5] = {}
    for split in synth.SPLITS:
        mixed = synth.generate_folder(
            workdir / f"mixed_{split}",
            recipe.mixed_per_class * n_classes,
            seed=recipe.mixed_seed,
            split=split,
            size=224,
        )
        top5[split] = mixed_folder_top5(model, tokenizer, mixed, image_size)
    library = library_folder(recipe, workdir)
    top5["library"] = mixed_folder_top5(model, tokenizer, library, image_size)
    return retrieval_metrics(model, tokenizer, heldout, image_size), top5


def check_results(record: dict[str, Any], min_r1: float) -> None:
    """Exit with an error unless held-out R@1 and the cat/dog top-5 pass."""
    failures = [lang for lang, m in record["heldout_metrics"].items() if m["R@1"] < min_r1]
    top5_ok = mixed_folder_ok(record["mixed_folder_top5"]["library"])
    if failures or (min_r1 > 0 and not top5_ok):
        raise SystemExit(
            f"held-out checks failed (R@1 < {min_r1} for {failures} "
            "or a wrong top-5 cat/dog picture in the library folder); the output folder is "
            "left as it was"
        )
