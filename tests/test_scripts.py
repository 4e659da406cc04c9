"""The scripts fail with one readable line and a non-zero exit, never a traceback."""

import subprocess
import sys

import pytest

from conftest import REPO


def run_script(*args, env_extra=None, timeout=120):
    import os

    env = {**os.environ, **(env_extra or {})}
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env
    )


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["--epochs", "-1"], 2, "epochs must be >= 1"),
        (["--epochs", "two"], 2, "invalid int value"),
        (["--dataset", "cifar10"], 2, "unknown dataset"),
        (["--batch-size", "0"], 2, "batch_size must be >= 1"),
        (["--data-dir", "/nonexistent/mnist"], 2, "does not exist"),
        (["--freeze-backbone"], 2, "needs init_from"),
    ],
)
def test_train_script_bad_flags(tmp_path, args, code, message):
    result = run_script("train_mnist.py", "--workdir", str(tmp_path), *args)
    assert result.returncode == code
    assert message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_train_script_resume_without_checkpoint(tmp_path):
    result = run_script("train_mnist.py", "--workdir", str(tmp_path), "--resume")
    assert (
        result.returncode == 2
        and "no checkpoint" in result.stderr
        and "Traceback" not in result.stderr
    )


def test_train_script_help():
    result = run_script("train_mnist.py", "--help")
    assert result.returncode == 0
    for flag in (
        "--dataset",
        "--data-dir",
        "--workdir",
        "--epochs",
        "--batch-size",
        "--lr",
        "--seed",
        "--resume",
        "--limit-train",
        "--init-from",
        "--freeze-backbone",
    ):
        assert flag in result.stdout
