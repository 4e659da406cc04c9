#!/usr/bin/env python3
"""Speed of every leaderboard metric against the rate of what it calls.

    python benchmarks/metric_speed.py --checkpoint runs/cnn [--maps 128] [--metrics all]

Scores ``--maps`` saliency maps of the first test digits with each registered metric exactly as
the leaderboard calls it (``evaluate_method``'s ``Batch``; the re-explaining metrics on their
first ``--robust-maps``), and prints per metric:

- model evaluations per image: the images run through the classifier, counted by a callback in
  a separate, untimed run (padding of a partly filled pass included: it is computed), and for
  the re-explaining metrics the explanations per image, counted the same way;
- seconds per ``--maps`` maps: the best of ``--repeats`` warm runs (compiled once before);
- the achieved fraction: evaluations per second over the classifier's flat-batch forward rate
  (``jit(probabilities)`` on batches of ``chunk_size``, with the compiler options of every
  entry point: ``mnistxai.util.jit``), or for a re-explaining metric
  explanations per second over saliency's own rate on the same batch size.

Metrics that call no model print their time only. The issue's target: >= 0.85 for every metric.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import jax
import jax.numpy as jnp

from mnistxai import data
from mnistxai.models.classifier import Classifier
from mnistxai.models.cnn import CNN, init_cnn
from mnistxai.pipelines.evaluate import EvalConfig, image_keys, method_explain_fn, parse_metrics
from mnistxai.training.checkpoint import CheckpointError, load_classifier
from mnistxai.util import streams
from mnistxai.util.jit import jit
from mnistxai.xai import explain
from mnistxai.xai.metrics import METRICS
from mnistxai.xai.metrics.registry import Batch


class Counter:
    """Rows passed to a wrapped function, counted on the host as the compiled program runs."""

    def __init__(self):
        self.rows = 0

    def add(self, n):
        self.rows += int(n)

    def wrap(self, fn, rows=lambda *a: a[0].shape[0]):
        def counted(*args):
            jax.debug.callback(self.add, jnp.int32(rows(*args)))
            return fn(*args)

        return counted


def best_of(run, repeats: int) -> float:
    jax.block_until_ready(run())  # compile
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(run())
        times.append(time.perf_counter() - t0)
    return min(times)


def measure(metric, classifier, explain_fn, arrays: dict, robust_maps: int, args):
    """(model evaluations per image, explanations per image, warm seconds per ``args.maps``
    maps) of one metric, called as the leaderboard calls it."""
    n = robust_maps if metric.reexplains else args.maps
    options = metric.parse({})
    state = metric.setup(classifier, jax.random.key(1)) if metric.setup is not None else None

    def batch_for(probabilities, logits, explain):
        return Batch(
            arrays["x"][:n],
            arrays["maps"][:n],
            arrays["targets"][:n],
            streams.fold(arrays["keys"][:n], metric.name),
            probabilities,
            logits,
            args.chunk_size,
            explain_fn=explain if metric.reexplains else None,
            classifier=classifier,
            state=state,
            masks=arrays["masks"][:n] if metric.needs_masks else None,
        )

    def run(batch):
        if metric.shared is not None:
            batch = dataclasses.replace(batch, shared=metric.shared(batch, **options))
        return metric.fn(batch, **options)

    evals, explanations = Counter(), Counter()
    counted = batch_for(
        evals.wrap(classifier.probabilities),
        evals.wrap(classifier.logits),
        explanations.wrap(explain_fn, rows=lambda model, xs, *_: xs.shape[0]),
    )
    jax.block_until_ready(run(counted))
    timed = batch_for(classifier.probabilities, classifier.logits, explain_fn)
    seconds = best_of(lambda: run(timed), args.repeats) * args.maps / n
    return evals.rows / n, explanations.rows / n, seconds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--checkpoint", default="runs/cnn", help="default runs/cnn; random weights if absent"
    )
    ap.add_argument("--data-dir")
    ap.add_argument("--maps", type=int, default=128)
    ap.add_argument("--robust-maps", type=int, default=32)
    ap.add_argument("--metrics", default="all", help="comma-separated names or 'all'")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--chunk-size", type=int, default=EvalConfig().chunk_size)
    args = ap.parse_args()
    try:
        classifier = load_classifier(args.checkpoint)
        source = args.checkpoint
    except CheckpointError:
        classifier = Classifier(init_cnn(CNN(), jax.random.key(0)))
        source = "random weights (no checkpoint at --checkpoint)"
    selected = EvalConfig(metrics=parse_metrics(args.metrics)).selected(masks=True)
    images, labels = data.load("mnist", "test", args.data_dir)
    x = jnp.asarray(data.to_model_input(images[: args.maps]))
    maps_result = explain("saliency", classifier, images[: args.maps])
    maps, targets = maps_result.attributions, maps_result.targets
    from mnistxai.shortcut import evaluation_sets, find_markers

    marked = evaluation_sets(images[: args.maps], labels[: args.maps])["marked"]
    masks = jnp.asarray(find_markers(marked.images) > 0)
    keys = image_keys(0, 0, args.maps)

    forward = jit(classifier.probabilities)
    chunk = jnp.asarray(data.to_model_input(images[: args.chunk_size]))
    forward_rate = args.chunk_size / best_of(lambda: forward(chunk), args.repeats)
    r = args.robust_maps
    explain_fn = method_explain_fn("saliency", {}, classifier, r)
    explain_jit = jit(explain_fn)
    saliency_rate = r / best_of(
        lambda: explain_jit(classifier, x[:r], targets[:r], keys[:r]), args.repeats
    )
    print(
        f"classifier: {source}; {jax.devices()[0].platform}; forward {forward_rate:,.0f} img/s "
        f"(batches of {args.chunk_size}); saliency {saliency_rate:,.0f} img/s (batches of {r})"
    )
    print(
        f"| metric | model evals / image | explanations / image | s per {args.maps} maps "
        "| evals/s | fraction of its rate |"
    )
    print("|---|---|---|---|---|---|")
    data_ = dict(x=x, maps=maps, targets=targets, keys=keys, masks=masks)
    for name in selected:
        per_image, explained, seconds = measure(
            METRICS[name], classifier, explain_fn, data_, r, args
        )
        if METRICS[name].reexplains and explained:
            rate = explained * args.maps / seconds
            fraction = f"{rate / saliency_rate:.2f} of saliency"
        elif per_image:
            rate = per_image * args.maps / seconds
            fraction = f"{rate / forward_rate:.2f} of forward"
        else:
            rate, fraction = float("nan"), "no model calls"
        print(
            f"| {name} | {per_image:,.1f} | {explained:,.1f} | {seconds:.3f} "
            f"| {rate:,.0f} | {fraction} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
