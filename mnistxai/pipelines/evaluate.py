"""The explanation leaderboard: every metric of ``mnistxai.xai.metrics`` for every method of a run.

    python -m mnistxai.evaluate --run runs/explain [--limit 1000] --out runs/leaderboard
    python -m mnistxai.evaluate --checkpoint runs/cnn --methods saliency,gradcam --out DIR

The second form first runs ``mnistxai.pipelines.explain`` into ``DIR/explanations``. Writes into
``--out``:

    leaderboard.csv / .md   method x metric: mean, standard error, images used, time
    evaluation.json         the same plus the mean deletion/insertion curves and randomization
    cascade
    per_example.npz         every metric's value per image and method (<method>/<metric>)
    curves.png, randomization.png, bars.png

With ``--masks M.npy`` (bool (N, 28, 28) ground-truth regions of the run's images, e.g. a
planted shortcut's markers) the localisation metrics are scored too; without, they are skipped.
A random-attribution and a Sobel-edge baseline are scored alongside the methods. Every method sees
the same per-image random keys (the same random subsets, noise and tie-breaks), so differences
between methods are not sampling noise of the metric; the model calls of faithfulness correlation
and infidelity, which do not depend on the map, are therefore made once and shared by all rows.
Images are processed ``batch_size`` at a time; the metrics that re-explain (max-sensitivity,
randomization) use the first ``robustness_images`` of them, because they cost (samples or layers)
x one explanation each.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import time
from pathlib import Path
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from mnistxai import data
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

    def validate(self) -> "EvalConfig":
        for f in ("limit", "batch_size", "chunk_size"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InputError(f"{f} must be a positive integer, got {v!r}")
        for f in COST_LIMITS.values():
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
    cost = registry.get(name).cost(options or {}) if name in registry.METHODS else "cheap"
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


def shared_parts(config: EvalConfig, images: np.ndarray, targets: np.ndarray, fns) -> list:
    """[(targets, {metric: shared part})] per batch of ``images``: what the metrics that declare
    ``shared`` compute once (it does not depend on the map) for every method to reuse."""
    out, b = [], config.batch_size
    metrics = [get_metric(m) for m in config.selected() if get_metric(m).shared is not None]
    for s in range(0, len(images), b):
        e = min(len(images), s + b)
        x = jnp.asarray(data.to_model_input(images[s:e]))
        t, keys = jnp.asarray(targets[s:e]), image_keys(config.seed, s, e)
        out.append(
            (
                targets[s:e],
                {
                    m.name: m.shared(
                        _batch(fns, config, x, None, t, keys, m.name), **config.options(m.name)
                    )
                    for m in metrics
                },
            )
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
) -> tuple[dict, float]:
    """(per-example values of every selected metric, seconds spent in the re-explaining ones)
    for one method (``maps`` None: a baseline's own maps). ``shared``: ``shared_parts`` of these
    images, used for the batches whose targets match; ``robust_n``: images of the robustness
    subset; ``states``: each metric's ``setup`` result; ``masks``: bool (N, H, W) ground truth of
    the images (None: the ``needs_masks`` metrics are skipped)."""
    n, b = len(images), config.batch_size
    metrics = [
        m
        for m in map(get_metric, config.selected(masks is not None))
        if masks is not None or not m.needs_masks
    ]
    parts: dict = {}
    robust_seconds = 0.0
    for i, s in enumerate(range(0, n, b)):
        e = min(n, s + b)
        x = jnp.asarray(data.to_model_input(images[s:e]))
        keys = image_keys(config.seed, s, e)
        t = jnp.asarray(targets[s:e])
        a = (
            M.baseline_maps(name, x, streams.fold(keys, "baseline_maps"))
            if maps is None
            else jnp.asarray(maps[s:e])
        )
        reuse = shared is not None and np.array_equal(shared[i][0], targets[s:e])
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
                part = shared[i][1].get(m.name) if reuse else None
                batch = _batch(fns, config, x, a, t, keys, m.name, state=states.get(m.name))
                if m.needs_masks:
                    batch = dataclasses.replace(batch, masks=jnp.asarray(masks[s:e]))
                if m.shared is not None and part is None:
                    part = m.shared(batch, **config.options(m.name))
                batch = dataclasses.replace(batch, shared=part)
            values.update(jax.device_get(m.fn(batch, **config.options(m.name))))
            if m.reexplains:
                robust_seconds += time.perf_counter() - t0
        for k, v in values.items():
            parts.setdefault(k, []).append(np.asarray(v))
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


def write_leaderboard(out: Path, results: dict) -> None:
    """leaderboard.csv (wide: <column>_mean, <column>_se, <column>_n) and leaderboard.md."""
    rows, cols = results["methods"], results["columns"]
    header = ["method", "images", "explain_seconds", "evaluate_seconds", "robustness_seconds"]
    for m in cols:
        header += [f"{m}_mean", f"{m}_se", f"{m}_n"]
    table = io.StringIO()
    w = csv.writer(table)
    w.writerow(header)
    for name, r in rows.items():
        line = [
            name,
            r["images"],
            r["explain_seconds"],
            r["evaluate_seconds"],
            r["robustness_seconds"],
        ]
        for m in cols:
            line += [f"{r['metrics'][m][k]:.6g}" for k in ("mean", "se")] + [r["metrics"][m]["n"]]
        w.writerow(line)
    write_text_atomic(out / "leaderboard.csv", table.getvalue())
    lines = [
        f"# Explanation leaderboard ({results['images']} {results['dataset']} test images; the "
        f"re-explaining metrics on the first {results['robustness_images']}, fewer for costly "
        f"methods: column 'robust n')",
        "",
        "Mean ± standard error over images. Baselines: `random` (uniform noise maps) and "
        "`sobel` (edge magnitude).",
        "",
        "| method | "
        + " | ".join(f"{m} ({'↓' if b == 'lower' else '↑'})" for m, (b, _) in cols.items())
        + " | robust n | explain s | evaluate s |",
        "|---" * (len(cols) + 4) + "|",
    ]
    for name, r in rows.items():
        cells = [_fmt(r["metrics"][m]["mean"], r["metrics"][m]["se"]) for m in cols]
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
    viz.save_figure(
        viz.plot_metric_bars(table, {m: b for m, (b, _) in cols.items()}), out / "bars.png"
    )


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
    metrics; without it they are skipped. Returns the results written to evaluation.json.
    """
    config.validate()
    if masks is None:
        named = () if config.metrics == ALL else config.metrics
        wanted = [m for m in named if get_metric(m).needs_masks]
        if wanted:
            raise InputError(f"metric(s) {', '.join(wanted)} need ground-truth masks (masks=)")
    else:
        masks = np.asarray(masks)
        if masks.ndim != 3 or masks.dtype != bool:
            raise InputError(
                f"masks must be a bool array (N, H, W), got {masks.dtype} {masks.shape}"
            )
    run_dir, out = Path(run_dir), writable_dir(out, "--out")
    with exclusive(out, "--out"):
        return _evaluate_run(run_dir, out, config, classifier, images, progress, masks)


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
        "dataset": explain_config.dataset,
        "robustness_images": min(config.robustness_images, n),
        "config": dataclasses.asdict(config),
        "metrics": [m.name for m in selected],
        "columns": {c: list(v) for m in selected for c, v in m.columns.items()},
        "cascade": [s for s, _ in cascade] if cascade else [],
        "shared": [m.name for m in selected if m.shared is not None],
        "methods": {},
        "summaries": {},
    }
    per_example = {}
    t0 = time.perf_counter()
    first_targets = load_method(run_dir, methods[0])["targets"][:n]
    shared = jax.block_until_ready(shared_parts(config, images, first_targets, fns))
    results["shared_seconds"] = round(time.perf_counter() - t0, 2)
    entries = methods + list(config.baselines)
    for name in tqdm(entries, desc="evaluate", unit="method", disable=not progress):
        t0 = time.perf_counter()
        if name in methods:
            arrays = load_method(run_dir, name)
            maps, targets = arrays["attributions"][:n], arrays["targets"][:n]
            options = method_options(explain_config, name, classifier)
            explain_fn = method_explain_fn(
                name,
                options,
                classifier,
                max(1, min(config.robustness_images, config.batch_size, n)),
            )
            timing_file = run_dir / f"{name}.json"
            timing = json.loads(timing_file.read_text()) if timing_file.exists() else {}
            explain_s = timing.get("seconds", 0.0) * n / max(1, timing.get("images", n))
            summarize_run = registry.get(name).run_summary
            if summarize_run is not None:
                results["summaries"][name] = summarize_run({k: v[:n] for k, v in arrays.items()})
        else:
            maps, explain_fn, explain_s, options = None, M.baseline_explain_fn(name), None, None
            targets = first_targets
        robust_n = min(n, robustness_images(config, name, options))
        values, robust_s = evaluate_method(
            name,
            maps,
            targets,
            images,
            explain_fn,
            classifier,
            states,
            config,
            fns,
            shared,
            robust_n,
            masks,
        )
        row = {
            "images": n,
            "robust_images": robust_n,
            "explain_seconds": None if explain_s is None else round(explain_s, 2),
            "evaluate_seconds": round(time.perf_counter() - t0, 2),
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
        results["methods"][name] = row
        per_example.update({f"{name}/{k}": v for k, v in values.items()})
    write_leaderboard(out, results)
    write_json_atomic(out / "evaluation.json", _json_safe(results))
    save_npz_atomic(out / "per_example.npz", **per_example)
    write_figures(out, results)
    if progress:
        print(f"wrote {out}/leaderboard.md ({n} images, peak RSS {peak_rss_mb():.0f} MB)")
    return results


INT_FLAGS = (
    "limit",
    "batch_size",
    "chunk_size",
    "robustness_images",
    "costly_robustness_images",
    "heavy_robustness_images",
    "seed",
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
