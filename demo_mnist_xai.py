#!/usr/bin/env python3
"""Explain a trained MNIST CNN with every method and write the figures and an HTML report.

  python demo_mnist_xai.py                                  # uses runs/cnn, writes
  mnist_xai_results/
  python demo_mnist_xai.py --indices 0,1,2 --methods saliency,integrated_gradients,gradcam
  python demo_mnist_xai.py --image my_digit.png             # also explain your own digit

Open mnist_xai_results/index.html in a browser. Your image may be any size, RGB or grey, dark on
light
or light on dark: it is converted to MNIST's convention (white digit on black, 28x28, the ink scaled
into 20x20 and centred by its centre of mass).
"""

import shutil
import time
from pathlib import Path

import jax
import numpy as np
from tqdm.auto import tqdm

from mnistxai import data
from mnistxai.report import demo, viz
from mnistxai.training.checkpoint import (
    CheckpointError,
    load_classifier,
    load_generator,
    load_vae,
    resolve_checkpoint_dir,
)
from mnistxai.util.cli import ArgumentParser, run_main
from mnistxai.report.html import Figure, Section, markdown_to_html, write_report
from mnistxai.util import streams
from mnistxai.xai import parse_methods
from mnistxai.xai.synthesis import activation_max as am, latent_walk as lw
from mnistxai.util.errors import InputError
from mnistxai.util.files import writable_dir

DATASET_TITLES = {
    "mnist": "MNIST",
    "fashion_mnist": "Fashion-MNIST",
    "mnist_shortcut": "planted-shortcut MNIST",
}
AM_STARTS = {
    False: 4,
    True: 2,
}  # random starts per class for activation maximization: {--quick: starts}


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--checkpoint", default="runs/cnn", help="work dir of a trained CNN (default: runs/cnn)"
    )
    p.add_argument(
        "--data-dir", help="folder with the MNIST IDX files (default: $MNISTXAI_DATA_DIR, ...)"
    )
    p.add_argument(
        "--out", default="mnist_xai_results", help="output folder (default: mnist_xai_results)"
    )
    p.add_argument(
        "--indices", help="test indices to analyse one by one (default: the first of each class)"
    )
    p.add_argument(
        "--methods",
        default=None,
        help="comma-separated method names, or 'all' (default: every method but exact_shapley)",
    )
    p.add_argument("--image", help="a picture of a digit to explain too (PNG, JPEG, ...)")
    p.add_argument(
        "--grid-size", type=int, default=12, help="digits in the batch grid (default: 12)"
    )
    p.add_argument(
        "--tour-points",
        type=int,
        default=1500,
        help="test digits in the grand tour (default: 1500)",
    )
    p.add_argument(
        "--vae",
        help="a trained VAE (python train_mnist.py --model vae) for the latent walks and AM "
        "through its decoder (default: runs/vae if present; else the report says how to train one)",
    )
    p.add_argument(
        "--generator",
        help="a trained generator (python train_mnist.py --model generator) for DGN-AM "
        "(default: runs/generator if present, likewise)",
    )
    p.add_argument(
        "--am-steps", type=int, default=200, help="activation-maximization steps (default: 200)"
    )
    p.add_argument(
        "--leaderboard",
        help="an evaluation folder (python -m mnistxai.evaluate --out DIR) to show "
        "(default: CHECKPOINT/leaderboard when it exists)",
    )
    p.add_argument(
        "--shortcut",
        help="a CNN trained on mnist_shortcut (python train_mnist.py --dataset mnist_shortcut) for "
        "the planted-shortcut section (default: runs/shortcut if present; else the report says "
        "how to train one)",
    )
    p.add_argument(
        "--shortcut-rrr",
        help="the same CNN trained with --rrr-weight, shown beside it (default: runs/shortcut_rrr "
        "if present)",
    )
    p.add_argument(
        "--quick", action="store_true", help="lighter method settings (fewer samples and steps)"
    )
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    methods = parse_methods(args.methods)
    if args.grid_size < 1 or args.tour_points < 10 or args.am_steps < 1:
        raise InputError("--grid-size and --am-steps must be >= 1, --tour-points >= 10")
    out = writable_dir(args.out, "--out")
    try:
        classifier = load_classifier(args.checkpoint)
    except CheckpointError as e:
        if resolve_checkpoint_dir_or_none(args.checkpoint) is not None:
            raise  # a checkpoint of another kind, or damaged: its message says so
        raise CheckpointError(
            f"{e}. Train one first: python train_mnist.py --workdir {args.checkpoint}"
        ) from None
    run_dir = resolve_checkpoint_dir(args.checkpoint).parents[1]
    board = Path(args.leaderboard) if args.leaderboard else run_dir / "leaderboard"
    if args.leaderboard and not (board / "leaderboard.md").is_file():
        raise InputError(
            f"no leaderboard.md in {board}: write one with "
            f"python -m mnistxai.evaluate --out {board}"
        )
    generative = load_generative(args.vae, args.generator)
    shortcut_models = load_shortcut_models(args.shortcut, args.shortcut_rrr)
    user_image = demo.load_user_image(args.image) if args.image else None
    images, labels = data.load(classifier.dataset, "test", args.data_dir)
    try:
        background = data.load(classifier.dataset, "train", args.data_dir)[0][: demo.BACKGROUND]
    except data.DataError:
        background = images[-demo.BACKGROUND :]
    background = data.to_model_input(background)
    x_all = data.to_model_input(images)

    key = jax.random.key(args.seed)
    print(f"JAX on {jax.devices()[0].platform}; {len(methods)} methods; writing to {out}/")

    names = data.CLASS_NAMES[classifier.dataset]
    probs = demo.probabilities(classifier, x_all)
    preds = probs.argmax(-1)
    accuracy = float((preds == labels).mean())
    if args.indices:
        try:
            singles = [int(i) for i in args.indices.split(",")]
        except ValueError:
            raise InputError(
                f"--indices must be comma-separated integers, got {args.indices!r}"
            ) from None
        if not singles or min(singles) < 0 or max(singles) >= len(images):
            raise InputError(f"--indices must be in 0..{len(images) - 1}")
    else:
        singles = [int(np.flatnonzero(labels == c)[0]) for c in range(10)]
    wrong = np.flatnonzero(preds != labels)
    grid = (singles + [i for i in range(len(images)) if i not in singles])[
        : max(args.grid_size - 4, 1)
    ]
    grid += [int(i) for i in wrong[: args.grid_size - len(grid)]]
    good, bad = demo.pick_good_and_bad(probs, labels)
    cm = lw.confusion_matrix(labels, preds)
    pairs = demo.most_confused_pairs(cm, 3)
    pair_examples = [int(np.flatnonzero((labels == t) & (preds == p))[0]) for t, p, _ in pairs]

    # Every digit any figure needs is explained in one batch: one compilation per method.
    chosen = list(
        dict.fromkeys(singles + grid + [good] + ([bad] if bad is not None else []) + pair_examples)
    )
    batch = x_all[chosen]
    if user_image is not None:
        batch = np.concatenate([batch, user_image[None, ..., None]])
    maps, seconds = demo.explain_all(classifier, batch, methods, key, background, quick=args.quick)
    row = {idx: r for r, idx in enumerate(chosen)}
    take = lambda idxs: {m: maps[m][[row[i] for i in idxs]] for m in methods}  # noqa: E731
    sections = []

    figs = []
    for i in tqdm(singles, desc="digit figures"):
        single_maps = {m: v[0] for m, v in take([i]).items()}
        fig = viz.plot_digit_analysis(
            x_all[i, ..., 0],
            single_maps,
            probs[i],
            int(labels[i]),
            title=f"test image {i}: true {names[labels[i]]}, predicted {names[preds[i]]}",
            class_names=names,
        )
        viz.save_figure(fig, out / f"digit_{i}.png")
        figs.append(
            Figure(
                f"digit_{i}.png",
                f"Test image {i} (true {names[labels[i]]}, predicted {names[preds[i]]}, "
                f"p={probs[i].max():.3f}): every method, each map on its own scale.",
            )
        )
    sections.append(
        Section(
            "Single digits",
            "Each method's map over the digit. Unsigned maps use "
            f"'{viz.UNSIGNED_CMAP}'; signed maps use '{viz.SIGNED_CMAP}' (red supports the "
            "explained class, blue opposes it) with the digit's outline.",
            figs,
        )
    )

    fig = viz.plot_method_grid(
        x_all[grid, ..., 0],
        take(grid),
        labels[grid],
        preds[grid],
        title="Digits x methods (green: correct, red: wrong)",
        class_names=names,
    )
    viz.save_figure(fig, out / "batch_grid.png")
    sections.append(
        Section(
            "Batch grid",
            "Rows are test digits (the last rows are misclassified ones), "
            "columns are methods; the explained class is the predicted one.",
            [Figure("batch_grid.png", "Each map on its own colour scale.")],
        )
    )

    if bad is not None:
        pair = [good, bad]
        fig = viz.plot_method_grid(
            x_all[pair, ..., 0],
            take(pair),
            labels[pair],
            preds[pair],
            normalize=True,
            title="GOOD (confidently correct) vs BAD (confidently wrong)",
            class_names=names,
        )
        viz.save_figure(fig, out / "good_vs_bad.png")
        sections.append(
            Section(
                "GOOD vs BAD",
                f"Top row: test image {good}, correct with p={probs[good].max():.3f}. "
                f"Bottom row: test image {bad}, true {names[labels[bad]]} but predicted "
                f"{names[preds[bad]]} "
                f"with p={probs[bad].max():.3f}.",
                [Figure("good_vs_bad.png", "All maps min-max scaled to [0, 1] on one scale.")],
            )
        )

    viz.save_figure(
        viz.plot_confusion_matrix(
            cm, f"Confusion matrix (test accuracy {100 * accuracy:.2f}%)", class_names=names
        ),
        out / "confusion_matrix.png",
    )
    confusion_figs = [
        Figure("confusion_matrix.png", "Rows: true class; columns: predicted; colour: errors.")
    ]
    if pairs:
        fig = viz.plot_method_grid(
            x_all[pair_examples, ..., 0],
            take(pair_examples),
            labels[pair_examples],
            preds[pair_examples],
            title="One example of each most-confused pair",
            class_names=names,
        )
        viz.save_figure(fig, out / "confused_pairs.png")
        confusion_figs.append(
            Figure("confused_pairs.png", "What the network looked at when it confused them.")
        )
        fig = viz.plot_method_grid(
            x_all[pair_examples, ..., 0],
            demo.contrastive_maps(
                classifier,
                x_all[pair_examples],
                preds[pair_examples],
                labels[pair_examples],
                quick=args.quick,
            ),
            labels[pair_examples],
            preds[pair_examples],
            title="Why the predicted class and not the true one",
            class_names=names,
        )
        viz.save_figure(fig, out / "confused_pairs_contrast.png")
        confusion_figs.append(
            Figure(
                "confused_pairs_contrast.png",
                "Contrastive maps of logit(predicted) − logit(true) (xai.Contrast): red pixels "
                "argue for the wrong prediction, blue ones for the true class.",
            )
        )
    sections.append(
        Section(
            "Confusion analysis",
            f"{len(wrong)} of {len(labels)} test digits are misclassified.",
            confusion_figs,
            tables=[
                (["true", "predicted as", "count"], [[names[t], names[p], c] for t, p, c in pairs])
            ],
        )
    )

    (vae, vae_dir), (generator, generator_dir), absent = generative
    sections.append(
        am_section(
            classifier, generator, vae, out, streams.fold(key, "activation_max"), args, absent
        )
    )
    sections.append(walk_section(classifier, vae, x_all, labels, preds, pairs, out, args, absent))

    sections.append(shortcut_section(shortcut_models, out, args))

    curves = []
    for name, folder in (("CNN", run_dir), ("VAE", vae_dir), ("generator", generator_dir)):
        if folder is not None and (folder / "training_curves.png").is_file():
            shutil.copyfile(
                folder / "training_curves.png", out / f"training_curves_{name.lower()}.png"
            )
            curves.append(
                Figure(
                    f"training_curves_{name.lower()}.png",
                    f"{name}: per-epoch metrics, from {folder}.",
                )
            )
    if curves:
        sections.append(Section("Training curves", "The models this report uses.", curves))

    tour = np.random.default_rng(args.seed).permutation(len(images))[: args.tour_points]
    features = np.asarray(jax.jit(lambda c, b: c.features(b, "dense"))(classifier, x_all[tour]))
    demo.grand_tour_gif(
        features, labels[tour], out / "grand_tour.gif", streams.fold(key, "grand_tour")
    )
    sections.append(
        Section(
            "Grand tour",
            "The 256 penultimate activations of test digits, reduced to 8 "
            "principal components and turned smoothly through 2-D views.",
            [Figure("grand_tour.gif", f"{len(tour)} test digits coloured by class.")],
        )
    )

    if user_image is not None:
        user_probs = demo.probabilities(classifier, user_image[None, ..., None])[0]
        fig = viz.plot_digit_analysis(
            user_image,
            {m: v[-1] for m, v in maps.items()},
            user_probs,
            title=f"your image {Path(args.image).name}: predicted {user_probs.argmax()}",
        )
        viz.save_figure(fig, out / "your_digit.png")
        sections.append(
            Section(
                "Your digit",
                f"{args.image}, converted to MNIST's convention.",
                [Figure("your_digit.png", "Every method on your image.")],
            )
        )

    if (board / "leaderboard.md").is_file():
        sections.append(leaderboard_section(board, out))

    timing = [[m, f"{seconds[m]:.2f}"] for m in methods]
    sections.append(
        Section(
            "Methods and timing",
            f"{len(batch)} images explained per method (wall seconds, compilation included).",
            tables=[(["method", "seconds"], timing)],
        )
    )
    settings = {
        "checkpoint": args.checkpoint,
        "test accuracy": f"{100 * accuracy:.2f}%",
        "seed": args.seed,
        "VAE": str(vae_dir or "none"),
        "generator": str(generator_dir or "none"),
        "planted-shortcut models": ", ".join(shortcut_models) or "none",
        "activation maximization": f"{args.am_steps} steps, {AM_STARTS[args.quick]} starts per "
        "class",
        "method settings": "quick (each method's registered quick options)"
        if args.quick
        else "each method's defaults",
        **{f"options: {m}": demo.describe_options(m, args.quick) for m in methods},
    }
    page = write_report(
        out,
        "mnistxai: why the CNN decides as it does",
        f"Explanations of {args.checkpoint} on {DATASET_TITLES[classifier.dataset]} test images.",
        sections,
        settings,
    )
    print(f"wrote {page} in {time.perf_counter() - start:.0f} s")


def resolve_checkpoint_dir_or_none(path):
    try:
        return resolve_checkpoint_dir(path)
    except CheckpointError:
        return None


def load_generative(vae_dir: str | None, generator_dir: str | None):
    """``((vae, run dir), (generator, run dir), note)``: each model with the folder of its run, or
    ``(None, None)`` when a default run is absent (the note says how to train it). A path the user
    gave that holds no such run is an error."""
    found, absent = [], []
    for name, given, load in (
        ("vae", vae_dir, load_vae),
        ("generator", generator_dir, load_generator),
    ):
        folder = given or f"runs/{name}"
        try:
            found.append((load(folder), resolve_checkpoint_dir(folder).parents[1]))
        except CheckpointError as e:
            if given:
                raise CheckpointError(f"--{name} {given}: {e}") from None
            found.append((None, None))
            init = f" --init-from {vae_dir or 'runs/vae'}" if name == "generator" else ""
            absent.append(
                f"No {name} at {folder}: train one with python train_mnist.py --model {name}{init}."
            )
    return found[0], found[1], " ".join(absent)


SHORTCUT_DIGITS = {False: 2000, True: 500}  # plain test digits measured: {--quick: digits}
SHORTCUT_TRAIN = (
    "python train_mnist.py --dataset mnist_shortcut --augment-shift 0 --workdir runs/shortcut, "
    "and with --rrr-weight 10 --workdir runs/shortcut_rrr"
)


def load_shortcut_models(given: str | None, given_rrr: str | None) -> dict:
    """``{"shortcut": classifier, "+ RRR": classifier}``, each one present: a default folder
    that holds no checkpoint is skipped; a path the user gave that holds none is an error, as is
    a classifier trained on another dataset."""
    models = {}
    for name, flag, folder in (
        ("shortcut", "--shortcut", given),
        ("+ RRR", "--shortcut-rrr", given_rrr),
    ):
        path = folder or ("runs/shortcut" if name == "shortcut" else "runs/shortcut_rrr")
        try:
            classifier = load_classifier(path)
        except CheckpointError as e:
            if folder:
                raise CheckpointError(f"{flag} {folder}: {e}") from None
            continue
        if classifier.dataset != "mnist_shortcut":
            if folder:
                raise InputError(
                    f"{flag} {folder} was trained on {classifier.dataset}, not mnist_shortcut"
                )
            continue
        models[name] = classifier
    return models


def shortcut_section(models: dict, out: Path, args):
    """Planted-shortcut MNIST: does the CNN follow the marker, do the maps show it, and does
    right for the right reasons remove it (``mnistxai.report.shortcut``)."""
    from mnistxai.report import shortcut as sc

    if not models:
        return Section(
            "Planted shortcut",
            f"No CNN trained on mnist_shortcut was found: train one with {SHORTCUT_TRAIN}.",
        )
    images, labels = data.load("mnist", "test", args.data_dir)
    n = SHORTCUT_DIGITS[args.quick]
    results = sc.compare(models, images[:n], labels[:n], explain_images=128)
    viz.save_figure(sc.plot_shortcut_removal(results), out / "shortcut.png")
    missing = (
        ""
        if len(models) == 2
        else f" Only {', '.join(models)} was found; for the comparison train: {SHORTCUT_TRAIN}."
    )
    return Section(
        "Planted shortcut",
        "mnist_shortcut plants a 3x3 marker coding the class on every training digit "
        "(mnistxai.shortcut). A CNN trained on it follows the marker: see its accuracy when the "
        "marker is removed (unmarked) or names another class (swapped). The localisation "
        "metrics score each method's maps of marked digits against the marker's mask; right "
        f"for the right reasons (Ross et al. 2017) penalises input gradients there.{missing}",
        [
            Figure(
                "shortcut.png",
                f"{n} plain test digits, marked, unmarked and swapped; maps of the first 128 "
                "marked ones (marker outlined in green).",
            )
        ],
        tables=[sc.table(results)],
    )


def am_section(classifier, generator, vae, out: Path, key, args, absent: str):
    """Activation maximization of the ten class logits in pixel space, and through the generator
    (DGN-AM) and the VAE decoder when present; the best of several starts per class is shown."""
    starts = AM_STARTS[args.quick]
    ways = {"pixels": {}}
    if generator is not None:
        ways["DGN-AM (generator)"] = dict(parameterization="generator", decoder=generator)
    if vae is not None:
        ways["VAE decoder"] = dict(parameterization="vae", decoder=vae)
    rows, preds, probs, notes = {}, {}, {}, []
    for name, kwargs in tqdm(ways.items(), desc="activation maximization"):
        r = am.maximize(classifier, "logit", key=key, starts=starts, steps=args.am_steps, **kwargs)
        best = np.asarray(r.final).argmax(1)
        rows[name] = np.asarray(r.images)[np.arange(10), best, ..., 0]
        p = demo.probabilities(classifier, rows[name][..., None])
        preds[name], probs[name] = p.argmax(-1), p.max(-1)
        notes.append(
            f"{name}: {100 * am.success_rate(r):.0f}% of {10 * starts} images classified as their "
            f"target, mean logit {float(r.initial.mean()):.1f} -> {float(r.final.mean()):.1f}"
        )
    viz.save_figure(
        viz.plot_am_gallery(
            rows,
            preds,
            probs,
            "What maximizes each class logit",
            class_names=data.CLASS_NAMES[classifier.dataset],
        ),
        out / "activation_maximization.png",
    )
    text = (
        f"Gradient ascent on each class logit, {args.am_steps} Adam steps, {starts} random "
        f"starts per class, "
        "ten classes at once; each column shows the start that reached the highest logit. Pixel "
        "AM uses "
        "L2 decay, jitter, blur and clipping (Simonyan et al. 2014; Yosinski et al. 2015); DGN-AM "
        "optimizes the generator's code instead, with a prior penalty and clipping (Nguyen et "
        "al. 2016), "
        "so its images stay digit-like. " + "; ".join(notes) + ". " + absent
    )
    return Section(
        "Activation maximization",
        text.strip(),
        [
            Figure(
                "activation_maximization.png",
                "Column: the class maximized; title: the CNN's class "
                "and probability for the image (red: not the target).",
            )
        ],
    )


def walk_section(classifier, vae, x_all, labels, preds, class_pairs, out: Path, args, absent: str):
    """Spherical VAE walks from a correct digit of each most-confused true class to one of the class
    it
    is mistaken for, with the CNN's decision flip found by bisection."""
    if vae is None or not class_pairs:
        return Section(
            "Latent walks", absent or "No misclassified test digits: nothing to walk between."
        )
    idx0, idx1 = lw.pairs_of_classes(labels, preds, class_pairs, per_pair=1)
    steps = 7 if args.quick else 11
    w = lw.walk(vae, classifier, x_all[idx0], x_all[idx1], steps=steps, kind="spherical")
    t_flip = np.where(np.asarray(w.flipped), np.asarray(w.t_lo + w.t_hi) / 2, np.nan)
    fig = viz.plot_latent_walks(
        np.asarray(w.images)[..., 0],
        np.asarray(w.cnn_probs),
        np.asarray(w.ts),
        t_flip,
        np.asarray(w.contrast)[..., 0],
        labels[idx0],
        labels[idx1],
        [f"{labels[a]} (#{a}) -> {labels[b]} (#{b})" for a, b in zip(idx0, idx1)],
        "Walking the VAE latent space between confused classes",
    )
    viz.save_figure(fig, out / "latent_walks.png")
    flips = ", ".join(
        f"{labels[a]}->{labels[b]} " + (f"at t={t:.3f}" if np.isfinite(t) else "nowhere")
        for a, b, t in zip(idx0, idx1, t_flip)
    )
    return Section(
        "Latent walks",
        f"For each of the CNN's most-confused pairs (true class -> predicted), a "
        f"correctly classified test digit of each is encoded by the VAE and the code walked "
        f"spherically from one to the other in {steps} steps. The CNN's decision flips: {flips} "
        "(bisection to 1e-3). 'after - before' is decode(t*+0.1) - decode(t*-0.1): red ink "
        "appears, "
        "blue ink vanishes, across the flip.",
        [
            Figure(
                "latent_walks.png",
                "Titles: the CNN's class (probability), red once it has flipped; "
                "right: the two classes' probabilities along the walk.",
            )
        ],
    )


def leaderboard_section(board: Path, out: Path):
    """The evaluation's table and figures (copied next to the page, so the folder stands alone)."""
    figures = []
    for name, caption in (
        ("curves.png", "Deletion and insertion curves per method."),
        ("randomization.png", "Model-parameter randomization cascade (Adebayo et al. 2018)."),
        ("bars.png", "Each metric per method, with the random and Sobel baselines."),
    ):
        if (board / name).is_file():
            shutil.copyfile(board / name, out / f"leaderboard_{name}")
            figures.append(Figure(f"leaderboard_{name}", caption))
    return Section(
        "Method leaderboard",
        f"From {board} (python -m mnistxai.evaluate).",
        figures,
        html_extra=markdown_to_html((board / "leaderboard.md").read_text()),
    )


if __name__ == "__main__":
    run_main(main)
