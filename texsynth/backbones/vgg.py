"""torchvision's VGG19 with readable layer names, frozen, for texture statistics.

Layer names follow the papers: ``conv1_1``, ``relu1_1``, …, ``pool1``, …, ``pool5``.
Gatys et al. (2015) and the reference use average pooling; in-place ReLUs are disabled so
a hooked pre-activation (e.g. ``conv1_1``, used by the reference) is not overwritten.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from torchvision.models import VGG19_Weights
from torchvision.models.vgg import cfgs, make_layers

from texsynth.backbones.base import Backbone
from texsynth.backbones.registry import register_backbone
from texsynth.errors import InvalidArgumentError, WeightsUnavailableError, torch_load_failure

IMAGENET_WEIGHTS = VGG19_Weights.IMAGENET1K_V1
IMAGENET_ALIASES = {"imagenet", "default", "imagenet1k_v1"}
RANDOM_ALIASES = {"none", "random"}


def imagenet_weights_path() -> Path:
    """Where torchvision caches the ImageNet VGG19 weights (``$TORCH_HOME/hub/checkpoints``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(IMAGENET_WEIGHTS.url)


def imagenet_weights_cached() -> bool:
    return imagenet_weights_path().is_file()


def download_imagenet_weights(progress: bool = True) -> Path:
    """Fetch the ImageNet VGG19 weights into torchvision's cache (548 MB)."""
    _load_imagenet_state_dict(progress=progress)
    return imagenet_weights_path()


def _vgg19_features(seed: int) -> nn.Sequential:
    """VGG19 ``features`` only (building the 120M-parameter classifier costs seconds), with
    torchvision's initialization (Kaiming-normal, fan-out) drawn from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    features = make_layers(cfgs["E"], batch_norm=False)
    with torch.no_grad():
        for module in features:
            if isinstance(module, nn.Conv2d):
                fan_out = module.out_channels * module.kernel_size[0] * module.kernel_size[1]
                std = (2.0 / fan_out) ** 0.5
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * std)
                module.bias.zero_()
    return features


def _vgg19_layer_names(features: nn.Sequential) -> list[str]:
    names, block, index = [], 1, 1
    for module in features:
        if isinstance(module, nn.Conv2d):
            names.append(f"conv{block}_{index}")
        elif isinstance(module, nn.ReLU):
            names.append(f"relu{block}_{index}")
            index += 1
        elif isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
            names.append(f"pool{block}")
            block, index = block + 1, 1
        else:  # pragma: no cover - torchvision's VGG has nothing else in `features`
            raise TypeError(f"unexpected VGG layer {module}")
    return names


class Normalize(nn.Module):
    """ImageNet mean/std normalization, or the identity when disabled."""

    def __init__(self, enabled: bool) -> None:
        super().__init__()
        self.enabled = enabled
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return (image - self.mean) / self.std if self.enabled else image

    def extra_repr(self) -> str:
        return f"enabled={self.enabled}"


class VGG19(Backbone):
    """Frozen VGG19 ``features`` with named layers and optional ImageNet input normalization.

    Children run in order: ``normalize``, ``conv1_1``, ``relu1_1``, …, ``pool5``.
    """

    texture_layers = ("relu1_1", "pool1", "pool2", "pool3", "pool4")
    sequential = True

    def __init__(
        self,
        weights: str | os.PathLike | None = "imagenet",
        pooling: str = "avg",
        normalize_input: bool | None = None,
        seed: int = 0,
        progress: bool = True,
    ) -> None:
        super().__init__()
        if pooling not in ("avg", "max"):
            raise InvalidArgumentError(f"pooling must be 'avg' or 'max', got {pooling!r}")
        self.weights_source = _describe_weights(weights)
        self.pooling = pooling
        features = _vgg19_features(seed)
        names = _vgg19_layer_names(features)
        self.torchvision_index = {name: i for i, name in enumerate(names)}
        state_dict = _load_weights(weights, progress=progress)
        if normalize_input is None:
            normalize_input = state_dict is not None
        self.add_module("normalize", Normalize(normalize_input))
        for name, module in zip(names, features):
            if isinstance(module, nn.ReLU):
                module = nn.ReLU(inplace=False)
            elif isinstance(module, nn.MaxPool2d) and pooling == "avg":
                module = nn.AvgPool2d(kernel_size=2, stride=2)
            self.add_module(name, module)
        self.covered_until = names[-1]
        if state_dict is not None:
            self._load_features(state_dict, names)
        self.freeze()

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        for module in self.children():
            image = module(image)
        return image

    def check_layers(self, layers: Sequence[str]) -> None:
        super().check_layers(layers)
        limit = self.torchvision_index[self.covered_until]
        beyond = [n for n in layers if self.torchvision_index.get(n, -1) > limit]
        if beyond:
            raise WeightsUnavailableError(
                f"VGG19 weights from {self.weights_source} only cover layers up to "
                f"{self.covered_until}; cannot use {', '.join(beyond)}"
            )

    def min_size(self, layers: Sequence[str]) -> int:
        deepest = max(self.torchvision_index[name] for name in layers)
        pools = sum(1 for n, i in self.torchvision_index.items() if n.startswith("pool") and i <= deepest)
        return 2**pools  # each pooling halves the image

    def receptive_field(self, layer: str) -> int | None:
        if layer not in self.torchvision_index:
            return None
        size, jump = 1, 1  # window side and spacing of neighbouring features, in input pixels
        for name in list(self.torchvision_index)[: self.torchvision_index[layer] + 1]:
            if name.startswith("conv"):  # every VGG19 convolution is 3x3, stride 1
                size += 2 * jump
            elif name.startswith("pool"):  # 2x2, stride 2
                size, jump = size + jump, jump * 2
        return size

    def prune(self, layers: Sequence[str]) -> None:
        """Drop the layers past the deepest tap; ReLUs run in place unless their input is a tap.

        In-place ReLUs save an allocation and a memory pass per layer (about 7% of an
        evaluation at 256x256 on CPU); a tapped activation must not be overwritten.
        """
        deepest = max(self.torchvision_index[name] for name in layers)
        for name, index in self.torchvision_index.items():
            if index > deepest and hasattr(self, name):
                delattr(self, name)
        previous = None
        for name, module in self.named_children():
            if isinstance(module, nn.ReLU):
                module.inplace = previous not in layers
            previous = name

    def _load_features(self, state_dict: dict[str, torch.Tensor], names: list[str]) -> None:
        convs = [n for n in names if n.startswith("conv")]
        own: dict[str, torch.Tensor] = {}
        for name in convs:
            index = self.torchvision_index[name]
            for kind in ("weight", "bias"):
                tensor = _find(state_dict, [f"features.{index}.{kind}", f"{index}.{kind}",
                                            f"{name}.{kind}"])
                if tensor is not None:
                    own[f"{name}.{kind}"] = tensor
        loaded = [n for n in convs if f"{n}.weight" in own]
        if not loaded or loaded != convs[: len(loaded)]:
            raise WeightsUnavailableError(
                f"VGG19 weights from {self.weights_source}: expected convolution weights with "
                "keys like 'features.0.weight' covering conv1_1 onwards without gaps"
            )
        try:
            self.load_state_dict(own, strict=False)
        except RuntimeError as error:
            first_line = str(error).strip().splitlines()[-1].strip()
            raise WeightsUnavailableError(
                f"VGG19 weights from {self.weights_source} do not fit VGG19: {first_line}"
            ) from None
        if len(loaded) < len(convs):
            # A partial file covers everything up to (not including) the next convolution.
            next_conv = self.torchvision_index[convs[len(loaded)]]
            self.covered_until = names[next_conv - 1]


def _find(state_dict: dict[str, torch.Tensor], keys: list[str]) -> torch.Tensor | None:
    for key in keys:
        if key in state_dict:
            return state_dict[key]
    return None


def _describe_weights(weights: str | os.PathLike | None) -> str:
    if weights is not None and not isinstance(weights, (str, os.PathLike)):
        raise InvalidArgumentError(f"weights must be 'imagenet', 'random', a state-dict path or None, got {weights!r}")
    if weights is None or (isinstance(weights, str) and weights.lower() in RANDOM_ALIASES):
        return "random"
    if isinstance(weights, str) and weights.lower() in IMAGENET_ALIASES:
        return "imagenet"
    return str(weights)


def _load_weights(
    weights: str | os.PathLike | None, progress: bool
) -> dict[str, torch.Tensor] | None:
    source = _describe_weights(weights)
    if source == "random":
        return None
    if source == "imagenet":
        return _load_imagenet_state_dict(progress=progress)
    path = Path(weights)  # type: ignore[arg-type]
    if not path.is_file():
        raise WeightsUnavailableError(f"VGG19 weights file {path}: no such file")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise WeightsUnavailableError(
            f"VGG19 weights file {path}: not a readable PyTorch state dict ({torch_load_failure(error)})"
        ) from None
    if isinstance(loaded, dict) and "state_dict" in loaded and isinstance(loaded["state_dict"], dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict):
        raise WeightsUnavailableError(f"VGG19 weights file {path}: expected a state dict")
    return loaded


def _load_imagenet_state_dict(progress: bool) -> dict[str, torch.Tensor]:
    try:
        return IMAGENET_WEIGHTS.get_state_dict(progress=progress, check_hash=False)
    except Exception as error:
        raise WeightsUnavailableError(
            f"cannot get ImageNet VGG19 weights ({torch_load_failure(error)}); "
            f"download them with `texsynth download-weights` on a machine with internet, "
            f"or place {os.path.basename(IMAGENET_WEIGHTS.url)} in {imagenet_weights_path().parent} "
            f"(TORCH_HOME), or pass a local state dict with --weights PATH (weights=PATH), "
            f"or use the weight-free recipe (--preset weight_free)"
        ) from None


@register_backbone("vgg19")
def vgg19(
    weights: str | os.PathLike | None = "imagenet",
    pooling: str = "avg",
    normalize_input: bool | None = None,
    seed: int = 0,
    progress: bool = True,
) -> VGG19:
    """VGG19; ``weights`` = ``"imagenet"`` (torchvision cache), a state-dict path, or None."""
    return VGG19(weights, pooling=pooling, normalize_input=normalize_input, seed=seed,
                 progress=progress)
