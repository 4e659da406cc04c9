"""``python -m mnistxai.app --checkpoint runs/cnn``: the interactive explorer (``mnistxai.app``)."""

from __future__ import annotations

import socket
import sys
from pathlib import Path
import threading

from mnistxai.util.cli import ArgumentParser, run_main
from mnistxai.util.errors import InputError


def build_parser() -> ArgumentParser:
    ap = ArgumentParser(
        prog="python -m mnistxai.app",
        description="Draw a digit or pick a test digit and see why the CNN classifies it so.",
    )
    ap.add_argument("--checkpoint", default="runs/cnn", help="a CNN work dir (runs/cnn)")
    ap.add_argument(
        "--data-dir",
        default=None,
        help="IDX folder for the test digits to pick ($MNISTXAI_DATA_DIR)",
    )
    ap.add_argument(
        "--vae", default=None, help="a VAE work dir for latent walks (default: runs/vae if present)"
    )
    ap.add_argument(
        "--generator",
        default=None,
        help="a generator work dir for DGN-AM (default: runs/generator if present)",
    )
    ap.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1: this machine)")
    ap.add_argument("--port", type=int, default=8765, help="port (8765; 0: any free one)")
    return ap


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on (host, port), or an ``InputError`` saying why not (before any
    model is loaded)."""
    if not 0 <= port <= 65535:
        raise InputError(f"--port must be in 0..65535, got {port}")
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise InputError(
            f"cannot listen on {host}:{port}: {e.strerror} (choose another --port)"
        ) from None
    sock.listen(64)
    return sock


def _optional(given, default: str, load):
    """A model from ``given`` (an error when it cannot be loaded), else from ``default`` when that
    folder exists, else None."""
    if given is not None:
        return load(given)
    return load(default) if Path(default).is_dir() else None


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    sock = bind(args.host, args.port)
    import uvicorn

    from mnistxai import data
    from mnistxai.app.explorer import Explorer
    from mnistxai.app.server import create_app
    from mnistxai.pipelines.explain import ExplainConfig
    from mnistxai.pipelines.explain import background_images as _background
    from mnistxai.training.checkpoint import load_classifier, load_generator, load_vae

    classifier = load_classifier(args.checkpoint)
    vae = _optional(args.vae, "runs/vae", load_vae)
    generator = _optional(args.generator, "runs/generator", load_generator)
    try:
        images, labels = data.load(classifier.dataset, "test", args.data_dir)
        config = ExplainConfig(args.checkpoint, (), data_dir=args.data_dir)
        background = _background(config.for_classifier(classifier))  # as explain runs draw it
    except InputError as e:  # drawing and uploads still work
        print(f"no test digits to pick ({e})", file=sys.stderr)
        images = labels = background = None
    explorer = Explorer(classifier, images, labels, vae, generator, background)
    threading.Thread(target=explorer.warm_up, name="warm-up", daemon=True).start()
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"mnistxai explorer: http://{shown}:{port}/ (compiling the methods in the background)")
    print("Ctrl-C stops it", flush=True)
    config = uvicorn.Config(create_app(explorer), log_level="warning")
    uvicorn.Server(config).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    run_main(main)
