"""Throughput of ``mnistxai.pipelines.explain`` runs, extrapolated to the 10,000 MNIST test images.

    python benchmarks/explain_speed.py --checkpoint runs/cnn [--images 2048] \\
        [--ig-images 256] [--batch-size 256]

Runs the real resumable pipeline (explain, predictions, float16 parts on disk, merge) into a
temporary folder: saliency, grad_x_input and gradcam on ``--images`` test images, IG (its default
50 steps) on ``--ig-images``. Prints the steady images/s (batches after the first, which
compiles), the wall time, and the time 10,000 images would take at the steady rate plus the
compile time, against the issue's targets (15 s each; IG-50 7 minutes).
"""

from __future__ import annotations

import argparse
import tempfile

from mnistxai.xai import METHODS
from mnistxai.pipelines.explain import ExplainConfig, explain_run, peak_rss_mb

TARGETS = {"saliency": 15.0, "grad_x_input": 15.0, "gradcam": 15.0, "integrated_gradients": 420.0}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="runs/cnn")
    ap.add_argument("--images", type=int, default=2048)
    ap.add_argument("--ig-images", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=256)
    args = ap.parse_args()
    print(
        f"{'method':22s} {'images':>7s} {'wall s':>7s} {'img/s':>8s} {'compile s':>9s} "
        f"{'10k est. s':>10s} {'target s':>8s}"
    )
    for name, target in TARGETS.items():
        # the costly methods (>= 50 model passes per image) on fewer images; all at defaults
        n = args.images if METHODS[name].cost({}) == "cheap" else args.ig_images
        batch = min(args.batch_size, max(1, n // 4))  # several batches: one compiles, the rest time
        config = ExplainConfig(
            checkpoint=args.checkpoint, methods=(name,), limit=n, batch_size=batch
        )
        with tempfile.TemporaryDirectory() as out:
            t = explain_run(config, out, progress=False)[name]
        estimate = 10_000 / t["images_per_s"] + (t["compile_seconds"] or 0.0)
        print(
            f"{name:22s} {n:7d} {t['seconds']:7.1f} {t['images_per_s']:8.1f} "
            f"{t['compile_seconds'] or 0:9.1f} {estimate:10.1f} {target:8.0f}"
            f"  {'OK' if estimate <= target else 'SLOWER'}",
            flush=True,
        )
    print(f"peak RSS {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
