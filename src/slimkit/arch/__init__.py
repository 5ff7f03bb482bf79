"""Efficient architectures: building blocks and a classifier builder from a list of block choices.

``build(blocks, input_shape, num_classes)`` mixes any of :data:`BLOCKS` (depthwise-separable,
inverted residual, Fire, ShuffleNet unit, dense block, residual basic and bottleneck);
``from_params`` builds from flat search parameters; ``arch:FILE.yaml`` (or ``arch:{json}``) is a model SPEC.
"""
from .blocks import (BLOCKS, Bottleneck, DenseBlock, DepthwiseSeparable, Fire, InvertedResidual, ShuffleUnit,
                     channel_shuffle)
from .builder import ArchNet, arch_spec, build, from_params, load_arch, validate

__all__ = [
    "ArchNet",
    "BLOCKS",
    "Bottleneck",
    "DenseBlock",
    "DepthwiseSeparable",
    "Fire",
    "InvertedResidual",
    "ShuffleUnit",
    "arch_spec",
    "build",
    "channel_shuffle",
    "from_params",
    "load_arch",
    "validate",
]
