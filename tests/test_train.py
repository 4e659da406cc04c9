"""Short real-MNIST runs: sane accuracy, exact resume, checkpoint round trip, transfer learning."""

import json

import jax
import numpy as np
import pytest

from mnistxai.training import checkpoint
from mnistxai.models.classifier import Classifier
from mnistxai.models.cnn import CNN, init_cnn
from mnistxai.training.cnn import TrainConfig, train_and_evaluate

SMALL = dict(limit_train=1024, limit_test=500, epochs=2, batch_size=128)


@pytest.fixture
def short_run(trained_run):
    """5,000 real training images, one epoch (trained once per session in conftest)."""
    return trained_run


def test_short_run_learns_and_writes_outputs(short_run):
    workdir, history = short_run
    assert history["epochs"][-1]["test_accuracy"] > 0.8
    saved = json.loads((workdir / "history.json").read_text())
    assert saved["epochs"][0]["test_accuracy"] == history["epochs"][0]["test_accuracy"]
    assert (workdir / "training_curves.png").stat().st_size > 10_000
    assert checkpoint.latest_step(workdir / "checkpoints" / "best") == 39


def test_loaded_classifier_reproduces_the_run(short_run, mnist_dir):
    from mnistxai import data

    workdir, history = short_run
    classifier = checkpoint.load_classifier(workdir)
    images, labels = data.load("mnist", "test", data_dir=mnist_dir)
    logits = np.asarray(classifier.logits(data.to_model_input(images[:2000])))
    accuracy = float(np.mean(np.argmax(logits, -1) == labels[:2000]))
    assert accuracy == pytest.approx(history["epochs"][-1]["test_accuracy"], abs=1e-9)


def test_save_restore_gives_identical_logits(tmp_path):
    original = Classifier(init_cnn(CNN(), jax.random.key(7)))
    state = {**original.variables, "step": np.int32(3)}
    checkpoint.save(
        tmp_path / "checkpoints" / "best", 3, state, {"model": "cnn"}, {"test_accuracy": 0.1}
    )
    restored = checkpoint.load_classifier(tmp_path)
    x = jax.random.uniform(jax.random.key(8), (4, 28, 28, 1))
    np.testing.assert_array_equal(restored.logits(x), original.logits(x))


def test_missing_and_damaged_checkpoints_are_clear_errors(tmp_path):
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoint found"):
        checkpoint.load_classifier(tmp_path)
    state = init_cnn(CNN(), jax.random.key(0))
    checkpoint.save(tmp_path / "checkpoints" / "best", 1, state, {"model": "cnn"}, {})
    for f in (tmp_path / "checkpoints" / "best" / "1" / "state").rglob("*"):
        if f.is_file() and f.stat().st_size > 1000:
            f.write_bytes(b"garbage")
    with pytest.raises(checkpoint.CheckpointError, match="unreadable or incomplete"):
        checkpoint.load_classifier(tmp_path)


def test_frozen_backbone_trains_only_the_head(short_run, tmp_path, mnist_dir):
    donor_dir, _ = short_run
    config = TrainConfig(
        data_dir=str(mnist_dir),
        init_from=str(donor_dir),
        freeze_backbone=True,
        limit_train=512,
        limit_test=500,
        epochs=1,
    )
    history = train_and_evaluate(config, tmp_path, progress=False)
    donor = checkpoint.load_classifier(donor_dir).variables
    tuned = checkpoint.load_classifier(tmp_path).variables
    for name in ("conv1", "conv6", "bn3"):
        for k in donor["params"][name]:
            np.testing.assert_array_equal(donor["params"][name][k], tuned["params"][name][k])
    np.testing.assert_array_equal(
        donor["batch_stats"]["bn6"]["mean"], tuned["batch_stats"]["bn6"]["mean"]
    )
    assert not np.array_equal(donor["params"]["out"]["kernel"], tuned["params"]["out"]["kernel"])
    assert (
        history["epochs"][-1]["test_accuracy"] > 0.6
    )  # a good backbone: the head alone learns fast


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(epochs=-1), "epochs must be >= 1"),
        (dict(dataset="cifar"), "unknown dataset"),
        (dict(lr=0.0), "lr must be"),
        (dict(freeze_backbone=True), "needs init_from"),
    ],
)
def test_bad_config_values(bad, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**bad).validate()


def test_loaded_classifier_reuses_compiled_programs(short_run):
    """A restored classifier is the same pytree type as a fresh one: jitted XAI code is not
    recompiled."""
    logits = jax.jit(lambda clf, x: clf.logits(x))
    x = np.zeros((2, 28, 28, 1), np.float32)
    logits(Classifier(init_cnn(CNN(), jax.random.key(1))), x)
    logits(checkpoint.load_classifier(short_run[0]), x)
    assert logits._cache_size() == 1
