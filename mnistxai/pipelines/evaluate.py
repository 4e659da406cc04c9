"""The explanation leaderboard: every metric of ``mnistxai.xai.metrics`` for every method of a run.

    python -m mnistxai.evaluate --run runs/explain [--limit 1000] --out runs/leaderboard
    python -m mnistxai.evaluate --checkpoint runs/cnn --methods saliency,gradcam --out DIR

The second form first runs ``mnistxai.pipelines.explain`` into ``DIR/explanations``. Writes into
``--out``:

    leaderboard.csv / .md   method x metric: mean, standard error, its bootstrap interval, the
                            rank with its interval, images used, time; the cost per image
    evaluation.json         the same plus the mean deletion/insertion curves, randomization
                            cascade and Kendall's W across the metrics
    per_example.npz         every metric's value per image and method (<method>/<metric>)
    curves.png, randomization.png, bars.png, ranks.png, pareto.png

How sure it is (``mnistxai.pipelines.ranking``): every mean gets a 95% percentile-bootstrap
interval over images (``bootstrap_samples`` resamples), and every row a rank per metric column
(1 = best, ties averaged) with its interval from the same resamples, which are **paired**: all
rows of a column are scored on the same resampled images. Each column is bootstrapped on the
images all its rows have (all images; the re-explaining metrics' columns: the robustness subset
common to every row, the smallest of them); a row with more images there (a cheap method's
larger subset) gets its mean's interval from a bootstrap of its own images, the rank from the
common ones. Resamples depend only on the seed and the number of images, so columns on the same
images share them; Kendall's W (tie-corrected) of the columns' rankings of the rows says how far
the metrics agree, with its interval from the resampled ranks.

What each method costs (``mnistxai.xai.cost``): FLOPs per image of its compiled program as XLA
counts them (loop-aware), the same as forward-equivalents (FLOPs / one forward pass), and the
run's seconds per image (steady throughput of ``<method>.json``). Baselines have no cost.

With ``--masks M.npy`` (bool (N, 28, 28) ground-truth regions of the run's images, e.g. a
planted shortcut's markers) the localisation metrics are scored too; a run on ``mnist_shortcut``
needs none: its masks are the markers found in its images (``shortcut.find_markers``). Without
either, they are skipped.
A random-attribution and a Sobel-edge baseline are scored alongside the methods. Every method sees
the same per-image random keys (the same random subsets, noise and tie-breaks), so differences
between methods are not sampling noise of the metric; the model calls of faithfulness correlation
and infidelity, which do not depend on the map, are therefore made once and shared by all rows.
Images are processed ``batch_size`` at a time; the metrics that re-explain (max-sensitivity,
randomization) use the first ``robustness_images`` of them, because they cost (samples or layers)
x one explanation each.
Each batch is split over every local device (``mnistxai.parallel``; padded to a multiple of the
device count, the padding's values dropped), the model replicated. Started as N processes
(``--coordinator HOST:PORT --num-processes N --process-id I``, as ``mnistxai.explain``), process
I scores batches I, I+N, ... of every method into ``OUT/parts/<method>/<first image>.npz`` and
process 0 merges them, in batch order, into the files above (a row's seconds are then the sum of
the processes' work). The leaderboard made on 4 devices, or by 2 processes, equals the one made
on 1 (``tests/test_parallel.py``); ``evaluation.json``'s ``made_with`` names the devices and
processes.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import shutil
import time
from pathlib import Path
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from mnistxai import data, parallel
from mnistxai.pipelines import ranking
from mnistxai.util.cli import ArgumentParser
from mnistxai.pipelines.explain import (
    RUN_FORMAT,
    ExplainConfig,
    explain_run,
    load_images,
    load_method,
    method_options,
    parse_options,
    peak_rss_mb,
)
from mnistxai.util import streams
from mnistxai.util.atomic import save_npz_atomic, write_json_atomic, write_text_atomic
from mnistxai.util.errors import InputError
from mnistxai.training.checkpoint import fingerprint, load_classifier
from mnistxai.util.files import exclusive, writable_dir
from mnistxai.xai import metrics as M, parse_methods, registry
from mnistxai.xai.metrics.registry import Batch, get_metric

# ``EvalConfig.metrics`` naming every registered metric (``--metrics all``)
ALL = ("all",)

# the coverage of the bootstrap intervals
LEVEL = 0.95
# the dataset whose images carry their own ground-truth masks (the planted markers)
SHORTCUT = "mnist_shortcut"

# images of the robustness subset, by the method's cost class (``Method.cost``)
COST_LIMITS = {
    "cheap": "robustness_images",
    "costly": "costly_robustness_images",
    "heavy": "heavy_robustness_images",
}


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Leaderboard settings; defaults sized for 1,000 images x all methods in minutes on 2 CPU
    cores. The metrics' own settings are their registered options (``METRICS[m].options``).

    Attributes:
      limit: images scored (the run's first ``limit``; 1000).
      batch_size: images per metric call (128); chunk_size: model inputs per pass (256).
      robustness_images: images for the re-explaining metrics (max-sensitivity, randomization:
        each costs samples or layers x one explanation) for methods under 50 model passes per
        image (32); costly_robustness_images for those under 500 (16); heavy_robustness_images
        for the rest (8: RISE's 1,000 masks). ``Method.cost`` decides which.
      seed: per-image keys are fold_in(key(seed), image index) (0); each metric folds in its name.
      metrics: the registered metrics to compute (empty: the default set, every metric whose
        ``default_set`` holds; ``("all",)``: every registered metric; either way the
        ``needs_masks`` ones, e.g. the localisation metrics, only when the evaluation is given
        ground-truth masks).
      metric_options: metric -> its options, e.g. {"region_perturbation": {"regions": 12}}.
      baselines: reference maps scored too (random, sobel).
      bootstrap_samples: resamples of the intervals of means and ranks (1000; 0: none).
      cost_images: images of the batch each method's program is compiled for to count its FLOPs
        (``mnistxai.xai.cost.method_cost``; 8; 0: no cost columns).
    """

    limit: int = 1000
    batch_size: int = 128
    chunk_size: int = 256
    robustness_images: int = 32
    costly_robustness_images: int = 16
    heavy_robustness_images: int = 8
    seed: int = 0
    metrics: tuple = ()
    metric_options: dict = dataclasses.field(default_factory=dict)
    baselines: tuple = M.BASELINES
    bootstrap_samples: int = 1000
    cost_images: int = 8

    def validate(self) -> "EvalConfig":
        for f in ("limit", "batch_size", "chunk_size"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InputError(f"{f} must be a positive integer, got {v!r}")
        for f in (*COST_LIMITS.values(), "bootstrap_samples", "cost_images"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise InputError(f"{f} must be an integer >= 0, got {v!r}")
        if self.metrics != ALL:
            for name in self.metrics:
                get_metric(name)
        for name, opts in self.metric_options.items():
            if name not in self.selected(masks=True):
                raise InputError(f"options given for metric {name!r}, which is not computed")
            if not isinstance(opts, dict):
                raise InputError(f"options of metric {name!r} must be a dict, got {opts!r}")
            get_metric(name).parse(opts)
        unknown = [b for b in self.baselines if b not in M.BASELINES]
        if unknown:
            raise InputError(f"unknown baseline(s) {unknown}; choose from {', '.join(M.BASELINES)}")
        return self

    def selected(self, masks: bool = False) -> tuple[str, ...]:
        """The metrics to compute: those named in ``metrics``, else every registered one
        (``ALL``) or the default set (``needs_masks`` ones only with ``masks``)."""
        if self.metrics == ALL:
            return tuple(m for m in M.METRICS if masks or not M.METRICS[m].needs_masks)
        return tuple(self.metrics) or M.default_metrics(masks)

    def options(self, metric: str) -> dict:
        return get_metric(metric).parse(self.metric_options.get(metric, {}))


def robustness_images(config: EvalConfig, name: str, options: Optional[dict] = None) -> int:
    """How many images the re-explaining metrics use for ``name`` (a method or a baseline)."""
    cost = "cheap"
    if name in registry.METHODS:  # the cost model reads checked values (occlusion's window pair)
        spec = registry.get(name)
        cost = spec.cost(registry.parse_options(spec.options, options or {}, name))
    return min(config.robustness_images, getattr(config, COST_LIMITS[cost]))


def image_keys(seed: int, start: int, stop: int) -> jax.Array:
    """Per-image keys for the images start..stop-1: the same whatever the batching."""
    base = jax.random.key(seed)
    return jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.arange(start, stop))


def method_explain_fn(name: str, options: dict, classifier, batch: int):
    """``explain_fn(model, x, targets, keys)`` running method ``name`` inside jit (no checks:
    the options were validated when the run was made). Stochastic methods draw their noise from
    the first example's key, so for them it depends on the batch composition."""
    spec = registry.get(name)
    opts = spec.parse(options, batch, classifier)
    opts = {k: (jnp.asarray(v) if isinstance(v, np.ndarray) else v) for k, v in opts.items()}

    def explain_fn(model, x, targets, keys):
        return spec.call(model, x, targets, keys[0], opts).attributions

    return explain_fn


def score_fns(classifier):
    """(softmax probabilities, logits) of ``classifier`` as the metrics' ``score_fn``s. Bound
    methods compare equal for the same classifier, so a second evaluation reuses the compiled
    metrics (a fresh lambda would compile them again)."""
    return classifier.probabilities, classifier.logits


def _batch(fns, config: EvalConfig, x, maps, targets, keys, metric, **extra) -> Batch:
    return Batch(
        x=x,
        maps=maps,
        targets=targets,
        keys=streams.fold(keys, metric),
        probabilities=fns[0],
        logits=fns[1],
        chunk_size=config.chunk_size,
        **extra,
    )


def on_local_devices(*arrays):
    """``arrays`` (batch axis first, same length B; None passes) padded to a multiple of the
    local device count by repeating the last row and split over the local devices; as they are
    on a one-device process."""
    mesh = parallel.local_data_mesh()
    if mesh is None:
        return arrays
    out = []
    for a in arrays:
        if a is not None:
            a = parallel.pad_batch(jnp.asarray(a), parallel.padded_size(len(a), mesh))
            a = parallel.split_like(a, mesh)
        out.append(a)
    return tuple(out)


def batch_starts(n: int, batch_size: int) -> list[int]:
    """The first image of every metric batch of ``n`` images."""
    return list(range(0, n, batch_size))


def shared_parts(
    config: EvalConfig, images: np.ndarray, targets: np.ndarray, fns, starts=None
) -> dict:
    """{batch start: (targets, {metric: shared part})} for the batches ``starts`` (default: all)
    of ``images``: what the metrics that declare ``shared`` compute once (it does not depend on
    the map) for every method to reuse."""
    out, b = {}, config.batch_size
    metrics = [get_metric(m) for m in config.selected() if get_metric(m).shared is not None]
    for s in batch_starts(len(images), b) if starts is None else starts:
        e = min(len(images), s + b)
        x = jnp.asarray(data.to_model_input(images[s:e]))
        t, keys = jnp.asarray(targets[s:e]), image_keys(config.seed, s, e)
        x, t, keys = on_local_devices(x, t, keys)
        out[s] = (
            targets[s:e],
            {
                m.name: m.shared(
                    _batch(fns, config, x, None, t, keys, m.name), **config.options(m.name)
                )
                for m in metrics
            },
        )
    return out


def evaluate_method(
    name: str,
    maps: Optional[np.ndarray],
    targets: np.ndarray,
    images: np.ndarray,
    explain_fn,
    classifier,
    states: dict,
    config: EvalConfig,
    fns,
    shared: Optional[list] = None,
    robust_n: int = 0,
    masks: Optional[np.ndarray] = None,
    starts=None,
) -> tuple[dict, float]:
    """(per-example values of every selected metric, seconds spent in the re-explaining ones)
    for one method (``maps`` None: a baseline's own maps). ``shared``: ``shared_parts`` of these
    images, used for the batches whose targets match; ``robust_n``: images of the robustness
    subset; ``states``: each metric's ``setup`` result; ``masks``: bool (N, H, W) ground truth of
    the images (None: the ``needs_masks`` metrics are skipped); ``starts``: the batches to score
    (their first images; default all), their values concatenated in that order."""
    n, b = len(images), config.batch_size
    metrics = [
        m
        for m in map(get_metric, config.selected(masks is not None))
        if masks is not None or not m.needs_masks
    ]
    parts: dict = {}
    robust_seconds = 0.0
    for s in batch_starts(n, b) if starts is None else starts:
        e = min(n, s + b)
        x = jnp.asarray(data.to_model_input(images[s:e]))
        keys = image_keys(config.seed, s, e)
        t = jnp.asarray(targets[s:e])
        a = (
            M.baseline_maps(name, x, streams.fold(keys, "baseline_maps"))
            if maps is None
            else jnp.asarray(maps[s:e])
        )
        m_se = None if masks is None else masks[s:e]
        x, a, t, keys, m_se = on_local_devices(x, a, t, keys, m_se)
        reuse = shared is not None and s in shared and np.array_equal(shared[s][0], targets[s:e])
        r = min(e, robust_n) - s
        values = {}
        for m in metrics:
            if m.reexplains and r <= 0:
                continue
            t0 = time.perf_counter()
            if m.reexplains:
                batch = _batch(
                    fns,
                    config,
                    x[:r],
                    a[:r],
                    t[:r],
                    keys[:r],
                    m.name,
                    explain_fn=explain_fn,
                    classifier=classifier,
                    state=states.get(m.name),
                )
            else:
                part = shared[s][1].get(m.name) if reuse else None
                batch = _batch(fns, config, x, a, t, keys, m.name, state=states.get(m.name))
                if m.needs_masks:
                    batch = dataclasses.replace(batch, masks=jnp.asarray(m_se))
                if m.shared is not None and part is None:
                    part = m.shared(batch, **config.options(m.name))
                batch = dataclasses.replace(batch, shared=part)
            values.update(jax.device_get(m.fn(batch, **config.options(m.name))))
            if m.reexplains:
                robust_seconds += time.perf_counter() - t0
        for k, v in values.items():  # [: e - s]: a padded batch's padding dropped
            parts.setdefault(k, []).append(np.asarray(v)[: e - s])
    return {k: np.concatenate(v) for k, v in parts.items()}, robust_seconds


def summarize(values: np.ndarray) -> tuple[float, float, int]:
    """(mean, standard error of the mean, n) of the finite values."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return float("nan"), float("nan"), 0
    se = float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan")
    return float(v.mean()), se, int(len(v))


def _json_safe(obj):
    """NaN/inf -> None, so evaluation.json is strict JSON."""
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def _fmt(mean, se):
    if not np.isfinite(mean):
        return "n/a"
    return f"{mean:.3f} ± {se:.3f}" if np.isfinite(se) else f"{mean:.3f}"


def method_cost_row(name, options, timing, classifier, images, targets) -> dict:
    """``mnistxai.xai.cost.method_cost`` of a method with the run's options, plus its seconds
    per image in the run (1 / the steady images per second of ``<method>.json``; without it,
    its wall time per image; methods computed together share their time equally)."""
    from mnistxai.xai.cost import method_cost

    cost = method_cost(name, classifier, options, images=images, targets=targets)
    rate, count = timing.get("images_per_s"), timing.get("images")
    seconds = 1 / rate if rate else timing["seconds"] / count if count else None
    return {**cost, "seconds_per_image": seconds, "shared_with": timing.get("shared_with", [])}


def add_statistics(results: dict, scored: dict, config: EvalConfig) -> dict:
    """Adds to every metric entry of every row its mean's bootstrap interval (``ci_low``,
    ``ci_high``) and its rank in the column (``rank``, ``rank_median``, ``rank_low``,
    ``rank_high``; ``rank_images``: the images the column's rows were ranked on); returns
    Kendall's W of the columns' rankings with its interval. ``scored``: row -> per-example
    values (see the module docstring for which images each column uses)."""
    rows, cols, b = results["methods"], results["columns"], config.bootstrap_samples
    nan, point, per = float("nan"), [], []
    for col, (better, _) in cols.items():
        values = {r: np.asarray(scored[r].get(col, np.zeros(0)), np.float64) for r in rows}
        common = min(len(v) for v in values.values())
        head = {r: v[:common] for r, v in values.items()}
        if b:
            stats = ranking.bootstrap(head, better, b, LEVEL, seed=(config.seed, common))
        else:  # no resamples: the ranks of the means only
            ranks = ranking.rank_rows(np.array([summarize(v)[0] for v in head.values()]), better)
            stats = {r: _no_intervals(float(k)) for r, k in zip(head, ranks)}
        for r, row in rows.items():
            s, own = stats[r], stats[r]
            if b and len(values[r]) > common:  # its mean is over more images than the common
                seed = (config.seed, len(values[r]))
                own = ranking.bootstrap({r: values[r]}, better, b, LEVEL, seed=seed)[r]
            row["metrics"][col].update(
                ci_low=own["ci_low"],
                ci_high=own["ci_high"],
                **{k: s[k] for k in ("rank", "rank_median", "rank_low", "rank_high")},
                rank_images=common,
            )
        point.append([stats[r]["rank"] for r in rows])
        per.append([stats[r]["rank_samples"] for r in rows])
    if not cols:
        return {"w": nan, "ci_low": nan, "ci_high": nan, "metrics": 0, "methods": len(rows)}
    return {**ranking.concordance(np.array(point), np.array(per), LEVEL), "columns": list(cols)}


def _no_intervals(rank: float) -> dict:
    nan = float("nan")
    keys = ("ci_low", "ci_high", "rank_median", "rank_low", "rank_high")
    return {**dict.fromkeys(keys, nan), "rank": rank, "rank_samples": np.zeros(0)}


def _fmt_ci(mean, lo, hi) -> str:
    if not np.isfinite(mean):
        return "n/a"
    return f"{mean:.3f} [{lo:.3f}, {hi:.3f}]" if np.isfinite(lo) else f"{mean:.3f}"


def _fmt_rank(entry) -> str:
    rank, lo, hi = entry["rank"], entry.get("rank_low", np.nan), entry.get("rank_high", np.nan)
    if not np.isfinite(rank):
        return "n/a"
    return f"{rank:g} [{lo:g}, {hi:g}]" if np.isfinite(lo) else f"{rank:g}"


def _fmt_w(c: dict) -> str:
    w = c.get("w", float("nan"))
    if w is None or not np.isfinite(w):
        return "n/a"
    lo, hi = c.get("ci_low"), c.get("ci_high")
    if lo is None or not np.isfinite(lo):
        return f"{w:.3f}"
    return f"{w:.3f} [{lo:.3f}, {hi:.3f}]"


COST_COLUMNS = ("seconds_per_image", "flops_per_image", "forward_equivalents")
STAT_KEYS = ("mean", "se", "n", "ci_low", "ci_high", "rank", "rank_low", "rank_high")


def _num(v) -> str:
    return "" if v is None else str(v) if isinstance(v, (int, np.integer)) else f"{v:.6g}"


def write_leaderboard(out: Path, results: dict) -> None:
    """leaderboard.csv (wide: per column <column>_mean, _se, _n, _ci_low, _ci_high, _rank,
    _rank_low, _rank_high; per row its cost) and leaderboard.md."""
    rows, cols = results["methods"], results["columns"]
    header = ["method", "images", "explain_seconds", "evaluate_seconds", "robustness_seconds"]
    header += list(COST_COLUMNS)
    for m in cols:
        header += [f"{m}_{k}" for k in STAT_KEYS]
    table = io.StringIO()
    w = csv.writer(table)
    w.writerow(header)
    for name, r in rows.items():
        cost = r.get("cost") or {}
        line = [
            name,
            r["images"],
            r["explain_seconds"],
            r["evaluate_seconds"],
            r["robustness_seconds"],
        ]
        line += [_num(cost.get(k)) for k in COST_COLUMNS]
        for m in cols:
            line += [_num(r["metrics"][m].get(k, float("nan"))) for k in STAT_KEYS]
        w.writerow(line)
    write_text_atomic(out / "leaderboard.csv", table.getvalue())
    boot = results["config"].get("bootstrap_samples", 0)
    cells_are = (
        f"Cells: mean [low, high], the {LEVEL:.0%} percentile-bootstrap interval over images "
        f"({boot} resamples, paired across rows); leaderboard.csv also has each standard error "
        f"(mean ± se)."
        if boot
        else "Mean ± standard error over images."
    )
    lines = [
        f"# Explanation leaderboard ({results['images']} {results['dataset']} test images; the "
        f"re-explaining metrics on the first {results['robustness_images']}, fewer for costly "
        f"methods: column 'robust n')",
        "",
        f"{cells_are} Baselines: `random` (uniform noise maps) and `sobel` (edge magnitude).",
        "",
        "| method | "
        + " | ".join(f"{m} ({'↓' if b == 'lower' else '↑'})" for m, (b, _) in cols.items())
        + " | robust n | explain s | evaluate s |",
        "|---" * (len(cols) + 4) + "|",
    ]
    for name, r in rows.items():
        cells = [
            _fmt_ci(
                r["metrics"][m]["mean"],
                r["metrics"][m].get("ci_low", np.nan),
                r["metrics"][m].get("ci_high", np.nan),
            )
            if boot
            else _fmt(r["metrics"][m]["mean"], r["metrics"][m]["se"])
            for m in cols
        ]
        expl = "—" if r["explain_seconds"] is None else f"{r['explain_seconds']:.1f}"
        lines.append(
            f"| {name} | "
            + " | ".join(cells)
            + f" | {r['robust_images']} | {expl} | {r['evaluate_seconds']:.1f} |"
        )
    lines += [
        "",
        "Metrics: "
        + "; ".join(f"**{m}**: {d} ({b} is better)" for m, (b, d) in cols.items())
        + ".",
    ]
    if cols:
        first = next(iter(rows.values()))["metrics"]
        fewer = [
            f"{m}: {first[m].get('rank_images')}"
            for m in cols
            if first[m].get("rank_images", results["images"]) != results["images"]
        ]
        lines += [
            "",
            "## Rank [low, high]",
            "",
            "Rank of each row in each column (1 = best, ties share the average rank)"
            + (f", with its {LEVEL:.0%} interval over the bootstrap resamples" if boot else "")
            + (
                f"; the columns on fewer images rank on those every row has ({', '.join(fewer)})"
                if fewer
                else ""
            )
            + ".",
            "",
            "| method | " + " | ".join(cols) + " |",
            "|---" * (len(cols) + 1) + "|",
        ]
        for name, r in rows.items():
            lines.append(
                f"| {name} | " + " | ".join(_fmt_rank(r["metrics"][m]) for m in cols) + " |"
            )
        c = results.get("concordance", {})
        lines += [
            "",
            f"Kendall's W across the {c.get('metrics', 0)} metric columns (how far their "
            f"rankings of the {c.get('methods', len(rows))} rows agree: 1 the same order, 0 none; "
            f"tie-corrected, on the ranks of the means"
            + (f", {LEVEL:.0%} bootstrap interval" if boot else "")
            + f"): **{_fmt_w(c)}**.",
        ]
    costed = {n: r["cost"] for n, r in rows.items() if r.get("cost")}
    if costed:
        lines += [
            "",
            "## Cost per image",
            "",
            "Forward-equivalents: the method's FLOPs per image over one forward pass's, both as "
            "XLA counts them for the compiled programs (loop-aware, chunk loops in one pass, "
            "exact skips not taken: `mnistxai.xai.cost`); ms: the run's steady time per image. "
            "Declared passes: (gradient, forward) of the method's registry entry.",
            "",
            "| method | forward-equivalents | MFLOPs | ms | declared passes |",
            "|---|---|---|---|---|",
        ]
        for name, cost in costed.items():
            ms = cost.get("seconds_per_image")
            note = " (+ loops of unknown trip count)" if cost.get("unknown_trip_loops") else ""
            passes = ", ".join(f"{p:g}" for p in cost.get("model_passes", []))
            lines.append(
                f"| {name} | {cost['forward_equivalents']:.2f}{note} | "
                f"{cost['flops_per_image'] / 1e6:.1f} | "
                f"{'—' if ms is None else f'{1000 * ms:.2f}'} | ({passes}) |"
            )
    if results.get("shared_seconds"):
        lines += [
            "",
            f"Model calls shared by every row (the map-independent parts of "
            f"{', '.join(results['shared'])}): {results['shared_seconds']:.1f} s, not in "
            f"'evaluate s'.",
        ]
    for name, (_, text) in results["summaries"].items():
        lines += ["", f"{name}: {text}"]
    write_text_atomic(out / "leaderboard.md", "\n".join(lines) + "\n")


def write_figures(out: Path, results: dict) -> None:
    from mnistxai.report import viz

    rows, cols = results["methods"], results["columns"]
    first = next(iter(rows.values()))["curves"]  # every metric's "<kind>_curve" arrays
    curves = {
        key[: -len("_curve")]: {n: r["curves"][key] for n, r in rows.items()} for key in first
    }
    if curves:
        viz.save_figure(viz.plot_perturbation_curves(curves), out / "curves.png")
    if results["robustness_images"] and results.get("cascade"):
        sim = {m: {n: r["cascade"][m] for n, r in rows.items()} for m in ("spearman", "ssim")}
        viz.save_figure(
            viz.plot_randomization_cascade(results["cascade"], sim), out / "randomization.png"
        )
    table = {
        m: {n: (r["metrics"][m]["mean"], r["metrics"][m]["se"]) for n, r in rows.items()}
        for m in cols
    }
    better = {m: b for m, (b, _) in cols.items()}
    viz.save_figure(viz.plot_metric_bars(table, better), out / "bars.png")
    if cols:
        median = "rank_median" if results["config"].get("bootstrap_samples") else "rank"
        ranks = {
            m: {
                n: tuple(
                    r["metrics"][m].get(k, float("nan")) for k in (median, "rank_low", "rank_high")
                )
                for n, r in rows.items()
            }
            for m in cols
        }
        c = results.get("concordance", {})
        w = tuple(c.get(k, float("nan")) for k in ("w", "ci_low", "ci_high"))
        viz.save_figure(viz.plot_rank_intervals(ranks, better, w), out / "ranks.png")
    costed = {n: r for n, r in rows.items() if r.get("cost")}
    if costed and cols:
        panels = {}
        for category, names in results.get("categories", {}).items():
            if names:
                m = names[0]
                panels[category] = (
                    m,
                    better[m],
                    {
                        n: (r["cost"]["flops_per_image"], r["metrics"][m]["mean"])
                        for n, r in costed.items()
                    },
                )
        if panels:
            viz.save_figure(viz.plot_pareto(panels), out / "pareto.png")


def evaluate_run(
    run_dir,
    out,
    config: EvalConfig = EvalConfig(),
    classifier=None,
    images=None,
    progress: bool = True,
    masks=None,
) -> dict:
    """Score every finished method of the explanation run ``run_dir`` (plus the baselines) with
    every selected metric and write the leaderboard, evaluation.json, per_example.npz and figures
    into ``out``.

    ``classifier`` defaults to the run's checkpoint and ``images`` (uint8 (N, 28, 28)) to its
    split of its dataset; tests pass their own. ``masks``: bool (N, 28, 28) ground-truth regions
    of those images (all False for an image without one), for the ``needs_masks`` (localisation)
    metrics; None: for a run on ``mnist_shortcut``, the markers found in the images
    (``find_markers(images) > 0``), else the localisation metrics are skipped. Returns the
    results written to evaluation.json.
    """
    config.validate()
    if masks is None:
        named = () if config.metrics == ALL else config.metrics
        wanted = [m for m in named if get_metric(m).needs_masks]
        if wanted and _run_dataset(run_dir) != SHORTCUT:  # a shortcut run's images have them
            raise InputError(f"metric(s) {', '.join(wanted)} need ground-truth masks (masks=)")
    else:
        masks = np.asarray(masks)
        if masks.ndim != 3 or masks.dtype != bool:
            raise InputError(
                f"masks must be a bool array (N, H, W), got {masks.dtype} {masks.shape}"
            )
    run_dir, out = Path(run_dir), writable_dir(out, "--out")
    index = jax.process_index()  # one writer per process index: process 0 holds .lock
    with exclusive(out, "--out", ".lock" if index == 0 else f".lock.{index}"):
        return _evaluate_run(run_dir, out, config, classifier, images, progress, masks)


def _run_dataset(run_dir) -> Optional[str]:
    """The dataset recorded in ``run_dir/run.json``, None if there is none to read (the
    evaluation then says why)."""
    try:
        return json.loads((Path(run_dir) / "run.json").read_text()).get("dataset")
    except (OSError, ValueError, AttributeError):
        return None


def _evaluate_run(run_dir, out, config, classifier, images, progress, masks=None) -> dict:
    run_file = run_dir / "run.json"
    if not run_file.exists():
        raise InputError(
            f"{run_file} does not exist: is {run_dir} a `python -m mnistxai.explain` output?"
        )
    try:
        run = json.loads(run_file.read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"{run_file} is not valid JSON: {e}") from None
    if run.get("format") != RUN_FORMAT:
        raise InputError(
            f"{run_dir} was written by another version of mnistxai.explain (format "
            f"{run.get('format')}, this one reads {RUN_FORMAT}): explain again into a new folder"
        )
    methods = [m for m in run["methods"] if (run_dir / f"{m}.npz").exists()]
    if not methods:
        raise InputError(f"{run_dir} has no finished method (.npz) yet")
    if classifier is None:
        classifier = load_classifier(run["checkpoint"])
        made_by = run.get("model", {}).get("weights")
        if made_by is not None and fingerprint(classifier.variables) != made_by:
            raise InputError(
                f"{run['checkpoint']} holds other weights than the model that made {run_dir} "
                f"(retrained since?): explain it again into a new folder"
            )
    explain_config = ExplainConfig(
        methods=tuple(methods),
        **{
            k: v
            for k, v in run.items()
            if k in ExplainConfig.__dataclass_fields__ and k != "methods"
        },
    )
    if images is None:
        images, labels = load_images(
            explain_config.dataset, run["split"], run["limit"], run["data_dir"]
        )
        made_with = run.get("data", {}).get("images")
        if made_with != fingerprint({"images": images, "labels": labels}):
            raise InputError(
                f"the {explain_config.dataset} {run['split']} images found now differ from "
                f"those {run_dir} was made with: point --data-dir at the same files"
            )
    n = min(config.limit, run["images"], len(images))
    images = np.asarray(images[:n])
    masks_from = None if masks is None else "given"
    if masks is None and explain_config.dataset == SHORTCUT:
        from mnistxai.shortcut import find_markers

        masks, masks_from = np.asarray(find_markers(images)) > 0, "markers"
    if masks is not None:
        if len(masks) < n or masks.shape[1:] != images.shape[1:]:
            raise InputError(
                f"masks {masks.shape} must cover the {n} images {images.shape[1:]} evaluated"
            )
        masks = masks[:n]
    fns = score_fns(classifier)
    selected = [get_metric(m) for m in config.selected(masks is not None)]
    states = {
        m.name: m.setup(classifier, streams.key(config.seed, m.name))
        for m in selected
        if m.setup is not None
    }
    cascade = states.get("randomization")
    results = {
        "images": n,
        "made_with": parallel.describe(),
        "dataset": explain_config.dataset,
        "masks": masks_from,
        "robustness_images": min(config.robustness_images, n),
        "config": dataclasses.asdict(config),
        "metrics": [m.name for m in selected],
        "columns": {c: list(v) for m in selected for c, v in m.columns.items()},
        "categories": {
            cat: [c for m in selected if m.category == cat for c in m.columns]
            for cat in dict.fromkeys(m.category for m in selected)
        },
        "cascade": [s for s, _ in cascade] if cascade else [],
        "shared": [m.name for m in selected if m.shared is not None],
        "methods": {},
        "summaries": {},
    }
    per_example, scored = {}, {}
    starts = batch_starts(n, config.batch_size)
    together = jax.process_count() > 1
    mine = [starts[i] for i in parallel.process_share(len(starts))]
    parts = out / "parts"
    if together:  # a leaderboard's parts are not resumed: those of an earlier one go first
        if jax.process_index() == 0 and parts.exists():
            shutil.rmtree(parts)
        parallel.barrier("mnistxai.evaluate: parts cleared")
    t0 = time.perf_counter()
    first_targets = load_method(run_dir, methods[0])["targets"][:n]
    shared = jax.block_until_ready(shared_parts(config, images, first_targets, fns, mine))
    results["shared_seconds"] = round(time.perf_counter() - t0, 2)
    entries = methods + list(config.baselines)
    context = (run_dir, methods, n, explain_config, classifier, config, first_targets)
    prepared = {}  # a process's entries, maps dropped, for process 0's merge
    for name in tqdm(entries, desc="evaluate", unit="method", disable=not progress):
        t0 = time.perf_counter()
        entry = _entry(name, *context)
        inputs = (entry["maps"], entry["targets"], images, entry["explain_fn"], classifier)
        inputs += (states, config, fns, shared, entry["robust_n"], masks)
        if together:  # each batch of this process's share into its own part file
            (parts / name).mkdir(parents=True, exist_ok=True)
            for s in mine:
                t1 = time.perf_counter()
                values, robust_s = evaluate_method(name, *inputs, starts=[s])
                seconds = np.asarray(time.perf_counter() - t1)
                save_npz_atomic(
                    parts / name / f"{s:07d}.npz",
                    **values,
                    __seconds__=seconds,
                    __robust_seconds__=np.asarray(robust_s),
                )
            prepared[name] = {**entry, "maps": None}
            continue
        values, robust_s = evaluate_method(name, *inputs)
        scored[name] = _add_row(
            results, per_example, name, entry, values, robust_s, time.perf_counter() - t0, context
        )
    if together:
        parallel.barrier("mnistxai.evaluate: parts written")
        if jax.process_index() != 0:
            parallel.barrier("mnistxai.evaluate: merged")
            return results
        for name in entries:
            values, robust_s, seconds = _merge_parts(parts / name, starts)
            scored[name] = _add_row(
                results, per_example, name, prepared[name], values, robust_s, seconds, context
            )
    results["concordance"] = add_statistics(results, scored, config)
    write_leaderboard(out, results)
    write_json_atomic(out / "evaluation.json", _json_safe(results))
    save_npz_atomic(out / "per_example.npz", **per_example)
    write_figures(out, results)
    if together:
        shutil.rmtree(parts)
        parallel.barrier("mnistxai.evaluate: merged")
    if progress:
        print(f"wrote {out}/leaderboard.md ({n} images, peak RSS {peak_rss_mb():.0f} MB)")
    return results


def _entry(name, run_dir, methods, n, explain_config, classifier, config, first_targets) -> dict:
    """What scoring ``name`` (a method of the run or a baseline) needs: its maps (None: a
    baseline's own), targets, explain_fn, options, robustness subset, cost inputs, run summary."""
    if name not in methods:
        return {
            "maps": None,
            "targets": first_targets,
            "explain_fn": M.baseline_explain_fn(name),
            "explain_seconds": None,
            "robust_n": min(n, robustness_images(config, name)),
            "cost_of": None,
            "summary": None,
        }
    arrays = load_method(run_dir, name)
    options = method_options(explain_config, name, classifier)
    batch = max(1, min(config.robustness_images, config.batch_size, n))
    timing_file = run_dir / f"{name}.json"
    timing = json.loads(timing_file.read_text()) if timing_file.exists() else {}
    summarize_run = registry.get(name).run_summary
    return {
        "maps": arrays["attributions"][:n],
        "targets": arrays["targets"][:n],
        "explain_fn": method_explain_fn(name, options, classifier, batch),
        "explain_seconds": timing.get("seconds", 0.0) * n / max(1, timing.get("images", n)),
        "robust_n": min(n, robustness_images(config, name, options)),
        "cost_of": (name, options, timing),
        "summary": None
        if summarize_run is None
        else summarize_run({k: v[:n] for k, v in arrays.items()}),
    }


def _add_row(results, per_example, name, entry, values, robust_s, seconds, context) -> dict:
    """Put ``name``'s leaderboard row into ``results`` and its per-example ``values`` into
    ``per_example``; returns ``values``."""
    _, _, n, explain_config, classifier, config, _ = context
    if entry["summary"] is not None:
        results["summaries"][name] = entry["summary"]
    explain_s = entry["explain_seconds"]
    row = {
        "images": n,
        "robust_images": entry["robust_n"],
        "explain_seconds": None if explain_s is None else round(explain_s, 2),
        "evaluate_seconds": round(seconds, 2),
        "robustness_seconds": round(robust_s, 2),
        "metrics": {},
        "curves": {k: v.mean(0).tolist() for k, v in values.items() if k.endswith("_curve")},
        "cascade": {
            m: [
                float(np.mean(values[f"cascade_{m}_{s}"]))
                if f"cascade_{m}_{s}" in values
                else float("nan")
                for s in results["cascade"]
            ]
            for m in ("spearman", "ssim")
        },
    }
    for m in results["columns"]:
        mean, se, count = summarize(values[m]) if m in values else (float("nan"),) * 2 + (0,)
        row["metrics"][m] = {"mean": mean, "se": se, "n": count}
    row["cost"] = None
    if entry["cost_of"] is not None and config.cost_images:
        row["cost"] = method_cost_row(
            *entry["cost_of"], classifier, config.cost_images, explain_config.targets
        )
    results["methods"][name] = row
    per_example.update({f"{name}/{k}": v for k, v in values.items()})
    return values


def _merge_parts(folder: Path, starts: list[int]) -> tuple[dict, float, float]:
    """(values, robustness seconds, seconds) of one method from the part files its batches were
    written to by the processes of a run: values concatenated in batch order, as one process
    makes them; seconds summed over the parts (the processes' work, not the wall time)."""
    missing = [s for s in starts if not (folder / f"{s:07d}.npz").exists()]
    if missing:  # a process did not write its share before the barrier: an internal error
        raise RuntimeError(f"{folder}: no part for the batches starting at {missing}")
    values: dict = {}
    robust_s = seconds = 0.0
    for s in starts:
        with np.load(folder / f"{s:07d}.npz") as part:
            seconds += float(part["__seconds__"])
            robust_s += float(part["__robust_seconds__"])
            for k in part.files:
                if not k.startswith("__"):
                    values.setdefault(k, []).append(part[k])
    return {k: np.concatenate(v) for k, v in values.items()}, robust_s, seconds


INT_FLAGS = (
    "limit",
    "batch_size",
    "chunk_size",
    "robustness_images",
    "costly_robustness_images",
    "heavy_robustness_images",
    "seed",
    "bootstrap_samples",
    "cost_images",
)


def build_parser() -> ArgumentParser:
    ap = ArgumentParser(
        prog="python -m mnistxai.evaluate",
        description="Leaderboard of XAI methods on faithfulness, robustness, "
        "complexity and randomization metrics.",
    )
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="an output folder of `python -m mnistxai.explain`")
    src.add_argument("--checkpoint", help="explain first (into OUT/explanations), then evaluate")
    ap.add_argument("--out", required=True, help="folder for the leaderboard and figures")
    ap.add_argument(
        "--methods",
        default=None,
        help="with --checkpoint: comma-separated names, 'all' (every method), or omitted: the "
        "default set (every method but exact_shapley)",
    )
    defaults = EvalConfig()
    for name in INT_FLAGS:
        ap.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(defaults, name))
    ap.add_argument(
        "--metrics",
        default=None,
        help="comma-separated metric names, 'all' (every metric), or omitted: the default set ("
        + ", ".join(M.default_metrics(masks=True))
        + "); all: "
        + ", ".join(M.METRICS),
    )
    ap.add_argument(
        "--metric-options",
        default=None,
        help='JSON metric options, e.g. \'{"region_perturbation": {"regions": 12}}\'',
    )
    ap.add_argument("--data-dir", default=None, help="IDX folder (with --checkpoint)")
    ap.add_argument("--options", default=None, help="with --checkpoint: JSON method options")
    ap.add_argument(
        "--masks",
        default=None,
        help="a .npy of bool (N, 28, 28) ground-truth masks of the run's images (all False for "
        "an image without one): adds the localisation metrics",
    )
    ap.add_argument("--no-progress", action="store_true")
    parallel.add_process_flags(ap)
    return ap


def parse_metrics(text: Optional[str]) -> tuple[str, ...]:
    """``--metrics``: None -> () (the default set), ``"all"`` -> ``ALL``, else the names."""
    if text is None:
        return ()
    if text == "all":
        return ALL
    names = tuple(m.strip() for m in text.split(",") if m.strip())
    for name in names:
        get_metric(name)
    return names


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    parallel.initialize_from_args(args)
    config = EvalConfig(
        **{name: getattr(args, name) for name in INT_FLAGS},
        metrics=parse_metrics(args.metrics),
        metric_options=parse_options(args.metric_options, "--metric-options"),
    ).validate()
    run_dir = args.run
    if args.checkpoint:
        explain_config = ExplainConfig(
            checkpoint=args.checkpoint,
            methods=parse_methods(args.methods),
            limit=config.limit,
            seed=config.seed,
            options=parse_options(args.options),
            data_dir=args.data_dir,
        ).validate()
        run_dir = Path(args.out) / "explanations"
        explain_run(explain_config, run_dir, progress=not args.no_progress)
    masks = None
    if args.masks is not None:
        if not Path(args.masks).is_file():
            raise InputError(f"--masks {args.masks} is not a file")
        masks = np.load(args.masks, allow_pickle=False)
    evaluate_run(run_dir, args.out, config, progress=not args.no_progress, masks=masks)
    return 0
