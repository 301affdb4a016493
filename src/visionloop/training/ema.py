"""An exponential moving average (EMA) of the weights, updated after every optimiser step.

On small sets the weights of the last steps jump from batch to batch; their average is a
smoother, usually better model. Validation, early stopping and the bundle then use the
average. The decay warms up ((1 + n) / (10 + n) until it reaches `decay`), so the first
steps' random weights fade fast instead of dragging the average for hundreds of steps.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class WeightAverage:
    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.steps = 0
        self._pairs: tuple[nn.Module, list, list, list, list] | None = None

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.steps += 1
        decay = min(self.decay, (1 + self.steps) / (10 + self.steps))
        averaged, current, counters, their_counters = self._tensors(model)
        torch._foreach_lerp_(averaged, current, 1 - decay)  # one call, not one per tensor
        for mine, theirs in zip(counters, their_counters, strict=True):
            mine.copy_(theirs)  # counters such as batch norm's num_batches_tracked

    def _tensors(self, model: nn.Module) -> tuple[list, list, list, list]:
        """Both models' tensors, paired, listed once per model: the optimiser and batch norm
        change them in place, so the lists stay valid (and state_dict() per step cost a third
        of the update)."""
        if self._pairs is None or self._pairs[0] is not model:
            mine, theirs = self.module.state_dict(), model.state_dict()
            floats = [k for k, v in mine.items() if v.is_floating_point()]
            others = [k for k, v in mine.items() if not v.is_floating_point()]
            self._pairs = (
                model,
                [mine[k] for k in floats],
                [theirs[k] for k in floats],
                [mine[k] for k in others],
                [theirs[k] for k in others],
            )
        return self._pairs[1:]

    def state_dict(self) -> dict[str, Any]:
        return {"module": self.module.state_dict(), "steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.steps = int(state["steps"])
