"""Command line: ``python -m unichest_lib conquer|divide|evaluate|check-data --profile P --<field> V``.

The entry point of the ``unichest`` script and ``python -m unichest_lib``; it sits above the
whole library (it may import any of it; nothing imports it). The verbs:

``conquer``     train (or fetch from the artifact store) the Conquer stage, Eq. 4
``divide``      the same for the Divide stage, Eq. 7 (trains Conquer first when missing)
``evaluate``    score a stage's checkpoint (``--stage``, default divide) on the ``--split``
                (default test) of the pre-training sources (in-domain) and of the downstream
                sources (zero-shot, class names as queries); prints the macro metrics per task
                and source and writes the full tidy table next to the checkpoint
``check-data``  a dry run of a real-data YAML (no model, no training): images and patients
                per source and split, missing image files, label coverage per class

Every :class:`~unichest_lib.config.Config` field is an option of the same name (generated
from the dataclass, so nothing can drift); an unknown option is an error naming it. A
tuple-valued field takes ``a,b`` or a JSON list (``'["a", "b"]'``). The verbs call the same
functions as the notebooks, and run unchanged under ``torchrun`` for DDP::

    python -m unichest_lib conquer --profile paper --data my_real_data.yml
    torchrun --nproc_per_node 4 -m unichest_lib divide --profile paper --K 3
    python -m unichest_lib evaluate --profile smoke --sources '["chestxray14", "vindr"]'
    python -m unichest_lib check-data my_real_data.yml

An error prints one line, ``error: ...``, on stderr (``--debug``: the traceback instead) and
exits 2 for a bad configuration or usage, 130 when interrupted, 1 otherwise; ``check-data``
exits 1 when image files are missing or a dataset cannot be read (after its report).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import sys
import typing
from typing import Sequence

from .config import PROFILES, Config, ConfigError, profile_defaults, resolve

VERBS = ("conquer", "divide", "evaluate", "check-data")
EVAL_STAGES = ("conquer", "divide", "continued")


def _option_help(name: str, hint) -> tuple[str, str]:
    """(metavar, help) of a Config field's option: its type and each profile's default."""
    kinds = {bool: ("BOOL", "true/false"), int: ("INT", "integer"), float: ("X", "number"),
             str: ("TEXT", "text")}
    metavar, kind = kinds.get(hint, ("A,B", 'names: a,b or a JSON list \'["a", "b"]\''))
    show = [",".join(v) if isinstance(v, tuple) else str(v)
            for v in (getattr(profile_defaults(p), name) for p in PROFILES)]
    default = show[0] if len(set(show)) == 1 else \
        " / ".join(f"{p} {v}" for p, v in zip(PROFILES, show))
    return metavar, f"{kind}; default {default}".replace("%", "%%")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser: a verb (and check-data's YAML), ``--profile``, the run options and
    one ``--<field>`` per Config field (values are validated by :func:`config.resolve`)."""
    p = argparse.ArgumentParser(prog="python -m unichest_lib", allow_abbrev=False,
                                description="Train and evaluate UniChest (Dai et al., TMI 2024).")
    p.add_argument("verb", choices=VERBS, help="conquer (Eq. 4), divide (Eq. 7), evaluate, or "
                   "check-data (a dry run of a real-data YAML: counts, missing files, labels)")
    p.add_argument("yaml", nargs="?", default=None, metavar="DATA.yml",
                   help="check-data: the real-data YAML file to check (or --data)")
    p.add_argument("--profile", default="tutorial", choices=PROFILES)
    p.add_argument("--resume", action="store_true",
                   help="with --out-dir: continue from the run's last checkpoint (the store "
                        "resumes an interrupted build by itself)")
    p.add_argument("--out-dir", default=None,
                   help="train into this run folder instead of the artifact store")
    p.add_argument("--conquer-checkpoint", default=None,
                   help="divide with --out-dir: start from this checkpoint")
    p.add_argument("--stage", default=None, choices=EVAL_STAGES,
                   help="evaluate: the checkpoint to score (default divide)")
    p.add_argument("--split", default=None, choices=("valid", "test"),
                   help="evaluate: the split to score (default test)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--debug", action="store_true",
                   help="on an error, raise it with its traceback instead of one line")
    group = p.add_argument_group("configuration (any Config field, by name; default: the "
                                 "profile's, shown as smoke / tutorial / paper when they differ)")
    hints = typing.get_type_hints(Config)
    for f in dataclasses.fields(Config):
        if f.name == "profile":
            continue
        metavar, text = _option_help(f.name, hints[f.name])
        group.add_argument(f"--{f.name}", default=None, metavar=metavar, help=text)
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
    if args.yaml is not None:
        if args.verb != "check-data":
            raise ConfigError(f"unexpected argument {args.yaml!r}: only check-data takes a file "
                              "(the other verbs read real data with --data my.yml)")
        if overrides.get("data", args.yaml) != args.yaml:
            raise ConfigError(f"check-data got two data files, {args.yaml!r} and --data "
                              f"{overrides['data']!r}; give one")
        overrides["data"] = args.yaml
    cfg = resolve(args.profile, **overrides)
    if args.verb == "check-data" and cfg.data == "embedded":
        raise ConfigError("check-data checks a real-data YAML file: give its path "
                          "(python -m unichest_lib check-data my.yml); the embedded world "
                          "needs no check")
    if (args.stage or args.split) and args.verb != "evaluate":
        raise ConfigError("--stage and --split choose what evaluate scores; "
                          f"{args.verb} takes neither")
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
    default the store's Conquer checkpoint) and the store is not touched. ``evaluate``
    returns its tidy table, ``check-data`` its :class:`~unichest_lib.data.real.DataCheck`."""
    if args.verb == "check-data":
        from .data.real import check_data

        result = check_data(cfg.data)
        print(result.report())
        return result
    from .training import distributed, store

    progress = not args.no_progress
    if args.verb == "evaluate":
        return evaluate(cfg, args.stage or "divide", args.split or "test", progress=progress)
    if distributed.launched_by_torchrun():  # every rank meets before the store looks at files
        distributed.init_from_env(cfg.device)
    if args.out_dir is None:
        path = store.stage_checkpoint(cfg, args.verb, progress=progress)
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


def zero_shot_sources(cfg: Config) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(downstream sources evaluate scores zero-shot, those it leaves out): ``cfg.downstream``
    without chestxdet10 (grounding only), and with real data only those the YAML lists."""
    wanted = tuple(s for s in cfg.downstream if s != "chestxdet10")
    if cfg.data == "embedded":
        return wanted, ()
    from .data.real import read_spec

    listed = read_spec(cfg.data)["datasets"]
    return tuple(s for s in wanted if s in listed), tuple(s for s in wanted if s not in listed)


def evaluate(cfg: Config, stage: str = "divide", split: str = "test", *, progress: bool = True):
    """Score the store's ``stage`` model of ``cfg`` in-domain and zero-shot; print the macro
    metrics per task and source; write the tidy table next to the checkpoint, as
    ``checkpoint.evaluation_<split>.csv`` in the stage's artifact folder (atomically, by
    :func:`~unichest_lib.evaluation.classification.save_results`), and return it."""
    import pandas as pd

    from .evaluation import classification, summary
    from .training import store

    path = store.stage_checkpoint(cfg, stage, progress=progress)
    model = store.load_model(cfg, stage, progress=progress)
    tables = [classification.in_domain(model, cfg, split=split).assign(task="in-domain")]
    zs, left_out = zero_shot_sources(cfg)
    if zs:
        tables.append(classification.zero_shot(model, cfg, zs, split=split)
                      .assign(task="zero-shot"))
    table = pd.concat(tables, ignore_index=True)
    out = classification.save_results(table, path, f"evaluation_{split}")  # atomic
    print(f"{stage} checkpoint {path}, {split} split; macro means over the classes with both "
          "labels (zero-shot: class names as queries)")
    print(summary.format_summary(summary.summarise(table)))
    if left_out:
        print(f"not scored zero-shot (not in {cfg.data}): {', '.join(left_out)}")
    print(f"full table ({len(table)} rows): {out}")
    return table


def _message(e: BaseException) -> str:
    """One line for the user: the message, prefixed by the type of an unexpected error."""
    text = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
    text = text or type(e).__name__
    ck = sys.modules.get(f"{__package__}.training.checkpoints")  # loaded if one can be raised
    expected = (OSError, ValueError) + ((ck.CheckpointError,) if ck else ())
    if isinstance(e, expected):
        return text
    return f"{type(e).__name__}: {text} (--debug shows the traceback)"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m unichest_lib`` and the ``unichest`` script: the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args, cfg = parse(argv)
        try:
            result = run(args, cfg)
        finally:
            if args.verb in ("conquer", "divide"):
                from .training import distributed

                distributed.cleanup()
        return 1 if args.verb == "check-data" and not result.ok else 0
    except (Exception, KeyboardInterrupt) as e:
        if "--debug" in argv:
            raise
        if isinstance(e, KeyboardInterrupt):
            print("error: interrupted", file=sys.stderr)
            return 130
        print(f"error: {_message(e)}", file=sys.stderr)
        return 2 if isinstance(e, ConfigError) else 1


__all__ = ["EVAL_STAGES", "VERBS", "build_parser", "evaluate", "main", "parse", "run",
           "zero_shot_sources"]
