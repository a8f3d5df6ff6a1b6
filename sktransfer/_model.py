"""The fitted model as one ``torch.nn.Module``: :class:`FittedModel`.

Prediction, :func:`~sktransfer.save` / :func:`~sktransfer.load` and
:mod:`sktransfer.export` all use the estimator's ``model_``. Its input is
what the estimator's ``preprocess`` returns: uint8 crops ``(n, H, W, 3)``
(NHWC, the layout of decoded pictures and of the exported graphs). Its
output is what ``predict_proba`` (classifier) or ``predict`` (regressor)
returns for the plain view.

The model has two parts, so that prediction can read the pooled features
of photos it has seen before from the feature cache and run the rest only:
:meth:`FittedModel.features` (normalisation, then each body with its
pooling) and :meth:`FittedModel.head_outputs` (each member's head, the
task's output step, the average over members). A snapshot ensemble has one
head per member; its members share one body, or, when its last stage
trained the body, each has its own.
"""

from __future__ import annotations

import copy
import dataclasses

import torch
from torch import nn

from ._tasks import Affine


class Normalize(nn.Module):
    """uint8 ``(n, H, W, 3)`` -> normalised float32 ``(n, 3, H, W)``, the
    arithmetic of the feature extractor's input conversion. The mean and
    standard deviation come from the preprocessing, so they are not part of
    the state dict."""

    def __init__(self, mean, std):
        super().__init__()
        mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
        std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).to(torch.float32)
        return (x - self.mean) / self.std


class FittedModel(nn.Module):
    """uint8 crops ``(n, H, W, 3)`` -> the task's outputs.

    Parameters
    ----------
    mean, std : sequence of 3 floats
        The normalisation of the preprocessing (for pixels in [0, 1]).
    bodies : list of nn.Module
        Pretrained bodies with their pooling: float ``(n, 3, H, W)`` ->
        ``(n, n_features)``.
    heads : list of nn.Module
        One head per member: features -> raw outputs. None (or an empty
        list) for a model without a head, whose outputs are the features of
        its body (:class:`~sktransfer.PretrainedFeatures`).
    member_body : list of int
        The body each head reads (``member_body[j]`` indexes ``bodies``).
    output : nn.Module
        The task's output step: raw outputs -> probabilities (softmax,
        sigmoid) or target units (:class:`~._tasks.Affine`).
    squeeze : bool
        Return ``(n,)`` instead of ``(n, 1)`` (a regressor fitted on 1-d y).
    body_ids : list of str
        The identity of each body's weights (part of the feature cache's
        key): the pretrained weights' name, or a hash of fine-tuned ones.

    Attributes
    ----------
    result_dtype : torch.dtype
        The outputs' dtype: float64 (``predict`` returns float64, and
        targets far from 0 keep their units digit), float32 in the copy
        that :meth:`for_export` gives.
    """

    def __init__(
        self,
        mean,
        std,
        bodies,
        heads=None,
        member_body=(),
        output=None,
        *,
        squeeze=False,
        body_ids=(),
    ):
        super().__init__()
        heads = list(heads or [])
        if len(member_body) != len(heads):
            raise ValueError("member_body must name one body per head.")
        self.normalize = Normalize(mean, std)
        self.bodies = nn.ModuleList(bodies)
        self.heads = nn.ModuleList(heads)
        self.member_body = [int(b) for b in member_body]
        self.output = nn.Identity() if output is None else output
        self.squeeze = bool(squeeze)
        self.body_ids = [str(i) for i in body_ids]
        self.result_dtype = torch.float64

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The pooled features of each body, ``[(n, n_features), ...]``."""
        x = self.normalize(images)
        return [body(x) for body in self.bodies]

    def head_outputs(self, features: list[torch.Tensor]) -> torch.Tensor:
        """The outputs from the bodies' features (as :meth:`features` gives
        them, or as the feature cache holds them): each member's head and
        the output step, averaged over the members."""
        if not len(self.heads):
            return features[0].to(self.result_dtype)
        total = None
        for head, b in zip(self.heads, self.member_body):
            out = self.output(head(features[b]).float()).to(self.result_dtype)
            total = out if total is None else total + out
        result = total / float(len(self.heads))
        if self.squeeze:
            result = result[:, 0]
        return result

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head_outputs(self.features(images))

    def member(self, j: int) -> FittedModel:
        """Member ``j`` of an ensemble as a model of its own (sharing its
        body, head and output step with this one)."""
        b = self.member_body[j]
        model = FittedModel(
            (0.0,) * 3,
            (1.0,) * 3,
            [self.bodies[b]],
            [self.heads[j]],
            [0],
            self.output,
            squeeze=self.squeeze,
            body_ids=[self.body_ids[b]],
        )
        model.normalize = self.normalize
        model.result_dtype = self.result_dtype
        return model

    def for_export(self) -> FittedModel:
        """A float32 copy on the CPU, in eval mode, gradients off, with
        float32 outputs: the module of exported graphs."""
        model = copy.deepcopy(self).cpu().float()
        model = model.to(memory_format=torch.contiguous_format)
        model.result_dtype = torch.float32
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        return model


def features_model(extractor) -> FittedModel:
    """The model of a headless extractor: crops -> the body's features
    (sharing the extractor's body)."""
    pre = extractor.preprocessing
    return FittedModel(
        pre.mean,
        pre.std,
        [extractor.backbone.body],
        body_ids=[extractor.backbone.weights_id],
    )


#: The output steps a model may have, by the name saved folders use.
OUTPUT_KINDS = ("identity", "softmax", "sigmoid", "affine")


def output_kind(module: nn.Module) -> str:
    """The name of an output step (for saved folders)."""
    for kind, cls in (
        ("softmax", nn.Softmax),
        ("sigmoid", nn.Sigmoid),
        ("affine", Affine),
        ("identity", nn.Identity),
    ):
        if type(module) is cls:
            return kind
    raise TypeError(f"the output step {type(module).__name__} cannot be saved.")


def output_of_kind(kind: str, n_outputs: int) -> nn.Module:
    """A new output step of ``kind`` (an Affine's standardisation comes
    from the saved tensors)."""
    if kind == "softmax":
        return nn.Softmax(dim=1)
    if kind == "sigmoid":
        return nn.Sigmoid()
    if kind == "affine":
        return Affine([0.0] * n_outputs, [1.0] * n_outputs)
    return nn.Identity()


def body_extractor(extractor, body: nn.Module, body_id: str):
    """An extractor like ``extractor`` that runs ``body`` (shared, not a
    copy), whose weights are ``body_id``: the feature cache's view of one
    of a model's bodies."""
    from ._extractor import FeatureExtractor

    if body is extractor.backbone.body and body_id == extractor.backbone.weights_id:
        return extractor
    backbone = dataclasses.replace(extractor.backbone, body=body, weights_id=body_id)
    out = FeatureExtractor(
        backbone,
        extractor.preprocessing,
        extractor.precision,
        extractor.device,
        extractor.cache,
    )
    out.built_from = extractor.built_from
    return out


def tuned_extractor(extractor, body: nn.Module):
    """The extractor of a fine-tuned ``body`` (its cache key hashes the
    weights), with ``extractor``'s preprocessing, device and cache."""
    start = copy.copy(extractor)
    start.backbone = dataclasses.replace(extractor.backbone, body=body)
    return start.with_tuned_body()
