"""Time of the full leaderboard (every method + the baselines, every metric), extrapolated to
1,000 test images.

    python benchmarks/leaderboard_speed.py --checkpoint runs/cnn [--small 32] \\
        [--large 96] [--target-images 1000] [--methods all]

Explains the first ``--large`` test images with every method (``mnistxai.pipelines.explain``), then
runs
``mnistxai.pipelines.evaluate`` twice: on ``--small`` images (cold: compiling included) and on
``--large``
images (warm; same batch shapes). Per method, the warm run gives the per-image cost of the metrics
that score every image (its time less the re-explaining metrics', which always use the same first
32 images); the estimate for ``--target-images`` is t(small, cold) + (target - small) x that
per-image cost, plus the explanation time at the measured rate and its compilation. The issue's
target: 15 minutes for 1,000 images.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from mnistxai.training.checkpoint import load_classifier
from mnistxai.pipelines.evaluate import EvalConfig, evaluate_run
from mnistxai.pipelines.explain import ExplainConfig, explain_run, peak_rss_mb
from mnistxai.xai import parse_methods


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="runs/cnn")
    ap.add_argument("--methods", default=None, help="default: the default set")
    ap.add_argument("--small", type=int, default=32)
    ap.add_argument("--large", type=int, default=96)
    ap.add_argument("--target-images", type=int, default=1000)
    args = ap.parse_args()
    # one classifier object for every run: the metrics compile once per score function, which
    # are its bound methods (a classifier loaded again would compile them again)
    classifier = load_classifier(args.checkpoint)
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        t0 = time.perf_counter()
        timings = explain_run(
            ExplainConfig(
                checkpoint=args.checkpoint,
                methods=parse_methods(args.methods),
                limit=args.large,
                batch_size=args.small,
            ),
            run,
            classifier,
            progress=False,
        )
        print(
            f"explained {args.large} images x {len(timings)} methods in "
            f"{time.perf_counter() - t0:.0f} s"
        )
        results = {}
        for label, n in (("cold", args.small), ("large", args.large)):
            config = EvalConfig(limit=n, batch_size=args.small)
            t0 = time.perf_counter()
            results[label] = evaluate_run(
                run, Path(tmp) / f"lb_{label}", config, classifier, progress=False
            )
            print(
                f"evaluated {n} images ({label}) in {time.perf_counter() - t0:.0f} s: "
                + ", ".join(
                    f"{m} {r['evaluate_seconds']:.0f} s"
                    for m, r in results[label]["methods"].items()
                ),
                flush=True,
            )
        print((Path(tmp) / "lb_large" / "leaderboard.md").read_text())
    total = 0.0
    print(
        f"{'method':22s} {'eval s (cold)':>13s} {'s/image':>8s} {'explain s':>9s} "
        f"{f'est. {args.target_images} s':>12s}"
    )

    def estimate(cold: float, large: float, fixed: float = 0.0):
        per_image = max(0.0, large - fixed) / args.large
        return per_image, cold + (args.target_images - args.small) * per_image

    for name, row in results["large"]["methods"].items():
        cold = results["cold"]["methods"][name]["evaluate_seconds"]
        per_image, est = estimate(cold, row["evaluate_seconds"], row["robustness_seconds"])
        t = timings.get(name)
        explain = (
            0.0
            if t is None
            else args.target_images / t["images_per_s"] + (t["compile_seconds"] or 0)
        )
        total += est + explain
        print(f"{name:22s} {cold:13.1f} {per_image:8.3f} {explain:9.1f} {est + explain:12.1f}")
    per_image, shared = estimate(
        results["cold"]["shared_seconds"], results["large"]["shared_seconds"]
    )
    total += shared
    print(
        f"{'shared model calls':22s} {results['cold']['shared_seconds']:13.1f} {per_image:8.3f} "
        f"{'':9s} {shared:12.1f}"
    )
    print(
        f"estimated full leaderboard on {args.target_images} images: {total / 60:.1f} min "
        f"(target 15 min); peak RSS {peak_rss_mb():.0f} MB"
    )
    print(json.dumps({"estimate_minutes": round(total / 60, 2)}))


if __name__ == "__main__":
    main()
