"""Padding trimming for token models: a batch padded to a fixed length runs only up to its longest row.

Tokenizers pad every row of a batch to one length (``padding="max_length"`` pads short sentences to 128
tokens or more). Columns that no row's ``attention_mask`` covers change nothing in a model that ignores masked
positions, so a runtime with a symbolic token dimension can skip them. :func:`padding_is_inert` checks that the
model really ignores them before any trimming is allowed.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from ..models.outputs import output_tensor
from .base import Predictor

MASK = "attention_mask"


def mask_position(names: list[str], inputs: tuple) -> int | None:
    """The position of ``attention_mask`` among ``inputs`` when every input is a (batch, tokens) tensor of its
    shape (input_ids, token_type_ids, ...); None otherwise."""
    if MASK not in names:
        return None
    position = names.index(MASK)
    shape = inputs[position].shape
    return position if len(shape) == 2 and all(t.shape == shape for t in inputs) else None


def trim(inputs: tuple, position: int) -> tuple:
    """``inputs`` cut after the last column that some row's mask (at ``position``) covers; at least 2 columns
    are kept (exporters specialise a token dimension of 1)."""
    mask = inputs[position]
    used = mask.ne(0).any(0).nonzero()
    width = max(int(used[-1]) + 1 if len(used) else 1, min(2, mask.shape[1]))
    return inputs if width == mask.shape[1] else tuple(t[:, :width] for t in inputs)


def trimming(predictor: Predictor, position: int) -> Predictor:
    """``predictor`` running every batch trimmed (:func:`trim`) first."""
    run = predictor.run
    return dataclasses.replace(predictor, run=lambda *inputs: run(*trim(inputs, position)))


@torch.no_grad()
def padding_is_inert(model: nn.Module, inputs: tuple, position: int, atol: float = 1e-5) -> bool:
    """True when ``model`` gives the same output (shape and values within ``atol``) for ``inputs`` whose last
    two columns are masked out as for the same inputs without those columns."""
    if inputs[position].shape[1] < 4:
        return False
    masked = list(inputs)
    masked[position] = inputs[position].clone()
    masked[position][:, -2:] = 0
    model = model.eval()
    full, cut = output_tensor(model(*masked)), output_tensor(model(*(t[:, :-2] for t in masked)))
    return full.shape == cut.shape and bool(torch.allclose(full.float(), cut.float(), rtol=0, atol=atol))
