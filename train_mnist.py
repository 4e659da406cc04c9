#!/usr/bin/env python3
"""Train the BatchNorm CNN, the VAE or the DCGAN generator on MNIST with checkpoints, history and
curves.

python train_mnist.py --workdir runs/cnn                  # defaults: >= 99.4% test accuracy
python train_mnist.py --workdir runs/cnn --resume         # continue an interrupted run
python train_mnist.py --dataset fashion_mnist --workdir runs/fashion
python train_mnist.py --dataset mnist_shortcut --workdir runs/shortcut   # planted marker
python train_mnist.py --dataset mnist_shortcut --rrr-weight 100 --workdir runs/shortcut_rrr
python train_mnist.py --init-from runs/fashion --freeze-backbone --workdir runs/transfer
python train_mnist.py --model vae                         # runs/vae: conv VAE + latent classifier
python train_mnist.py --model generator --init-from runs/vae --classifier runs/cnn
                                                          # runs/generator: DCGAN
python train_mnist.py --coordinator HOST:PORT --num-processes 2 --process-id I   # on each host

Several processes (jax.distributed) train one model together: each step's global batch
(--batch-size, divisible by the total device count) is split over every device of every process,
the state replicated; the checkpoints are saved by all together, the history by process 0. Ctrl-C
in any of them stops all at the same step, after a checkpoint (they check every 10 steps whether
one was interrupted).

Ctrl-C ends with exit code 130: before training starts quietly (nothing to save), during training
with one line, after a checkpoint at the next step (or after the epoch's evaluation and saves),
from which --resume continues exactly.
"""

import dataclasses
import signal
import sys

# until training installs its deferred handler there is nothing to save: a quiet exit
signal.signal(signal.SIGINT, lambda *_: sys.exit(130))

from mnistxai import parallel  # noqa: E402 (after the signal handler)
from mnistxai.util.cli import ArgumentParser, run_main  # noqa: E402 (after the signal handler)
from mnistxai.training.cnn import TrainConfig, train_and_evaluate  # noqa: E402 (after the signal handler)
from mnistxai.training.loop import TrainingInterrupted  # noqa: E402 (after the signal handler)
from mnistxai.training.generative import GANConfig, VAEConfig, train_generator, train_vae  # noqa: E402 (after the signal handler)
from mnistxai.util.errors import InputError  # noqa: E402 (after the signal handler)

DEFAULTS = TrainConfig()
MODELS = {
    "cnn": (TrainConfig, train_and_evaluate),
    "vae": (VAEConfig, train_vae),
    "generator": (GANConfig, train_generator),
}


def _default(name: str) -> str:
    return ", ".join(
        f"{getattr(config(), name)} ({model})" for model, (config, _) in MODELS.items()
    )


def parse_args(argv=None):
    p = ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Defaults live in mnistxai.training.cnn.TrainConfig and "
        "mnistxai.training.generative.VAEConfig, GANConfig.",
    )
    p.add_argument(
        "--model", default="cnn", choices=list(MODELS), help="what to train (default: cnn)"
    )
    p.add_argument(
        "--dataset",
        default=DEFAULTS.dataset,
        help="mnist, fashion_mnist or mnist_shortcut (MNIST with a class-coded marker on every "
        "digit: mnistxai.shortcut) (default: mnist)",
    )
    p.add_argument(
        "--data-dir",
        help="folder with the four IDX files (default: $MNISTXAI_DATA_DIR, then others)",
    )
    p.add_argument(
        "--workdir", help="checkpoints, history.json, training_curves.png (default: runs/MODEL)"
    )
    p.add_argument(
        "--epochs", type=int, help=f"passes over the data (default: {_default('epochs')})"
    )
    p.add_argument("--batch-size", type=int, help=f"default: {_default('batch_size')}")
    p.add_argument("--lr", type=float, help=f"peak learning rate (default: {_default('lr')})")
    p.add_argument(
        "--weight-decay",
        type=float,
        help=f"CNN: AdamW weight decay (default: {DEFAULTS.weight_decay})",
    )
    p.add_argument(
        "--augment-shift",
        type=int,
        help=f"CNN: random translation in pixels, 0 disables (default: {DEFAULTS.augment_shift})",
    )
    p.add_argument(
        "--latent-dim",
        type=int,
        help=f"vae, generator: size of the code z (default: {VAEConfig.latent_dim})",
    )
    p.add_argument(
        "--classifier",
        metavar="WORKDIR",
        help="generator: a CNN run that scores samples each epoch (IS, Frechet distance) and "
        "picks 'best'",
    )
    p.add_argument(
        "--rrr-weight",
        type=float,
        metavar="L",
        help="CNN on mnist_shortcut: right for the right reasons (Ross et al. 2017), L times the "
        "squared input gradient of sum_k log p_k on the marker added to the loss "
        f"(default: {DEFAULTS.rrr_weight}, off)",
    )
    p.add_argument("--seed", type=int, default=DEFAULTS.seed, help=f"default: {DEFAULTS.seed}")
    p.add_argument("--limit-train", type=int, metavar="N", help="train on the first N images only")
    p.add_argument(
        "--limit-test", type=int, metavar="N", help="evaluate on the first N test images only"
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --workdir (its saved settings win)",
    )
    p.add_argument(
        "--init-from",
        metavar="WORKDIR",
        help="cnn: initialize all but the head from this run's CNN; "
        "generator: start from this VAE run's decoder",
    )
    p.add_argument(
        "--prior",
        choices=("class", "normal"),
        help="generator: codes from per-class Gaussians fitted to the --init-from VAE's codes, or "
        "N(0, I) (default: class with --init-from, else normal)",
    )
    p.add_argument(
        "--freeze-backbone",
        action="store_true",
        help="CNN, with --init-from: train only the new head",
    )
    parallel.add_process_flags(p)
    return p.parse_args(argv)


def make_config(args):
    """The model's config: its defaults, overridden by the flags given; flags it lacks are
    errors."""
    config_cls, _ = MODELS[args.model]
    values = {
        "data_dir": args.data_dir,
        "limit_train": args.limit_train,
        "limit_test": args.limit_test,
    }
    for name in (
        "dataset",
        "epochs",
        "batch_size",
        "lr",
        "seed",
        "weight_decay",
        "augment_shift",
        "init_from",
        "latent_dim",
        "classifier",
        "prior",
        "rrr_weight",
    ):
        value = getattr(args, name)
        if value is not None and value is not False:
            values[name] = value
    if args.freeze_backbone:
        values["freeze_backbone"] = True
    fields = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        flags = ", ".join("--" + name.replace("_", "-") for name in unknown)
        raise InputError(f"{flags}: not a setting of --model {args.model}")
    return config_cls(**values).validate()


RESUME_KEEPS = ("data_dir",)  # where the data lives may change; what it is may not


def main(argv=None):
    args = parse_args(argv)
    parallel.initialize_from_args(args)
    config = make_config(args)
    workdir = args.workdir or f"runs/{args.model}"
    if args.resume:
        given = [
            f.name
            for f in dataclasses.fields(config)
            if getattr(config, f.name) != f.default and f.name not in RESUME_KEEPS
        ]
        if given:
            flags = ", ".join("--" + name.replace("_", "-") for name in given)
            print(f"--resume: the run's saved settings win; ignoring {flags}", file=sys.stderr)
    try:
        history = MODELS[args.model][1](config, workdir, resume=args.resume)
    except TrainingInterrupted as e:
        print(f"\ninterrupted: {e}", file=sys.stderr)
        return 130
    last = history["epochs"][-1]
    if args.model == "cnn":
        summary = f"test accuracy {100 * last['test_accuracy']:.2f}%"
    elif args.model == "vae":
        summary = (
            f"test -ELBO {last['test_loss']:.2f} nats, latent classifier test accuracy "
            f"{100 * last['test_accuracy']:.2f}%"
        )
    else:
        summary = (
            f"Inception Score {last['inception_score']:.3f}, Frechet distance "
            f"{last['frechet_distance']:.3f} "
            f"({config.eval_samples} samples)"
            if "inception_score" in last
            else "no classifier scores"
        )
    print(f"done: {summary} after {last['wall_seconds']:.0f} s; outputs in {workdir}")
    return 0


if __name__ == "__main__":
    run_main(main)
