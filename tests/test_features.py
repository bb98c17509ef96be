from __future__ import annotations

import pytest
import torch
from torch import nn

from texsynth.errors import InvalidArgumentError
from texsynth.features import FeatureExtractor


class Counting(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return x


def _net() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), Counting(), nn.Conv2d(4, 2, 1), Counting())


def test_returns_named_activations_in_request_order():
    net = _net()
    x = torch.rand(1, 3, 8, 8)
    features = FeatureExtractor(net, ["3", "0"])(x)
    assert list(features) == ["3", "0"]
    torch.testing.assert_close(features["0"], net[0](x))
    assert features["3"].shape == (1, 2, 8, 8)


def test_layers_past_the_deepest_tap_do_not_run():
    net = _net()
    FeatureExtractor(net, ["1"])(torch.rand(1, 3, 8, 8))
    assert net[2].calls == 0 and net[4].calls == 0
    FeatureExtractor(net, ["2"])(torch.rand(1, 3, 8, 8))
    assert net[2].calls == 1 and net[4].calls == 0


def test_hooks_are_removed_after_each_call():
    net = _net()
    extractor = FeatureExtractor(net, ["1"])
    extractor(torch.rand(1, 3, 8, 8))
    assert all(not module._forward_hooks for module in net.modules())
    assert net(torch.rand(1, 3, 8, 8)).shape == (1, 2, 8, 8)  # the model still runs to the end


def test_gradients_flow_to_the_input():
    x = torch.rand(1, 3, 8, 8, requires_grad=True)
    FeatureExtractor(_net(), ["1"])(x)["1"].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_unknown_layer_is_named_in_the_error():
    with pytest.raises(InvalidArgumentError, match="'conv9'"):
        FeatureExtractor(_net(), ["conv9"])
