"""Outputs of any size, and seamless tiles."""

from __future__ import annotations

import json
import logging

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from conftest import TINY_BACKBONE
from texsynth import TextureSynthesis
from texsynth.api import fit, synthesize
from texsynth.backbones.base import circular_pad
from texsynth.cli import main
from texsynth.errors import InvalidArgumentError
from texsynth.examples import load_example
from texsynth.init import random_phase_noise
from texsynth.losses.spectrum import SpectrumLoss, exemplar_spectrum, periodic_component, spectrum_projection
from texsynth.metrics import seam_score
from texsynth.periodicity import repeats_itself, texture_period
from texsynth.tiling import image_size_for, periodic_resize, tile_targets_source


def _periodic_laplacian(image: torch.Tensor) -> torch.Tensor:
    return sum(torch.roll(image, s, d) for s in (1, -1) for d in (-1, -2)) - 4 * image


def test_periodic_component_removes_border_jumps_and_only_a_smooth_part():
    y, x = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    ramp = (x / 15).expand(1, 3, 16, 16)  # jumps from 1 to 0 across the wrap
    component = periodic_component(ramp)
    jump = (component[..., :, 0] - component[..., :, -1]).abs().max()
    assert float(jump) < 0.1  # the ramp jumped by 1
    image = torch.rand(1, 3, 16, 16, dtype=torch.float64)
    smooth = image - periodic_component(image)  # harmonic away from the border
    torch.testing.assert_close(_periodic_laplacian(smooth)[..., 1:-1, 1:-1],
                               torch.zeros(1, 3, 14, 14, dtype=torch.float64), atol=1e-9, rtol=0)
    torch.testing.assert_close(smooth.mean(), torch.tensor(0.0, dtype=torch.float64), atol=1e-9, rtol=0)


@pytest.mark.parametrize("size", [(48, 40), (24, 56)])
def test_spectrum_at_a_larger_size_keeps_mean_and_variance(size):
    exemplar = load_example("cells", size=32)
    spectrum = exemplar_spectrum(exemplar, size)
    pixels = size[0] * size[1]
    crop_h = min(32, size[0])
    crop = exemplar[..., (32 - crop_h) // 2 : (32 - crop_h) // 2 + crop_h, :]  # sides already larger
    torch.testing.assert_close(spectrum[..., 0, 0].real / pixels, crop.mean(dim=(2, 3)), atol=1e-5, rtol=0)
    variance = (spectrum.abs().pow(2).sum(dim=(2, 3)) - spectrum[..., 0, 0].abs().pow(2)) / pixels**2
    expected = periodic_component(crop).var(dim=(2, 3), unbiased=False)
    torch.testing.assert_close(variance, expected, rtol=0.05, atol=1e-6)
    noise = random_phase_noise(exemplar, (1, 3, *size), torch.Generator().manual_seed(0))
    assert noise.shape == (1, 3, *size)


def test_larger_non_square_output_from_the_cli(tmp_path, capsys):
    out = tmp_path / "wide.png"
    code = main(["synthesize", "bricks", "--exemplar-size", "32", "-o", str(out), "--size", "48x40", "--json",
                 "--steps", "1", "--max-iter", "3", "--backbone", "random_pyramid", "--no-log"])
    assert code == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["size"] == [48, 40]
    with Image.open(out) as image:
        assert image.size == (48, 40)  # width x height


def _synthesize(tile: bool) -> torch.Tensor:
    exemplar = load_example("cells", size=32)
    # Gram only: the spectrum constraint is periodic by construction and would blur the contrast.
    module = TextureSynthesis(exemplar, **TINY_BACKBONE, size=(32, 40), tile=tile, seed=0,
                              losses={"spectrum": 0})
    fit(module, 4, logdir=False, progress_bar=False, quiet=True)
    return module.output()


def test_tiled_outputs_have_no_seam_and_untiled_ones_do():
    tiled, untiled = seam_score(_synthesize(True)), seam_score(_synthesize(False))
    assert abs(float(tiled) - 1) < 0.3  # jumps across the wrap look like jumps inside the image
    assert float(untiled) > float(tiled) + 0.1


@pytest.mark.parametrize("size", [(16, 20), (13, 23)])
def test_periodic_resize_is_the_resize_of_an_endless_tiling(size):
    image = torch.rand(2, 3, 8, 10, generator=torch.Generator().manual_seed(0))
    tiling = F.interpolate(image.repeat(1, 1, 3, 3), size=(3 * size[0], 3 * size[1]), mode="bicubic",
                           align_corners=False)
    expected = tiling[..., size[0]:2 * size[0], size[1]:2 * size[1]]  # the middle tile: no border nearby
    torch.testing.assert_close(periodic_resize(image, size), expected)
    plain = F.interpolate(image, size=size, mode="bicubic", align_corners=False)
    assert not torch.allclose(plain, expected, atol=1e-3)  # an ordinary resize clamps at the borders


def test_a_tiled_output_starts_seamless_from_a_coarser_result():
    coarse = torch.rand(1, 3, 16, 20, generator=torch.Generator().manual_seed(1))
    exemplar = load_example("cells", size=32)
    scores = {}
    for tile in (True, False):
        module = TextureSynthesis(exemplar, **TINY_BACKBONE, size=(32, 40), tile=tile, seed=0)
        module.reset_image(coarse)
        scores[tile] = float(seam_score(module.output()))
    assert abs(scores[True] - 1) < 0.3 and scores[False] > 1.5, scores


def _tiled_gram_targets(exemplar: torch.Tensor) -> dict[str, torch.Tensor]:
    module = TextureSynthesis(exemplar, **TINY_BACKBONE, tile=True, seed=0, losses={"spectrum": 0})
    module.compute_losses()  # sets the targets
    gram = module.loss_terms["gram"]
    return {name: gram.target(name).clone() for name in gram.layers}


def test_tiled_targets_ignore_the_lighting_jump_across_the_exemplar_borders():
    # Light falling off from top to bottom jumps back across the wrap; circular padding would
    # make that edge a feature of the targets, and the output would grow edges to match it.
    texture = load_example("cells", size=32)
    ramp = torch.linspace(-0.15, 0.15, 32).view(1, 1, 32, 1)
    lit, flat = _tiled_gram_targets((texture + ramp).clamp(0, 1)), _tiled_gram_targets(texture)
    for name in flat:
        change = (lit[name] - flat[name]).norm() / flat[name].norm()
        assert float(change) < 0.05, (name, float(change))  # 0.16-0.21 from the exemplar as it is


def test_tiled_targets_keep_structure_along_the_exemplar_borders():
    # mortar-like lines, one of them along the top border: a jump of structure, not of light
    lines = torch.full((1, 3, 128, 128), 0.4)
    for top in range(0, 128, 16):
        lines[..., top:top + 2, :] = 0.9
    assert float((lines - periodic_component(lines)).abs().max()) > 0.2  # repaints the borders
    assert float((lines - tile_targets_source(lines)).abs().max()) < 0.1


def test_tile_sets_circular_padding_and_periodic_spectrum(exemplar):
    module = TextureSynthesis(exemplar, backbone="random_pyramid", tile=True, seed=0)
    convs = [m for m in module.backbone.modules() if isinstance(m, torch.nn.Conv2d) and m.padding != (0, 0)]
    assert convs and all(m.padding_mode == "circular" for m in convs)
    assert module.loss_terms["spectrum"].periodic and module.hparams["tile"] is True
    vgg = TextureSynthesis(exemplar, backbone="vgg19", weights="random", tile=True, seed=0)
    assert vgg.backbone.conv1_1.padding_mode == "circular"


@pytest.mark.parametrize(("size", "tiled"), [(None, False), ((24, 32), False), ((32, 40), True), ((48, 48), True)])
def test_tile_defaults_to_outputs_larger_than_the_exemplar(exemplar, size, tiled):
    module = TextureSynthesis(exemplar, **TINY_BACKBONE, size=size, seed=0)
    assert module.tile is tiled and module.hparams["tile"] is tiled
    convs = [m for m in module.backbone.modules() if isinstance(m, torch.nn.Conv2d) and m.padding != (0, 0)]
    assert all(m.padding_mode == ("circular" if tiled else "zeros") for m in convs)
    assert module.loss_terms["spectrum"].periodic is tiled


def test_tile_can_be_refused_for_a_larger_output_and_must_be_a_bool(exemplar):
    assert TextureSynthesis(exemplar, **TINY_BACKBONE, size=48, tile=False, seed=0).tile is False
    with pytest.raises(InvalidArgumentError, match="tile must be True, False or None"):
        TextureSynthesis(exemplar, **TINY_BACKBONE, size=48, tile="yes", seed=0)


def test_a_larger_output_comes_out_seamless_through_its_coarse_stage(exemplar):
    # the half-size stage is larger than its half-size exemplar too; both wrap around
    result = synthesize(exemplar, size=64, steps=2, coarse_levels=1, coarse_steps=1, seed=0,
                        lbfgs={"max_iter": 4}, losses={"spectrum": 0}, **TINY_BACKBONE)
    assert result.image.shape == (3, 64, 64)
    assert abs(float(seam_score(result.image)) - 1) < 0.3
    refused = synthesize(exemplar, size=64, steps=2, coarse_levels=1, coarse_steps=1, seed=0, tile=False,
                         lbfgs={"max_iter": 4}, losses={"spectrum": 0}, **TINY_BACKBONE)
    assert float(seam_score(refused.image)) > float(seam_score(result.image)) + 0.1


def test_the_cli_tiles_larger_outputs_unless_told_not_to(tmp_path, capsys):
    from texsynth.config import read_config

    for flag, expected in (([], True), (["--no-tile"], False)):
        out = tmp_path / f"out{len(flag)}.png"
        code = main(["synthesize", "bricks", "--exemplar-size", "32", "-o", str(out), "--size", "64", "--steps", "1",
                     "--max-iter", "2", "--backbone", "random_pyramid", "--no-log", "--no-progress", *flag])
        assert code == 0, capsys.readouterr().err
        assert read_config(out.with_name(f"{out.stem}.texsynth.yaml"))["tile"] is expected


def test_the_texture_period_is_the_smallest_shift_that_maps_an_image_to_itself():
    block = torch.rand(3, 6, 10, generator=torch.Generator().manual_seed(0))
    assert texture_period(block.repeat(1, 4, 4)) == (6, 10)
    assert texture_period(block.repeat(1, 4, 4)[None]) == (6, 10)  # batched alike
    for name in ("bricks", "weave"):  # rows or blocks of a quarter of the exemplar, at any size
        assert texture_period(load_example(name, size=64)) == (16, 16)
        assert texture_period(load_example(name, size=96)) == (24, 24)
    # stochastic textures, smooth ones (high correlation at short shifts), and a flat image do not repeat
    assert texture_period(load_example("cells", size=64)) == (64, 64)
    smooth = torch.nn.functional.avg_pool2d(torch.rand(1, 3, 80, 80, generator=torch.Generator().manual_seed(1)),
                                            9, stride=1, padding=4, count_include_pad=False)
    assert texture_period(smooth) == (80, 80)
    assert texture_period(torch.full((3, 32, 48), 0.5)) == (32, 48)


def test_an_exemplar_that_repeats_at_a_shift_that_is_no_divisor_is_cut_from_a_multiple_of_its_size(caplog):
    """chequered_0096's squares repeat every 75 of its 256 pixels: at whole multiples of its size
    its spectrum target keeps its frequencies, and the squares came out more regular."""
    y, x = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    chequerboard = ((y // 5 + x // 5) % 2).float().expand(3, 64, 64)  # period 10, which 64 is not a multiple of
    assert repeats_itself(chequerboard) and texture_period(chequerboard) == (64, 64)
    assert image_size_for(None, chequerboard, (100, 90)) == (128, 128)
    logger = logging.getLogger("texsynth")
    logger.addHandler(caplog.handler)
    try:
        TextureSynthesis(chequerboard, **TINY_BACKBONE, size=(100, 90), seed=0)
    finally:
        logger.removeHandler(caplog.handler)
    assert "90x100 is not a whole multiple of its size 64x64: optimizing a 128x128 tile" in caplog.text
    assert image_size_for(None, chequerboard, (128, 192)) == (128, 192)  # a multiple already
    cells = load_example("cells", size=64)
    assert not repeats_itself(cells) and image_size_for(None, cells, (100, 90)) == (100, 90)
    # a lattice of blobs along (13, 5) and (-5, 13): it repeats along no axis within half its size
    y, x = torch.meshgrid(torch.arange(96.0), torch.arange(96.0), indexing="ij")
    basis = torch.tensor([[13.0, -5.0], [5.0, 13.0]])
    offsets = torch.linalg.solve(basis, torch.stack([y.flatten(), x.flatten()]))
    distances = (basis @ (offsets - offsets.round())).norm(dim=0).reshape(96, 96)
    lattice = torch.exp(-distances.pow(2) / 8).expand(3, 96, 96)
    assert repeats_itself(lattice) and texture_period(lattice) == (96, 96)


def test_a_periodic_exemplar_at_a_size_that_is_no_multiple_of_its_period_is_cut_from_a_tile_that_is(exemplar, caplog):
    """bricks 256 -> 400 as a 400x400 tile: a band of faded, cross-hatched rows (the period, 64,
    cannot repeat a whole number of times around it); cut from a 448x448 tile: regular rows."""
    assert texture_period(exemplar) == (8, 8)  # rows 4 high, bricks 8 wide, every other row shifted
    result = synthesize(exemplar, size=(41, 50), steps=2, seed=0, lbfgs={"max_iter": 3}, **TINY_BACKBONE)
    module = result.module
    assert module.image_size == (48, 56) and module.output_size == (41, 50)
    assert module.image.shape == (1, 3, 48, 56) and result.image.shape == (3, 41, 50)
    assert torch.equal(result.image, module.image.detach()[0, :, :41, :50].clamp(0, 1))
    assert module.tile is True and module.tile_option is None and module.hparams["image_size"] == [48, 56]
    again = TextureSynthesis(exemplar, **module.rebuild_options()[0])  # as load_from_checkpoint builds it
    assert again.image_size == (48, 56) and again.output_size == (41, 50)
    # a whole multiple of the period needs no crop, though not one of the exemplar's size
    assert TextureSynthesis(exemplar, **TINY_BACKBONE, size=(40, 48), seed=0).image_size == (40, 48)
    # asked for explicitly, a tile is made at the size given, with a warning; a stochastic exemplar needs no crop
    logger = logging.getLogger("texsynth")
    logger.addHandler(caplog.handler)
    try:
        assert TextureSynthesis(exemplar, **TINY_BACKBONE, size=(41, 50), tile=True, seed=0).image_size == (41, 50)
        TextureSynthesis(exemplar, **TINY_BACKBONE, size=(40, 48), tile=True, seed=0)  # a multiple: nothing to say
        # its half-size stage (82x100 -> 41x50 from the 32x32 bricks) does not say it again
        with_coarse_stage = synthesize(load_example("bricks", size=64), size=(82, 100), tile=True, steps=1,
                                       coarse_levels=1, coarse_steps=1, seed=0, lbfgs={"max_iter": 2}, **TINY_BACKBONE)
    finally:
        logger.removeHandler(caplog.handler)
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert warnings == [f"tile=True: exemplar image repeats itself and {size} is not a whole multiple of its period "
                        f"{period}: its rows may break (a {fitting} tile would fit; with tile left unset, a larger "
                        "output is cut from one)"
                        for period, size, fitting in (("8x8", "50x41", "56x48"), ("16x16", "100x82", "112x96"))]
    assert with_coarse_stage.coarse.levels == 1 and "skipping" not in caplog.text  # its half-size stage ran
    assert TextureSynthesis(exemplar, **TINY_BACKBONE, size=(41, 50), tile=False, seed=0).image_size == (41, 50)
    cracks = load_example("cracks", size=64)
    assert TextureSynthesis(cracks, **TINY_BACKBONE, size=100, seed=0).image_size == (100, 100)


def test_a_cropped_output_is_saved_at_its_size_and_its_run_repeats_from_its_config(tmp_path, caplog):
    out = tmp_path / "bricks.png"
    run = ["--exemplar-size", "32", "--size", "41x50", "--steps", "1", "--max-iter", "2", "--backbone",
           "random_pyramid", "--no-log", "--no-progress"]
    logger = logging.getLogger("texsynth")
    logger.addHandler(caplog.handler)
    try:
        assert main(["synthesize", "bricks", "-o", str(out), *run]) == 0
    finally:
        logger.removeHandler(caplog.handler)
    assert "41x50 is not a whole multiple of its period 8x8: optimizing a 48x56 tile and cropping it" in caplog.text
    with Image.open(out) as image:
        assert image.size == (41, 50)
    again = tmp_path / "again.png"
    assert main(["synthesize", "--config", str(tmp_path / "bricks.texsynth.yaml"), "-o", str(again)]) == 0
    assert again.read_bytes() == out.read_bytes()


@pytest.mark.parametrize(("pad_h", "pad_w"), [(2, 3), (5, 9)])
def test_circular_padding_wraps_around_as_often_as_needed(pad_h, pad_w):
    image = torch.rand(1, 2, 4, 3, generator=torch.Generator().manual_seed(0))
    tiling = image.repeat(1, 1, 7, 9)  # the middle copy starts at row 12, column 12
    expected = tiling[..., 12 - pad_h:16 + pad_h, 12 - pad_w:15 + pad_w]
    torch.testing.assert_close(circular_pad(image, pad_h, pad_w), expected)


def test_a_tiled_exemplar_smaller_than_its_coarsest_padding_runs_with_the_right_gradient():
    # 16x16 with the default pyramid: its 1/4 level is 4x4 under an 11x11 kernel (padding 5)
    exemplar = load_example("cells", size=16)
    options = dict(backbone="random_pyramid", backbone_options={"filters": 4}, seed=0,
                   losses={"spectrum": 0, "chroma_spectrum": 0})
    larger = TextureSynthesis(exemplar, size=32, **options)
    assert larger.tile  # larger than the exemplar
    fit(larger, 1, logdir=False, progress_bar=False, quiet=True)
    assert torch.isfinite(larger.output()).all()

    module = TextureSynthesis(exemplar, tile=True, **options)  # the 16x16 output's level wraps too
    image = module.image.detach().clone().requires_grad_(True)
    gradients = []
    for method in ("auto", "direct"):  # auto: matrix-product backward and fused banks on CPU
        for conv in module.backbone.modules():
            if isinstance(conv, torch.nn.Conv2d):
                conv.method = method
        features = module.extractor(image)
        gradients.append(torch.autograd.grad(sum((f ** 2).mean() for f in features.values()), image)[0])
    torch.testing.assert_close(gradients[0], gradients[1], rtol=1e-4, atol=1e-6)
    assert float(gradients[0].abs().max()) > 0


# ---------------------------------------------------------------- larger outputs: the resampled modulus
def _stripes(size: int = 16, cycles: int = 3) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32)
    row = 0.5 + 0.3 * torch.sin(2 * torch.pi * cycles * x / size)
    return row.expand(1, 3, size, size).clone()


def _peak_neighbour_ratio(spectrum: torch.Tensor) -> float:
    """The strongest frequency's stronger neighbour along the stripes' axis, relative to it
    (channel 0): two close frequencies of similar strength beat."""
    modulus = spectrum[0, 0, 0].abs()
    modulus[0] = 0
    peak = int(modulus.argmax())
    return float(torch.maximum(modulus[peak - 1], modulus[(peak + 1) % modulus.numel()]) / modulus[peak])


@pytest.mark.parametrize("size", [(32, 32), (32, 48)])
def test_sharp_upsampling_keeps_a_periodic_peak_in_one_bin_the_texton_spreads_it(size):
    stripes = _stripes()
    assert _peak_neighbour_ratio(exemplar_spectrum(stripes, size)) < 0.25
    assert _peak_neighbour_ratio(exemplar_spectrum(stripes, size, upsample="texton")) > 0.5  # about 2/pi


def test_projection_on_a_sharp_larger_target_has_no_beat():
    """Rows that fade and return region by region: the local amplitude of the stripes
    after projecting noise onto the target modulus, across the output."""
    stripes = _stripes()
    noise = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))

    def amplitude_spread(upsample: str) -> float:
        target = exemplar_spectrum(stripes, (64, 64), upsample=upsample)
        projected = spectrum_projection(noise, target)[0, 0]
        blocks = (projected - projected.mean()).pow(2).reshape(8, 8, 8, 8).mean(dim=(1, 3)).sqrt()
        return float(blocks.std() / blocks.mean())

    sharp, texton = amplitude_spread("sharp"), amplitude_spread("texton")
    assert texton > 2 * sharp  # 0.33 and 0.15: what is left is the background texture's own spread


@pytest.mark.parametrize("size", [(32, 32), (40, 24), (37, 51), (12, 40)])
def test_sharp_upsampling_keeps_mean_variance_and_a_real_image(size):
    exemplar = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    sharp = exemplar_spectrum(exemplar, size)
    texton = exemplar_spectrum(exemplar, size, upsample="texton")
    torch.testing.assert_close(sharp[..., 0, 0], texton[..., 0, 0])
    energy = lambda s: s.abs().pow(2).sum(dim=(-2, -1)) - s[..., 0, 0].abs().pow(2)  # noqa: E731
    torch.testing.assert_close(energy(sharp), energy(texton), rtol=0.1, atol=0)
    image = torch.fft.ifft2(sharp)
    assert float(image.imag.abs().max()) < 1e-4 * float(image.real.abs().max())


def test_upsample_is_checked_and_irrelevant_for_outputs_no_larger_than_the_exemplar():
    exemplar = torch.rand(1, 3, 16, 16)
    torch.testing.assert_close(exemplar_spectrum(exemplar, (16, 16), upsample="texton"),
                               exemplar_spectrum(exemplar, (16, 16)))
    with pytest.raises(InvalidArgumentError, match="upsample"):
        SpectrumLoss(upsample="nearest")


def test_the_texton_modulus_is_one_loss_option_away():
    exemplar = load_example("cells", size=16)
    targets = {}
    for upsample in ("sharp", "texton"):
        module = TextureSynthesis(exemplar, **TINY_BACKBONE, size=32, seed=0,
                                  losses={"spectrum": {"upsample": upsample}})
        module.compute_losses()
        loss = module.loss_terms["spectrum"]
        assert loss.upsample == upsample and loss.spec[1]["upsample"] == upsample  # recorded in configs
        expected = exemplar_spectrum(module.exemplar, (32, 32), loss.mode, periodic=True, upsample=upsample)
        torch.testing.assert_close(loss.target, expected)
        targets[upsample] = loss.target
    assert not torch.allclose(targets["sharp"].abs(), targets["texton"].abs(), rtol=0.1)
