"""``python -m unichest_lib.data.world preview --profile smoke --out grid.png``,
``python -m unichest_lib.data.world cards`` (rewrite the embedded data cards) and
``python -m unichest_lib.data.world export --out DIR --profile smoke`` (the world in each real
dataset's own layout, with a ready ``DIR/data.yml``; :mod:`unichest_lib.data.export`)."""

from __future__ import annotations

import argparse
import sys

from unichest_lib import config as C


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m unichest_lib.data.world",
                                 description="The embedded multi-source chest X-ray world.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("preview", help="write a grid of images from every source with labels")
    p.add_argument("--profile", default="smoke", choices=C.PROFILES)
    p.add_argument("--out", default="world_grid.png")
    p.add_argument("--n", type=int, default=4, help="images per source")
    p.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE",
                   help="config overrides, e.g. heterogeneity=0 image_size=128")
    c = sub.add_parser("cards", help="(re)write data_cards/embedded_<source>.md from the code")
    c.add_argument("--out", default=None, help="folder (default: the repository's data_cards/)")
    c.add_argument("--cache-dir", default=".cache/unichest")
    e = sub.add_parser("export", help="write the world in each real dataset's own on-disk layout "
                                      "plus DIR/data.yml for --data")
    e.add_argument("--out", required=True, help="folder to write (created)")
    e.add_argument("--profile", default="smoke", choices=C.PROFILES)
    e.add_argument("--sources", default=None,
                   help="datasets to write, as a,b or a JSON list (default: all nine)")
    e.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE",
                   help="config overrides, e.g. heterogeneity=0 world_seed=1")
    args = ap.parse_args(argv)
    if args.cmd == "cards":
        from unichest_lib.data.cards import CARDS_DIR
        from unichest_lib.data.world.card_text import write_cards

        for p in write_cards(args.out or CARDS_DIR, args.cache_dir):
            print(p)
        return 0
    overrides = {}
    for kv in args.set:
        if "=" not in kv:
            ap.error(f"--set expects NAME=VALUE, got {kv!r}")
        k, v = kv.split("=", 1)
        overrides[k] = v
    try:
        cfg = C.resolve(args.profile, **overrides)
    except C.ConfigError as e:
        ap.error(str(e))
    if args.cmd == "export":
        from unichest_lib.data.export import FORMATS, export_world

        sources = None
        if args.sources is not None:
            try:
                sources = C.parse_names(args.sources)
            except ValueError:
                ap.error(f"--sources {args.sources!r}: give a,b or a JSON list")
            bad = [s for s in sources if s not in FORMATS]
            if bad:
                ap.error(f"--sources: unknown dataset(s) {bad}; known: {', '.join(FORMATS)}")
        report = export_world(cfg, args.out, sources)
        print(report.table.round(2).to_string(index=False))
        print(f"total {report.table['MB'].sum():.1f} MB in {report.table['seconds'].sum():.1f} s")
        print(f"use it with: python -m unichest_lib conquer --profile {args.profile} "
              f"--data {report.data_yml}")
        return 0
    from unichest_lib.data.world import World
    from unichest_lib.data.world.preview import save_grid

    print(save_grid(World(cfg), args.out, args.n))
    return 0


if __name__ == "__main__":
    sys.exit(main())
