"""ONNX nodes and initialisers, written one at a time: the graph writer's building blocks.

:class:`GraphWriter` names every node and value, keeps small constants in the graph, and
streams fp32 weights to one external weights file as they come (the checkpoint is read one
tensor at a time, so the export's memory stays near one tensor's). With an
:class:`Int8Plan`, the matrix products, the patch convolution and the token embedding are
quantised on the way, as ONNX Runtime's ``quantize_dynamic`` would write them.
``onnx_graphs.py`` builds the towers from these blocks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["OPSET", "GraphWriter", "Int8Plan"]

OPSET = 17


@dataclass(frozen=True)
class Int8Plan:
    """How to write a graph's weights as integers, as ONNX Runtime's ``quantize_dynamic``
    (``per_channel=True``, int8 weights) writes them from the fp32 graph: matrix products
    per output channel and the patch convolution per tensor, both symmetric int8, with
    inputs quantised to uint8 as they come (DynamicQuantizeLinear), and the token embedding
    table as uint8 per tensor. A test checks that both give the same vectors."""

    reduce_range: bool
    keep_fp32: Callable[[str], bool] = lambda name: False  # by the weight's name


class GraphWriter:
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
