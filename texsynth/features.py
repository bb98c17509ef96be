"""Hook-based extraction of intermediate activations from any ``nn.Module``.

Forward hooks record the outputs of the requested submodules; once the last requested one
has fired, a private exception aborts the forward pass, so layers past the deepest tap never
run (the pattern of baukit's ``TraceDict``). Hooks live only for the duration of one call, so
nothing leaks and the model stays usable elsewhere.

Gradient checkpointing (``checkpointing=True``) applies to models whose forward runs their
children in order (``nn.Sequential``, or a backbone with ``sequential = True``) when every
tap is a child: the children between two taps run as one checkpointed segment, so autograd
keeps only the tapped activations (which the losses need anyway) and recomputes the rest
during the backward pass — about one more forward pass of time for most of the memory.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from texsynth.errors import InvalidArgumentError


class _StopForward(Exception):
    """Raised from a hook once every requested activation has been captured."""


class FeatureExtractor(nn.Module):
    """Return ``{layer_name: activation}`` for named submodules of ``model``.

    ``layers`` are names as given by ``model.named_modules()``. The model is registered as a
    submodule so device moves follow the extractor.
    """

    def __init__(self, model: nn.Module, layers: Iterable[str], checkpointing: bool = False) -> None:
        super().__init__()
        self.model = model
        self.layers = tuple(dict.fromkeys(layers))
        if not self.layers:
            raise InvalidArgumentError("FeatureExtractor needs at least one layer name")
        available = dict(model.named_modules())
        missing = [name for name in self.layers if name not in available or not name]
        if missing:
            known = ", ".join(n for n in available if n)
            raise InvalidArgumentError(
                f"unknown layer(s) {', '.join(map(repr, missing))} in "
                f"{type(model).__name__}; available: {known}"
            )
        self._modules_by_name = {name: available[name] for name in self.layers}
        self.checkpointing = False
        if checkpointing:
            self.enable_checkpointing()

    @property
    def tapped_modules(self) -> dict[str, nn.Module]:
        """``{layer_name: submodule}`` for the requested layers."""
        return dict(self._modules_by_name)

    @property
    def supports_checkpointing(self) -> bool:
        sequential = isinstance(self.model, nn.Sequential) or getattr(self.model, "sequential", False)
        children = {name for name, _ in self.model.named_children()}
        return bool(sequential) and all(name in children for name in self.layers)

    def enable_checkpointing(self, enabled: bool = True) -> None:
        if enabled and not self.supports_checkpointing:
            raise InvalidArgumentError(
                f"gradient checkpointing needs a backbone that runs its layers in sequence and taps "
                f"among its direct children; {type(self.model).__name__} with {', '.join(self.layers)} is not"
            )
        self.checkpointing = bool(enabled)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.checkpointing and torch.is_grad_enabled() and image.requires_grad:
            return self._forward_in_segments(image)
        captured: dict[str, torch.Tensor] = {}
        wanted = len(self.layers)

        def make_hook(name: str):
            def hook(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
                captured[name] = output
                if len(captured) == wanted:
                    raise _StopForward

            return hook

        handles = [
            module.register_forward_hook(make_hook(name))
            for name, module in self._modules_by_name.items()
        ]
        try:
            self.model(image)
        except _StopForward:
            pass
        finally:
            for handle in handles:
                handle.remove()
        if len(captured) != wanted:
            missing = [name for name in self.layers if name not in captured]
            raise RuntimeError(f"layers {missing} were never executed by the forward pass")
        return {name: captured[name] for name in self.layers}

    def _forward_in_segments(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        captured: dict[str, torch.Tensor] = {}
        segment: list[nn.Module] = []
        x = image
        for name, child in self.model.named_children():
            segment.append(child)
            if name in self._modules_by_name:
                x = checkpoint(_run_in_order, x, *segment, use_reentrant=False)
                captured[name] = x
                segment = []
                if len(captured) == len(self.layers):
                    break
        return {name: captured[name] for name in self.layers}


def _run_in_order(x: torch.Tensor, *modules: nn.Module) -> torch.Tensor:
    for module in modules:
        x = module(x)
    return x
