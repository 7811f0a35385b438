"""``python -m unichest_lib.data.world preview --profile smoke --out grid.png`` and
``python -m unichest_lib.data.world cards`` (rewrite the embedded data cards). The old path,
``python -m unichest_lib.world``, runs the same (see :mod:`unichest_lib._legacy`); this file
uses absolute imports so that it runs under either name."""

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
    args = ap.parse_args(argv)
    if args.cmd == "cards":
        from unichest_lib.data.cards import CARDS_DIR
        from unichest_lib.data.world.card import write_cards

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
    from unichest_lib.data.world import World
    from unichest_lib.data.world.preview import save_grid

    print(save_grid(World(cfg), args.out, args.n))
    return 0


if __name__ == "__main__":
    sys.exit(main())
