#!/usr/bin/env python3
"""Train the BatchNorm CNN on MNIST (or Fashion-MNIST) with checkpoints, history and curves.

  python train_mnist.py --workdir runs/cnn                  # defaults: >= 99.4% test accuracy
  python train_mnist.py --workdir runs/cnn --resume         # continue an interrupted run
  python train_mnist.py --dataset fashion_mnist --workdir runs/fashion
  python train_mnist.py --init-from runs/fashion --freeze-backbone --workdir runs/transfer
"""

import sys

from mnistxai.cli import ArgumentParser, run_main
from mnistxai.train import TrainConfig, TrainingInterrupted, train_and_evaluate

DEFAULTS = TrainConfig()


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.splitlines()[0], epilog="Defaults live in mnistxai.train.TrainConfig.")
    p.add_argument("--model", default="cnn", choices=["cnn"], help="what to train (default: cnn)")
    p.add_argument("--dataset", default=DEFAULTS.dataset, help="mnist or fashion_mnist (default: mnist)")
    p.add_argument("--data-dir", help="folder with the four IDX files (default: $MNISTXAI_DATA_DIR, then others)")
    p.add_argument("--workdir", default="runs/cnn", help="checkpoints, history.json, training_curves.png (default: runs/cnn)")
    p.add_argument("--epochs", type=int, default=DEFAULTS.epochs, help=f"passes over the data (default: {DEFAULTS.epochs})")
    p.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size, help=f"default: {DEFAULTS.batch_size}")
    p.add_argument("--lr", type=float, default=DEFAULTS.lr, help=f"peak one-cycle learning rate (default: {DEFAULTS.lr})")
    p.add_argument("--weight-decay", type=float, default=DEFAULTS.weight_decay, help=f"AdamW weight decay (default: {DEFAULTS.weight_decay})")
    p.add_argument("--augment-shift", type=int, default=DEFAULTS.augment_shift,
                   help=f"random translation in pixels, 0 disables (default: {DEFAULTS.augment_shift})")
    p.add_argument("--seed", type=int, default=DEFAULTS.seed, help=f"default: {DEFAULTS.seed}")
    p.add_argument("--limit-train", type=int, metavar="N", help="train on the first N images only")
    p.add_argument("--limit-test", type=int, metavar="N", help="evaluate on the first N test images only")
    p.add_argument("--resume", action="store_true", help="continue the run in --workdir (its saved settings win)")
    p.add_argument("--init-from", metavar="WORKDIR", help="initialize all but the head from this run's CNN")
    p.add_argument("--freeze-backbone", action="store_true", help="with --init-from: train only the new head")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    config = TrainConfig(
        dataset=args.dataset, data_dir=args.data_dir, epochs=args.epochs, batch_size=args.batch_size,
        lr=args.lr, weight_decay=args.weight_decay, augment_shift=args.augment_shift, seed=args.seed,
        limit_train=args.limit_train, limit_test=args.limit_test, init_from=args.init_from,
        freeze_backbone=args.freeze_backbone).validate()
    try:
        history = train_and_evaluate(config, args.workdir, resume=args.resume)
    except TrainingInterrupted as e:
        print(f"\n{e}", file=sys.stderr)
        return 130
    last = history["epochs"][-1]
    print(f"done: test accuracy {100 * last['test_accuracy']:.2f}% after {last['wall_seconds']:.0f} s; "
          f"outputs in {args.workdir}")
    return 0


if __name__ == "__main__":
    run_main(main)
