"""An explain run on 1 device against the same run with its batches split over N forced host
devices (CPU) or over the real local devices, side by side in one invocation.

    python benchmarks/parallel_speed.py [--devices 2] [--images 1024] [--methods saliency,...]
        [--repeats 2]

Each variant is a fresh process (``XLA_FLAGS=--xla_force_host_platform_device_count=N`` on
CPU), run alternately ``--repeats`` times; prints steady images/s (``<method>.json``, compile
excluded) per method and variant, and the ratio. Random weights; MNIST test images from
$MNISTXAI_DATA_DIR.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import json, sys, jax
from mnistxai import data
from mnistxai.models.classifier import Classifier
from mnistxai.models.cnn import CNN, init_cnn
from mnistxai.pipelines.explain import ExplainConfig, explain_run
a = json.loads(sys.argv[1])
images, labels = data.load("mnist", "test", a["data_dir"])
config = ExplainConfig(checkpoint="random-cnn", methods=tuple(a["methods"]), batch_size=256)
clf = Classifier(init_cnn(CNN(), jax.random.key(0)))
timings = explain_run(config, a["out"], clf, images[: a["images"]], labels[: a["images"]],
                      progress=False)
print(json.dumps({m: t["images_per_s"] for m, t in timings.items()}))
"""


def run(devices: int, args, out: Path) -> dict:
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    payload = {
        "data_dir": os.environ.get("MNISTXAI_DATA_DIR"),
        "methods": args.methods.split(","),
        "images": args.images,
        "out": str(out),
    }
    done = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(payload)], env=env, capture_output=True, text=True
    )
    if done.returncode:
        sys.exit(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=2)
    ap.add_argument("--images", type=int, default=1024)
    ap.add_argument("--methods", default="saliency,integrated_gradients,smoothgrad")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    if args.images <= 256:  # the steady rate leaves out each run's first batch (compiling)
        sys.exit("--images must be above 256 (one batch): the first batch of a run is not timed")
    best: dict = {1: {}, args.devices: {}}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for d in best:
                rates = run(d, args, Path(tmp) / f"{d}-{r}")
                for m, v in rates.items():
                    best[d][m] = max(best[d].get(m, 0.0), v or 0.0)
    print(f"{'method':24s} {'1 device':>10s} {f'{args.devices} devices':>10s} {'ratio':>6s}")
    for m, one in best[1].items():
        many = best[args.devices][m]
        print(f"{m:24s} {one:10.1f} {many:10.1f} {many / one:6.2f}")


if __name__ == "__main__":
    main()
