"""The planted-shortcut MNIST (mnistxai.shortcut): markers where the masks say, a CNN trained on
it relies on them, and right-for-the-right-reasons training (Ross et al. 2017) removes that
reliance."""

import dataclasses
import importlib.util
import signal
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mnistxai import data, shortcut
from mnistxai.models.classifier import Classifier
from mnistxai.models.cnn import CNN
from mnistxai.training import cnn as cnn_training
from mnistxai.training.checkpoint import CheckpointError, load_classifier
from mnistxai.training.loop import epoch_permutation
from mnistxai.util.errors import InputError

# the tiny models: 1,024 shortcut digits, 2 epochs of 32-image steps, no shift augmentation
TINY = dict(
    dataset="mnist_shortcut", limit_train=1024, limit_test=200, epochs=2, batch_size=32,
    augment_shift=0,
)  # fmt: skip
RRR_WEIGHT = 10.0


def train_mnist():
    """The script as a module; its import-time SIGINT handler is undone (it would outlive it)."""
    handler = signal.getsignal(signal.SIGINT)
    path = Path(__file__).resolve().parents[1] / "train_mnist.py"
    spec = importlib.util.spec_from_file_location("train_mnist", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    finally:
        signal.signal(signal.SIGINT, handler)
    return module


@pytest.fixture(scope="module")
def plain_mnist(mnist_dir):
    return data.load("mnist", "test", mnist_dir)


@pytest.fixture(scope="module")
def shortcut_run(tmp_path_factory, mnist_dir):
    """A CNN trained on the shortcut digits through train_mnist.py's main (the real machinery)."""
    workdir = tmp_path_factory.mktemp("shortcut")
    argv = ["--dataset", "mnist_shortcut", "--data-dir", str(mnist_dir), "--workdir", str(workdir)]
    argv += ["--limit-train", "1024", "--limit-test", "200", "--epochs", "2", "--batch-size", "32"]
    assert train_mnist().main(argv + ["--augment-shift", "0"]) == 0
    return workdir


@pytest.fixture(scope="module")
def rrr_model(mnist_dir):
    """The same CNN trained with --rrr-weight, by the same jitted step, without checkpoints:
    (config, the compiled step, the trained Classifier)."""
    config = cnn_training.TrainConfig(
        **TINY, data_dir=str(mnist_dir), rrr_weight=RRR_WEIGHT
    ).validate()
    images, labels = data.load(config.dataset, "train", config.data_dir)
    images, labels = images[: config.limit_train], labels[: config.limit_train]
    steps = len(images) // config.batch_size
    model = CNN()
    tx = cnn_training.make_optimizer(config, steps)
    step = cnn_training.make_train_step(model, tx, config)
    state = cnn_training.create_state(config, model, tx)
    for epoch in range(config.epochs):
        order = epoch_permutation(config, epoch, len(images))
        for i in range(steps):
            idx = order[i * config.batch_size : (i + 1) * config.batch_size]
            state, _ = step(state, images[idx], labels[idx])
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    return config, step, Classifier(variables, dataset="mnist_shortcut")


def test_the_marker_lands_where_the_mask_says_and_only_there(mnist_dir, plain_mnist):
    images, labels = plain_mnist
    marked = shortcut.make(images, labels, "test")
    changed = marked.images != images
    assert np.all(marked.masks[changed]), "a pixel changed outside the mask"
    assert np.all(marked.images[marked.masks] == 255)
    np.testing.assert_array_equal(marked.masks.sum(axis=(1, 2)), 9)
    np.testing.assert_array_equal(marked.marker, labels)  # default: every digit, its own class
    for k, (r, c) in enumerate(shortcut.POSITIONS):
        assert marked.masks[labels == k][:, r : r + 3, c : c + 3].all()
    # the marker is recognized from the pixels alone, in NumPy and inside jit, and nowhere else
    np.testing.assert_array_equal(shortcut.find_markers(marked.images), marked.masks)
    in_jit = jax.jit(shortcut.find_markers)(jnp.asarray(marked.images[:64]))
    np.testing.assert_array_equal(np.asarray(in_jit), marked.masks[:64])
    train_images = data.load("mnist", "train", mnist_dir)[0]
    for plain in (images, train_images):
        assert not shortcut.find_markers(plain).any(), "a plain digit looks marked"
        ink = [(plain[:, r : r + 3, c : c + 3] > 0).any(axis=(1, 2)) for r, c in shortcut.POSITIONS]
        assert np.mean(np.any(ink, axis=0)) < 0.05  # marker places are (almost) ink-free
    # the dataset the loaders and the CNN's config name is this one
    loaded = data.load("mnist_shortcut", "test", mnist_dir)
    np.testing.assert_array_equal(loaded[0], marked.images)
    np.testing.assert_array_equal(loaded[1], labels)
    assert data.CLASS_NAMES["mnist_shortcut"] == data.CLASS_NAMES["mnist"]


def test_the_variants_are_deterministic(plain_mnist):
    images, labels = plain_mnist[0][:2000], plain_mnist[1][:2000]
    a = shortcut.make(images, labels, "train", fraction=0.5, classes=(1, 7), seed=3)
    b = shortcut.make(images, labels, "train", fraction=0.5, classes=(1, 7), seed=3)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.marker, b.marker)
    other_seed = shortcut.make(images, labels, "train", fraction=0.5, classes=(1, 7), seed=4)
    other_split = shortcut.make(images, labels, "test", fraction=0.5, classes=(1, 7), seed=3)
    assert not np.array_equal(a.marker, other_seed.marker)
    assert not np.array_equal(a.marker, other_split.marker)
    carried = a.marker >= 0
    assert set(labels[carried]) == {1, 7} and np.all(a.marker[carried] == labels[carried])
    eligible = np.isin(labels, (1, 7))
    assert 0.4 < carried.sum() / eligible.sum() < 0.6
    np.testing.assert_array_equal(a.images[~carried], images[~carried])
    sets = shortcut.evaluation_sets(images, labels)
    again = shortcut.evaluation_sets(images, labels)
    np.testing.assert_array_equal(sets["swapped"].images, again["swapped"].images)
    assert np.all(sets["swapped"].marker != labels)
    assert len(np.unique(sets["swapped"].marker - labels)) > 5  # other classes, not one shift
    np.testing.assert_array_equal(sets["unmarked"].images, images)
    assert not sets["unmarked"].masks.any()


def test_the_rrr_penalty_is_the_squared_input_gradient_on_the_mask(random_classifier, plain_mnist):
    images, labels = plain_mnist[0][:3], plain_mnist[1][:3]
    marked = shortcut.make(images, labels, "test")
    with jax.enable_x64(True):
        clf = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), random_classifier)
        x = jnp.asarray(data.to_model_input(marked.images), jnp.float64)
        mask = jnp.asarray(marked.masks, jnp.float64)
        logits, penalty = jax.jit(shortcut.rrr_penalty, static_argnums=0)(clf.logits, x, mask)

        @jax.jit
        def log_p_sum(xi):
            return jnp.sum(jax.nn.log_softmax(clf.logits(xi[None])))

        grad = jax.jit(jax.grad(log_p_sum))

        expected = []
        for i in range(3):  # one example at a time: an independent gradient
            g = np.asarray(grad(x[i]))[..., 0]
            expected.append(np.sum(np.asarray(mask[i]) * g**2))
            # and that gradient itself against central differences on two marker pixels
            for r, c in np.argwhere(np.asarray(mask[i]))[[0, 8]]:
                e = jnp.zeros_like(x[i]).at[r, c, 0].set(1e-5)
                fd = (log_p_sum(x[i] + e) - log_p_sum(x[i] - e)) / 2e-5
                np.testing.assert_allclose(float(fd), g[r, c], rtol=1e-5, atol=1e-8)
        np.testing.assert_allclose(np.asarray(penalty), expected, rtol=1e-10)
        np.testing.assert_allclose(np.asarray(logits), np.asarray(clf.logits(x)), rtol=1e-12)
        assert penalty.dtype == jnp.float64 and float(penalty.min()) > 0
        _, none = shortcut.rrr_penalty(clf.logits, x, jnp.zeros_like(mask))
        np.testing.assert_array_equal(np.asarray(none), 0.0)


def test_the_train_step_minimizes_the_penalty_it_reports(rrr_model, mnist_dir):
    """The step's ``rrr`` metric equals the penalty recomputed independently, in training mode
    with the step's dropout key, from the known masks (not found in the pixels)."""
    config, step, _ = rrr_model
    model = CNN()
    tx = cnn_training.make_optimizer(config, 32)
    state = cnn_training.create_state(config, model, tx)
    images, labels = data.load("mnist_shortcut", "test", mnist_dir)
    images, labels = images[:32], labels[:32]
    key = jax.random.fold_in(jax.random.wrap_key_data(state.key), state.step)
    _, dropout_key = jax.random.split(key)
    variables = {"params": state.params, "batch_stats": state.batch_stats}

    @jax.jit
    def log_p_sum(x):
        logits, _ = model.apply(
            variables, x, train=True, mutable=["batch_stats"], rngs={"dropout": dropout_key}
        )
        return jnp.sum(jax.nn.log_softmax(logits))

    g = jax.grad(log_p_sum)(data.to_model_input(images))[..., 0]
    expected = float(jnp.sum(shortcut.marker_masks(labels) * g**2))
    _, metrics = step(state, images, labels)
    assert expected > 0
    # float32 sums of squares, compiled two ways; a wrong mask, key or batch reduction is off by
    # far more
    np.testing.assert_allclose(float(metrics["rrr"]), expected, rtol=5e-3)


def test_a_cnn_trained_on_the_shortcut_relies_on_the_marker(shortcut_run, plain_mnist):
    classifier = load_classifier(shortcut_run)
    assert classifier.dataset == "mnist_shortcut"  # the dataset travels with the checkpoint
    images, labels = plain_mnist[0][:500], plain_mnist[1][:500]
    r = shortcut.reliance(classifier, images, labels, method="grad_x_input", explain_images=100)
    assert r["accuracy_marked"] > 0.95
    assert r["accuracy_swapped"] < r["accuracy_marked"] - 0.6  # the swap collapses it
    assert r["follows_marker"] > 0.5  # mostly to the class the marker names
    # 9 of 784 pixels (1.1%) hold a third of the attribution
    assert r["marker_mass_mean"] > 25 * r["chance_mass"]


def test_right_for_the_right_reasons_removes_the_reliance(shortcut_run, rrr_model, plain_mnist):
    images, labels = plain_mnist[0][:500], plain_mnist[1][:500]
    before = shortcut.reliance(
        load_classifier(shortcut_run), images, labels, method="grad_x_input", explain_images=100
    )
    after = shortcut.reliance(
        rrr_model[2], images, labels, method="grad_x_input", explain_images=100
    )
    assert after["marker_mass_mean"] < before["marker_mass_mean"] / 5
    assert after["marker_mass_mean"] < 3 * after["chance_mass"]
    assert after["follows_marker"] < 0.2 < before["follows_marker"]
    assert after["accuracy_swapped"] > before["accuracy_swapped"] + 0.4
    # and every localisation metric sees the map leave the marker
    for name, value in before["localisation"].items():
        assert after["localisation"][name] < value, name


def test_bad_settings_are_one_line_input_errors(plain_mnist):
    script = train_mnist()
    images, labels = plain_mnist[0][:10], plain_mnist[1][:10]
    cases = [
        (lambda: shortcut.make(images, labels, "train", fraction=1.5), "fraction"),
        (lambda: shortcut.make(images, labels, "train", classes=(3, 10)), "classes"),
        (lambda: shortcut.make(images, labels, "train", classes=()), "classes"),
        (lambda: shortcut.add_markers(images, labels, np.full(10, 12)), "marker classes"),
        (lambda: shortcut.add_markers(images[..., None], labels, labels), "uint8 \\(N, 28, 28\\)"),
        (lambda: data.load("mnist_shortcut", "validation"), "unknown split"),
        (
            lambda: cnn_training.TrainConfig(rrr_weight=1.0).validate(),
            "rrr_weight needs dataset mnist_shortcut",
        ),
        (
            lambda: cnn_training.TrainConfig(dataset="mnist_shortcut", rrr_weight=-1).validate(),
            "rrr_weight must be >= 0",
        ),
        (
            lambda: cnn_training.TrainConfig(
                dataset="mnist_shortcut", rrr_weight=1.0, init_from="x", freeze_backbone=True
            ).validate(),
            "freeze_backbone",
        ),
        (
            lambda: script.make_config(script.parse_args(["--model", "vae", "--rrr-weight", "1"])),
            "--rrr-weight: not a setting of --model vae",
        ),
        (
            lambda: script.make_config(
                script.parse_args(["--rrr-weight", "nan", "--dataset", "mnist_shortcut"])
            ),
            "finite",
        ),
    ]
    for make, message in cases:
        with pytest.raises(InputError, match=message) as e:
            make()
        assert "\n" not in str(e.value)
    config = script.make_config(
        script.parse_args(["--dataset", "mnist_shortcut", "--rrr-weight", "3"])
    )
    assert dataclasses.asdict(config)["rrr_weight"] == 3.0


def test_demo_section_shows_both_models_and_says_how_to_train_a_missing_one(
    shortcut_run, rrr_model, tmp_path, monkeypatch, mnist_dir
):
    import argparse

    from PIL import Image

    spec = importlib.util.spec_from_file_location(
        "demo_mnist_xai", Path(__file__).resolve().parents[1] / "demo_mnist_xai.py"
    )
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    monkeypatch.chdir(tmp_path)  # no runs/shortcut here
    assert demo.load_shortcut_models(None, None) == {}
    absent = demo.shortcut_section({}, tmp_path, None)
    assert demo.SHORTCUT_TRAIN in absent.text and not absent.figures
    with pytest.raises(CheckpointError, match="--shortcut-rrr typo"):
        demo.load_shortcut_models(None, "typo")

    models = {"shortcut": load_classifier(shortcut_run), "+ RRR": rrr_model[2]}
    args = argparse.Namespace(data_dir=str(mnist_dir), quick=True)
    section = demo.shortcut_section(models, tmp_path, args)
    picture = np.asarray(Image.open(tmp_path / "shortcut.png").convert("L"), np.float32)
    assert picture.std() > 5 and section.figures[0].path == "shortcut.png"
    header, rows = section.tables[0]
    assert [r[:2] for r in rows] == [
        [m, k] for m in models for k in ("saliency", "grad_x_input", "integrated_gradients")
    ]
    # the table's swapped accuracy is the one reliance measures on the same digits
    images, labels = data.load("mnist", "test", mnist_dir)
    n = demo.SHORTCUT_DIGITS[True]
    before = shortcut.reliance(models["shortcut"], images[:n], labels[:n], explain_images=8)
    assert rows[0][header.index("swapped")] == f"{100 * before['accuracy_swapped']:.1f}%"
