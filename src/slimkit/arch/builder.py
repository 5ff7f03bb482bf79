"""Build a classifier from a list of block choices, from an architecture file, or from search parameters."""
from __future__ import annotations

import json
import math
from pathlib import Path

from torch import Tensor, nn

from ..errors import UserError
from ..files import read_text, yaml_loader
from ..models.spec import register_scheme
from .blocks import BLOCKS, conv_bn

REQUIRED = ("type", "out")


class ArchNet(nn.Module):
    """Stem (3x3 conv) -> blocks -> global average pool -> linear classifier.

    Built from a config ``{"input_shape": [C, H, W], "num_classes": K, "stem": width, "blocks": [...]}``;
    each block is ``{"type": name, "out": channels, "stride": 1|2, ...options}`` with a type from
    :data:`slimkit.arch.BLOCKS`. The config rides along as ``.config`` (JSON-able) so the model can be rebuilt.
    """

    def __init__(self, config: dict):
        super().__init__()
        self.config = validate(config)
        cin = self.config["input_shape"][0]
        self.stem = conv_bn(cin, self.config["stem"], 3, act=nn.ReLU(inplace=True))
        layers, width = [], self.config["stem"]
        for i, block in enumerate(self.config["blocks"]):
            cls, _ = BLOCKS[block["type"]]
            options = {k: v for k, v in block.items() if k not in REQUIRED}
            try:
                layers.append(cls(width, block["out"], **options))
            except (ValueError, TypeError) as exc:
                raise UserError(f"architecture.blocks[{i}]: {exc}.") from exc
            width = block["out"]
        self.blocks = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, self.config["num_classes"])

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.blocks(self.stem(x))).flatten(1))


def validate(config: dict) -> dict:
    """Check an architecture config; errors name the field (``blocks[1].expand``)."""
    if not isinstance(config, dict):
        raise UserError(f"An architecture is a mapping with input_shape, num_classes, stem and blocks; got {type(config).__name__}.")
    unknown = set(config) - {"input_shape", "num_classes", "stem", "blocks"}
    if unknown:
        raise UserError(f"architecture: unknown key(s) {sorted(unknown)}; known: input_shape, num_classes, stem, blocks.")
    shape = config.get("input_shape")
    if not (isinstance(shape, (list, tuple)) and len(shape) == 3 and all(isinstance(v, int) and v >= 1 for v in shape)):
        raise UserError(f"architecture.input_shape: expected [C, H, W] positive integers, got {shape!r}.")
    for key in ("num_classes", "stem"):
        if not isinstance(config.get(key), int) or config[key] < 1:
            raise UserError(f"architecture.{key}: expected a positive integer, got {config.get(key)!r}.")
    blocks = config.get("blocks")
    if not isinstance(blocks, list) or not blocks:
        raise UserError("architecture.blocks: expected a non-empty list of {type, out, stride, ...} mappings.")
    for i, block in enumerate(blocks):
        where = f"architecture.blocks[{i}]"
        if not isinstance(block, dict) or any(k not in block for k in REQUIRED):
            raise UserError(f"{where}: expected a mapping with at least `type` and `out`, got {block!r}.")
        if block["type"] not in BLOCKS:
            raise UserError(f"{where}.type: unknown block {block['type']!r}; choose from {', '.join(BLOCKS)}.")
        allowed = {"type", "out", "stride", *BLOCKS[block["type"]][1]}
        for key in block:
            if key not in allowed:
                raise UserError(f"{where}.{key}: not an option of {block['type']}; options: {', '.join(sorted(allowed))}.")
        if block.get("stride", 1) not in (1, 2):
            raise UserError(f"{where}.stride: must be 1 or 2, got {block['stride']!r}.")
        if not isinstance(block["out"], int) or block["out"] < 1:
            raise UserError(f"{where}.out: expected a positive integer, got {block['out']!r}.")
    return json.loads(json.dumps({**config, "input_shape": list(shape)}))


def build(blocks: list[dict], input_shape: tuple[int, int, int], num_classes: int, stem: int = 16) -> ArchNet:
    """A classifier for (C, H, W) inputs from a list of block choices (see :class:`ArchNet`)."""
    return ArchNet({"input_shape": list(input_shape), "num_classes": num_classes, "stem": stem, "blocks": list(blocks)})


def _round_width(kind: str, width: int, options: dict) -> int:
    """The smallest valid width >= ``width`` for a block type (Fire: even; ShuffleUnit: multiple of 4 x groups)."""
    multiple = {"fire": 2, "shuffle": 4 * int(options.get("groups", 2))}.get(kind, 1)
    return math.ceil(width / multiple) * multiple


def from_params(params: dict, input_shape: tuple[int, int, int], num_classes: int) -> ArchNet:
    """Build from flat search parameters: ``stem`` and, per stage i = 1, 2, ...: ``s{i}.block``,
    ``s{i}.width``, ``s{i}.depth`` (blocks in the stage, default 1) and the block's own options
    (``s{i}.expand``, ``s{i}.groups``, ...). Stage 1 keeps the resolution; each later stage halves it.
    Widths are rounded up to what the block needs."""
    stages = sorted(int(k[1:].split(".")[0]) for k in params if k.startswith("s") and k.endswith(".block"))
    if not stages:
        raise UserError("from_params: no stage parameters; declare at least `s1.block` and `s1.width` in the space.")
    known = {"stem"} | {f"s{i}.{name}" for i in stages for name in ("block", "width", "depth")}
    blocks = []
    for n, i in enumerate(stages):
        kind = params[f"s{i}.block"]
        if kind not in BLOCKS:
            raise UserError(f"s{i}.block: unknown block {kind!r}; choose from {', '.join(BLOCKS)}.")
        options = {name: params[f"s{i}.{name}"] for name in BLOCKS[kind][1] if f"s{i}.{name}" in params}
        known |= {f"s{i}.{name}" for name in options}
        if f"s{i}.width" not in params:
            raise UserError(f"from_params: stage {i} has `s{i}.block` but no `s{i}.width`.")
        width = _round_width(kind, int(params[f"s{i}.width"]), options)
        for d in range(int(params.get(f"s{i}.depth", 1))):
            blocks.append({"type": kind, "out": width, "stride": 2 if n > 0 and d == 0 else 1, **options})
    unused = sorted(set(params) - known)
    if unused:
        raise UserError(f"from_params: parameter(s) {unused} are not architecture parameters (stem, s<i>.block/width/depth "
                        "or an option of the stage's block); put training parameters under `train:` in the space.")
    return build(blocks, input_shape, num_classes, stem=int(params.get("stem", 16)))


def load_arch(text: str) -> ArchNet:
    """An ArchNet from inline JSON (``{...}``) or a YAML/JSON file holding its config (the ``arch:`` SPEC).

    The config is validated, and its parameters counted on the meta device, before any memory is allocated.
    """
    import yaml

    from ..models.checkpoint import check_params

    if text.lstrip().startswith("{"):
        source, raw, parse = f"arch:{text[:40]}...", text, json.loads
    else:
        source, raw, parse = f"arch:{text}", read_text(Path(text), "the architecture file"), _load_yaml
    try:
        config = parse(raw)
        check_params(lambda: ArchNet(config), source)
    except UserError as exc:
        raise UserError(f"{source}: {exc}") from None
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise UserError(f"{source}: not valid JSON/YAML ({exc}).") from None
    except (RecursionError, TypeError, ValueError, RuntimeError) as exc:
        raise UserError(f"{source}: not a valid architecture ({type(exc).__name__}: {exc}).") from None
    return ArchNet(config)


register_scheme("arch", load_arch)


def _load_yaml(text: str):
    """Plain YAML data; aliases are refused, since expanding them can blow a small file up exponentially."""
    import yaml

    if any(isinstance(event, yaml.AliasEvent) for event in yaml.parse(text, yaml_loader())):
        raise UserError("YAML aliases (*name) are not allowed in an architecture.")
    return yaml.load(text, yaml_loader())


def arch_spec(model: ArchNet) -> str:
    """The self-contained SPEC (``arch:{json}``) that rebuilds ``model``'s architecture."""
    return "arch:" + json.dumps(model.config, separators=(",", ":"))
