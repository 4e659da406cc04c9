"""The dataset travels with the classifier: a Fashion-MNIST run is explained and scored on
Fashion-MNIST (Debian's dataset-fashion-mnist, which .ci/run installs), never silently on digits."""

import json

import numpy as np
import pytest

from mnistxai import data
from mnistxai.pipelines.evaluate import EvalConfig, evaluate_run
from mnistxai.pipelines.explain import ExplainConfig, explain_run, load_method
from mnistxai.training.checkpoint import load_classifier
from mnistxai.training.cnn import TrainConfig, train_and_evaluate
from mnistxai.util.errors import InputError


@pytest.fixture(scope="module")
def fashion_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("fashion")
    config = TrainConfig(dataset="fashion_mnist", limit_train=512, limit_test=200, epochs=1)
    train_and_evaluate(config, workdir, progress=False)
    return workdir


def test_a_fashion_run_is_explained_and_scored_on_fashion_mnist(fashion_run, tmp_path):
    classifier = load_classifier(fashion_run)
    assert classifier.dataset == "fashion_mnist"
    config = ExplainConfig(
        checkpoint=str(fashion_run), methods=("saliency",), limit=8, batch_size=8
    )
    explain_run(config, tmp_path / "run", progress=False)
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["dataset"] == "fashion_mnist"
    _, fashion_labels = data.load("fashion_mnist", "test")
    np.testing.assert_array_equal(
        load_method(tmp_path / "run", "saliency")["labels"], fashion_labels[:8]
    )
    results = evaluate_run(
        tmp_path / "run",
        tmp_path / "board",
        EvalConfig(
            limit=8,
            batch_size=8,
            robustness_images=0,
            metrics=("sparseness", "deletion"),
            metric_options={"deletion": {"steps": 2}},
        ),
        progress=False,
    )
    assert results["dataset"] == "fashion_mnist"
    assert "fashion_mnist" in (tmp_path / "board" / "leaderboard.md").read_text()
    with pytest.raises(InputError, match="trained on fashion_mnist, not mnist"):
        explain_run(
            ExplainConfig(
                checkpoint=str(fashion_run), methods=("saliency",), limit=8, dataset="mnist"
            ),
            tmp_path / "other",
            progress=False,
        )


def test_class_names_follow_the_dataset():
    assert data.CLASS_NAMES["fashion_mnist"][9] == "Ankle boot"
    assert data.CLASS_NAMES["mnist"][3] == "3"
