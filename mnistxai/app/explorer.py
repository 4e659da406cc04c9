"""What the explorer computes, with no web in it: a digit in, its prediction and maps out.

An ``Explorer`` holds a classifier and (optionally) the test set with its predictions; every
result is a plain dict of JSON types, so the server only moves it. Methods compile once per
method, options and shape; ``warm_up`` does that for the defaults before the first request.
"""

from __future__ import annotations

import io
import threading
import time
from typing import Optional

import jax
import numpy as np

from mnistxai import xai
from mnistxai.models.classifier import predict
from mnistxai.report.viz import is_signed
from mnistxai.util import streams
from mnistxai.util.errors import InputError
from mnistxai.xai import explain, registry

# what the page shows at first (DeepLIFT is the sixth: all registered methods can be chosen)
DEFAULT_METHODS = ("saliency", "integrated_gradients", "gradcam", "occlusion", "lrp", "deeplift")
# the controls the page offers, with their defaults (each is a method option of the registry)
CONTROLS = {
    "integrated_gradients": {"steps": 50, "rule": "gauss_legendre"},
    "smoothgrad": {"samples": 50, "noise": 0.15},
    "occlusion": {"window": 4},
    "cam": {"layer": "block3"},
}
SMOOTHGRAD_FAMILY = ("smoothgrad", "smoothgrad_sq", "vargrad")
# limits of the controls: a request beyond them is refused (a teacher's laptop stays responsive)
LIMITS = {"steps": (2, 512), "samples": (1, 256), "noise": (0.0, 1.0), "window": (1, 14)}
# the method whose map of "logit a - logit b" answers "why a and not b"
CONTRAST_METHOD = "integrated_gradients"
MAX_UPLOAD_BYTES = 5 * 2**20
MAX_METHODS = 12
WALK_STEPS = 9  # decoded points of a latent walk, both ends included
DGN_AM = {"starts": 2, "steps": 150}  # the generator's activation maximization per request


def method_options(method: str, controls: dict) -> dict:
    """The registry options of ``method`` from the page's ``controls`` ({group: {name: value}},
    the groups of ``CONTROLS``), checked against ``LIMITS``. A group applies to every method it
    fits: "smoothgrad" to the SmoothGrad family, "cam" to every method with a ``layer``."""
    for group, values in controls.items():
        if group not in CONTROLS:
            raise InputError(f"no control group {group!r}; the groups are {', '.join(CONTROLS)}")
        unknown = set(values) - set(CONTROLS[group])
        if unknown:
            raise InputError(f"{group}: no control {', '.join(sorted(unknown))}")
    settings = {g: {**CONTROLS[g], **controls.get(g, {})} for g in CONTROLS}
    for group, values in settings.items():
        for name, value in values.items():
            if name in LIMITS:
                lo, hi = LIMITS[name]
                if (
                    isinstance(value, bool)
                    or not isinstance(value, (int, float))
                    or not np.isfinite(value)
                    or not lo <= value <= hi
                ):
                    raise InputError(
                        f"{group} {name} must be a number in [{lo}, {hi}], got {value!r}"
                    )
    options = {}
    if method == "integrated_gradients":
        ig = settings["integrated_gradients"]
        options.update(steps=int(ig["steps"]), rule=ig["rule"])
    if method in SMOOTHGRAD_FAMILY:
        sg = settings["smoothgrad"]
        options.update(samples=int(sg["samples"]), noise=float(sg["noise"]))
    if method == "occlusion":
        w = int(settings["occlusion"]["window"])
        options.update(window=(w, w), stride=(max(1, w // 2),) * 2)
    if _takes_layer(method):
        options["layer"] = settings["cam"]["layer"]
    return options


def _takes_layer(method: str) -> bool:
    spec = registry.get(method)
    view = registry.MODELS.get(spec.model)
    return "layer" in spec.options or (view is not None and "layer" in view.options)


def image_from_bytes(blob: bytes, light_background: Optional[bool] = None) -> np.ndarray:
    """An encoded picture (PNG, JPEG, ...) -> float32 (28, 28) in [0, 1], MNIST's convention."""
    from PIL import Image, UnidentifiedImageError

    from mnistxai.report.demo import MAX_IMAGE_PIXELS, to_mnist_convention

    if len(blob) > MAX_UPLOAD_BYTES:
        raise InputError(f"the file is {len(blob) / 2**20:.1f} MB; at most 5 MB are read")
    try:
        img = Image.open(io.BytesIO(blob))
        if img.size[0] * img.size[1] > MAX_IMAGE_PIXELS:
            raise InputError(f"the image is {img.size[0]}x{img.size[1]}; at most 4096x4096")
        img.load()
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, ValueError):
        raise InputError(
            "that file is not an image this explorer can read (PNG, JPEG, ...)"
        ) from None
    if img.mode in ("RGBA", "LA", "P"):  # transparent pixels are paper
        img = img.convert("RGBA")
        if light_background is False:  # the canvas: transparent is the black background
            paper = Image.new("RGBA", img.size, (0, 0, 0, 255))
        else:
            paper = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(paper, img)
    grey = np.asarray(img.convert("L"), np.float32) / 255.0
    return to_mnist_convention(grey, light_background)


class Explorer:
    """A classifier and, when given, test digits (uint8 (N, 28, 28), labels) to pick from, a VAE
    (``VAEModel``: latent walks), a generator (``GeneratorModel``: DGN-AM) and training images
    (uint8) as the background of expected gradients and DeepLIFT-SHAP. The stochastic methods
    draw from the fixed stream of their name (``streams.key(0, method)``): the same digit gets
    the same map."""

    def __init__(
        self, classifier, images=None, labels=None, vae=None, generator=None, background=None
    ):
        self.classifier = classifier
        # uint8 (M, 28, 28) training images for the methods that draw baselines from them
        self.background = None if background is None else _model_input(background)
        self.images, self.labels = images, labels
        self.vae, self.generator = vae, generator
        self.predictions = None
        self.codes = None  # the VAE's code means of the test digits (the walk's nearest end)
        self._lock = threading.Lock()  # one explanation at a time: they share the CPU anyway
        self.progress = {"done": 0, "total": 0, "current": "", "ready": False}

    # ---- start-up ---------------------------------------------------------------------------

    def warm_up(self) -> None:
        """Compile the default methods (and the contrast) for one 28x28 digit and predict the
        test digits; ``progress`` says how far it got (the page shows it)."""
        x = np.zeros((28, 28), np.float32)
        x[6:22, 12:16] = 1.0  # a "1": any digit compiles the same program
        steps = list(DEFAULT_METHODS) + ["contrast"]
        if self.images is not None:
            steps.append("test digits")
            if self.vae is not None:
                steps += ["latent codes", "latent walk"]
        if self.generator is not None:
            steps.append("DGN-AM")
        self.progress.update(total=len(steps))
        for name in steps:
            self.progress["current"] = name
            if name == "test digits":
                self.predictions = predict(self.classifier, _model_input(self.images))[0]
            elif name == "latent codes":
                self.codes = np.concatenate(
                    [
                        np.asarray(_encode(self.vae, _model_input(self.images[s : s + 1000])))
                        for s in range(0, len(self.images), 1000)
                    ]
                )
            elif name == "latent walk":
                self.walk(x, None)
            elif name == "DGN-AM":
                self.dgn_am(1, 0)
            elif name == "contrast":
                self._contrast(_model_input(x[None]), 1, 7, {})
            else:
                self.explain(x, [name], None, {})
            self.progress["done"] += 1
        self.progress.update(ready=True, current="")

    # ---- digits to pick -----------------------------------------------------------------------

    def digit(self, index: int) -> dict:
        """Test digit ``index``: its pixels, label and the model's prediction."""
        if self.images is None:
            raise InputError("no test digits were loaded (start the app with --data-dir)")
        if not 0 <= index < len(self.images):
            raise InputError(f"index must be in 0..{len(self.images) - 1}, got {index}")
        out = {
            "index": index,
            "label": int(self.labels[index]),
            "pixels": _pixels(self.images[index] / 255.0),
        }
        if self.predictions is not None:
            out["predicted"] = int(self.predictions[index])
        return out

    def choices(self, kind: str, value: Optional[int] = None, limit: int = 40) -> dict:
        """Indices of test digits: ``kind`` "class" (label ``value``), "misclassified", or
        "confused" (the pair ``value`` of ``confused_pairs``, true -> predicted)."""
        if self.images is None:
            raise InputError("no test digits were loaded (start the app with --data-dir)")
        if kind == "class":
            if value is None or not 0 <= value <= 9:
                raise InputError(f"class must be 0..9, got {value}")
            return {"indices": np.flatnonzero(self.labels == value)[:limit].tolist()}
        if self.predictions is None:
            raise InputError("the test digits are still being predicted: try again in a moment")
        wrong = self.predictions != self.labels
        if kind == "misclassified":
            return {"indices": np.flatnonzero(wrong)[:limit].tolist()}
        if kind == "confused":
            pairs = self.confused_pairs()
            if value is None or not 0 <= value < len(pairs):
                raise InputError(f"pair must be in 0..{len(pairs) - 1}, got {value}")
            true, pred, _ = pairs[value]
            hit = wrong & (self.labels == true) & (self.predictions == pred)
            return {"indices": np.flatnonzero(hit)[:limit].tolist()}
        raise InputError(f"unknown kind {kind!r}: class, misclassified or confused")

    def confused_pairs(self, n: int = 6) -> list:
        """The ``n`` most frequent (true, predicted, count) mistakes on the test digits."""
        if self.predictions is None:
            return []
        cm = np.zeros((10, 10), np.int64)
        np.add.at(cm, (self.labels, self.predictions), 1)
        np.fill_diagonal(cm, 0)
        order = np.argsort(cm, axis=None)[::-1][:n]
        return [(int(i // 10), int(i % 10), int(cm.flat[i])) for i in order if cm.flat[i] > 0]

    # ---- explanations -------------------------------------------------------------------------

    def explain(self, image, methods, target: Optional[int], controls: dict) -> dict:
        """Prediction and maps of one digit.

        Args:
          image: float (28, 28) in [0, 1] (MNIST's convention: white ink on black).
          methods: registered method names (at most ``MAX_METHODS``).
          target: the class to explain, or None for the predicted one.
          controls: {group: {option: value}} for the options of ``CONTROLS``.

        Returns:
          {"pixels", "top3": [[class, probability]], "target", "runner_up", "maps": {method:
          {"values" (784 floats), "signed", "seconds"}}, "contrast": the contrastive map of
          target against runner-up, "ig_delta": IG's convergence delta |sum - (F(x) - F(0))|
          relative to |F(x) - F(0)| (when IG was asked for), "seconds"}.
        """
        x = _check_image(image)
        methods = list(methods)
        if not methods or len(methods) > MAX_METHODS:
            raise InputError(f"choose 1 to {MAX_METHODS} methods, got {len(methods)}")
        for m in methods:
            if m not in xai.METHODS:
                raise InputError(f"unknown method {m!r}")
        _check_target(target)
        options = {m: method_options(m, controls) for m in methods}
        contrast_options = method_options(CONTRAST_METHOD, controls)
        batch = _model_input(x[None])
        with self._lock:
            start = time.perf_counter()
            probs, order, target, runner_up = self._ranked(batch, target)
            maps, ig_delta = {}, None
            for m in methods:
                t0 = time.perf_counter()
                result = explain(
                    m, self.classifier, batch, np.asarray([target]), **self._extra(m), **options[m]
                )
                values = np.asarray(result.attributions, np.float32)[0]
                maps[m] = {
                    "values": _rounded(values),
                    "signed": is_signed(values),  # drawn diverging around 0, as the report
                    "seconds": round(time.perf_counter() - t0, 4),
                }
                if m == "integrated_gradients":
                    ig_delta = self._relative_delta(batch, target, result)
            contrast = self._contrast(batch, target, runner_up, contrast_options)
            seconds = time.perf_counter() - start
        return {
            "pixels": _pixels(x),
            "top3": [[c, round(float(probs[c]), 4)] for c in order[:3]],
            "target": target,
            "runner_up": runner_up,
            "maps": maps,
            "contrast": {"method": CONTRAST_METHOD, "values": _rounded(contrast), "signed": True},
            "ig_delta": ig_delta,
            "seconds": round(seconds, 4),
        }

    def walk(self, image, target: Optional[int]) -> dict:
        """The VAE latent walk from ``image`` to the nearest test digit (by code mean) of the
        runner-up class, with the CNN's decision flip (``latent_walk.walk``, linear path).

        Returns {"from", "to": classes, "nearest": its test index, "steps": WALK_STEPS decoded
        images (784 floats each), "ts", "p_from", "p_to": the CNN's probabilities of the two
        classes at each step, "flipped", "t_flip": the flip's position in [0, 1] or None,
        "seconds"}.
        """
        from mnistxai.xai.synthesis import latent_walk as lw

        if self.vae is None or self.codes is None:
            raise InputError("no VAE, or its codes of the test digits are not ready yet")
        x = _check_image(image)
        _check_target(target)
        batch = _model_input(x[None])
        with self._lock:
            start = time.perf_counter()
            _, _, first, second = self._ranked(batch, target)
            candidates = np.flatnonzero(self.labels == second)
            code = np.asarray(_encode(self.vae, batch))[0]
            nearest = int(candidates[np.argmin(((self.codes[candidates] - code) ** 2).sum(1))])
            end = _model_input(self.images[nearest : nearest + 1])
            w = lw.walk(self.vae, self.classifier, batch, end, steps=WALK_STEPS)
            flipped = bool(np.asarray(w.flipped)[0])
            cnn = np.asarray(w.cnn_probs)[0]
            return {
                "from": first,
                "to": second,
                "nearest": nearest,
                "steps": [_pixels(im) for im in np.asarray(w.images)[0]],
                "ts": [round(float(t), 4) for t in np.asarray(w.ts)],
                "p_from": [round(float(p), 4) for p in cnn[:, first]],
                "p_to": [round(float(p), 4) for p in cnn[:, second]],
                "flipped": flipped,
                "t_flip": round(float(np.asarray(w.t_lo + w.t_hi)[0]) / 2, 4) if flipped else None,
                "seconds": round(time.perf_counter() - start, 4),
            }

    def dgn_am(self, target: int, seed: int = 0) -> dict:
        """DGN-AM (Nguyen et al. 2016) for class ``target``: the generator's code optimized to
        maximize the class logit (``activation_max.maximize``, ``DGN_AM`` starts and steps, key
        ``seed``); the best start's image and the CNN's view of it."""
        from mnistxai.xai.synthesis import activation_max as am

        if self.generator is None:
            raise InputError("no generator was loaded (start the app with --generator)")
        if not (isinstance(target, int) and 0 <= target <= 9):
            raise InputError(f"class must be 0..9, got {target!r}")
        if not (isinstance(seed, int) and 0 <= seed < 2**31):
            raise InputError(f"seed must be a non-negative integer, got {seed!r}")
        with self._lock:
            start = time.perf_counter()
            result = am.maximize(
                self.classifier,
                "logit",
                [target],
                key=jax.random.key(seed),
                parameterization="generator",
                decoder=self.generator,
                **DGN_AM,
            )
            best = int(np.asarray(result.final)[0].argmax())
            image = np.asarray(result.images)[0, best, ..., 0]
            probs = np.asarray(_probabilities(self.classifier, _model_input(image[None])))[0]
            return {
                "class": target,
                "pixels": _pixels(image),
                "probability": round(float(probs[target]), 4),
                "predicted": int(probs.argmax()),
                "seconds": round(time.perf_counter() - start, 4),
            }

    def _ranked(self, batch, target: Optional[int]) -> tuple:
        """(probabilities, classes by probability, the class to explain: ``target`` or the
        predicted one, the runner-up: the most probable other class) of a one-digit batch."""
        probs = np.asarray(_probabilities(self.classifier, batch))[0]
        order = [int(c) for c in np.argsort(probs)[::-1]]
        target = order[0] if target is None else target
        return probs, order, target, next(c for c in order if c != target)

    def _extra(self, method: str) -> dict:
        """The key, and the background where the method takes one."""
        extra = {"key": streams.key(0, method)}
        if xai.METHODS[method].background:
            if self.background is None:
                raise InputError(f"{method} needs training images as its background (--data-dir)")
            extra["background"] = self.background
        return extra

    def _contrast(self, batch, first: int, second: int, options: dict) -> np.ndarray:
        options = options or method_options(CONTRAST_METHOD, {})
        result = explain(
            CONTRAST_METHOD, self.classifier, batch, xai.Contrast(first, second), **options
        )
        return np.asarray(result.attributions, np.float32)[0]

    def _relative_delta(self, batch, target: int, result) -> Optional[float]:
        delta = result.extras.get("convergence_delta")
        if delta is None:
            return None
        logits = np.asarray(_logits(self.classifier, batch))[0, target]
        black = np.asarray(_logits(self.classifier, jax.numpy.zeros_like(batch)))[0, target]
        gap = abs(float(logits - black))
        return round(abs(float(np.asarray(delta)[0])) / max(gap, 1e-12), 6)


_probabilities = jax.jit(lambda classifier, x: classifier.probabilities(x))
_logits = jax.jit(lambda classifier, x: classifier.logits(x))
_encode = jax.jit(lambda vae, x: vae.encode(x)[0])


def _check_target(target) -> None:
    if target is not None and not (isinstance(target, int) and 0 <= target <= 9):
        raise InputError(f"target must be a class 0..9 or none, got {target!r}")


def _check_image(image) -> np.ndarray:
    x = np.asarray(image, np.float32)
    if x.shape == (784,):
        x = x.reshape(28, 28)
    if x.shape != (28, 28):
        raise InputError(f"a digit is 28x28 pixels, got shape {x.shape}")
    if not np.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        raise InputError("pixels must be finite numbers in [0, 1]")
    if x.max() <= 0:
        raise InputError("the digit is blank: draw one first")
    return x


def _model_input(images) -> jax.Array:
    from mnistxai import data

    images = np.asarray(images)
    if images.dtype == np.uint8:
        return data.to_model_input(images)
    return jax.numpy.asarray(images[..., None], jax.numpy.float32)


def _pixels(x) -> list:
    return [round(float(v), 4) for v in np.asarray(x, np.float32).reshape(-1)]


def _rounded(values: np.ndarray) -> list:
    """A map as 784 floats with 4 significant digits (what a colormap can show)."""
    return [float(f"{v:.4g}") for v in np.asarray(values, np.float32).reshape(-1)]
