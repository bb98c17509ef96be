"""Run configurations as YAML files: everything a synthesis needs, to repeat it exactly.

Every CLI run writes ``<output stem>.texsynth.yaml`` next to its output, with all settings
resolved (seed drawn, preset expanded into backbone options, losses with their options,
L-BFGS settings). ``texsynth synthesize --config FILE`` runs it again; options given on the
command line override the file's, in the manner of Lightning's ``LightningCLI``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from texsynth.errors import InvalidArgumentError, OutputWriteError
from texsynth.image_io import atomic_write

#: keys of a run configuration (CLI option names with ``_`` for ``-``).
CONFIG_KEYS = frozenset({
    "exemplar", "output", "size", "exemplar_size", "steps", "preset", "backbone",
    "backbone_options", "weights", "losses", "init", "seed", "variations", "tile", "lbfgs",
    "logdir", "no_log", "log_images_every", "accelerator", "precision", "imports",
    "checkpoint", "checkpoint_every", "coarse_levels", "coarse_steps", "coarse_layers", "coarse_starts",
    "stop_when_stalled", "matmul_precision", "max_copy_score", "deterministic_on_gpu",
})


def run_config(module: Any, *, exemplar: str, output: str, steps: int, trainer: dict[str, Any]) -> dict[str, Any]:
    """The resolved configuration of a finished CLI run of ``module``."""
    losses = []
    for name, loss in module.loss_terms.items():
        spec = getattr(loss, "spec", None)
        if spec is None:
            raise InvalidArgumentError(f"loss {name!r} was passed as an object; its run cannot be written as YAML")
        losses.append([spec[0], yaml_safe(spec[1])])
    height, width = module.output_size
    ex_h, ex_w = module.exemplar.shape[-2:]
    return {
        "exemplar": exemplar,
        "output": output,
        "size": f"{width}x{height}",
        "exemplar_size": f"{ex_w}x{ex_h}",
        "steps": steps,
        "preset": module.preset.name,
        "backbone": module.backbone_name,
        "backbone_options": yaml_safe(module.backbone_options),
        "losses": losses,
        "init": module.init_kind,
        "seed": module.seed,
        "variations": module.variations,
        "tile": module.tile_option,
        "lbfgs": yaml_safe(module.lbfgs_options),
        **yaml_safe(trainer),
    }


def write_config(config: dict[str, Any], path: str | os.PathLike) -> Path:
    text = yaml.safe_dump(config, sort_keys=False, default_flow_style=None)
    try:
        return atomic_write(path, lambda stream: stream.write(text.encode()))
    except OSError as error:
        raise OutputWriteError(f"{path}: cannot write the run configuration ({error.strerror or error})") from None


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise InvalidArgumentError(f"--config {path}: no such file") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InvalidArgumentError(f"--config {path}: not a readable YAML file ({reason})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InvalidArgumentError(f"--config {path}: expected a mapping of options, got {type(data).__name__}")
    unknown = sorted(set(data) - CONFIG_KEYS)
    if unknown:
        raise InvalidArgumentError(
            f"--config {path}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(CONFIG_KEYS))}"
        )
    return data


def config_path_for(output: str | os.PathLike) -> Path:
    output = Path(output)
    return output.with_name(f"{output.stem}.texsynth.yaml")


def yaml_safe(value: Any) -> Any:
    """YAML-safe copies: tuples to lists, paths to strings."""
    if isinstance(value, dict):
        return {str(k): yaml_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [yaml_safe(v) for v in value]
    if isinstance(value, os.PathLike):
        return str(value)
    return value
