"""All orbax-checkpoint code of the project: atomic save, restore, ``load_classifier``,
``load_vae``, ``load_generator``.

A training work dir holds two checkpoint folders, each with one step kept::

    WORKDIR/checkpoints/latest/<step>/{state,config,metrics}   # written every epoch (and on Ctrl-C)
    WORKDIR/checkpoints/best/<step>/{state,config,metrics}     # the best test accuracy so far

``state`` is a pytree of arrays (params, batch_stats, optimizer state, step, RNG key data),
``config`` the training configuration and ``metrics`` that epoch's metrics, both JSON. Orbax
writes each step to a temporary folder and renames it when complete, so a crash mid-save leaves
the previous checkpoint intact. Nothing is pickled.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from mnistxai import parallel
from mnistxai.models.classifier import Classifier
from mnistxai.models.gan import Generator, GeneratorModel
from mnistxai.models.latent_prior import GaussianMixture
from mnistxai.models.cnn import CNN
from mnistxai.models.vae import VAE, VAEModel
from mnistxai.util.errors import InputError

logging.getLogger("absl").setLevel(logging.WARNING)  # orbax logs every save at INFO


class CheckpointError(InputError):
    """A missing, incomplete or unreadable checkpoint (the message names it)."""


def _manager(directory: Path, create: bool = True) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=1, create=create, enable_async_checkpointing=False
    )
    handlers = {  # each item's handler named, so that restore can read the state's metadata
        "state": ocp.StandardCheckpointHandler(),
        "config": ocp.JsonCheckpointHandler(),
        "metrics": ocp.JsonCheckpointHandler(),
    }
    return ocp.CheckpointManager(directory.absolute(), options=options, item_handlers=handlers)


def save(directory: str | Path, step: int, state: Any, config: dict, metrics: dict) -> None:
    """Atomically write ``state`` (a pytree of arrays), ``config`` and ``metrics`` as ``step``."""
    saved = latest_step(directory) == step
    # the processes of a run save together: each looks before any of them creates the folder
    parallel.barrier(f"mnistxai checkpoint {Path(directory).name} {step}")
    if saved:
        # training is deterministic, so a checkpoint of this step already holds this state (a run
        # resumed after being stopped between the epoch's two saves writes the same step again)
        return
    with _manager(Path(directory)) as manager:
        manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                config=ocp.args.JsonSave(config),
                metrics=ocp.args.JsonSave(metrics),
            ),
            force=True,
        )
        manager.wait_until_finished()


def latest_step(directory: str | Path) -> int | None:
    directory = Path(directory)
    if not directory.is_dir():
        return None
    with _manager(directory, create=False) as manager:
        return manager.latest_step()


def restore(directory: str | Path, template: Any = None) -> tuple[Any, dict, dict]:
    """``(state, config, metrics)`` of the newest step in ``directory``.

    With ``template`` (a pytree of arrays of the right structure, shapes and dtypes) the state is
    restored into that structure and its shardings; without it, as nested dicts of arrays on this
    process's first device, whatever devices and processes saved it (orbax would otherwise ask
    for the saving run's topology).
    """
    directory = Path(directory)
    step = latest_step(directory)
    if step is None:
        raise CheckpointError(f"no checkpoint in {directory}")
    try:
        with _manager(directory, create=False) as manager:
            if template is None:
                local = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
                saved = manager.item_metadata(step)["state"].tree
                template = jax.tree.map(
                    lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=local), saved
                )
            state_args = ocp.args.StandardRestore(template)
            restored = manager.restore(
                step,
                args=ocp.args.Composite(
                    state=state_args, config=ocp.args.JsonRestore(), metrics=ocp.args.JsonRestore()
                ),
            )
    except Exception as e:  # orbax raises many types for damaged files; report one readable line
        raise CheckpointError(
            f"checkpoint {directory}/{step} is unreadable or incomplete: "
            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        ) from e
    for item in ("config", "metrics"):
        if not isinstance(restored[item], dict):
            raise CheckpointError(
                f"{directory}/{step}/{item} is not a JSON object (damaged checkpoint?)"
            )
    bad = [
        jax.tree_util.keystr(path)
        for path, leaf in jax.tree_util.tree_leaves_with_path(restored["state"])
        if np.issubdtype(np.asarray(leaf).dtype, np.floating) and not np.isfinite(leaf).all()
    ]
    if bad:
        raise CheckpointError(
            f"checkpoint {directory}/{step} holds NaN or inf in {len(bad)} array(s), e.g. "
            f"{bad[0]} (damaged file, or a run that diverged)"
        )
    return restored["state"], restored["config"], restored["metrics"]


def build_module(cls, config: dict, where: Path):
    """``cls(**config["model_kwargs"])``, or a CheckpointError naming the checkpoint."""
    kwargs = config.get("model_kwargs", {})
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise CheckpointError(
            f"{where}/config: model_kwargs {kwargs!r} do not build a {cls.__name__}: {e}"
        ) from None


def fingerprint(tree) -> str:
    """A short hash (16 hex digits) of a pytree's arrays: what identifies a model's weights."""
    digest = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        a = np.asarray(leaf)
        digest.update(f"{jax.tree_util.keystr(path)}{a.dtype}{a.shape}".encode())
        digest.update(np.ascontiguousarray(a).tobytes())
    return digest.hexdigest()[:16]


def resolve_checkpoint_dir(path: str | Path, which: str = "best") -> Path:
    """Accept a work dir (uses ``checkpoints/<which>``), a ``checkpoints`` folder, or a checkpoint
    folder."""
    path = Path(path)
    for candidate in (path / "checkpoints" / which, path / which, path):
        if latest_step(candidate) is not None:
            return candidate
    if not path.exists():
        raise CheckpointError(f"{path} does not exist")
    raise CheckpointError(
        f"no checkpoint found in {path} (expected {path}/checkpoints/{which}/<step>)"
    )


def load_classifier(workdir: str | Path, which: str = "best") -> Classifier:
    """The trained CNN of a work dir as a ``Classifier`` (pure ``logits``/``features``/``head``).

    Args:
      workdir: what ``train_mnist.py --workdir`` wrote (or a checkpoint folder inside it).
      which: ``"best"`` (highest test accuracy, default) or ``"latest"``.
    The classifier's ``dataset`` is the one it was trained on.
    """
    where = resolve_checkpoint_dir(workdir, which)
    state, config, _ = restore(where)
    if config.get("model", "cnn") != "cnn":
        kind = config.get("model")
        raise CheckpointError(
            f"{workdir} holds a {kind!r} model, not the CNN classifier (train one with "
            f"python train_mnist.py --workdir DIR, or pass that run's folder)"
        )
    model = build_module(CNN, config, where)
    variables = {"params": state["params"], "batch_stats": state["batch_stats"]}
    dataset = config.get("train", {}).get("dataset", "mnist")
    # Through NumPy: fresh, uncommitted arrays like a newly initialized model's, so that jitted XAI
    # functions compiled for one classifier are reused for this one instead of recompiling.
    return Classifier(
        jax.tree_util.tree_map(lambda a: jax.numpy.asarray(np.asarray(a)), variables),
        model,
        dataset,
    )


def _load_model(workdir: str | Path, which: str, kind: str) -> tuple[dict, dict]:
    """(state as nested dicts of fresh arrays, saved config) of a ``kind`` run, or
    CheckpointError."""
    where = resolve_checkpoint_dir(workdir, which)
    state, config, _ = restore(where)
    config = {**config, "_where": where}
    if config.get("model", "cnn") != kind:
        raise CheckpointError(
            f"{workdir} holds a {config.get('model', 'cnn')!r} model, not a {kind!r}"
        )
    return jax.tree_util.tree_map(lambda a: jax.numpy.asarray(np.asarray(a)), state), config


def load_vae(workdir: str | Path, which: str = "best") -> VAEModel:
    """The trained VAE of a ``train_mnist.py --model vae`` work dir as a ``VAEModel``.

    Args:
      workdir: the run's work dir (or a checkpoint folder inside it).
      which: ``"best"`` (lowest test -ELBO, default) or ``"latest"``.
    """
    state, config = _load_model(workdir, which, "vae")
    return VAEModel(state["params"], build_module(VAE, config, config["_where"]))


def load_generator(workdir: str | Path, which: str = "best") -> GeneratorModel:
    """The trained generator of a ``train_mnist.py --model generator`` work dir as a
    ``GeneratorModel``.

    Args:
      workdir: the run's work dir (or a checkpoint folder inside it).
      which: ``"best"`` (lowest Frechet distance when scored during training, else latest) or
      ``"latest"``.

    The generator's weights are the moving average ``g_ema`` that training sampled and scored.
    """
    state, config = _load_model(workdir, which, "generator")
    prior = state.get("prior")  # absent from runs made before priors were saved: N(0, I)
    return GeneratorModel(
        state["g_ema"],
        build_module(Generator, config, config["_where"]),
        None if prior is None else GaussianMixture(**prior),
    )
