"""Peers side by side, offline: rclip 3.3.0 (ONNX Runtime) on the same photos.

rclip downloads its ONNX towers from the Hugging Face hub on first use; offline, it finds
them in ``$RCLIP_DATADIR/ViT-B-32-256-datacomp_s34b_b86k/`` instead. We export a
random-initialised open_clip ViT-B-32-256 (the same architecture as rclip's model) to
ONNX there, so both tools run the same amount of arithmetic per image.

rclip is installed in its own virtual environment (its pins, e.g. numpy~=2.1.3, would
break xsearch's): ``python -m venv /tmp/peers && /tmp/peers/bin/pip install rclip==3.3.0``.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path
from typing import Any

RCLIP_SUBDIR = "ViT-B-32-256-datacomp_s34b_b86k"


def export_rclip_models(datadir: Path, *, seed: int = 0) -> Path:
    """Write visual.onnx, textual.onnx and the tokenizer vocabulary where rclip looks."""
    import open_clip
    import torch

    target = datadir / RCLIP_SUBDIR
    if (target / "visual.onnx").exists() and (target / "textual.onnx").exists():
        return target
    target.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = open_clip.create_model("ViT-B-32-256", pretrained=None).eval().requires_grad_(False)

    class Visual(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.clip = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.clip.encode_image(x)  # type: ignore[no-any-return]

    class Textual(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.clip = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.clip.encode_text(x)  # type: ignore[no-any-return]

    dyn = {"input": {0: "batch"}, "output": {0: "batch"}}
    # The fused attention kernel used at inference has no ONNX export.
    torch.backends.mha.set_fastpath_enabled(False)
    with torch.inference_mode(False), torch.no_grad():
        torch.onnx.export(
            Visual().eval(),
            (torch.randn(2, 3, 256, 256),),
            str(target / "visual.onnx"),
            input_names=["input"],
            output_names=["output"],
            dynamic_axes=dyn,
            opset_version=17,
            dynamo=False,
        )
        tokens = open_clip.get_tokenizer("ViT-B-32-256")(["a photo", "a cat"])
        torch.onnx.export(
            Textual().eval(),
            (tokens,),
            str(target / "textual.onnx"),
            input_names=["input"],
            output_names=["output"],
            dynamic_axes=dyn,
            opset_version=17,
            dynamo=False,
        )
    vocab_src = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    (datadir / "tokenizer").mkdir(exist_ok=True)
    shutil.copy(vocab_src, datadir / "tokenizer" / "bpe_simple_vocab_16e6.txt.gz")
    with gzip.open(vocab_src) as fh:  # fail early on a damaged vocabulary
        fh.read(16)
    return target


def rclip_env(datadir: Path) -> dict[str, str]:
    return {"RCLIP_DATADIR": str(datadir), "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}


def describe_clip_retrieval() -> dict[str, Any]:
    return {
        "ran": False,
        "why": (
            "clip-retrieval 2.45.0's `clip_inference` builds its reader with img2dataset and "
            "webdataset and its index with autofaiss, and pins versions of torch, pandas and "
            "pyarrow that conflict with this environment; it was not installed in this run. "
            "The issue's own figure for it on this machine is 2.75 images/s default, 6.2 best."
        ),
    }
