"""AdaRound (Nagel et al., 2020): learn, per weight, whether to round down or up.

Each layer's weight becomes ``scale * (floor(w / scale) + h(V))`` with h a rectified sigmoid of a learned
V, fitted with Adam so the layer's output on calibration inputs matches the float layer's. A regularizer
``sum(1 - |2h - 1| ** beta)``, with beta annealed from 20 to 2, pushes every h to 0 or 1 so the learned
rounding is exact integers at the end. Layers are done in order, each on inputs from the already rounded
layers before it.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor, nn

from .modules import QuantEmbedding, QuantModule

ZETA, GAMMA = 1.1, -0.1  # stretch of the rectified sigmoid, so h reaches exactly 0 and 1
BETA = (20.0, 2.0)
WARMUP = 0.2  # fraction of iterations with reconstruction loss only
REG_WEIGHT = 0.01
LR = 1e-2  # higher than the paper's 1e-3: hundreds of iterations here, not 10k
BATCH = 32


def _h(v: Tensor) -> Tensor:
    return (torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA).clamp(0, 1)


def _init_v(rest: Tensor) -> Tensor:
    """V with h(V) == rest (the fractional part), so learning starts from the float weight."""
    rest = rest.clamp(1e-4, 1 - 1e-4)
    return -torch.log((ZETA - GAMMA) / (rest - GAMMA) - 1)


def reconstruction_error(output: Tensor, target: Tensor) -> Tensor:
    """Squared error summed over channels (dim 1 of conv outputs, last dim otherwise), averaged over the rest."""
    return (output - target).pow(2).sum(1 if output.dim() == 4 else -1).mean()


@torch.no_grad()
def layer_inputs(model: nn.Module, name: str, data: Iterable[tuple]) -> Tensor:
    """Inputs that the named layer receives while ``model`` runs over ``data``."""
    seen = []
    handle = model.get_submodule(name).register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    try:
        model.eval()
        for batch in data:
            model(*batch)
    finally:
        handle.remove()
    return torch.cat(seen)


def adaround_layer(layer: QuantModule, weight: Tensor, bias: Tensor | None, inputs: Tensor, iterations: int,
                   progress: bool = False, seed: int = 0) -> dict[str, float]:
    """Learn the rounding of ``layer`` (already holding round-to-nearest weights and scales) so that its
    output on ``inputs`` matches the float ``weight``/``bias``; stores the result.

    Returns the mean reconstruction error of round-to-nearest and of AdaRound on ``inputs``.
    """
    from tqdm.auto import tqdm

    qmin, qmax = layer.fmt.qmin_qmax
    scale = layer.weight_scale.reshape(-1, 1).float()
    zero = layer.weight_zero_point.reshape(-1, 1).float()
    weight = weight.detach().float()
    rows = layer._rows(weight)
    floor = torch.floor(rows / scale)
    v = nn.Parameter(_init_v(rows / scale - floor))
    x = layer.qdq(inputs, "input")
    bias = None if bias is None else bias.detach().float()

    def soft_weight(h: Tensor) -> Tensor:
        return ((torch.clamp(floor + h + zero, qmin, qmax) - zero) * scale).reshape(layer.weight_shape)

    @torch.no_grad()
    def error(w: Tensor) -> float:
        chunks = x.split(256)
        return sum(float(reconstruction_error(layer.op(b, w, bias), layer.op(b, weight, bias))) for b in chunks) / len(chunks)

    rtn = error(layer.dequantized())
    opt = torch.optim.Adam([v], lr=LR)
    gen = torch.Generator().manual_seed(seed)
    warmup = int(WARMUP * iterations)
    for it in tqdm(range(iterations), desc="adaround", disable=not progress, leave=False):
        batch = x[torch.randint(len(x), (min(BATCH, len(x)),), generator=gen)]
        with torch.no_grad():
            target = layer.op(batch, weight, bias)
        h = _h(v)
        loss = reconstruction_error(layer.op(batch, soft_weight(h), bias), target)
        if it >= warmup:
            beta = BETA[1] + (BETA[0] - BETA[1]) * (1 - (it - warmup) / max(iterations - warmup, 1))
            loss = loss + REG_WEIGHT * (1 - (2 * h - 1).abs().pow(beta)).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        q = torch.clamp(floor + (v >= 0).float() + zero, qmin, qmax).to(torch.int32).reshape(layer.weight_shape)
        layer.load_quantized(q, layer.weight_scale, layer.weight_zero_point, layer.bias_value(), {})
    return {"rtn_error": rtn, "adaround_error": error(layer.dequantized())}


def adaround_model(model: nn.Module, float_params: dict[str, tuple[Tensor, Tensor | None]], data: list[tuple],
                   iterations: int, progress: bool = False) -> dict[str, dict[str, float]]:
    """AdaRound every quantized layer named in ``float_params`` ({name: (float weight, float bias)}) in order.

    Embedding tables keep round-to-nearest (a lookup has no reconstruction error to learn from).
    """
    from tqdm.auto import tqdm

    results = {}
    for name in tqdm(list(float_params), desc="adaround layers", disable=not progress, leave=False):
        layer = model.get_submodule(name)
        if isinstance(layer, QuantEmbedding):
            continue
        weight, bias = float_params[name]
        results[name] = adaround_layer(layer, weight, bias, layer_inputs(model, name, data), iterations, progress)
    return results
