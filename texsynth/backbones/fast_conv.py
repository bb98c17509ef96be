"""Frozen convolutions of the image, computed the fastest measured way.

The weight-free backbones convolve the 3-channel image with banks of 128 random filters.
On CPU the library's direct convolution is a poor fit for two parts of that work:

- **the backward pass to the image** is a convolution with 3 output channels, which the
  CPU kernels run at a fraction of their speed (for an 11x11 bank at 256x256, 3x the
  forward's time). As a matrix product it is fast: ``Z = Wᵀ (C·k² x O) @ dY (O x HW)``
  followed by ``k²`` shifted additions of ``Z``'s slices (``matmul``);
- **large kernels** (the 23-55 pixel banks of Ustyuzhaninov et al.) cost ``k²`` per pixel
  directly but a fixed amount through the FFT: one real FFT of the image, a product with
  the filters' spectra summed over input channels, one inverse FFT per output map (``fft``).

Both are exact up to float rounding (tests compare outputs and gradients with
``torch.nn.functional.conv2d``). ``method="auto"`` picks by device and kernel size from the
crossovers measured by ``benchmarks/conv.py`` (README, Performance): on CUDA (an H100) the
FFT from 23x23 as on the CPU, cuDNN below, never the matrix-product backward (100x slower
than cuDNN there); other devices keep the library's convolution (not measured).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from texsynth.backbones.base import pad2d
from texsynth.errors import InvalidArgumentError

METHODS = ("auto", "direct", "matmul", "fft")
#: on CPU, kernels at least this large go through the FFT (measured crossover; see module doc)
FFT_MIN_KERNEL = 23
#: the matrix-product backward pays off while the image side has this few channels
MATMUL_MAX_IN_CHANNELS = 4
#: working memory for one band of ``Z`` in the matmul backward
MATMUL_CHUNK_BYTES = 64 * 2**20
#: filter spectra up to this size are kept between evaluations (recomputed otherwise)
SPECTRUM_CACHE_BYTES = 512 * 2**20


def auto_method(device: torch.device, kernel_size: tuple[int, int], in_channels: int) -> str:
    if device.type not in ("cpu", "cuda"):
        return "direct"
    if min(kernel_size) >= FFT_MIN_KERNEL:
        return "fft"
    # on GPUs the matrix-product backward is slower than cuDNN's at every kernel size
    return "matmul" if device.type == "cpu" and in_channels <= MATMUL_MAX_IN_CHANNELS else "direct"


class FastConv2d(nn.Conv2d):
    """``nn.Conv2d`` (stride 1, no dilation, one group) with faster paths for frozen weights.

    ``method``: ``"auto"``, ``"direct"`` (``F.conv2d``), ``"matmul"`` (direct forward,
    matrix-product backward) or ``"fft"``. Weights that require a gradient always take the
    direct path, as do dtypes other than float32/float64 and autocast (mixed precision).
    """

    def __init__(self, *args, method: str = "auto", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.stride != (1, 1) or self.dilation != (1, 1) or self.groups != 1 or isinstance(self.padding, str):
            raise InvalidArgumentError("FastConv2d supports stride 1, dilation 1, groups 1 and numeric padding only")
        self.method = method
        self._spectrum_key: tuple | None = None
        self._spectrum: torch.Tensor | None = None

    @property
    def method(self) -> str:
        return self._method

    @method.setter
    def method(self, value: str) -> None:
        if value not in METHODS:
            raise InvalidArgumentError(f"conv method must be one of {', '.join(METHODS)}, got {value!r}")
        self._method = value

    def resolved_method(self, input: torch.Tensor) -> str:
        """The path ``forward`` takes for ``input``."""
        weight_trainable = self.weight.requires_grad or (self.bias is not None and self.bias.requires_grad)
        if (weight_trainable or input.dtype not in (torch.float32, torch.float64) or self.method == "direct"
                or torch.is_autocast_enabled(input.device.type)):
            return "direct"
        if self.method == "auto":
            return auto_method(input.device, self.kernel_size, self.in_channels)
        return self.method

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        method = self.resolved_method(input)
        if method == "direct":
            if self.padding_mode == "circular":  # torch's own circular padding wraps around once at most
                return F.conv2d(self._pad(input), weight, bias)
            return super()._conv_forward(input, weight, bias)
        padded = self._pad(input)
        if method == "matmul":
            return _ConvMatmulBackward.apply(padded, weight, bias)
        return fft_conv2d(padded, self._filter_spectrum(weight, padded.shape[-2:]), self.kernel_size, bias)

    def _pad(self, input: torch.Tensor) -> torch.Tensor:
        ph, pw = self.padding
        if ph == pw == 0:
            return input
        return pad2d(input, ph, pw, self.padding_mode)

    def _filter_spectrum(self, weight: torch.Tensor, padded_size: torch.Size) -> torch.Tensor:
        shape = fft_shape(padded_size)
        key = (shape, weight.device, weight.dtype, weight.data_ptr(), weight._version)
        if key == self._spectrum_key and self._spectrum is not None:
            return self._spectrum
        spectrum = filter_spectrum(weight, shape)
        cache = spectrum.numel() * spectrum.element_size() <= SPECTRUM_CACHE_BYTES
        self._spectrum_key, self._spectrum = (key, spectrum) if cache else (None, None)
        return spectrum

    def _apply(self, fn, *args, **kwargs):  # .to()/.cuda(): drop spectra of the old weights
        self._spectrum_key, self._spectrum = None, None
        return super()._apply(fn, *args, **kwargs)


# ---------------------------------------------------------------------------- FFT path
def fft_shape(padded_size: tuple[int, int]) -> tuple[int, int]:
    """FFT sizes at least the padded input's, with only factors 2, 3 and 5 (fast FFTs)."""
    return tuple(_next_fast_length(int(n)) for n in padded_size)  # type: ignore[return-value]


def _next_fast_length(n: int) -> int:
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def filter_spectrum(weight: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Conjugate spectra of the filters, ``(C_in, C_out, H, W//2+1)``: correlation, not
    convolution, and laid out for a sum over input channels."""
    return torch.fft.rfft2(weight, s=shape).conj().transpose(0, 1).contiguous()


def fft_conv2d(padded: torch.Tensor, spectrum: torch.Tensor, kernel_size: tuple[int, int],
               bias: torch.Tensor | None = None) -> torch.Tensor:
    """Valid cross-correlation of an already padded ``(B, C, H, W)`` input via the FFT
    (``spectrum``: ``filter_spectrum(weight, fft_shape(padded.shape[-2:]))``).

    The FFT's correlation is circular; outputs whose window would wrap around are exactly
    the ones a valid correlation drops, so cropping them makes it exact.
    """
    height, width = padded.shape[-2:]
    shape = fft_shape((height, width))
    if spectrum.shape[-2:] != (shape[0], shape[1] // 2 + 1):
        raise ValueError(f"filter spectrum {tuple(spectrum.shape)} is not for an FFT of size {shape}")
    image_spectrum = torch.fft.rfft2(padded, s=shape)
    products = torch.einsum("bchw,cohw->bohw", image_spectrum, spectrum)
    output = torch.fft.irfft2(products, s=shape)[..., : height - kernel_size[0] + 1, : width - kernel_size[1] + 1]
    return output if bias is None else output + bias.view(1, -1, 1, 1)


# ------------------------------------------------------------------------- matmul path
class _ConvMatmulBackward(torch.autograd.Function):
    """Valid ``F.conv2d`` forward; gradient to the input as a matrix product + shifted sums."""

    @staticmethod
    def forward(ctx, padded: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(weight)
        ctx.padded_shape = padded.shape
        return F.conv2d(padded, weight, bias)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (weight,) = ctx.saved_tensors
        return conv2d_input_grad(grad_output, weight, ctx.padded_shape), None, None


def conv2d_input_grad(grad_output: torch.Tensor, weight: torch.Tensor, input_shape: torch.Size) -> torch.Tensor:
    """Gradient of a valid, stride-1 ``conv2d`` with respect to its input.

    ``grad_in[c, i+u, j+v] = Σ_o w[o, c, u, v] · dY[o, i, j]``: the sum over ``o`` is one
    matrix product for all ``(c, u, v)`` at once; the sum over ``(u, v)`` adds shifted
    slices. Done in bands of output rows so the product's result stays within
    ``MATMUL_CHUNK_BYTES``.
    """
    batch, out_channels, out_h, out_w = grad_output.shape
    in_channels, kh, kw = weight.shape[1:]
    taps = weight.reshape(out_channels, in_channels * kh * kw).t()
    grad_input = grad_output.new_zeros(input_shape)
    row_bytes = batch * in_channels * kh * kw * out_w * grad_output.element_size()
    band = max(1, min(out_h, MATMUL_CHUNK_BYTES // max(row_bytes, 1)))
    for top in range(0, out_h, band):
        rows = min(band, out_h - top)
        block = grad_output[:, :, top : top + rows].reshape(batch, out_channels, rows * out_w)
        spread = torch.matmul(taps, block).view(batch, in_channels, kh, kw, rows, out_w)
        for u in range(kh):
            for v in range(kw):
                grad_input[:, :, top + u : top + u + rows, v : v + out_w] += spread[:, :, u, v]
    return grad_input


# ------------------------------------------------------------------- banks, fused with ReLU
def banks_relu(image: torch.Tensor, convs: tuple[FastConv2d, ...]) -> torch.Tensor:
    """``cat([relu(conv(image)) for conv in convs], dim=1)`` in one preallocated tensor.

    Autograd would keep each bank's convolution output, its ReLU output and the
    concatenation: three copies of the widest activation. Here each bank is written into
    its slice of the result and rectified in place, and only the result is kept (its
    positive entries are the ReLU's mask), so a full-resolution 3 x 128-channel bank costs
    one copy. The backward pass computes each bank's input gradient the way its
    ``FastConv2d`` would. Not twice differentiable.
    """
    mixed_precision = torch.is_autocast_enabled(image.device.type)
    if not (torch.is_grad_enabled() and image.requires_grad) and not mixed_precision:
        return _banks_relu_forward(image, convs)
    if mixed_precision or any(conv.resolved_method(image) == "fft" or conv.weight.requires_grad for conv in convs):
        return torch.cat([F.relu(conv(image)) for conv in convs], dim=1)
    return _BanksReLU.apply(image, convs)


def _banks_relu_forward(image: torch.Tensor, convs: tuple[FastConv2d, ...]) -> torch.Tensor:
    with torch.no_grad():
        first = convs[0](image)
        if len(convs) == 1:
            return first.relu_()
        output = first.new_empty(first.shape[0], sum(c.out_channels for c in convs), *first.shape[2:])
        output[:, : first.shape[1]] = first
        start = first.shape[1]
        del first  # one bank-sized temporary at a time
        for conv in convs[1:]:
            output[:, start : start + conv.out_channels] = conv(image)
            start += conv.out_channels
        return output.relu_()


class _BanksReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, image: torch.Tensor, convs: tuple[FastConv2d, ...]) -> torch.Tensor:
        output = _banks_relu_forward(image, convs)
        ctx.save_for_backward(output)
        ctx.convs, ctx.image_shape = convs, image.shape
        ctx.methods = [conv.resolved_method(image) for conv in convs]
        return output

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output: torch.Tensor):
        (output,) = ctx.saved_tensors
        grad_image = None
        start = 0
        for conv, method in zip(ctx.convs, ctx.methods):
            stop = start + conv.out_channels
            # the ReLU's backward in one pass (a mask times the gradient is three: compare,
            # convert, multiply; 2x slower at 128 x 256x256)
            grad_bank = torch.ops.aten.threshold_backward(grad_output[:, start:stop], output[:, start:stop], 0.0)
            grad = _conv_input_grad(conv, method, grad_bank, ctx.image_shape)
            grad_image = grad if grad_image is None else grad_image.add_(grad)
            start = stop
        return grad_image, None


def _conv_input_grad(conv: FastConv2d, method: str, grad_output: torch.Tensor, image_shape: torch.Size) -> torch.Tensor:
    """Gradient to the (unpadded) image of ``conv`` (matmul or direct), given its output gradient."""
    ph, pw = conv.padding
    padded_shape = torch.Size((*image_shape[:2], image_shape[2] + 2 * ph, image_shape[3] + 2 * pw))
    weight = conv.weight
    if method == "matmul":
        grad_padded = conv2d_input_grad(grad_output, weight, padded_shape)
    else:
        grad_padded = torch.nn.grad.conv2d_input(padded_shape, weight, grad_output)
    if ph == pw == 0:
        return grad_padded
    if conv.padding_mode == "zeros":
        return grad_padded[..., ph : ph + image_shape[2], pw : pw + image_shape[3]]
    # circular / reflect: the adjoint of the padding, by autograd on a 3-channel image
    with torch.enable_grad():
        probe = grad_padded.new_zeros(image_shape, requires_grad=True)
        padded = conv._pad(probe)
        (grad_image,) = torch.autograd.grad(padded, probe, grad_padded)
    return grad_image
