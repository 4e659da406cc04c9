"""Shared fixtures. Real MNIST comes from $MNISTXAI_DATA_DIR or ../shared/data/mnist beside the
repo."""

import gc
import os
from pathlib import Path

import jax
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop JAX's compiled programs after each test module.

    Each XLA:CPU executable holds memory maps until it is released (about 8,000 for one contract
    test module); a pytest-xdist worker that had run a few hundred tests passed Linux's
    ``vm.max_map_count`` (65,530) and segfaulted inside an XLA compile.
    """
    yield
    jax.clear_caches()
    gc.collect()


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    folder = Path(os.environ.get("MNISTXAI_DATA_DIR") or REPO.parent / "shared" / "data" / "mnist")
    assert (folder / "t10k-images-idx3-ubyte.gz").is_file(), (
        f"real MNIST is needed at {folder}: set MNISTXAI_DATA_DIR to a folder of the four IDX files"
    )
    return folder


@pytest.fixture(scope="session")
def random_classifier():
    """The seed CNN with random weights and default BatchNorm statistics (eval mode)."""
    from mnistxai.models.classifier import Classifier
    from mnistxai.models.cnn import CNN, init_cnn

    return Classifier(init_cnn(CNN(), jax.random.key(0)))


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, mnist_dir):
    """A CNN trained for one epoch on 5,000 real MNIST images (~85% test accuracy): (workdir,
    history).

    Shared by every test that needs a trained checkpoint, so the suite trains it once.
    """
    from mnistxai.training.cnn import TrainConfig, train_and_evaluate

    def train(workdir):
        config = TrainConfig(data_dir=str(mnist_dir), limit_train=5000, limit_test=2000, epochs=1)
        return train_and_evaluate(config, workdir, progress=False)

    return once_per_session(tmp_path_factory, "trained_cnn", train)


def once_per_session(tmp_path_factory, name: str, make):
    """``(workdir, make(workdir))``, made by the first pytest-xdist worker that asks and read back
    (``history.json``) by the others: the suite trains it once, not once per worker."""
    import fcntl
    import json

    if os.environ.get("PYTEST_XDIST_WORKER") is None:  # one process: nothing to share
        workdir = tmp_path_factory.mktemp(name)
        return workdir, make(workdir)
    root = tmp_path_factory.getbasetemp().parent  # shared by the workers of this session
    workdir, done = root / name, root / f"{name}.done"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the others wait here while the first one trains
        if not done.exists():
            workdir.mkdir(exist_ok=True)
            make(workdir)
            done.touch()
    return workdir, json.loads((workdir / "history.json").read_text())


@pytest.fixture(scope="session")
def vae_run(tmp_path_factory, mnist_dir):
    """A VAE trained for 3 short epochs (6 steps each) on 384 real images: (workdir, history)."""
    from mnistxai.training.generative import VAEConfig, train_vae

    config = VAEConfig(
        data_dir=str(mnist_dir), limit_train=384, limit_test=128, epochs=3, batch_size=64
    )
    return once_per_session(
        tmp_path_factory, "vae", lambda workdir: train_vae(config, workdir, progress=False)
    )


@pytest.fixture(scope="session")
def generator_run(tmp_path_factory, mnist_dir):
    """A DCGAN trained for 8 steps on 256 real images (TINY_GAN): (workdir, history)."""
    from generative_fixtures import TINY_GAN
    from mnistxai.training.generative import GANConfig, train_generator

    config = GANConfig(data_dir=str(mnist_dir), **TINY_GAN)
    return once_per_session(
        tmp_path_factory,
        "generator",
        lambda workdir: train_generator(config, workdir, progress=False),
    )
