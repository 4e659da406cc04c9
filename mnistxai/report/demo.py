"""What the demo scripts share: per-method demo settings, running every method on a batch,
digits rendered from a font, users' images in MNIST's convention, and picking what to show.
"""

from __future__ import annotations

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from mnistxai import data
from mnistxai.models.classifier import predict
from mnistxai import xai
from mnistxai.xai import METHODS, explain
from mnistxai.util.errors import InputError


BACKGROUND = 200  # training images the demos hand the methods that take a background set


def method_options(method: str, background: np.ndarray, quick: bool = False) -> dict:
    """The demo's options for ``method``: its defaults, or its registered ``quick`` settings with
    ``quick=True`` (the 30-second tour); ``background`` for the methods that take one."""
    spec = METHODS[method]
    options = dict(spec.quick) if quick else {}
    if spec.background:
        options["background"] = background
    return options


def describe_options(method: str, quick: bool = False) -> str:
    """The demo's options for ``method`` as text, defaults included."""
    spec = METHODS[method]
    options = {k: v for k, v in spec.defaults().items() if k != "background"}
    options.update(spec.quick if quick else {})
    if spec.background:
        options["background"] = f"{BACKGROUND} training images"
    return ", ".join(f"{k}={v}" for k, v in options.items())


def explain_all(
    classifier,
    x,
    methods,
    key: jax.Array,
    background: np.ndarray,
    quick: bool = False,
    targets=None,
    progress: bool = True,
) -> tuple[dict, dict]:
    """Run each method on the batch ``x`` (B, 28, 28, 1) in [0, 1].

    Returns ``(maps, seconds)``: method -> float32 (B, 28, 28) NumPy maps, and method -> wall time
    (compilation included).
    """
    maps, seconds = {}, {}
    for i, method in enumerate(tqdm(methods, desc="methods", disable=not progress)):
        start = time.perf_counter()
        result = explain(
            method,
            classifier,
            x,
            targets,
            key=jax.random.fold_in(key, i),
            **method_options(method, background, quick),
        )
        maps[method] = np.asarray(result.attributions)
        seconds[method] = time.perf_counter() - start
    return maps, seconds


# signed methods whose map of logit a - logit b is meaningful: gradient, path, propagation, CAM
CONTRAST_METHODS = ("saliency", "integrated_gradients", "deeplift", "gradcam")


def contrastive_maps(classifier, x, first, second, quick: bool = False) -> dict:
    """Maps of "why ``first`` and not ``second``" (``xai.Contrast``) for the (N, 28, 28, 1)
    inputs ``x`` and (N,) class arrays: column title -> float32 (N, 28, 28) NumPy maps."""
    out = {}
    for method in CONTRAST_METHODS:
        options = method_options(method, None, quick)
        if method == "saliency":
            options["signed"] = True  # the sign says which class a pixel argues for
        result = explain(method, classifier, x, xai.Contrast(first, second), **options)
        out[f"{method}\npred − true"] = np.asarray(result.attributions)
    return out


def probabilities(classifier, x, batch_size: int = 2000) -> np.ndarray:
    """Softmax outputs (N, 10) for (N, 28, 28, 1) inputs, in batches."""
    return predict(classifier, x, batch_size)[1]


# ---- images in MNIST's convention ------------------------------------------------------------


def to_mnist_convention(grey: np.ndarray, light_background: bool | None = None) -> np.ndarray:
    """Any grey image (H, W) in [0, 1] -> float32 (28, 28) in [0, 1] the way MNIST was made.

    White digit on black: a light background (judged from the border pixels unless given) is
    inverted. Contrast is stretched to [0, 1]; the ink's bounding box is scaled to fit 20x20
    (aspect kept) and placed in 28x28 with its centre of mass at the centre (LeCun et al. 1998).
    """
    from PIL import Image

    g = np.asarray(grey, np.float32)
    if g.ndim != 2 or min(g.shape) < 4:
        raise InputError(f"expected a 2-D grey image of at least 4x4 pixels, got shape {g.shape}")
    if light_background is None:
        border = np.concatenate([g[0], g[-1], g[:, 0], g[:, -1]])
        light_background = float(np.median(border)) > 0.5
    if light_background:
        g = 1.0 - g
    g = g - np.median(np.concatenate([g[0], g[-1], g[:, 0], g[:, -1]]))
    peak = g.max()
    if peak <= 0.05:
        raise InputError("no digit found in the image (it is blank or has almost no contrast)")
    g = np.clip(g / peak, 0.0, 1.0)
    rows, cols = np.nonzero(g > 0.1)
    g = g[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    scale = 20.0 / max(g.shape)
    size = (max(1, round(g.shape[1] * scale)), max(1, round(g.shape[0] * scale)))
    small = (
        np.asarray(
            Image.fromarray((g * 255).astype(np.uint8)).resize(size, Image.LANCZOS), np.float32
        )
        / 255
    )
    canvas = np.zeros((28, 28), np.float32)
    top, left = (28 - small.shape[0]) // 2, (28 - small.shape[1]) // 2
    canvas[top : top + small.shape[0], left : left + small.shape[1]] = small
    ys, xs = np.indices(canvas.shape)
    mass = canvas.sum()
    dy, dx = round(13.5 - (ys * canvas).sum() / mass), round(13.5 - (xs * canvas).sum() / mass)
    return np.clip(np.roll(canvas, (dy, dx), axis=(0, 1)), 0.0, 1.0)


MAX_IMAGE_PIXELS = 4096 * 4096  # a photo of a digit; larger is refused before decoding


def load_user_image(path: str | Path) -> np.ndarray:
    """A PNG/JPEG/... of any size up to ``MAX_IMAGE_PIXELS``, RGB(A) or grey, either polarity ->
    float32 (28, 28) in [0, 1]."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise InputError(f"image {path} does not exist")
    try:
        img = Image.open(path)  # reads the header only
        width, height = img.size
        if width * height > MAX_IMAGE_PIXELS:
            raise InputError(
                f"image {path} is {width}x{height} pixels; at most {MAX_IMAGE_PIXELS:,} "
                f"(4096x4096) are read: scale it down first"
            )
        img.load()
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
        raise InputError(f"cannot read image {path}: {e}") from None
    if img.mode in ("RGBA", "LA", "P"):  # transparent pixels count as white paper
        img = img.convert("RGBA")
        paper = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(paper, img)
    grey = np.asarray(img.convert("L"), np.float32) / 255.0
    return to_mnist_convention(grey)


def render_font_digits(
    digits=range(10), fonts=("DejaVu Sans", "DejaVu Serif")
) -> tuple[np.ndarray, np.ndarray]:
    """Digits drawn with matplotlib's fonts, in MNIST's convention: float32 (N, 28, 28), labels
    (N,).

    For running without any dataset; one image per digit and font.
    """
    import matplotlib.pyplot as plt

    images, labels = [], []
    for font in fonts:
        for d in digits:
            fig = plt.figure(figsize=(1, 1), dpi=64)
            fig.text(
                0.5, 0.5, str(d), fontsize=44, ha="center", va="center", family=font, weight="bold"
            )
            fig.canvas.draw()
            rgba = np.asarray(fig.canvas.buffer_rgba(), np.float32)[..., :3].mean(-1) / 255.0
            plt.close(fig)
            images.append(to_mnist_convention(rgba, light_background=True))
            labels.append(d)
    return np.stack(images), np.asarray(labels, np.int32)


def sample_digits(data_dir=None) -> tuple[np.ndarray, np.ndarray, str]:
    """One test digit per class from MNIST if it is found locally, else font-rendered digits.

    Returns ``(images float32 (10, 28, 28), labels, source description)``. Never downloads.
    """
    try:
        images, labels = data.load("mnist", "test", data_dir, download=False)
    except (data.DataError, OSError) as e:
        digits, labels = render_font_digits(fonts=("DejaVu Sans",))
        return (
            digits,
            labels,
            f"digits rendered from a font (no MNIST found: {str(e).split(' (')[0]})",
        )
    first = [int(np.flatnonzero(labels == c)[0]) for c in range(10)]
    return images[first].astype(np.float32) / 255.0, labels[first], "MNIST test digits"


# ---- choosing what to show -------------------------------------------------------------------


def most_confused_pairs(cm: np.ndarray, n: int = 3) -> list[tuple[int, int, int]]:
    """The ``n`` largest off-diagonal cells as (true, predicted, count), largest first."""
    off = cm.copy()
    np.fill_diagonal(off, -1)
    flat = np.argsort(off, axis=None)[::-1][:n]
    return [
        (int(i), int(j), int(off[i, j]))
        for i, j in zip(*np.unravel_index(flat, cm.shape))
        if off[i, j] > 0
    ]


def pick_good_and_bad(probs: np.ndarray, labels: np.ndarray) -> tuple[int, int | None]:
    """Indices of the most confidently correct and the most confidently wrong example (None if none
    wrong)."""
    predictions, confidence = probs.argmax(-1), probs.max(-1)
    correct = predictions == labels
    good = int(np.argmax(np.where(correct, confidence, -1)))
    bad = int(np.argmax(np.where(~correct, confidence, -1))) if (~correct).any() else None
    return good, bad


def grand_tour_gif(
    features: np.ndarray,
    labels: np.ndarray,
    path: str | Path,
    key: jax.Array,
    frames: int = 60,
    dims: int = 8,
    fps: int = 12,
) -> None:
    """An animated GIF of ``features`` (N, D) under a smoothly rotating 2-D projection (a grand
    tour,
    Asimov 1985; as in the contrastive feature visualization seed), coloured by class.

    The features are centred and reduced to their top ``dims`` principal components; the rotation is
    ``expm(t A)`` for a random skew-symmetric ``A``, so the view turns continuously through all of
    them.
    """
    import matplotlib.pyplot as plt
    from matplotlib.animation import FuncAnimation, PillowWriter

    z = features - features.mean(0)
    _, _, vt = np.linalg.svd(z, full_matrices=False)
    z = z @ vt[:dims].T
    z = z / np.abs(z).max()
    a = jax.random.normal(key, (dims, dims))
    a = (a - a.T) / 2
    rotations = np.asarray(
        jax.vmap(lambda t: jax.scipy.linalg.expm(t * a))(jnp.linspace(0, 2.0, frames))
    )
    fig, ax = plt.subplots(figsize=(4.6, 4.6))
    points = ax.scatter(
        *(z @ rotations[0][:, :2]).T, c=labels, cmap="tab10", vmin=-0.5, vmax=9.5, s=6
    )
    ax.set(
        xlim=(-1.05, 1.05),
        ylim=(-1.05, 1.05),
        xticks=[],
        yticks=[],
        title="Grand tour of the CNN's penultimate layer",
    )
    fig.colorbar(points, ax=ax, ticks=range(10), fraction=0.046, label="class")
    fig.tight_layout()

    def update(k):
        points.set_offsets(z @ rotations[k][:, :2])
        return (points,)

    FuncAnimation(fig, update, frames=frames, blit=True).save(
        str(path), writer=PillowWriter(fps=fps)
    )
    plt.close(fig)
