"""Time of the full leaderboard (every method + the baselines, every metric), extrapolated to
1,000 test images.

    PYTHONPATH=. python benchmarks/leaderboard_speed.py --checkpoint runs/cnn [--small 32] \\
        [--large 96] [--target-images 1000] [--methods all]

Explains the first ``--large`` test images with every method (``mnistxai.explain``), then runs
``mnistxai.evaluate`` twice, on ``--small`` and ``--large`` images (same batch shapes, the
robustness metrics on the same 32 images both times). Per method, the difference between the
two evaluation times is the per-image cost, free of compilation; the estimate for
``--target-images`` is t(small) + (target - small) x per-image cost for the evaluation, plus the
explanation time at the measured rate. The issue's target: 15 minutes for 1,000 images.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from mnistxai.evaluate import EvalConfig, evaluate_run
from mnistxai.explain import ExplainConfig, explain_run, peak_rss_mb
from mnistxai.xai import parse_methods


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="runs/cnn")
    ap.add_argument("--methods", default="all")
    ap.add_argument("--small", type=int, default=32)
    ap.add_argument("--large", type=int, default=96)
    ap.add_argument("--target-images", type=int, default=1000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        t0 = time.perf_counter()
        timings = explain_run(ExplainConfig(checkpoint=args.checkpoint, methods=parse_methods(args.methods),
                                            limit=args.large, batch_size=args.small), run, progress=False)
        print(f"explained {args.large} images x {len(timings)} methods in {time.perf_counter() - t0:.0f} s")
        results = {}
        for n in (args.small, args.large):
            config = EvalConfig(limit=n, batch_size=args.small)
            t0 = time.perf_counter()
            results[n] = evaluate_run(run, Path(tmp) / f"lb{n}", config, progress=False)
            print(f"evaluated {n} images in {time.perf_counter() - t0:.0f} s: " + ", ".join(
                f"{m} {r['evaluate_seconds']:.0f} s" for m, r in results[n]["methods"].items()),
                flush=True)
            if n == args.large:
                print((Path(tmp) / f"lb{n}" / "leaderboard.md").read_text())
    total = 0.0
    print(f"{'method':22s} {'eval s (small)':>14s} {'eval s (large)':>14s} {'s/image':>8s} "
          f"{'explain s':>9s} {f'est. {args.target_images} s':>12s}")
    for name, row in results[args.large]["methods"].items():
        ts, tl = results[args.small]["methods"][name]["evaluate_seconds"], row["evaluate_seconds"]
        per_image = max(0.0, (tl - ts) / (args.large - args.small))
        t = timings.get(name)
        explain = 0.0 if t is None else args.target_images / t["images_per_s"] + (t["compile_seconds"] or 0)
        est = ts + (args.target_images - args.small) * per_image + explain
        total += est
        print(f"{name:22s} {ts:14.1f} {tl:14.1f} {per_image:8.3f} {explain:9.1f} {est:12.1f}")
    ss, sl = (results[n]["shared_seconds"] for n in (args.small, args.large))
    shared = ss + (args.target_images - args.small) * max(0.0, (sl - ss) / (args.large - args.small))
    total += shared
    print(f"{'shared model calls':22s} {ss:14.1f} {sl:14.1f} {'':8s} {'':9s} {shared:12.1f}")
    print(f"estimated full leaderboard on {args.target_images} images: {total / 60:.1f} min "
          f"(target 15 min); peak RSS {peak_rss_mb():.0f} MB")
    print(json.dumps({"estimate_minutes": round(total / 60, 2)}))


if __name__ == "__main__":
    main()
