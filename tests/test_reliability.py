"""Nothing lost, nothing silently wrong: interrupts at any point of training resume exactly,
explanation runs have one writer and refuse to mix models or data, bad files and flags are one
clear error found before any work."""

import gzip
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from mnistxai import data
from mnistxai.models.classifier import Classifier
from mnistxai.models.cnn import CNN, init_cnn
from mnistxai.pipelines.explain import ExplainConfig, explain_run
from mnistxai.training import checkpoint, loop
from mnistxai.training.cnn import TrainConfig, train_and_evaluate
from mnistxai.util.errors import InputError
from mnistxai.util.files import exclusive
from mnistxai.util.interrupts import DeferredInterrupt

REPO = Path(__file__).resolve().parents[1]
TIMING = ("epoch_seconds", "images_per_second", "wall_seconds")


def test_the_first_interrupt_is_deferred_and_the_second_is_not():
    with DeferredInterrupt() as interrupt:
        os.kill(os.getpid(), signal.SIGINT)
        assert interrupt.requested  # delivered: only a flag was set
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


class Trigger(DeferredInterrupt):
    """Stands in for Ctrl-C: ``arm(where, k)`` requests an interrupt during the k-th call of
    ``where`` (a train step, the evaluation, a save to best or to latest, the start-up)."""

    where, k, calls = None, 0, 0

    @classmethod
    def fire(cls, where):
        if where == cls.where:
            cls.calls += 1
            if cls.calls == cls.k:
                cls.current.requested = True

    def __enter__(self):
        Trigger.current = self
        return super().__enter__()


@pytest.fixture
def triggered(monkeypatch):
    monkeypatch.setattr(loop, "DeferredInterrupt", Trigger)
    save = checkpoint.save

    def hooked_save(directory, *args, **kwargs):
        save(directory, *args, **kwargs)
        Trigger.fire(Path(directory).name)  # "best" or "latest", once written

    monkeypatch.setattr(checkpoint, "save", hooked_save)
    real_build = __import__("mnistxai.training.cnn", fromlist=["build_cnn"]).build_cnn

    def hooked_build(*args):
        task = real_build(*args)
        Trigger.fire("startup")
        step, evaluate = task.train_step, task.evaluate

        def train_step(*a):
            out = step(*a)
            Trigger.fire("step")
            return out

        def evaluate_state(s):
            Trigger.fire("evaluate")
            return evaluate(s)

        task.train_step, task.evaluate = train_step, evaluate_state
        return task

    monkeypatch.setattr("mnistxai.training.cnn.build_cnn", hooked_build)

    def arm(where, k=1):
        Trigger.where, Trigger.k, Trigger.calls = where, k, 0

    return arm


def test_an_interrupt_anywhere_resumes_to_the_uninterrupted_run(tmp_path, mnist_dir, triggered):
    """4 steps per epoch, 3 epochs: interrupted during start-up, inside a step, during the first
    epoch's save to best, during the second epoch's evaluation, inside a step again and during
    the last save to latest; each resume continues, and the end equals a run never
    interrupted."""
    config = TrainConfig(
        data_dir=str(mnist_dir), limit_train=512, limit_test=200, epochs=3, batch_size=128
    )
    triggered(None)
    whole = train_and_evaluate(config, tmp_path / "whole", progress=False)
    split = tmp_path / "split"
    triggered("startup")
    with pytest.raises(loop.TrainingInterrupted, match="step 0"):
        train_and_evaluate(config, split, progress=False)
    assert checkpoint.latest_step(split / "checkpoints" / "latest") == 0
    with pytest.raises(InputError, match="--resume"):  # never overwrite a run silently
        train_and_evaluate(config, split, progress=False)
    stops = [
        ("step", 2, "step 2"),
        ("best", 1, "step 4"),
        ("evaluate", 1, "step 8"),
        ("step", 2, "step 10"),
        ("latest", 1, "end of training"),
    ]
    for where, k, message in stops:
        triggered(where, k)
        with pytest.raises(loop.TrainingInterrupted, match=message):
            train_and_evaluate(config, split, resume=True, progress=False)
    history = json.loads((split / "history.json").read_text())
    assert len(history["epochs"]) == len(whole["epochs"]) == 3
    for a, b in zip(whole["epochs"], history["epochs"]):
        assert {k: v for k, v in a.items() if k not in TIMING} == {
            k: v for k, v in b.items() if k not in TIMING
        }  # train sums restored exactly
    for which in ("best", "latest"):
        steps = [
            checkpoint.latest_step(d / "checkpoints" / which) for d in (tmp_path / "whole", split)
        ]
        assert steps[0] == steps[1], which
        a, b = (checkpoint.load_classifier(d, which).variables for d in (tmp_path / "whole", split))
        jax.tree_util.tree_map(np.testing.assert_array_equal, a, b)


def test_interrupted_script_exits_130_in_one_line(tmp_path, mnist_dir):
    proc = subprocess.Popen(
        [
            sys.executable,
            "train_mnist.py",
            "--data-dir",
            str(mnist_dir),
            "--workdir",
            str(tmp_path / "w"),
            "--limit-train",
            "2048",
            "--limit-test",
            "100",
            "--epochs",
            "50",
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},  # its lines arrive as they are printed
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    for line in proc.stdout:  # wait until training runs
        if "steps/epoch" in line:
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted: stopped at step" in err
    assert checkpoint.latest_step(tmp_path / "w" / "checkpoints" / "latest") is not None


@pytest.mark.parametrize("flag, value", [("--weight-decay", "nan"), ("--lr", "inf")])
def test_nan_and_inf_flags_are_refused(tmp_path, flag, value):
    r = subprocess.run(
        [sys.executable, "train_mnist.py", "--workdir", str(tmp_path), flag, value],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "finite" in r.stderr and r.stderr.count("\n") == 1


def test_unusable_output_folders_are_refused_before_any_work(tmp_path, mnist_dir):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    commands = [
        ["train_mnist.py", "--workdir", str(a_file), "--data-dir", "/nonexistent"],
        ["demo_mnist_xai.py", "--out", str(a_file), "--checkpoint", "/nonexistent"],
        [
            "-m",
            "mnistxai.explain",
            "--checkpoint",
            "/nonexistent",
            "--methods",
            "saliency",
            "--out",
            str(a_file),
        ],
    ]
    for args in commands[:2]:  # checked before the data or the checkpoint is even looked at
        r = subprocess.run(
            [sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=120
        )
        assert r.returncode == 2 and "is a file, not a folder" in r.stderr, (args, r.stderr)
    classifier = Classifier(
        init_cnn(CNN(widths=(4, 8, 8), hidden=16), jax.random.key(0)),
        CNN(widths=(4, 8, 8), hidden=16),
    )
    with pytest.raises(InputError, match="is a file, not a folder"):
        explain_run(
            ExplainConfig(checkpoint="x", methods=("saliency",)),
            a_file,
            classifier,
            np.zeros((2, 28, 28), np.uint8),
            np.zeros(2, np.int32),
            progress=False,
        )


def small_classifier(seed=0):
    model = CNN(widths=(4, 8, 8), hidden=16)
    return Classifier(init_cnn(model, jax.random.key(seed)), model)


def test_a_run_folder_has_one_writer_and_refuses_other_models_and_data(tmp_path):
    images = (np.random.default_rng(0).random((4, 28, 28)) * 255).astype(np.uint8)
    labels = np.arange(4, dtype=np.int32)
    config = ExplainConfig(checkpoint="x", methods=("saliency",), batch_size=2)
    out = tmp_path / "run"
    out.mkdir()
    with exclusive(out, "--out"):  # another process writing there
        with pytest.raises(InputError, match="another process is writing"):
            explain_run(config, out, small_classifier(), images, labels, progress=False)
    explain_run(config, out, small_classifier(), images, labels, progress=False, max_batches=1)
    with pytest.raises(InputError, match=r"other settings \(.*model"):
        explain_run(config, out, small_classifier(1), images, labels, progress=False)
    with pytest.raises(InputError, match=r"other settings \(.*data"):
        explain_run(config, out, small_classifier(), images[::-1].copy(), labels, progress=False)
    explain_run(config, out, small_classifier(), images, labels, progress=False)  # resumes
    run = json.loads((out / "run.json").read_text())
    assert run["model"]["weights"] and run["data"]["images"] and run["dataset"] == "mnist"
    assert (out / "saliency.json").is_file() and (out / "saliency.npz").is_file()


def _idx_gz(path, header_dims, payload=b""):
    header = bytes([0, 0, 8, len(header_dims)]) + b"".join(
        d.to_bytes(4, "big") for d in header_dims
    )
    with gzip.open(path, "wb") as f:
        f.write(header + payload)


def test_hostile_idx_files_are_refused_from_their_header(tmp_path):
    _idx_gz(tmp_path / "huge.gz", (60000, 28000, 28000))  # 47 TB claimed
    with pytest.raises(data.DataError, match="more than"):
        data.read_idx(tmp_path / "huge.gz")
    _idx_gz(tmp_path / "long.gz", (2, 2), b"\x00" * 5)  # trailing bytes
    with pytest.raises(data.DataError, match="file has more"):
        data.read_idx(tmp_path / "long.gz")
    _idx_gz(tmp_path / "ok.gz", (2, 2), b"\x01\x02\x03\x04")
    np.testing.assert_array_equal(data.read_idx(tmp_path / "ok.gz"), [[1, 2], [3, 4]])


def test_mnist_files_are_not_taken_for_fashion_mnist(mnist_dir):
    with pytest.raises(data.DataError, match="like mnist"):
        data.load("fashion_mnist", "test", mnist_dir)


def test_fashion_message_names_the_subfolder_it_looks_in(tmp_path, monkeypatch):
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path))
    monkeypatch.setattr(data, "DEBIAN_FASHION_DIR", tmp_path / "none")
    monkeypatch.setattr(data, "_host_reachable", lambda *a, **k: False)
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    with pytest.raises(data.DataError, match="fashion_mnist/"):
        data.load("fashion_mnist", "test")


def test_damaged_checkpoints_are_refused_with_the_file_named(tmp_path):
    state = init_cnn(CNN(), jax.random.key(0))
    nan_state = jax.tree_util.tree_map(lambda a: a * np.nan, state)
    checkpoint.save(tmp_path / "a" / "checkpoints" / "best", 1, nan_state, {"model": "cnn"}, {})
    with pytest.raises(checkpoint.CheckpointError, match="NaN or inf"):
        checkpoint.load_classifier(tmp_path / "a")
    checkpoint.save(
        tmp_path / "b" / "checkpoints" / "best",
        1,
        state,
        {"model": "cnn", "model_kwargs": {"depth": 3}},
        {},
    )
    with pytest.raises(checkpoint.CheckpointError, match="config: model_kwargs"):
        checkpoint.load_classifier(tmp_path / "b")


def test_a_huge_user_image_is_refused_before_decoding(tmp_path):
    from PIL import Image

    from mnistxai.report.demo import load_user_image

    Image.new("L", (4100, 4100)).save(tmp_path / "big.png")
    with pytest.raises(InputError, match="4100x4100 pixels"):
        load_user_image(tmp_path / "big.png")
