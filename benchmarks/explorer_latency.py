"""How long the explorer (``python -m mnistxai.app``) takes to explain one digit, after warm-up.

    python benchmarks/explorer_latency.py [--checkpoint runs/cnn] [--digits 50]

Warms the explorer up as the app does (``Explorer.warm_up``), then explains ``--digits`` real test
digits, one request each, with saliency, Grad-CAM, IG-50, occlusion and LRP (the issue's five)
and prints the median and 90th percentile of the five maps' time and of the whole request (which
also makes the prediction and the contrastive IG-50 map). Without ``--checkpoint`` the CNN has
random weights (speed does not depend on them). With ``--vae`` and ``--generator`` it also times
the latent walk of each digit and one DGN-AM image per class.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

FIVE = ["saliency", "gradcam", "integrated_gradients", "occlusion", "lrp"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--data-dir", default=os.environ.get("MNISTXAI_DATA_DIR"))
    ap.add_argument("--digits", type=int, default=50)
    ap.add_argument("--vae", default=None, help="a VAE work dir: time the latent walks")
    ap.add_argument("--generator", default=None, help="a generator work dir: time DGN-AM")
    args = ap.parse_args()
    import jax

    from mnistxai import data
    from mnistxai.app.explorer import Explorer
    from mnistxai.models.classifier import Classifier
    from mnistxai.models.cnn import CNN, init_cnn
    from mnistxai.training.checkpoint import load_classifier, load_generator, load_vae

    if args.checkpoint:
        classifier = load_classifier(args.checkpoint)
    else:
        classifier = Classifier(init_cnn(CNN(), jax.random.key(0)))
    images, labels = data.load("mnist", "test", args.data_dir)
    vae = load_vae(args.vae) if args.vae else None
    generator = load_generator(args.generator) if args.generator else None
    explorer = Explorer(classifier, images, labels, vae, generator)
    t0 = time.perf_counter()
    explorer.warm_up()
    print(f"warm-up (compiling the default methods): {time.perf_counter() - t0:.1f} s")
    maps, requests = [], []
    per_method = {m: [] for m in FIVE}
    for i in range(args.digits):
        t0 = time.perf_counter()
        result = explorer.explain(images[i] / 255.0, FIVE, None, {})
        requests.append(time.perf_counter() - t0)
        maps.append(sum(result["maps"][m]["seconds"] for m in FIVE))
        for m in FIVE:
            per_method[m].append(result["maps"][m]["seconds"])
    ms = lambda v, q: 1000 * float(np.percentile(v, q))  # noqa: E731
    print(f"{args.digits} test digits, one request each ({jax.default_backend()})")
    for m in FIVE:
        print(f"  {m:22s} median {ms(per_method[m], 50):6.1f} ms")
    print(
        f"  five maps              median {ms(maps, 50):6.1f} ms, 90th pct {ms(maps, 90):6.1f} ms"
    )
    print(
        f"  whole request          median {ms(requests, 50):6.1f} ms, 90th pct "
        f"{ms(requests, 90):6.1f} ms (prediction, five maps, contrastive IG-50, JSON)"
    )
    if vae is not None:
        walks = [explorer.walk(images[i] / 255.0, None)["seconds"] for i in range(args.digits)]
        median, p90 = ms(walks, 50), ms(walks, 90)
        print(f"  latent walk            median {median:6.1f} ms, 90th pct {p90:6.1f} ms")
    if generator is not None:
        am = [explorer.dgn_am(c, 0)["seconds"] for c in range(10)]
        print(f"  DGN-AM (2 starts x 150 steps) median {ms(am, 50) / 1000:.2f} s per class")


if __name__ == "__main__":
    main()
