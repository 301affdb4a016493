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

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.steps += 1
        decay = min(self.decay, (1 + self.steps) / (10 + self.steps))
        pairs = zip(self.module.state_dict().values(), model.state_dict().values(), strict=True)
        for averaged, current in pairs:
            if averaged.is_floating_point():
                averaged.lerp_(current.detach(), 1 - decay)
            else:  # counters such as batch norm's num_batches_tracked
                averaged.copy_(current)

    def state_dict(self) -> dict[str, Any]:
        return {"module": self.module.state_dict(), "steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.steps = int(state["steps"])
