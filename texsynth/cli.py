"""The ``texsynth`` command line.

User errors (bad files, bad options, missing weights) print one line to stderr and exit
with status 2; a traceback means a bug in texsynth.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from texsynth.allocator import KEEP_FREED_MEMORY_ENV
from texsynth.callbacks import MATMUL_PRECISIONS, require_open_fraction
from texsynth.errors import InvalidArgumentError, TexsynthError
from texsynth.multiscale import COARSE_LAYERS
from texsynth.presets import DEFAULT_STEPS

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
EXIT_ITEMS_FAILED = 1  # `texsynth batch`: some items failed (the manifest says why)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like every texsynth error
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="texsynth", description="Neural texture synthesis (Gram + spectrum, L-BFGS).")
    parser.add_argument("--version", action="version", version=f"texsynth {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser("synthesize", help="synthesize a texture from an exemplar image")
    run.add_argument("exemplar", nargs="?", help="image file, or a bundled example name (see `texsynth list`)")
    run.add_argument("-o", "--output", help="output image path (PNG)")
    _add_synthesis_options(run)
    run.add_argument("--checkpoint", help="checkpoint path (default: OUT's name with .ckpt)")
    run.add_argument("--resume", metavar="CKPT", help="continue a run from its checkpoint up to --steps in total")
    run.add_argument("--variations", type=int, default=1,
                     help="synthesize K textures at once, saved as OUT_0.png … OUT_{K-1}.png")
    run.add_argument("--logdir", default="texsynth_logs", help="TensorBoard log directory")
    run.add_argument("--no-log", action="store_true", help="disable TensorBoard logging")
    run.add_argument("--accelerator", default="auto", help="Lightning accelerator: auto, cpu, gpu, …")
    run.add_argument("--json", action="store_true", help="print a one-line JSON summary")
    run.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    many = commands.add_parser("batch", help="synthesize every image of a folder, on several devices/nodes")
    many.add_argument("source", metavar="SRC", help="folder of exemplars (searched recursively)")
    many.add_argument("out", metavar="OUT", help="output folder: images (same relative layout) and manifest.jsonl")
    _add_synthesis_options(many)
    many.add_argument("--variations", type=int, default=1,
                      help="K variations per exemplar (seeds SEED … SEED+K-1), each its own work item")
    many.add_argument("--accelerator", default="auto", help="Lightning accelerator: auto, cpu, gpu, …")
    many.add_argument("--devices", default="1", help="processes (devices) per node: N, or auto")
    many.add_argument("--num-nodes", type=int, default=1, help="number of nodes (machines)")
    many.add_argument("--strategy", help="Lightning Fabric strategy (default: ddp when several processes)")
    many.add_argument("--logdir", help="TensorBoard log directory, one run per item (default: no logging)")
    many.add_argument("--json", action="store_true", help="print a one-line JSON summary (rank 0)")
    many.add_argument("--no-progress", action="store_true", help="no batch progress lines")

    listing = commands.add_parser("list", help="list losses, backbones, presets and bundled examples")
    listing.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE")

    example = commands.add_parser("example", help="write a bundled example exemplar to a file")
    example.add_argument("name", help="example name (see `texsynth list`)")
    example.add_argument("-o", "--output", required=True)
    example.add_argument("--size", type=int, default=256)

    weights = commands.add_parser("download-weights", help="download VGG19 ImageNet weights (548 MB)")
    weights.add_argument("--quiet", action="store_true")

    prepare = commands.add_parser("prepare", help="centre-crop and resize a folder of images (DTD preprocessing)")
    prepare.add_argument("source", help="folder to read (recursively)")
    prepare.add_argument("destination", help="folder to write PNGs to (same relative layout)")
    prepare.add_argument("--size", type=int, default=256, help="output side in pixels")
    parser.command_parsers = {"synthesize": run, "batch": many}  # type: ignore[attr-defined]
    return parser


def _add_synthesis_options(command: argparse.ArgumentParser) -> None:
    """Options shared by ``synthesize`` and ``batch``: what to make and how."""
    command.add_argument("--config", help="YAML run configuration (as written next to every output); "
                         "options given here override it")
    command.add_argument("--size", help="output size: N or WIDTHxHEIGHT (default: the exemplar's)")
    command.add_argument("--exemplar-size", help="centre-crop and resize the exemplar first: N or WxH")
    command.add_argument("--steps", type=int, default=DEFAULT_STEPS,
                         help="L-BFGS steps (each up to max-iter evaluations)")
    command.add_argument("--max-iter", type=int, help="L-BFGS evaluations per step (default 20)")
    command.add_argument("--backbone", help="backbone name (default: vgg19 if its weights are cached, else weight-free)")
    command.add_argument("--weights", help="backbone weights: 'imagenet', 'random' or a state-dict path")
    command.add_argument("--loss", action="append", default=[], metavar="NAME=WEIGHT",
                         help="set a loss weight (adds the loss if new, 0 removes it), or one of its options: "
                              "NAME.OPTION=VALUE (e.g. spectrum.mode=luminance); repeatable")
    command.add_argument("--preset", help="named recipe, e.g. liu2016 (see `texsynth list`)")
    command.add_argument("--init", help="starting image: sigmoid, uniform, gaussian, random_phase (default: the preset's)")
    command.add_argument("--coarse-levels", type=int, metavar="K",
                         help="coarse-to-fine: K smaller stages (1/2^K … 1/2 of the size) first (default: the preset's)")
    command.add_argument("--coarse-steps", type=int, metavar="N",
                         help="L-BFGS steps of each coarse stage (default: the preset's, else --steps)")
    command.add_argument("--coarse-layers", choices=COARSE_LAYERS,
                         help="layers the coarse stages match: all, or matched (only those whose receptive "
                              "field, scaled to the output, the full size has; default: the preset's)")
    command.add_argument("--coarse-starts", type=int, metavar="N",
                         help="run the coarsest stage from N noise images and go on from the one whose loss "
                              "ends lowest (fewer runs stuck in a poor layout; costs N-1 extra coarse stages)")
    command.add_argument("--stop-when-stalled", type=float, metavar="FRACTION",
                         help="stop before --steps once the loss improves by less than FRACTION per step, "
                              "two steps in a row (e.g. 0.01)")
    command.add_argument("--max-copy-score", type=float, metavar="SCORE",
                         help="undo the step after which the output's copy score (about 1 for a shifted "
                              "copy of the exemplar, 0.3 for a new texture) exceeds SCORE, and stop (e.g. 0.5)")
    command.add_argument("--seed", type=int, help="random seed (default: drawn and reported)")
    command.add_argument("--tile", action=argparse.BooleanOptionalAction, default=None,
                         help="make the output seamlessly tileable (default: only outputs larger than the "
                              "exemplar, which otherwise grow a frame along their borders)")
    command.add_argument("--checkpoint-every", type=int, default=0, metavar="N",
                         help="write a checkpoint every N steps (one is always written on Ctrl-C/SIGTERM)")
    command.add_argument("--log-images-every", type=int, default=10, help="log the image every N steps")
    command.add_argument("--precision", default="32-true", help="Lightning precision, e.g. 32-true, bf16-mixed")
    command.add_argument("--matmul-precision", choices=MATMUL_PRECISIONS,
                         help="internal precision of float32 matrix products: 'medium' multiplies in bfloat16 "
                              "on CPUs with AMX/AVX-512 BF16 (faster Gram matrices), TF32 on CUDA; back to "
                              "'highest' once a step stalls on the rounding")
    command.add_argument("--nondeterministic-gpu", dest="deterministic_on_gpu", action="store_false",
                         help="on a GPU, allow kernels that add in a varying order: up to 1.8x cheaper "
                              "evaluations, but the same seed no longer gives the same image")
    command.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                         help="import a module or .py file first (registers user losses/backbones)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if getattr(args, "config", None):
            args = _apply_config(parser, argv, args.command, args.config)
        with _keep_freed_memory_by_default():
            return _COMMANDS[args.command](args)
    except TexsynthError as error:
        print(f"texsynth: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("texsynth: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


@contextlib.contextmanager
def _keep_freed_memory_by_default() -> Iterator[None]:
    """The command owns its process, so glibc may keep freed memory for reuse there (``auto``:
    CPU runs up to 1024x1024, 1.66x cheaper weight-free evaluations at 256x256;
    :mod:`texsynth.allocator`) unless ``TEXSYNTH_KEEP_FREED_MEMORY`` says otherwise. Set for the
    command only (workers it starts inherit it), so ``main`` called from Python leaves no trace."""
    if KEEP_FREED_MEMORY_ENV in os.environ:
        yield
        return
    os.environ[KEEP_FREED_MEMORY_ENV] = "auto"
    try:
        yield
    finally:
        os.environ.pop(KEEP_FREED_MEMORY_ENV, None)


def _apply_config(parser: argparse.ArgumentParser, argv: Sequence[str] | None, command: str,
                  path: str) -> argparse.Namespace:
    """Re-parse with the file's values as defaults, so command-line options win."""
    from texsynth.config import read_config

    config = read_config(path)
    run = parser.command_parsers[command]  # type: ignore[attr-defined]
    actions = {action.dest: action for action in run._actions}
    config = {key: _config_value(key, value, actions.get(key), path) for key, value in config.items()}
    run.set_defaults(**{key: value for key, value in config.items() if key in actions})
    args = parser.parse_args(argv)
    args.config_extras = {key: config[key] for key in _CONFIG_MAPPINGS if key in config}
    return args


def _config_value(key: str, value: object, action: argparse.Action | None, path: str) -> object:
    """A config file's value as the command line would give it: YAML has types the command line
    has not (``logdir: 5``, ``no_log: 3``, ``lbfgs: [1]``), so each is checked against its option
    here, in one line naming the file and key, not deep inside the run with a traceback."""
    def refuse(what: str) -> InvalidArgumentError:
        return InvalidArgumentError(f"--config {path}: {key}: {what}, got {value!r}")

    if key in _CONFIG_MAPPINGS:
        if value is not None and not isinstance(value, (dict, list) if key == "losses" else dict):
            raise refuse("must be a mapping" + (" or a list" if key == "losses" else ""))
        return value
    if action is None or value is None:
        return value
    if action.nargs == 0:  # a flag: --no-log, --tile/--no-tile
        if not isinstance(value, bool):
            raise refuse("must be true or false")
        return value
    if isinstance(action, argparse._AppendAction):  # --import, given once per module
        modules = [value] if isinstance(value, str) else value
        if not isinstance(modules, list) or not all(isinstance(module, str) for module in modules):
            raise refuse("must be a module name or a list of them")
        return modules
    convert = action.type
    if isinstance(value, str) and callable(convert):  # argparse would blame the command line
        try:
            convert(value)
        except (TypeError, ValueError, argparse.ArgumentTypeError):
            name = getattr(convert, "__name__", "value")
            raise InvalidArgumentError(f"--config {path}: {key}: {value!r} is not a valid {name}") from None
        return value
    if convert is None and not (key in _CONFIG_SIZES and isinstance(value, list)):
        if isinstance(value, (dict, list)):
            raise refuse("must be a single value")
        return value if isinstance(value, str) or key in _CONFIG_SIZES else str(value)  # logdir: 5 is folder "5"
    return value  # numbers: the option's own checks judge them, as for the Python API


#: config keys with no command-line option of their own (a mapping, or losses' list of [name, options])
_CONFIG_MAPPINGS = ("backbone_options", "losses", "lbfgs")
#: config keys that, as in the Python API, may be a number or [height, width] as well as "WxH"
_CONFIG_SIZES = ("size", "exemplar_size")


def _recipe_options(args: argparse.Namespace) -> dict[str, object]:
    """Check the shared synthesis options; return the module's recipe keywords."""
    from texsynth.recipe import loss_settings, merge_loss_settings

    extras = getattr(args, "config_extras", {})
    _import_plugins(args.imports)
    _check_positive("--steps", args.steps)
    _check_positive("--log-images-every", args.log_images_every)
    _check_positive("--variations", args.variations)
    if args.checkpoint_every < 0:
        raise InvalidArgumentError(f"--checkpoint-every must be >= 0, got {args.checkpoint_every}")
    if args.max_iter is not None:
        _check_positive("--max-iter", args.max_iter)
    if args.seed is not None and args.seed < 0:
        raise InvalidArgumentError(f"--seed must be >= 0, got {args.seed}")
    if args.coarse_levels is not None and args.coarse_levels < 0:
        raise InvalidArgumentError(f"--coarse-levels must be >= 0, got {args.coarse_levels}")
    if args.coarse_steps is not None:
        _check_positive("--coarse-steps", args.coarse_steps)
    if args.coarse_starts is not None:
        _check_positive("--coarse-starts", args.coarse_starts)
    if args.stop_when_stalled is not None:
        require_open_fraction(args.stop_when_stalled, "--stop-when-stalled must be a fraction in (0, 1)")
    if args.max_copy_score is not None:
        require_open_fraction(args.max_copy_score, "--max-copy-score must be in (0, 1)")
    losses_given = loss_settings(args.loss)
    lbfgs = dict(extras.get("lbfgs") or {})
    if args.max_iter:
        lbfgs["max_iter"] = args.max_iter
    return {
        "size": args.size,
        "exemplar_size": args.exemplar_size,
        "backbone": args.backbone,
        "weights": args.weights,
        "losses": merge_loss_settings(extras.get("losses"), losses_given),
        "preset": args.preset,
        "init": args.init,
        "tile": args.tile,
        "backbone_options": extras.get("backbone_options"),
        "lbfgs": lbfgs or None,
        "coarse_levels": args.coarse_levels,
        "coarse_steps": args.coarse_steps,
        "coarse_layers": args.coarse_layers,
        "coarse_starts": args.coarse_starts,
        "stop_when_stalled": args.stop_when_stalled,
        "matmul_precision": args.matmul_precision,
        "max_copy_score": args.max_copy_score,
        "deterministic_on_gpu": args.deterministic_on_gpu,
    }


def _synthesize(args: argparse.Namespace) -> int:
    from texsynth.api import synthesize
    from texsynth.config import config_path_for, run_config, write_config

    if not args.exemplar:
        raise InvalidArgumentError("missing EXEMPLAR (an image path or a bundled example name)")
    if not args.output:
        raise InvalidArgumentError("missing -o/--output")
    recipe = _recipe_options(args)
    output = Path(args.output)
    if Path(args.exemplar).exists() and output.resolve() == Path(args.exemplar).resolve():
        raise InvalidArgumentError(f"--output {output} is the exemplar itself; refusing to overwrite it")
    if output.is_dir():
        raise InvalidArgumentError(f"--output {output} is a folder, not a file name")
    trainer = {"accelerator": args.accelerator, "precision": args.precision}
    checkpoint = Path(args.checkpoint) if args.checkpoint else output.with_suffix(".ckpt")
    checkpoint_before = _modified(checkpoint)
    result = synthesize(
        args.exemplar,
        steps=args.steps,
        seed=args.seed,
        variations=args.variations,
        logdir=False if args.no_log else args.logdir,
        log_images_every=args.log_images_every,
        progress_bar=not args.no_progress and not args.json,
        checkpoint=checkpoint,
        checkpoint_every=args.checkpoint_every,
        image_path=output,
        resume=args.resume,
        **recipe,
        **trainer,
    )
    written = result.save(output)
    module = result.module
    config = run_config(module, exemplar=args.exemplar, output=str(output), steps=args.steps, trainer=trainer)
    config["imports"] = list(args.imports)
    config["coarse_levels"] = result.coarse.levels
    config["coarse_steps"] = result.coarse.steps
    config["coarse_layers"] = result.coarse.layers
    config["coarse_starts"] = result.coarse.starts
    config["stop_when_stalled"] = args.stop_when_stalled
    config["matmul_precision"] = args.matmul_precision
    config["max_copy_score"] = args.max_copy_score
    config["deterministic_on_gpu"] = args.deterministic_on_gpu
    config_file = write_config(config, config_path_for(output))
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
        **module.outcome(),
        "interrupted": module.interrupted,
        # only a checkpoint this run wrote, not one left by an earlier run
        "checkpoint": str(checkpoint) if _modified(checkpoint) not in (None, checkpoint_before) else None,
        "config": str(config_file),
    }
    if module.interrupted:
        print(f"texsynth: interrupted by {module.interrupted} after step {result.steps}; saved {output} and "
              f"{checkpoint}; continue with --resume {checkpoint}", file=sys.stderr)
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"wrote {', '.join(map(str, written))} ({summary['size'][0]}x{summary['size'][1]}, {result.steps} steps, "
              f"{result.evals} evaluations, {result.seconds:.1f} s, loss {result.losses['total']:.4g})")
    return EXIT_INTERRUPTED if module.interrupted else 0


def _batch(args: argparse.Namespace) -> int:
    from texsynth.batching import batch

    recipe = _recipe_options(args)
    devices: int | str = args.devices if args.devices == "auto" else _positive_int("--devices", args.devices)
    _check_positive("--num-nodes", args.num_nodes)
    result = batch(
        args.source, args.out, variations=args.variations, steps=args.steps, seed=args.seed or 0,
        accelerator=args.accelerator, devices=devices, num_nodes=args.num_nodes, strategy=args.strategy,
        precision=args.precision, logdir=args.logdir, log_images_every=args.log_images_every,
        checkpoint_every=args.checkpoint_every, progress=not args.no_progress, **recipe,
    )
    if result.rank != 0:
        return EXIT_INTERRUPTED if result.interrupted else 0
    summary = {"total": result.total, "to_do": result.to_do, "done": result.done, "failed": result.failed,
               "processes": result.world_size, "seconds": round(result.seconds, 3),
               "manifest": str(result.manifest), "failures": [
                   {"exemplar": r["exemplar"], "variation": r["variation"], "error": r["error"]}
                   for r in result.failures]}
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"batch: {result.done}/{result.total} done, {result.failed} failed, on {result.world_size} "
              f"process(es) in {result.seconds:.1f} s; manifest {result.manifest}")
    if result.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_ITEMS_FAILED if result.failed or not result.complete else 0


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


def _prepare(args: argparse.Namespace) -> int:
    from texsynth.prepare import prepare_folder

    written, skipped = prepare_folder(args.source, args.destination, args.size)
    why = " (see the warnings above)" if skipped else ""
    print(f"wrote {written} image(s) to {args.destination}; skipped {skipped} file(s){why}")
    return 0


def _download_weights(args: argparse.Namespace) -> int:
    from texsynth.backbones.vgg import download_imagenet_weights

    path = download_imagenet_weights(progress=not args.quiet)
    print(f"VGG19 ImageNet weights are in {path}")
    return 0


_COMMANDS = {
    "synthesize": _synthesize,
    "batch": _batch,
    "list": _list,
    "example": _example,
    "download-weights": _download_weights,
    "prepare": _prepare,
}


def _modified(path: Path) -> int | None:
    return path.stat().st_mtime_ns if path.exists() else None


def _check_positive(option: str, value: int) -> None:
    if value < 1:
        raise InvalidArgumentError(f"{option} must be a positive integer, got {value}")


def _positive_int(option: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise InvalidArgumentError(f"{option} must be a positive integer or auto, got {text!r}") from None
    _check_positive(option, value)
    return value


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
