"""Why do random-init features beat pre-trained ones in the 10 % linear probe? (issue #32 item 2)

One Conquer model at a training seed no chapter uses (default 100) against the random
initialisation UniChest draws at that seed (``evidence.transfer.random_encoder``), on SIIM
(pneumothorax), for two features of the frozen encoder (``finetune.FEATURES``): the
backbone's own globally pooled map (512-d for ResNet-18; MGCA's probe reads this) and Ī (the
mean of the projected patches, d-dim; the book's probe read this until transfer/2). Prints

1. the geometry of each feature on all SIIM images: width, mean norm, the share of the
   squared norm that is the common mean, the covariance spectrum (top-1 / top-5 shares,
   participation ratio (sum λ)² / sum λ²) before and after per-dimension standardisation,
   dimensions with almost no variance, and the test AUC of the class-centroid direction
   (the limit of a strongly regularised probe) fitted on all training images; the same
   spectrum on a pre-training source's test split; the pneumothorax AUC of the top three
   principal directions on each split, and how often a 10 % subset sees one the wrong way;
2. the probe's test AUC per portion over many label subsets (spread over subsets = subset
   noise), with C = 1 (the old protocol), C chosen on SIIM's validation split, C chosen by
   the inner patient-disjoint split of the training rows (``finetune.choose_c``, the new
   protocol) and the best C on the test split itself (a ceiling, not a protocol); and the
   paired difference pre-trained − random per subset;
3. where Ī's variance lies: the share in the span of the model's class queries (text
   embeddings of the pre-training classes) against a random subspace of that dimension, and
   how the pneumothorax query reads Ī, the patches and the query networks (zero-shot);
4. a probe on 13 global pixel statistics (mean, sd, percentiles, half-image means, mean
   absolute gradients): what the task needs without any network.

    PYTHONPATH=. .venv/bin/python bench/diag_transfer.py --profile tutorial --seed 100
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

from unichest_lib import hardware
from unichest_lib.config import resolve
from unichest_lib.data import make_dataset
from unichest_lib.evaluation import classification
from unichest_lib.evaluation import finetune as FT
from unichest_lib.evidence.transfer import random_encoder
from unichest_lib.model.inference import encoded_batches
from unichest_lib.training import store

SPLITS = ("train", "valid", "test")


PIXEL_STATS = ("mean", "sd", "p5", "p25", "p50", "p75", "p95", "left mean", "right mean",
               "top mean", "bottom mean", "|d/dy|", "|d/dx|")


def pixel_statistics(ds) -> np.ndarray:
    """(N, 13) global statistics of each image's pixels (:data:`PIXEL_STATS`)."""
    out = []
    for i in range(len(ds)):
        im = ds[i]["image"][0].numpy()
        h, w = im.shape
        out.append(np.r_[im.mean(), im.std(), np.percentile(im, [5, 25, 50, 75, 95]),
                         im[:, : w // 2].mean(), im[:, w // 2:].mean(), im[: h // 2].mean(),
                         im[h // 2:].mean(), np.abs(np.diff(im, axis=0)).mean(),
                         np.abs(np.diff(im, axis=1)).mean()])
    return np.array(out)


def spectrum(x: np.ndarray) -> dict:
    xc = x - x.mean(0)
    lam = np.clip(np.linalg.eigvalsh(np.cov(xc, rowvar=False))[::-1], 0, None)
    sd = x.std(0)
    z = xc / np.where(sd > 0, sd, 1.0)
    lz = np.clip(np.linalg.eigvalsh(np.cov(z, rowvar=False))[::-1], 0, None)
    var = x.var(0)
    return dict(width=x.shape[1], norm=float(np.linalg.norm(x, axis=1).mean()),
                mean_share=float((x.mean(0) ** 2).sum() / (x ** 2).sum(1).mean()),
                total_var=float(lam.sum()), top1=float(lam[0] / lam.sum()),
                top5=float(lam[:5].sum() / lam.sum()), pr=float(lam.sum() ** 2 / (lam ** 2).sum()),
                pr_std=float(lz.sum() ** 2 / (lz ** 2).sum()),
                quiet_dims=int((var < 1e-3 * np.median(var)).sum()),
                var_max_over_median=float(var.max() / np.median(var)))


def centroid_auc(x_tr, y_tr, x_te, y_te, standardise: bool) -> float:
    if standardise:
        s = StandardScaler().fit(x_tr)
        x_tr, x_te = s.transform(x_tr), s.transform(x_te)
    w = x_tr[y_tr == 1].mean(0) - x_tr[y_tr == 0].mean(0)
    return float(roc_auc_score(y_te, x_te @ w))


def probe_grid(x_tr, y_tr, evals: dict, grid, seed: int) -> dict:
    """{C: {split: AUC}} of a standardised logistic regression fitted on (x_tr, y_tr)."""
    s = StandardScaler().fit(x_tr)
    out = {}
    for c in grid:
        clf = LogisticRegression(C=c, max_iter=5000, random_state=seed).fit(s.transform(x_tr), y_tr)
        out[c] = {k: float(roc_auc_score(y, clf.decision_function(s.transform(x))))
                  for k, (x, y) in evals.items()}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="tutorial")
    ap.add_argument("--seed", type=int, default=100)
    ap.add_argument("--subsets", type=int, default=50, help="label subsets per portion < 100 %%")
    ap.add_argument("--draws", type=int, default=500, help="10 %% subsets for the sign count of 1b")
    ap.add_argument("--n-downstream", type=int, default=0,
                    help="images per downstream source in the world (0: the profile's); "
                         "not upstream of training, so the same Conquer checkpoint is used")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="", help="also write the tables as CSV with this prefix")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.time()
    c = resolve(args.profile, seed=args.seed)
    prov = hardware.provenance(c.amp, c.device)
    print(f"profile {c.profile}, training seed {c.seed}, backbone {c.backbone}, d = {c.embed_dim}, "
          f"{c.image_size} px; CPU {prov.get('cpu', platform.processor())}; precision "
          f"{prov.get('precision')}; torch threads {torch.get_num_threads()}")
    model = store.load_model(c, "conquer")
    if args.n_downstream:  # the transfer source only; the pre-trained checkpoint is the same
        c = c.replace(n_downstream=args.n_downstream)
    encoders = {"pre-trained": model, "random init": random_encoder(c, args.seed)}
    ds = {s: make_dataset(c, ["siim"], s) for s in SPLITS}
    y = {s: np.nan_to_num(d.table.labels[:, 0], nan=0.0).astype(int) for s, d in ds.items()}
    print("SIIM images (positives):", ", ".join(f"{s} {len(y[s])} ({y[s].sum()})" for s in SPLITS))

    feats, patches = {}, {}
    for enc, m in encoders.items():
        for kind in FT.FEATURES:
            feats[enc, kind] = {s: FT.probe_features(m, ds[s], c, kind) for s in SPLITS}
        patches[enc] = {s: torch.cat([p.float() for p, _ in encoded_batches(m, ds[s], c)]).numpy()
                        for s in SPLITS}
        feats[enc, "patch max"] = {s: patches[enc][s].max(1) for s in SPLITS}
    kinds = list(FT.FEATURES) + ["patch max"]

    # 1. geometry ---------------------------------------------------------------------------
    rows = []
    for (enc, kind), f in feats.items():
        allx = np.concatenate([f[s] for s in SPLITS])
        tr_te = (f["train"], y["train"], f["test"], y["test"])
        rows.append(dict(encoder=enc, feature=kind, **spectrum(allx),
                         centroid_auc=centroid_auc(*tr_te, False),
                         centroid_auc_std=centroid_auc(*tr_te, True)))
    ref = make_dataset(c, [c.val_source], "test")  # a pre-training source, for comparison
    for enc, m in encoders.items():
        for kind in FT.FEATURES:
            rows.append(dict(encoder=enc, feature=f"{kind} ({c.val_source} test)",
                             **spectrum(FT.probe_features(m, ref, c, kind))))
    geo = pd.DataFrame(rows)
    print("\n1. Feature geometry on all SIIM images (centroid AUC: train class-mean difference, "
          f"on test), and on {c.val_source}'s test split")
    print(geo.round(3).to_string(index=False))
    rows = []
    for (enc, kind), f in feats.items():
        allx = np.concatenate([f[s] for s in SPLITS])
        mu, vt = allx.mean(0), np.linalg.svd(allx - allx.mean(0), full_matrices=False)[2]
        pc = {s: (f[s] - mu) @ vt[:3].T for s in SPLITS}
        sub = [FT.stratified_subset(ds["train"].table.labels, 0.1, (args.seed, 1000 + j))
               for j in range(args.draws)]
        for k in range(3):
            full = roc_auc_score(y["train"], pc["train"][:, k])
            flips = np.mean([(roc_auc_score(y["train"][i], pc["train"][i, k]) - 0.5)
                             * (full - 0.5) < 0 for i in sub])
            rows.append(dict(encoder=enc, feature=kind, pc=k + 1, **{
                f"auc_{s}": roc_auc_score(y[s], pc[s][:, k]) for s in SPLITS},
                sign_flipped_in_10pct=float(flips)))
    print(f"\n1b. Pneumothorax AUC of the top principal directions per split (AUC < 0.5: the "
          f"label lies the other way), and the share of {args.draws} 10 % subsets whose own AUC "
          "lies on the other side of 0.5 than the whole training split's")
    print(pd.DataFrame(rows).round(3).to_string(index=False))

    # 2. probes ----------------------------------------------------------------------------
    grid = FT.C_GRID
    def evals(f):
        return {"valid": (f["valid"], y["valid"]), "test": (f["test"], y["test"])}
    recs = []
    for (enc, kind), f in feats.items():
        for p in FT.PORTIONS:
            for j in range(args.subsets if p < 1 else 1):
                idx = FT.stratified_subset(ds["train"].table.labels, p, (args.seed, j))
                xt, yt = f["train"][idx], y["train"][idx]
                res = probe_grid(xt, yt, evals(f), grid, args.seed)
                inner_c, _ = FT.choose_c(StandardScaler().fit_transform(xt), yt, seed=args.seed)
                c_val = max(grid, key=lambda cc: (res[cc]["valid"], -cc))
                recs.append(dict(encoder=enc, feature=kind, portion=p, subset=j, n=len(idx),
                                 c1=res[1.0]["test"], c_valid=res[c_val]["test"], C_valid=c_val,
                                 c_inner=res[inner_c]["test"], C_inner=inner_c,
                                 c_best_test=max(r["test"] for r in res.values()),
                                 **{f"C={cc:g}": res[cc]["test"] for cc in grid}))
    pr = pd.DataFrame(recs)
    agg = pr.groupby(["feature", "encoder", "portion"], sort=False).agg(
        subsets=("subset", "size"), n=("n", "first"),
        C1_mean=("c1", "mean"), C1_sd=("c1", "std"), C1_min=("c1", "min"),
        C1_below_half=("c1", lambda v: int((v < 0.5).sum())),
        valid_C_mean=("c_valid", "mean"), valid_C_sd=("c_valid", "std"),
        inner_C_mean=("c_inner", "mean"), inner_C_sd=("c_inner", "std"),
        inner_C_mode=("C_inner", lambda v: v.mode().iloc[0]),
        best_test_C_mean=("c_best_test", "mean"))
    print(f"\n2. Probe test AUC over label subsets (seeds ({args.seed}, 0..{args.subsets - 1})); "
          "sd = spread over subsets")
    print(agg.round(3).to_string())
    curve = pr.groupby(["feature", "encoder", "portion"], sort=False)[
        [f"C={cc:g}" for cc in grid]].mean()
    print("\n2b. Mean test AUC over subsets at each fixed C")
    print(curve.round(3).to_string())
    piv = pr.pivot_table(index=["feature", "portion", "subset"], columns="encoder",
                         values=["c1", "c_valid", "c_inner"])
    drows = []
    for (kind, p), g in piv.groupby(level=[0, 1], sort=False):
        for proto in ("c1", "c_valid", "c_inner"):
            d = g[(proto, "pre-trained")] - g[(proto, "random init")]
            drows.append(dict(feature=kind, portion=p, C=proto, diff_mean=d.mean(),
                              diff_sd=d.std(), pretrained_wins=f"{int((d > 0).sum())}/{len(d)}"))
    print("\n2c. Paired difference pre-trained − random init per subset")
    print(pd.DataFrame(drows).round(3).to_string(index=False))

    # 3. where Ī lies, and what the pneumothorax query reads -------------------------------------
    q_all = model.encode_text(list(model.classes)).detach().float().numpy()
    u = np.linalg.svd(q_all, full_matrices=False)[2]  # orthonormal basis of the queries' span
    r = int(np.linalg.matrix_rank(q_all))
    u = u[:r]
    rows = []
    for enc in encoders:
        x = np.concatenate([feats[enc, "projected"][s] for s in SPLITS])
        xc = x - x.mean(0)
        v1 = np.linalg.svd(xc, full_matrices=False)[2][0]
        rows.append(dict(encoder=enc, query_span_dim=r, var_share_in_query_span=float(
            ((xc @ u.T) ** 2).sum() / (xc ** 2).sum()), random_subspace_share=r / x.shape[1],
            top_pc_in_query_span=float(np.linalg.norm(u @ v1))))
    print(f"\n3. Share of Ī's variance in the span of the model's {len(model.classes)} class "
          "queries (random init: the same trained queries, for reference)")
    print(pd.DataFrame(rows).round(3).to_string(index=False))
    k = model.classes.index("pneumothorax") if "pneumothorax" in model.classes else None
    if k is not None:
        q = q_all[k]
        zs = classification.predict(model, ds["test"], c, by="name").probs[:, 0]
        zs_tr = classification.predict(model, ds["train"], c, by="name").probs[:, 0]
        print(f"\n3a. Zero-shot pneumothorax AUC (query networks) on SIIM train "
              f"{roc_auc_score(y['train'], zs_tr):.3f}, test {roc_auc_score(y['test'], zs):.3f}")
        pt = patches["pre-trained"]["test"]
        reads = {"query networks (zero-shot, by name)": zs,
                 "Ī · q_pneumothorax": feats["pre-trained", "projected"]["test"] @ q,
                 "max over patches of patch · q": (pt @ q).max(1),
                 "mean over patches of patch · q": (pt @ q).mean(1)}
        print("\n3b. Pneumothorax on SIIM test without training on SIIM (pre-trained model)")
        for name, s in reads.items():
            print(f"  {name:40s} AUC {roc_auc_score(y['test'], s):.3f}")
    # 4. what no network needs: global statistics of the pixels -------------------------------
    px = {s: pixel_statistics(ds[s]) for s in SPLITS}
    single = {name: roc_auc_score(y["test"], px["test"][:, k])
              for k, name in enumerate(PIXEL_STATS)}
    res = probe_grid(px["train"], y["train"], {"valid": (px["valid"], y["valid"]),
                                               "test": (px["test"], y["test"])}, FT.C_GRID, 0)
    c_val = max(FT.C_GRID, key=lambda cc: (res[cc]["valid"], -cc))
    print(f"\n4. A probe on {len(PIXEL_STATS)} global pixel statistics (no network), all "
          f"{len(y['train'])} training images, C = {c_val:g} chosen on valid: test AUC "
          f"{res[c_val]['test']:.3f}; single statistics on test: "
          + ", ".join(f"{k} {v:.3f}" for k, v in single.items()))
    if args.out:
        geo.to_csv(f"{args.out}geometry.csv", index=False)
        pr.to_csv(f"{args.out}probes.csv", index=False)
    print(f"\nwall time {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
