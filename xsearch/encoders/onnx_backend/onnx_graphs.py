"""open_clip's ViT image tower and CLIP text tower written as ONNX graphs, without torch.

Tracing a tower through ``torch.onnx.export`` needs torch and open_clip imported (0.75 GB
here) and the fp32 model built (0.35 GB for ViT-B-32's image tower) before the exporter's own
copies: a first indexing run of ViT-B-32 peaked at 2 GB. These towers are a few dozen
operators each, so the graph is written here from the model's config and the checkpoint's
tensors, read one at a time (``checkpoint.py``) into an external weights file. The graph is
the same computation as open_clip's forward pass (the tests compare the two on several
architectures); whatever the writer does not know, it refuses, and the caller falls back to
tracing with torch.

Two liberties, both exact in arithmetic: the final layer norm and projection run on the
pooled token only, and the last block computes attention and MLP for that token only (the
other tokens' outputs of the last block are never read), which saves about a twelfth of a
12-layer tower.

Which towers the writer knows and the tensors each reads: ``tower_specs.py``; the nodes
and (int8) weights it writes them with: ``graph_writer.py``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..checkpoint import Checkpoint
from .graph_writer import GraphWriter, Int8Plan
from .tower_specs import ImageSpec, TextSpec, Transformer

__all__ = [
    "remove_graph",
    "write_image_graph",
    "write_text_graph",
]

_LN_EPS = 1e-5  # torch.nn.LayerNorm's default, which open_clip keeps


class _Tower:
    """The parts both towers share, writing into one graph from one checkpoint."""

    def __init__(self, g: GraphWriter, ckpt: Checkpoint, t: Transformer) -> None:
        self.g, self.ckpt, self.t = g, ckpt, t

    def tensor(self, name: str) -> str:
        return self.g.weight(name, self.ckpt.read(name))

    def linear(self, x: str, name: str) -> str:
        """``x @ W.T + b`` of a torch Linear whose tensors are ``name.weight``/``name.bias``."""
        y = self.g.matmul(x, f"{name}.weight.T", self.ckpt.read(f"{name}.weight").T)
        return self.g.op("Add", y, self.tensor(f"{name}.bias"))

    def layer_norm(self, x: str, name: str) -> str:
        return self.g.op(
            "LayerNormalization",
            x,
            self.tensor(f"{name}.weight"),
            self.tensor(f"{name}.bias"),
            axis=-1,
            epsilon=_LN_EPS,
        )

    def activation(self, x: str) -> str:
        g = self.g
        if self.t.quick_gelu:
            return g.op("Mul", x, g.op("Sigmoid", g.op("Mul", x, g.const(1.702))))
        # The erf form torch exports, which ONNX Runtime fuses into one Gelu kernel.
        erf = g.op("Erf", g.op("Div", x, g.const(math.sqrt(2.0))))
        return g.op("Mul", g.op("Mul", x, g.op("Add", erf, g.const(1.0))), g.const(0.5))

    def heads(self, x: str, perm: Sequence[int]) -> str:
        """[batch, length, width] -> heads, transposed by ``perm`` from [b, l, heads, dim]."""
        g, t = self.g, self.t
        split = g.op("Reshape", x, g.ints([0, -1, t.heads, t.width // t.heads]))
        return g.op("Transpose", split, perm=list(perm))

    def block(self, i: int, x: str, mask: str | None, rows: str | None = None) -> str:
        """Residual block ``i``. With ``rows`` (a [batch, n, width] pick of ``x``), only those
        rows are computed: the keys and values still come from every position."""
        g, t = self.g, self.t
        p = f"{t.prefix}transformer.resblocks.{i}."
        h = self.layer_norm(x, f"{p}ln_1")
        w_in, b_in = (
            self.ckpt.read(f"{p}attn.in_proj_weight"),
            self.ckpt.read(f"{p}attn.in_proj_bias"),
        )
        width = t.width
        if rows is None:
            query_x = x
            qkv = g.op(
                "Add",
                g.matmul(h, f"{p}attn.in_proj_weight.T", w_in.T),
                g.weight(f"{p}attn.in_proj_bias", b_in),
            )
            q, k, v = (
                g.op("Slice", qkv, g.ints([j * width]), g.ints([(j + 1) * width]), g.ints([2]))
                for j in range(3)
            )
        else:
            query_x = rows
            hq = self.layer_norm(query_x, f"{p}ln_1")
            q = g.op(
                "Add",
                g.matmul(hq, f"{p}attn.in_proj_weight.q.T", w_in[:width].T),
                g.weight(f"{p}attn.in_proj_bias.q", b_in[:width]),
            )
            kv = g.op(
                "Add",
                g.matmul(h, f"{p}attn.in_proj_weight.kv.T", w_in[width:].T),
                g.weight(f"{p}attn.in_proj_bias.kv", b_in[width:]),
            )
            k, v = (
                g.op("Slice", kv, g.ints([j * width]), g.ints([(j + 1) * width]), g.ints([2]))
                for j in range(2)
            )
        del w_in, b_in
        scores = g.op(
            "Mul",
            g.op(
                "MatMul",
                self.heads(q, (0, 2, 1, 3)),
                self.heads(k, (0, 2, 3, 1)),
            ),
            g.const(1.0 / math.sqrt(width // t.heads)),
        )
        if mask is not None:
            scores = g.op("Add", scores, mask)
        attended = g.op("MatMul", g.op("Softmax", scores, axis=-1), self.heads(v, (0, 2, 1, 3)))
        merged = g.op(
            "Reshape",
            g.op("Transpose", attended, perm=[0, 2, 1, 3]),
            g.ints([0, -1, width]),
        )
        out = self.linear(merged, f"{p}attn.out_proj")
        if t.layer_scale:
            out = g.op("Mul", out, self.tensor(f"{p}ls_1.gamma"))
        x = g.op("Add", query_x, out)
        h = self.activation(self.linear(self.layer_norm(x, f"{p}ln_2"), f"{p}mlp.c_fc"))
        out = self.linear(h, f"{p}mlp.c_proj")
        if t.layer_scale:
            out = g.op("Mul", out, self.tensor(f"{p}ls_2.gamma"))
        return g.op("Add", x, out)


def _write(path: Path, build: Any, int8: Int8Plan | None) -> None:
    """Write a graph to ``path``; fp32 weights go next to it (``<name>.weights``)."""
    weights = path.with_name(path.name + ".weights")
    g = GraphWriter(weights, int8)
    try:
        inputs, output, dims = build(g)
    finally:
        g.close()
    g.save(path, inputs, output, dims)


def write_image_graph(
    spec: ImageSpec, checkpoint: Checkpoint, path: Path, int8: Int8Plan | None = None
) -> None:
    """The image tower: "pixels" [batch, 3, size, size] -> "vectors" [batch, dim]."""
    import onnx

    def build(g: GraphWriter) -> tuple[list[Any], str, list[Any]]:
        tower = _Tower(g, checkpoint, spec.blocks)
        p, width, size = spec.blocks.prefix, spec.blocks.width, spec.image_size
        tokens = (size // spec.patch_size) ** 2 + 1
        patches = g.conv(
            "pixels",
            f"{p}conv1.weight",
            checkpoint.read(f"{p}conv1.weight"),
            kernel_shape=[spec.patch_size] * 2,
            strides=[spec.patch_size] * 2,
        )
        patches = g.op(
            "Transpose",
            g.op("Reshape", patches, g.ints([0, width, -1])),
            perm=[0, 2, 1],
        )
        batch = g.op("Slice", g.op("Shape", patches), g.ints([0]), g.ints([1]))
        cls_shape = g.op("Concat", batch, g.ints([1, width]), axis=0)
        cls = g.weight(f"{p}class_embedding", checkpoint.read(f"{p}class_embedding")[None, None])
        x = g.op("Concat", g.op("Expand", cls, cls_shape), patches, axis=1)
        x = g.op("Add", x, tower.tensor(f"{p}positional_embedding"))
        if spec.ln_pre:
            x = tower.layer_norm(x, f"{p}ln_pre")
        layers = spec.blocks.layers
        last_only = spec.pool == "tok"
        for i in range(layers - 1 if last_only else layers):
            x = tower.block(i, x, None)
        if last_only:
            first = g.op("Slice", x, g.ints([0]), g.ints([1]), g.ints([1]))
            x = tower.block(layers - 1, x, None, first)
            pooled = g.op("Squeeze", tower.layer_norm(x, f"{p}ln_post"), g.ints([1]))
        elif spec.ln_after_pool:
            rest = g.op("Slice", x, g.ints([1]), g.ints([tokens]), g.ints([1]))
            pooled = tower.layer_norm(g.op("ReduceMean", rest, axes=[1], keepdims=0), f"{p}ln_post")
        else:
            x = tower.layer_norm(x, f"{p}ln_post")
            rest = g.op("Slice", x, g.ints([1]), g.ints([tokens]), g.ints([1]))
            pooled = g.op("ReduceMean", rest, axes=[1], keepdims=0)
        if spec.projection:
            pooled = g.matmul(pooled, f"{p}proj", checkpoint.read(f"{p}proj"))
        pixels = onnx.helper.make_tensor_value_info(
            "pixels", onnx.TensorProto.FLOAT, ["batch", 3, size, size]
        )
        return [pixels], pooled, ["batch", None]

    _write(path, build, int8)


def write_text_graph(
    spec: TextSpec, checkpoint: Checkpoint, path: Path, int8: Int8Plan | None = None
) -> None:
    """The text tower: "tokens" [batch, length] -> "vectors" [batch, dim], for any length up
    to the context. A query runs over its own tokens only (its end-of-text token last): with
    the causal mask, padding after it would not change its vector, only cost time."""
    import onnx

    def build(g: GraphWriter) -> tuple[list[Any], str, list[Any]]:
        tower = _Tower(g, checkpoint, spec.blocks)
        p, width = spec.blocks.prefix, spec.blocks.width
        name = f"{p}token_embedding.weight"
        x = g.gather(name, checkpoint.read(name), "tokens")
        length = g.op("Slice", g.op("Shape", "tokens"), g.ints([1]), g.ints([2]))  # [1]
        positions = g.op(
            "Slice", tower.tensor(f"{p}positional_embedding"), g.ints([0]), length, g.ints([0])
        )
        x = g.op("Add", x, positions)
        # Causal: no position attends to a later one (open_clip's mask: -inf above the
        # diagonal), made for the length at hand.
        end_step = g.op("Squeeze", length, g.ints([0]))
        steps = g.op("Range", g.const(0, np.int64), end_step, g.const(1, np.int64))
        later = g.op(
            "Greater",
            g.op("Unsqueeze", steps, g.ints([0])),  # key positions [1, length]
            g.op("Unsqueeze", steps, g.ints([1])),  # query positions [length, 1]
        )
        mask = g.op("Where", later, g.const(-np.inf), g.const(0.0))
        for i in range(spec.blocks.layers - 1):
            x = tower.block(i, x, mask)
        # The end-of-text token has the largest id: its row is the text's vector.
        end = g.op("ArgMax", "tokens", axis=1, keepdims=1)  # [batch, 1]
        index = g.op(
            "Expand",
            g.op("Unsqueeze", end, g.ints([2])),
            g.op("Concat", g.op("Shape", end), g.ints([width]), axis=0),
        )
        row = g.op("GatherElements", x, index, axis=1)  # [batch, 1, width]
        # The causal mask's row of that position: -inf for every later position.
        row_later = g.op("Greater", steps, end)  # [batch, length]
        row_mask = g.op(
            "Unsqueeze", g.op("Where", row_later, g.const(-np.inf), g.const(0.0)), g.ints([1, 2])
        )
        x = tower.block(spec.blocks.layers - 1, x, row_mask, row)
        pooled = g.op("Squeeze", tower.layer_norm(x, f"{p}ln_final"), g.ints([1]))
        if spec.projection == "matrix":
            name = f"{p}text_projection"
            pooled = g.matmul(pooled, name, checkpoint.read(name))
        elif spec.projection == "linear":
            pooled = tower.linear(pooled, f"{p}text_projection")
        tokens = onnx.helper.make_tensor_value_info(
            "tokens", onnx.TensorProto.INT64, ["batch", "length"]
        )
        return [tokens], pooled, ["batch", None]

    _write(path, build, int8)


def remove_graph(path: Path) -> None:
    """Delete a graph written here and its weights file."""
    for file in (path, path.with_name(path.name + ".weights")):
        file.unlink(missing_ok=True)
