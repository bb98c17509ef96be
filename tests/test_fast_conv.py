"""The backbones' fast convolution paths equal the library's convolution."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from texsynth.backbones import create_backbone
from texsynth.backbones.base import freeze_module
from texsynth.backbones.fast_conv import FastConv2d, auto_method, conv2d_input_grad
from texsynth.errors import InvalidArgumentError


def frozen_pair(kernel: int | tuple[int, int], padding_mode: str, method: str) -> tuple[FastConv2d, FastConv2d]:
    torch.manual_seed(0)
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    fast = FastConv2d(3, 5, (kh, kw), padding=(kh // 2, kw // 2), padding_mode=padding_mode, method=method)
    with torch.no_grad():
        fast.bias.normal_()
    direct = FastConv2d(3, 5, (kh, kw), padding=(kh // 2, kw // 2), padding_mode=padding_mode, method="direct")
    direct.load_state_dict(fast.state_dict())
    return freeze_module(fast), freeze_module(direct)


@pytest.mark.parametrize("method", ["matmul", "fft"])
@pytest.mark.parametrize("padding_mode", ["zeros", "circular", "reflect"])
@pytest.mark.parametrize("kernel", [1, 3, (5, 3), 9])
def test_fast_paths_equal_direct_convolution_and_its_input_gradient(method, padding_mode, kernel):
    fast, direct = frozen_pair(kernel, padding_mode, method)
    image = torch.rand(2, 3, 13, 17, dtype=torch.float64, requires_grad=True)
    fast, direct = fast.double(), direct.double()
    out_fast, out_direct = fast(image), direct(image)
    assert fast.resolved_method(image) == method
    torch.testing.assert_close(out_fast, out_direct)
    grad = torch.randn_like(out_direct)
    (g_fast,) = torch.autograd.grad(out_fast, image, grad)
    (g_direct,) = torch.autograd.grad(out_direct, image, grad)
    torch.testing.assert_close(g_fast, g_direct)


def test_matmul_backward_in_bands_equals_one_band(monkeypatch):
    torch.manual_seed(1)
    weight = torch.randn(4, 3, 5, 5, dtype=torch.float64)
    grad_output = torch.randn(2, 4, 11, 9, dtype=torch.float64)
    whole = conv2d_input_grad(grad_output, weight, torch.Size((2, 3, 15, 13)))
    monkeypatch.setattr("texsynth.backbones.fast_conv.MATMUL_CHUNK_BYTES", 1)  # one output row per band
    torch.testing.assert_close(conv2d_input_grad(grad_output, weight, torch.Size((2, 3, 15, 13))), whole)
    image = torch.randn(2, 3, 15, 13, dtype=torch.float64, requires_grad=True)
    (expected,) = torch.autograd.grad(F.conv2d(image, weight), image, grad_output)
    torch.testing.assert_close(whole, expected)


def test_fft_spectra_are_cached_per_size_and_dropped_when_moved():
    fast, _ = frozen_pair(7, "zeros", "fft")
    fast(torch.rand(1, 3, 16, 16))
    cached = fast._spectrum
    assert cached is not None
    fast(torch.rand(1, 3, 16, 16))
    assert fast._spectrum is cached  # same size: reused
    fast(torch.rand(1, 3, 20, 16))
    assert fast._spectrum is not cached and fast._spectrum.shape[-2] >= 26
    fast.double()
    assert fast._spectrum is None


def test_trainable_weights_and_half_precision_take_the_direct_path():
    conv = FastConv2d(3, 4, 3, padding=1, method="fft")
    assert conv.resolved_method(torch.rand(1, 3, 8, 8)) == "direct"  # weight requires grad
    freeze_module(conv)
    assert conv.resolved_method(torch.rand(1, 3, 8, 8)) == "fft"
    assert conv.resolved_method(torch.rand(1, 3, 8, 8).bfloat16()) == "direct"


def test_auto_method_follows_the_measured_crossovers():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert auto_method(cpu, (3, 3), 3) == "matmul"
    assert auto_method(cpu, (55, 55), 3) == "fft"
    assert auto_method(cpu, (3, 3), 64) == "direct"  # many input channels: the library's kernels
    assert auto_method(cuda, (55, 55), 3) == "fft"
    assert auto_method(cuda, (3, 3), 3) == "direct"  # cuDNN beats the matrix-product backward on GPUs
    assert auto_method(torch.device("mps"), (55, 55), 3) == "direct"  # not measured


def test_bad_settings_are_refused_by_name():
    with pytest.raises(InvalidArgumentError, match="method must be one of.*'winograd'"):
        FastConv2d(3, 4, 3, method="winograd")
    with pytest.raises(InvalidArgumentError, match="stride 1"):
        FastConv2d(3, 4, 3, stride=2)


@pytest.mark.parametrize("name, options", [("random_multiscale", {"kernel_sizes": (3, 23), "filters": 4}),
                                           ("random_pyramid", {"filters": 4})])
def test_weight_free_backbones_give_the_same_features_and_gradients_as_direct_convolution(name, options):
    backbone = create_backbone(name, **options)
    image = torch.rand(1, 3, 40, 40, requires_grad=True)
    convs = [m for m in backbone.modules() if isinstance(m, FastConv2d)]
    assert {c.resolved_method(image) for c in convs} >= {"matmul"}
    fast = backbone(image)
    (g_fast,) = torch.autograd.grad(fast.square().sum(), image)
    for conv in convs:
        conv.method = "direct"
    direct = backbone(image)
    (g_direct,) = torch.autograd.grad(direct.square().sum(), image)
    torch.testing.assert_close(fast, direct, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(g_fast, g_direct, rtol=1e-4, atol=1e-2 * g_direct.abs().max().item())


@pytest.mark.parametrize("tile", [False, True])
def test_fused_banks_equal_the_unfused_banks_and_their_gradient(tile):
    backbone = create_backbone("random_pyramid", levels=2, filters=4)
    backbone.set_circular_padding(tile)
    image = torch.rand(2, 3, 24, 20, dtype=torch.float64, requires_grad=True)
    backbone = backbone.double()
    fused = backbone(image)
    assert type(fused.grad_fn).__name__ == "_BanksReLUBackward"
    weights = torch.randn_like(fused)
    (g_fused,) = torch.autograd.grad((fused * weights).sum(), image)
    handle = backbone.level1.k11.register_forward_hook(lambda *args: None)  # a tapped bank: unfused
    handle0 = backbone.level0.k3.register_forward_hook(lambda *args: None)
    try:
        unfused = backbone(image)
    finally:
        handle.remove()
        handle0.remove()
    assert type(unfused.grad_fn).__name__ != "_BanksReLUBackward"
    (g_unfused,) = torch.autograd.grad((unfused * weights).sum(), image)
    torch.testing.assert_close(fused, unfused)
    torch.testing.assert_close(g_fused, g_unfused)


def test_mixed_precision_takes_the_library_path_and_backpropagates():
    backbone = create_backbone("random_pyramid", levels=2, filters=4)
    image = torch.rand(1, 3, 24, 24, requires_grad=True)
    reference = backbone(image)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert backbone.level0.conv3.resolved_method(image) == "direct"
        mixed = backbone(image)
    (grad,) = torch.autograd.grad(mixed.float().square().sum(), image)
    assert mixed.dtype == torch.bfloat16 and torch.isfinite(grad).all() and grad.abs().sum() > 0
    torch.testing.assert_close(mixed.float(), reference, rtol=0.05, atol=0.05 * reference.abs().max().item())
