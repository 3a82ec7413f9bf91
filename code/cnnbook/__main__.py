"""Command line: ``python -m cnnbook train --model conv --profile quick``, ``python -m cnnbook bench``."""

from __future__ import annotations

import argparse
import os
import sys
import time


def main(argv: list[str] | None = None) -> int:
    from . import data, models, train

    parser = argparse.ArgumentParser(prog="python -m cnnbook",
                                     description="The CIFAR-10 CNN book's helper commands.")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("train", help="train one of the book's models, or load the cached run",
                            description="Train a model under a profile, sharing the book's run "
                            "cache: a run that was already trained is loaded, not retrained.")
    p.add_argument("--model", required=True, choices=sorted(models.MODELS),
                   help="conv: only convolutions (variant 1); pool: with max pooling (variant 2)")
    p.add_argument("--profile", choices=sorted(train.PROFILES),
                   help=f"default: ${train.PROFILE_ENV}, else {train.DEFAULT_PROFILE}")
    p.add_argument("--data", metavar="SOURCE",
                   help=f"'keras' (download), or a path to a local copy; default: ${data.DATA_ENV}, "
                   "else keras")
    p.add_argument("--epochs", type=int, help="override the profile's number of epochs")
    p.add_argument("--train-per-class", type=int, metavar="N",
                   help="override the profile's training images per class")
    p.add_argument("--test-per-class", type=int, metavar="N",
                   help="override the profile's test images per class")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bf16", action="store_true",
                   help="train in bfloat16 mixed precision (a separate cached run; for CPUs with "
                   "AVX512_BF16 or AMX, and recent GPUs); default: float32")
    p.add_argument("--cache-dir", help=f"default: ${data.CACHE_ENV}, else ~/.cache/cnnbook")
    p.add_argument("--force", action="store_true", help="train again even if the run is cached")
    b = commands.add_parser(
        "bench", help="measure training throughput, % of peak, build times and site weight",
        description="Benchmark this machine: the book's training path against the assignment's "
        "plain model.fit (alternating, medians after warm-up), achieved FLOP/s against a "
        "measured matmul peak, predicted vs measured epoch time, book build times on a copy of "
        "the book, and the built site's weight. Writes one JSON file.")
    b.add_argument("--reduced", action="store_true",
                   help="fewer images and rounds, no extra variants (a few minutes on 2 cores)")
    b.add_argument("--rounds", type=int, metavar="N",
                   help="measured epochs per training path (default: 3 reduced, 7 full)")
    b.add_argument("--train-per-class", type=int, metavar="N",
                   help="training images per class in a measured epoch, 5 to 5,000 (default: "
                   "25 reduced, 50 full; validation is a fifth of it); the results' mode says "
                   "when --rounds or this was given")
    b.add_argument("--out", metavar="FILE", default="bench-results.json",
                   help="where to write the JSON (default: %(default)s; the book shows "
                   "book/_static/bench/latest.json)")
    b.add_argument("--book", metavar="DIR", help="the book folder to copy and build "
                   "(default: the book beside this package)")
    b.add_argument("--data", metavar="SOURCE", help=f"default: ${data.DATA_ENV}, else keras")
    b.add_argument("--cache-dir", help=f"default: ${data.CACHE_ENV}, else ~/.cache/cnnbook")
    b.add_argument("--no-builds", action="store_true", help="measure training only")
    b.add_argument("--built", action="store_true",
                   help="the --book folder was already built with this data source and cache "
                   "(its _build is reused): time the rebuilds, not the cold build")
    b.add_argument("--workdir", metavar="DIR",
                   help="keep the copy of the book and the workers' logs in DIR (default: a "
                   "temporary folder, removed at the end)")
    b.add_argument("--allow-busy", action="store_true",
                   help="measure even if the load average at the start says the machine is "
                   "busy (the results are labelled busy)")
    args = parser.parse_args(argv)
    if args.command == "bench":
        return _bench(args)

    start = time.perf_counter()
    try:
        profile = train.get_profile(args.profile)
        train.run_config(args.model, profile, data_source=args.data, epochs=args.epochs,
                         train_per_class=args.train_per_class,
                         test_per_class=args.test_per_class, seed=args.seed)  # checks them all
        source = data.resolve_source(args.data)
        print(f"{models.TITLES[args.model]}, profile {profile.name}")
        print(f"Data: {source.description}", flush=True)
        result = train.train(args.model, profile, data_source=args.data, epochs=args.epochs,
                             train_per_class=args.train_per_class,
                             test_per_class=args.test_per_class, seed=args.seed,
                             precision="mixed_bfloat16" if args.bf16 else "float32",
                             force=args.force, cache_dir=args.cache_dir)
    except (data.DataError, train.ConfigError, train.CacheError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # anything else the system refused: say what and where, briefly
        what = os.strerror(exc.errno) if exc.errno else str(exc).splitlines()[0]
        where = f": {exc.filename}" if exc.filename else ""
        print(f"error: {what}{where}. Fix that, then run the same command again: a run resumes "
              "from its last finished epoch.", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: run the same command again to resume from the last finished "
              "epoch.", file=sys.stderr)
        return 130
    elapsed = time.perf_counter() - start
    if result.from_cache:
        print(f"Loaded from the run cache in {elapsed:.1f} s, not retrained (use --force to "
              f"train again): {result.run_dir}")
        for epoch, (acc, val) in enumerate(zip(result.history["accuracy"],
                                               result.history["val_accuracy"]), start=1):
            print(f"  epoch {epoch:2d}: accuracy {acc:.4f}, val_accuracy {val:.4f}, "
                  f"{result.epoch_seconds[epoch - 1]:.1f} s")
    print(result.describe())
    print(f"  mean {sum(result.epoch_seconds) / result.epochs:.1f} s per epoch")
    return 0


def _bench(args) -> int:
    from . import bench, data

    try:
        settings = bench.with_overrides(bench.REDUCED if args.reduced else bench.FULL,
                                        rounds=args.rounds, train_per_class=args.train_per_class)
        results = bench.run(settings, out=args.out,
                            book=args.book, data_source=args.data, cache_dir=args.cache_dir,
                            builds=not args.no_builds, built=args.built,
                            allow_busy=args.allow_busy, workdir=args.workdir)
    except (data.DataError, bench.BenchError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(bench.summary(results))
    print(f"Wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
