"""One prediction as every consumer reports it: label, confidence, top-k (and probabilities).

`visionloop predict`, `visionloop serve`, the prediction log and the MLflow model all
describe a row of probabilities through `describe`, so the same image reads the same
everywhere.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def top_k(probs: np.ndarray, classes: tuple[str, ...], k: int) -> list[dict[str, Any]]:
    """The k most probable classes, most probable first (ties: class-map order)."""
    order = np.argsort(-probs, kind="stable")[: max(1, k)]
    return [{"label": classes[i], "probability": round(float(probs[i]), 6)} for i in order]


def describe(probs: np.ndarray, classes: tuple[str, ...], k: int) -> dict[str, Any]:
    best = top_k(probs, classes, k)
    return {"label": best[0]["label"], "confidence": best[0]["probability"], "top_k": best}


def probabilities(probs: np.ndarray, classes: tuple[str, ...]) -> dict[str, float]:
    return {name: round(float(p), 6) for name, p in zip(classes, probs, strict=True)}


def top_k_text(best: list[dict[str, Any]]) -> str:
    """`7:0.981200;1:0.012000` for CSV cells (class names never hold ':' or ';')."""
    return ";".join(f"{entry['label']}:{entry['probability']:.6f}" for entry in best)
