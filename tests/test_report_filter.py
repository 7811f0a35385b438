"""The report filter turns reports into (entity, position, exists) triplets (paper III-B)."""

import pytest

from unichest_lib.data.report_filter import extract, report_to_text, score, sentences
from unichest_lib.data.samples import SEP, Triplet


def pairs(report, **kw):
    return {(t.entity, t.exists) for t in extract(report, **kw)}


def test_negated_findings_do_not_exist():
    assert pairs("No pneumothorax. There is no pleural effusion.") == {
        ("pneumothorax", False), ("pleural effusion", False)}


def test_negation_scope_covers_a_list_but_stops_at_but():
    r = "No pleural effusion, pneumothorax or consolidation, but mild cardiomegaly."
    assert pairs(r) == {("pleural effusion", False), ("pneumothorax", False),
                        ("consolidation", False), ("cardiomegaly", True)}


def test_backward_negation_and_sentence_boundary():
    r = "Right pleural effusion. Pneumothorax is not seen."
    assert pairs(r) == {("pleural effusion", True), ("pneumothorax", False)}


def test_pseudo_negation_keeps_the_finding():
    assert pairs("No change in the moderate left pleural effusion.") == {("pleural effusion", True)}


@pytest.mark.parametrize("policy, expected", [("exists", True), ("absent", False)])
def test_uncertain_mentions_follow_the_policy(policy, expected):
    for r in ("Cannot exclude pneumonia.", "Pneumonia cannot be excluded.", "Possible pneumonia."):
        assert pairs(r, uncertain=policy) == {("pneumonia", expected)}, r
    assert extract("Possible pneumonia.", uncertain="drop") == []


def test_positions_are_read_next_to_the_entity():
    ts = extract("Small right pleural effusion and consolidation in the left lower lobe.")
    assert Triplet("pleural effusion", "right", True) in ts
    assert Triplet("consolidation", "left lower lobe", True) in ts


def test_synonyms_map_to_canonical_classes():
    assert pairs("The heart is enlarged. Endotracheal tube in place.") == {
        ("cardiomegaly", True), ("support devices", True)}
    assert pairs("Heart size is normal.") == {("cardiomegaly", False)}


def test_pleural_line_is_not_a_support_device():
    assert ("support devices", True) not in pairs("A visible pleural line at the right apex.")


def test_report_to_text_joins_existing_findings_with_sep_in_order():
    r = "Small right pleural effusion. No pneumothorax. Left lower lobe atelectasis."
    assert report_to_text(r) == SEP.join(["right pleural effusion", "left lower lobe atelectasis"])
    assert report_to_text("No acute cardiopulmonary process. No effusion.") == "no finding"
    assert report_to_text("") == "no finding"


def test_report_to_text_is_idempotent():
    r = "Right pleural effusion. Possible left lower lobe pneumonia. No pneumothorax."
    once = report_to_text(r)
    assert report_to_text(once) == once


def test_bad_input_is_rejected_clearly():
    with pytest.raises(TypeError, match="str"):
        extract(None)
    with pytest.raises(ValueError, match="uncertain"):
        extract("x", uncertain="maybe")


def test_sentences_split_on_punctuation_and_newlines():
    assert sentences("A. B;\nC") == ["a", "b", "c"]


def test_score_is_micro_precision_recall():
    t = [[Triplet("edema", "", True), Triplet("pneumothorax", "", False)]]
    p = [[Triplet("edema", "left", True), Triplet("pneumothorax", "", True)]]
    s = score(p, t)
    assert (s["tp"], s["fp"], s["fn"]) == (1, 1, 1)
    assert s["precision"] == s["recall"] == 0.5


def test_every_class_name_reads_back_as_itself():
    # label-concatenation texts (samples without reports) pass through the filter unchanged
    from unichest_lib.data.labels import ALL_CLASSES

    for c in ALL_CLASSES:
        assert report_to_text(c) == c
        assert extract(f"No {c}.") == [] or extract(f"No {c}.")[0].exists == (c == "no finding")
