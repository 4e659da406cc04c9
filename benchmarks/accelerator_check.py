"""The accelerator check: what one GPU (or TPU) does with mnistxai, in about 5 minutes.

    python benchmarks/accelerator_check.py [--data-dir DIR] [--out /tmp/accel]

Prints the backend and devices, the throughput table of ``benchmarks/xai_throughput.py``, the
seconds of one default CNN training epoch (60,000 images, batch 128, split over every local
device), and the seconds of saliency and IG-50 over all 10,000 test images as an explain run
(``python -m mnistxai.explain`` at its defaults, so the memory of the defaults is what is
checked). Runs on a CPU too (slowly); its figures go into the README with the device named.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=os.environ.get("MNISTXAI_DATA_DIR"))
    ap.add_argument("--out", default="/tmp/mnistxai-accelerator-check")
    ap.add_argument("--skip-throughput", action="store_true")
    args = ap.parse_args()
    import jax

    from mnistxai import parallel

    print(f"JAX {jax.__version__}: {json.dumps(parallel.describe())}; {jax.local_devices()}")
    out = Path(args.out)
    data = ["--data-dir", args.data_dir] if args.data_dir else []
    if not args.skip_throughput:
        subprocess.run([sys.executable, str(HERE / "xai_throughput.py")], check=True)
    t0 = time.perf_counter()
    train = [sys.executable, str(HERE.parent / "train_mnist.py"), "--epochs", "1"]
    subprocess.run([*train, "--workdir", str(out / "cnn"), *data], check=True)
    print(f"one training epoch (with start-up and evaluation): {time.perf_counter() - t0:.1f} s")
    for method in ("saliency", "integrated_gradients"):
        run = out / f"explain-{method}"
        explain = [sys.executable, "-m", "mnistxai.explain", "--checkpoint", str(out / "cnn")]
        t0 = time.perf_counter()
        subprocess.run(
            [*explain, "--methods", method, "--out", str(run), "--no-progress", *data], check=True
        )
        timing = json.loads((run / f"{method}.json").read_text())
        print(
            f"{method} over {timing['images']:,} test images: {time.perf_counter() - t0:.1f} s "
            f"wall, {timing['images_per_s']} images/s steady, peak RSS {timing['peak_rss_mb']} MB"
        )


if __name__ == "__main__":
    main()
