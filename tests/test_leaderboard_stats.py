"""The leaderboard's intervals, ranks, Kendall's W and costs (``evaluate.add_statistics``,
``write_leaderboard``), and a ``mnist_shortcut`` run scored against the markers in its own
images."""

import csv
import json

import jax
import numpy as np
import pytest

from mnistxai import data, shortcut
from mnistxai.models.classifier import Classifier
from mnistxai.models.cnn import CNN, init_cnn
from mnistxai.pipelines import ranking
from mnistxai.pipelines.evaluate import EvalConfig, add_statistics, build_parser, evaluate_run
from mnistxai.pipelines.explain import ExplainConfig, explain_run
from mnistxai.util.errors import InputError

N = 8
LOCALISATION = ("pointing_game", "relevance_mass_accuracy")


@pytest.fixture(scope="module")
def small():
    model = CNN(widths=(4, 8, 8), hidden=16)
    return Classifier(init_cnn(model, jax.random.key(0)), model, dataset="mnist_shortcut")


@pytest.fixture(scope="module")
def marked(mnist_dir):
    images, labels = data.load("mnist", "test", mnist_dir)
    images, labels = images[:N], labels[:N]
    marker = labels.copy()
    marker[[1, 5]] = -1  # two digits without a marker: no ground truth there
    return shortcut.add_markers(images, labels, marker)


@pytest.fixture(scope="module")
def shortcut_run(tmp_path_factory, small, marked):
    run = tmp_path_factory.mktemp("shortcut") / "run"
    config = ExplainConfig(checkpoint="test-classifier", methods=("saliency",), batch_size=N)
    explain_run(config, run, small, marked.images, marked.labels, progress=False)
    assert json.loads((run / "run.json").read_text())["dataset"] == "mnist_shortcut"
    return run


def _config(**kw):
    base = dict(
        limit=N,
        batch_size=N,
        robustness_images=0,
        metrics=("sparseness", *LOCALISATION),
        bootstrap_samples=50,
        cost_images=0,
    )
    return EvalConfig(**{**base, **kw})


def test_a_shortcut_run_is_scored_against_the_markers_in_its_images(
    tmp_path, small, marked, shortcut_run
):
    derived = evaluate_run(
        shortcut_run, tmp_path / "a", _config(), small, marked.images, progress=False
    )
    given = evaluate_run(
        shortcut_run,
        tmp_path / "b",
        _config(),
        small,
        marked.images,
        progress=False,
        masks=marked.masks,
    )
    assert derived["masks"] == "markers" and given["masks"] == "given"
    assert set(LOCALISATION) <= set(derived["columns"])
    a, b = np.load(tmp_path / "a" / "per_example.npz"), np.load(tmp_path / "b" / "per_example.npz")
    for metric in LOCALISATION:
        for row in ("saliency", "random", "sobel"):
            got = a[f"{row}/{metric}"]
            np.testing.assert_array_equal(got, b[f"{row}/{metric}"])
            assert np.isnan(got[[1, 5]]).all() and np.isfinite(np.delete(got, [1, 5])).all()
        assert derived["methods"]["saliency"]["metrics"][metric]["n"] == N - 2
    # a plain MNIST run has no masks to find: naming a localisation metric is an error
    plain = tmp_path / "plain"
    explain_run(
        ExplainConfig(checkpoint="test-classifier", methods=("saliency",), batch_size=N),
        plain,
        small.replace(dataset="mnist"),
        marked.images,
        marked.labels,
        progress=False,
    )
    with pytest.raises(InputError, match="need ground-truth masks"):
        evaluate_run(
            plain, tmp_path / "c", _config(), small.replace(dataset="mnist"), marked.images
        )


def test_leaderboard_files_carry_intervals_ranks_w_and_costs(tmp_path, small, marked, shortcut_run):
    config = _config(
        metrics=("sparseness", "deletion", "pointing_game"),
        metric_options={"deletion": {"steps": 2}},
        bootstrap_samples=200,
        cost_images=2,
    )
    res = evaluate_run(shortcut_run, tmp_path, config, small, marked.images, progress=False)
    cols = list(res["columns"])
    assert res["categories"] == {
        "faithfulness": ["deletion_auc"],
        "complexity": ["sparseness"],
        "localisation": ["pointing_game"],
    }
    with (tmp_path / "leaderboard.csv").open() as f:
        table = list(csv.DictReader(f))
    assert [r["method"] for r in table] == ["saliency", "random", "sobel"]
    per = np.load(tmp_path / "per_example.npz")
    for col in cols:
        better = res["columns"][col][0]
        want = ranking.bootstrap(
            {r: per[f"{r}/{col}"] for r in res["methods"]}, better, 200, 0.95, seed=(0, N)
        )
        for r in table:
            entry = res["methods"][r["method"]]["metrics"][col]
            for k in ("ci_low", "ci_high", "rank", "rank_low", "rank_high"):
                assert float(r[f"{col}_{k}"]) == pytest.approx(want[r["method"]][k], rel=1e-5)
                assert entry[k] == pytest.approx(want[r["method"]][k], rel=1e-12)
            assert entry["ci_low"] <= entry["mean"] <= entry["ci_high"]
            assert entry["rank_images"] == N
    # cost: the method's, none for the baselines
    sal = table[0]
    assert float(sal["flops_per_image"]) > float(sal["forward_equivalents"]) > 1
    assert float(sal["seconds_per_image"]) > 0
    assert table[1]["flops_per_image"] == "" and res["methods"]["random"]["cost"] is None
    cost = res["methods"]["saliency"]["cost"]
    assert cost["forward_equivalents"] == pytest.approx(
        cost["flops_per_image"] / cost["forward_flops"]
    )
    # Kendall's W of the three columns' rankings of the three rows
    point = [[res["methods"][r]["metrics"][c]["rank"] for r in res["methods"]] for c in cols]
    w = res["concordance"]
    assert w["w"] == pytest.approx(float(ranking.kendalls_w(np.array(point))))
    assert w["metrics"] == 3 and w["methods"] == 3 and 0 <= w["ci_low"] <= w["ci_high"] <= 1
    saved = json.loads((tmp_path / "evaluation.json").read_text())
    assert saved["concordance"]["w"] == pytest.approx(w["w"])
    assert "ci_low" in saved["methods"]["saliency"]["metrics"]["sparseness"]
    md = (tmp_path / "leaderboard.md").read_text()
    assert "## Rank [low, high]" in md and "Kendall's W" in md and "## Cost per image" in md
    low = res["methods"]["saliency"]["metrics"]["sparseness"]["ci_low"]
    assert f" [{low:.3f}, " in md
    for f in ("ranks.png", "pareto.png", "bars.png"):
        assert (tmp_path / f).stat().st_size > 0, f


def test_without_resamples_the_ranks_stay_and_the_intervals_go(
    tmp_path, small, marked, shortcut_run
):
    res = evaluate_run(
        shortcut_run,
        tmp_path,
        _config(metrics=("sparseness",), bootstrap_samples=0),
        small,
        marked.images,
        progress=False,
    )
    entry = res["methods"]["saliency"]["metrics"]["sparseness"]
    assert np.isnan(entry["ci_low"]) and np.isnan(entry["rank_low"]) and entry["rank"] >= 1
    md = (tmp_path / "leaderboard.md").read_text()
    assert "± " in md and "## Rank" in md and "## Cost per image" not in md


def test_columns_on_fewer_images_rank_on_the_common_ones():
    """Column y: row a has 6 images, b and c 4 (a cheaper method's larger robustness subset):
    ranks on the 4 common images, a's mean interval from its own 6. Column z is missing for c:
    nothing to rank, and W comes from x and y."""
    rng = np.random.default_rng(0)
    scored = {
        "a": {"x": rng.normal(size=10), "y": rng.normal(size=6), "z": rng.normal(size=3)},
        "b": {"x": rng.normal(size=10) + 1, "y": rng.normal(size=4), "z": rng.normal(size=3)},
        "c": {"x": rng.normal(size=10) - 1, "y": rng.normal(size=4)},
    }
    columns = {"x": ["higher", ""], "y": ["lower", ""], "z": ["higher", ""]}
    results = {"methods": {r: {"metrics": {c: {} for c in columns}} for r in scored}}
    results["columns"] = columns
    w = add_statistics(results, scored, EvalConfig(bootstrap_samples=300, seed=3))
    rows = results["methods"]
    x = ranking.bootstrap({r: v["x"] for r, v in scored.items()}, "higher", 300, seed=(3, 10))
    y = ranking.bootstrap({r: v["y"][:4] for r, v in scored.items()}, "lower", 300, seed=(3, 4))
    own = ranking.bootstrap({"a": scored["a"]["y"]}, "lower", 300, seed=(3, 6))["a"]
    for r in scored:
        for k in ("ci_low", "ci_high", "rank", "rank_median", "rank_low", "rank_high"):
            assert rows[r]["metrics"]["x"][k] == x[r][k]
        for k in ("rank", "rank_low", "rank_high"):
            assert rows[r]["metrics"]["y"][k] == y[r][k]
        assert rows[r]["metrics"]["y"]["rank_images"] == 4
        assert (
            np.isnan(rows[r]["metrics"]["z"]["rank"])
            and rows[r]["metrics"]["z"]["rank_images"] == 0
        )
    assert rows["b"]["metrics"]["y"]["ci_low"] == y["b"]["ci_low"]
    assert rows["a"]["metrics"]["y"]["ci_low"] == own["ci_low"] != y["a"]["ci_low"]
    point = [[x[r]["rank"] for r in scored], [y[r]["rank"] for r in scored]]
    assert w["metrics"] == 2 and w["w"] == pytest.approx(float(ranking.kendalls_w(np.array(point))))
    resampled = np.array(
        [[x[r]["rank_samples"] for r in scored], [y[r]["rank_samples"] for r in scored]]
    )
    boot = ranking.kendalls_w(np.moveaxis(resampled, 2, 0))  # (resamples, metrics, rows)
    lo, hi = np.nanquantile(boot, [0.025, 0.975])
    assert (w["ci_low"], w["ci_high"]) == pytest.approx((lo, hi))


def test_flags_and_checks():
    args = build_parser().parse_args(
        ["--run", "r", "--out", "o", "--bootstrap-samples", "0", "--cost-images", "4"]
    )
    assert args.bootstrap_samples == 0 and args.cost_images == 4
    assert EvalConfig().bootstrap_samples == 1000 and EvalConfig().cost_images == 8
    for field in ("bootstrap_samples", "cost_images"):
        with pytest.raises(InputError, match=field):
            EvalConfig(**{field: -1}).validate()
