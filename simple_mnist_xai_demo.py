#!/usr/bin/env python3
"""A 30-second tour: every attribution method on an untrained CNN, no training and no dataset
needed.

  python simple_mnist_xai_demo.py                      # writes mnist_xai_results/simple_demo.png

Uses MNIST test digits when found (--data-dir or $MNISTXAI_DATA_DIR) and otherwise digits rendered
from a font. A randomly initialized network's maps show how each method behaves, not what a
classifier has learned: they are not meaningful explanations. When a trained checkpoint exists
(--checkpoint, default runs/cnn), its maps are shown beside them for contrast.
"""

import os
import time

# Compilation is most of this tour's time and the batch is three digits: XLA's quickest backend
# optimization level compiles ~1.6x faster here and runs these tiny batches about as fast. Set
# before
# JAX starts; a user's own XLA_FLAGS come last and win.
os.environ["XLA_FLAGS"] = "--xla_backend_optimization_level=0 " + os.environ.get("XLA_FLAGS", "")

import jax  # noqa: E402
import numpy as np  # noqa: E402

from mnistxai.util.cli import ArgumentParser, run_main  # noqa: E402
from mnistxai.util.errors import InputError


def main(argv=None):
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--out", default="mnist_xai_results", help="output folder (default: mnist_xai_results)"
    )
    p.add_argument(
        "--checkpoint",
        default="runs/cnn",
        help="trained run to compare with, if present (default: runs/cnn)",
    )
    p.add_argument("--data-dir", help="folder with MNIST IDX files (optional)")
    p.add_argument(
        "--methods",
        default=None,
        help="comma-separated method names, or 'all' (default: every method but exact_shapley)",
    )
    p.add_argument(
        "--digits", type=int, default=3, help="how many digits to explain, 1-10 (default: 3)"
    )
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    start = time.perf_counter()

    from mnistxai.report import demo, viz
    from mnistxai.training.checkpoint import CheckpointError, load_classifier
    from mnistxai.models.classifier import Classifier
    from mnistxai.models.cnn import CNN, init_cnn
    from mnistxai.util.files import writable_dir
    from mnistxai.xai import parse_methods

    if not 1 <= args.digits <= 10:
        raise InputError(f"--digits must be in 1..10, got {args.digits}")
    out = writable_dir(args.out, "--out")
    methods = parse_methods(args.methods)
    images, labels, source = demo.sample_digits(args.data_dir)
    images, labels = images[: args.digits], labels[: args.digits]
    x = images[..., None]
    key = jax.random.key(args.seed)
    # RBG bits: XLA:CPU compiles the initializers' random-bit generator ~3x faster than threefry's
    untrained = jax.jit(init_cnn, static_argnums=0)(CNN(), jax.random.key(args.seed, impl="rbg"))
    models = {"untrained": Classifier(untrained)}
    try:
        models["trained"] = load_classifier(args.checkpoint)
    except CheckpointError:
        pass
    print(f"JAX on {jax.devices()[0].platform}; {len(methods)} methods on {len(x)} {source}")

    rows_images, rows_labels, rows_preds, row_maps, seconds = (
        [],
        [],
        [],
        {m: [] for m in methods},
        {},
    )
    for name, classifier in models.items():
        maps, seconds[name] = demo.explain_all(
            classifier, x, methods, key, background=x, quick=True
        )
        preds = demo.probabilities(classifier, x).argmax(-1)
        rows_images.append(images)
        rows_labels.append(labels)
        rows_preds.append(preds)
        for m in methods:
            row_maps[m].append(maps[m])
    title = "Untrained CNN (top rows): these maps are NOT meaningful explanations" + (
        " | trained CNN (bottom rows)" if "trained" in models else ""
    )
    fig = viz.plot_method_grid(
        np.concatenate(rows_images),
        {m: np.concatenate(v) for m, v in row_maps.items()},
        np.concatenate(rows_labels),
        np.concatenate(rows_preds),
        title=title,
        row_titles=[n for n in models for _ in range(len(x))],
    )
    viz.save_figure(fig, out / "simple_demo.png")

    print(
        "\nNote: the untrained network's maps show how each method behaves on random weights, "
        "not what a"
    )
    print(
        "classifier has learned."
        + (
            ""
            if "trained" in models
            else " Train one (python train_mnist.py) to see meaningful maps beside them."
        )
    )
    print(
        f"\n{'method':22s}"
        + "".join(f"{n:>12s}" for n in models)
        + "   (seconds, compilation included)"
    )
    for m in methods:
        print(f"{m:22s}" + "".join(f"{seconds[n][m]:12.2f}" for n in models))
    print(f"\nwrote {out / 'simple_demo.png'} in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    run_main(main)
