"""Shared fixtures. Real MNIST comes from $MNISTXAI_DATA_DIR or ../shared/data/mnist beside the repo."""

import os
from pathlib import Path

import jax
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    folder = Path(os.environ.get("MNISTXAI_DATA_DIR") or REPO.parent / "shared" / "data" / "mnist")
    assert (folder / "t10k-images-idx3-ubyte.gz").is_file(), (
        f"real MNIST is needed at {folder}: set MNISTXAI_DATA_DIR to a folder of the four IDX files")
    return folder


@pytest.fixture(scope="session")
def random_classifier():
    """The seed CNN with random weights and default BatchNorm statistics (eval mode)."""
    from mnistxai.classifier import Classifier
    from mnistxai.models import CNN, init_cnn

    return Classifier(init_cnn(CNN(), jax.random.key(0)))
