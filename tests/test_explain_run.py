"""Explanation runs (resume, chunking, file format, CLI errors) and the leaderboard end to end."""

import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from mnistxai import data
from mnistxai.models.classifier import Classifier
from mnistxai.pipelines.evaluate import (
    EvalConfig,
    evaluate_method,
    evaluate_run,
    score_fns,
    shared_parts,
)
from mnistxai.pipelines.explain import ExplainConfig, explain_run, load_method
from mnistxai.models.cnn import CNN, init_cnn
from mnistxai.xai import metrics as M
from mnistxai.xai.methods.integrated_gradients import completeness
from mnistxai.xai.metrics import faithfulness

N = 10
TINY = {
    "deletion": {"steps": 4},
    "insertion": {"steps": 4},
    "region_perturbation": {"regions": 4},
    "faithfulness_correlation": {"runs": 4, "subset": 50},
    "infidelity": {"samples": 4},
    "max_sensitivity": {"samples": 2},
    "avg_sensitivity": {"samples": 2},
    "local_lipschitz": {"samples": 2},
    "continuity": {"steps": 2},
}


@pytest.fixture(scope="module")
def small():
    """A narrow CNN (same layers as the seed's, so every method and the cascade apply)."""
    model = CNN(widths=(4, 8, 8), hidden=16)
    return Classifier(init_cnn(model, jax.random.key(0)), model)


@pytest.fixture(scope="module")
def test_images(mnist_dir):
    images, labels = data.load("mnist", "test", mnist_dir)
    return images[:N], labels[:N]


def _config(**kw):
    base = dict(
        checkpoint="test-classifier",
        methods=("saliency", "smoothgrad"),
        batch_size=4,
        options={"smoothgrad": {"samples": 3}},
    )
    return ExplainConfig(**{**base, **kw})


def _arrays(folder, name):
    with np.load(folder / f"{name}.npz") as f:
        return dict(f)


def test_resume_gives_the_same_files(tmp_path, small, test_images):
    images, labels = test_images
    whole, pieces = tmp_path / "whole", tmp_path / "pieces"
    timings = explain_run(_config(), whole, small, images, labels, progress=False)
    assert set(timings) == {"saliency", "smoothgrad"}
    # interrupted after one batch, then after another (mid-method), then finished
    assert (
        explain_run(_config(), pieces, small, images, labels, progress=False, max_batches=1) == {}
    )
    assert (pieces / "parts" / "saliency" / "0000000.npz").exists()
    explain_run(_config(), pieces, small, images, labels, progress=False, max_batches=3)
    assert (pieces / "saliency.npz").exists() and not (pieces / "smoothgrad.npz").exists()
    explain_run(_config(), pieces, small, images, labels, progress=False)
    assert not (pieces / "parts").exists()
    for name in ("saliency", "smoothgrad"):
        a, b = _arrays(whole, name), _arrays(pieces, name)
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=f"{name}/{k}")
    assert json.loads((whole / "run.json").read_text()) == json.loads(
        (pieces / "run.json").read_text()
    )


def test_smoothgrad_family_is_computed_once_and_equals_separate_runs(tmp_path, small, test_images):
    images, labels = test_images
    family = ("smoothgrad", "vargrad", "smoothgrad_sq")
    opts = {m: {"samples": 3} for m in family}
    together = explain_run(
        _config(methods=("saliency",) + family, options=opts),
        tmp_path / "t",
        small,
        images,
        labels,
        progress=False,
    )
    assert together["vargrad"]["shared_with"] == ["smoothgrad", "smoothgrad_sq"]
    assert together["saliency"]["shared_with"] == []
    # a companion alone in its own run: the same maps (test_xai_gradients checks all three kinds)
    explain_run(
        _config(methods=("vargrad",), options={"vargrad": opts["vargrad"]}),
        tmp_path / "alone",
        small,
        images,
        labels,
        progress=False,
    )
    np.testing.assert_allclose(
        _arrays(tmp_path / "t", "vargrad")["attributions"],
        _arrays(tmp_path / "alone", "vargrad")["attributions"],
        rtol=1e-3,
        atol=1e-6,
    )
    # different options: no sharing, and nothing is mixed up
    apart = explain_run(
        _config(methods=family, options={**opts, "vargrad": {"samples": 2}}),
        tmp_path / "apart",
        small,
        images,
        labels,
        progress=False,
    )
    assert apart["vargrad"]["shared_with"] == [] and apart["smoothgrad"]["shared_with"] == [
        "smoothgrad_sq"
    ]
    # led by vargrad, smoothgrad keeps its own signed option (and vargrad's record stays its own)
    signed = {"vargrad": {"samples": 3}, "smoothgrad": {"samples": 3, "signed": True}}
    led = explain_run(
        _config(methods=("vargrad", "smoothgrad"), options=signed),
        tmp_path / "led",
        small,
        images,
        labels,
        progress=False,
    )
    assert "signed" not in led["vargrad"]["options"]
    explain_run(
        _config(methods=("smoothgrad",), options={"smoothgrad": signed["smoothgrad"]}),
        tmp_path / "signed",
        small,
        images,
        labels,
        progress=False,
    )
    sg = _arrays(tmp_path / "led", "smoothgrad")["attributions"]
    assert sg.min() < 0
    np.testing.assert_allclose(
        sg, _arrays(tmp_path / "signed", "smoothgrad")["attributions"], rtol=1e-3, atol=1e-6
    )


def test_file_format_and_batch_size_does_not_change_numbers(tmp_path, small, test_images):
    images, labels = test_images
    cfg = dict(
        methods=("integrated_gradients",),
        dtype="float32",
        options={"integrated_gradients": {"steps": 8}},
    )
    explain_run(_config(**cfg, batch_size=3), tmp_path / "a", small, images, labels, progress=False)
    explain_run(_config(**cfg, batch_size=N), tmp_path / "b", small, images, labels, progress=False)
    a, b = (
        _arrays(tmp_path / "a", "integrated_gradients"),
        _arrays(tmp_path / "b", "integrated_gradients"),
    )
    assert a["attributions"].dtype == np.float32 and a["attributions"].shape == (N, 28, 28)
    np.testing.assert_allclose(a["attributions"], b["attributions"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(
        a["extra_convergence_delta"], b["extra_convergence_delta"], atol=1e-5
    )
    np.testing.assert_array_equal(a["indices"], np.arange(N))
    np.testing.assert_array_equal(a["labels"], labels)
    np.testing.assert_array_equal(a["targets"], a["predictions"])  # targets="predicted"
    np.testing.assert_allclose(a["attribution_sum"], a["attributions"].sum((1, 2)), rtol=1e-5)
    timing = json.loads((tmp_path / "a" / "integrated_gradients.json").read_text())
    assert timing["images"] == N and timing["images_per_s"] > 0 and timing["peak_rss_mb"] > 0
    assert load_method(tmp_path / "a", "integrated_gradients")["attributions"].dtype == np.float32
    stats, text = completeness(a)
    assert "IG completeness" in text
    assert stats["images"] == N
    assert stats["mean_abs_delta"] == pytest.approx(
        np.abs(a["extra_convergence_delta"]).mean(), rel=1e-6
    )


def test_bad_settings_fail_before_compiling(tmp_path, small, test_images):
    images, labels = test_images
    with pytest.raises(ValueError, match="unknown method"):
        explain_run(_config(methods=("saliency", "magic")), tmp_path / "x", small, images, labels)
    with pytest.raises(ValueError, match="unknown option"):
        explain_run(
            _config(options={"smoothgrad": {"sampels": 3}}), tmp_path / "y", small, images, labels
        )
    one = dict(methods=("saliency",), options={})
    explain_run(_config(**one), tmp_path / "z", small, images, labels, progress=False)
    with pytest.raises(ValueError, match="other settings.*batch_size"):
        explain_run(_config(**one, batch_size=5), tmp_path / "z", small, images, labels)
    run_file = tmp_path / "z" / "run.json"  # a folder made before the SmoothGrad family shared keys
    run_file.write_text(
        json.dumps({k: v for k, v in json.loads(run_file.read_text()).items() if k != "format"})
    )
    with pytest.raises(ValueError, match=r"other settings \(format\)"):
        explain_run(_config(**one), tmp_path / "z", small, images, labels)


def test_cli_bad_input_is_one_line_and_exit_1(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mnistxai.explain",
            "--checkpoint",
            "runs/cnn",
            "--methods",
            "saliency,nonsense",
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "nonsense" in proc.stderr


def test_leaderboard_end_to_end_and_chunking(tmp_path, small, test_images):
    images, labels = test_images
    run = tmp_path / "run"
    explain_run(
        _config(methods=("saliency",), batch_size=N, options={}),
        run,
        small,
        images,
        labels,
        progress=False,
    )
    tiny = dict(limit=8, robustness_images=2, metric_options=TINY)
    res = evaluate_run(
        run, tmp_path / "lb", EvalConfig(**tiny, batch_size=8), small, images, progress=False
    )
    # batches of 4 give the same rows: checked on one metric of each way the pipeline calls
    # them (a curve, a shared part, a re-explanation, a setup, no model); every metric's own
    # batching and chunking are checked by its own tests
    kinds = (
        "deletion",
        "faithfulness_correlation",
        "max_sensitivity",
        "randomization",
        "sparseness",
    )
    res4 = evaluate_run(
        run,
        tmp_path / "lb4",
        EvalConfig(
            limit=8,
            robustness_images=2,
            metric_options={k: v for k, v in TINY.items() if k in kinds},
            batch_size=4,
            metrics=kinds,
        ),
        small,
        images,
        progress=False,
    )
    assert list(res["methods"]) == ["saliency", "random", "sobel"]
    rerun = {c for name in kinds for c in M.METRICS[name].columns}
    for name, row in res["methods"].items():
        for metric in M.columns():
            m = row["metrics"][metric]
            robust = any(metric in x.columns for x in M.METRICS.values() if x.reexplains)
            assert m["n"] == (2 if robust else 8), (name, metric)
            if metric in rerun:
                np.testing.assert_allclose(
                    res4["methods"][name]["metrics"][metric]["mean"],
                    m["mean"],
                    rtol=1e-4,
                    atol=1e-5,
                    err_msg=f"{name}/{metric}",
                )
    assert rerun <= set(res4["methods"]["saliency"]["metrics"])
    # the baselines do what they must: Sobel maps ignore the model entirely
    assert res["methods"]["sobel"]["metrics"]["randomization_spearman"]["mean"] == pytest.approx(
        1.0
    )
    for f in (
        "leaderboard.csv",
        "leaderboard.md",
        "evaluation.json",
        "per_example.npz",
        "curves.png",
        "randomization.png",
        "bars.png",
    ):
        assert (tmp_path / "lb" / f).stat().st_size > 0, f
    rows = (tmp_path / "lb" / "leaderboard.csv").read_text().splitlines()
    assert len(rows) == 4 and rows[0].startswith("method,images,explain_seconds")
    assert "± " in (tmp_path / "lb" / "leaderboard.md").read_text()


def test_a_second_evaluation_reuses_the_compiled_metrics(small, test_images):
    x = data.to_model_input(test_images[0][:2])
    t = np.array([1, 2], np.int32)
    curves, compiled = [], []
    for _ in range(2):  # score functions made afresh each time, as each evaluate_run does
        curves.append(
            M.deletion(score_fns(small)[0], x, np.ones((2, 28, 28), np.float32), t, steps=2)[
                "curve"
            ]
        )
        compiled.append(faithfulness._pixel_curves._cache_size())
    np.testing.assert_array_equal(curves[0], curves[1])
    assert compiled[1] == compiled[0]


def test_shared_drops_are_used_only_for_the_targets_they_were_made_for(small, test_images):
    images = test_images[0][:6]
    config = EvalConfig(
        limit=6,
        batch_size=3,
        robustness_images=0,
        metric_options={
            "deletion": {"steps": 2},
            "insertion": {"steps": 2},
            "region_perturbation": {"regions": 2},
            "faithfulness_correlation": {"runs": 5, "subset": 60},
            "infidelity": {"samples": 4},
        },
    )
    fns = score_fns(small)
    targets = np.array([1, 2, 3, 4, 5, 6], np.int32)
    maps = np.random.default_rng(0).random((6, 28, 28)).astype(np.float32)
    right = shared_parts(config, images, targets, fns)
    wrong = shared_parts(config, images, (targets + 1) % 10, fns)
    assert set(right[0][1]) == {"faithfulness_correlation", "infidelity"}
    assert not np.allclose(
        wrong[0][1]["faithfulness_correlation"], right[0][1]["faithfulness_correlation"]
    )
    plain, _ = evaluate_method("m", maps, targets, images, None, small, {}, config, fns)
    for drops in (right, wrong):  # shared parts for the right targets, a fallback for the others
        got, _ = evaluate_method("m", maps, targets, images, None, small, {}, config, fns, drops)
        for metric in ("faithfulness_corr", "infidelity", "deletion_auc"):
            np.testing.assert_allclose(got[metric], plain[metric], rtol=1e-5, atol=1e-6)
