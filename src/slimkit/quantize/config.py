"""The ``quantize`` step config."""
from __future__ import annotations

import dataclasses
from typing import Literal

from ..recipe import StepConfig, check

WEIGHT_FORMATS = ("int8", "int7", "int6", "int5", "int4", "int3", "int2", "binary", "fp16", "bf16")
METHODS = ("rtn", "gptq", "awq", "hqq")
Observer = Literal["minmax", "moving_average", "percentile", "mse", "entropy"]


@dataclasses.dataclass
class QAT(StepConfig):
    """Quantization-aware training: the ``qat`` options of :class:`Quantize`.

    Args:
        epochs: passes over the training data.
        max_batches: batches per epoch; null = the whole epoch.
        lr: AdamW learning rate (cosine schedule).
        batch_size: samples per step.
        lsq: learn the step sizes (scales) of weights and activations (LSQ) instead of taking weight
            scales from min-max of the current weights and activation scales from calibration.
    """

    key = "qat"
    epochs: int = 1
    max_batches: int | None = 300
    lr: float = 1e-4
    batch_size: int = 64
    lsq: bool = False

    def __post_init__(self):
        check(self.epochs >= 1, "epochs", f"must be >= 1, got {self.epochs}")
        check(self.max_batches is None or self.max_batches >= 1, "max_batches", "must be >= 1 or null")
        check(0 < self.lr <= 1, "lr", f"must be in (0, 1], got {self.lr}")
        check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")


@dataclasses.dataclass
class Mixed(StepConfig):
    """Mixed precision, the ``mixed`` options of :class:`Quantize`: bit widths per layer under a size budget.

    Args:
        bits: candidate weight widths (2..8); every layer starts at the widest.
        size_ratio: budget as a fraction of the FP32 model's bytes (give this or ``budget_bytes``).
        budget_bytes: budget in bytes of the quantized model's tensors.
        samples: training samples held out to measure each layer's sensitivity.
    """

    key = "mixed"
    bits: tuple[int, ...] = (4, 8)
    size_ratio: float | None = None
    budget_bytes: int | None = None
    samples: int = 1000

    def __post_init__(self):
        check(len(self.bits) >= 2 and all(2 <= b <= 8 for b in self.bits), "bits",
              f"needs two or more widths in 2..8, got {list(self.bits)}")
        check((self.size_ratio is None) != (self.budget_bytes is None), "size_ratio",
              "give exactly one of size_ratio or budget_bytes")
        check(self.size_ratio is None or 0 < self.size_ratio <= 1, "size_ratio", f"must be in (0, 1], got {self.size_ratio}")
        check(self.budget_bytes is None or self.budget_bytes > 0, "budget_bytes", "must be > 0")
        check(self.samples >= 1, "samples", "must be >= 1")


@dataclasses.dataclass
class Quantize(StepConfig):
    """Quantize weights (and activations) of Linear, Conv2d and Embedding layers.

    Weights are stored as integers (int8, or 2/4-bit values packed into bytes) with float scales, so
    the checkpoint really shrinks. With ``activations: int8`` the model is calibrated on the task's
    training inputs and exports to ONNX as QDQ, which onnxruntime runs with integer kernels.

    Args:
        weights: ``int2``..``int8`` (integer), ``binary`` (sign times a per-channel mean magnitude,
            1 bit per weight), or ``fp16``/``bf16`` (float cast, norms kept in FP32).
        activations: ``int8`` (static: ranges calibrated on data), ``dynamic`` (weights stored in
            int8, activations left in float for runtimes that quantize them on the fly: onnxruntime's
            integer MatMul) or ``none`` (weight-only: the ONNX graph holds the integer weights and their
            dequantization, which OpenVINO runs as compressed weights next to float activations).
        granularity: one weight scale per output channel or per tensor.
        observer: how activation ranges are chosen from calibration data.
        weight_observer: how weight ranges are chosen (``mse`` helps at 4 bits and below).
        symmetric: weights with zero point 0 (required by onnxruntime's integer kernels for static int8).
        group_size: values per weight scale along the input dimension (low-bit weight-only); null = per channel.
            It must divide the input features of every quantized Linear and Conv2d (embedding tables keep one
            scale per row).
        method: how integer weights are rounded. ``rtn``: to nearest. ``gptq`` (GPTQ): column by column, each
            rounding error compensated in the columns not yet rounded, through the Hessian of the layer's output
            error on calibration inputs. ``awq`` (AWQ): weight columns of large inputs scaled up before rounding and
            their inputs scaled down (a per-input multiplier in the layer), the scale exponent searched for the
            smallest output error. ``hqq`` (HQQ): scales fitted to the weight by half-quadratic iterations, no data.
            gptq and awq fit Linear layers (others round to nearest) one transformer block at a time on
            calibration data; all need int2..int8 weights and ``activations`` none or dynamic.
        gptq_damping: GPTQ's Hessian dampening, a fraction of its mean diagonal added to the diagonal.
        gptq_act_order: GPTQ rounds the columns of the largest inputs first (activation order).
        smooth: SmoothQuant's migration strength alpha in [0, 1] (null = off; 0.5 is typical): before calibrating
            static int8 activations, each Linear's input channel j is divided by
            ``max|x_j| ** alpha / max|w_j| ** (1 - alpha)`` and its weight column multiplied by it, so activation
            outliers move into the weights. Needs ``activations: int8``.
        reduce_range: store 8-bit weights in 7 bits so onnxruntime's u8s8 kernels cannot saturate
            on AVX2 CPUs without VNNI (costs a little accuracy; set false on VNNI or ARM CPUs).
        output_qdq: with static activations, also quantize each layer's output (onnxruntime fuses
            DequantizeLinear -> Conv -> QuantizeLinear into one integer kernel). ``false`` quantizes only the inputs
            and weights of each layer, where NNCF places quantizers for OpenVINO: OpenVINO then fuses residual
            adds, activations and pooling into its integer convolutions (faster there, slower in onnxruntime),
            and the outputs keep float precision.
        calibration_batches: batches of training inputs used to calibrate activations.
        batch_size: samples per calibration batch.
        fold_batchnorm: fold BatchNorm into the preceding Conv2d before quantizing.
        exclude: fnmatch patterns of module names to keep in float (e.g. ``stem.*``, ``fc``).
        cle: Cross-Layer Equalization: rescale conv->relu->conv pairs (after BatchNorm folding) so
            their per-channel weight ranges match; the float model's outputs do not change.
        bias_correction: shift each quantized layer's bias by its mean output error on calibration data.
        adaround: learn each layer's rounding (up or down) on calibration data (AdaRound).
        adaround_iterations: Adam steps per layer for AdaRound.
        qat: quantization-aware training (:class:`QAT`, or a mapping of its options such as
            ``{max_batches: 300, lsq: true}``).
        mixed: per-layer bit widths under a size budget (:class:`Mixed`, or a mapping of its options such as
            ``{bits: [4, 8], size_ratio: 0.15}``); ``weights`` must then be the widest candidate.
    """

    key = "quantize"
    weights: Literal["int8", "int7", "int6", "int5", "int4", "int3", "int2", "binary", "fp16", "bf16"] = "int8"
    activations: Literal["int8", "dynamic", "none"] = "int8"
    granularity: Literal["per_channel", "per_tensor"] = "per_channel"
    observer: Observer = "minmax"
    weight_observer: Observer = "minmax"
    symmetric: bool = True
    group_size: int | None = None
    method: Literal["rtn", "gptq", "awq", "hqq"] = "rtn"
    gptq_damping: float = 0.01
    gptq_act_order: bool = True
    smooth: float | None = None
    reduce_range: bool = True
    output_qdq: bool = True
    calibration_batches: int = 32
    batch_size: int = 64
    fold_batchnorm: bool = True
    exclude: tuple[str, ...] = ()
    cle: bool = False
    bias_correction: bool = False
    adaround: bool = False
    adaround_iterations: int = 1000
    qat: QAT | None = None
    mixed: Mixed | None = None

    def __post_init__(self):
        self.qat = None if self.qat is None else QAT.of(self.qat, "qat")
        self.mixed = None if self.mixed is None else Mixed.of(self.mixed, "mixed")
        self._check_formats()
        self._check_calibration()
        self._check_recovery()
        self._check_mixed()
        self._check_method()

    def _check_formats(self):
        """The weight format, and the activation and scale options it allows."""
        check(self.weights in WEIGHT_FORMATS, "weights",
              f"{self.weights!r} is not supported; use one of {', '.join(WEIGHT_FORMATS)}")
        check(not (self.is_float and self.activations != "none"), "activations",
              f"must be none with {self.weights} weights (float casts quantize no activations)")
        check(not (self.activations == "dynamic" and self.bits != 8), "activations",
              f"dynamic activations need int8 weights; use activations: int8 or none with {self.weights} weights")
        check(not (self.activations == "int8" and self.group_size), "group_size",
              "static int8 activations need one weight scale per channel; set group_size: null")
        check(not (self.activations == "int8" and not self.symmetric), "symmetric",
              "static int8 needs symmetric weights (onnxruntime's integer kernels require weight zero point 0)")
        check(self.group_size is None or self.group_size >= 2, "group_size", f"must be >= 2 or null, got {self.group_size}")

    def _check_calibration(self):
        """How much data calibration reads."""
        check(self.calibration_batches >= 1, "calibration_batches", "must be >= 1")
        check(self.batch_size >= 1, "batch_size", "must be >= 1")

    def _check_recovery(self):
        """CLE, bias correction, AdaRound, QAT and mixed precision: the weights they need and how they combine."""
        check(self.adaround_iterations >= 1, "adaround_iterations", "must be >= 1")
        for name in ("cle", "bias_correction", "adaround", "qat", "mixed"):
            allowed = self.bits is not None and (self.bits > 1 or name in ("cle", "bias_correction"))
            check(not getattr(self, name) or allowed, name, f"needs integer weights (int2..int8), not {self.weights}")
        check(not (self.cle and not self.fold_batchnorm), "cle", "needs fold_batchnorm: true (pairs are equalized through folded BatchNorms)")
        check(not (self.adaround and self.qat), "adaround", "choose adaround or qat, not both (QAT learns the weights itself)")

    def _check_mixed(self):
        """Mixed precision starts every layer at the widest candidate, with per-channel scales."""
        if self.mixed:
            widest = max(self.mixed.bits)
            check(self.bits == widest, "weights", f"must be int{widest}, the widest of mixed.bits")
            check(self.group_size is None, "group_size", "mixed precision uses per-channel scales; set group_size: null")

    def _check_method(self):
        """Rounding methods and SmoothQuant: the formats they work on and what they combine with."""
        check(self.method in METHODS, "method", f"{self.method!r} is not supported; use one of {', '.join(METHODS)}")
        if self.method != "rtn":
            check(self.bits is not None and self.bits >= 2, "method",
                  f"{self.method} needs integer weights (int2..int8), not {self.weights}")
            check(self.activations != "int8", "method", f"{self.method} rounds weights for weight-only or dynamic "
                  "quantization; set activations: none (or dynamic with int8 weights)")
            check(not (self.adaround or self.qat), "method", f"{self.method} chooses the rounding itself; "
                  "drop adaround and qat, or use method: rtn")
        check(0 < self.gptq_damping <= 1, "gptq_damping", f"must be in (0, 1], got {self.gptq_damping}")
        if self.smooth is not None:
            check(0 <= self.smooth <= 1, "smooth", f"must be in [0, 1] or null, got {self.smooth}")
            check(self.activations == "int8", "smooth", "SmoothQuant eases static activation quantization; "
                  "it needs activations: int8")
            check(not (self.adaround or self.qat or self.mixed), "smooth",
                  "not with adaround, qat or mixed (they rebuild layers without the smoothing multiplier)")

    @property
    def needs_data(self) -> bool:
        """Static activations, GPTQ, AWQ, AdaRound, bias correction, QAT and mixed precision use data."""
        return (self.activations == "int8" or self.method in ("gptq", "awq")
                or bool(self.adaround or self.bias_correction or self.qat or self.mixed))

    @property
    def is_float(self) -> bool:
        return self.weights in ("fp16", "bf16")

    @property
    def bits(self) -> int | None:
        """Integer weight width (1 for binary), or None for float casts."""
        return None if self.is_float else 1 if self.weights == "binary" else int(self.weights[3:])
