"""Images/s and achieved GFLOP/s of each XAI method on the seed CNN, for MNIST test images.

    python benchmarks/xai_throughput.py [--checkpoint WORKDIR] [--methods a,b] [--all-classes]

Every method runs with its registered defaults (IG 50 steps, SmoothGrad and expected gradients 50
samples with 100 test images as background, occlusion 4x4 window stride 2, RISE 1000 masks), on
1024, 64 or 16 images per call by its cost class (``Method.cost``). Random weights
unless --checkpoint is given (throughput hardly depends on the weights, except occlusion's skip of
windows on black pixels, which depends only on the images).

FLOPs are analytic: (model passes per image, ``Method.passes``) x (XLA cost_analysis of one forward,
or of one
forward + input-gradient backward, compiled for a batch of 256 and divided by 256). XLA's own
count of a whole method is not used because it counts a loop body once, not once per trip.

``--all-classes`` also times ``targets="all"`` (maps of all ten classes from one call) on the same
images and prints its images/s and its ratio to the single-class rate.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from mnistxai import data
from mnistxai.training.checkpoint import load_classifier
from mnistxai.models.classifier import Classifier
from mnistxai.models.cnn import CNN, init_cnn
from mnistxai import xai
from mnistxai.util.jit import jit

# images per timed call, by the method's cost class (Method.cost)
BATCH = {"cheap": 1024, "costly": 64, "heavy": 16}


def test_images(n: int) -> np.ndarray:
    return data.load("mnist", "test")[0][
        :n
    ]  # $MNISTXAI_DATA_DIR or --data-dir sources, as everywhere


def classifier(checkpoint):
    return (
        load_classifier(checkpoint)
        if checkpoint
        else Classifier(init_cnn(CNN(), jax.random.key(0)))
    )


def pass_flops(clf) -> tuple[float, float]:
    """FLOPs of one image's forward pass and of its forward + input-gradient backward pass."""
    x = jnp.zeros((256, 28, 28, 1))
    fwd = jax.jit(clf.logits).lower(x).compile().cost_analysis()["flops"]
    grad = jax.jit(lambda x: xai.saliency(clf.logits, x).attributions).lower(x).compile()
    return fwd / 256, grad.cost_analysis()["flops"] / 256


def matmul_gflops(n: int = 2048) -> float:
    """GFLOP/s of a float32 n x n matrix product: the machine's practical compute peak."""
    a = jnp.ones((n, n), jnp.float32)
    product = jit(lambda a: a @ a)
    product(a).block_until_ready()
    return 2 * n**3 / min(_timed(lambda: product(a).block_until_ready()) for _ in range(5)) / 1e9


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=None, help="workdir of a trained classifier")
    ap.add_argument("--methods", default=",".join(xai.METHODS), help="comma-separated method names")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per method (best kept)")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply the batch sizes")
    ap.add_argument("--batch", type=int, default=None, help="images per call for every method")
    ap.add_argument(
        "--all-classes", action="store_true", help="also time targets='all' (ten maps per image)"
    )
    args = ap.parse_args()

    clf = classifier(args.checkpoint)
    images = test_images(1124)
    background = images[1024:1124]
    fwd, grad = pass_flops(clf)
    print(
        f"{jax.devices()[0].device_kind}; forward {fwd / 1e6:.1f} MFLOP/image, "
        f"forward+backward {grad / 1e6:.1f} MFLOP/image; float32 2048x2048 matmul "
        f"{matmul_gflops():.0f} GFLOP/s (the practical peak)"
    )
    extra = f" {'all-classes img/s':>18s} {'ratio':>6s}" if args.all_classes else ""
    print(f"{'method':22s} {'batch':>6s} {'images/s':>10s} {'GFLOP/s':>8s}{extra}")
    for name in args.methods.split(","):
        spec = xai.METHODS[name]
        options = {"background": background} if spec.background else {}
        parsed = spec.parse(options, 1, clf)
        batch = args.batch or max(1, int(BATCH[spec.cost(parsed)] * args.scale))
        x = images[:batch]

        def call(name=name, x=x, options=options, targets=None):
            r = xai.explain(name, clf, x, targets, key=jax.random.key(0), **options)
            return jax.block_until_ready(r)

        result = call()  # compile
        best = min(_timed(call) for _ in range(args.repeats))
        n_grad, n_fwd = spec.passes(parsed)
        if "evaluated" in result.extras:  # occlusion: the windows actually run, plus the image
            n_fwd = float(np.mean(result.extras["evaluated"])) + 1
        flops = n_grad * grad + n_fwd * fwd
        line = f"{name:22s} {batch:6d} {batch / best:10.1f} {flops * batch / best / 1e9:8.1f}"
        if args.all_classes:
            every = lambda: call(targets="all")  # noqa: E731
            every()  # compile
            best_all = min(_timed(every) for _ in range(args.repeats))
            line += f" {batch / best_all:18.1f} {best / best_all:6.2f}"
        print(line)


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
