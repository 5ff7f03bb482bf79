"""A real text corpus on every machine: the Python standard library's own source files, split by whole module.

    corpus = stdlib_corpus.load()                                   # {train, heldout} module paths
    tokenizer = stdlib_corpus.train_tokenizer(corpus.texts("train"))  # byte-level BPE, 4,096 tokens
    ids, mask = stdlib_corpus.token_blocks(stdlib_corpus.token_stream(tokenizer, corpus.texts("heldout")), 256)

The corpus is every ``.py`` file under ``sysconfig.get_paths()["stdlib"]`` read as UTF-8, except:

- test suites: every directory named ``test``, ``tests`` or ``idle_test`` (CPython's, lib2to3's, idlelib's own);
- ``site-packages`` (installed third-party packages live under the stdlib folder) and ``__pycache__``;
- generated data: ``pydoc_data`` (Sphinx's help topics, 0.76 MB of English in one dict) and the character
  mapping codecs (``encodings/cp1252.py`` and ~70 alike: byte-to-character tables so alike that a held-out one
  would be predicted almost perfectly).

idlelib, turtledemo, lib2to3 and distutils stay in: they are ordinary Python code. A module (one file) is held out
when the SHA-256 of its path relative to the stdlib, read as a number, is below ``heldout_percent`` percent of
the range, so the split depends on the path only and the same module is held out on every machine (5%: 34 of
660 modules, 0.34 of 10.1 MB on CPython 3.11.7). Another Python version has other files: :meth:`Corpus.describe`
gives a fingerprint of the exact texts, which a model's train.json records.
"""
from __future__ import annotations

import hashlib
import math
import os
import platform
import sysconfig
from dataclasses import dataclass, replace
from pathlib import Path

import torch

EOS = "<|endoftext|>"  # ends every module in the token stream; also the padding token
SKIPPED_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "__pycache__", "pydoc_data"})
CODEC_TABLE = "Character Mapping Codec"  # in the docstring of every character mapping codec
SPLITS = ("train", "heldout")


@dataclass(frozen=True)
class Corpus:
    """Module paths (relative to ``root``, sorted) of each split; ``texts(split)`` reads them."""

    root: Path
    train: tuple[str, ...]
    heldout: tuple[str, ...]
    limit: int | None = None  # the ``modules`` of :meth:`limited`, None for the whole corpus

    def texts(self, split: str) -> list[str]:
        """The source text of every module of ``split`` (``train`` or ``heldout``), in path order."""
        return [self._text(path) for path in getattr(self, split)]

    def limited(self, modules: int | None) -> Corpus:
        """The first ``modules`` training modules and the first 1/19 as many held-out ones (at least one), for
        quick runs; ``None`` keeps everything."""
        if modules is None:
            return self
        return replace(self, train=self.train[:modules], heldout=self.heldout[:max(1, math.ceil(modules / 19))],
                       limit=modules)

    def describe(self) -> dict:
        """What a result should record: the Python, module and byte counts, and a fingerprint of every text."""
        digest = hashlib.sha256()
        sizes = {}
        for split in SPLITS:
            texts = self.texts(split)
            sizes[split] = {"modules": len(texts), "bytes": sum(len(t.encode()) for t in texts)}
            for path, text in zip(getattr(self, split), texts):
                digest.update(f"{split}\0{path}\0".encode() + text.encode() + b"\0")
        return {"stdlib": str(self.root), "python": platform.python_version(), "modules_limit": self.limit,
                **sizes, "fingerprint": digest.hexdigest()}

    def _text(self, path: str) -> str:
        return (self.root / path).read_text(encoding="utf-8")


def is_heldout(path: str, heldout_percent: float) -> bool:
    """Whether the module at ``path`` (relative, POSIX) is held out: a stable hash of the path, not of the text."""
    value = int.from_bytes(hashlib.sha256(path.encode()).digest()[:8], "big")
    return value < heldout_percent / 100 * 2**64


def load(root: str | Path | None = None, heldout_percent: float = 5.0) -> Corpus:
    """The standard library's modules (those of the running Python unless ``root``), split into train and held out."""
    root = Path(root or sysconfig.get_paths()["stdlib"])
    paths = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = [name for name in subfolders if name not in SKIPPED_DIRS]
        paths += [(Path(folder) / name).relative_to(root).as_posix() for name in files if name.endswith(".py")]
    paths = [p for p in sorted(paths) if CODEC_TABLE not in (root / p).read_text(encoding="utf-8")[:2000]]
    heldout = tuple(p for p in paths if is_heldout(p, heldout_percent))
    return Corpus(root, tuple(p for p in paths if p not in heldout), heldout)


def train_tokenizer(texts: list[str], vocab_size: int = 4096):
    """A byte-level BPE tokenizer (GPT-2's pre-tokenization, any byte encodable) trained on ``texts``, as a
    transformers ``PreTrainedTokenizerFast`` whose end-of-text token also pads; the same texts give the same
    tokenizer. Its ``save_pretrained`` folder loads with ``AutoTokenizer``."""
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer)
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=EOS, pad_token=EOS)


def token_stream(tokenizer, texts: list[str]) -> torch.Tensor:
    """Every text's token ids followed by the end-of-text token, all in one 1-D int64 tensor."""
    ids = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
    return torch.tensor([token for text in ids for token in (*text, tokenizer.eos_token_id)], dtype=torch.long)


def token_blocks(stream: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)``, each (blocks, ``length``): ``stream`` cut into consecutive blocks (the
    incomplete last one dropped), every token unmasked."""
    blocks = len(stream) // length
    ids = stream[: blocks * length].view(blocks, length)
    return ids, torch.ones_like(ids)
