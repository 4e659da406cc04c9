"""The explanation leaderboard: every metric of ``mnistxai.xai.metrics`` for every method of a run.

    python -m mnistxai.evaluate --run runs/explain [--limit 1000] --out runs/leaderboard
    python -m mnistxai.evaluate --checkpoint runs/cnn --methods saliency,gradcam --out DIR

The second form first runs ``mnistxai.explain`` into ``DIR/explanations``. Writes into ``--out``:

    leaderboard.csv / .md   method x metric: mean, standard error, images used, time
    evaluation.json         the same plus the mean deletion/insertion curves and randomization cascade
    per_example.npz         every metric's value per image and method (<method>/<metric>)
    curves.png, randomization.png, bars.png

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
import json
import time
from pathlib import Path
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from mnistxai import data
from mnistxai.cli import ArgumentParser, run_main
from mnistxai.explain import (ExplainConfig, explain_run, load_images, load_method,
                              method_options, parse_options, peak_rss_mb)
from mnistxai.train import write_json_atomic
from mnistxai.xai import metrics as M, parse_methods

# name: (better, what it is); the order of the leaderboard's columns
METRICS = {
    "deletion_auc": ("lower", "Deletion AUC of the target probability (Petsiuk 2018)"),
    "insertion_auc": ("higher", "Insertion AUC from a black canvas (Petsiuk 2018)"),
    "morf_aopc": ("higher", "Region perturbation AOPC, most relevant first (Samek 2017)"),
    "lerf_aopc": ("lower", "Region perturbation AOPC, least relevant first (Samek 2017)"),
    "faithfulness_corr": ("higher", "Faithfulness correlation, target logit (Bhatt 2020)"),
    "infidelity": ("lower", "Scale-optimal normalised infidelity, 4x4 square removal, target logit (Yeh 2019)"),
    "max_sensitivity": ("lower", "Max-sensitivity, radius 0.2 (Yeh 2019)"),
    "sparseness": ("higher", "Gini index of |map| (Chalasani 2020)"),
    "complexity": ("lower", "Entropy of |map| fractions (Bhatt 2020)"),
    "randomization_spearman": ("lower", "Spearman rho, all layers randomized (Adebayo 2018)"),
    "randomization_ssim": ("lower", "SSIM, all layers randomized (Adebayo 2018)"),
}
ROBUSTNESS = ("max_sensitivity", "randomization_spearman", "randomization_ssim")
# >= 50 model passes per image: the re-explaining metrics use fewer images for these
COSTLY = ("integrated_gradients", "expected_gradients", "smoothgrad", "smoothgrad_sq", "vargrad",
          "scorecam", "occlusion", "rise")


def robustness_images(config: "EvalConfig", name: str) -> int:
    """How many images max-sensitivity and randomization use for ``name``."""
    n = config.robustness_images
    if name in COSTLY:
        n = min(n, config.costly_robustness_images)
    return min(n, 8) if name == "rise" else n


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Metric settings; defaults sized for 1,000 images x all methods in minutes on 2 CPU cores.

    Attributes:
      limit: images scored (the run's first ``limit``; 1000).
      batch_size: images per metric call (128); chunk_size: model inputs per pass (256).
      robustness_images: images for max-sensitivity and randomization (32; each costs
        sensitivity_samples + 9 explanations), capped by ``costly_robustness_images`` (16) for
        the methods of >= 50 model passes per image (``COSTLY``) and 8 for RISE (1000 passes).
      seed: per-image keys are fold_in(key(seed), image index) (0).
      steps: deletion/insertion steps (16 = 49 pixels each); patch, regions: region perturbation
        (4x4 patches, the first 24 of 49); faithfulness_runs, subset: faithfulness correlation
        (32 runs, 224 pixels); infidelity_samples (16 squares of ``patch`` size removed);
        sensitivity_samples, sensitivity_radius (10, 0.2).
      baselines: reference maps scored too (random, sobel).
    """

    limit: int = 1000
    batch_size: int = 128
    chunk_size: int = 256
    robustness_images: int = 32
    costly_robustness_images: int = 16
    seed: int = 0
    steps: int = 16
    patch: int = 4
    regions: int = 24
    faithfulness_runs: int = 32
    subset: int = 224
    infidelity_samples: int = 16
    sensitivity_samples: int = 10
    sensitivity_radius: float = 0.2
    baselines: tuple = M.BASELINES

    def validate(self) -> "EvalConfig":
        for f in ("limit", "batch_size", "chunk_size", "steps", "patch", "regions",
                  "faithfulness_runs", "subset", "infidelity_samples", "sensitivity_samples"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{f} must be a positive integer, got {v!r}")
        if self.robustness_images < 0 or self.costly_robustness_images < 0:
            raise ValueError("robustness_images and costly_robustness_images must be >= 0")
        if not self.sensitivity_radius > 0:
            raise ValueError("sensitivity_radius must be > 0")
        unknown = [b for b in self.baselines if b not in M.BASELINES]
        if unknown:
            raise ValueError(f"unknown baseline(s) {unknown}; choose from {', '.join(M.BASELINES)}")
        return self


def image_keys(seed: int, start: int, stop: int) -> jax.Array:
    """Per-image keys for the images start..stop-1: the same whatever the batching."""
    base = jax.random.key(seed)
    return jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.arange(start, stop))


def method_explain_fn(name: str, options: dict, classifier, batch: int):
    """``explain_fn(model, x, targets, keys)`` running ``METHODS[name]`` inside jit (no checks:
    the options were validated when the run was made). Stochastic methods draw their noise from
    the first example's key, so for them it depends on the batch composition."""
    from mnistxai.xai import METHODS

    spec = METHODS[name]
    opts = spec.parse(name, options, batch, classifier)
    opts = {k: (jnp.asarray(v) if isinstance(v, np.ndarray) else v) for k, v in opts.items()}

    def explain_fn(model, x, targets, keys):
        return spec.run(model, x, targets, keys[0], **opts).attributions
    return explain_fn


def score_fns(classifier):
    """(softmax probabilities, logits) of ``classifier`` as the metrics' ``score_fn``s. Bound
    methods compare equal for the same classifier, so a second evaluation reuses the compiled
    metrics (a fresh lambda would compile them again)."""
    return classifier.probabilities, classifier.logits


def stream(keys: jax.Array, i: int) -> jax.Array:
    """The per-image keys of metric number ``i``: one independent stream per metric."""
    return jax.vmap(lambda k: jax.random.fold_in(k, i))(keys)


def shared_drops(config: EvalConfig, logits, x, t, keys) -> dict:
    """The model calls of faithfulness correlation and infidelity for one batch: they depend on
    the images, targets and keys only, so every method (and baseline) reuses them."""
    c = config
    return {"faithfulness": M.faithfulness_drops(logits, x, t, key=stream(keys, 3),
                                                 runs=c.faithfulness_runs, subset=c.subset,
                                                 chunk_size=c.chunk_size),
            "infidelity": M.infidelity_drops(logits, x, t, key=stream(keys, 4),
                                             samples=c.infidelity_samples, patch=c.patch,
                                             chunk_size=c.chunk_size)}


def batch_metrics(config: EvalConfig, probs, logits, x, a, t, keys, drops=None) -> dict:
    """The model-calling metrics that need no re-explaining, per example, for one batch
    (``drops``: ``shared_drops`` of these images and targets, computed here when None)."""
    c = config
    kw = {"chunk_size": c.chunk_size}
    if drops is None:
        drops = shared_drops(config, logits, x, t, keys)
    dele = M.deletion(probs, x, a, t, steps=c.steps, key=stream(keys, 0), **kw)
    ins = M.insertion(probs, x, a, t, steps=c.steps, key=stream(keys, 1), **kw)
    region = dict(patch=c.patch, regions=c.regions, key=stream(keys, 2), **kw)
    return {
        "deletion_auc": dele["auc"], "deletion_curve": dele["curve"],
        "insertion_auc": ins["auc"], "insertion_curve": ins["curve"],
        "morf_aopc": M.region_perturbation(probs, x, a, t, order="morf", **region)["aopc"],
        "lerf_aopc": M.region_perturbation(probs, x, a, t, order="lerf", **region)["aopc"],
        "faithfulness_corr": M.faithfulness_correlation(
            logits, x, a, t, key=stream(keys, 3), runs=c.faithfulness_runs, subset=c.subset,
            drops=drops["faithfulness"], **kw),
        "infidelity": M.infidelity(logits, x, a, t, key=stream(keys, 4),
                                   samples=c.infidelity_samples, patch=c.patch,
                                   drops=drops["infidelity"], **kw),
        "sparseness": M.sparseness(a), "complexity": M.complexity(a),
    }


def robustness_metrics(config: EvalConfig, explain_fn, classifier, cascade, x, a, t, keys) -> dict:
    out = {"max_sensitivity": M.max_sensitivity(
        explain_fn, classifier, x, a, t, key=stream(keys, 5), samples=config.sensitivity_samples,
        radius=config.sensitivity_radius)}
    sims = M.model_parameter_randomization(explain_fn, classifier, cascade, x, t,
                                           key=stream(keys, 6))
    for stage, s in sims.items():
        out[f"cascade_spearman_{stage}"] = s["spearman"]
        out[f"cascade_ssim_{stage}"] = s["ssim"]
    out["randomization_spearman"] = sims[cascade[-1][0]]["spearman"]
    out["randomization_ssim"] = sims[cascade[-1][0]]["ssim"]
    return out


def all_shared_drops(config: EvalConfig, images: np.ndarray, targets: np.ndarray, fns) -> list:
    """``shared_drops`` of every batch of ``images``, with the targets they were computed for."""
    out, b = [], config.batch_size
    for s in range(0, len(images), b):
        e = min(len(images), s + b)
        x = jnp.asarray(data.to_model_input(images[s:e]))
        out.append((targets[s:e], shared_drops(config, fns[1], x, jnp.asarray(targets[s:e]),
                                               image_keys(config.seed, s, e))))
    return out


def evaluate_method(name: str, maps: Optional[np.ndarray], targets: np.ndarray, images: np.ndarray,
                    explain_fn, classifier, cascade, config: EvalConfig, fns,
                    drops: Optional[list] = None) -> tuple[dict, float]:
    """(per-example values of every metric, seconds spent in the re-explaining metrics) for one
    method (``maps`` None: a baseline's own maps). ``drops``: ``all_shared_drops`` of these
    images, used for the batches whose targets match."""
    n, b = len(images), config.batch_size
    parts: dict = {}
    robust_seconds = 0.0
    for i, s in enumerate(range(0, n, b)):
        e = min(n, s + b)
        x = jnp.asarray(data.to_model_input(images[s:e]))
        keys = image_keys(config.seed, s, e)
        t = jnp.asarray(targets[s:e])
        a = (M.baseline_maps(name, x, stream(keys, 7))
             if maps is None else jnp.asarray(maps[s:e]))
        shared = None
        if drops is not None and np.array_equal(drops[i][0], targets[s:e]):
            shared = drops[i][1]
        values = jax.device_get(batch_metrics(config, *fns, x, a, t, keys, shared))
        r = min(e, robustness_images(config, name))
        if r > s:
            t0 = time.perf_counter()
            robust = robustness_metrics(config, explain_fn, classifier, cascade, x[:r - s],
                                        a[:r - s], t[:r - s], keys[:r - s])
            values.update(jax.device_get(robust))
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


def completeness(arrays: dict) -> Optional[dict]:
    """IG completeness over the run: |delta| and |delta| / |F(x) - F(b)| statistics."""
    if "extra_convergence_delta" not in arrays:
        return None
    delta = arrays["extra_convergence_delta"].astype(np.float64)
    gap = arrays["attribution_sum"].astype(np.float64) - delta  # F(x) - F(baseline)
    rel = np.abs(delta) / np.maximum(np.abs(gap), 1e-12)
    return {"images": int(len(delta)), "mean_abs_delta": float(np.abs(delta).mean()),
            "median_abs_delta": float(np.median(np.abs(delta))),
            "p95_abs_delta": float(np.percentile(np.abs(delta), 95)),
            "median_relative_delta": float(np.median(rel)),
            "share_relative_delta_below_1pct": float((rel < 0.01).mean())}


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
    """leaderboard.csv (wide: <metric>_mean, <metric>_se, <metric>_n) and leaderboard.md."""
    rows = results["methods"]
    header = ["method", "images", "explain_seconds", "evaluate_seconds", "robustness_seconds"]
    for m in METRICS:
        header += [f"{m}_mean", f"{m}_se", f"{m}_n"]
    tmp = out / "leaderboard.csv.tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for name, r in rows.items():
            line = [name, r["images"], r["explain_seconds"], r["evaluate_seconds"],
                    r["robustness_seconds"]]
            for m in METRICS:
                line += [f"{r['metrics'][m][k]:.6g}" for k in ("mean", "se")] + [r["metrics"][m]["n"]]
            w.writerow(line)
    tmp.replace(out / "leaderboard.csv")
    lines = [f"# Explanation leaderboard ({results['images']} test images; max-sensitivity and "
             f"randomization on the first {results['robustness_images']}, fewer for costly "
             f"methods: column 'robust n')", "",
             "Mean ± standard error over images. Baselines: `random` (uniform noise maps) and "
             "`sobel` (edge magnitude).", "",
             "| method | " + " | ".join(f"{m} ({'↓' if METRICS[m][0] == 'lower' else '↑'})"
                                        for m in METRICS) + " | robust n | explain s | evaluate s |",
             "|---" * (len(METRICS) + 4) + "|"]
    for name, r in rows.items():
        cells = [_fmt(r["metrics"][m]["mean"], r["metrics"][m]["se"]) for m in METRICS]
        expl = "—" if r["explain_seconds"] is None else f"{r['explain_seconds']:.1f}"
        robust_n = r["metrics"]["max_sensitivity"]["n"]
        lines.append(f"| {name} | " + " | ".join(cells)
                     + f" | {robust_n} | {expl} | {r['evaluate_seconds']:.1f} |")
    lines += ["", "Metrics: " + "; ".join(f"**{m}**: {d} ({b} is better)"
                                          for m, (b, d) in METRICS.items()) + "."]
    if "shared_seconds" in results:
        lines += ["", f"Model calls shared by every row (the perturbed images of faithfulness "
                  f"correlation and infidelity): {results['shared_seconds']:.1f} s, not in "
                  f"'evaluate s'."]
    for name, c in results["completeness"].items():
        lines += ["", f"IG completeness ({name}, {c['images']} images): mean |δ| "
                  f"{c['mean_abs_delta']:.4g}, median |δ| {c['median_abs_delta']:.4g}, 95th "
                  f"percentile {c['p95_abs_delta']:.4g}; median |δ|/|F(x)−F(b)| "
                  f"{c['median_relative_delta']:.3%}, {c['share_relative_delta_below_1pct']:.1%} "
                  f"of images below 1%."]
    tmp = out / "leaderboard.md.tmp"
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(out / "leaderboard.md")


def write_figures(out: Path, results: dict) -> None:
    from mnistxai import viz

    rows = results["methods"]
    curves = {kind: {n: r[f"{kind}_curve"] for n, r in rows.items()} for kind in ("deletion", "insertion")}
    viz.save_figure(viz.plot_perturbation_curves(curves), out / "curves.png")
    stages = results["cascade"]
    if results["robustness_images"]:
        sim = {m: {n: r["cascade"][m] for n, r in rows.items()} for m in ("spearman", "ssim")}
        viz.save_figure(viz.plot_randomization_cascade(stages, sim), out / "randomization.png")
    table = {m: {n: (r["metrics"][m]["mean"], r["metrics"][m]["se"]) for n, r in rows.items()}
             for m in METRICS}
    viz.save_figure(viz.plot_metric_bars(table, {m: b for m, (b, _) in METRICS.items()}),
                    out / "bars.png")


def evaluate_run(run_dir, out, config: EvalConfig = EvalConfig(), classifier=None, images=None,
                 progress: bool = True) -> dict:
    """Score every finished method of the explanation run ``run_dir`` (plus the baselines) and
    write the leaderboard, evaluation.json, per_example.npz and figures into ``out``.

    ``classifier`` defaults to the run's checkpoint and ``images`` (uint8 (N, 28, 28)) to its
    split; tests pass their own. Returns the results written to evaluation.json.
    """
    config.validate()
    run_dir, out = Path(run_dir), Path(out)
    run_file = run_dir / "run.json"
    if not run_file.exists():
        raise FileNotFoundError(f"{run_file} does not exist: is {run_dir} a `python -m mnistxai.explain` output?")
    run = json.loads(run_file.read_text())
    methods = [m for m in run["methods"] if (run_dir / f"{m}.npz").exists()]
    if not methods:
        raise ValueError(f"{run_dir} has no finished method (.npz) yet")
    if classifier is None:
        from mnistxai.checkpoint import load_classifier
        classifier = load_classifier(run["checkpoint"])
    if images is None:
        images, _ = load_images(run["split"], run["limit"], run["data_dir"])
    n = min(config.limit, run["images"], len(images))
    images = np.asarray(images[:n])
    out.mkdir(parents=True, exist_ok=True)
    explain_config = ExplainConfig(methods=tuple(methods), **{k: v for k, v in run.items()
                                   if k in ExplainConfig.__dataclass_fields__ and k != "methods"})
    fns = score_fns(classifier)
    cascade = M.cascading_randomization(classifier, jax.random.fold_in(jax.random.key(config.seed), 10**6))
    rb = max(1, min(config.robustness_images, config.batch_size, n))
    results = {"images": n, "robustness_images": min(config.robustness_images, n),
               "config": dataclasses.asdict(config), "cascade": [s for s, _ in cascade],
               "methods": {}, "completeness": {}}
    per_example = {}
    t0 = time.perf_counter()
    first_targets = load_method(run_dir, methods[0])["targets"][:n]
    drops = jax.block_until_ready(all_shared_drops(config, images, first_targets, fns))
    results["shared_seconds"] = round(time.perf_counter() - t0, 2)
    entries = methods + list(config.baselines)
    for name in tqdm(entries, desc="evaluate", unit="method", disable=not progress):
        t0 = time.perf_counter()
        if name in methods:
            arrays = load_method(run_dir, name)
            maps, targets = arrays["attributions"][:n], arrays["targets"][:n]
            explain_fn = method_explain_fn(name, method_options(explain_config, name, classifier),
                                           classifier, rb)
            timing_file = run_dir / f"{name}.json"
            timing = json.loads(timing_file.read_text()) if timing_file.exists() else {}
            explain_s = timing.get("seconds", 0.0) * n / max(1, timing.get("images", n))
            c = completeness({k: v[:n] for k, v in arrays.items()})
            if c:
                results["completeness"][name] = c
        else:
            maps, explain_fn, explain_s = None, M.baseline_explain_fn(name), None
            targets = first_targets
        values, robust_s = evaluate_method(name, maps, targets, images, explain_fn, classifier,
                                           cascade, config, fns, drops)
        row = {"images": n, "explain_seconds": None if explain_s is None else round(explain_s, 2),
               "evaluate_seconds": round(time.perf_counter() - t0, 2),
               "robustness_seconds": round(robust_s, 2), "metrics": {},
               "deletion_curve": values["deletion_curve"].mean(0).tolist(),
               "insertion_curve": values["insertion_curve"].mean(0).tolist(),
               "cascade": {m: [float(np.mean(values[f"cascade_{m}_{s}"])) if f"cascade_{m}_{s}" in values
                               else float("nan") for s, _ in cascade] for m in ("spearman", "ssim")}}
        for m in METRICS:
            mean, se, count = summarize(values[m]) if m in values else (float("nan"),) * 2 + (0,)
            row["metrics"][m] = {"mean": mean, "se": se, "n": count}
        results["methods"][name] = row
        per_example.update({f"{name}/{k}": v for k, v in values.items()})
    write_leaderboard(out, results)
    write_json_atomic(out / "evaluation.json", _json_safe(results))
    tmp = out / "per_example.npz.tmp"
    with open(tmp, "wb") as f:
        np.savez(f, **per_example)
    tmp.replace(out / "per_example.npz")
    write_figures(out, results)
    if progress:
        print(f"wrote {out}/leaderboard.md ({n} images, peak RSS {peak_rss_mb():.0f} MB)")
    return results


def build_parser() -> ArgumentParser:
    ap = ArgumentParser(prog="python -m mnistxai.evaluate",
                        description="Leaderboard of XAI methods on faithfulness, robustness, "
                                    "complexity and randomization metrics.")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="an output folder of `python -m mnistxai.explain`")
    src.add_argument("--checkpoint", help="explain first (into OUT/explanations), then evaluate")
    ap.add_argument("--out", required=True, help="folder for the leaderboard and figures")
    ap.add_argument("--methods", default="all", help="with --checkpoint: comma-separated or 'all'")
    for f in dataclasses.fields(EvalConfig):
        if f.name != "baselines":
            ap.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default)
    ap.add_argument("--data-dir", default=None, help="MNIST IDX folder (with --checkpoint)")
    ap.add_argument("--options", default=None, help="with --checkpoint: JSON method options")
    ap.add_argument("--no-progress", action="store_true")
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    config = EvalConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(EvalConfig)
                           if f.name != "baselines"}).validate()
    run_dir = args.run
    if args.checkpoint:
        explain_config = ExplainConfig(
            checkpoint=args.checkpoint, methods=parse_methods(args.methods), limit=config.limit,
            seed=config.seed, options=parse_options(args.options), data_dir=args.data_dir).validate()
        run_dir = Path(args.out) / "explanations"
        explain_run(explain_config, run_dir, progress=not args.no_progress)
    evaluate_run(run_dir, args.out, config, progress=not args.no_progress)
    return 0


if __name__ == "__main__":
    run_main(main)
