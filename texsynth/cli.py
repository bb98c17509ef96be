"""The ``texsynth`` command line.

User errors (bad files, bad options, missing weights) print one line to stderr and exit
with status 2; a traceback means a bug in texsynth.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from texsynth.errors import InvalidArgumentError, TexsynthError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
DEFAULT_STEPS = 8


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like every texsynth error
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="texsynth", description="Neural texture synthesis (Gram + spectrum, L-BFGS).")
    parser.add_argument("--version", action="version", version=f"texsynth {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser("synthesize", help="synthesize a texture from an exemplar image")
    run.add_argument("exemplar", help="image file, or a bundled example name (see `texsynth list`)")
    run.add_argument("-o", "--output", required=True, help="output image path (PNG)")
    run.add_argument("--size", help="output size: N or WIDTHxHEIGHT (default: the exemplar's)")
    run.add_argument("--exemplar-size", help="centre-crop and resize the exemplar first: N or WxH")
    run.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="L-BFGS steps (each up to max-iter evaluations)")
    run.add_argument("--max-iter", type=int, help="L-BFGS evaluations per step (default 20)")
    run.add_argument("--backbone", help="backbone name (default: vgg19 if its weights are cached, else weight-free)")
    run.add_argument("--weights", help="backbone weights: 'imagenet', 'random' or a state-dict path")
    run.add_argument("--loss", action="append", default=[], metavar="NAME=WEIGHT",
                     help="set a loss weight (adds the loss if new, 0 removes it); repeatable")
    run.add_argument("--preset", help="named recipe, e.g. liu2016 (see `texsynth list`)")
    run.add_argument("--init", help="starting image: sigmoid, uniform, gaussian, random_phase")
    run.add_argument("--seed", type=int, help="random seed (default: drawn and reported)")
    run.add_argument("--tile", action="store_true", help="make the output seamlessly tileable")
    run.add_argument("--variations", type=int, default=1,
                     help="synthesize K textures at once, saved as OUT_0.png … OUT_{K-1}.png")
    run.add_argument("--logdir", default="texsynth_logs", help="TensorBoard log directory")
    run.add_argument("--no-log", action="store_true", help="disable TensorBoard logging")
    run.add_argument("--log-images-every", type=int, default=10, help="log the image every N steps")
    run.add_argument("--accelerator", default="auto", help="Lightning accelerator: auto, cpu, gpu, …")
    run.add_argument("--precision", default="32-true", help="Lightning precision, e.g. 32-true, bf16-mixed")
    run.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                     help="import a module or .py file first (registers user losses/backbones)")
    run.add_argument("--json", action="store_true", help="print a one-line JSON summary")
    run.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    listing = commands.add_parser("list", help="list losses, backbones, presets and bundled examples")
    listing.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE")

    example = commands.add_parser("example", help="write a bundled example exemplar to a file")
    example.add_argument("name", help="example name (see `texsynth list`)")
    example.add_argument("-o", "--output", required=True)
    example.add_argument("--size", type=int, default=256)

    weights = commands.add_parser("download-weights", help="download VGG19 ImageNet weights (548 MB)")
    weights.add_argument("--quiet", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except TexsynthError as error:
        print(f"texsynth: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("texsynth: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _synthesize(args: argparse.Namespace) -> int:
    from texsynth.api import synthesize
    from texsynth.recipe import parse_loss_argument

    _import_plugins(args.imports)
    _check_positive("--steps", args.steps)
    _check_positive("--log-images-every", args.log_images_every)
    _check_positive("--variations", args.variations)
    if args.max_iter is not None:
        _check_positive("--max-iter", args.max_iter)
    if args.seed is not None and args.seed < 0:
        raise InvalidArgumentError(f"--seed must be >= 0, got {args.seed}")
    output = Path(args.output)
    if Path(args.exemplar).exists() and output.resolve() == Path(args.exemplar).resolve():
        raise InvalidArgumentError(f"--output {output} is the exemplar itself; refusing to overwrite it")
    if output.is_dir():
        raise InvalidArgumentError(f"--output {output} is a directory; give a file name")
    losses = dict(parse_loss_argument(text) for text in args.loss) or None
    result = synthesize(
        args.exemplar,
        steps=args.steps,
        size=args.size,
        exemplar_size=args.exemplar_size,
        backbone=args.backbone,
        weights=args.weights,
        losses=losses,
        preset=args.preset,
        seed=args.seed,
        init=args.init,
        variations=args.variations,
        tile=args.tile,
        lbfgs={"max_iter": args.max_iter} if args.max_iter else None,
        logdir=False if args.no_log else args.logdir,
        log_images_every=args.log_images_every,
        accelerator=args.accelerator,
        precision=args.precision,
        progress_bar=not args.no_progress and not args.json,
    )
    written = result.save(output)
    module = result.module
    summary = {
        "output": str(output) if len(written) == 1 else [str(p) for p in written],
        "steps": result.steps,
        "evals": result.evals,
        "seconds": round(result.seconds, 3),
        "loss": result.losses,
        "backbone": module.backbone_name,
        "preset": module.preset.name,
        "seed": module.seed,
        "size": [module.output_size[1], module.output_size[0]],
        "log_dir": result.log_dir,
        "diverged": module.diverged,
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"wrote {', '.join(map(str, written))} ({summary['size'][0]}x{summary['size'][1]}, {result.steps} steps, "
              f"{result.evals} evaluations, {result.seconds:.1f} s, loss {result.losses['total']:.4g})")
    return 0


def _list(args: argparse.Namespace) -> int:
    from texsynth.backbones import list_backbones
    from texsynth.examples import list_examples
    from texsynth.losses import list_losses
    from texsynth.presets import get_preset, list_presets

    _import_plugins(args.imports)
    print("losses:    " + ", ".join(list_losses()))
    print("backbones: " + ", ".join(list_backbones()))
    print("examples:  " + ", ".join(list_examples()))
    print("presets:")
    for name in list_presets():
        print(f"  {name}: {get_preset(name).description}")
    return 0


def _example(args: argparse.Namespace) -> int:
    from texsynth.examples import load_example
    from texsynth.image_io import save_image

    path = save_image(load_example(args.name, size=args.size), args.output)
    print(f"wrote {path}")
    return 0


def _download_weights(args: argparse.Namespace) -> int:
    from texsynth.backbones.vgg import download_imagenet_weights

    path = download_imagenet_weights(progress=not args.quiet)
    print(f"VGG19 ImageNet weights are in {path}")
    return 0


_COMMANDS = {
    "synthesize": _synthesize,
    "list": _list,
    "example": _example,
    "download-weights": _download_weights,
}


def _check_positive(option: str, value: int) -> None:
    if value < 1:
        raise InvalidArgumentError(f"{option} must be a positive integer, got {value}")


def _import_plugins(names: Sequence[str]) -> None:
    """Import user modules (dotted names, or ``.py`` paths) so their decorators register."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # console scripts do not see the working directory
    for name in names:
        try:
            if name.endswith(".py"):
                path = Path(name)
                if not path.is_file():
                    raise InvalidArgumentError(f"--import {name}: no such file")
                spec = importlib.util.spec_from_file_location(path.stem, path)
                module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
                sys.modules[path.stem] = module
                spec.loader.exec_module(module)  # type: ignore[union-attr]
            else:
                importlib.import_module(name)
        except TexsynthError:
            raise
        except Exception as error:
            raise InvalidArgumentError(
                f"--import {name}: {type(error).__name__}: {error}".splitlines()[0]
            ) from None


def _version() -> str:
    from texsynth import __version__

    return __version__


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
