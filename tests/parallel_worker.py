"""What tests/test_parallel.py runs in subprocesses with several (forced CPU) devices or as one
of several jax.distributed processes: ``python tests/parallel_worker.py <scenario> <json args>``.
"""

import json
import sys

import jax
import numpy as np

from mnistxai import data, parallel


def classifier():
    """The same random-weight CNN in every process (eval mode)."""
    from mnistxai.models.classifier import Classifier
    from mnistxai.models.cnn import CNN, init_cnn

    return Classifier(init_cnn(CNN(), jax.random.key(0)))


def digits(data_dir: str, n: int):
    images, labels = data.load("mnist", "test", data_dir)
    return images[:n], labels[:n]


def explain_sharded(args) -> None:
    """``explain`` on a sharded batch against the same batch on one device, for a deterministic
    and a stochastic method, a batch that divides by the device count and one that does not."""
    from mnistxai.util.errors import InputError
    from mnistxai.xai import explain

    clf = classifier()
    images, labels = digits(args["data_dir"], 8)
    x = np.asarray(data.to_model_input(images))
    mesh = parallel.data_mesh()
    report = {"devices": jax.local_device_count()}
    cases = {
        "saliency": ("saliency", {}),
        "integrated_gradients": ("integrated_gradients", {"steps": 8}),
        "smoothgrad": ("smoothgrad", {"samples": 6, "key": jax.random.key(3)}),
    }
    for label, (name, options) in cases.items():
        reference = np.asarray(explain(name, clf, x, labels, **options).attributions)
        result = explain(
            name, clf, parallel.shard_batch(x, mesh), labels_sharded(labels), **options
        )
        report[label] = {
            "max_abs_diff": float(np.abs(np.asarray(result.attributions) - reference).max()),
            "scale": float(np.abs(reference).max()),
            "devices_of_result": len(result.attributions.sharding.device_set),
        }
    # 6 images over 4 devices: padded to 8, explained, the padding dropped
    six = x[:6]
    padded = parallel.pad_batch(six, parallel.padded_size(6, mesh))
    reference = np.asarray(explain("integrated_gradients", clf, six, steps=8).attributions)
    result = explain("integrated_gradients", clf, parallel.shard_batch(padded, mesh), steps=8)
    report["not_divisible"] = {
        "padded_to": len(padded),
        "max_abs_diff": float(np.abs(np.asarray(result.attributions)[:6] - reference).max()),
    }
    try:
        parallel.shard_batch(six, mesh)
        report["unpadded_error"] = None
    except ValueError as e:
        report["unpadded_error"] = str(e)
    bad = x.copy()
    bad[5, 3, 3, 0] = np.nan
    try:
        explain("saliency", clf, parallel.shard_batch(bad, mesh))
        report["nan_error"] = None
    except InputError as e:
        report["nan_error"] = str(e)
    print(json.dumps(report))


def labels_sharded(labels):
    return parallel.shard_batch(np.asarray(labels, np.int32))


def explain_run(args) -> None:
    """One explain run (``mnistxai.pipelines.explain``) into ``args["out"]``, as one process or
    as process ``args["process_id"]`` of ``args["num_processes"]``."""
    from mnistxai.pipelines.explain import ExplainConfig, explain_run

    if args.get("num_processes", 1) > 1:
        parallel.initialize(args["coordinator"], args["num_processes"], args["process_id"])
    images, labels = digits(args["data_dir"], args["images"])
    config = ExplainConfig(
        checkpoint="random-cnn",
        methods=tuple(args["methods"]),
        batch_size=args["batch_size"],
        dtype="float32",
        options=args.get("options", {}),
    )
    explain_run(config, args["out"], classifier(), images, labels, progress=False)
    print(json.dumps(parallel.describe()))


def train_step(args) -> None:
    """One training step's loss, gradients and BatchNorm statistics, on a batch split over the
    devices against the same batch on one device (relative differences)."""
    import optax

    from mnistxai.models.cnn import CNN, init_cnn

    images, labels = data.load("mnist", "train", args["data_dir"])
    batch = images[:64], labels[:64].astype(np.int32)
    model = CNN()
    variables = init_cnn(model, jax.random.key(0))

    def loss(params, batch_stats, x, y):
        logits, updates = model.apply(
            {"params": params, "batch_stats": batch_stats},
            data.to_model_input(x),
            train=True,
            mutable=["batch_stats"],
            rngs={"dropout": jax.random.key(1)},
        )
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), updates

    step = jax.jit(jax.value_and_grad(loss, has_aux=True))
    (l1, stats1), grads1 = step(variables["params"], variables["batch_stats"], *batch)
    mesh = parallel.training_mesh(64)
    v = parallel.replicate(variables, mesh)
    (l4, stats4), grads4 = step(v["params"], v["batch_stats"], *parallel.split_like(batch, mesh))

    def rel(a, b):
        a, b = jax.tree.leaves(a), jax.tree.leaves(b)
        diff = sum(float(((x - y) ** 2).sum()) for x, y in zip(a, b)) ** 0.5
        return diff / sum(float((x**2).sum()) for x in a) ** 0.5

    report = {
        "devices": int(mesh.devices.size),
        "gradient_sharded": len(jax.tree.leaves(grads4)[0].sharding.device_set),
        "loss": abs(float(l1) - float(l4)) / abs(float(l1)),
        "gradients": rel(grads1, grads4),
        "batch_stats": rel(stats1, stats4),
    }
    print(json.dumps(report))


def train(args) -> None:
    """A short CNN training (``args["epochs"]``, default 1) into ``args["workdir"]``, as one
    process or as process ``args["process_id"]`` of ``args["num_processes"]``, stopped after
    ``args["max_steps"]`` or resumed (``args["resume"]``); prints the last epoch's record (or
    the step it stopped at) and the run's devices."""
    from mnistxai.training.cnn import TrainConfig, train_and_evaluate
    from mnistxai.training.loop import TrainingInterrupted

    if args.get("num_processes", 1) > 1:
        parallel.initialize(args["coordinator"], args["num_processes"], args["process_id"])
    config = TrainConfig(
        data_dir=args["data_dir"],
        limit_train=args["images"],
        limit_test=256,
        epochs=args.get("epochs", 1),
        batch_size=args["batch_size"],
    )
    try:
        history = train_and_evaluate(
            config,
            args["workdir"],
            resume=args.get("resume", False),
            max_steps=args.get("max_steps"),
            progress=False,
        )
        record = history["epochs"][-1]
    except TrainingInterrupted as e:
        record = {"interrupted": str(e)}
    print(json.dumps({**record, **parallel.describe()}))


def leaderboard(args) -> None:
    """Saliency's explain run into ``args["run"]`` and its leaderboard into ``args["out"]``:
    every metric of the default set, ``args["batch_size"]`` images per metric call; as one
    process or as process ``args["process_id"]`` of ``args["num_processes"]``."""
    from mnistxai.pipelines.evaluate import EvalConfig, evaluate_run
    from mnistxai.pipelines.explain import ExplainConfig, explain_run
    from test_explain_run import TINY  # the metrics at a few steps each (this folder's module)

    if args.get("num_processes", 1) > 1:
        parallel.initialize(args["coordinator"], args["num_processes"], args["process_id"])
    images, labels = digits(args["data_dir"], args["images"])
    run = ExplainConfig(checkpoint="random-cnn", methods=("saliency",), batch_size=8)
    explain_run(run, args["run"], classifier(), images, labels, progress=False)
    config = EvalConfig(
        limit=args["images"],
        batch_size=args["batch_size"],
        robustness_images=3,
        costly_robustness_images=3,
        metric_options=TINY,
        bootstrap_samples=50,
        cost_images=0,
    )
    evaluate_run(args["run"], args["out"], config, classifier(), images, progress=False)
    print(json.dumps(parallel.describe()))


if __name__ == "__main__":
    scenario, arguments = sys.argv[1], json.loads(sys.argv[2])
    scenarios = {"explain_sharded": explain_sharded, "explain_run": explain_run}
    scenarios.update(leaderboard=leaderboard, train=train, train_step=train_step)
    scenarios[scenario](arguments)
