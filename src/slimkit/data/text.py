"""A deterministic English text corpus for embedding models.

The sentences come from the docstrings of the Python standard library installed on the machine
(read with ``ast``, nothing is imported or executed), so the corpus needs no download.
"""
from __future__ import annotations

import ast
import dataclasses
import random
import re
import sysconfig
from functools import lru_cache
from pathlib import Path

import torch

from ..errors import UserError
from .task import Task

_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_PLAIN = re.compile(r"[A-Z][A-Za-z0-9 ,;:'\"()\-]+[.!?]")


def _docstrings(path: Path):
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc:
                yield doc


@lru_cache(maxsize=1)
def _all_sentences() -> tuple[str, ...]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    seen: dict[str, None] = {}
    for path in sorted(stdlib.glob("*.py")) + sorted(stdlib.glob("*/*.py")):
        if "test" in path.parent.name or path.name.startswith("test"):  # skip test suites
            continue
        for doc in _docstrings(path):
            for sentence in _SPLIT.split(" ".join(doc.split())):
                if 6 <= len(sentence.split()) <= 40 and _PLAIN.fullmatch(sentence):
                    seen.setdefault(sentence, None)
    return tuple(seen)


def sentences(n: int = 4000, seed: int = 0) -> list[str]:
    """``n`` distinct English sentences, the same ones for the same Python installation and seed."""
    pool = list(_all_sentences())
    if len(pool) < n:
        raise UserError(f"Only {len(pool)} sentences found in the standard library; ask for fewer.")
    random.Random(seed).shuffle(pool)
    return pool[:n]


def load(tokenizer, n: int = 4000, test_fraction: float = 0.25, max_length: int = 128) -> Task:
    """Tokenise the corpus with ``tokenizer`` into a cosine-similarity Task (inputs: ids, mask)."""
    if tokenizer is None:
        raise UserError("The text dataset needs a model with a tokenizer, e.g. --model zoo:minilm or hf:DIR.")
    text = sentences(n)
    enc = tokenizer(text, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    # Trim padding columns that no sentence uses, so every batch is as short as the corpus allows.
    width = int(mask.sum(1).max())
    ids, mask = ids[:, :width].contiguous(), mask[:, :width].contiguous()
    n_test = int(n * test_fraction)
    return Task("text", (ids[n_test:], mask[n_test:]), (ids[:n_test], mask[:n_test]), "cosine", 2, None)


def truncated(task: Task, tokens: int) -> Task:
    """``task`` with every sentence cut to its first ``tokens`` tokens (a cheaper task for training: the corpus
    pads every sentence to its longest, while most need far fewer tokens)."""
    def cut(split: tuple) -> tuple:
        return tuple(t[:, :tokens].contiguous() for t in split)

    return dataclasses.replace(task, train=cut(task.train), test=cut(task.test))


def example_batch(tokenizer, batch_size: int = 32, length: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed-length batch (padded to ``length`` tokens) for latency measurements."""
    enc = tokenizer(sentences(batch_size), padding="max_length", truncation=True, max_length=length, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]
