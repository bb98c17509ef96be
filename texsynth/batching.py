"""Synthesizing whole folders of exemplars on many processes: ``texsynth batch``.

Every exemplar under the source folder times ``variations`` is an independent work item.
Lightning Fabric launches the processes (``torchrun``, SLURM or its own launcher, as for any
Lightning job) and sets up the process group; rank 0 reads the manifest, decides which items
are still to do and broadcasts that list; each rank takes every ``world_size``-th item of it
(deterministic and disjoint) and synthesizes them one at a time with its own single-device
Trainer. Images are independent, so nothing else is exchanged between ranks: no gradient
all-reduce, only that broadcast and the final barrier.

Results go to ``OUT/<exemplar's relative path>.png`` (``_<k>`` before the suffix with several
variations) and one manifest line per item (:mod:`texsynth.manifest`). An item is done when
its latest manifest record says so and its output exists, so a re-run (after preemption, or
after deleting some outputs) does exactly the missing items. SIGTERM/SIGINT stop a rank at
the end of its current L-BFGS step with a checkpoint, which the next run resumes from.
"""

from __future__ import annotations

import json
import os
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch

from texsynth._logging import log
from texsynth.callbacks import MatmulPrecision, stopping_callbacks
from texsynth.errors import CheckpointError, InvalidArgumentError, TexsynthError, require_count
from texsynth.image_io import parse_size, require_folder_accepts_files, require_writable_folder
from texsynth.losses import TextureLoss
from texsynth.manifest import DONE, FAILED, INTERRUPTED, MANIFEST_NAME, Manifest
from texsynth.module import loss_config
from texsynth.multiscale import CoarseSchedule
from texsynth.presets import DEFAULT_STEPS
from texsynth.recipe import default_preset_name, resolve_preset, resolve_recipe
from texsynth.trainer import lightning_settings, resolve_cpu_precision

#: file suffixes taken as exemplars; anything else in the source folder is ignored.
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})
#: where interrupted items keep their checkpoints, inside the output folder.
CHECKPOINT_DIR = ".texsynth-checkpoints"
#: options that change how an item runs, not what it is asked to make
NOT_SHAPING = frozenset({"deterministic_on_gpu"})
#: how long a rank that finished its share waits at the final barrier for the others.
BARRIER_TIMEOUT = timedelta(days=2)


@dataclass(frozen=True)
class WorkItem:
    """One synthesis: an exemplar (relative to the source folder) and a variation index."""

    exemplar: str
    variation: int
    output: str  # relative to the output folder

    @property
    def key(self) -> tuple[str, int]:
        return self.exemplar, self.variation


@dataclass
class BatchResult:
    """What a batch run did, as seen by this rank (rank 0 also counts the whole batch)."""

    total: int
    done: int
    failed: int
    to_do: int  # items this run set out to do (the rest were already done)
    processed_here: int
    seconds: float
    manifest: Path
    rank: int = 0
    world_size: int = 1
    interrupted: bool = False
    failures: list[dict[str, Any]] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.done == self.total


def find_exemplars(source: str | os.PathLike, exclude: str | os.PathLike | None = None) -> list[str]:
    """Image files under ``source`` (recursively), as sorted POSIX paths relative to it."""
    root = Path(source)
    if not root.is_dir():
        raise InvalidArgumentError(f"SRC {root}: not a directory" if root.exists() else f"SRC {root}: no such directory")
    skip = Path(exclude).resolve() if exclude is not None else None
    found = []
    for path in root.rglob("*"):
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            continue
        if skip is not None and skip in path.resolve().parents:
            continue  # the output folder inside the source folder
        found.append(path.relative_to(root).as_posix())
    if not found:
        raise InvalidArgumentError(f"SRC {root}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return sorted(found)


def output_name(exemplar: str, variation: int, variations: int) -> str:
    """``a/b.jpg`` -> ``a/b.png``, or ``a/b_<k>.png`` when there are several variations."""
    stem = exemplar.rsplit(".", 1)[0]
    return f"{stem}.png" if variations == 1 else f"{stem}_{variation}.png"


def work_items(exemplars: list[str], variations: int) -> list[WorkItem]:
    """Every (exemplar, variation) pair; refuses two exemplars that would share an output.

    ``a.jpg`` and ``a.png`` both become ``a.png``: the second would overwrite the first and the
    manifest would call both done. Names are compared case-folded, as macOS and Windows do.
    """
    items = [WorkItem(name, k, output_name(name, k, variations)) for name in exemplars for k in range(variations)]
    first_by_output: dict[str, WorkItem] = {}
    for item in items:
        earlier = first_by_output.setdefault(item.output.casefold(), item)
        if earlier is not item:
            raise InvalidArgumentError(f"SRC: {earlier.exemplar} and {item.exemplar} would both be written to "
                                       f"{item.output}; rename one of them")
    return items


def split_items(items: list[WorkItem], rank: int, world_size: int) -> list[WorkItem]:
    """This rank's share: every ``world_size``-th item from ``rank`` (disjoint, covering)."""
    if not 0 <= rank < world_size:
        raise InvalidArgumentError(f"rank {rank} is outside a world of size {world_size}")
    return items[rank::world_size]


def pending_items(items: list[WorkItem], manifest: Manifest, out: Path) -> list[WorkItem]:
    """Items whose latest record is not ``done`` or whose output has disappeared."""
    latest = manifest.latest()
    return [
        item for item in items
        if latest.get(item.key, {}).get("status") != DONE or not (out / item.output).is_file()
    ]


def batch_state(manifest: Manifest, items: list[WorkItem]) -> tuple[int, list[dict[str, Any]]]:
    """How many ``items`` are done, and the latest records of the failed ones."""
    latest = manifest.latest()
    records = [latest.get(item.key, {}) for item in items]
    return (sum(record.get("status") == DONE for record in records),
            [record for record in records if record.get("status") == FAILED])


class BatchProgress:
    """Rank 0's view of the whole batch, read from the manifest every ``interval`` seconds."""

    def __init__(self, manifest: Manifest, items: list[WorkItem], already_done: int, interval: float = 5.0) -> None:
        self.manifest = manifest
        self.items = items
        self.total = len(items)
        self.already_done = already_done
        self.interval = interval
        self.start = time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="texsynth-batch-progress", daemon=True)
        self._last: tuple[int, int] | None = None

    def counts(self) -> tuple[int, int]:
        """(done, failed) over the whole batch."""
        done, failures = batch_state(self.manifest, self.items)
        return done, len(failures)

    def line(self, done: int, failed: int) -> str:
        elapsed = time.time() - self.start
        finished_now = max(done + failed - self.already_done, 0)
        text = f"batch: {done}/{self.total} done"
        if failed:
            text += f", {failed} failed"
        if finished_now and elapsed > 0:
            rate = finished_now / elapsed
            remaining = max(self.total - done - failed, 0)
            text += f" · {rate * 3600:.1f} items/h · ETA {timedelta(seconds=round(remaining / rate))}"
        return text

    def report(self) -> None:
        counts = self.counts()
        if counts != self._last:
            self._last = counts
            log.info(self.line(*counts))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.report()

    def __enter__(self) -> BatchProgress:
        self.report()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.report()


@dataclass
class _Job:
    """Everything a rank needs; plain data, so it can be sent to spawned processes."""

    source: Path
    out: Path
    variations: int
    steps: int
    seed: int
    logdir: str | None
    log_images_every: int
    precision: Any
    progress: bool
    progress_interval: float
    checkpoint_every: int
    module_options: dict[str, Any]

    @property
    def settings(self) -> dict[str, Any]:
        """What shapes an output, as JSON data: recorded with every item, so that a re-run with
        other settings is not told the old outputs are its own (see :func:`require_same_settings`)."""
        shaping = {"steps": self.steps, "seed": self.seed, "precision": self.precision, **self.module_options}
        for key in ("size", "exemplar_size"):  # "256" (the CLI's) and 256 (Python's) are one size
            shaping[key] = parse_size(shaping.get(key), key)
        shaping = {key: value for key, value in shaping.items()  # unset is unset, however it was left out
                   if value is not None and key not in NOT_SHAPING}
        # a loss object as a resumed checkpoint compares it (type and shaping options); other objects
        # (a backbone module) by type name: their repr holds an address, new every run
        return json.loads(json.dumps(shaping, sort_keys=True, default=_object_settings))


def _object_settings(value: Any) -> Any:
    return loss_config(value) if isinstance(value, TextureLoss) else type(value).__name__


def _by_type_name(settings: Any) -> Any:
    """``settings`` as texsynth recorded them before loss objects had their options recorded:
    each loss object by its type name. A manifest of that time is still this run's."""
    if isinstance(settings, dict):
        if {"type", "weight"} <= set(settings):  # a loss object's loss_config
            return settings["type"]
        return {key: _by_type_name(value) for key, value in settings.items()}
    if isinstance(settings, list):
        return [_by_type_name(value) for value in settings]
    return settings


def batch(
    source: str | os.PathLike,
    out: str | os.PathLike,
    *,
    variations: int = 1,
    steps: int = DEFAULT_STEPS,
    seed: int = 0,
    accelerator: str = "auto",
    devices: int | str = 1,
    num_nodes: int = 1,
    strategy: Any = None,
    precision: str | int | None = "32-true",
    logdir: str | os.PathLike | None = None,
    log_images_every: int = 10,
    checkpoint_every: int = 0,
    progress: bool = True,
    progress_interval: float = 5.0,
    **module_options: Any,
) -> BatchResult:
    """Synthesize every image under ``source`` (``variations`` times each) into ``out``.

    Runs on ``devices`` x ``num_nodes`` processes launched by Lightning Fabric; with more
    than one, this script is started again once per extra local rank (as Lightning does for
    ``Trainer(strategy="ddp")``), or the processes come from ``torchrun``/SLURM. Variation
    ``k`` of every exemplar uses seed ``seed + k``, whichever rank runs it. Other keyword
    options go to :class:`~texsynth.TextureSynthesis` (``size``, ``preset``, ``losses``, …).
    Returns on every rank; rank 0's result counts the whole batch.
    """
    from lightning.fabric import Fabric

    from texsynth.api import lightning_callbacks, require_synthesis_options

    source, out = Path(source), Path(out)
    require_synthesis_options(module_options, "batch", batch=True)
    lightning_callbacks(module_options.get("callbacks"))  # else every item fails on it
    # checked here, not per item: a bad count would fail every item, each after loading its exemplar
    for name, value in (("variations", variations), ("steps", steps), ("num_nodes", num_nodes),
                        ("log_images_every", log_images_every)):
        require_count(value, name)
    require_count(checkpoint_every, "checkpoint_every", minimum=0)
    require_count(seed, "seed", minimum=0)
    if not isinstance(devices, (str, list)):  # "auto", "0,1" and [0, 1] are Lightning's to judge
        require_count(devices, "devices")
    if out.exists() and not out.is_dir():
        raise InvalidArgumentError(f"OUT {out}: exists and is not a directory")
    if source.exists() and out.resolve() == source.resolve():
        raise InvalidArgumentError(f"OUT {out} is SRC; write the results to another folder")
    # bad values fail here, not once per item
    stopping_callbacks(module_options.get("stop_when_stalled"), module_options.get("max_copy_score"))
    if module_options.get("matmul_precision") is not None:
        MatmulPrecision(module_options["matmul_precision"])
    work_items(find_exemplars(source, exclude=out), variations)  # fail before launching processes
    if all(module_options.get(key) is None for key in ("preset", "backbone", "weights")):
        module_options["preset"] = default_preset_name()  # decided (and reported) once, not per item
    # bad coarse steps, layers or starts (several without a coarse stage) fail here, not once per item
    CoarseSchedule.resolve(resolve_preset(module_options.get("preset"), module_options.get("backbone"),
                                          module_options.get("weights")),
                           levels=module_options.get("coarse_levels"), steps=module_options.get("coarse_steps"),
                           layers=module_options.get("coarse_layers"), starts=module_options.get("coarse_starts"))
    # a recipe every item would fail on (an unknown loss, missing weights) fails here, once; on
    # a fresh machine this also fetches ImageNet weights once, before the processes start
    resolve_recipe(**{key: module_options.get(key) for key in ("preset", "backbone", "backbone_options", "weights",
                                                               "losses")})
    precision = resolve_cpu_precision(precision, accelerator)
    job = _Job(source, out, variations, steps, seed, str(logdir) if logdir else None, log_images_every,
               precision, progress, progress_interval, checkpoint_every, module_options)
    # the precision is checked here, once, on the devices the items will run on
    with lightning_settings(accelerator, devices, precision):
        fabric = Fabric(accelerator=accelerator, devices=devices, num_nodes=num_nodes,
                        strategy=_strategy(strategy, devices, num_nodes), precision=precision)
    if logdir:
        require_folder_accepts_files(logdir, "logdir")  # else every item fails on it
    require_writable_folder(out / MANIFEST_NAME, f"OUT {out}")  # last: a bad option leaves no OUT behind
    require_same_settings(Manifest(out / MANIFEST_NAME), job.settings, out)  # ... but this one reads OUT
    return fabric.launch(_run_rank, job)


def require_same_settings(manifest: Manifest, settings: dict[str, Any], out: Path) -> None:
    """Refuse to call OUT's finished items done when they were made with other settings: a
    re-run with a new ``--size`` would otherwise report "all done" and keep the old images.
    Records written before settings were recorded are taken as they are."""
    for record in manifest.latest().values():
        made_with = record.get("settings")
        if record.get("status") != DONE or made_with is None or made_with in (settings, _by_type_name(settings)):
            continue
        changed = sorted(key for key in {**made_with, **settings} if made_with.get(key) != settings.get(key))
        differences = ", ".join(f"{key} {made_with.get(key)!r} -> {settings.get(key)!r}" for key in changed[:3])
        more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
        raise InvalidArgumentError(
            f"OUT {out}: holds results made with other settings ({differences}{more}); write to another "
            f"folder, or delete {out / MANIFEST_NAME} to make them again")


def _strategy(strategy: Any, devices: int | str, num_nodes: int) -> Any:
    """DDP's launcher and process group, with a barrier that outwaits long items."""
    if strategy is not None:
        return strategy
    if devices == 1 and num_nodes == 1:
        return "auto"
    from lightning.fabric.strategies import DDPStrategy

    return DDPStrategy(timeout=BARRIER_TIMEOUT)


def _run_rank(fabric: Any, job: _Job) -> BatchResult:
    start = time.time()
    rank, world_size = fabric.global_rank, fabric.world_size
    local_processes = getattr(fabric.strategy, "num_processes", 1)
    if fabric.device.type == "cpu" and local_processes > 1 and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_processes))  # no oversubscription
    manifest = Manifest(job.out / MANIFEST_NAME)
    items = work_items(find_exemplars(job.source, exclude=job.out), job.variations)
    pending = pending_items(items, manifest, job.out) if rank == 0 else None
    if world_size > 1:
        pending = fabric.broadcast(pending, src=0)  # every rank splits the same list
    mine = split_items(pending, rank, world_size)
    if rank == 0:
        log.info("batch: %d item(s), %d to do, %d already done; %d process(es)", len(items), len(pending),
                 len(items) - len(pending), world_size)

    processed, interrupted = 0, False
    progress = (BatchProgress(manifest, items, len(items) - len(pending), job.progress_interval)
                if rank == 0 and job.progress else nullcontext())
    with progress:
        for item in mine:
            record = _synthesize_item(item, job, fabric.device, rank)
            manifest.append(record)
            processed += 1
            if record["status"] == FAILED:
                log.warning("%s: failed: %s", item.exemplar, record["error"])
            if record["status"] == INTERRUPTED:
                interrupted = True
                break
        if world_size > 1:
            fabric.barrier()
    done, failures = 0, []
    if rank == 0:
        manifest.compact(item.key for item in items)
        done, failures = batch_state(manifest, items)
    return BatchResult(total=len(items), done=done, failed=len(failures), to_do=len(pending), processed_here=processed,
                       seconds=time.time() - start, manifest=manifest.path, rank=rank, world_size=world_size,
                       interrupted=interrupted, failures=failures)


def _trainer_device(device: torch.device) -> dict[str, Any]:
    """A single-device Trainer on exactly this rank's device (never DDP)."""
    if device.type == "cuda":
        return {"accelerator": "gpu", "devices": [device.index or 0]}
    return {"accelerator": device.type, "devices": 1}


def _synthesize_item(item: WorkItem, job: _Job, device: torch.device, rank: int) -> dict[str, Any]:
    from texsynth.api import synthesize

    seed = job.seed + item.variation
    output = job.out / item.output
    checkpoint = job.out / CHECKPOINT_DIR / (item.output + ".ckpt")
    record: dict[str, Any] = {"exemplar": item.exemplar, "variation": item.variation, "output": item.output,
                              "status": FAILED, "seed": seed, "rank": rank, "steps": 0, "evals": 0,
                              "seconds": 0.0, "losses": None, "error": None, "settings": job.settings}
    start = time.time()
    options = dict(
        steps=job.steps, seed=seed, logdir=job.logdir or False, log_images_every=job.log_images_every,
        precision=job.precision, progress_bar=False, quiet=True, checkpoint=checkpoint,
        checkpoint_every=job.checkpoint_every, **_trainer_device(device), **job.module_options,
    )
    try:
        try:
            result = synthesize(job.source / item.exemplar, resume=checkpoint if checkpoint.is_file() else None,
                                **options)
        except CheckpointError as error:  # unreadable, or made with settings since changed
            if not checkpoint.is_file():
                raise
            log.warning("%s: ignoring its checkpoint (%s); starting again", item.exemplar, error)
            checkpoint.unlink()
            result = synthesize(job.source / item.exemplar, **options)
        record.update(steps=result.steps, evals=result.evals, losses=result.losses, **result.module.outcome())
        if result.module.interrupted:
            record.update(status=INTERRUPTED, error=f"stopped by {result.module.interrupted}; resumes from "
                                                     f"{checkpoint.relative_to(job.out).as_posix()}")
        else:
            result.save(output)
            checkpoint.unlink(missing_ok=True)
            record["status"] = DONE
    except TexsynthError as error:
        record["error"] = str(error)
    except Exception as error:  # an item must not take the batch down; the manifest says what happened
        record["error"] = f"{type(error).__name__}: {error}".splitlines()[0]
    record["seconds"] = round(time.time() - start, 3)
    return record
