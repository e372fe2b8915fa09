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
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..checkpoint import Checkpoint

__all__ = [
    "ImageSpec",
    "TextSpec",
    "image_spec",
    "text_spec",
    "write_image_graph",
    "write_text_graph",
]

OPSET = 17
_LN_EPS = 1e-5  # torch.nn.LayerNorm's default, which open_clip keeps

# Config keys the writer reproduces, with the value each must have when it is not one the
# writer handles (None: any value). Any other key means a tower this module does not know.
# Both towers' blocks: open_clip's plain residual attention block, nothing custom.
_BLOCK_KEYS: dict[str, Any] = {
    "layers": None,
    "width": None,
    "mlp_ratio": None,
    "ls_init_value": None,
    "final_ln_after_pool": None,
    "pool_type": None,
    "output_tokens": False,
    "act_kwargs": None,
    "norm_kwargs": None,
    "block_type": None,
    "qk_norm": False,
    "scaled_cosine_attn": False,
    "scale_heads": False,
    "scale_attn_inner": False,
    "scale_attn": False,
    "scale_fc": False,
}
_VISION_KEYS: dict[str, Any] = {
    **_BLOCK_KEYS,
    "head_width": None,
    "patch_size": None,
    "image_size": None,
    "patch_dropout": None,  # training only
    "attentional_pool": False,
    "attn_pooler_queries": None,
    "attn_pooler_heads": None,
    "no_ln_pre": None,
    "pos_embed_type": None,  # learnable or fixed sin-cos: both are tensors of the checkpoint
    "timm_model_name": None,
}
_TEXT_KEYS: dict[str, Any] = {
    **_BLOCK_KEYS,
    "context_length": None,
    "vocab_size": None,
    "heads": None,
    "embed_cls": False,
    "pad_id": 0,
    "no_causal_mask": False,
    # A per-token norm: the same before or after pooling the one token.
    "final_ln_after_pool": None,
    "pool_type": "argmax",
    "proj_bias": None,
    "proj_type": None,
    "hf_model_name": None,
    "hf_tokenizer_name": None,
    "tokenizer_mode": None,
    "tokenizer_kwargs": None,
}
# Keys that must be absent or None (a value means a feature the writer does not build).
_MUST_BE_NONE = {
    "act_kwargs",
    "norm_kwargs",
    "timm_model_name",
    "hf_model_name",
    "hf_tokenizer_name",
    "tokenizer_mode",
    "tokenizer_kwargs",
}
_BLOCK_TYPES = (None, "default")
_MODEL_KEYS = {
    "embed_dim",
    "vision_cfg",
    "text_cfg",
    "quick_gelu",
    "custom_text",
    "init_logit_scale",
    "init_logit_bias",
}


@dataclass(frozen=True)
class _Transformer:
    prefix: str  # of the tower's tensors in the checkpoint: "visual.", "", "text."
    width: int
    heads: int
    layers: int
    quick_gelu: bool
    layer_scale: bool


@dataclass(frozen=True)
class ImageSpec:
    """What the image graph is built from; see :func:`image_spec`."""

    blocks: _Transformer
    image_size: int
    patch_size: int
    pool: str  # "tok" or "avg"
    ln_pre: bool
    ln_after_pool: bool
    projection: bool


@dataclass(frozen=True)
class TextSpec:
    """What the text graphs are built from; see :func:`text_spec`."""

    blocks: _Transformer
    context_length: int
    projection: str | None  # "matrix", "linear" (with bias) or None


def _known(cfg: dict[str, Any], keys: dict[str, Any]) -> bool:
    for key, value in cfg.items():
        if key not in keys:
            return False
        if key in _MUST_BE_NONE and value is not None:
            return False
        if key == "block_type" and value not in _BLOCK_TYPES:
            return False
        required = keys[key]
        if required is not None and key not in _MUST_BE_NONE and value != required:
            return False
    return True


def image_spec(cfg: dict[str, Any]) -> ImageSpec | None:
    """The image graph of an open_clip model config, or None where this module cannot
    write it (a timm or ResNet tower, attentional pooling, custom blocks, ...)."""
    vision = cfg.get("vision_cfg", {})
    if not set(cfg) <= _MODEL_KEYS or not _known(vision, _VISION_KEYS):
        return None
    layers, size = vision.get("layers", 12), vision.get("image_size", 224)
    if isinstance(size, (list, tuple)):
        if len(size) != 2 or size[0] != size[1]:
            return None
        size = size[0]
    patch = vision.get("patch_size", 16)
    if not isinstance(layers, int) or not isinstance(patch, int) or size % patch:
        return None
    width = int(vision.get("width", 768))
    head_width = int(vision.get("head_width", 64))
    pool = vision.get("pool_type", "tok")
    if pool not in ("tok", "avg") or width % head_width:
        return None
    return ImageSpec(
        blocks=_Transformer(
            prefix="visual.",
            width=width,
            heads=width // head_width,
            layers=layers,
            quick_gelu=bool(cfg.get("quick_gelu", False)),
            layer_scale=vision.get("ls_init_value") is not None,
        ),
        image_size=int(size),
        patch_size=patch,
        pool=pool,
        ln_pre=not vision.get("no_ln_pre", False),
        ln_after_pool=bool(vision.get("final_ln_after_pool", False)),
        projection=int(cfg["embed_dim"]) > 0,
    )


def text_spec(cfg: dict[str, Any]) -> TextSpec | None:
    """The text graphs of an open_clip CLIP text tower (causal, pooled at the end-of-text
    token, open_clip's own tokenizer), or None for any other tower."""
    text = cfg.get("text_cfg", {})
    if not set(cfg) <= _MODEL_KEYS or not _known(text, _TEXT_KEYS):
        return None
    width, heads = int(text.get("width", 512)), int(text.get("heads", 8))
    if width % heads:
        return None
    proj_type = text.get("proj_type", "linear")
    if proj_type not in ("linear", "none"):
        return None
    projection = None
    if proj_type == "linear" and int(cfg["embed_dim"]) > 0:
        projection = "linear" if text.get("proj_bias", False) else "matrix"
    return TextSpec(
        blocks=_Transformer(
            prefix="text." if cfg.get("custom_text") else "",
            width=width,
            heads=heads,
            layers=int(text.get("layers", 12)),
            quick_gelu=bool(cfg.get("quick_gelu", False)),
            layer_scale=text.get("ls_init_value") is not None,
        ),
        context_length=int(text.get("context_length", 77)),
        projection=projection,
    )


# -- the tensors each graph reads --------------------------------------------------------


def _block_tensors(t: _Transformer) -> list[str]:
    names = []
    for i in range(t.layers):
        b = f"{t.prefix}transformer.resblocks.{i}."
        names += [
            f"{b}{part}"
            for part in (
                "ln_1.weight",
                "ln_1.bias",
                "attn.in_proj_weight",
                "attn.in_proj_bias",
                "attn.out_proj.weight",
                "attn.out_proj.bias",
                "ln_2.weight",
                "ln_2.bias",
                "mlp.c_fc.weight",
                "mlp.c_fc.bias",
                "mlp.c_proj.weight",
                "mlp.c_proj.bias",
            )
        ]
        if t.layer_scale:
            names += [f"{b}ls_1.gamma", f"{b}ls_2.gamma"]
    return names


def image_tensors(spec: ImageSpec) -> list[str]:
    p = spec.blocks.prefix
    names = [f"{p}conv1.weight", f"{p}class_embedding", f"{p}positional_embedding"]
    if spec.ln_pre:
        names += [f"{p}ln_pre.weight", f"{p}ln_pre.bias"]
    names += [*_block_tensors(spec.blocks), f"{p}ln_post.weight", f"{p}ln_post.bias"]
    return names + ([f"{p}proj"] if spec.projection else [])


def text_tensors(spec: TextSpec) -> list[str]:
    p = spec.blocks.prefix
    names = [f"{p}token_embedding.weight", f"{p}positional_embedding"]
    names += [*_block_tensors(spec.blocks), f"{p}ln_final.weight", f"{p}ln_final.bias"]
    if spec.projection == "matrix":
        names.append(f"{p}text_projection")
    elif spec.projection == "linear":
        names += [f"{p}text_projection.weight", f"{p}text_projection.bias"]
    return names


def fits(checkpoint: Checkpoint, names: Sequence[str], spec: ImageSpec | TextSpec) -> bool:
    """Whether the checkpoint holds every tensor of the graph, of the shapes it needs, and no
    other tensor of the tower (an unknown one would mean a layer the graph leaves out)."""
    if not checkpoint.floats(names):
        return False
    prefix = spec.blocks.prefix
    if prefix:
        ours = {k for k in checkpoint.header if k.startswith(prefix)}
    else:  # a CLIP model's text tower is its top level, next to "visual." and the scales
        ours = {k for k in checkpoint.header if not k.startswith("visual.") and "." in k}
        ours |= {k for k in ("positional_embedding", "text_projection") if k in checkpoint.header}
    if not ours <= set(names):
        return False
    t = spec.blocks
    w = t.width
    expected: dict[str, tuple[int, ...]] = {}
    for i in range(t.layers):
        b = f"{prefix}transformer.resblocks.{i}."
        hidden = checkpoint.shape(f"{b}mlp.c_fc.weight")[0]
        expected |= {
            f"{b}ln_1.weight": (w,),
            f"{b}attn.in_proj_weight": (3 * w, w),
            f"{b}attn.in_proj_bias": (3 * w,),
            f"{b}attn.out_proj.weight": (w, w),
            f"{b}ln_2.weight": (w,),
            f"{b}mlp.c_fc.weight": (hidden, w),
            f"{b}mlp.c_fc.bias": (hidden,),
            f"{b}mlp.c_proj.weight": (w, hidden),
            f"{b}mlp.c_proj.bias": (w,),
        }
    if isinstance(spec, ImageSpec):
        grid = spec.image_size // spec.patch_size
        expected[f"{prefix}conv1.weight"] = (w, 3, spec.patch_size, spec.patch_size)
        expected[f"{prefix}positional_embedding"] = (grid * grid + 1, w)
    else:
        expected[f"{prefix}positional_embedding"] = (spec.context_length, w)
    return all(checkpoint.shape(k) == shape for k, shape in expected.items())


# -- writing graphs ------------------------------------------------------------------------


@dataclass(frozen=True)
class Int8Plan:
    """How to write a graph's weights as integers, as ONNX Runtime's ``quantize_dynamic``
    (``per_channel=True``, int8 weights) writes them from the fp32 graph: matrix products
    per output channel and the patch convolution per tensor, both symmetric int8, with
    inputs quantised to uint8 as they come (DynamicQuantizeLinear), and the token embedding
    table as uint8 per tensor. A test checks that both give the same vectors."""

    reduce_range: bool
    keep_fp32: Callable[[str], bool] = lambda name: False  # by the weight's name


class _GraphWriter:
    """Nodes and initialisers. fp32 weights go to one external weights file as they come;
    with an :class:`Int8Plan`, they are quantised on the way and kept in the graph."""

    def __init__(self, weights_path: Path, int8: Int8Plan | None) -> None:
        import onnx

        self._onnx = onnx
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.int8 = int8
        self._weights_path = weights_path
        self._weights = weights_path.open("wb") if int8 is None else None
        self._count = 0
        self._written: set[str] = set()
        self._quantised_inputs: dict[str, tuple[str, str, str]] = {}

    def close(self) -> None:
        if self._weights is not None:
            self._weights.close()

    def weight(self, name: str, array: npt.NDArray[np.float32]) -> str:
        """An fp32 weight under the checkpoint's name (once), external unless quantising."""
        if name in self._written:
            return name
        self._written.add(name)
        if self._weights is None:
            return self._inline(name, array.astype(np.float32, copy=False))
        onnx = self._onnx
        data = np.ascontiguousarray(array, dtype=np.float32)
        tensor = onnx.TensorProto()
        tensor.name = name
        tensor.data_type = onnx.TensorProto.FLOAT
        tensor.dims.extend(data.shape)
        offset = self._weights.tell()
        self._weights.write(data.tobytes())
        tensor.data_location = onnx.TensorProto.EXTERNAL
        for key, value in (
            ("location", self._weights_path.name),
            ("offset", str(offset)),
            ("length", str(data.nbytes)),
        ):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        self.initializers.append(tensor)
        return name

    def _inline(self, name: str, array: npt.NDArray[Any]) -> str:
        from onnx import numpy_helper

        # (np.ascontiguousarray would make a scalar one-dimensional.)
        self.initializers.append(numpy_helper.from_array(np.asarray(array, order="C"), name))
        return name

    def const(self, array: npt.ArrayLike, dtype: Any = np.float32) -> str:
        """A small constant, kept in the graph itself."""
        self._count += 1
        return self._inline(f"const_{self._count}", np.asarray(array, dtype=dtype))

    def ints(self, values: Sequence[int]) -> str:
        """A small int64 constant (shapes, axes, indices)."""
        return self.const(list(values), np.int64)

    def op(self, op_type: str, *inputs: str, **attributes: Any) -> str:
        return self.ops(op_type, list(inputs), 1, **attributes)[0]

    def ops(self, op_type: str, inputs: list[str], outputs: int, **attributes: Any) -> list[str]:
        self._count += 1
        names = [f"{op_type.lower()}_{self._count}_{i}" for i in range(outputs)]
        node = self._onnx.helper.make_node(
            op_type, inputs, names, name=f"{op_type}_{self._count}", **attributes
        )
        self.nodes.append(node)
        return names

    def _quantised(self, weight: str) -> bool:
        return self.int8 is not None and not self.int8.keep_fp32(weight)

    def _dynamic(self, x: str) -> tuple[str, str, str]:
        """``x`` as uint8, its scale and zero point, computed once per tensor."""
        if x not in self._quantised_inputs:
            q, scale, zero = self.ops("DynamicQuantizeLinear", [x], 3)
            self._quantised_inputs[x] = (q, scale, zero)
        return self._quantised_inputs[x]

    def _symmetric(
        self, name: str, weights: npt.NDArray[np.float32], axis: int | None
    ) -> tuple[str, str, str]:
        """int8 weights (per index of ``axis``, or per tensor), their scales and zero points."""
        assert self.int8 is not None
        from .per_channel import quantise_channels

        if axis is None:
            q, scale = quantise_channels(weights.reshape(1, -1), 0, self.int8.reduce_range)
            scale = scale.reshape(())
        else:
            q, scale = quantise_channels(weights, axis, self.int8.reduce_range)
        zero = np.zeros(scale.shape, dtype=np.int8)
        return (
            self._inline(f"{name}_quantized", q.reshape(weights.shape)),
            self._inline(f"{name}_scale", scale),
            self._inline(f"{name}_zero_point", zero),
        )

    def _rescaled(self, integers: str, x_scale: str, w_scale: str) -> str:
        scales = self.op("Mul", x_scale, w_scale)
        return self.op("Mul", self.op("Cast", integers, to=self._onnx.TensorProto.FLOAT), scales)

    def matmul(self, x: str, name: str, weights: npt.NDArray[np.float32]) -> str:
        """``x @ weights`` ([in, out]), int8 per output channel where quantising."""
        if not self._quantised(name):
            return self.op("MatMul", x, self.weight(name, weights))
        xq, xs, xz = self._dynamic(x)
        wq, ws, wz = self._symmetric(name, weights, axis=1)
        return self._rescaled(self.op("MatMulInteger", xq, wq, xz, wz), xs, ws)

    def conv(self, x: str, name: str, weights: npt.NDArray[np.float32], **attributes: Any) -> str:
        if not self._quantised(name):
            return self.op("Conv", x, self.weight(name, weights), **attributes)
        xq, xs, xz = self._dynamic(x)
        wq, ws, wz = self._symmetric(name, weights, axis=None)
        return self._rescaled(self.op("ConvInteger", xq, wq, xz, wz, **attributes), xs, ws)

    def gather(self, name: str, table: npt.NDArray[np.float32], indices: str) -> str:
        """Rows of an embedding table; where quantising, the table is uint8 per tensor."""
        if not self._quantised(name):
            return self.op("Gather", self.weight(name, table), indices, axis=0)
        from .per_channel import quantise_asymmetric

        q, scale, zero = quantise_asymmetric(table, reduce_range=False)
        rows = self.op("Gather", self._inline(f"{name}_quantized", q), indices, axis=0)
        scale_name = self._inline(f"{name}_scale", np.asarray(scale).reshape(()))
        zero_name = self._inline(f"{name}_zero_point", np.asarray(zero).reshape(()))
        return self.op("DequantizeLinear", rows, scale_name, zero_name)

    def save(self, path: Path, inputs: list[Any], output: str, dims: list[Any]) -> None:
        onnx = self._onnx
        result = onnx.helper.make_tensor_value_info("vectors", onnx.TensorProto.FLOAT, dims)
        self.nodes.append(onnx.helper.make_node("Identity", [output], ["vectors"], name="out"))
        graph = onnx.helper.make_graph(
            self.nodes, "xsearch", inputs, [result], initializer=self.initializers
        )
        model = onnx.helper.make_model(
            graph,
            opset_imports=[onnx.helper.make_opsetid("", OPSET)],
            producer_name="xsearch",
        )
        model.ir_version = 8  # what ONNX Runtime releases of the last years all read
        onnx.save(model, str(path))


class _Tower:
    """The parts both towers share, writing into one graph from one checkpoint."""

    def __init__(self, g: _GraphWriter, ckpt: Checkpoint, t: _Transformer) -> None:
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
    g = _GraphWriter(weights, int8)
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

    def build(g: _GraphWriter) -> tuple[list[Any], str, list[Any]]:
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

    def build(g: _GraphWriter) -> tuple[list[Any], str, list[Any]]:
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
