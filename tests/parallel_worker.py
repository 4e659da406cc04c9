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


if __name__ == "__main__":
    scenario, arguments = sys.argv[1], json.loads(sys.argv[2])
    {"explain_sharded": explain_sharded, "explain_run": explain_run}[scenario](arguments)
