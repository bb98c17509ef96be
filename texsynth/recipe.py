"""Turning user arguments (names, weights, options, objects) into backbone and loss modules."""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

import yaml
from torch import nn

from texsynth._logging import log
from texsynth.backbones import BACKBONES, Backbone, create_backbone
from texsynth.backbones.base import freeze_module
from texsynth.backbones.vgg import imagenet_weights_cached, imagenet_weights_path
from texsynth.errors import InvalidArgumentError
from texsynth.losses import LOSSES, TextureLoss, check_weight, create_loss
from texsynth.presets import (
    LBFGS_WOLFE,
    PRESETS,
    RELATIVE_GRAM_AND_SPECTRUM,
    RELATIVE_LAYER_LOSSES,
    Preset,
    get_preset,
)

LossSpec = Union[
    None,
    Mapping[str, Union[float, Mapping[str, Any]]],
    Sequence[Union[str, TextureLoss, tuple]],
    TextureLoss,
]


@dataclass
class Recipe:
    preset: Preset
    backbone: nn.Module
    backbone_name: str
    losses: dict[str, TextureLoss]
    #: the keyword options the named backbone was built with (preset's merged with the user's)
    backbone_options: dict[str, Any]


def default_preset_name() -> str:
    """VGG19 when its ImageNet weights are already cached, else the weight-free recipe.

    Never starts a download: a 548 MB surprise is worse than a weight-free default.
    """
    if imagenet_weights_cached():
        _say_once(f"backbone: vgg19 (ImageNet weights found in {imagenet_weights_path().parent})")
        return "vgg19"
    _say_once("backbone: random_pyramid (weight-free preset 'weight_free'); for VGG19 run "
              "`texsynth download-weights` or pass --weights PATH")
    return "weight_free"


#: the default's choices already reported in this process
_SAID: set[str] = set()


def _say_once(message: str) -> None:
    """Report the default's choice once per process: research code calls ``synthesize`` in loops."""
    if message not in _SAID:
        _SAID.add(message)
        log.info(message)


def resolve_recipe(
    preset: str | Preset | None = None,
    backbone: str | nn.Module | None = None,
    backbone_options: Mapping[str, Any] | None = None,
    weights: Any = None,
    losses: LossSpec = None,
) -> Recipe:
    preset_obj = resolve_preset(preset, backbone, weights)
    backbone_module, backbone_name, used_options = _resolve_backbone(
        preset_obj, backbone, backbone_options, weights
    )
    loss_modules = resolve_losses(losses, preset_obj)
    for loss in loss_modules.values():
        loss.bind(backbone_module if isinstance(backbone_module, Backbone) else None)
    return Recipe(preset_obj, backbone_module, backbone_name, loss_modules, used_options)


def resolve_preset(preset: str | Preset | None, backbone: str | nn.Module | None = None,
                   weights: Any = None) -> Preset:
    """The preset a run with these arguments uses: the named one, else the first built on
    ``backbone`` (on VGG19 if only ``weights`` are given: it is the backbone that has
    weights to load), else the default (:func:`default_preset_name`)."""
    if isinstance(preset, Preset):
        return preset
    if preset is not None:
        return get_preset(preset)
    if backbone is None and weights is not None:
        backbone = "vgg19"
    if backbone is None:
        return get_preset(default_preset_name())
    if isinstance(backbone, str):
        for candidate in PRESETS.names():  # the first preset built on this backbone
            if get_preset(candidate).backbone == backbone and candidate != "liu2016":
                return get_preset(candidate)
    name = backbone if isinstance(backbone, str) else type(backbone).__name__
    return Preset(
        name=f"{name}-default",
        description=f"Gram + colour spectrum on {name}'s texture layers",
        backbone=name,
        losses=RELATIVE_GRAM_AND_SPECTRUM,
        loss_defaults=RELATIVE_LAYER_LOSSES,
        lbfgs=LBFGS_WOLFE,
    )


def _resolve_backbone(
    preset: Preset,
    backbone: str | nn.Module | None,
    options: Mapping[str, Any] | None,
    weights: Any,
) -> tuple[nn.Module, str, dict[str, Any]]:
    if isinstance(backbone, nn.Module):
        if weights is not None:
            raise InvalidArgumentError("weights cannot be combined with a backbone module")
        if not isinstance(backbone, Backbone):
            freeze_module(backbone)
        return backbone, type(backbone).__name__, {}
    name = backbone or preset.backbone
    if not isinstance(name, str):
        raise InvalidArgumentError(f"backbone must be a name or nn.Module, got {type(name).__name__}")
    factory = BACKBONES.get(name)  # unknown names fail here with the list of known ones
    if weights is not None and "weights" not in inspect.signature(factory).parameters:
        raise InvalidArgumentError(f"weights: backbone {name!r} has no weights to load (vgg19 has)")
    if options is not None and not isinstance(options, Mapping):
        raise InvalidArgumentError(f"backbone_options must be a mapping, got {type(options).__name__}")
    merged = dict(preset.backbone_options) if name == preset.backbone else {}
    merged.update(options or {})
    if weights is not None:
        merged["weights"] = weights
    try:
        return create_backbone(name, **merged), name, merged
    except TypeError as error:
        raise InvalidArgumentError(f"backbone {name!r}: {error}") from None


def resolve_losses(spec: LossSpec, preset: Preset) -> dict[str, TextureLoss]:
    """Mapping: merged over the preset's losses (weight 0 drops one; a loss the preset lacks
    starts from its ``loss_defaults``). Sequence: replaces them, each loss with its own defaults."""
    if isinstance(spec, TextureLoss):
        spec = [spec]
    if spec is None or isinstance(spec, Mapping):
        options = preset.loss_options()
        for name, value in (spec or {}).items():
            known = options.get(name) or dict(preset.loss_defaults.get(name, {}))
            if isinstance(value, Mapping):
                options[name] = {**known, **value}
            else:
                options[name] = {**known, "weight": check_weight(value, f"loss {name!r}")}
        built = {name: _create(name, opts) for name, opts in options.items()}
    elif isinstance(spec, Sequence) and not isinstance(spec, str):
        built = {}
        for item in spec:
            name, loss = _from_item(item)
            unique, index = name, 2
            while unique in built:
                unique, index = f"{name}_{index}", index + 1
            built[unique] = loss
    else:
        raise InvalidArgumentError(
            f"losses must be a mapping, a sequence or a TextureLoss, got {type(spec).__name__}"
        )
    built = {name: loss for name, loss in built.items() if loss.weight != 0}
    if not built:
        raise InvalidArgumentError("no loss left to optimize (all weights are 0)")
    return built


def _create(name: str, options: Mapping[str, Any]) -> TextureLoss:
    LOSSES.get(name)  # unknown names fail here with the list of known ones
    try:
        loss = create_loss(name, **options)
    except TypeError as error:
        raise InvalidArgumentError(f"loss {name!r}: {error}") from None
    if not isinstance(loss, TextureLoss):
        raise InvalidArgumentError(f"loss {name!r} did not build a TextureLoss")
    loss.spec = (name, dict(options))  # how to build it again (written to run configs)
    return loss


def _from_item(item: Any) -> tuple[str, TextureLoss]:
    if isinstance(item, TextureLoss):
        return getattr(item, "name", None) or _snake(type(item).__name__), item
    if isinstance(item, str):
        return item, _create(item, {})
    if isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], str):
        name, value = item
        return name, _create(name, _as_loss_options(value))
    raise InvalidArgumentError(f"cannot make a loss from {item!r}")


def _as_loss_options(value: Any) -> dict[str, Any]:
    """A loss's entry in a spec as its options: a mapping of them, or a bare weight."""
    return dict(value) if isinstance(value, Mapping) else {"weight": value}


def merge_loss_settings(spec: LossSpec, settings: Mapping[str, Mapping[str, Any]]) -> LossSpec:
    """Apply ``--loss`` settings (``{name: {option: value}}``, the weight among them) to a loss
    spec from a config file.

    A sequence ``[[name, options], …]`` gets each named entry's options updated (weight 0
    removes it; a new name is appended); a mapping or no spec is merged as a mapping, so a loss
    of the preset keeps its other options.
    """
    if not settings:
        return spec
    if spec is None or isinstance(spec, Mapping):
        merged: dict[str, Any] = dict(spec or {})
        for name, options in settings.items():
            known = merged.get(name)
            merged[name] = {**(_as_loss_options(known) if known is not None else {}), **options}
        return merged
    merged_items, seen = [], set()
    for item in spec:
        name, options = (item[0], _as_loss_options(item[1])) if isinstance(item, (list, tuple)) else (item, {})
        if name in settings:
            seen.add(name)
            options.update(settings[name])
            if options.get("weight") == 0:
                continue
        merged_items.append([name, options])
    merged_items.extend([name, dict(options)] for name, options in settings.items()
                        if name not in seen and options.get("weight") != 0)
    return merged_items


def parse_loss_argument(text: str) -> tuple[str, dict[str, Any]]:
    """One ``--loss``: ``"gram=1e9"`` is ``("gram", {"weight": 1e9})``, and
    ``"spectrum.mode=luminance"`` is ``("spectrum", {"mode": "luminance"})``: an option's value
    is read as YAML (``64``, ``true``, ``[relu1_1, pool1]``), as in a config file."""
    key, sep, value = text.partition("=")
    name, dot, option = (part.strip() for part in key.partition("."))
    if not sep or not name or not value.strip() or (dot and not option.isidentifier()):
        raise InvalidArgumentError(
            f"--loss {text!r}: expected NAME=WEIGHT or NAME.OPTION=VALUE, e.g. gram=1 or spectrum.mode=luminance")
    if dot and option != "weight":
        try:
            return name, {option: yaml.safe_load(value)}
        except yaml.YAMLError:
            raise InvalidArgumentError(f"--loss {text!r}: value {value!r} is not a YAML value") from None
    try:
        weight = float(value)
    except ValueError:
        raise InvalidArgumentError(f"--loss {text!r}: weight {value!r} is not a number") from None
    if not math.isfinite(weight) or weight < 0:
        raise InvalidArgumentError(f"--loss {text!r}: weight must be finite and >= 0")
    return name, {"weight": weight}


def loss_settings(arguments: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Every ``--loss`` argument, gathered per loss (a later value of an option wins)."""
    settings: dict[str, dict[str, Any]] = {}
    for text in arguments:
        name, options = parse_loss_argument(text)
        settings.setdefault(name, {}).update(options)
    return settings


def _snake(name: str) -> str:
    name = re.sub(r"Loss$", "", name) or name
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
