"""The accelerator check: what one GPU (or TPU) does with mnistxai, in about 5 minutes.

    python benchmarks/accelerator_check.py [--data-dir DIR] [--out EMPTY_DIR] [--limit N]

Prints the backend and devices, the throughput table of ``benchmarks/xai_throughput.py``, the
seconds of one default CNN training epoch (60,000 images, batch 128, split over every local
device), and the seconds of saliency and IG-50 over all 10,000 test images as an explain run
(``python -m mnistxai.explain`` at its defaults, so the memory of the defaults is what is
checked: the peak device memory is printed where the backend counts it). ``--limit N`` trains
and explains on the first N images only (a quick run on a CPU: the figures are then not the
check's). The work goes into ``--out`` (default: a fresh temporary folder).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=os.environ.get("MNISTXAI_DATA_DIR"))
    ap.add_argument("--out", default=None, help="an empty or new folder (default: a temporary one)")
    ap.add_argument("--limit", type=int, default=None, help="train and explain N images only")
    ap.add_argument("--skip-throughput", action="store_true")
    args = ap.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="mnistxai-accelerator-check-"))
    if out.exists() and any(out.iterdir()):
        sys.exit(f"error: --out {out} is not empty (the check trains a model into it)")
    import jax

    from mnistxai import parallel

    print(f"JAX {jax.__version__}: {json.dumps(parallel.describe())}; {jax.local_devices()}")
    print(f"work folder: {out}", flush=True)
    data = ["--data-dir", args.data_dir] if args.data_dir else []
    limit = [] if args.limit is None else ["--limit", str(args.limit)]
    if not args.skip_throughput:
        subprocess.run([sys.executable, str(HERE / "xai_throughput.py")], check=True)
    t0 = time.perf_counter()
    train = [sys.executable, str(HERE.parent / "train_mnist.py"), "--epochs", "1"]
    if args.limit is not None:
        train += ["--limit-train", str(args.limit), "--limit-test", str(args.limit)]
    subprocess.run([*train, "--workdir", str(out / "cnn"), *data], check=True)
    print(f"one training epoch (with start-up and evaluation): {time.perf_counter() - t0:.1f} s")
    for method in ("saliency", "integrated_gradients"):
        run = out / f"explain-{method}"
        explain = [sys.executable, "-m", "mnistxai.explain", "--checkpoint", str(out / "cnn")]
        explain += ["--methods", method, "--out", str(run), "--no-progress", *limit, *data]
        t0 = time.perf_counter()
        subprocess.run(explain, check=True)
        timing = json.loads((run / f"{method}.json").read_text())
        device_mb = timing.get("peak_device_mb")
        print(
            f"{method} over {timing['images']:,} test images: {time.perf_counter() - t0:.1f} s "
            f"wall, {timing['images_per_s']} images/s steady, peak RSS {timing['peak_rss_mb']} MB"
            + ("" if device_mb is None else f", peak device memory {device_mb} MB")
        )


if __name__ == "__main__":
    main()
