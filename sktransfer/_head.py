"""The new head trained on top of the body's pooled features."""

from __future__ import annotations

from torch import nn
from torch.nn import functional


class InputNorm(nn.BatchNorm1d):
    """The head's first BatchNorm. While ``frozen`` it normalises with its
    running statistics in training mode too: after a linear probe has set
    them from every training image (see :mod:`._probe`), stages on the same
    cached features train the head on exactly the inputs it predicts on."""

    frozen = False

    def forward(self, x):
        if not self.frozen:
            return super().forward(x)
        return functional.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias,
            False, 0.0, self.eps,
        )  # fmt: skip


class Head(nn.Module):
    """BatchNorm/Dropout/Linear blocks on pooled features, as fastai builds it.

    ``n_features -> [BN, Dropout(p/2), Linear, ReLU] per hidden size ->
    BN, Dropout(p), Linear -> n_classes`` logits. With ``hidden_sizes=()``
    it is a (batch-normalised, dropped-out) linear model.
    """

    def __init__(self, n_features, n_classes, hidden_sizes=(512,), dropout=0.5):
        super().__init__()
        layers = []
        sizes = [int(n_features), *(int(h) for h in hidden_sizes)]
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers += [
                InputNorm(a) if i == 0 else nn.BatchNorm1d(a),
                nn.Dropout(dropout / 2),
                nn.Linear(a, b),
                nn.ReLU(),
            ]
        layers += [
            nn.BatchNorm1d(sizes[-1]) if len(sizes) > 1 else InputNorm(sizes[-1]),
            nn.Dropout(dropout),
            nn.Linear(sizes[-1], n_classes),
        ]
        # momentum=None: running statistics are the exact average over all
        # batches seen. On precomputed features (a fixed distribution) that is
        # right after one epoch, where an exponential average needs dozens of
        # steps, and small data sets have only a few steps per epoch.
        for layer in layers:
            if isinstance(layer, nn.BatchNorm1d):
                layer.momentum = None
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        return self.layers(x)


def prepare_batchnorm(head, on_features, keep_input=False) -> None:
    """Set the head's BatchNorm layers up for a stage.

    On precomputed features the head's BatchNorm averages every batch of
    the stage (exact after one epoch on a fixed distribution) and forgets
    statistics of other features (another image size, a warm start). On
    images the features move with the augmentation and, unfrozen, with the
    body: track recent batches. ``keep_input`` keeps the statistics of the
    head's first BatchNorm (set by a probe from every training image) in
    stages on features."""
    for module in head.modules():
        if not isinstance(module, nn.BatchNorm1d):
            continue
        if isinstance(module, InputNorm):
            module.frozen = keep_input and on_features
            if module.frozen:
                continue
        if on_features:
            module.reset_running_stats()
            module.momentum = None
        else:
            module.momentum = 0.1
