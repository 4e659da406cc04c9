#!/usr/bin/env python3
"""Measure the synthesis tools on trained models: AM and DGN-AM success rates, latent walks,
counterfactuals.

  python benchmarks/generative_xai.py --classifier runs/cnn --vae runs/vae --generator
  runs/generator

Writes figures and ``generative_xai.json`` into --out (default runs/generative_xai) and prints one
line per
measurement with its wall time.
"""

import json
import time
from pathlib import Path

import jax
import numpy as np

from mnistxai import data
from mnistxai.training import checkpoint
from mnistxai.report import viz
from mnistxai.util.cli import ArgumentParser, run_main
from mnistxai.xai.synthesis import activation_max as am
from mnistxai.xai.synthesis import counterfactual as cf
from mnistxai.xai.synthesis import latent_walk as lw


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = jax.block_until_ready(fn(*args, **kwargs))
    return out, time.perf_counter() - start


def main(argv=None):
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--classifier", default="runs/cnn")
    p.add_argument("--vae", default="runs/vae")
    p.add_argument("--generator", default="runs/generator")
    p.add_argument("--out", default="runs/generative_xai")
    p.add_argument("--starts", type=int, default=4, help="random starts per class (default: 4)")
    p.add_argument("--steps", type=int, default=200, help="AM steps (default: 200)")
    p.add_argument("--data-dir")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    classifier = checkpoint.load_classifier(args.classifier)
    vae, generator = checkpoint.load_vae(args.vae), checkpoint.load_generator(args.generator)
    report = {}
    classes = list(range(10))

    runs = {
        "pixels": {},
        "dgn_am": dict(parameterization="generator", decoder=generator),
        "vae_am": dict(parameterization="vae", decoder=vae),
    }
    for name, kwargs in runs.items():
        r, seconds = timed(
            am.maximize,
            classifier,
            "logit",
            key=jax.random.key(0),
            starts=args.starts,
            steps=args.steps,
            **kwargs,
        )
        rate = am.success_rate(r)
        report[name] = {
            "success_rate": rate,
            "seconds": seconds,
            "starts": args.starts,
            "steps": args.steps,
            "mean_final_logit": float(r.final.mean()),
        }
        print(
            f"AM {name}: {100 * rate:.1f}% of {10 * args.starts} images classified as their "
            f"target; "
            f"mean final logit {float(r.final.mean()):.1f}; {seconds:.1f} s"
        )
        viz.save_figure(
            viz.plot_image_grid(
                np.asarray(r.images)[..., 0].transpose(1, 0, 2, 3),
                col_labels=classes,
                title=f"activation maximization of the class logits ({name})",
            ),
            out / f"am_{name}.png",
        )

    images, labels = data.load("mnist", "test", args.data_dir)
    x = data.to_model_input(images)
    idx0, idx1, pairs = lw.confused_pairs(classifier, x, labels, n_pairs=5, per_pair=2)
    w, seconds = timed(lw.walk, vae, classifier, x[idx0], x[idx1], steps=11, kind="spherical")
    report["latent_walk"] = {
        "pairs": [list(p) for p in pairs],
        "flipped": float(w.flipped.mean()),
        "t_flip": np.asarray((w.t_lo + w.t_hi) / 2).round(4).tolist(),
        "seconds": seconds,
    }
    print(
        f"latent walks over the {len(pairs)} most-confused class pairs "
        f"{[(a, b) for a, b, _ in pairs]}: "
        f"{100 * float(w.flipped.mean()):.0f}% flip; {seconds:.1f} s"
    )
    strip = np.concatenate(
        [
            np.asarray(w.images)[..., 0],
            np.asarray(w.image_lo)[:, None, ..., 0],
            np.asarray(w.image_hi)[:, None, ..., 0],
            0.5 + 0.5 * np.asarray(w.contrast)[:, None, ..., 0],
        ],
        1,
    )
    viz.save_figure(
        viz.plot_image_grid(
            strip,
            [f"{labels[a]}->{labels[b]}" for a, b in zip(idx0, idx1)],
            [f"{t:.1f}" for t in np.asarray(w.ts)] + ["t_lo", "t_hi", "contrast"],
            "spherical VAE walks between confused classes (contrast: grey = 0)",
        ),
        out / "latent_walks.png",
    )

    report["counterfactual"] = {}
    for space, norm in (("pixels", "linf"), ("pixels", "l2"), ("latent", "l2")):
        c, seconds = timed(
            cf.smallest_budget, classifier, x[:20], None, space=space, norm=norm, vae=vae
        )
        budget = np.asarray(c.budget)
        report["counterfactual"][f"{space}_{norm}"] = {
            "flipped": float(c.flipped.mean()),
            "median_budget": float(np.median(budget)),
            "seconds": seconds,
        }
        print(
            f"counterfactual {space} {norm}: {100 * float(c.flipped.mean()):.0f}% of 20 flipped "
            f"to the runner-up "
            f"class; median smallest budget {np.median(budget):.3g}; {seconds:.1f} s"
        )
    (out / "generative_xai.json").write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    run_main(main)
