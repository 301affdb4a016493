import numpy as np
import pytest

from visionloop.artifacts.bundle import bundle_digest
from visionloop.artifacts.verdict import verdict_markdown
from visionloop.config import GateConfig
from visionloop.promotion.gate import ModelOnTest, judge, mcnemar_exact, paired_bootstrap

CLASSES = ("a", "b", "c")
LABELS = np.array([0, 1, 2] * 40)  # 120 images, 40 per class
GATE = GateConfig(min_top1=0.5, min_class_recall=0.2, max_class_recall_drop=0.1)


def wrong_on(indices) -> np.ndarray:
    """Predictions equal to the labels except at `indices` (shifted by one class there)."""
    predicted = LABELS.copy()
    predicted[indices] = (predicted[indices] + 1) % 3
    return predicted


def model(predicted, classes=CLASSES, digest="cand", version=None) -> ModelOnTest:
    return ModelOnTest(classes, digest, predicted, version)


def failed(verdict) -> set[str]:
    return {name for name, rule in verdict["rules"].items() if not rule["passed"]}


def test_mcnemar_uses_only_discordant_pairs():
    champion = np.array([False] * 10 + [True] * 50)
    candidate = np.ones(60, dtype=bool)
    test = mcnemar_exact(candidate, champion)
    assert (test["candidate_only_correct"], test["champion_only_correct"]) == (10, 0)
    assert test["p_better"] == pytest.approx(0.5**10) and test["p_worse"] == 1.0
    same = mcnemar_exact(champion, champion)
    assert same["p_better"] == same["p_worse"] == 1.0


def test_paired_bootstrap_is_seeded_and_brackets_the_difference():
    rng = np.random.default_rng(0)
    champion = rng.random(300) < 0.7
    candidate = champion | (rng.random(300) < 0.5)  # strictly more right answers
    first = paired_bootstrap(candidate, champion, alpha=0.05, samples=500, seed=3)
    again = paired_bootstrap(candidate, champion, alpha=0.05, samples=500, seed=3)
    assert first == again
    assert 0 < first["low"] < first["difference"] < first["high"]
    flat = paired_bootstrap(champion, champion, alpha=0.05, samples=500, seed=3)
    assert flat["low"] == flat["high"] == flat["difference"] == 0.0


def test_first_model_is_judged_on_floors_only():
    verdict = judge(GATE, LABELS, model(wrong_on([0, 1])), None)
    assert verdict["mode"] == "first_model" and verdict["passed"]
    assert set(verdict["rules"]) == {"top1_floor", "class_recall_floor"}
    bad = judge(GATE, LABELS, model(np.zeros_like(LABELS)), None)
    assert not bad["passed"] and failed(bad) == {"top1_floor", "class_recall_floor"}


def test_equal_model_passes_without_required_gain_and_fails_with_one():
    predicted = wrong_on(range(0, 30, 3))
    champion = model(predicted, digest="champ", version="4")
    tolerant = judge(GATE, LABELS, model(predicted.copy()), champion)
    assert tolerant["mode"] == "challenge" and tolerant["passed"], tolerant["summary"]
    assert {"mcnemar_not_worse", "bootstrap_not_worse"} <= set(tolerant["rules"])

    demanding = judge(
        GATE.model_copy(update={"min_gain": 0.01}), LABELS, model(predicted), champion
    )
    assert failed(demanding) == {"gain_vs_champion", "mcnemar_better", "bootstrap_better"}


def test_clearly_worse_model_fails_the_significance_rules():
    champion = model(wrong_on([0]), digest="champ", version="1")
    worse = judge(GATE, LABELS, model(wrong_on(range(0, 36, 2))), champion)
    assert {"gain_vs_champion", "mcnemar_not_worse", "bootstrap_not_worse"} <= failed(worse)


def test_a_class_that_regresses_fails_even_when_top1_improves():
    champion = model(wrong_on(range(1, 60, 3)), digest="champ", version="1")  # b: 50% recall
    lost_c = wrong_on(range(2, 20, 3))  # b perfect now, c loses 6 of 40
    verdict = judge(GATE, LABELS, model(lost_c), champion)
    assert verdict["rules"]["gain_vs_champion"]["passed"]
    assert failed(verdict) == {"class_recall_regression"}
    assert "class c" in verdict["rules"]["class_recall_regression"]["detail"]


def test_class_map_change_follows_the_policy():
    champion = ModelOnTest(("a", "b"), "champ", None, "2")
    rejected = judge(GATE, LABELS, model(LABELS.copy()), champion)
    assert rejected["mode"] == "class_map_changed" and failed(rejected) == {"class_map_matches"}
    lenient = GATE.model_copy(update={"on_class_map_change": "floors_only"})
    allowed = judge(lenient, LABELS, model(LABELS.copy()), champion)
    assert allowed["passed"] and set(allowed["rules"]) == {"top1_floor", "class_recall_floor"}
    assert "floors only" in allowed["summary"]


def test_the_champion_itself_is_never_promoted_again():
    champion = model(LABELS.copy(), digest="same", version="3")
    verdict = judge(GATE, LABELS, model(LABELS.copy(), digest="same"), champion)
    assert verdict["mode"] == "already_champion" and not verdict["passed"]


def test_markdown_report_lists_every_rule_with_value_and_threshold():
    champion = model(wrong_on([0]), digest="champ", version="1")
    tolerant = GATE.model_copy(update={"min_gain": -0.02})
    verdict = judge(tolerant, LABELS, model(wrong_on([0, 1])), champion)
    verdict["test_set"] = {"n": len(LABELS)}
    text = verdict_markdown(verdict)
    assert text.startswith("# Gate verdict: passed")
    for name, rule in verdict["rules"].items():
        assert f"| {name} | pass | {rule['value']:.4g} | {rule['threshold']:.4g} |" in text


def test_bundle_digest_follows_content(tmp_path):
    (tmp_path / "model.json").write_text("{}")
    (tmp_path / "weights.pt").write_bytes(b"1")
    first = bundle_digest(tmp_path)
    assert bundle_digest(tmp_path) == first
    (tmp_path / "weights.pt").write_bytes(b"2")
    assert bundle_digest(tmp_path) != first
