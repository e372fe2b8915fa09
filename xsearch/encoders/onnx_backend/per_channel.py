"""ONNX Runtime's per-channel weight quantisation, with its loop over channels done by numpy.

``quantize_dynamic(per_channel=True)`` quantises each weight one output channel at a time in
Python: 55,809 channels per ViT-B-32 text graph and 83,000 for the image tower, about 5 of
the 8.6 s that each graph's quantisation takes, and most of a model's one-time export.

:func:`vectorised_per_channel` swaps in one array operation per weight for the duration of
a call. It follows ONNX Runtime's own formulas step for step (``compute_scale_zp`` and
``quantize_nparray`` in ``onnxruntime.quantization.quant_utils``: float32 ranges that include
zero, a float64 scale stored as float32, round half to even, clip) and only for the case
xsearch asks for: signed int8, symmetric, no per-tensor overrides, no minimum range. Any
other call goes to ONNX Runtime's loop. A test checks that both write the same graph, byte
for byte, so a change of formula in an ONNX Runtime release is caught there.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["quantise_asymmetric", "quantise_channels", "vectorised_per_channel"]

_patch_lock = threading.Lock()
_METHOD = "quantize_weight_per_channel_impl"

# ONNX Runtime's signed int8 ranges: symmetric, and "reduced" (7-bit, for CPUs without VNNI).
_INT8_RANGE = {False: (-127, 127), True: (-64, 64)}


def quantise_channels(
    weights: npt.NDArray[np.floating[Any]], axis: int, reduce_range: bool
) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.float32]]:
    """Symmetric int8 weights and one float32 scale per index of ``axis`` (zero points are
    all 0), as ONNX Runtime computes them channel by channel."""
    qmin, qmax = _INT8_RANGE[reduce_range]
    others = tuple(i for i in range(weights.ndim) if i != axis)
    dtype = weights.dtype
    rmin = np.minimum(weights.min(axis=others), np.array(0, dtype=dtype))
    rmax = np.maximum(weights.max(axis=others), np.array(0, dtype=dtype))
    absmax = np.maximum(np.abs(rmin), np.abs(rmax))
    # float64 before the subtraction and division, then stored in the weights' type.
    scale64 = (absmax.astype(np.float64) - (-absmax).astype(np.float64)) / float(qmax - qmin)
    tiny = np.finfo(dtype).tiny
    scale = np.where(scale64 < tiny, 1.0, scale64).astype(dtype)
    shape = [1] * weights.ndim
    shape[axis] = -1
    scaled = (weights.astype(np.float32) / scale.reshape(shape)).round()
    # quantize_nparray clips to the type's whole range, not the symmetric one.
    np.clip(scaled, -128, 127, out=scaled)
    return scaled.astype(np.int8), scale.astype(np.float32)


def quantise_asymmetric(
    data: npt.NDArray[np.float32], reduce_range: bool
) -> tuple[npt.NDArray[np.uint8], np.float32, np.uint8]:
    """uint8 values, scale and zero point of a whole float32 tensor, as ONNX Runtime
    quantises a table it gathers from (``compute_scale_zp``, asymmetric, then
    ``quantize_nparray``)."""
    qmin, qmax = (0, 127) if reduce_range else (0, 255)
    rmin = np.minimum(data.min(), np.float32(0))
    rmax = np.maximum(data.max(), np.float32(0))
    scale64 = (np.float64(rmax) - np.float64(rmin)) / float(qmax - qmin)
    if scale64 < np.finfo(np.float32).tiny:
        scale, zero = np.float32(1.0), np.uint8(0)
    else:
        zero = np.uint8(np.round(qmin - rmin / scale64))
        scale = np.float32(scale64)
    scaled = (data.astype(np.float32) / scale).round() + np.float32(zero)
    np.clip(scaled, 0, 255, out=scaled)
    return scaled.astype(np.uint8), scale, zero


@contextlib.contextmanager
def vectorised_per_channel() -> Iterator[None]:
    """Within this block, ONNX Runtime's quantiser uses :func:`quantise_channels`; where its
    quantiser is not shaped as expected (another release), it keeps its own loop."""
    try:
        from onnxruntime.quantization.onnx_quantizer import ONNXQuantizer
    except ImportError:
        yield
        return
    original = getattr(ONNXQuantizer, _METHOD, None)
    if original is None:
        yield
        return
    with _patch_lock:
        own = _METHOD in vars(ONNXQuantizer)  # else inherited: deleted again afterwards

        def impl(
            self: Any,
            weight_name: str,
            weight_qType: int,  # noqa: N803 (ONNX Runtime's parameter name)
            channel_axis: int,
            reduce_range: bool = True,
            keep_float_weight: bool = False,
        ) -> tuple[str, str, str]:
            done = _quantise_weight(
                self, weight_name, weight_qType, channel_axis, reduce_range, keep_float_weight
            )
            if done is None:
                names: tuple[str, str, str] = original(
                    self, weight_name, weight_qType, channel_axis, reduce_range, keep_float_weight
                )
                return names
            return done

        setattr(ONNXQuantizer, _METHOD, impl)
        try:
            yield
        finally:
            if own:
                setattr(ONNXQuantizer, _METHOD, original)
            else:
                delattr(ONNXQuantizer, _METHOD)


def _quantise_weight(
    quantizer: Any,
    weight_name: str,
    weight_qtype: int,
    channel_axis: int,
    reduce_range: bool,
    keep_float_weight: bool,
) -> tuple[str, str, str] | None:
    """What ONNX Runtime's ``quantize_weight_per_channel_impl`` does, for the one case
    reproduced here; None for every other case."""
    import onnx

    case = _reproduced_case(quantizer, weight_name, weight_qtype, channel_axis)
    if case is None or keep_float_weight:
        return None
    initializer, axis, q_name = case
    weights = onnx.numpy_helper.to_array(initializer)
    quantised, scale = quantise_channels(weights, axis, quantizer.reduce_range and reduce_range)
    zp_name = weight_name + "_zero_point"
    scale_name = weight_name + "_scale"
    channels = [initializer.dims[axis]]
    quantizer.model.initializer_extend(
        [
            onnx.helper.make_tensor(scale_name, initializer.data_type, channels, scale.tolist()),
            onnx.helper.make_tensor(zp_name, weight_qtype, channels, [0] * channels[0]),
            onnx.numpy_helper.from_array(quantised.reshape(initializer.dims), q_name),
        ]
    )
    return q_name, zp_name, scale_name


def _reproduced_case(
    quantizer: Any, weight_name: str, weight_qtype: int, channel_axis: int
) -> tuple[Any, int, str] | None:
    """The weight's initializer, its channel axis and its quantised name, if this is the
    case reproduced here; None otherwise, or where ONNX Runtime's quantiser does not look
    as this module expects (another release keeps its own loop)."""
    import onnx

    try:
        from onnxruntime.quantization.quant_utils import TENSOR_NAME_QUANT_SUFFIX, find_by_name

        initializer = find_by_name(weight_name, quantizer.model.initializer())
        overrides = quantizer.tensor_quant_overrides.get_per_channel_overrides(
            weight_name, default_val=[{"axis": channel_axis}]
        )
        plain = quantizer.min_real_range is None and quantizer.is_weight_symmetric(weight_qtype)
    except (ImportError, AttributeError):
        return None
    if (
        initializer is None
        or weight_qtype != onnx.TensorProto.INT8
        or initializer.data_type != onnx.TensorProto.FLOAT
        or not plain
        or len(overrides) != 1
        or set(overrides[0]) != {"axis"}
    ):
        return None
    ndim = len(initializer.dims)
    axis = channel_axis + ndim if channel_axis < 0 else channel_axis
    if not 0 <= axis < ndim or overrides[0]["axis"] % ndim != axis:
        return None
    return initializer, axis, weight_name + TENSOR_NAME_QUANT_SUFFIX
