"""The demo scripts end to end, in subprocesses, on small settings; and the report in a real
browser."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import REPO

METHODS = "saliency,integrated_gradients,gradcam,occlusion"


def run_script(*args, env_extra=None, timeout=300):
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run(
        [sys.executable, *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def assert_picture(path: Path):
    assert path.is_file() and path.stat().st_size > 2000, path
    pixels = np.asarray(Image.open(path).convert("L"), np.float32)
    assert pixels.std() > 5, f"{path} is (nearly) constant"


@pytest.fixture
def trained_workdir(trained_run):
    return trained_run[0]


def test_simple_demo_runs_without_any_dataset(tmp_path):
    empty = tmp_path / "no_data"
    empty.mkdir()
    result = run_script(
        "simple_mnist_xai_demo.py",
        "--out",
        tmp_path / "out",
        "--checkpoint",
        tmp_path / "none",
        "--methods",
        METHODS,
        "--digits",
        "2",
        env_extra={"MNISTXAI_DATA_DIR": str(empty), "TFDS_DATA_DIR": str(empty)},
    )
    assert result.returncode == 0, result.stderr
    assert "rendered from a font" in result.stdout and "NOT meaningful" not in result.stderr
    assert "not what a" in result.stdout  # says plainly that untrained maps mean nothing
    assert_picture(tmp_path / "out" / "simple_demo.png")


def test_simple_demo_shows_trained_maps_beside(tmp_path, trained_workdir):
    result = run_script(
        "simple_mnist_xai_demo.py",
        "--out",
        tmp_path,
        "--checkpoint",
        trained_workdir,
        "--methods",
        "saliency,gradcam",
        "--digits",
        "2",
    )
    assert result.returncode == 0, result.stderr
    assert re.search(r"saliency\s+[\d.]+\s+[\d.]+", result.stdout)  # a column per model
    assert_picture(tmp_path / "simple_demo.png")


def test_demo_writes_every_section_and_a_consistent_report(
    tmp_path, trained_workdir, vae_run, generator_run
):
    digit = Image.new("RGB", (90, 120), (245, 240, 230))  # a dark "1" on light paper, not 28x28
    digit.paste((30, 30, 30), (40, 15, 52, 105))
    digit.save(tmp_path / "mine.png")
    out = tmp_path / "out"
    result = run_script(
        "demo_mnist_xai.py",
        "--checkpoint",
        trained_workdir,
        "--out",
        out,
        "--methods",
        METHODS,
        "--indices",
        "0,1",
        "--grid-size",
        "5",
        "--tour-points",
        "60",
        "--quick",
        "--image",
        tmp_path / "mine.png",
        "--vae",
        vae_run[0],
        "--generator",
        generator_run[0],
        "--am-steps",
        "10",
    )
    assert result.returncode == 0, result.stderr
    for name in (
        "digit_0.png",
        "digit_1.png",
        "batch_grid.png",
        "good_vs_bad.png",
        "confusion_matrix.png",
        "confused_pairs.png",
        "confused_pairs_contrast.png",
        "activation_maximization.png",
        "latent_walks.png",
        "training_curves_cnn.png",
        "training_curves_vae.png",
        "training_curves_generator.png",
        "your_digit.png",
    ):
        assert_picture(out / name)
    gif = Image.open(out / "grand_tour.gif")
    assert gif.n_frames > 10
    page = (out / "index.html").read_text()
    sources = re.findall(r"<img src='([^']+)'", page)
    assert len(sources) >= 14 and all((out / s).is_file() for s in sources)
    assert "DGN-AM (generator)" in page and "decision flips: " in page


def test_demo_names_the_commands_for_missing_generative_models(tmp_path, monkeypatch):
    from demo_mnist_xai import load_generative
    from mnistxai.training.checkpoint import CheckpointError

    monkeypatch.chdir(tmp_path)  # no runs/vae or runs/generator here
    (vae, vae_dir), (generator, generator_dir), note = load_generative(None, None)
    assert vae is None and generator is None and vae_dir is None and generator_dir is None
    assert "python train_mnist.py --model vae." in note
    assert "python train_mnist.py --model generator --init-from runs/vae." in note
    with pytest.raises(CheckpointError, match="--vae typo: .*does not exist"):
        load_generative("typo", None)  # a path the user gave must exist: no silent fallback


def test_demo_without_checkpoint_says_how_to_train(tmp_path):
    result = run_script(
        "demo_mnist_xai.py", "--checkpoint", tmp_path / "missing", "--out", tmp_path / "o"
    )
    assert result.returncode == 2
    assert "python train_mnist.py" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_demo_rejects_unknown_method(tmp_path, trained_workdir):
    result = run_script(
        "demo_mnist_xai.py", "--checkpoint", trained_workdir, "--methods", "saliency,magic"
    )
    assert result.returncode == 2 and "unknown method(s) magic" in result.stderr


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(
    _chromium() is None,
    reason="LOUD: Chromium is not installed, so the report was not checked "
    "in a real browser; .ci/run installs Debian's chromium (apt-get install chromium)",
)
def test_report_renders_in_headless_chromium(tmp_path):
    from mnistxai.report import html as report, viz

    fig = viz.plot_image_grid(np.random.default_rng(0).random((2, 3, 28, 28)), title="grid")
    viz.save_figure(fig, tmp_path / "grid.png")
    sections = [
        report.Section("Figures", "text", [report.Figure("grid.png", "a grid")]),
        report.Section("Broken", "", []),
    ]
    page = report.write_report(tmp_path, "test", "intro", sections)
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'p'}",
        "--virtual-time-budget=5000",
        "--dump-dom",
    ]
    dom = subprocess.run(
        [_chromium(), *flags, page.as_uri()], capture_output=True, text=True, timeout=120
    ).stdout
    assert 'data-images-total="1"' in dom and 'data-images-broken="0"' in dom
    (tmp_path / "grid.png").unlink()  # the page's own check must notice a figure that fails to load
    dom = subprocess.run(
        [_chromium(), *flags, page.as_uri()], capture_output=True, text=True, timeout=120
    ).stdout
    assert 'data-images-broken="1"' in dom


def test_user_image_conversion_handles_either_polarity():
    from mnistxai.report.demo import to_mnist_convention

    dark_on_light = np.ones((50, 40), np.float32)
    dark_on_light[10:40, 18:22] = 0.0
    a = to_mnist_convention(dark_on_light)
    b = to_mnist_convention(1.0 - dark_on_light)
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert a.shape == (28, 28) and a.max() == pytest.approx(1.0, abs=0.05) and a[0, 0] == 0.0
    ys, xs = np.indices(a.shape)
    assert (
        abs((ys * a).sum() / a.sum() - 13.5) <= 0.5 and abs((xs * a).sum() / a.sum() - 13.5) <= 0.5
    )
    with pytest.raises(ValueError, match="no digit"):
        to_mnist_convention(np.ones((30, 30), np.float32))


def test_leaderboard_markdown_becomes_an_escaped_html_table():
    from mnistxai.report.html import markdown_to_html

    text = (
        "# Leaderboard\n\n| method | deletion |\n| --- | ---: |\n| **saliency** | 0.12 ± 0.01 "
        "|\n| <x> | `1` |\n\nNote."
    )
    page = markdown_to_html(text)
    assert page.startswith("<h3>Leaderboard</h3>")
    assert "<thead><tr><th>method</th><th>deletion</th></tr></thead>" in page
    assert "<td><b>saliency</b></td><td>0.12 ± 0.01</td>" in page and "&lt;x&gt;" in page
    assert "<code>1</code>" in page and page.endswith("<p>Note.</p>") and "---" not in page
