"""all-MiniLM-L6-v2 and its held-out sentences for the text benches, and the stand-in their smoke runs (CI) use:
its tokenizer and pooling on a tiny BERT."""
from __future__ import annotations

from pathlib import Path

import torch


def tiny_text_model():
    """A 1-layer, 32-wide BERT with all-MiniLM-L6-v2's tokenizer and pooling (same inputs and code path)."""
    import transformers

    from slimkit.models.hf import SentenceEmbedder, packaged_minilm_dir

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(packaged_minilm_dir()), local_files_only=True)
    config = transformers.BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=64, attn_implementation="eager")
    torch.manual_seed(0)
    return SentenceEmbedder(transformers.BertModel(config, add_pooling_layer=False).eval(), tokenizer)


def tiny_text_folder(folder: Path) -> str:
    """:func:`tiny_text_model` saved as a transformers folder; returns its SPEC (``hf:FOLDER``), which
    ``slimkit.load_model`` loads and a run's checkpoint can name."""
    model = tiny_text_model()
    model.encoder.save_pretrained(folder)
    model.tokenizer.save_pretrained(folder)
    return f"hf:{folder}"


def minilm_and_sentences(folder: Path, smoke: bool):
    """(the model, the "text" Task scored by cosine to it): zoo:minilm with every training sentence and 1,000
    held-out ones, or for a smoke run :func:`tiny_text_folder` saved in ``folder`` with 64 and 32."""
    import slimkit as sk

    baseline = sk.load_model(tiny_text_folder(folder) if smoke else "zoo:minilm").eval()
    task = sk.load_data("text", model=baseline)
    return baseline, task.subset(train=64, test=32) if smoke else task.subset(train=len(task.train[0]), test=1000)
