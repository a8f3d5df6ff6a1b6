"""An exponential moving average of a module's weights (``ema_decay``).

A stage that averages its weights trains as usual; after each optimizer
step the average moves towards the new weights. At the end of every
training epoch the average is put into the module, so that validation,
early stopping, the guard and the user's callbacks see the averaged model;
the trained weights go back in when the next epoch starts, and the stage
ends with the average in the module.
"""

from __future__ import annotations

import torch
from torch import nn


def decay_at(decay: float, n_updates: int) -> float:
    """The decay of update ``n_updates + 1``: ``decay``, lowered at first to
    ``(1 + n) / (10 + n)`` (as timm's model EMA warms up), so that the
    average of a short stage is not its starting weights."""
    return min(decay, (1.0 + n_updates) / (10.0 + n_updates))


class WeightAverage:
    """The running average of every floating-point parameter and buffer of a
    module (BatchNorm statistics included); other buffers (counters) follow
    the module's."""

    def __init__(self, module: nn.Module, decay: float):
        self.decay = float(decay)
        self.n_updates = 0
        self.average = {k: v.detach().clone() for k, v in module.state_dict().items()}
        self.trained = None  # the trained weights while the average is in

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        """Move the average towards the module's weights (after a step)."""
        weight = 1.0 - decay_at(self.decay, self.n_updates)
        for key, value in module.state_dict().items():
            if value.is_floating_point():
                self.average[key].lerp_(value.detach(), weight)
            else:
                self.average[key].copy_(value)
        self.n_updates += 1

    @torch.no_grad()
    def put_in(self, module: nn.Module) -> None:
        """The average into the module; the trained weights kept aside."""
        if self.trained is not None:
            return
        state = module.state_dict()
        self.trained = {k: v.detach().clone() for k, v in state.items()}
        for key, value in state.items():
            value.copy_(self.average[key])

    @torch.no_grad()
    def take_out(self, module: nn.Module) -> None:
        """The trained weights back into the module, to train on."""
        if self.trained is None:
            return
        for key, value in module.state_dict().items():
            value.copy_(self.trained[key])
        self.trained = None
