"""Command line: ``python -m unichest_lib conquer|divide|evaluate --profile P --<field> V``.

Every :class:`~unichest_lib.config.Config` field is an option of the same name (generated
from the dataclass, so nothing can drift); an unknown option is an error naming it. The verbs
call the same functions as the notebooks, and run unchanged under ``torchrun`` for DDP::

    python -m unichest_lib conquer --profile paper --data my_real_data.yml
    torchrun --nproc_per_node 4 -m unichest_lib divide --profile paper --K 3 --resume
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
    p.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    p.add_argument("--out-dir", default=None, help="run folder (default: the artifact store)")
    p.add_argument("--conquer-checkpoint", default=None, help="divide: start from this checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    group = p.add_argument_group("configuration (any Config field, by name)")
    for f in dataclasses.fields(Config):
        if f.name == "profile":
            continue
        group.add_argument(f"--{f.name}", default=None, metavar="V", help=f"default: profile's")
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
    return args, resolve(args.profile, **overrides)


def run(args: argparse.Namespace, cfg: Config):
    """Run the verb with the same functions the notebooks call; returns their result."""
    from . import distributed

    progress = not args.no_progress
    if args.verb == "conquer":
        from . import train

        result = train.conquer(cfg, progress=progress, out_dir=args.out_dir, resume=args.resume)
        if distributed.is_main():
            print(f"best validation aAUC {result.best_metric:.4f}; checkpoint {result.checkpoint}")
        return result
    if args.verb == "divide":
        from . import train

        result = train.divide(cfg, conquer_checkpoint=args.conquer_checkpoint, progress=progress,
                              out_dir=args.out_dir, resume=args.resume)
        if distributed.is_main():
            print(f"best validation aAUC {result.best_metric:.4f}; checkpoint {result.checkpoint}")
        return result
    from . import evaluate, store

    model = store.load_model(cfg, "divide", progress=progress)
    table = evaluate.in_domain(model, cfg)
    print(table.to_string())
    return table


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m unichest_lib`` and the ``unichest`` script."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        args, cfg = parse(argv)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from . import distributed

    try:
        run(args, cfg)
    finally:
        distributed.cleanup()
    return 0


__all__ = ["VERBS", "build_parser", "main", "parse", "run"]
