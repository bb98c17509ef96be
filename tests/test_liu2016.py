"""The ``liu2016`` preset reproduces the reference implementation's loss exactly.

The reference formula is written out here independently of texsynth (torchvision VGG19
layers, average pooling, taps at features[0, 4, 9, 18, 27, 36], Gram/(4CHW) with weights
1e9, luminance spectrum projection with weight 1e5) and compared on random VGG19 weights.
"""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from texsynth import TextureSynthesis
from texsynth.examples import load_example

TAPS = (0, 4, 9, 18, 27, 36)


def reference_features(state: dict[str, torch.Tensor]) -> nn.Sequential:
    features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["E"])
    features.load_state_dict({k.removeprefix("features."): v for k, v in state.items()})
    for index, layer in enumerate(features):
        if isinstance(layer, nn.MaxPool2d):
            features[index] = nn.AvgPool2d(kernel_size=2, stride=2)
        if isinstance(layer, nn.ReLU):
            layer.inplace = False
    return features.eval()


def reference_loss(features: nn.Sequential, output: torch.Tensor, exemplar: torch.Tensor) -> torch.Tensor:
    def taps(image: torch.Tensor) -> list[torch.Tensor]:
        found, x = [], image
        for index, layer in enumerate(features[: TAPS[-1] + 1]):
            x = layer(x)
            if index in TAPS:
                found.append(x)
        return found

    def gram(f: torch.Tensor) -> torch.Tensor:
        _, c, h, w = f.shape
        flat = f.view(c, h * w)
        return flat @ flat.t() / (4 * c * h * w)

    gram_loss = sum(1e9 * ((gram(a) - gram(b)) ** 2).sum() for a, b in zip(taps(exemplar), taps(output)))

    def gray(image: torch.Tensor) -> torch.Tensor:
        return 0.2989 * image[0, 0] + 0.587 * image[0, 1] + 0.114 * image[0, 2]

    O, E = torch.fft.fft2(gray(output)), torch.fft.fft2(gray(exemplar))
    P = O * torch.conj(E)
    projected = torch.fft.ifft2(P / (torch.abs(P) + 1e-11) * E)
    spectrum = 0.5 * ((gray(output) - projected.real) ** 2).sum()
    return gram_loss + 1e5 * spectrum


@pytest.fixture(scope="module")
def random_vgg_file(tmp_path_factory):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["E"])
    state = {f"features.{k}": v for k, v in features.state_dict().items()}
    path = tmp_path_factory.mktemp("weights") / "vgg19_random.pth"
    torch.save(state, path)
    return path, state


def test_liu2016_total_loss_equals_the_reference_formula(random_vgg_file):
    path, state = random_vgg_file
    module = TextureSynthesis(load_example("cracks", size=80), preset="liu2016", weights=str(path),
                              exemplar_size=64, seed=0)
    assert module.output_size == (64, 64)
    assert not module.backbone.normalize.enabled
    output = module.image.detach()
    terms = module.compute_losses(output)
    with torch.no_grad():
        expected = reference_loss(reference_features(state), output, module.exemplar)
    assert float(terms["total"]) == pytest.approx(float(expected), rel=1e-4)
    assert float(terms["total"]) > 0


def test_liu2016_starts_from_sigmoid_noise_at_the_exemplar_shape(random_vgg_file):
    path, _ = random_vgg_file
    module = TextureSynthesis(load_example("cracks", size=64), preset="liu2016", weights=str(path),
                              exemplar_size=64, seed=11)
    expected = torch.sigmoid(torch.randn((1, 3, 64, 64), generator=torch.Generator().manual_seed(11)))
    torch.testing.assert_close(module.image.detach(), expected)
    assert module.lbfgs_options["max_iter"] == 20 and module.lbfgs_options["history_size"] == 100
    assert module.lbfgs_options["line_search_fn"] is None and module.lbfgs_options["lr"] == 1.0
