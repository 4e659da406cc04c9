#!/usr/bin/env python3
"""Training speed: jitted train-step throughput, and time to 99% / 99.4% MNIST test accuracy.

  python benchmarks/train_speed.py                       # step throughput only (about a minute)
  python benchmarks/train_speed.py --history runs/cnn/history.json   # time-to-accuracy of a
  finished run
  python benchmarks/train_speed.py --train               # run the default training (minutes), then
  report

Time to accuracy has epoch granularity: the wall time (compilation included) at the end of the first
epoch whose test accuracy reaches the threshold.
"""

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

from mnistxai.models.cnn import CNN
from mnistxai.training.cnn import (
    TrainConfig,
    create_state,
    make_optimizer,
    make_train_step,
    train_and_evaluate,
)


def step_throughput(batch_size: int, steps: int) -> float:
    config = TrainConfig(batch_size=batch_size)
    model = CNN()
    tx = make_optimizer(config, steps_per_epoch=469)
    state = create_state(config, model, tx)
    train_step = make_train_step(model, tx, config)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (batch_size, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, batch_size).astype(np.int32)
    state, m = train_step(state, images, labels)  # compile
    jax.block_until_ready(m)
    start = time.perf_counter()
    for _ in range(steps):
        state, m = train_step(state, images, labels)
    jax.block_until_ready(m)
    return batch_size * steps / (time.perf_counter() - start)


def time_to_accuracy(history: dict) -> None:
    for threshold in (0.99, 0.994):
        hit = next((e for e in history["epochs"] if e["test_accuracy"] >= threshold), None)
        when = f"{hit['wall_seconds']:.0f} s (epoch {hit['epoch']})" if hit else "not reached"
        print(f"time to {100 * threshold:.1f}% test accuracy: {when}")
    last = history["epochs"][-1]
    print(
        f"final: {100 * last['test_accuracy']:.2f}% after {last['wall_seconds']:.0f} s, "
        f"{len(history['epochs'])} epochs"
    )


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-sizes", default="64,128,256")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--history", help="report time-to-accuracy from this history.json")
    p.add_argument(
        "--train", action="store_true", help="run the default training first (needs MNIST)"
    )
    args = p.parse_args()
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"JAX {jax.__version__} on {jax.devices()}"
    )
    for b in map(int, args.batch_sizes.split(",")):
        print(f"train step, batch {b}: {step_throughput(b, args.steps):.0f} images/s")
    if args.train:
        with tempfile.TemporaryDirectory() as workdir:
            time_to_accuracy(train_and_evaluate(TrainConfig(), workdir))
    elif args.history:
        time_to_accuracy(json.loads(Path(args.history).read_text()))


if __name__ == "__main__":
    main()
