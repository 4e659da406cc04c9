"""Batch explanation runs: every method's attributions for a whole split, resumable.

    python -m mnistxai.explain --checkpoint runs/cnn --methods saliency,integrated_gradients \\
        --split test [--limit N] [--batch-size 256] --out runs/explain

writes into ``--out``::

    run.json            the settings (a resumed run must match them; methods may be added)
    <method>.npz        attributions (N, 28, 28) float16 (see below), targets, predictions,
                        labels, indices (int32 (N,)), target_probability, attribution_sum
                        (float32 (N,), summed before rounding) and extra_<name> for the method's
                        extras (IG: extra_convergence_delta, float32 (N,))
    <method>.json       timing: images, seconds, compile_seconds, images_per_s, peak_rss_mb, ...
    parts/<method>/     one .npz per finished batch while a method runs (removed when merged)

Storage: float16 by default. It keeps 3 significant digits over 6e-5..65504 (subnormals to 6e-8),
plenty for ranking, plotting and every metric here, at half the size (15.7 MB for 10,000 maps);
a batch whose maps exceed float16's range is kept in float32 and the method's file is then
float32. ``--dtype float32`` stores exactly what the method returned.

Resume: every batch is written atomically (a temporary file, then ``os.replace``) the moment it
is done, so an interrupted run redoes at most one batch per method; batches are fixed by
``--batch-size`` and each batch's random key is ``fold_in(streams.key(seed, method), first
index)``, so a resumed run produces the same numbers as an uninterrupted one. Members of a
registered group (SmoothGrad, SmoothGrad-Squared and VarGrad) use the group's key: with equal
options they are computed together from one computation, each ``<method>.json`` then holding an
equal share of the time and naming the rest of its group in ``shared_with``. ``run.json`` records
the ``format`` (``RUN_FORMAT``): a folder written by a version with other keys is not resumed.

Devices and processes (``mnistxai.parallel``): each batch is split over every local device (the
model replicated; a batch is padded to a multiple of the device count). Started as N processes
(``--coordinator HOST:PORT --num-processes N --process-id I`` on each, or the environment
variables of ``parallel.initialize``), process I explains batches I, I+N, I+2N, ... into the same
``parts/`` and process 0 merges once all are done. The parts are named by their first image, so a
run is resumed by any number of processes, and its files do not depend on how many made it:
``run.json``'s ``made_with`` lists the (processes, devices) of each session that wrote it.
The random draws do not depend on the split either (``jax_threefry_partitionable``): a run made
on 4 devices, or by 2 processes, equals the one-device run (``tests/test_parallel.py``).

Memory: one batch of explanations at a time (the method's own ``chunk_size`` bounds its inner
loops); the finished maps of a method are held compactly until merged (N x 784 x 2 bytes).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import resource
import shutil
import time
from pathlib import Path
from typing import Optional

import jax
import numpy as np
from tqdm import tqdm

from mnistxai import data, parallel
from mnistxai.models.classifier import predict as classifier_predict
from mnistxai.util.cli import ArgumentParser
from mnistxai.util.atomic import save_npz_atomic, write_json_atomic
from mnistxai.util import streams
from mnistxai.util.errors import InputError
from mnistxai.util.files import exclusive, writable_dir
from mnistxai.xai import parse_methods, registry

DTYPES = ("float16", "float32")
TARGETS = ("predicted", "label")
_FLOAT16_MAX = float(np.finfo(np.float16).max)
# 3: run.json records the dataset, the model and the data that made it; a run folder of
# another format is not resumed
RUN_FORMAT = 3


@dataclasses.dataclass(frozen=True)
class ExplainConfig:
    """Settings of an explanation run (all but ``methods`` must match when resuming).

    Attributes:
      checkpoint: a ``train_mnist.py`` work dir (``load_classifier``); any label when the
        classifier is passed in directly.
      methods: names from ``mnistxai.xai.METHODS``.
      split: "test" (default) or "train"; limit: the first N images (None: all).
      batch_size: images per explained batch and per resume unit (256).
      dtype: "float16" (default) or "float32" for the stored maps.
      seed: the random methods' keys derive from it (0).
      targets: "predicted" (default: explain the predicted class) or "label".
      options: method -> its options (JSON values), e.g. {"integrated_gradients": {"steps": 50}}.
      background: training images drawn as the background of the methods that need one
        (``Method.background``: expected gradients), 100.
      dataset: the images' dataset; None: the one the classifier was trained on (a different
        one is an error: a Fashion-MNIST classifier is explained on Fashion-MNIST).
      data_dir: the IDX folder (None: the loader's defaults).
    """

    checkpoint: str
    methods: tuple
    split: str = "test"
    limit: Optional[int] = None
    batch_size: int = 256
    dtype: str = "float16"
    seed: int = 0
    targets: str = "predicted"
    options: dict = dataclasses.field(default_factory=dict)
    background: int = 100
    dataset: Optional[str] = None
    data_dir: Optional[str] = None

    def validate(self) -> "ExplainConfig":
        if not self.methods:
            raise InputError("no methods given")
        for name in self.methods:
            registry.get(name)
        if len(set(self.methods)) != len(self.methods):
            raise InputError(f"methods are repeated: {', '.join(self.methods)}")
        for name, opts in self.options.items():
            if name not in self.methods:
                raise InputError(f"options given for {name!r}, which is not among the methods")
            if not isinstance(opts, dict):
                raise InputError(f"options of {name!r} must be a dict, got {opts!r}")
        if self.split not in data.SPLITS:
            raise InputError(
                f"unknown split {self.split!r}; choose one of {', '.join(data.SPLITS)}"
            )
        if self.limit is not None and self.limit < 1:
            raise InputError(f"limit must be >= 1, got {self.limit}")
        if self.batch_size < 1 or self.background < 1:
            raise InputError("batch_size and background must be >= 1")
        if self.dtype not in DTYPES:
            raise InputError(f"unknown dtype {self.dtype!r}; choose one of {', '.join(DTYPES)}")
        if self.targets not in TARGETS:
            raise InputError(
                f"unknown targets {self.targets!r}; choose one of {', '.join(TARGETS)}"
            )
        if self.dataset is not None and self.dataset not in data.DATASETS:
            raise InputError(
                f"unknown dataset {self.dataset!r}; choose one of {', '.join(data.DATASETS)}"
            )
        return self

    def for_classifier(self, classifier) -> "ExplainConfig":
        """This config with ``dataset`` the classifier's, or an InputError if it names another."""
        if self.dataset is not None and self.dataset != classifier.dataset:
            raise InputError(
                f"the classifier of {self.checkpoint} was trained on "
                f"{classifier.dataset}, not {self.dataset}: explain it on its own data"
            )
        return dataclasses.replace(self, dataset=classifier.dataset)

    def settings(self) -> dict:
        """What must match for a run to be resumed (everything but the methods), with the
        ``RUN_FORMAT`` the run was made with."""
        d = dataclasses.asdict(self)
        d.pop("methods")
        return {**d, "format": RUN_FORMAT}


def load_images(
    dataset: str, split: str, limit: Optional[int], data_dir=None
) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 (N, 28, 28), int32 (N,)): the first ``limit`` images of ``dataset``'s ``split``."""
    images, labels = data.load(dataset, split, data_dir)
    return images[:limit], labels[:limit]


def method_options(config: ExplainConfig, name: str, classifier) -> dict:
    """The options ``explain`` gets for ``name``; a method that draws baselines from a
    background set (``Method.background``) gets ``config.background`` training images."""
    spec = registry.get(name)
    opts = dict(config.options.get(name, {}))
    if spec.background and "background" not in opts:
        opts["background"] = background_images(config)
    spec.parse(opts, config.batch_size, classifier)  # InputError before compiling
    return opts


def background_images(config: ExplainConfig) -> np.ndarray:
    """uint8 (config.background, 28, 28): training images drawn without replacement from the
    ``background`` stream of the seed (read once per setting)."""
    return _background(config.dataset, config.data_dir, config.seed, config.background)


@functools.lru_cache(maxsize=4)
def _background(dataset, data_dir, seed, n) -> np.ndarray:
    train, _ = data.load(dataset, "train", data_dir)
    pick = jax.random.choice(streams.key(seed, "background"), len(train), (n,), replace=False)
    return train[np.asarray(pick)]


def method_key(seed: int, name: str, start: int) -> jax.Array:
    """The key of the batch of ``name`` that starts at image ``start``. Members of a group
    (``Method.group``) share the group's key, so they can share one computation."""
    group = registry.get(name).group
    return jax.random.fold_in(streams.key(seed, group.name if group else name), start)


def groups(config: ExplainConfig, classifier) -> dict[str, tuple[str, ...]]:
    """{member: the other members} for the methods of ``config`` that can be computed together:
    members of one group whose options agree (the group's ``private`` ones aside). The first to
    run computes all of them (``mnistxai.xai.explain_together``)."""
    found: dict[tuple, list[str]] = {}
    for name in config.methods:
        spec = registry.get(name)
        if spec.group is None:
            continue
        opts = spec.parse(method_options(config, name, classifier), config.batch_size, classifier)
        shared = {k: v for k, v in opts.items() if k not in spec.group.private}
        key = (spec.group.name, tuple(sorted((k, _hashable(v)) for k, v in shared.items())))
        found.setdefault(key, []).append(name)
    return {m: tuple(o for o in g if o != m) for g in found.values() if len(g) > 1 for m in g}


def _hashable(value):
    return value.tobytes() if isinstance(value, np.ndarray) else value


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _store(maps: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "float16" and np.abs(maps).max(initial=0.0) < _FLOAT16_MAX:
        return maps.astype(np.float16)
    return maps.astype(np.float32)


def predict(classifier, images_u8: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(predicted class int32 (N,), softmax probabilities float32 (N, K)), ``batch_size`` at a
    time."""
    return classifier_predict(classifier, data.to_model_input(images_u8), batch_size)


def explain_batch(
    names, classifier, images_u8, labels, start, config, options, predictions, probs
) -> dict:
    """{name: the stored arrays of one batch} for ``names``: one method, or SmoothGrad-family
    methods computed together (their images start at index ``start`` of the split;
    ``predictions``, ``probs``: the model's, for these images)."""
    from mnistxai.xai import explain, explain_together

    n = len(images_u8)
    # one compiled shape per run: the last batch is padded to batch_size (and every batch to a
    # multiple of the local device count), each split over this process's devices
    mesh = parallel.local_data_mesh()
    size = config.batch_size if mesh is None else parallel.padded_size(config.batch_size, mesh)
    x = data.to_model_input(parallel.pad_batch(images_u8, size))
    targets = parallel.pad_batch(labels, size) if config.targets == "label" else None
    if mesh is not None:
        x = parallel.shard_batch(x, mesh)
        targets = None if targets is None else parallel.shard_batch(targets, mesh)
    key = method_key(config.seed, names[0], start)
    results = (
        {names[0]: explain(names[0], classifier, x, targets, key=key, **options)}
        if len(names) == 1
        else explain_together(names, classifier, x, targets, key=key, **options)
    )
    out = {}
    for name, result in results.items():
        maps = np.asarray(result.attributions, np.float32)[:n]
        t = np.asarray(result.targets)[:n]
        out[name] = {
            "attributions": _store(maps, config.dtype),
            "targets": t,
            "predictions": predictions,
            "labels": labels.astype(np.int32),
            "indices": np.arange(start, start + n, dtype=np.int32),
            "target_probability": probs[np.arange(n), t].astype(np.float32),
            "attribution_sum": maps.sum((1, 2)),
        }
        for k, v in result.extras.items():
            out[name][f"extra_{k}"] = np.asarray(v)[:n]
    return out


def _merge(parts: list[Path]) -> dict:
    loaded = [dict(np.load(p)) for p in parts]
    merged = {
        k: np.concatenate([d[k] for d in loaded]) for k in loaded[0] if k not in ("seconds", "warm")
    }
    timing = {
        "seconds": float(sum(d["seconds"] for d in loaded)),
        "warm_seconds": float(sum(d["seconds"] for d in loaded if d["warm"])),
        "warm_batches": int(sum(bool(d["warm"]) for d in loaded)),
    }
    return merged, timing


def run_method(
    name: str,
    classifier,
    images: np.ndarray,
    labels: np.ndarray,
    config: ExplainConfig,
    out: Path,
    progress: bool = True,
    budget: Optional[list] = None,
    predicted=None,
    companions: tuple = (),
) -> Optional[dict]:
    """Explain ``images`` with ``name`` into ``out/<name>.npz``; returns its timing, or None when
    ``budget`` ([batches left], shared by the methods of a call) ran out first. ``predicted``:
    ``predict``'s output for ``images`` (computed here when not given). ``companions``: methods
    of ``groups`` whose batches are computed along with these (into their parts/ folders).
    In a run of several processes this does only this process's batches and returns None
    (``explain_run`` merges once all processes are done)."""
    final = out / f"{name}.npz"
    if final.exists():
        return json.loads((out / f"{name}.json").read_text())
    if not explain_parts(
        name, classifier, images, labels, config, out, progress, budget, predicted, companions
    ):
        return None
    if jax.process_count() > 1:
        return None
    return merge_method(name, len(images), config, out, classifier, companions)


def explain_parts(
    name, classifier, images, labels, config, out, progress, budget, predicted, companions
) -> bool:
    """Write this process's missing batches of ``name`` (``parallel.process_share``) into
    ``out/parts/<name>/``; False when ``budget`` ran out first (see ``run_method``)."""
    options = method_options(config, name, classifier)
    group = (name,) + tuple(c for c in companions if not (out / f"{c}.npz").exists())
    call_options = dict(options)
    private = registry.get(name).group.private if companions else ()
    for member in group[1:]:  # options a companion may hold differently: its own values
        member_options = method_options(config, member, classifier)
        call_options.update((k, member_options[k]) for k in private if k in member_options)
    part_dir = out / "parts" / name
    part_dir.mkdir(parents=True, exist_ok=True)
    n, b = len(images), config.batch_size
    all_starts = range(0, n, b)
    starts = [all_starts[i] for i in parallel.process_share(len(all_starts))]
    done = [s for s in starts if (part_dir / f"{s:07d}.npz").exists()]
    bar = tqdm(
        total=sum(min(b, n - s) for s in starts),
        initial=sum(min(b, n - s) for s in done),
        unit="img",
        desc=name,
        disable=not progress,
        dynamic_ncols=True,
    )
    warm = False
    preds, probs = predicted if predicted is not None else predict(classifier, images, b)
    for s in starts:
        path = part_dir / f"{s:07d}.npz"
        if path.exists():
            continue
        if budget is not None:
            if budget[0] <= 0:
                bar.close()
                return False
            budget[0] -= 1
        t0 = time.perf_counter()
        batch = explain_batch(
            group,
            classifier,
            images[s : s + b],
            labels[s : s + b],
            s,
            config,
            call_options,
            preds[s : s + b],
            probs[s : s + b],
        )
        seconds = (time.perf_counter() - t0) / len(group)  # companions: an equal share each
        for member in group[1:] + (name,):  # own part last: it marks the batch as done
            member_path = out / "parts" / member / path.name
            if member == name or not member_path.exists():
                member_path.parent.mkdir(parents=True, exist_ok=True)
                save_npz_atomic(member_path, **batch[member], seconds=seconds, warm=warm)
        warm = True
        bar.update(len(batch[name]["targets"]))
    bar.close()
    return True


def merge_method(name, n, config, out, classifier, companions) -> dict:
    """Merge the parts of ``name`` (written by any number of processes) into
    ``out/<name>.npz`` and its timing ``out/<name>.json``; returns the timing."""
    part_dir = out / "parts" / name
    b = config.batch_size
    starts = range(0, n, b)
    missing = [s for s in starts if not (part_dir / f"{s:07d}.npz").exists()]
    if missing:  # a process of the run did not finish its share: an internal error
        raise RuntimeError(f"{name}: the batches at {missing[:5]} are missing from {part_dir}")
    options = method_options(config, name, classifier)
    merged, timing = _merge([part_dir / f"{s:07d}.npz" for s in starts])
    # steady throughput: batches after the first of a session (which includes compiling), each
    # counted as batch_size images of work (the last batch is padded to that size)
    warm_s = timing["warm_seconds"]
    rate = timing["warm_batches"] * b / warm_s if warm_s > 0 else None
    cold_batches = len(starts) - timing["warm_batches"]
    cold = timing["seconds"] - warm_s
    timing = {
        "method": name,
        "images": n,
        "seconds": round(timing["seconds"], 3),
        "images_per_s": None if rate is None else round(rate, 1),
        "wall_images_per_s": round(n / timing["seconds"], 1),
        "compile_seconds": None
        if rate is None
        else round(max(0.0, cold - cold_batches * b / rate), 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "peak_device_mb": parallel.peak_device_memory_mb(),  # None on CPU
        "dtype": str(merged["attributions"].dtype),
        "batch_size": b,
        "device": str(jax.local_devices()[0]),
        **parallel.describe(),
        "shared_with": list(companions),
        "options": {k: v for k, v in options.items() if not isinstance(v, np.ndarray)},
    }
    # the .json before the .npz: the .npz marks the method done, so its .json always exists
    write_json_atomic(out / f"{name}.json", timing)
    save_npz_atomic(out / f"{name}.npz", **merged)
    shutil.rmtree(part_dir)
    if not any(part_dir.parent.iterdir()):
        part_dir.parent.rmdir()
    return timing


def provenance(config: ExplainConfig, classifier, images: np.ndarray, labels: np.ndarray) -> dict:
    """What made a run: the model (its checkpoint step, a hash of its weights) and the data (a
    hash of the images and labels). A run is resumed only with the same."""
    from mnistxai.training import checkpoint

    try:
        step = checkpoint.latest_step(checkpoint.resolve_checkpoint_dir(config.checkpoint))
    except checkpoint.CheckpointError:  # a label, the classifier having been passed in
        step = None
    return {
        "model": {"checkpoint_step": step, "weights": checkpoint.fingerprint(classifier.variables)},
        "data": {"images": checkpoint.fingerprint({"images": images, "labels": labels})},
    }


def _check_run_file(out: Path, config: ExplainConfig, made_by: dict) -> dict:
    path = out / "run.json"
    settings = {**config.settings(), **made_by, "methods": list(config.methods)}
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise InputError(f"{path} is not valid JSON ({e}): choose a new --out") from None
        old_methods = old.pop("methods", [])
        old.pop("images", None)
        made_with = old.pop("made_with", [])  # who wrote it: any processes and devices may resume
        new = json.loads(json.dumps({**config.settings(), **made_by}))  # tuples -> lists
        if old != new:
            diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise InputError(
                f"{out} holds a run with other settings ({', '.join(diff)}): another model, data "
                f"or options; resume with the same ones or choose a new --out"
            )
        settings["methods"] = list(dict.fromkeys(old_methods + list(config.methods)))
        settings["made_with"] = made_with
    return settings


def explain_run(
    config: ExplainConfig,
    out,
    classifier=None,
    images=None,
    labels=None,
    progress: bool = True,
    max_batches: Optional[int] = None,
) -> dict:
    """Run (or resume) ``config`` into the folder ``out``; returns {method: timing} of finished
    ones.

    ``classifier`` defaults to ``load_classifier(config.checkpoint)`` and ``images``/``labels``
    (uint8 (N, 28, 28), int (N,)) to the first ``limit`` of the split of the classifier's
    dataset; tests pass their own.
    ``max_batches``: compute at most that many new batches, then return (tests, time-boxed runs;
    one process only).

    Every process of a ``jax.distributed`` run (``mnistxai.parallel.initialize``) calls this with
    the same arguments: each explains its share of the batches over its local devices, all wait
    for each other, and process 0 merges. A run is resumed by any number of processes.
    """
    config.validate()
    if max_batches is not None and jax.process_count() > 1:
        raise InputError("max_batches is for one process: the others would wait for ever")
    if classifier is None:
        from mnistxai.training.checkpoint import load_classifier

        classifier = load_classifier(config.checkpoint)
    config = config.for_classifier(classifier)
    out = writable_dir(out, "--out")
    index = jax.process_index()  # one writer per process index: process 0 holds .lock
    with exclusive(out, "--out", ".lock" if index == 0 else f".lock.{index}"):
        return _explain_run(config, out, classifier, images, labels, progress, max_batches)


def _explain_run(config, out, classifier, images, labels, progress, max_batches) -> dict:
    if images is None:
        images, labels = load_images(config.dataset, config.split, config.limit, config.data_dir)
    images = np.asarray(images, np.uint8)
    labels = np.asarray(labels, np.int32)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.shape != images.shape[:1]:
        raise InputError(
            f"images must be (N, 28, 28) with (N,) labels, got {images.shape}, {labels.shape}"
        )
    settings = _check_run_file(out, config, provenance(config, classifier, images, labels))
    for name in config.methods:
        method_options(config, name, classifier)  # every method's options, before any compiling
    made_with = parallel.describe()
    if progress:
        print(
            f"explaining {len(images):,} images on {made_with['processes']} process(es) x "
            f"{made_with['local_devices']} {made_with['backend']} device(s) "
            f"({made_with['device_kind']}) into {out}",
            flush=True,
        )
    if jax.process_index() == 0:
        history = settings.get("made_with", [])
        settings["made_with"] = history + ([made_with] if made_with not in history else [])
        write_json_atomic(out / "run.json", {**settings, "images": len(images)})
    budget = None if max_batches is None else [max_batches]
    todo = [m for m in config.methods if not (out / f"{m}.npz").exists()]
    predicted = _predict_share(classifier, images, config.batch_size) if todo else None
    together = groups(config, classifier)

    def run(name: str):
        return run_method(
            name,
            classifier,
            images,
            labels,
            config,
            out,
            progress,
            budget,
            predicted,
            together.get(name, ()),
        )

    if jax.process_count() > 1:
        return _explain_together_processes(config, out, classifier, len(images), run, together)
    timings = {}
    for name in config.methods:
        timing = run(name)
        if timing is None:
            break
        timings[name] = timing
        if progress:
            print(
                f"{name}: {timing['images']} images, {timing['images_per_s']} images/s, "
                f"peak RSS {peak_rss_mb():.0f} MB",
                flush=True,
            )
    return timings


def _predict_share(classifier, images, batch_size) -> tuple[np.ndarray, np.ndarray]:
    """``predict`` for the images of this process's batches (zeros elsewhere)."""
    starts = range(0, len(images), batch_size)
    mine = [starts[i] for i in parallel.process_share(len(starts))]
    if len(mine) == len(starts):
        return predict(classifier, images, batch_size)
    rows = np.concatenate([np.arange(s, min(s + batch_size, len(images))) for s in mine])
    preds = np.zeros(len(images), np.int32)
    probs = np.zeros((len(images), classifier.model.num_classes), np.float32)
    preds[rows], probs[rows] = predict(classifier, images[rows], batch_size)
    return preds, probs


def _explain_together_processes(config, out, classifier, n, run, together) -> dict:
    """``_explain_run``'s loop in a run of several processes: every process its share of every
    method (``run(name)``: ``run_method``, which does only this process's parts), then
    process 0 merges the ``n`` images' parts while the others wait."""
    for name in config.methods:
        run(name)
    parallel.barrier("mnistxai.explain: parts written")
    if jax.process_index() == 0:
        for name in config.methods:
            if not (out / f"{name}.npz").exists():
                merge_method(name, n, config, out, classifier, together.get(name, ()))
    parallel.barrier("mnistxai.explain: merged")
    return {m: json.loads((out / f"{m}.json").read_text()) for m in config.methods}


def load_method(run_dir, name: str) -> dict:
    """The arrays of ``run_dir/<name>.npz`` (attributions as float32)."""
    path = Path(run_dir) / f"{name}.npz"
    if not path.exists():
        raise InputError(
            f"{path} does not exist (has `python -m mnistxai.explain` finished {name}?)"
        )
    with np.load(path) as f:
        arrays = dict(f)
    arrays["attributions"] = arrays["attributions"].astype(np.float32)
    return arrays


def parse_options(text: Optional[str], flag: str = "--options") -> dict:
    """A JSON object of per-name option objects, ``{"name": {"option": value}}``."""
    if not text:
        return {}
    try:
        options = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{flag} is not valid JSON: {e}") from None
    if not isinstance(options, dict) or not all(isinstance(v, dict) for v in options.values()):
        raise InputError(
            f'{flag} must be a JSON object of objects: {{"name": {{"option": value}}}}'
        )
    return options


def build_parser() -> ArgumentParser:
    ap = ArgumentParser(
        prog="python -m mnistxai.explain",
        description="Attributions of XAI methods for an MNIST split, resumable.",
    )
    ap.add_argument("--checkpoint", required=True, help="work dir written by train_mnist.py")
    ap.add_argument("--methods", required=True, help="comma-separated names, or 'all'")
    ap.add_argument("--out", required=True, help="output folder (resumed if it holds this run)")
    defaults = ExplainConfig(checkpoint="", methods=())
    ap.add_argument("--split", default=defaults.split, choices=data.SPLITS)
    ap.add_argument("--limit", type=int, default=defaults.limit, help="first N images (all)")
    ap.add_argument("--batch-size", type=int, default=defaults.batch_size)
    ap.add_argument("--dtype", default=defaults.dtype, choices=DTYPES)
    ap.add_argument("--seed", type=int, default=defaults.seed)
    ap.add_argument("--targets", default=defaults.targets, choices=TARGETS)
    ap.add_argument(
        "--options",
        default=None,
        help='JSON method options, e.g. \'{"integrated_gradients": {"steps": 50}}\'',
    )
    ap.add_argument(
        "--background",
        type=int,
        default=defaults.background,
        help="training images drawn as the background of the methods that need one",
    )
    ap.add_argument("--data-dir", default=defaults.data_dir, help="IDX folder")
    ap.add_argument("--no-progress", action="store_true")
    parallel.add_process_flags(ap)
    return ap


def config_from_args(args) -> ExplainConfig:
    return ExplainConfig(
        checkpoint=args.checkpoint,
        methods=parse_methods(args.methods),
        split=args.split,
        limit=args.limit,
        batch_size=args.batch_size,
        dtype=args.dtype,
        seed=args.seed,
        targets=args.targets,
        options=parse_options(args.options),
        background=args.background,
        data_dir=args.data_dir,
    ).validate()


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    parallel.initialize_from_args(args)
    config = config_from_args(args)
    explain_run(config, args.out, progress=not args.no_progress)
    print(f"wrote {args.out} (peak RSS {peak_rss_mb():.0f} MB)")
    return 0
