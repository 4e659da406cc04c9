"""The epoch loop every model trains with: progress bars, per-epoch evaluation, atomic orbax
checkpoints ``latest`` and ``best``, and exact resume.

A model plugs in as a ``Task`` (its state, jitted step, evaluation and score). The epoch order is a
pure function of (seed, epoch) and the step's keys of (state key, step), so a run interrupted and
resumed ends exactly where an uninterrupted one does.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np
from tqdm.auto import tqdm

from mnistxai import data, parallel
from mnistxai.training import checkpoint
from mnistxai.util import streams
from mnistxai.util.atomic import write_json_atomic
from mnistxai.util.errors import InputError
from mnistxai.util.files import exclusive, writable_dir
from mnistxai.util.interrupts import DeferredInterrupt


def validate_common(config) -> None:
    """The checks every training config shares (finite numbers, dataset, epochs, batch sizes,
    limits, lr).

    ``config`` is any object with the attributes ``dataset, epochs, batch_size, eval_batch_size,
    limit_train, limit_test, lr`` (``TrainConfig`` and the generative models' configs).
    """
    for field in dataclasses.fields(config):  # a NaN or inf setting trains a NaN model
        value = getattr(config, field.name)
        if isinstance(value, float) and not np.isfinite(value):
            raise InputError(f"{field.name} must be a finite number, got {value}")
    if config.dataset not in data.DATASETS:
        raise InputError(
            f"unknown dataset {config.dataset!r}; choose one of {', '.join(data.DATASETS)}"
        )
    positive = {
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "eval_batch_size": config.eval_batch_size,
    }
    for name, value in positive.items():
        if value < 1:
            raise InputError(f"{name} must be >= 1, got {value}")
    for name in ("limit_train", "limit_test"):
        value = getattr(config, name)
        if value is not None and value < 1:
            raise InputError(f"{name} must be >= 1, got {value}")
    if not (config.lr > 0 and np.isfinite(config.lr)):
        raise InputError(f"lr must be a positive number, got {config.lr}")


def epoch_permutation(config, epoch: int, n: int) -> np.ndarray:
    """The order of training images in ``epoch``: a pure function of (seed, epoch), so resume
    repeats it."""
    key = jax.random.fold_in(streams.key(config.seed, "epoch_order"), epoch)
    return np.asarray(jax.random.permutation(key, n))


class TrainingInterrupted(Exception):
    """Raised after a checkpoint was saved because training stopped early (Ctrl-C or
    ``max_steps``)."""


def load_split(config, split: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = data.load(config.dataset, split, config.data_dir)
    limit = config.limit_train if split == "train" else config.limit_test
    return (images[:limit], labels[:limit]) if limit else (images, labels)


@dataclasses.dataclass
class Task:
    """One kind of model, as the shared epoch loop ``fit`` needs it.

    Attributes:
      state: the initial train state (a pytree of arrays with ``step``; also the restore template).
      train_step: jitted ``(state, uint8 images (B,28,28), int32 labels (B,)) -> (state, metrics)``,
      the
        metrics summed over the batch (the epoch record holds ``train_<name>`` = sum / images).
      evaluate: ``state -> dict`` of test metrics for the epoch record.
      score: ``epoch record -> float``; the ``best`` checkpoint keeps the highest.
      model_kwargs: what ``mnistxai.training.checkpoint`` needs to rebuild the module.
      summary: a line about the model (e.g. its parameter count), printed at the start.
      describe: ``epoch record -> str``, the line printed after each epoch.
      bar_keys: the running train metrics shown on the progress bar.
      plot: ``epochs -> Figure`` for ``training_curves.png`` (None: ``viz.plot_training_curves``).
      write_figures: ``(workdir, state) -> None``, picture grids after each epoch (None: none).
    """

    state: Any
    train_step: Callable
    evaluate: Callable[[Any], dict]
    score: Callable[[dict], float]
    model_kwargs: dict
    summary: str
    describe: Callable[[dict], str]
    bar_keys: tuple = ()
    plot: Callable | None = None
    write_figures: Callable[[Path, Any], None] | None = None


def fit(
    model_name: str,
    config,
    build: Callable[[Any, int, tuple], Task],
    workdir: str | Path,
    resume: bool = False,
    max_steps: int | None = None,
    progress: bool = True,
) -> dict:
    """The epoch loop every model trains with: progress bar, per-epoch evaluation, checkpoints,
    resume.

    Interrupts (Ctrl-C, SIGTERM, or ``max_steps``) are deferred to safe points
    (``mnistxai.util.interrupts``): between steps, the state and the epoch's running sums are
    saved to ``latest`` and ``TrainingInterrupted`` is raised; an epoch's evaluation, its record
    and its two saves (``best`` first, then ``latest``, so ``latest`` never names a best that is
    not saved) always complete. A resumed run then reproduces the uninterrupted one's history
    and best checkpoint exactly (timings aside).

    Args:
      model_name: ``"cnn"``, ``"vae"`` or ``"generator"``, saved in the checkpoint's config.
      config: ``TrainConfig`` or a generative config (validated here); on resume the saved one wins.
      build: ``(config, steps_per_epoch, (test_images, test_labels)) -> Task``.
      workdir, resume, max_steps, progress: as in ``train_and_evaluate``.

    Returns:
      The history: ``{"config": ..., "epochs": [per-epoch records]}``.
    """
    if not resume:
        config.validate()  # before touching the folder
    workdir = writable_dir(workdir, "--workdir")
    index = jax.process_index()  # one trainer per folder (each process of a run its own lock)
    with exclusive(workdir, "--workdir", ".lock" if index == 0 else f".lock.{index}"):
        with DeferredInterrupt("saving a checkpoint at the next step") as interrupt:
            return _fit(model_name, config, build, workdir, resume, max_steps, progress, interrupt)


def _fit(model_name, config, build, workdir, resume, max_steps, progress, interrupt) -> dict:
    latest_dir, best_dir = workdir / "checkpoints" / "latest", workdir / "checkpoints" / "best"
    history = {"config": dataclasses.asdict(config), "epochs": []}
    partial = None
    if resume:
        if checkpoint.latest_step(latest_dir) is None:
            raise checkpoint.CheckpointError(f"--resume: no checkpoint in {latest_dir}")
        _, saved, meta = checkpoint.restore(latest_dir)
        if saved.get("model", "cnn") != model_name:
            raise checkpoint.CheckpointError(
                f"{workdir} holds a {saved.get('model')!r} run, not {model_name!r}"
            )
        # the saved settings win, but the data may have moved: a data_dir given here is used
        train = {**saved["train"], **({"data_dir": config.data_dir} if config.data_dir else {})}
        config, history = type(config)(**train), meta["history"]
        partial = meta.get("partial")
    elif any(checkpoint.latest_step(d) is not None for d in (latest_dir, best_dir)):
        raise InputError(
            f"{workdir} already holds a training run; pass --resume to continue it "
            "or choose another --workdir"
        )
    config.validate()

    train_images, train_labels = load_split(config, "train")
    test = load_split(config, "test")
    batch_size = min(config.batch_size, len(train_images))
    steps_per_epoch = len(train_images) // batch_size
    task = build(config, steps_per_epoch, test)
    # data parallel: each step's batch split over the local devices (several processes: over
    # all their devices, each process placing its rows), the state replicated; the jitted step
    # is the same program (GSPMD), so its mean loss, gradients and BatchNorm statistics are
    # those of the whole batch, as on one device. Every process evaluates the test set on its
    # own copy of the state; process 0 writes the history and figures; all save the checkpoints
    # together (orbax: each array written once, by the processes that hold it).
    mesh = parallel.training_mesh(batch_size)
    state = task.state if mesh is None else parallel.replicate(task.state, mesh)
    if resume:  # into the replicated template: restored with its sharding
        state = checkpoint.restore(latest_dir, template=state)[0]
    writer = jax.process_index() == 0
    saved_config = {
        "model": model_name,
        "model_kwargs": task.model_kwargs,
        "train": dataclasses.asdict(config),
    }
    best_score = max((task.score(e) for e in history["epochs"]), default=-np.inf)

    def save(directory, metrics):
        checkpoint.save(
            directory, int(state.step), state, saved_config, {**metrics, "history": history}
        )

    if progress:
        print(
            f"JAX {jax.__version__} backend={jax.default_backend()} devices={jax.devices()}; "
            f"each batch split over {1 if mesh is None else mesh.devices.size} device(s) of "
            f"{jax.process_count()} process(es)"
        )
        print(
            f"{task.summary}; {len(train_images):,} train / {len(test[0]):,} test images of "
            f"{config.dataset}; {steps_per_epoch} steps/epoch"
        )
    step = int(state.step)
    for epoch in range(step // steps_per_epoch, config.epochs):
        order = epoch_permutation(config, epoch, len(train_images))
        # the running sums of an epoch interrupted mid-way continue where they stopped
        totals, seen, before = _restore_partial(partial)
        partial, start = None, time.perf_counter()
        bar = tqdm(
            range(step - epoch * steps_per_epoch, steps_per_epoch),
            disable=not progress,
            desc=f"epoch {epoch + 1}/{config.epochs}",
            leave=True,
            dynamic_ncols=True,
        )
        for i in bar:
            if stop_requested(interrupt, i) or (max_steps is not None and step >= max_steps):
                bar.close()
                if checkpoint.latest_step(latest_dir) != step:
                    elapsed = before + time.perf_counter() - start
                    save(
                        latest_dir,
                        {"interrupted_at_step": step, "partial": _partial(totals, seen, elapsed)},
                    )
                raise TrainingInterrupted(f"stopped at step {step}; continue with --resume")
            idx = order[i * batch_size : (i + 1) * batch_size]
            batch = train_images[idx], train_labels[idx]
            if mesh is not None:
                batch = parallel.split_like(batch, mesh)
            state, m = train_step_and_sum(task.train_step, state, *batch, totals)
            seen += len(idx)
            step += 1
            if progress and (i % 20 == 0 or i == steps_per_epoch - 1):
                bar.set_postfix(
                    {k: f"{float(totals[k]) / seen:.4f}" for k in task.bar_keys},
                    img_s=f"{seen / (time.perf_counter() - start):.0f}",
                )
        train_seconds = before + time.perf_counter() - start
        metrics = {
            "epoch": epoch + 1,
            "step": step,
            **{f"train_{k}": float(v) / max(seen, 1) for k, v in totals.items()},
            **task.evaluate(parallel.local_copy(state)),
        }
        metrics["epoch_seconds"] = before + time.perf_counter() - start
        metrics["images_per_second"] = seen / max(train_seconds, 1e-9)
        metrics["wall_seconds"] = metrics["epoch_seconds"] + (
            history["epochs"][-1]["wall_seconds"] if history["epochs"] else 0.0
        )
        history["epochs"].append(metrics)
        if progress:
            print(
                f"epoch {epoch + 1}: {task.describe(metrics)}, "
                f"{metrics['images_per_second']:.0f} img/s"
            )
        if task.score(metrics) > best_score:
            best_score = task.score(metrics)
            save(best_dir, metrics)
        save(latest_dir, metrics)
        if writer:
            write_outputs(workdir, history, task.plot)
            if task.write_figures:
                task.write_figures(workdir, parallel.local_copy(state))
    # interrupted during the last epoch's evaluation or saves: all of it is saved
    if stop_requested(interrupt, 0):
        raise TrainingInterrupted(f"stopped at step {step}, the end of training: nothing is left")
    return history


# in a run of several processes, how often (in steps) they agree whether one was interrupted
AGREE_EVERY = 10


def stop_requested(interrupt: DeferredInterrupt, i: int) -> bool:
    """Whether to stop before step ``i`` of the epoch. Processes of one run stop together, so
    that all save the same step: every ``AGREE_EVERY`` steps they share whether any of them
    was interrupted (a host-side all-gather, not each step: it waits for the devices)."""
    if jax.process_count() == 1:
        return interrupt.requested
    if i % AGREE_EVERY:
        return False
    from jax.experimental import multihost_utils

    flags = multihost_utils.process_allgather(np.asarray(interrupt.requested, np.int32))
    return bool(np.any(flags))


def _partial(totals: dict, seen: int, seconds: float) -> dict:
    """An epoch's running sums as exact JSON (each sum as its dtype's value)."""
    sums = {}
    for k, v in totals.items():
        a = np.asarray(v)
        sums[k] = {"dtype": str(a.dtype), "value": a.item()}
    return {"totals": sums, "seen": seen, "seconds": seconds}


def _restore_partial(partial) -> tuple[dict, int, float]:
    if not partial:
        return {}, 0, 0.0
    totals = {k: jax.numpy.asarray(v["value"], v["dtype"]) for k, v in partial["totals"].items()}
    return totals, int(partial["seen"]), float(partial["seconds"])


def train_step_and_sum(train_step, state, images, labels, totals: dict):
    """Run one step and add its summed metrics into ``totals`` (device arrays; no sync per step)."""
    state, m = train_step(state, images, labels)
    for k, v in m.items():
        totals[k] = totals.get(k, 0.0) + v
    return state, m


def write_outputs(workdir: Path, history: dict, plot: Callable | None = None) -> None:
    """``history.json`` and ``training_curves.png`` in ``workdir``.

    ``plot(epochs) -> Figure`` draws the curves (default: the CNN's ``plot_training_curves``).
    """
    from mnistxai.report.viz import plot_training_curves  # matplotlib only when writing

    write_json_atomic(workdir / "history.json", history)
    fig = (plot or plot_training_curves)(history["epochs"])
    tmp = workdir / "training_curves.tmp.png"
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, workdir / "training_curves.png")
    import matplotlib.pyplot as plt

    plt.close(fig)
