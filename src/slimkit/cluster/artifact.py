"""The Deep-Compression artifact: a clustered (and pruned) model's state dict, entropy-coded into one file.

Each clustered weight is stored as (a) the gaps between its non-zero positions (relative indexing, one byte
per gap, 255 meaning "255 more, continue") and (b) one cluster index per non-zero weight; every other tensor
(codebooks, biases, BatchNorm) is stored whole, its bytes grouped by significance (byte shuffle). The three
streams are LZMA-coded separately (order-0 literal contexts: an adaptive arithmetic coder). Decoding gives
back the exact state dict, packed indices included.

Layout: ``MAGIC``, then four (uint32 little-endian length, raw LZMA2 stream) pairs: the JSON header,
the whole tensors, the gaps and the cluster indices.
"""
from __future__ import annotations

import json
import lzma
import math
import struct
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import UserError
from .packing import pack_bits, unpack_bits
from .shared import SharedWeight

MAGIC = b"SLIMDC1\n"
STREAMS = ("header", "whole_tensors", "gaps", "cluster_indices")
_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, "lc": 0, "lp": 0, "pb": 0}]
_ESCAPE = 255


def encode(model: nn.Module) -> bytes:
    """The artifact bytes of ``model``'s state dict (clustered weights coded as sparse cluster indices)."""
    shared = {f"{name}.indices": m for name, m in model.named_modules() if isinstance(m, SharedWeight)}
    header, whole, gaps, indices = [], bytearray(), bytearray(), bytearray()
    for key, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        entry = {"key": key, "dtype": str(tensor.dtype).removeprefix("torch."), "shape": list(tensor.shape)}
        if key in shared:
            layer = shared[key]
            index = unpack_bits(tensor, layer.bits, math.prod(layer.shape))
            entry.update(bits=layer.bits, count=math.prod(layer.shape), zero=layer.zero)
            if layer.zero:
                where = index.nonzero().flatten()
                coded = _gap_bytes(where)
                entry.update(nonzero=len(where), gap_bytes=len(coded))
                gaps += coded
                index = index[where] - 1
            indices += index.to(torch.uint8).numpy().tobytes()
        else:
            whole += _shuffle(tensor)
        header.append(entry)
    streams = [json.dumps(header, separators=(",", ":")).encode(), whole, gaps, indices]  # in STREAMS order
    return MAGIC + b"".join(_frame(lzma.compress(bytes(s), lzma.FORMAT_RAW, filters=_FILTERS)) for s in streams)


def decode(data: bytes) -> dict[str, Tensor]:
    """The exact state dict stored by :func:`encode`."""
    streams = [lzma.decompress(s, lzma.FORMAT_RAW, filters=_FILTERS) for s in _frames(data)]
    header = json.loads(streams[0])
    whole, gaps, indices = (torch.from_numpy(np.frombuffer(s, dtype=np.uint8).copy()) for s in streams[1:])
    state, cursor = {}, {"whole": 0, "gaps": 0, "indices": 0}

    def take(name: str, stream: Tensor, n: int) -> Tensor:
        start, cursor[name] = cursor[name], cursor[name] + n
        return stream[start : start + n]

    for entry in header:
        dtype, shape = getattr(torch, entry["dtype"], None), entry["shape"]
        if not isinstance(dtype, torch.dtype):
            raise UserError(f"artifact: tensor {entry['key']!r} has unknown dtype {entry['dtype']!r}; the file is damaged.")
        if "bits" not in entry:
            n = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
            state[entry["key"]] = _unshuffle(take("whole", whole, n), dtype, shape)
            continue
        if entry["zero"]:
            where = _positions(take("gaps", gaps, entry["gap_bytes"]))
            index = torch.zeros(entry["count"], dtype=torch.long)
            index[where] = take("indices", indices, entry["nonzero"]).long() + 1
        else:
            index = take("indices", indices, entry["count"]).long()
        state[entry["key"]] = pack_bits(index, entry["bits"]).view(shape)
    return state


def save_artifact(model: nn.Module, path: str | Path) -> int:
    """Write :func:`encode`'s bytes to ``path``; returns the file's size in bytes."""
    data = encode(model)
    Path(path).write_bytes(data)
    return len(data)


def load_artifact(path: str | Path) -> dict[str, Tensor]:
    """The state dict stored in an artifact file (load it into the clustered model's structure)."""
    return decode(Path(path).read_bytes())


def stream_sizes(data: bytes) -> dict[str, int]:
    """Where an artifact's bytes go: coded bytes per stream (:data:`STREAMS`), plus magic and framing."""
    coded = dict(zip(STREAMS, map(len, _frames(data))))
    return {**coded, "magic_and_framing": len(data) - sum(coded.values())}


def _frame(stream: bytes) -> bytes:
    return struct.pack("<I", len(stream)) + stream


def _frames(data: bytes) -> list[bytes]:
    if not data.startswith(MAGIC):
        raise UserError("not a slimkit Deep-Compression artifact (bad magic); write one with slimkit.cluster.save_artifact.")
    frames, at = [], len(MAGIC)
    for _ in STREAMS:
        (length,) = struct.unpack_from("<I", data, at)
        frames.append(data[at + 4 : at + 4 + length])
        at += 4 + length
    return frames


def _gap_bytes(where: Tensor) -> bytes:
    """Zeros skipped before each non-zero position, as bytes: ``255`` adds 255 and continues, others end a gap."""
    gaps = torch.diff(where, prepend=where.new_tensor([-1])) - 1
    runs = gaps // _ESCAPE
    coded = torch.full((int(runs.sum()) + len(gaps),), _ESCAPE, dtype=torch.uint8)
    ends = torch.cumsum(runs + 1, 0) - 1
    coded[ends] = (gaps % _ESCAPE).to(torch.uint8)
    return coded.numpy().tobytes()


def _positions(coded: Tensor) -> Tensor:
    """Inverse of :func:`_gap_bytes`: the non-zero positions."""
    skipped = torch.cumsum(coded.long(), 0)[coded != _ESCAPE]
    return skipped + torch.arange(len(skipped))


def _shuffle(tensor: Tensor) -> bytes:
    """The tensor's bytes, byte 0 of every element first, then byte 1, ... (numbers' exponents line up)."""
    raw = tensor.reshape(-1).view(torch.uint8).view(-1, tensor.element_size())
    return raw.T.contiguous().numpy().tobytes()


def _unshuffle(data: Tensor, dtype: torch.dtype, shape: list[int]) -> Tensor:
    size = torch.empty((), dtype=dtype).element_size()
    return data.view(size, -1).T.flatten().clone().view(dtype).view(shape)  # clone: a fresh, aligned buffer
