"""Judging generated digits with the project's own CNN: Inception Score and Frechet distance.

* Classifier-based Inception Score (Salimans et al. 2016): ``exp(E_x KL(p(y|x) || p(y)))`` with
  p(y|x) the CNN's softmax. It lies in [1, 10] for ten classes: high when each sample is classified
  confidently and the classes are used evenly. Real MNIST test images score ~9.9.
* Frechet distance (Heusel et al. 2017, "FID" with Inception-v3): between Gaussians fitted to the
  CNN's penultimate ``dense`` features (256-d, post-ReLU) of generated and of real test images,
  ``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))``. Not comparable with Inception-v3 FIDs.

    python -m mnistxai.generative_eval --generator runs/generator --classifier runs/cnn
    python -m mnistxai.generative_eval --vae runs/vae --classifier runs/cnn --samples 10000
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import jax
import numpy as np

from mnistxai.models.classifier import Classifier
from mnistxai.util.errors import InputError


@jax.jit
def _probs_and_features(classifier: Classifier, x):
    a = classifier.features(x, "dense")
    return jax.nn.softmax(classifier.head(a, "dense")), a


def probabilities_and_features(
    classifier: Classifier, images, batch_size: int = 1000
) -> tuple[np.ndarray, np.ndarray]:
    """CNN softmax (N, 10) and penultimate features (N, 256) of float images (N, 28, 28, 1) in [0,
    1]."""
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or images.shape[1:] != (28, 28, 1):
        raise InputError(f"images must have shape (N, 28, 28, 1), got {images.shape}")
    probs, feats = [], []
    for start in range(0, len(images), batch_size):
        p, f = _probs_and_features(classifier, images[start : start + batch_size])
        probs.append(np.asarray(p))
        feats.append(np.asarray(f))
    return np.concatenate(probs), np.concatenate(feats)


def inception_score(probs, splits: int = 10) -> tuple[float, float]:
    """(mean, std over ``splits`` equal parts) of exp(E_x KL(p(y|x) || p(y))) for probs (N, K)."""
    p = np.asarray(probs, np.float64)
    if p.ndim != 2 or len(p) < splits:
        raise InputError(f"probs must be (N, K) with N >= splits={splits}, got {p.shape}")
    scores = []
    for part in np.array_split(p, splits):
        marginal = part.mean(0, keepdims=True)
        kl = np.sum(part * (np.log(part + 1e-12) - np.log(marginal + 1e-12)), axis=1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D), in float64, of features (N, D)."""
    f = np.asarray(features, np.float64)
    return f.mean(0), np.cov(f, rowvar=False)


def _sqrt_psd(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Squared Frechet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2).

    tr((S1 S2)^(1/2)) is computed as the trace of (S1^(1/2) S2 S1^(1/2))^(1/2), a symmetric PSD
    matrix with the same eigenvalues, by eigendecomposition (no scipy).
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise InputError(
            f"mismatched statistics: means {mu1.shape} {mu2.shape}, covariances {sigma1.shape} "
            f"{sigma2.shape}"
        )
    root = _sqrt_psd(sigma1)
    eigenvalues = np.linalg.eigvalsh(root @ sigma2 @ root)
    trace_sqrt = np.sum(np.sqrt(np.clip(eigenvalues, 0, None)))
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt)


def score_images(
    classifier: Classifier,
    images,
    reference: tuple[np.ndarray, np.ndarray] | None = None,
    batch_size: int = 1000,
) -> dict:
    """Inception Score (and its std over 10 splits), and the Frechet distance to ``reference``
    statistics.

    Also reports the class histogram of the CNN's predictions (how evenly the classes are covered).
    """
    probs, feats = probabilities_and_features(classifier, images, batch_size)
    mean, std = inception_score(probs)
    out = {
        "inception_score": mean,
        "inception_score_std": std,
        "n": int(len(probs)),
        "class_counts": np.bincount(probs.argmax(1), minlength=probs.shape[1]).tolist(),
    }
    if reference is not None:
        out["frechet_distance"] = frechet_distance(*feature_statistics(feats), *reference)
    return out


@partial(jax.jit, static_argnums=2)
def _sample(model, key: jax.Array, n: int):
    return model.sample(key, n)


def sample_images(model, key: jax.Array, n: int, batch_size: int = 1000) -> np.ndarray:
    """n images (n, 28, 28, 1) from ``model.sample(key, m)`` (a ``GeneratorModel`` or ``VAEModel``),
    in batches."""
    parts = [
        np.asarray(_sample(model, jax.random.fold_in(key, i), min(batch_size, n - start)))
        for i, start in enumerate(range(0, n, batch_size))
    ]
    return np.concatenate(parts)


def evaluate_sampler(
    model,
    classifier: Classifier,
    real_images,
    n: int = 10_000,
    seed: int = 0,
    batch_size: int = 1000,
) -> dict:
    """Score n samples of ``model`` against ``real_images`` (float (N, 28, 28, 1)), and score the
    real ones.

    Returns ``{"samples": score_images(...), "real_test_images": {"inception_score", ...}}``.
    """
    real_probs, real_feats = probabilities_and_features(classifier, real_images, batch_size)
    fake = sample_images(model, jax.random.key(seed), n, batch_size)
    real_is = inception_score(real_probs)
    return {
        "samples": score_images(classifier, fake, feature_statistics(real_feats), batch_size),
        "real_test_images": {
            "inception_score": real_is[0],
            "inception_score_std": real_is[1],
            "n": int(len(real_probs)),
        },
    }


def main(argv=None):
    from mnistxai import data
    from mnistxai.training import checkpoint
    from mnistxai.util.cli import ArgumentParser
    from mnistxai.util.atomic import write_json_atomic

    p = ArgumentParser(description=__doc__.splitlines()[0])
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--generator", metavar="WORKDIR", help="a generator run (train_mnist.py --model generator)"
    )
    which.add_argument(
        "--vae", metavar="WORKDIR", help="a VAE run (its decoder's samples from N(0, I))"
    )
    p.add_argument(
        "--classifier", default="runs/cnn", help="the CNN work dir that judges (default: runs/cnn)"
    )
    p.add_argument("--samples", type=int, default=10_000, help="samples to score (default: 10000)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    p.add_argument("--data-dir", help="MNIST IDX folder (default: $MNISTXAI_DATA_DIR)")
    args = p.parse_args(argv)
    if args.samples < 10:
        raise InputError(f"--samples must be >= 10, got {args.samples}")
    workdir = Path(args.generator or args.vae)
    model = checkpoint.load_generator(workdir) if args.generator else checkpoint.load_vae(workdir)
    classifier = checkpoint.load_classifier(args.classifier)
    images, _ = data.load(classifier.dataset, "test", args.data_dir)
    result = evaluate_sampler(
        model, classifier, data.to_model_input(images), args.samples, args.seed
    )
    result = {"model": str(workdir), "classifier": args.classifier, "seed": args.seed, **result}
    write_json_atomic(workdir / "evaluation.json", result)
    s, r = result["samples"], result["real_test_images"]
    print(
        f"{args.samples} samples: Inception Score {s['inception_score']:.3f} ± "
        f"{s['inception_score_std']:.3f}, "
        f"Frechet distance {s['frechet_distance']:.3f}; real test images: IS "
        f"{r['inception_score']:.3f}; "
        f"class counts {s['class_counts']}; written to {workdir / 'evaluation.json'}"
    )
    return 0
