import numpy as np
import pytest

from visionloop.artifacts.bundle import bundle_digest
from visionloop.artifacts.verdict import verdict_markdown
from visionloop.config import GateConfig
from visionloop.promotion.baselines import Baseline
from visionloop.promotion.baselines import logistic as logistic_baseline
from visionloop.promotion.baselines import majority as majority_baseline
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


def baseline(name: str, predicted: np.ndarray) -> Baseline:
    return Baseline(name, predicted, f"the {name} test baseline")


def test_first_model_must_beat_each_baseline_significantly():
    majority = baseline("majority", np.zeros_like(LABELS))  # one class of three: 1/3
    logistic = baseline("logistic", wrong_on(range(0, 60)))  # wrong on half: 0.5
    first = GateConfig()  # the defaults: no floors, both baselines
    strong = judge(first, LABELS, model(wrong_on(range(0, 12))), None, [majority, logistic])
    assert strong["mode"] == "first_model" and strong["passed"], strong["summary"]
    assert set(strong["rules"]) == {"beats_majority", "beats_logistic"}
    assert strong["rules"]["beats_logistic"]["value"] < 0.05
    scores = strong["statistics"]["baselines"]
    assert scores["logistic"]["top1"] == pytest.approx(0.5)
    assert scores["majority"]["top1"] == pytest.approx(1 / 3)
    assert "logistic (top-1 0.5000)" in strong["summary"]

    # a little better than logistic regression, on other images: not significantly better
    close = judge(first, LABELS, model(wrong_on(range(60, 114))), None, [majority, logistic])
    assert not close["passed"] and failed(close) == {"beats_logistic"}
    assert "failed: beats_logistic" in close["summary"]
    text = verdict_markdown({**close, "test_set": {"n": len(LABELS)}})
    assert "| logistic | 0.5 |" in text and "| beats_logistic | FAIL |" in text


def test_floors_are_opt_in_and_add_to_the_first_model_rule():
    assert GateConfig().min_top1 is None and GateConfig().min_class_recall is None
    majority = baseline("majority", np.zeros_like(LABELS))
    floored = GateConfig(min_top1=0.95)
    verdict = judge(floored, LABELS, model(wrong_on(range(0, 12))), None, [majority])
    assert set(verdict["rules"]) == {"top1_floor", "beats_majority"}
    assert failed(verdict) == {"top1_floor"}  # 0.9 beats the majority but not the floor


def test_class_map_change_can_judge_the_candidate_as_a_first_model():
    champion = ModelOnTest(("a", "b"), "champ", None, "2")
    policy = GateConfig(on_class_map_change="first_model")
    majority = baseline("majority", np.zeros_like(LABELS))
    verdict = judge(policy, LABELS, model(LABELS.copy()), champion, [majority])
    assert verdict["mode"] == "class_map_changed" and verdict["passed"]
    assert set(verdict["rules"]) == {"beats_majority"} and "first_model" in verdict["summary"]
    with pytest.raises(ValueError, match="floors_only needs min_top1 or min_class_recall"):
        GateConfig(on_class_map_change="floors_only")


def test_baselines_fit_in_seconds_and_the_majority_is_the_largest_train_class():
    from visionloop.artifacts.prepared import PreparedSplit

    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], [50, 30, 20])
    images = rng.integers(0, 40, (100, 24, 24, 3), dtype=np.uint8)
    images[labels == 1, :, :12] = 220  # class 1: bright left half
    images[labels == 2, :12] = 220  # class 2: bright top half
    split = PreparedSplit(images, labels, tuple(str(i) for i in range(100)))
    assert (majority_baseline(labels, 7).predicted == 0).all()
    fitted = logistic_baseline([split], images[::10], seed=0)
    assert (fitted.predicted == labels[::10]).mean() == 1.0
    assert "16x16 RGB pixels" in fitted.description
