"""Training the BatchNorm CNN: config, jitted train/eval steps, the epoch loop, resume.

The jit boundary is drawn once, at the step: ``train_step(state, images, labels) -> (state,
metrics)`` is pure (its dropout and augmentation keys are derived from the state's key and step),
so an interrupted run resumed from a checkpoint reproduces an uninterrupted one exactly.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from mnistxai import data, shortcut
from mnistxai.training import checkpoint
from mnistxai.training.loop import Task, fit, validate_common
from mnistxai.util.jit import jit
from mnistxai.models.cnn import CNN, count_params, init_cnn
from mnistxai.models.spec import CNN_SPEC
from mnistxai.util.errors import InputError

# what --init-from re-initializes and --freeze-backbone trains; where the frozen backbone ends
HEAD_LAYERS = CNN_SPEC.head_layers
BACKBONE_END = CNN_SPEC.convs[-1]


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Every training setting, with its default. The defaults reach >= 99.4% MNIST test accuracy.

    Attributes:
      dataset: ``"mnist"``, ``"fashion_mnist"`` or ``"mnist_shortcut"`` (``mnistxai.shortcut``).
      data_dir: folder of IDX files (None: see ``mnistxai.data.load``).
      epochs: passes over the training set.
      batch_size: images per step; the last incomplete batch of an epoch is dropped.
      lr: peak learning rate of the one-cycle schedule (AdamW).
      warmup: fraction of the steps spent rising to ``lr`` (cosine one-cycle, Smith 2018).
      weight_decay: AdamW decoupled weight decay.
      label_smoothing: cross-entropy label smoothing.
      augment_shift: random translation of each training image by up to this many pixels (0: off).
      seed: the one seed every random choice derives from.
      limit_train: use only the first N training images (quick runs, tests).
      limit_test: evaluate on only the first N test images.
      init_from: a work dir whose CNN initializes every layer but the head (dense, out).
      freeze_backbone: train only the head; conv/BatchNorm layers keep their weights and statistics.
      eval_batch_size: images per evaluation step.
      rrr_weight: right for the right reasons (Ross et al. 2017): add ``rrr_weight`` times the
        batch mean of ``mnistxai.shortcut.rrr_penalty`` (the squared input gradient of
        ``sum_k log p_k`` on the marker's pixels) to the loss; 0 (default): off. Needs
        ``dataset="mnist_shortcut"``, whose markers are the masks (found in each batch's pixels,
        ``mnistxai.shortcut.find_markers``, and shifted with the image by ``augment_shift``).
    """

    dataset: str = "mnist"
    data_dir: str | None = None
    epochs: int = 3
    batch_size: int = 128
    lr: float = 4e-3
    warmup: float = 0.2
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    augment_shift: int = 2
    seed: int = 0
    limit_train: int | None = None
    limit_test: int | None = None
    init_from: str | None = None
    freeze_backbone: bool = False
    eval_batch_size: int = 1000
    rrr_weight: float = 0.0

    def validate(self) -> "TrainConfig":
        """Raise ValueError with one readable line for any impossible value."""
        validate_common(self)
        if not 0 < self.warmup < 1:
            raise InputError(f"warmup must be in (0, 1), got {self.warmup}")
        if self.weight_decay < 0 or not 0 <= self.label_smoothing < 1:
            raise InputError("weight_decay must be >= 0 and label_smoothing in [0, 1)")
        if not 0 <= self.augment_shift <= 8:
            raise InputError(f"augment_shift must be in 0..8 pixels, got {self.augment_shift}")
        if self.rrr_weight < 0:
            raise InputError(f"rrr_weight must be >= 0, got {self.rrr_weight}")
        if self.rrr_weight and self.dataset != "mnist_shortcut":
            raise InputError(
                f"rrr_weight needs dataset mnist_shortcut (its markers are the masks), "
                f"not {self.dataset}"
            )
        if self.rrr_weight and self.freeze_backbone:
            raise InputError(
                "rrr_weight with freeze_backbone: a frozen backbone's input gradients cannot move"
            )
        if self.freeze_backbone and not self.init_from:
            raise InputError(
                "freeze_backbone needs init_from: a frozen random backbone explains nothing"
            )
        return self


@struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    key: jax.Array  # raw uint32 key data, so that checkpoints hold plain arrays


def _is_head(path) -> bool:
    return path[0].key in HEAD_LAYERS


def make_optimizer(config: TrainConfig, steps_per_epoch: int) -> optax.GradientTransformation:
    schedule = optax.cosine_onecycle_schedule(
        transition_steps=config.epochs * steps_per_epoch,
        peak_value=config.lr,
        pct_start=config.warmup,
        div_factor=25.0,
        final_div_factor=1e3,
    )
    tx = optax.adamw(schedule, weight_decay=config.weight_decay)
    if config.freeze_backbone:
        labels = lambda params: jax.tree_util.tree_map_with_path(  # noqa: E731
            lambda path, _: "train" if _is_head(path) else "frozen", params
        )
        tx = optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)
    return tx


def random_shift(key: jax.Array, x: jax.Array, max_shift: int) -> jax.Array:
    """Translate each image of (B, H, W, C) by its own random (dy, dx) in [-max_shift, max_shift],
    zero fill."""
    b, h, w, _ = x.shape
    padded = jnp.pad(x, ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0)))
    offsets = jax.random.randint(key, (b, 2), 0, 2 * max_shift + 1)
    crop = lambda img, o: jax.lax.dynamic_slice(img, (o[0], o[1], 0), (h, w, img.shape[-1]))  # noqa: E731
    return jax.vmap(crop)(padded, offsets)


def _loss(logits, labels, num_classes: int, smoothing: float):
    targets = (
        optax.smooth_labels(jax.nn.one_hot(labels, num_classes), smoothing)
        if smoothing
        else jax.nn.one_hot(labels, num_classes)
    )
    return optax.softmax_cross_entropy(logits, targets).mean()


def make_train_step(model: CNN, tx: optax.GradientTransformation, config: TrainConfig) -> Callable:
    """The jitted, state-donating step: (state, uint8 images (B,28,28), int32 labels) -> (state,
    metrics).

    ``metrics`` are sums over the batch: ``loss`` (cross-entropy) and ``accuracy`` (correct count),
    and with ``config.rrr_weight`` also ``rrr`` (``mnistxai.shortcut.rrr_penalty``); the step
    minimizes mean cross-entropy + ``rrr_weight`` * mean ``rrr``, double backprop in this one step.
    """

    def forward(params, batch_stats, x, dropout_key):
        variables = {"params": params, "batch_stats": batch_stats}
        rngs = {"dropout": dropout_key}
        if config.freeze_backbone:  # BatchNorm statistics stay frozen with the convolutions
            a = jax.lax.stop_gradient(
                model.apply(variables, x, BACKBONE_END, False, method=CNN.forward_to)
            )
            return model.apply(
                variables, a, BACKBONE_END, True, method=CNN.forward_from, rngs=rngs
            ), batch_stats
        logits, updates = model.apply(variables, x, train=True, mutable=["batch_stats"], rngs=rngs)
        return logits, updates["batch_stats"]

    def train_step(state: TrainState, images, labels):
        key = jax.random.fold_in(jax.random.wrap_key_data(state.key), state.step)
        augment_key, dropout_key = jax.random.split(key)
        x = data.to_model_input(images)
        # the markers are found before the shift; the same key shifts the masks by the same offsets
        mask = shortcut.find_markers(images)[..., None] if config.rrr_weight else None
        if config.augment_shift:
            x = random_shift(augment_key, x, config.augment_shift)
            if mask is not None:
                mask = random_shift(augment_key, mask, config.augment_shift)

        def loss_fn(params):
            run = lambda x: forward(params, state.batch_stats, x, dropout_key)  # noqa: E731
            if mask is None:
                logits, batch_stats = run(x)
                penalty = jnp.zeros(x.shape[0], x.dtype)
            else:
                (logits, batch_stats), penalty = shortcut.rrr_penalty(
                    run, x, mask[..., 0], has_aux=True
                )
            cross_entropy = _loss(logits, labels, model.num_classes, config.label_smoothing)
            total = cross_entropy
            if mask is not None:
                total = total + config.rrr_weight * penalty.mean()
            return total, (cross_entropy, penalty, logits, batch_stats)

        (_, (loss, penalty, logits, batch_stats)), grads = jax.value_and_grad(
            loss_fn, has_aux=True
        )(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        state = state.replace(
            step=state.step + 1,
            params=optax.apply_updates(state.params, updates),
            batch_stats=batch_stats,
            opt_state=opt_state,
        )
        correct = jnp.sum(jnp.argmax(logits, -1) == labels)
        metrics = {"loss": loss * labels.shape[0], "accuracy": correct}  # sums over the batch
        if config.rrr_weight:
            metrics["rrr"] = penalty.sum()
        return state, metrics

    return jit(train_step, donate_argnums=0)


def make_eval_step(model: CNN) -> Callable:
    """Jitted (variables, uint8 images, labels) -> summed loss and correct count, inference mode."""

    @jit
    def eval_step(variables, images, labels):
        logits = model.apply(variables, data.to_model_input(images))
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).sum()
        return {"loss": loss, "correct": jnp.sum(jnp.argmax(logits, -1) == labels)}

    return eval_step


def evaluate(eval_step, variables, images: np.ndarray, labels: np.ndarray, batch_size: int) -> dict:
    """Mean loss and accuracy over all of ``images`` (the last batch may be smaller)."""
    totals = {"loss": 0.0, "correct": 0}
    for start in range(0, len(images), batch_size):
        m = eval_step(
            variables, images[start : start + batch_size], labels[start : start + batch_size]
        )
        totals = {k: totals[k] + m[k] for k in totals}
    return {
        "loss": float(totals["loss"]) / len(images),
        "accuracy": float(totals["correct"]) / len(images),
    }


def create_state(config: TrainConfig, model: CNN, tx: optax.GradientTransformation) -> TrainState:
    init_key, train_key = jax.random.split(jax.random.key(config.seed), 2)
    variables = init_cnn(model, init_key)
    if config.init_from:
        donor = checkpoint.load_classifier(config.init_from).variables
        keep_fresh = lambda path, fresh, old: fresh if _is_head(path) else old  # noqa: E731
        variables = {
            "params": jax.tree_util.tree_map_with_path(
                keep_fresh, variables["params"], donor["params"]
            ),
            "batch_stats": donor["batch_stats"],
        }
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=variables["params"],
        batch_stats=variables["batch_stats"],
        opt_state=tx.init(variables["params"]),
        key=jax.random.key_data(train_key),
    )


def build_cnn(config: TrainConfig, steps_per_epoch: int, test: tuple) -> "Task":
    """The CNN's part of the training loop: state, steps, test evaluation (best = highest
    accuracy)."""
    test_images, test_labels = test
    model = CNN()
    tx = make_optimizer(config, steps_per_epoch)
    state = create_state(config, model, tx)
    eval_step = make_eval_step(model)

    def evaluate_state(s: TrainState) -> dict:
        test = evaluate(
            eval_step,
            {"params": s.params, "batch_stats": s.batch_stats},
            test_images,
            test_labels,
            config.eval_batch_size,
        )
        return {"test_loss": test["loss"], "test_accuracy": test["accuracy"]}

    return Task(
        state=state,
        train_step=make_train_step(model, tx, config),
        evaluate=evaluate_state,
        score=lambda m: m["test_accuracy"],
        model_kwargs={},
        summary=f"CNN with {count_params(state.params):,} parameters",
        describe=lambda m: (
            f"test accuracy {m['test_accuracy']:.4f}, test loss {m['test_loss']:.4f}"
        ),
        bar_keys=("loss", "accuracy") + (("rrr",) if config.rrr_weight else ()),
    )


def train_and_evaluate(
    config: TrainConfig,
    workdir: str | Path,
    resume: bool = False,
    max_steps: int | None = None,
    progress: bool = True,
) -> dict:
    """Train, evaluate every epoch, checkpoint, and write ``history.json`` and
    ``training_curves.png``.

    Args:
      config: the training settings (validated here).
      workdir: output folder; ``checkpoints/latest`` and ``checkpoints/best`` live inside.
      resume: continue from ``checkpoints/latest``; its saved config is used.
      max_steps: stop after this global step, saving a checkpoint (what Ctrl-C does), then raise
        ``TrainingInterrupted``. For tests and time-boxed runs.
      progress: show a progress bar per epoch.

    Returns:
      The history: a dict with ``epochs``, a list of per-epoch metrics.
    """
    return fit("cnn", config, build_cnn, workdir, resume, max_steps, progress)
