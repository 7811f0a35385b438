"""Every prevalence the real data cards state, recomputed from the metadata torchxrayvision
ships by slow, obvious code that shares nothing with the library's loaders or priors; and the
embedded world's derived priors (``world.priors``) and images per patient checked against the
same recomputation.

Two conventions are recomputed. A card's **Statistics** paragraph quotes the real loader
(torchxrayvision's classes: frontal PA/AP views, a class is positive when its name or one of
torchxrayvision's synonyms is a *substring* of the label text). A card's **Embedded world**
paragraph quotes the world's derivation (exact label names, PadChest and CheXpert frontal
PA/AP images, Open-I per report from the manual MeSH major headings, VinDr-CXR any reader or at
least two readers).
"""

from __future__ import annotations

import ast
import csv
import gzip
import re
import tarfile
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

import pytest

from unichest_lib.config import ConfigError
from unichest_lib.data import cards, labels as L
from unichest_lib.data.world import priors
from unichest_lib.data.world.sources import SPECS

DATA = priors.txv_data_dir()
CACHE = Path(__file__).resolve().parents[1] / ".cache" / "test-world"  # as tests/test_world.py
TOL = 0.5  # percentage points


# ---- what the cards state -----------------------------------------------------------------
def _paragraph(card: str, head: str, start: str = "", end: str = "") -> str:
    """The paragraph of ``data_cards/<card>.md`` that starts with ``**<head>``, whitespace
    collapsed, cut after ``start`` and before ``end`` when given."""
    text = (cards.CARDS_DIR / f"{card}.md").read_text(encoding="utf-8")
    paras = [p for p in re.split(r"\n\s*\n", text) if p.startswith(f"**{head}")]
    assert len(paras) == 1, f"{card}.md: expected one paragraph starting **{head}"
    para = " ".join(paras[0].split())
    if start:
        assert start in para, (card, start)
        para = para.split(start, 1)[1]
    if end:
        assert end in para, (card, end)
        para = para.split(end, 1)[0]
    return para


def _class_before(prefix: str):
    """The class named by the words right before a number: the longest run of trailing words
    (no punctuation in between) that is a class name or synonym."""
    m = re.search(r"([A-Za-z][A-Za-z /-]*?)\s*$", prefix)
    words = m.group(1).split() if m else []
    for i in range(len(words)):
        try:
            return L.canonical(" ".join(words[i:]))
        except KeyError:
            continue
    return None


def stated(text: str) -> dict[str, float]:
    """{class: percent} for every "<class> <p> %" in ``text``; any percentage not preceded by
    a class name fails the test (so nothing a checked paragraph states goes unchecked)."""
    out, prev = {}, 0
    for m in re.finditer(r"(\d+(?:\.\d+)?) %", text):
        c = _class_before(text[prev:m.start()])
        assert c is not None, f"no class before {text[max(0, m.start() - 40):m.end()]!r}"
        assert c not in out, f"{c} stated twice in one list"
        out[c] = float(m.group(1))
        prev = m.end()
    assert out, f"no prevalences found in {text[:80]!r}"
    return out


def check(claims: dict[str, float], truth: dict[str, float], what: str) -> None:
    bad = {c: (p, round(100 * truth.get(c, float("nan")), 2)) for c, p in claims.items()
           if not abs(p - 100 * truth.get(c, float("nan"))) <= TOL}
    assert not bad, f"{what}: stated vs recomputed percent differ by > {TOL}: {bad}"


# ---- slow, obvious recomputations from the shipped files ----------------------------------
def _csv_rows(name: str):
    with gzip.open(DATA / name, "rt", encoding="utf-8", newline="") as f:
        yield from csv.DictReader(f)


@pytest.fixture(scope="module")
def stats():
    return priors.real_statistics(CACHE)


@pytest.fixture(scope="module")
def padchest_rows():
    keep = ("PatientID", "Projection", "PatientBirth", "Labels")
    return [{k: r[k] for k in keep} for r in
            _csv_rows("PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz")]


@pytest.fixture(scope="module")
def chexpert_rows():
    return [r for r in _csv_rows("chexpert_train.csv.gz")
            if r["Frontal/Lateral"] == "Frontal" and r["AP/PA"] in ("PA", "AP")]


@pytest.fixture(scope="module")
def vindr_votes():
    """{image: {class_name: set of readers}}."""
    votes = defaultdict(lambda: defaultdict(set))
    for r in _csv_rows("vinbigdata-train.csv.gz"):
        votes[r["image_id"]][r["class_name"]].add(r["rad_id"])
    return votes


@pytest.fixture(scope="module")
def openi_reports():
    """[(image ids, MeSH major terms, MeSH automatic terms)] per report of the archive."""
    out = []
    with tarfile.open(DATA / "NLMCXR_reports.tgz", "r:gz") as tar:
        for m in tar.getmembers():
            if m.name.endswith(".xml"):
                root = ET.parse(tar.extractfile(m)).getroot()
                out.append(([i.get("id") for i in root.iter("parentImage")],
                            [n.text or "" for n in root.iter("major")],
                            [n.text or "" for n in root.iter("automatic")]))
    return out


def _share(items, test) -> float:
    items = list(items)
    return sum(1 for x in items if test(x)) / len(items)


# ---- the real cards' Statistics paragraphs (the real loader's convention) ------------------
def test_chestxray14_card():
    rows = list(_csv_rows("Data_Entry_2017_v2020.csv.gz"))
    assert {r["View Position"] for r in rows} <= {"PA", "AP"}
    names = {"atelectasis": "Atelectasis", "cardiomegaly": "Cardiomegaly",
             "pleural effusion": "Effusion", "infiltration": "Infiltration", "mass": "Mass",
             "nodule": "Nodule", "pneumonia": "Pneumonia", "pneumothorax": "Pneumothorax",
             "consolidation": "Consolidation", "edema": "Edema", "emphysema": "Emphysema",
             "fibrosis": "Fibrosis", "pleural thickening": "Pleural_Thickening",
             "hernia": "Hernia"}
    truth = {c: _share(rows, lambda r, n=n: n in r["Finding Labels"].split("|"))
             for c, n in names.items()}
    claims = stated(_paragraph("chestxray14", "Statistics", "patients;"))
    assert set(claims) == set(names)
    check(claims, truth, "chestxray14.md")


def test_chexpert_card(chexpert_rows):
    # torchxrayvision: "No Finding" = 1 zeroes every other label but support devices; -1 is
    # missing (U-Ignore); blank is negative; prevalence among the labelled images
    truth = {}
    for col in ("No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity",
                "Lung Lesion", "Edema", "Consolidation", "Pneumonia", "Atelectasis",
                "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture",
                "Support Devices"):
        pos = neg = 0
        for r in chexpert_rows:
            v = r[col]
            if r["No Finding"] == "1.0" and col not in ("No Finding", "Support Devices"):
                v = "0.0"
            pos += v == "1.0"
            neg += v in ("0.0", "")
        truth[L.canonical(col)] = pos / (pos + neg)
    assert len(chexpert_rows) == 191010
    claims = stated(_paragraph("chexpert", "Statistics", "labelled images:", "Uncertain"))
    assert len(claims) == 14
    check(claims, truth, "chexpert.md")


VINDR_NAMES = {"aortic enlargement": "Aortic enlargement", "cardiomegaly": "Cardiomegaly",
               "pleural thickening": "Pleural thickening", "fibrosis": "Pulmonary fibrosis",
               "lung opacity": "Lung Opacity", "lung lesion": "Other lesion",
               "pleural effusion": "Pleural effusion", "infiltration": "Infiltration",
               "calcification": "Calcification", "interstitial lung disease": "ILD",
               "consolidation": "Consolidation", "atelectasis": "Atelectasis",
               "pneumothorax": "Pneumothorax"}


def _vindr_truth(votes, k: int) -> dict[str, float]:
    truth = {c: _share(votes.values(), lambda v, n=n: len(v.get(n, ())) >= k)
             for c, n in VINDR_NAMES.items()}
    truth["no finding"] = _share(votes.values(), lambda v: set(v) == {"No finding"})
    truth["nodule/mass"] = _share(votes.values(), lambda v: len(v.get("Nodule/Mass", ())) >= k)
    return truth


def test_vindr_card_states_both_reader_conventions(vindr_votes):
    assert len(vindr_votes) == 15000
    para = _paragraph("vindr", "Statistics")
    one, two = para.split("With at least two readers", 1)
    for text, k in ((one.split("published, so each image counts as one patient)", 1)[1], 1),
                    (two.split("The conventions differ most", 1)[0], 2)):
        claims = stated(text)
        assert len(claims) == 14
        truth = _vindr_truth(vindr_votes, k)
        check(claims, truth, f"vindr.md, min_readers {k}")
        n = re.search(r"nodule/mass positive in ([\d,]+) images", text).group(1)
        assert int(n.replace(",", "")) == round(truth["nodule/mass"] * 15000)
    # the conventions really differ by several points where the card says so
    t1, t2 = _vindr_truth(vindr_votes, 1), _vindr_truth(vindr_votes, 2)
    assert 100 * (t1["pleural thickening"] - t2["pleural thickening"]) > 7


def test_vindr_min_readers_option_of_the_real_loader(vindr_votes):
    truth = _vindr_truth(vindr_votes, 2)
    s = cards.stats("vindr", {"min_readers": 2}).set_index("class")
    for c in ("pleural thickening", "aortic enlargement", "lung lesion", "no finding"):
        assert s.loc[c, "positive"] == round(truth[c] * 15000), c
    assert s.loc["nodule", "missing"] == round(truth["nodule/mass"] * 15000)
    with pytest.raises(ConfigError, match="min_readers"):
        cards.stats("vindr", {"min_readers": 5})


#: torchxrayvision's PadChest rule, restated: a class is positive when one of these strings
#: is a substring of the raw label list (e.g. "tube'" = a label ending in "tube").
PADCHEST_SUBSTRINGS = {
    "atelectasis": ["atelectasis"], "cardiomegaly": ["cardiomegaly"],
    "pleural effusion": ["effusion"],
    "infiltration": ["infiltration", "infiltrates", "interstitial pattern", "ground glass pattern",
                     "reticular interstitial pattern", "reticulonodular interstitial pattern",
                     "alveolar pattern", "consolidation", "air bronchogram"],
    "mass": ["mass"], "nodule": ["nodule"], "pneumonia": ["pneumonia"],
    "pneumothorax": ["pneumothorax"], "consolidation": ["consolidation", "air bronchogram"],
    "edema": ["edema"], "emphysema": ["emphysema"], "fibrosis": ["fibrosis"],
    "pleural thickening": ["pleural thickening"], "hernia": ["hernia"], "fracture": ["fracture"],
    "support devices": ["support devices", "device", "pacemaker", "tube'", "stent'"],
    "tuberculosis": ["tuberculosis"], "scoliosis": ["scoliosis"],
    "elevated hemidiaphragm": ["hemidiaphragm elevation"],
}


def _birth_ok(r) -> bool:
    try:
        return 2019 - float(r["PatientBirth"]) > 10  # torchxrayvision drops the under-tens
    except ValueError:
        return False


def test_padchest_card(padchest_rows):
    rows = [r for r in padchest_rows if r["Projection"] in ("PA", "AP")
            and r["Labels"] not in ("", "nan") and _birth_ok(r)]
    truth = {c: _share(rows, lambda r, subs=subs: any(s in r["Labels"] for s in subs))
             for c, subs in PADCHEST_SUBSTRINGS.items()}
    claims = stated(_paragraph("padchest", "Statistics", "patients;"))
    assert set(claims) == set(PADCHEST_SUBSTRINGS)
    check(claims, truth, "padchest.md")


def test_siim_card():
    pos, images = set(), set()
    for r in _csv_rows("siim-pneumothorax-train-rle.csv.gz"):
        images.add(r["ImageId"])
        if r[" EncodedPixels"].strip() != "-1":
            pos.add(r["ImageId"])
    m = re.search(r"pneumothorax in ([\d,]+) \((\d+\.\d) %\)", _paragraph("siim", "Statistics"))
    assert int(m.group(1).replace(",", "")) == len(pos)
    assert abs(float(m.group(2)) - 100 * len(pos) / len(images)) <= TOL


OPENI_SUBSTRINGS = {  # torchxrayvision's Open-I rule on the automatic terms, restated
    "atelectasis": ["atelectasis", "atelectases"], "cardiomegaly": ["cardiomegaly"],
    "pleural effusion": ["effusion"], "infiltration": ["infiltration", "infiltrate"],
    "mass": ["mass"], "nodule": ["nodule"], "pneumonia": ["pneumonia"],
    "pneumothorax": ["pneumothorax"], "edema": ["edema"], "emphysema": ["emphysema"],
    "fibrosis": ["fibrosis"], "pleural thickening": ["pleural thickening"], "hernia": ["hernia"],
    "lung opacity": ["opacity"], "lung lesion": ["lesion"], "fracture": ["fracture"],
    "calcification": ["calcified granuloma"],
}


def test_openi_card(openi_reports):
    views = {r["imageid"]: r["tsne-view"] for r in _csv_rows("nlmcxr_tsne_pa.csv.gz")}
    images = [("|".join(t.lower() for t in auto), i) for ids, _, auto in openi_reports
              for i in ids if views.get(i) == "PA"]
    assert len(images) == 3267
    truth = {c: _share(images, lambda x, subs=subs: any(s in x[0] for s in subs))
             for c, subs in OPENI_SUBSTRINGS.items()}
    claims = stated(_paragraph("openi", "Statistics", "3,267 reports;"))
    assert set(claims) == set(OPENI_SUBSTRINGS)
    check(claims, truth, "openi.md")


# ---- the embedded world: derived priors and the cards' "Embedded world" paragraphs -----------
def _padchest_world(padchest_rows):
    rows = [r for r in padchest_rows
            if r["Projection"] in ("PA", "AP") and r["Labels"] not in ("", "nan")]
    sets = [{x.strip().lower() for x in ast.literal_eval(r["Labels"])} for r in rows]
    return rows, sets


def test_padchest_world_priors_are_corrected(padchest_rows, stats):
    rows, sets = _padchest_world(padchest_rows)
    wanted = {
        "pleural thickening": {"pleural thickening", "apical pleural thickening",
                               "calcified pleural thickening"},
        "mass": {"mass", "pulmonary mass"},
        "atelectasis": {"atelectasis", "laminar atelectasis", "lobar atelectasis",
                        "segmental atelectasis", "atelectasis basal", "total atelectasis",
                        "round atelectasis"},  # not "volume loss"
        "pneumonia": {"pneumonia", "atypical pneumonia"},
        "support devices": {"pacemaker", "dual chamber device", "single chamber device",
                            "electrical device", "catheter", "central venous catheter",
                            "central venous catheter via jugular vein",
                            "central venous catheter via subclavian vein",
                            "central venous catheter via umbilical vein",
                            "reservoir central venous catheter", "nsg tube",
                            "endotracheal tube", "tracheostomy tube", "chest drain tube"},
    }
    truth = {c: _share(sets, lambda s, w=w: bool(s & w)) for c, w in wanted.items()}
    world = priors.source_priors(stats)["padchest"]
    for c, p in truth.items():
        assert stats["padchest"]["prevalence"][c] == pytest.approx(p, abs=1e-9), c
        assert world[c] == pytest.approx(max(priors.FLOOR, p), abs=1e-9), c
    assert truth["mass"] > priors.FLOOR  # no longer hidden by the floor
    assert not any("volume loss" in labs for labs in priors.PADCHEST_MAP.values())
    check(stated(_paragraph("padchest", "Embedded world")), truth, "padchest.md (world)")


def test_openi_world_priors_come_from_its_reports(openi_reports, stats):
    reports = [{t.split("/")[0].strip().lower() for t in major}
               for ids, major, _ in openi_reports if ids]
    heads = {"no finding": {"normal"}, "cardiomegaly": {"cardiomegaly"},
             "atelectasis": {"pulmonary atelectasis"}, "pleural effusion": {"pleural effusion"},
             "lung opacity": {"opacity"}, "nodule": {"nodule"}, "pneumothorax": {"pneumothorax"},
             "infiltration": {"infiltrate"}, "calcification": {"calcified granuloma"},
             "emphysema": {"emphysema", "pulmonary emphysema", "bullous emphysema"},
             "fracture": {"fractures, bone"}, "hernia": {"hernia, hiatal", "hernia, diaphragmatic"},
             "edema": {"pulmonary edema"}, "pneumonia": {"pneumonia"},
             "consolidation": {"consolidation"}, "mass": {"mass"},
             "fibrosis": {"pulmonary fibrosis", "fibrosis"},
             "support devices": {"catheters, indwelling", "implanted medical device",
                                 "medical device", "tube, inserted"}}
    truth = {c: _share(reports, lambda r, h=h: bool(r & h)) for c, h in heads.items()}
    assert stats["openi"]["n_images"] == len(reports) == 3851
    world = priors.source_priors(stats)["openi"]
    for c, p in truth.items():
        assert stats["openi"]["prevalence"][c] == pytest.approx(p, abs=1e-9), c
        if c != "no finding":
            assert world[c] == pytest.approx(max(priors.FLOOR, p), abs=1e-9), c
    assert 0.085 < truth["cardiomegaly"] < 0.10  # not ChestX-ray14's halved 1.2 %
    assert "openi" not in priors.INVENTED
    claims = stated(_paragraph("openi", "Embedded world", "", "Labels describe"))
    truth["pleural thickening"] = _share(  # "Thickening/pleura/..." headings
        [[t.lower().split("/") for t in major] for ids, major, _ in openi_reports if ids],
        lambda r: any(p[0] == "thickening" and "pleura" in p[1:] for p in r))
    check(claims, truth, "openi.md (world)")


def test_chexpert_and_mimic_world_priors_are_frontal(chexpert_rows, stats):
    n = len(chexpert_rows)
    world = priors.source_priors(stats)
    truth = {}
    for col in ("Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion",
                "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax",
                "Pleural Effusion", "Pleural Other", "Fracture", "Support Devices"):
        c = L.canonical(col)
        truth[c] = sum(r[col] == "1.0" for r in chexpert_rows) / n
        unc = sum(r[col] == "-1.0" for r in chexpert_rows) / n
        assert stats["chexpert"]["prevalence"][c] == pytest.approx(truth[c], abs=1e-9), c
        assert stats["chexpert"]["uncertain"][c] == pytest.approx(unc, abs=1e-9), c
        assert world["chexpert"][c] == world["mimic"][c] == pytest.approx(
            max(priors.FLOOR, truth[c]), abs=1e-9), c
    check(stated(_paragraph("chexpert", "Embedded world", "", "frontal images per patient")),
          truth, "chexpert.md (world)")


def test_vindr_world_priors_offer_both_reader_conventions(vindr_votes, stats):
    for k in (1, 2):
        truth = _vindr_truth(vindr_votes, k)
        world = priors.source_priors(stats, min_readers=k)["vindr"]
        derived = stats["vindr"]["prevalence_by_min_readers"][str(k)]
        for c in VINDR_NAMES:
            assert derived[c] == pytest.approx(truth[c], abs=1e-9), (k, c)
            assert world[c] == pytest.approx(max(priors.FLOOR, truth[c]), abs=1e-9), (k, c)
        for c in ("nodule", "mass"):  # a Nodule/Mass mark counts for both
            assert derived[c] == pytest.approx(truth["nodule/mass"], abs=1e-9), (k, c)
    assert stats["vindr"]["prevalence"] == stats["vindr"]["prevalence_by_min_readers"]["1"]
    default = priors.source_priors(stats)["vindr"]
    assert default == priors.source_priors(stats, min_readers=1)["vindr"]


def test_images_per_patient_follow_the_metadata(padchest_rows, chexpert_rows, stats):
    def per_patient(pairs):
        pairs = list(pairs)
        return len(pairs) / len({p for _, p in pairs})

    truth = {
        "chestxray14": per_patient((r["Image Index"], r["Patient ID"])
                                   for r in _csv_rows("Data_Entry_2017_v2020.csv.gz")),
        "chexpert": per_patient((r["Path"], re.search(r"patient\d+", r["Path"]).group())
                                for r in chexpert_rows),
        "padchest": per_patient((r["Labels"], r["PatientID"])
                                for r in _padchest_world(padchest_rows)[0]),
    }
    for s, v in truth.items():
        assert SPECS[s].images_per_patient == pytest.approx(v, abs=0.005), s
        assert stats[s]["images_per_patient"] == pytest.approx(v, abs=1e-9), s
    assert truth["chexpert"] == pytest.approx(2.96, abs=0.01)  # frontal only (3.46 with laterals)
    # no patient ids published (VinDr-CXR, SIIM) / one report is one study (Open-I)
    for s in ("vindr", "siim", "openi"):
        assert SPECS[s].images_per_patient == stats[s]["images_per_patient"] == 1.0, s


def test_frontal_means_what_the_real_loaders_read():
    from unichest_lib.data.real.registry import FRONTAL

    assert tuple(priors.FRONTAL) == tuple(FRONTAL)
