"""Command line: ``python -m unichest_lib conquer|divide|evaluate --profile P --<field> V``.

The entry point of the ``unichest`` script and ``python -m unichest_lib``; it sits above the
whole library (it may import any of it; nothing imports it).

Every :class:`~unichest_lib.config.Config` field is an option of the same name (generated
from the dataclass, so nothing can drift); an unknown option is an error naming it. The verbs
call the same functions as the notebooks, and run unchanged under ``torchrun`` for DDP::

    python -m unichest_lib conquer --profile paper --data my_real_data.yml
    torchrun --nproc_per_node 4 -m unichest_lib divide --profile paper --K 3
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import sys
from typing import Sequence

from .config import PROFILES, Config, ConfigError, resolve

VERBS = ("conquer", "divide", "evaluate")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser: a verb, ``--profile``, ``--resume``, ``--out-dir``, ``--no-progress``
    and one ``--<field>`` per Config field (values are validated by :func:`config.resolve`)."""
    p = argparse.ArgumentParser(prog="python -m unichest_lib", allow_abbrev=False,
                                description="Train and evaluate UniChest (Dai et al., TMI 2024).")
    p.add_argument("verb", choices=VERBS, help="conquer (Eq. 4), divide (Eq. 7) or evaluate")
    p.add_argument("--profile", default="tutorial", choices=PROFILES)
    p.add_argument("--resume", action="store_true",
                   help="with --out-dir: continue from the run's last checkpoint (the store "
                        "resumes an interrupted build by itself)")
    p.add_argument("--out-dir", default=None,
                   help="train into this run folder instead of the artifact store")
    p.add_argument("--conquer-checkpoint", default=None,
                   help="divide with --out-dir: start from this checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    group = p.add_argument_group("configuration (any Config field, by name)")
    for f in dataclasses.fields(Config):
        if f.name == "profile":
            continue
        group.add_argument(f"--{f.name}", default=None, metavar="V", help="default: profile's")
    return p


def parse(argv: Sequence[str]) -> tuple[argparse.Namespace, Config]:
    """Parse ``argv`` into the options and a validated Config (ConfigError on bad values)."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(list(argv))
    if unknown:
        names = [u.split("=")[0] for u in unknown if u.startswith("-")] or unknown
        fields = [f"--{f.name}" for f in dataclasses.fields(Config)]
        hints = [difflib.get_close_matches(n, fields, n=1) for n in names]
        hint = "; ".join(f"{n} (did you mean {h[0]}?)" if h else n for n, h in zip(names, hints))
        raise ConfigError(f"unknown option(s): {hint}. Options are the Config fields: "
                          + ", ".join(fields))
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(Config)
                 if f.name != "profile" and getattr(args, f.name) is not None}
    cfg = resolve(args.profile, **overrides)
    if args.conquer_checkpoint is not None and (args.verb != "divide" or args.out_dir is None):
        raise ConfigError("--conquer-checkpoint starts a Divide run outside the artifact store: "
                          "use it with the divide verb and --out-dir")
    return args, cfg


def run(args: argparse.Namespace, cfg: Config):
    """Run the verb with the same functions the notebooks call; returns what they return.

    ``conquer`` / ``divide`` without ``--out-dir`` ask the artifact store, which trains the
    stage (and Divide's Conquer) when missing, under its lock, and files it where the chapters
    find it; an interrupted build resumes by itself. With ``--out-dir`` the stage trains
    there (``--resume`` continues that run; ``--conquer-checkpoint`` picks Divide's start,
    default the store's Conquer checkpoint) and the store is not touched."""
    from .training import distributed, store

    progress = not args.no_progress
    if args.verb == "evaluate":
        from .evaluation.classification import in_domain

        table = in_domain(store.load_model(cfg, "divide", progress=progress), cfg)
        print(table.to_string())
        return table
    if distributed.launched_by_torchrun():  # every rank meets before the store looks at files
        distributed.init_from_env(cfg.device)
    if args.out_dir is None:
        path = store.checkpoint(cfg, args.verb, progress=progress)
        if distributed.is_main():
            best = store.manifest(cfg, args.verb).get("best_metric")
            print(f"best validation aAUC {best:.4f}; checkpoint {path}")
        return path
    from .training import stages

    if args.verb == "conquer":
        result = stages.conquer(cfg, args.out_dir, progress=progress, resume=args.resume)
    else:
        start = args.conquer_checkpoint or store.conquer_checkpoint(cfg, progress=progress)
        result = stages.divide(cfg, start, args.out_dir, progress=progress, resume=args.resume)
    if distributed.is_main():
        print(f"best validation aAUC {result.best_metric:.4f}; checkpoint {result.checkpoint}")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m unichest_lib`` and the ``unichest`` script."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        args, cfg = parse(argv)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from .training import distributed

    try:
        run(args, cfg)
    finally:
        distributed.cleanup()
    return 0


__all__ = ["VERBS", "build_parser", "main", "parse", "run"]
