"""The ``quantize`` step config."""
from __future__ import annotations

import dataclasses
from typing import Literal

from ..recipe import StepConfig, check

WEIGHT_FORMATS = ("int8", "int7", "int6", "int5", "int4", "int3", "int2", "fp16", "bf16")
Observer = Literal["minmax", "moving_average", "percentile", "mse", "entropy"]


@dataclasses.dataclass
class Quantize(StepConfig):
    """Quantize weights (and activations) of Linear, Conv2d and Embedding layers.

    Weights are stored as integers (int8, or 2/4-bit values packed into bytes) with float scales, so
    the checkpoint really shrinks. With ``activations: int8`` the model is calibrated on the task's
    training inputs and exports to ONNX as QDQ, which onnxruntime runs with integer kernels.

    Args:
        weights: ``int2``..``int8`` (integer), or ``fp16``/``bf16`` (float cast, norms kept in FP32).
        activations: ``int8`` (static: ranges calibrated on data), ``dynamic`` (weights stored in
            int8, activations left in float for runtimes that quantize them on the fly) or ``none``
            (weight-only).
        granularity: one weight scale per output channel or per tensor.
        observer: how activation ranges are chosen from calibration data.
        weight_observer: how weight ranges are chosen (``mse`` helps at 4 bits and below).
        symmetric: weights with zero point 0 (required by onnxruntime's integer kernels for static int8).
        group_size: values per weight scale along the input dimension (low-bit weight-only); null = per channel.
        reduce_range: store 8-bit weights in 7 bits so onnxruntime's u8s8 kernels cannot saturate
            on AVX2 CPUs without VNNI (costs a little accuracy; set false on VNNI or ARM CPUs).
        calibration_batches: batches of training inputs used to calibrate activations.
        batch_size: samples per calibration batch.
        fold_batchnorm: fold BatchNorm into the preceding Conv2d before quantizing.
        exclude: fnmatch patterns of module names to keep in float (e.g. ``stem.*``, ``fc``).
    """

    key = "quantize"
    weights: Literal["int8", "int7", "int6", "int5", "int4", "int3", "int2", "fp16", "bf16"] = "int8"
    activations: Literal["int8", "dynamic", "none"] = "int8"
    granularity: Literal["per_channel", "per_tensor"] = "per_channel"
    observer: Observer = "minmax"
    weight_observer: Observer = "minmax"
    symmetric: bool = True
    group_size: int | None = None
    reduce_range: bool = True
    calibration_batches: int = 32
    batch_size: int = 64
    fold_batchnorm: bool = True
    exclude: tuple[str, ...] = ()

    def __post_init__(self):
        check(self.weights in WEIGHT_FORMATS, "weights",
              f"{self.weights!r} is not supported; use one of {', '.join(WEIGHT_FORMATS)}")
        check(not (self.is_float and self.activations != "none"), "activations",
              f"must be none with {self.weights} weights (float casts quantize no activations)")
        check(not (self.activations != "none" and self.bits not in (None, 8)), "activations",
              f"integer activations need int8 weights; use activations: none with {self.weights} weights")
        check(not (self.activations == "int8" and not self.symmetric), "symmetric",
              "static int8 needs symmetric weights (onnxruntime's integer kernels require weight zero point 0)")
        check(self.group_size is None or self.group_size >= 2, "group_size", f"must be >= 2 or null, got {self.group_size}")
        check(self.calibration_batches >= 1, "calibration_batches", "must be >= 1")
        check(self.batch_size >= 1, "batch_size", "must be >= 1")

    @property
    def needs_data(self) -> bool:
        """Static activation quantization calibrates on data; weight-only and float casts do not."""
        return self.activations == "int8"

    @property
    def is_float(self) -> bool:
        return self.weights in ("fp16", "bf16")

    @property
    def bits(self) -> int | None:
        """Integer weight width, or None for float casts."""
        return None if self.is_float else int(self.weights[3:])
