"""The explorer (mnistxai.app): what it computes equals the library's results on real digits,
bad input gets a message, and the page works in a real browser (Debian's chromium driven by
Playwright): a stroke drawn on the canvas is explained, the maps change with the method control,
an invalid upload shows its message."""

import io
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from mnistxai import data, xai
from mnistxai.app.explorer import DEFAULT_METHODS, Explorer, image_from_bytes, method_options
from mnistxai.util.errors import InputError


@pytest.fixture(scope="module")
def classifier(trained_run):
    from mnistxai.training.checkpoint import load_classifier

    return load_classifier(trained_run[0])


@pytest.fixture(scope="module")
def explorer(classifier, mnist_dir):
    images, labels = data.load("mnist", "test", mnist_dir)
    ex = Explorer(classifier, images[:500], labels[:500])
    ex.warm_up()
    assert ex.progress["ready"] and ex.progress["done"] == ex.progress["total"] == 8
    return ex


def test_the_maps_shown_are_the_library_maps(explorer, classifier):
    image = explorer.images[7] / 255.0  # a real test digit
    controls = {"integrated_gradients": {"steps": 16}, "occlusion": {"window": 6}}
    result = explorer.explain(image, list(DEFAULT_METHODS), None, controls)
    x = data.to_model_input(explorer.images[7:8])
    probs = np.asarray(classifier.probabilities(x))[0]
    assert result["top3"][0][0] == result["target"] == int(probs.argmax())
    assert [c for c, _ in result["top3"]] == list(np.argsort(probs)[::-1][:3])
    for method in DEFAULT_METHODS:
        options = method_options(method, controls)
        expected = np.asarray(
            xai.explain(method, classifier, x, [result["target"]], **options).attributions
        )[0]
        got = np.asarray(result["maps"][method]["values"]).reshape(28, 28)
        # the page gets 4 significant digits
        np.testing.assert_allclose(
            got, expected, rtol=1e-3, atol=1e-4 * np.abs(expected).max(), err_msg=method
        )
    assert method_options("occlusion", controls)["window"] == (6, 6)
    contrast = xai.explain(
        "integrated_gradients",
        classifier,
        x,
        xai.Contrast(result["target"], result["runner_up"]),
        steps=16,
    )
    np.testing.assert_allclose(
        np.asarray(result["contrast"]["values"]).reshape(28, 28),
        np.asarray(contrast.attributions)[0],
        rtol=1e-3,
        atol=1e-4 * np.abs(np.asarray(contrast.attributions)).max(),
    )
    # IG's convergence delta relative to F(x) - F(black), from the map itself (completeness)
    logits = np.asarray(classifier.logits(x))[0]
    black = np.asarray(classifier.logits(np.zeros_like(x)))[0]
    gap = logits[result["target"]] - black[result["target"]]
    total = np.asarray(result["maps"]["integrated_gradients"]["values"], np.float64).sum()
    assert abs(result["ig_delta"] - abs(total - gap) / abs(gap)) < 1e-3


def test_a_control_applies_to_every_method_it_fits():
    controls = {"cam": {"layer": "conv4"}, "smoothgrad": {"samples": 8, "noise": 0.3}}
    assert method_options("layercam", controls)["layer"] == "conv4"
    assert method_options("scorecam", controls)["layer"] == "conv4"
    assert method_options("vargrad", controls) == {"samples": 8, "noise": 0.3}
    assert method_options("saliency", controls) == {}
    with pytest.raises(InputError, match="no control group 'gradcam'"):
        method_options("gradcam", {"gradcam": {"layer": "conv4"}})
    with pytest.raises(InputError, match="smoothgrad samples must be"):
        method_options("saliency", {"smoothgrad": {"samples": True}})


def test_a_chosen_target_is_explained_and_its_runner_up_is_the_top_other_class(explorer):
    image = explorer.images[3] / 255.0
    result = explorer.explain(image, ["saliency"], 2, {})
    assert result["target"] == 2
    top = [c for c, _ in result["top3"]]
    assert result["runner_up"] == (top[0] if top[0] != 2 else top[1])


def test_picking_digits_by_class_mistake_and_confused_pair(explorer):
    sevens = explorer.choices("class", 7)["indices"]
    assert sevens and all(explorer.labels[i] == 7 for i in sevens)
    wrong = explorer.choices("misclassified")["indices"]
    assert all(explorer.predictions[i] != explorer.labels[i] for i in wrong)
    pairs = explorer.confused_pairs()
    if pairs:
        true, pred, count = pairs[0]
        hits = explorer.choices("confused", 0)["indices"]
        assert len(hits) == min(count, 40)
        assert all(explorer.labels[i] == true and explorer.predictions[i] == pred for i in hits)
    assert explorer.digit(5)["label"] == int(explorer.labels[5])


@pytest.mark.parametrize(
    "image, methods, target, controls, message",
    [
        (np.zeros((28, 28)), ["saliency"], None, {}, "blank"),
        (np.ones((27, 28)), ["saliency"], None, {}, "28x28"),
        (np.full((28, 28), np.nan), ["saliency"], None, {}, "finite"),
        (np.ones((28, 28)), ["magic"], None, {}, "unknown method"),
        (np.ones((28, 28)), [], None, {}, "choose 1 to"),
        (np.ones((28, 28)), ["saliency"], 11, {}, "target"),
        (
            np.ones((28, 28)),
            ["integrated_gradients"],
            None,
            {"integrated_gradients": {"steps": 10**6}},
            "steps",
        ),
        (
            np.ones((28, 28)),
            ["integrated_gradients"],
            None,
            {"integrated_gradients": {"steps": float("nan")}},
            "steps",
        ),
        (np.ones((28, 28)), ["occlusion"], None, {"occlusion": {"size": 3}}, "no control"),
    ],
)
def test_bad_requests_are_one_clear_message(explorer, image, methods, target, controls, message):
    with pytest.raises(InputError, match=message):
        explorer.explain(image, methods, target, controls)


def test_uploads_are_converted_like_the_demo_image_and_bad_files_refused():
    from PIL import Image

    from mnistxai.report.demo import to_mnist_convention

    paper = np.ones((60, 50), np.float32)
    paper[10:50, 22:28] = 0.0  # a dark stroke on white paper, as a photo of a drawn "1"
    blob = io.BytesIO()
    Image.fromarray((paper * 255).astype(np.uint8)).save(blob, format="PNG")
    np.testing.assert_allclose(
        image_from_bytes(blob.getvalue()), to_mnist_convention(paper), atol=1e-6
    )
    with pytest.raises(InputError, match="not an image"):
        image_from_bytes(b"hello")
    with pytest.raises(InputError, match="at most 5 MB"):
        image_from_bytes(b"\0" * (6 * 2**20))


# ---- the app as a user meets it ---------------------------------------------------------------


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def server(trained_run, vae_run, generator_run, mnist_dir):
    """``python -m mnistxai.app`` on a free port; its base URL once warmed up."""
    cmd = [sys.executable, "-m", "mnistxai.app", "--checkpoint", str(trained_run[0])]
    cmd += ["--vae", str(vae_run[0]), "--generator", str(generator_run[0])]
    cmd += ["--data-dir", str(mnist_dir), "--port", "0"]
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert line.startswith("mnistxai explorer: http://127.0.0.1:"), line + process.stderr.read()
        url = line.split()[2]
        deadline = time.monotonic() + 300
        while not _get(url + "api/status")["ready"]:
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def _get(url):
    with urllib.request.urlopen(url, timeout=60) as r:
        return json.loads(r.read())


def _post(url, body: bytes, content_type="application/json"):
    request = urllib.request.Request(url, body, {"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_the_server_answers_bad_input_with_a_message_not_a_traceback(server):
    import base64

    from PIL import Image

    status, body = _post(server + "api/explain", b"{not json")
    assert status == 400 and body == {"error": "the request is not JSON"}
    blank = io.BytesIO()
    Image.new("RGB", (280, 280)).save(blank, format="PNG")  # an empty (black) canvas
    drawing = "data:image/png;base64," + base64.b64encode(blank.getvalue()).decode()
    status, body = _post(server + "api/explain", json.dumps({"drawing": drawing}).encode())
    assert status == 400 and body["error"] == "the canvas is empty: draw a digit first"
    status, body = _post(server + "api/upload", b"\x89PNG" + b"\0" * (6 * 2**20), "image/png")
    assert status == 400 and "at most 5 MB" in body["error"]
    status, body = _post(server + "api/upload", b"plain text", "text/plain")
    assert status == 400 and "not an image" in body["error"]
    with pytest.raises(urllib.error.HTTPError) as e:
        _get(server + "api/digit/123456")
    assert e.value.code == 400 and "index must be in" in json.loads(e.value.read())["error"]


def _pixels(mnist_dir, index):
    images, labels = data.load("mnist", "test", mnist_dir)
    return (images[index] / 255.0).reshape(-1).tolist(), labels


def test_the_walk_goes_to_the_nearest_digit_of_the_runner_up_class(server, classifier, mnist_dir):
    # the VAE's and generator's programs compile in the server's process, not in this worker
    pixels, labels = _pixels(mnist_dir, 11)
    status, shown = _post(
        server + "api/explain", json.dumps({"pixels": pixels, "methods": ["saliency"]}).encode()
    )
    assert status == 200
    status, walk = _post(server + "api/walk", json.dumps({"pixels": pixels}).encode())
    assert status == 200
    assert (walk["from"], walk["to"]) == (shown["target"], shown["runner_up"])
    assert labels[walk["nearest"]] == walk["to"]
    assert len(walk["steps"]) == len(walk["ts"]) == len(walk["p_from"]) == 9
    assert walk["ts"][0] == 0 and walk["ts"][-1] == 1
    # the strip's probabilities are the CNN's on the decoded images
    decoded = np.asarray(walk["steps"], np.float32).reshape(9, 28, 28, 1)
    p = np.asarray(classifier.probabilities(decoded))
    np.testing.assert_allclose(p[:, walk["from"]], walk["p_from"], atol=2e-4)
    assert (walk["t_flip"] is None) == (not walk["flipped"])


def test_dgn_am_makes_a_generator_image_the_same_for_the_same_start(server):
    ask = lambda c, seed: _post(
        server + "api/dgn_am", json.dumps({"class": c, "seed": seed}).encode()
    )
    (s1, first), (s2, again), (s3, other) = ask(3, 0), ask(3, 0), ask(3, 1)
    assert s1 == s2 == s3 == 200
    assert first["pixels"] == again["pixels"] and other["pixels"] != first["pixels"]
    pixels = np.asarray(first["pixels"])
    assert pixels.shape == (784,) and pixels.min() >= 0 and pixels.max() <= 1 and pixels.std() > 0
    status, body = ask(12, 0)
    assert status == 400 and "class must be" in body["error"]


def test_stochastic_and_background_methods_run_and_repeat_exactly(server, mnist_dir):
    pixels, _ = _pixels(mnist_dir, 2)
    methods = ["smoothgrad", "vargrad", "expected_gradients", "deeplift_shap", "kernel_shap"]
    request = json.dumps(
        {"pixels": pixels, "methods": methods, "controls": {"smoothgrad": {"samples": 8}}}
    ).encode()
    (s1, first), (s2, again) = (
        _post(server + "api/explain", request),
        _post(server + "api/explain", request),
    )
    assert s1 == s2 == 200, first
    for m in methods:
        values = np.asarray(first["maps"][m]["values"])
        assert values.shape == (784,) and np.isfinite(values).all() and np.abs(values).max() > 0
        assert first["maps"][m]["values"] == again["maps"][m]["values"], m  # a fixed stream
    with pytest.raises(InputError, match="needs training images"):
        Explorer(None)._extra("expected_gradients")


@pytest.mark.skipif(
    _chromium() is None and not os.environ.get("CI"),
    reason="LOUD: Chromium is not installed, so the explorer was not checked in a real browser; "
    ".ci/run installs Debian's chromium",
)
def test_the_page_draws_explains_switches_methods_and_reports_a_bad_upload(server, tmp_path):
    from playwright.sync_api import sync_playwright

    assert _chromium() is not None, "CI must have Debian's chromium (.ci/run installs it)"
    view = (
        "() => Array.from(document.querySelector('#maps canvas.view')"
        ".getContext('2d').getImageData(0, 0, 28, 28).data)"
    )
    renders = "n => Number(document.body.dataset.renders || 0) >= n"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(server)
        page.wait_for_selector("#methods input")
        box = page.locator("#canvas").bounding_box()
        x0, y0 = box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.15
        page.mouse.move(x0, y0)
        page.mouse.down()
        for k in range(1, 16):  # a "1" from top to bottom
            page.mouse.move(x0 + k, y0 + k * 13)
        page.mouse.up()
        page.wait_for_function(renders, arg=1, timeout=120_000)
        assert "%" in page.inner_text("#top3")
        first = page.locator("#maps .map").first
        assert first.get_attribute("data-method") == DEFAULT_METHODS[0]
        before = np.asarray(page.evaluate(view)).reshape(28, 28, 4)
        assert len(np.unique(before[..., :3].reshape(-1, 3), axis=0)) > 20  # not blank
        page.uncheck(f"#methods input[value={DEFAULT_METHODS[0]}]")  # the method control
        page.wait_for_function(renders, arg=2, timeout=120_000)
        assert first.get_attribute("data-method") == DEFAULT_METHODS[1]
        after = np.asarray(page.evaluate(view)).reshape(28, 28, 4)
        assert np.abs(after.astype(int) - before.astype(int)).sum() > 0
        # the VAE's walk to the runner-up class (9 decoded steps) and DGN-AM for the class
        page.wait_for_function("Number(document.body.dataset.walks || 0) >= 1", timeout=120_000)
        assert page.locator("#walk canvas").count() == 9
        page.click("#am-go")
        page.wait_for_selector("#am canvas", timeout=120_000)
        assert "the CNN says" in page.inner_text("#am")
        page.set_input_files(
            "#upload", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"notes"}]
        )
        page.wait_for_selector("#error", state="visible", timeout=60_000)
        assert "notes.txt: that file is not an image" in page.inner_text("#error")
        browser.close()
