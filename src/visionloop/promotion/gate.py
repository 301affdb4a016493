"""The gate stage: may the candidate replace `models:/<name>@champion`?

The champion is re-evaluated on the same test images as the candidate, so every comparison
is paired. Rules, all from params (gate section):

- floors, opt-in (null by default): candidate top-1 >= min_top1, and every class's recall
  >= min_class_recall;
- no champion yet: the first-model rule: the candidate must beat each quick baseline
  (`first_model_baselines`: the majority class, logistic regression on downsampled pixels;
  visionloop.promotion.baselines) on the same test images, significantly (one-sided exact
  McNemar at alpha); the verdict names the rule and the baselines' scores;
- with a champion on the same class map:
  - gain: candidate top-1 - champion top-1 >= min_gain (negative: a tolerance);
  - per-class regression: no class loses more than max_class_recall_drop recall;
  - significance (McNemar's exact test and/or a paired bootstrap, alpha from params): when
    a gain is required (min_gain > 0) the candidate must be significantly better; otherwise
    it must not be significantly worse;
- champion on another class map: `on_class_map_change` decides (reject, the first-model
  rule, or floors only).

Every run writes the verdict (visionloop.artifacts.verdict), passed or failed. The gate reads
the registry, which DVC cannot see: dvc.yaml marks it always_changed.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from visionloop.artifacts import candidate as candidate_files
from visionloop.artifacts.bundle import bundle_digest
from visionloop.artifacts.prepared import require_split
from visionloop.artifacts.verdict import (
    ALREADY_CHAMPION,
    CHALLENGE,
    CLASS_MAP_CHANGED,
    FIRST_MODEL,
    write_verdict,
)
from visionloop.config import Config, GateConfig
from visionloop.promotion import registry
from visionloop.promotion.baselines import Baseline
from visionloop.promotion.evaluate import (
    check_compatible,
    load_candidate,
    load_test_split,
    per_class_metrics,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rule:
    name: str
    passed: bool
    value: float | None
    threshold: float | None
    detail: str


@dataclass(frozen=True)
class ModelOnTest:
    """A model's predictions on the test images (None when it could not be compared)."""

    classes: tuple[str, ...]
    bundle_sha256: str
    predicted: np.ndarray | None
    version: str | None = None  # registry version, for the champion


def fingerprint_test_set(sha256: tuple[str, ...], labels: np.ndarray) -> str:
    """Which images, in which order, with which labels: equal fingerprints, same test set."""
    digest = hashlib.sha256("\n".join(sha256).encode())
    digest.update(np.asarray(labels, dtype=np.int64).tobytes())
    return digest.hexdigest()


def mcnemar_exact(candidate_correct: np.ndarray, champion_correct: np.ndarray) -> dict[str, Any]:
    """McNemar's exact test on the discordant pairs, one-sided in each direction."""
    from scipy.stats import binomtest

    wins = int(np.sum(candidate_correct & ~champion_correct))  # only the candidate right
    losses = int(np.sum(~candidate_correct & champion_correct))  # only the champion right
    discordant = wins + losses

    def one_sided(successes: int) -> float:
        if discordant == 0:  # identical correctness: no evidence either way
            return 1.0
        return float(binomtest(successes, discordant, 0.5, alternative="greater").pvalue)

    return {
        "candidate_only_correct": wins,
        "champion_only_correct": losses,
        "p_better": one_sided(wins),
        "p_worse": one_sided(losses),
    }


def paired_bootstrap(
    candidate_correct: np.ndarray,
    champion_correct: np.ndarray,
    alpha: float,
    samples: int,
    seed: int,
) -> dict[str, float]:
    """Confidence bounds on the top-1 difference, resampling test images (pairs kept together).

    A two-sided interval at 1 - 2*alpha gives a one-sided (1 - alpha) bound at each end:
    `low > 0` is "significantly better", `high < 0` is "significantly worse" at level alpha.
    """
    from scipy.stats import bootstrap

    difference = candidate_correct.astype(np.float64) - champion_correct.astype(np.float64)
    observed = float(difference.mean())
    if np.all(difference == difference[0]):  # no spread: every resample gives the same value
        low = high = observed
    else:
        result = bootstrap(
            (difference,),
            np.mean,
            n_resamples=samples,
            confidence_level=1 - 2 * alpha,
            method="percentile",
            rng=np.random.default_rng(seed),
        )
        low, high = result.confidence_interval
    return {
        "difference": observed,
        "low": float(low),
        "high": float(high),
        "one_sided_confidence": 1 - alpha,
    }


def floor_rules(gate: GateConfig, labels: np.ndarray, candidate: ModelOnTest) -> list[Rule]:
    """The absolute floors that are set (both are opt-in)."""
    rules = []
    if gate.min_top1 is not None:
        top1 = float(np.mean(candidate.predicted == labels))
        passed = top1 >= gate.min_top1
        rules.append(Rule("top1_floor", passed, top1, gate.min_top1, "candidate top-1"))
    if gate.min_class_recall is not None:
        recalls = class_recalls(labels, candidate.predicted, candidate.classes)
        worst = min(recalls, key=recalls.get)
        rules.append(
            Rule(
                "class_recall_floor",
                recalls[worst] >= gate.min_class_recall,
                recalls[worst],
                gate.min_class_recall,
                f"lowest class recall (class {worst})",
            )
        )
    return rules


def baseline_rules(
    gate: GateConfig, labels: np.ndarray, candidate: ModelOnTest, baselines: list[Baseline]
) -> tuple[list[Rule], dict[str, Any]]:
    """The first-model rule: significantly better than each baseline on the same images."""
    candidate_correct = candidate.predicted == labels
    top1 = float(candidate_correct.mean())
    rules, scores = [], {}
    for baseline in baselines:
        baseline_correct = baseline.predicted == labels
        test = mcnemar_exact(candidate_correct, baseline_correct)
        scores[baseline.name] = {
            "description": baseline.description,
            **scores_of(baseline.predicted, labels, candidate.classes),
            "mcnemar": test,
        }
        counts = f"{test['candidate_only_correct']} vs {test['champion_only_correct']} discordant"
        rules.append(
            Rule(
                f"beats_{baseline.name}",
                test["p_better"] < gate.alpha,
                test["p_better"],
                gate.alpha,
                f"candidate top-1 {top1:.4f} vs the {baseline.name} baseline's "
                f"{scores[baseline.name]['top1']:.4f}: one-sided exact McNemar p that the "
                f"candidate is better must be < alpha ({counts})",
            )
        )
    return rules, scores


def class_recalls(
    labels: np.ndarray, predicted: np.ndarray, classes: tuple[str, ...]
) -> dict[str, float]:
    """Recall of every class present in the test set (absent classes have no recall)."""
    return {
        row["class"]: row["recall"]
        for row in per_class_metrics(labels, predicted, classes)
        if row["support"] > 0
    }


def comparison_rules(
    gate: GateConfig, labels: np.ndarray, candidate: ModelOnTest, champion: ModelOnTest
) -> tuple[list[Rule], dict[str, Any]]:
    candidate_correct = candidate.predicted == labels
    champion_correct = champion.predicted == labels
    gain = float(candidate_correct.mean() - champion_correct.mean())
    rules = [
        Rule(
            "gain_vs_champion",
            gain >= gate.min_gain - 1e-12,
            gain,
            gate.min_gain,
            f"candidate top-1 minus champion v{champion.version} top-1",
        ),
        recall_regression_rule(gate, labels, candidate, champion),
    ]
    statistics: dict[str, Any] = {}
    gain_required = gate.min_gain > 0
    if gate.significance in ("mcnemar", "both"):
        test = mcnemar_exact(candidate_correct, champion_correct)
        statistics["mcnemar"] = test
        rules.append(mcnemar_rule(test, gate.alpha, gain_required))
    if gate.significance in ("bootstrap", "both"):
        interval = paired_bootstrap(
            candidate_correct, champion_correct, gate.alpha, gate.bootstrap_samples, gate.seed
        )
        statistics["bootstrap"] = interval
        rules.append(bootstrap_rule(interval, gain_required))
    return rules, statistics


def recall_regression_rule(
    gate: GateConfig, labels: np.ndarray, candidate: ModelOnTest, champion: ModelOnTest
) -> Rule:
    new = class_recalls(labels, candidate.predicted, candidate.classes)
    old = class_recalls(labels, champion.predicted, champion.classes)
    drops = {name: old[name] - new[name] for name in new}
    worst = max(drops, key=drops.get)
    return Rule(
        "class_recall_regression",
        drops[worst] <= gate.max_class_recall_drop + 1e-12,
        drops[worst],
        gate.max_class_recall_drop,
        f"largest recall drop vs the champion (class {worst})",
    )


def mcnemar_rule(test: dict[str, Any], alpha: float, gain_required: bool) -> Rule:
    counts = f"{test['candidate_only_correct']} vs {test['champion_only_correct']} discordant"
    if gain_required:
        return Rule(
            "mcnemar_better",
            test["p_better"] < alpha,
            test["p_better"],
            alpha,
            f"one-sided exact p that the candidate is better must be < alpha ({counts})",
        )
    return Rule(
        "mcnemar_not_worse",
        test["p_worse"] >= alpha,
        test["p_worse"],
        alpha,
        f"one-sided exact p that the candidate is worse must be >= alpha ({counts})",
    )


def bootstrap_rule(interval: dict[str, float], gain_required: bool) -> Rule:
    bounds = f"[{interval['low']:+.4f}, {interval['high']:+.4f}]"
    if gain_required:
        return Rule(
            "bootstrap_better",
            interval["low"] > 0,
            interval["low"],
            0.0,
            f"lower confidence bound of the top-1 gain must be > 0 (interval {bounds})",
        )
    return Rule(
        "bootstrap_not_worse",
        interval["high"] >= 0,
        interval["high"],
        0.0,
        f"upper confidence bound of the top-1 gain must be >= 0 (interval {bounds})",
    )


def judge(
    gate: GateConfig,
    labels: np.ndarray,
    candidate: ModelOnTest,
    champion: ModelOnTest | None,
    baselines: list[Baseline] | None = None,
) -> dict[str, Any]:
    """The verdict as a JSON-able dict: mode, every rule with value and threshold, passed.

    `baselines`: the first-model rule's quick baselines on the same test images, needed when
    there is no champion (or its class map differs and the policy is first_model).
    """
    rules = floor_rules(gate, labels, candidate)
    statistics: dict[str, Any] = {}
    if champion is None:
        mode = FIRST_MODEL
        summary, more_rules, statistics = first_model(gate, labels, candidate, baselines or [])
        rules.extend(more_rules)
    elif champion.bundle_sha256 == candidate.bundle_sha256:
        mode = ALREADY_CHAMPION
        summary = f"the candidate is champion v{champion.version} itself: nothing to promote"
        rules.append(Rule("differs_from_champion", False, None, None, summary))
    elif champion.classes != candidate.classes:
        mode = CLASS_MAP_CHANGED
        detail = (
            f"champion v{champion.version} has {len(champion.classes)} classes "
            f"{list(champion.classes)[:5]}..., the candidate {len(candidate.classes)}; "
            f"policy on_class_map_change={gate.on_class_map_change}"
        )
        statistics["class_map_change"] = detail
        if gate.on_class_map_change == "reject":
            summary = "the class map changed and the policy is reject"
            rules.append(Rule("class_map_matches", False, None, None, detail))
        elif gate.on_class_map_change == "first_model":
            summary, more_rules, scores = first_model(gate, labels, candidate, baselines or [])
            summary = f"the class map changed (policy first_model): {summary}"
            rules.extend(more_rules)
            statistics.update(scores)
        else:
            summary = "the class map changed: judged on the floors only (policy floors_only)"
    else:
        mode = CHALLENGE
        summary = f"candidate vs champion v{champion.version} on the same test images"
        more_rules, statistics = comparison_rules(gate, labels, candidate, champion)
        rules.extend(more_rules)
    passed = all(rule.passed for rule in rules)
    failed = [rule.name for rule in rules if not rule.passed]
    return {
        "passed": passed,
        "mode": mode,
        "summary": f"{'PASSED' if passed else 'FAILED'}: {summary}"
        + (f" (failed: {', '.join(failed)})" if failed else ""),
        "candidate": model_summary(candidate, labels),
        "champion": model_summary(champion, labels) if champion else None,
        "rules": {rule.name: asdict(rule) for rule in rules},
        "statistics": statistics,
        "params": gate.model_dump(mode="json", exclude={"dir"}),
    }


def first_model(
    gate: GateConfig, labels: np.ndarray, candidate: ModelOnTest, baselines: list[Baseline]
) -> tuple[str, list[Rule], dict[str, Any]]:
    """The first-model rule's summary line, rules and the baselines' scores."""
    rules, scores = baseline_rules(gate, labels, candidate, baselines)
    if not baselines:
        floors = "judged on the floors only" if gate.floors_set() else "no rule applies"
        return f"no champion yet: first-model rule, {floors}", rules, {}
    named = ", ".join(f"{name} (top-1 {score['top1']:.4f})" for name, score in scores.items())
    summary = (
        f"no champion yet: first-model rule, the candidate (top-1 "
        f"{float(np.mean(candidate.predicted == labels)):.4f}) must beat {named} "
        f"significantly on the same test images"
    )
    return summary, rules, {"baselines": scores}


def scores_of(
    predicted: np.ndarray, labels: np.ndarray, classes: tuple[str, ...]
) -> dict[str, Any]:
    """Top-1 with macro-F1 and the lowest class recall beside it."""
    rows = [row for row in per_class_metrics(labels, predicted, classes) if row["support"] > 0]
    worst = min(rows, key=lambda row: row["recall"])
    return {
        "top1": float(np.mean(predicted == labels)),
        "f1_macro": float(np.mean([row["f1"] for row in rows])),
        "min_class_recall": float(worst["recall"]),
        "min_recall_class": worst["class"],
    }


def model_summary(model: ModelOnTest, labels: np.ndarray) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "version": model.version,
        "bundle_sha256": model.bundle_sha256,
        "classes": list(model.classes),
        "top1": None,
    }
    if model.predicted is not None:
        summary.update(scores_of(model.predicted, labels, model.classes))
    return summary


def run(config: Config) -> dict[str, Any]:
    """The gate stage: judge the candidate against the champion; always write a verdict."""
    split = load_test_split(config)
    classifier = load_candidate(config)
    check_compatible(split, classifier.meta)
    candidate = ModelOnTest(
        classes=classifier.meta.classes,
        bundle_sha256=bundle_digest(candidate_files.bundle_dir(config.train.dir)),
        predicted=classifier.predict_proba(split.images, config.evaluate.batch_size).argmax(1),
    )
    champion = champion_on_test(config, split.images, candidate.classes)
    baselines = None
    if needs_baselines(config.gate, champion, candidate.classes):
        baselines = fit_baselines(config, split.images)
    verdict = judge(config.gate, split.labels, candidate, champion, baselines)
    verdict["test_set"] = {
        "n": len(split),
        "fingerprint": fingerprint_test_set(split.sha256, split.labels),
    }
    verdict["created"] = datetime.now(UTC).isoformat(timespec="seconds")
    write_verdict(config.gate.dir, verdict)
    log.info(
        "gate: %s (%s): %s",
        "passed" if verdict["passed"] else "failed",
        verdict["mode"],
        verdict["summary"],
    )
    result = {"passed": verdict["passed"], "mode": verdict["mode"], "summary": verdict["summary"]}
    if config.registry.act_in_pipeline:
        result["registry"] = registry.register_and_promote(config)
    return result


def needs_baselines(
    gate: GateConfig, champion: ModelOnTest | None, classes: tuple[str, ...]
) -> bool:
    if not gate.first_model_baselines:
        return False
    if champion is None:
        return True
    return champion.classes != classes and gate.on_class_map_change == "first_model"


def fit_baselines(config: Config, test_images: np.ndarray) -> list[Baseline]:
    """The configured quick baselines, fitted on the prepared train (and val) splits."""
    from visionloop.promotion import baselines

    train = require_split(config.prepare.dir, "train")
    fitted = []
    for name in config.gate.first_model_baselines:
        if name == "majority":
            fitted.append(baselines.majority(train.labels, len(test_images)))
        else:
            val = require_split(config.prepare.dir, "val")
            fitted.append(baselines.logistic([train, val], test_images, config.gate.seed))
    return fitted


def champion_on_test(
    config: Config, images: np.ndarray, candidate_classes: tuple[str, ...]
) -> ModelOnTest | None:
    """The champion's predictions on the test images (None: no champion yet).

    On another class map its predictions mean nothing for these labels, so none are made.
    """
    from visionloop.images import fit_batch

    champion = registry.load_champion(config)
    if champion is None:
        return None
    classifier = champion.classifier
    predicted = None
    if classifier.meta.classes == candidate_classes:
        batch = fit_batch(images, classifier.meta.image_size, classifier.meta.resize)
        predicted = classifier.predict_proba(batch, config.evaluate.batch_size).argmax(1)
    return ModelOnTest(classifier.meta.classes, champion.bundle_sha256, predicted, champion.version)
