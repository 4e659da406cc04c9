#!/usr/bin/env python3
"""Speed of every leaderboard metric against the rate of what it calls.

    python benchmarks/metric_speed.py --checkpoint runs/cnn [--maps 128] [--metrics all]

Scores ``--maps`` saliency maps of the first test digits with each registered metric exactly as
the leaderboard calls it (``evaluate_method``'s ``Batch``; the re-explaining metrics on their
first ``--robust-maps``), and prints per metric:

- model evaluations per image: the images run through the classifier outside an explanation
  (``Batch.probabilities``/``logits`` and the classifier's ``logits``/``features``), counted by
  a callback in a separate, untimed run (padding of a partly filled pass included: it is
  computed), and for the re-explaining metrics the explanations per image, counted the same way;
- seconds per ``--maps`` maps: the best of ``--repeats`` warm runs (compiled once before);
- the achieved fraction: the time its calls would take at their reference rates over the time
  it took, the median over the ``--repeats`` runs, each against references measured right
  after it. The references are the classifier's flat-batch forward rate (``jit(probabilities)``
  on batches of ``chunk_size``, with the compiler options of every entry point:
  ``mnistxai.util.jit``) and saliency's own rate on ``--robust-maps`` images, each the best of
  ``--repeats`` runs. A metric that only evaluates the model gets evaluations per second over
  the forward rate; one that only re-explains, explanations per second over saliency's; one
  that does both (relative stability also runs the model on its perturbed inputs) the sum of
  the two expected times.

Metrics that call no model print their time only. The issue's target: >= 0.85 for every metric.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

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


@struct.dataclass
class CountedClassifier(Classifier):
    """A ``Classifier`` whose forward passes (``logits``, and so ``probabilities``, and
    ``features``) add their rows to ``counter``."""

    counter: "Counter" = struct.field(pytree_node=False, default=None)

    def logits(self, x):
        jax.debug.callback(self.counter.add, jnp.int32(x.shape[0]))
        return super().logits(x)

    def features(self, x, layer: str = "block3"):
        jax.debug.callback(self.counter.add, jnp.int32(x.shape[0]))
        return super().features(x, layer)

    def plain(self) -> Classifier:
        return Classifier(self.variables, self.model, self.dataset)


def uncounted(model):
    """An explanation's own forward passes are counted as the explanation, not as evaluations."""
    return model.plain() if isinstance(model, CountedClassifier) else model


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


def seconds_of(run) -> float:
    t0 = time.perf_counter()
    jax.block_until_ready(run())
    return time.perf_counter() - t0


def prepare(metric, classifier, explain_fn, arrays: dict, robust_maps: int, args):
    """(model evaluations per image, explanations per image, a compiled run of the metric on
    its images, the number of images) of one metric, called as the leaderboard calls it."""
    n = robust_maps if metric.reexplains else args.maps
    options = metric.parse({})
    state = metric.setup(classifier, jax.random.key(1)) if metric.setup is not None else None

    def batch_for(probabilities, logits, explain, model):
        return Batch(
            arrays["x"][:n],
            arrays["maps"][:n],
            arrays["targets"][:n],
            streams.fold(arrays["keys"][:n], metric.name),
            probabilities,
            logits,
            args.chunk_size,
            explain_fn=explain if metric.reexplains else None,
            classifier=model,
            state=state,
            masks=arrays["masks"][:n] if metric.needs_masks else None,
        )

    def run(batch):
        if metric.shared is not None:
            batch = dataclasses.replace(batch, shared=metric.shared(batch, **options))
        return metric.fn(batch, **options)

    evals, explanations = Counter(), Counter()
    count_explanations = explanations.wrap(explain_fn, rows=lambda model, xs, *_: xs.shape[0])
    counted = batch_for(
        evals.wrap(classifier.probabilities),
        evals.wrap(classifier.logits),
        lambda model, *rest: count_explanations(uncounted(model), *rest),
        CountedClassifier(classifier.variables, classifier.model, classifier.dataset, evals),
    )
    jax.block_until_ready(run(counted))
    timed = batch_for(classifier.probabilities, classifier.logits, explain_fn, classifier)
    jax.block_until_ready(run(timed))  # compile
    return evals.rows / n, explanations.rows / n, lambda: run(timed), n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--checkpoint", default="runs/cnn", help="default runs/cnn; random weights if absent"
    )
    ap.add_argument("--data-dir")
    ap.add_argument("--maps", type=int, default=128)
    ap.add_argument("--robust-maps", type=int, default=32)
    ap.add_argument("--metrics", default="all", help="comma-separated names or 'all'")
    ap.add_argument("--repeats", type=int, default=5)
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
    r = args.robust_maps
    explain_fn = method_explain_fn("saliency", {}, classifier, r)
    explain_jit = jit(explain_fn)

    def reference_rates():
        forward_rate = args.chunk_size / best_of(lambda: forward(chunk), args.repeats)
        saliency_rate = r / best_of(
            lambda: explain_jit(classifier, x[:r], targets[:r], keys[:r]), args.repeats
        )
        return forward_rate, saliency_rate

    data_ = dict(x=x, maps=maps, targets=targets, keys=keys, masks=masks)
    forward_rate, saliency_rate = reference_rates()
    print(
        f"classifier: {source}; {jax.devices()[0].platform}; forward {forward_rate:,.0f} img/s "
        f"(batches of {args.chunk_size}); saliency {saliency_rate:,.0f} img/s (batches of {r}); "
        f"both measured again beside each of the {args.repeats} timed runs of every metric"
    )
    print(
        f"| metric | model evals / image | explanations / image | s per {args.maps} maps "
        "| calls/s | fraction of its rate |"
    )
    print("|---|---|---|---|---|---|")
    for name in selected:
        per_image, explained, run, n = prepare(
            METRICS[name], classifier, explain_fn, data_, r, args
        )
        times, fractions = [], []
        for _ in range(args.repeats):
            # the machine's speed drifts between minutes: each run is set against references
            # measured right after it, and the median of those ratios is reported
            seconds = seconds_of(run) * args.maps / n
            forward_rate, saliency_rate = reference_rates()
            expected = args.maps * (per_image / forward_rate + explained / saliency_rate)
            times.append(seconds)
            fractions.append(expected / seconds)
        seconds = min(times)
        calls = [name for name, n in (("forward", per_image), ("saliency", explained)) if n]
        rate = (per_image + explained) * args.maps / seconds
        if calls:
            fraction = f"{float(np.median(fractions)):.2f} of {' + '.join(calls)}"
        else:
            rate, fraction = float("nan"), "no model calls"
        print(
            f"| {name} | {per_image:,.1f} | {explained:,.1f} | {seconds:.3f} "
            f"| {rate:,.0f} | {fraction} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
