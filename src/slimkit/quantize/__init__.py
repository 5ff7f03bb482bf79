"""Quantization: observers, integer weight storage, static/dynamic INT8, low-bit and binary weights, FP16/BF16,
weight rounding by GPTQ, AWQ or HQQ, SmoothQuant, and accuracy recovery (Cross-Layer Equalization, bias correction,
AdaRound, QAT/LSQ, mixed precision).

Importing this package registers the ``quantize`` recipe step (:class:`Quantize`).
"""
from .config import Mixed, QAT, Quantize
from .convert import Plan, quantize_model, quantized_layers
from .export import dequantized_copy, export_dynamic_int8  # also registers the dynamic INT8 ONNX exporter
from .modules import QuantConv2d, QuantEmbedding, QuantLinear, QuantModule, WeightFormat
from .nbits import export_nbits  # also registers the MatMulNBits / GatherBlockQuantized ONNX exporter
from .observers import (EntropyObserver, MinMaxObserver, MovingAverageMinMaxObserver, MSEObserver, Observer,
                        PercentileObserver, make_observer)
from .ops import dequantize, fake_quantize, qparams, qrange, quantize, sqnr

__all__ = [
    "EntropyObserver", "MSEObserver", "MinMaxObserver", "Mixed", "MovingAverageMinMaxObserver", "Observer",
    "PercentileObserver", "Plan", "QAT", "QuantConv2d", "QuantEmbedding", "QuantLinear", "QuantModule", "Quantize",
    "WeightFormat", "dequantize", "dequantized_copy", "export_dynamic_int8", "export_nbits", "fake_quantize", "make_observer", "qparams", "qrange", "quantize",
    "quantize_model", "quantized_layers", "sqnr",
]
