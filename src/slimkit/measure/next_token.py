"""Next-token loss and perplexity of a causal language model (``hf:DIR`` of a GPT-2, Llama, Qwen, ... folder)."""
from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import Tensor, nn

from ..errors import UserError


@torch.inference_mode()
def next_token_loss(model: nn.Module, token_batches: Iterable[Tensor | tuple[Tensor, ...]]) -> float:
    """Mean cross-entropy (nats) of each token given the tokens before it, over every predicted token.

    ``model(input_ids, attention_mask)`` returns logits (batch, length, vocabulary). Each batch is ``input_ids``
    (batch, length) or ``(input_ids, attention_mask)``; tokens whose mask is 0 (padding) are not predicted.
    """
    total, count = 0.0, 0
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    for batch in token_batches:
        ids, mask = (batch, None) if isinstance(batch, Tensor) else (batch[0], batch[1] if len(batch) > 1 else None)
        mask = torch.ones_like(ids) if mask is None else mask
        logits = model(ids.to(device), mask.to(device))
        if not isinstance(logits, Tensor) or logits.dim() != 3 or logits.shape[:2] != ids.shape:
            raise UserError(f"Next-token loss needs a causal language model's logits (batch, length, vocabulary) for "
                            f"token ids {tuple(ids.shape)}; {type(model).__name__} returned "
                            f"{tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__}.")
        targets = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100).to(device)
        total += nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten(),
                                             ignore_index=-100, reduction="sum").item()
        count += int((targets != -100).sum())
    if count == 0:
        raise UserError("No token to predict: give batches of at least two unmasked tokens per sequence.")
    return total / count


def perplexity(model: nn.Module, token_batches: Iterable[Tensor | tuple[Tensor, ...]]) -> float:
    """exp(:func:`next_token_loss`): how many tokens, on average, the model hesitates between (1 is perfect)."""
    return math.exp(next_token_loss(model, token_batches))
