"""How closely int8 text towers agree with torch, per profile, on random weights.

    python -m bench.fakehub siglip-b16-i18n --cache /tmp/hf      # once per profile
    python -m bench.text_agreement mclip-b32 nllb-siglip-base siglip-b16-i18n --hf-home /tmp/hf

Each profile's text tower is exported as xsearch exports it where it can (Hugging Face
towers: ``hf_text_export.py``, in a child process) and held to the torch tower on the probe
texts and the fixed multilingual set (``MULTILINGUAL_QUERIES``). open_clip's own
bidirectional towers pooled at the last token (SigLIP i18n), which xsearch does not export,
are traced here at their full context (their answer depends on the padding, so a query
cannot run over its own tokens only) and quantised the same way, to see whether exporting
them would pass the gate. The weights are random (``bench/fakehub.py``): the figures say
whether int8 computes what torch does, not how good the model is.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


def _hf_tower(name: str, hub: Path, folder: Path) -> dict[str, Any]:
    from xsearch.encoders.model_files import HubOptions
    from xsearch.encoders.onnx_backend.hf_text_export import HFTextJob, make_int8_hf_text_export

    started = time.perf_counter()
    export = make_int8_hf_text_export(HFTextJob(name, None, HubOptions(cache_dir=hub), folder))
    if export is None:
        return {"profile": name, "exported": False}
    return {
        "profile": name,
        "how": "hf_text_export (after the embedding, any length)",
        "agreement": export.agreement.__dict__,
        "holds": export.agreement.holds,
        "torch_free_tokenizer": export.tokenizer is not None,
        "export_s": round(time.perf_counter() - started, 1),
        "int8_ms_per_text": round(export.int8_ms_per_text, 1),
    }


def _full_context_tower(name: str, hub: Path, folder: Path) -> dict[str, Any]:
    import numpy as np
    import torch

    from xsearch.encoders.model_files import HubOptions
    from xsearch.encoders.onnx_backend import onnx_export
    from xsearch.encoders.onnx_backend.hf_text_export import probe_set
    from xsearch.encoders.onnx_backend.onnx_int8 import open_session
    from xsearch.encoders.onnx_backend.probes import agreement
    from xsearch.encoders.profiles import get_profile
    from xsearch.encoders.torch_backend.openclip import TEXT, OpenClipEncoder

    started = time.perf_counter()
    encoder = OpenClipEncoder(
        get_profile(name), device="cpu", precision="fp32", hub=HubOptions(cache_dir=hub)
    )
    model, _ = encoder._built(TEXT, torch.float32)
    model.float().eval()

    class Tower(torch.nn.Module):
        def __init__(self, clip: Any) -> None:
            super().__init__()
            self.model = clip

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            return self.model.encode_text(tokens)  # type: ignore[no-any-return]

    tower = Tower(model).eval()
    tokens = encoder.tokenize(probe_set())
    with torch.inference_mode():
        reference = np.concatenate(
            [tower(torch.from_numpy(tokens[i : i + 16])).numpy() for i in range(0, len(tokens), 16)]
        )
    fp32, int8 = folder / "text.fp32.onnx", folder / "text.int8.onnx"
    onnx_export._export_onnx(tower, torch.from_numpy(tokens[:1].copy()), fp32, "tokens")
    del tower, model
    onnx_export._quantise(fp32, int8)
    session = open_session(int8, threads=1)
    vectors = np.concatenate([session.run(None, {"tokens": row[None]})[0] for row in tokens])
    measured = agreement(reference, vectors)
    return {
        "profile": name,
        "how": f"traced here at the full context ({tokens.shape[1]} tokens); not exported by xsearch",
        "agreement": measured.__dict__,
        "holds": measured.holds,
        "export_s": round(time.perf_counter() - started, 1),
    }


def measure(name: str, hf_home: Path) -> dict[str, Any]:
    from xsearch.encoders.model_files import model_config
    from xsearch.encoders.profiles import get_profile

    hub = hf_home / "hub"
    with tempfile.TemporaryDirectory(prefix="xsearch-text-agreement-") as tmp:
        if model_config(get_profile(name))["text_cfg"].get("hf_model_name"):
            row = _hf_tower(name, hub, Path(tmp))
        else:
            row = _full_context_tower(name, hub, Path(tmp))
    row["peak_mb_children"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024
    row["peak_mb_self"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("profiles", nargs="+")
    parser.add_argument("--hf-home", type=Path, required=True, help="made by bench.fakehub")
    parser.add_argument("--out", type=Path, default=RESULTS / "text_agreement.json")
    args = parser.parse_args()
    rows = []
    for name in args.profiles:
        row = measure(name, args.hf_home)
        print(json.dumps(row))
        rows.append(row)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"weights": "random (bench.fakehub)", "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
