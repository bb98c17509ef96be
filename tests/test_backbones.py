from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from texsynth.backbones import create_backbone
from texsynth.backbones.vgg import IMAGENET_WEIGHTS, imagenet_weights_cached, imagenet_weights_path
from texsynth.errors import InvalidArgumentError, WeightsUnavailableError
from texsynth.features import FeatureExtractor


@pytest.fixture(scope="module")
def vgg_random():
    return create_backbone("vgg19", weights="random")


def _torchvision_features(seed: int = 0) -> nn.Sequential:
    """An independently built torchvision VGG19 ``features`` (the layout of real checkpoints)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["E"]).eval()


def test_vgg19_layer_names_follow_the_papers(vgg_random):
    names = [name for name, _ in vgg_random.named_children()]
    assert names[:6] == ["normalize", "conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1"]
    assert names[-1] == "pool5" and "conv5_4" in names and "relu3_4" in names
    assert sum(name.startswith("conv") for name in names) == 16


def test_vgg19_is_frozen_and_stays_in_eval_mode(vgg_random):
    assert list(vgg_random.parameters()) == []
    assert all(not b.requires_grad for b in vgg_random.buffers())
    vgg_random.train()
    assert not vgg_random.training and not any(m.training for m in vgg_random.modules())
    assert vgg_random.state_dict() == {} or all("mean" in k or "std" in k for k in vgg_random.state_dict())


def test_vgg19_relus_are_not_in_place_so_pre_activations_survive(vgg_random):
    x = torch.rand(1, 3, 32, 32)
    features = FeatureExtractor(vgg_random, ["conv1_1", "relu1_1"])(x)
    assert (features["conv1_1"] < 0).any()
    torch.testing.assert_close(features["relu1_1"], features["conv1_1"].clamp_min(0))
    assert not any(getattr(m, "inplace", False) for m in vgg_random.modules())


def test_vgg19_random_weights_are_seeded_kaiming_normal(vgg_random):
    again = create_backbone("vgg19", weights="random")
    other = create_backbone("vgg19", weights="random", seed=1)
    torch.testing.assert_close(vgg_random.conv3_2.weight, again.conv3_2.weight)
    assert not torch.allclose(vgg_random.conv3_2.weight, other.conv3_2.weight)
    expected_std = (2.0 / (256 * 9)) ** 0.5
    assert abs(float(vgg_random.conv3_2.weight.std()) / expected_std - 1) < 0.05


@pytest.mark.parametrize("pooling, kind", [("avg", nn.AvgPool2d), ("max", nn.MaxPool2d)])
def test_vgg19_pooling_choice(pooling, kind):
    backbone = create_backbone("vgg19", weights="random", pooling=pooling)
    assert isinstance(backbone.pool1, kind) and isinstance(backbone.pool5, kind)


def test_vgg19_input_normalization_switch():
    x = torch.rand(1, 3, 16, 16)
    plain = create_backbone("vgg19", weights="random", normalize_input=False)
    normalized = create_backbone("vgg19", weights="random", normalize_input=True)
    a = FeatureExtractor(plain, ["conv1_1"])(x)["conv1_1"]
    b = FeatureExtractor(normalized, ["conv1_1"])(x)["conv1_1"]
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    c = FeatureExtractor(plain, ["conv1_1"])((x - mean) / std)["conv1_1"]
    assert not torch.allclose(a, b)
    torch.testing.assert_close(b, c)


def test_vgg19_min_size_and_pruning(vgg_random):
    assert vgg_random.min_size(["conv1_1"]) == 1
    assert vgg_random.min_size(["relu2_1"]) == 2
    assert vgg_random.min_size(["conv1_1", "pool5"]) == 32
    pruned = create_backbone("vgg19", weights="random")
    pruned.prune(["pool2"])
    assert not hasattr(pruned, "conv3_1") and hasattr(pruned, "pool2")


def test_pruned_vgg19_runs_relus_in_place_except_after_a_tapped_layer():
    backbone = create_backbone("vgg19", weights="random")
    layers = ["conv1_1", "relu1_2", "conv2_2", "pool2"]
    backbone.prune(layers)
    in_place = {name for name, m in backbone.named_children() if getattr(m, "inplace", False)}
    assert in_place == {"relu1_2", "relu2_1"}  # relu1_1 and relu2_2 follow tapped convolutions
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    features = FeatureExtractor(backbone, layers)(x)
    assert (features["conv1_1"] < 0).any() and (features["conv2_2"] < 0).any()
    reference = FeatureExtractor(create_backbone("vgg19", weights="random"), layers)(x)
    for name in layers:
        torch.testing.assert_close(features[name], reference[name])
    grad_pruned = torch.autograd.grad(sum(f.square().sum() for f in features.values()), x)[0]
    grad_reference = torch.autograd.grad(sum(f.square().sum() for f in reference.values()), x)[0]
    torch.testing.assert_close(grad_pruned, grad_reference)


def _partial_state_dict(seed: int = 3) -> dict[str, torch.Tensor]:
    """torchvision-style keys for conv1_1 and conv1_2 only (everything up to pool1)."""
    features = _torchvision_features(seed)
    return {f"features.{i}.{kind}": getattr(features[i], kind).detach().clone()
            for i in (0, 2) for kind in ("weight", "bias")}


def test_vgg19_loads_a_local_state_dict(tmp_path):
    state = _partial_state_dict()
    path = tmp_path / "vgg_prefix.pth"
    torch.save(state, path)
    backbone = create_backbone("vgg19", weights=str(path))
    torch.testing.assert_close(backbone.conv1_2.weight, state["features.2.weight"])
    assert backbone.normalize.enabled  # pretrained weights imply ImageNet normalization
    backbone.check_layers(["conv1_1", "pool1"])
    with pytest.raises(WeightsUnavailableError, match="only cover layers up to pool1"):
        backbone.check_layers(["relu2_1"])


def test_vgg19_imagenet_weights_come_from_the_torchvision_cache(torch_home, no_network):
    assert not imagenet_weights_cached()
    state = _partial_state_dict(seed=5)
    path = imagenet_weights_path()
    assert path.name == IMAGENET_WEIGHTS.url.rsplit("/", 1)[-1]
    assert str(path).startswith(str(torch_home))
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    backbone = create_backbone("vgg19")  # ImageNet is the default source
    torch.testing.assert_close(backbone.conv1_1.bias, state["features.0.bias"])
    assert imagenet_weights_cached()


def test_vgg19_missing_imagenet_weights_fail_with_instructions(torch_home, no_network):
    with pytest.raises(WeightsUnavailableError) as info:
        create_backbone("vgg19", weights="imagenet")
    message = str(info.value)
    assert "\n" not in message
    assert "--weights PATH" in message and str(torch_home) in message
    assert "texsynth download-weights" in message


def test_vgg19_bad_weights_file_is_named(tmp_path):
    bad = tmp_path / "garbage.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsUnavailableError, match="garbage.pth: not a readable PyTorch state dict") as info:
        create_backbone("vgg19", weights=str(bad))
    assert "\n" not in str(info.value) and "weights_only" not in str(info.value)
    with pytest.raises(WeightsUnavailableError, match="no such file"):
        create_backbone("vgg19", weights=str(tmp_path / "missing.pth"))
    wrong = tmp_path / "wrong.pth"
    torch.save({"features.0.weight": torch.zeros(8, 3, 3, 3), "features.0.bias": torch.zeros(8)}, wrong)
    with pytest.raises(WeightsUnavailableError, match="do not fit VGG19"):
        create_backbone("vgg19", weights=str(wrong))


def test_random_multiscale_is_the_same_on_every_construction():
    a = create_backbone("random_multiscale", kernel_sizes=(3, 7), filters=4)
    b = create_backbone("random_multiscale", kernel_sizes=(3, 7), filters=4)
    c = create_backbone("random_multiscale", kernel_sizes=(3, 7), filters=4, seed=1)
    torch.testing.assert_close(a.conv7.weight, b.conv7.weight)
    assert not torch.allclose(a.conv7.weight, c.conv7.weight)
    bound = (6.0 / (3 * 49 + 4 * 49)) ** 0.5  # Glorot uniform
    assert a.conv7.weight.abs().max() <= bound and a.conv7.bias.abs().sum() == 0
    assert list(a.parameters()) == []


def test_random_multiscale_taps_and_joint_stack():
    backbone = create_backbone("random_multiscale", kernel_sizes=(3, 5), filters=4)
    features = FeatureExtractor(backbone, ["relu3", "relu5", "stack"])(torch.rand(1, 3, 10, 12))
    assert features["relu3"].shape == (1, 4, 10, 12)
    assert (features["relu5"] >= 0).all()
    torch.testing.assert_close(features["stack"], torch.cat([features["relu3"], features["relu5"]], 1))
    with pytest.raises(InvalidArgumentError, match="odd"):
        create_backbone("random_multiscale", kernel_sizes=(4,))


def test_random_pyramid_levels_halve_the_resolution():
    backbone = create_backbone("random_pyramid", levels=3, filters=(8, 4, 2))
    features = FeatureExtractor(backbone, backbone.texture_layers)(torch.rand(1, 3, 32, 32))
    assert [tuple(f.shape) for f in features.values()] == [(1, 24, 32, 32), (1, 4, 16, 16), (1, 2, 8, 8)]
    assert backbone.min_size(["level2"]) == 12


def test_unknown_backbone_option_is_reported():
    from texsynth.module import TextureSynthesis

    with pytest.raises(InvalidArgumentError, match="backbone 'random_multiscale'"):
        TextureSynthesis(torch.rand(3, 16, 16), backbone="random_multiscale", backbone_options={"bogus": 1})


def _measured_receptive_field(backbone, layer: str, size: int) -> int:
    """Width of the input region that one central feature of ``layer`` depends on (by its gradient)."""
    module = dict(backbone.named_modules())[layer]
    captured = {}
    handle = module.register_forward_hook(lambda _m, _i, output: captured.setdefault("out", output))
    image = torch.rand(1, 3, size, size, dtype=torch.float64, generator=torch.Generator().manual_seed(0),
                       requires_grad=True)
    try:
        backbone.double()(image)
    finally:
        handle.remove()
    out = captured["out"]
    out[..., out.shape[-2] // 2, out.shape[-1] // 2].sum().backward()
    rows = image.grad.abs().sum(dim=(0, 1, 3)).nonzero()
    return int(rows.max() - rows.min() + 1)


@pytest.mark.parametrize(("name", "options", "layers", "size"), [
    ("random_pyramid", {"filters": 8}, ("level0", "level0.k7", "level1", "level2"), 96),
    ("random_multiscale", {"kernel_sizes": (3, 7), "filters": 8}, ("relu3", "relu7", "stack"), 32),
    ("vgg19", {"weights": "random"}, ("relu1_1", "pool1", "conv2_1", "pool2", "pool3"), 96),
])
def test_receptive_fields_are_the_input_windows_features_depend_on(name, options, layers, size):
    from texsynth.backbones import create_backbone

    backbone = create_backbone(name, **options)
    for layer in layers:
        assert backbone.receptive_field(layer) == _measured_receptive_field(backbone, layer, size), layer
    assert backbone.receptive_field("no_such_layer") is None


def test_weights_alone_ask_for_vgg19_and_a_backbone_without_weights_refuses_them(tmp_path, torch_home):
    from texsynth.losses import create_loss
    from texsynth.recipe import resolve_preset, resolve_recipe

    # --weights without --backbone once applied ImageNet weights to the weight-free default,
    # which failed with "random_pyramid() got an unexpected keyword argument 'weights'"
    assert resolve_preset(None, None, weights="imagenet").backbone == "vgg19"
    assert resolve_preset(None, None).backbone != "vgg19"  # no weights cached in the test home
    path = tmp_path / "vgg_prefix.pth"
    torch.save(_partial_state_dict(), path)
    recipe = resolve_recipe(weights=str(path), losses=[create_loss("gram", layers=["conv1_1"])])
    assert recipe.backbone_name == "vgg19"
    with pytest.raises(InvalidArgumentError, match="weights: backbone 'random_pyramid' has no weights to load"):
        resolve_recipe(backbone="random_pyramid", weights="random")
