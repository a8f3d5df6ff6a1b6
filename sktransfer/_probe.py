"""The linear probe: the head starts where a linear model on the frozen
features ends.

Before any head stage trains by gradient steps, the head's BatchNorm
statistics are set from the cached features of the training images and
its output layer is fitted, by full-batch L-BFGS, to the task's loss plus
an L2 penalty, whose strength is chosen by cross-validation on the same
features. With a linear head this *is* a regularised logistic (softmax,
sigmoid) or ridge regression on standardised features, so the stages after
it start from the linear model and can only be judged against it, not
against a random head (linear probing then fine-tuning, Kumar et al.,
"Fine-Tuning can Distort Pretrained Features and Underperform
Out-of-Distribution", ICLR 2022).

The fits run in float32 on the caller's threads: the problem is small
(images x features) and L-BFGS converges in a few dozen steps.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

#: L2 strengths tried, on the mean (weighted) loss of standardised
#: features: ``loss + penalty / 2 * ||W||^2``.
PENALTIES = tuple(float(v) for v in np.logspace(-2.5, 1.5, 9))
#: L2 strengths tried by the regressor's exact leave-one-out choice (cheap
#: for every penalty at once, so the grid is finer and wider), up to
#: :func:`ridge_penalties`' limit.
RIDGE_PENALTIES = tuple(float(v) for v in np.logspace(-4, 4, 33))
#: The regressor's strongest penalty on many images (on the mean loss) ...
RIDGE_MAX = 100.0
#: ... and on few: a penalty on the mean loss weighs ``n`` times less
#: against the sum of squared errors, so on ``n`` images of ``k`` targets
#: the grid ends at ``2 * RIDGE_SUM_MAX / (n k)``, an alpha of
#: ``RIDGE_SUM_MAX`` against each target's sum of squares: where the
#: features hold nothing of the target, shrinking to its mean stays
#: within reach on a few images, as it does for a ``RidgeCV`` whose
#: alphas reach ``1e4``.
RIDGE_SUM_MAX = 1e4
#: scikit-learn's ``LogisticRegression()`` default ``C``: a classifier's
#: penalty where cross-validation is impossible (a class with one image)
#: and the centre of its search where the folds are too noisy to search
#: the whole grid (see :func:`anchor_penalty`).
ANCHOR_C = 1.0
#: A regressor's penalty on a single image (nothing to cross-validate).
DEFAULT_PENALTY = 0.1
#: Below :data:`PER_FEATURE_MIN` images the cross-validation tries only
#: the anchor and the penalties this factor (half a decade) either side.
ANCHOR_STEPS = (10**0.5, 1.0, 10**-0.5)
#: A small penalty on the biases keeps the bias of a label that no image
#: has (multi-label) or of a class whose images all weigh 0 finite.
BIAS_PENALTY = 1e-4
#: Folds of the penalty's cross-validation.
N_FOLDS = 3
#: Below this many training images the folds are drawn :data:`N_REPEATS`
#: times (at little cost: folds this small are fitted together, in their
#: row spaces; see :func:`choose_penalty`).
FEW_IMAGES = 1000
N_REPEATS = 3
#: Fewer training images than this are scaled only by the features' common
#: variance: each feature's own variance, estimated from so few images, is
#: too noisy to divide by.
PER_FEATURE_MIN = 40
#: A feature's variance is floored at this fraction of the mean variance
#: of all features, so that a feature that never fires on the training
#: images cannot become thousands of standard deviations on a new image.
VARIANCE_FLOOR = 1e-2


def input_statistics(features: torch.Tensor, weights) -> tuple:
    """Weighted mean and floored variance of each feature."""
    w = weights / weights.sum()
    mean = (w[:, None] * features).sum(0)
    var = (w[:, None] * (features - mean) ** 2).sum(0)
    return mean, floored(var)


def floored(var: torch.Tensor) -> torch.Tensor:
    """Variances floored at :data:`VARIANCE_FLOOR` times their mean."""
    return var.clamp_min(VARIANCE_FLOOR * float(var.mean()) + 1e-12)


def set_statistics(norm: nn.BatchNorm1d, mean, var, identity=True) -> None:
    """Set ``norm``'s running statistics, and (``identity``) its affine
    parameters to the identity."""
    with torch.no_grad():
        norm.running_mean.copy_(mean.to(norm.running_mean))
        norm.running_var.copy_(var.to(norm.running_var))
        norm.num_batches_tracked.fill_(1)
        if identity and norm.affine:
            norm.weight.fill_(1.0)
            norm.bias.zero_()


def floor_variance(norm: nn.BatchNorm1d) -> None:
    """Floor ``norm``'s running variances (after stages whose batch
    statistics may have brought some to zero)."""
    with torch.no_grad():
        norm.running_var.copy_(floored(norm.running_var))


def fit_linear(Z, target, weights, task, penalty, start=None, max_iter=200):
    """``(W, b)`` minimising the weighted mean of ``task.loss(Z @ W.T + b,
    target)`` plus ``penalty / 2 * ||W||^2`` (and a tiny penalty on the
    biases, :data:`BIAS_PENALTY`), from ``start`` or zeros.

    Stacked problems fit at once: with ``Z`` of shape ``(F, m, d)`` (and
    ``target``, ``weights`` of ``(F, m, ...)``) the sum of the ``F``
    objectives is minimised, each problem's weighted mean over its own
    rows, and ``W``, ``b`` are stacked, ``(F, k, d)`` and ``(F, k)``. The
    problems share no parameter, so the minimum is each one's own (the
    stopping tests are shared: each problem ends within the run's
    tolerance, not its own), and one L-BFGS run over small problems costs
    far fewer steps of Python than one run each."""
    batched = Z.dim() == 3
    if not batched:
        Z, target, weights = Z[None], target[None], weights[None]
    F, m, d = Z.shape
    W = torch.zeros(F, task.n_outputs, d, dtype=Z.dtype)
    b = torch.zeros(F, task.n_outputs, dtype=Z.dtype)
    if start is not None:
        W.copy_(start[0])
        b.copy_(start[1])
    W.requires_grad_(True)
    b.requires_grad_(True)
    w = weights / weights.sum(dim=1, keepdim=True).clamp_min(1e-12)
    optimizer = torch.optim.LBFGS(
        [W, b],
        lr=1,
        max_iter=max_iter,
        tolerance_grad=1e-5,
        tolerance_change=1e-9,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure():
        optimizer.zero_grad()
        loss = (stacked_losses(task, Z, W, b, target) * w).sum()
        loss = loss + 0.5 * penalty * (W * W).sum() + BIAS_PENALTY * (b * b).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    W, b = W.detach(), b.detach()
    return (W, b) if batched else (W[0], b[0])


def stacked_losses(task, Z, W, b, target):
    """``task.loss`` of each image of stacked problems, ``(F, m)``: of
    ``Z @ W.T + b`` (one problem by a plain matrix product: its gradient is
    several times faster than a batched one's) against ``target``."""
    if len(Z) == 1:
        raw = torch.addmm(b[0], Z[0], W[0].T)[None]
    else:
        raw = torch.baddbmm(b[:, None, :], Z, W.transpose(1, 2))
    return task.loss(raw.flatten(0, 1), target.flatten(0, 1)).reshape(raw.shape[:2])


def scale_for(var: torch.Tensor, scaling: str) -> torch.Tensor:
    """What each feature is divided by (before the square root): for
    ``scaling`` ``"per_feature"`` its own variance, for ``"common"`` the
    mean variance of all features."""
    return var if scaling == "per_feature" else torch.full_like(var, float(var.mean()))


def row_space_width(rows: int, columns: int) -> int:
    """Columns of :func:`row_space`'s ``R`` for ``Z`` of that shape: the
    rows, where they are at most half the columns (the QR decomposition
    would cost more than it saves otherwise), else the columns."""
    return rows if 2 * rows <= columns else columns


def row_space(Z: torch.Tensor):
    """``(R, Q)``: ``Z`` in an orthonormal basis ``Q`` (columns) of its row
    space, ``R = Z @ Q``, where :func:`row_space_width` says so (``Q`` is
    ``None`` and ``R`` is ``Z`` otherwise).

    The L2-penalised problem of :func:`fit_linear` on ``R`` has the same
    minimiser as on ``Z``, as ``W = W_R @ Q.T``: a component of ``W``
    outside the span of the images' features changes no image's output and
    only adds to the penalty, so the minimum has none. With a few hundred
    images of a thousand or more features the fit then reads a fraction of
    the numbers at every step. (``Z.T = Q T`` by QR, so ``R`` is
    ``T.T``.)"""
    if row_space_width(*Z.shape) == Z.shape[1]:
        return Z, None
    Q, T = torch.linalg.qr(Z.T)
    return T.T, Q


#: Folds whose training and held-out parts, in their row spaces, hold at
#: most this many numbers in all are prepared once and fitted together
#: (small problems, where L-BFGS's steps of Python cost more than its
#: arithmetic); larger ones are scaled afresh for every penalty and fitted
#: one at a time, so that no copy of the features outlives its fit.
STACK_BUDGET = 2**21


def stacked(parts) -> tuple:
    """``(Z, target, weights)`` of ``parts`` (a list of such triples, of
    shapes ``(m_f, r_f)``, ``(m_f, ...)``, ``(m_f,)``), stacked into
    ``(F, m, r)``, ``(F, m, ...)``, ``(F, m)``: the shorter padded by rows
    of weight 0, the narrower by columns of zeros (one part: views of it)."""
    if len(parts) == 1:
        return tuple(a[None] for a in parts[0])
    m = max(len(Z) for Z, _, _ in parts)
    r = max(Z.shape[1] for Z, _, _ in parts)
    first_Z, first_T, first_w = parts[0]
    Z = first_Z.new_zeros(len(parts), m, r)
    T = first_T.new_zeros(len(parts), m, *first_T.shape[1:])
    w = first_w.new_zeros(len(parts), m)
    for f, (values, target, weights) in enumerate(parts):
        Z[f, : len(values), : values.shape[1]] = values
        T[f, : len(values)] = target
        w[f, : len(values)] = weights
    return Z, T, w


def fold_problems(x, target, weights, folds, statistics) -> tuple:
    """``(fit, held_out)``: the stacked (:func:`stacked`) training and
    held-out parts of ``folds``, each scaled with its training part's
    ``(mean, sd)`` of ``statistics`` and put in that part's row space
    (:func:`row_space`)."""
    fits, held_out = [], []
    for (train, test), (mean, sd) in zip(folds, statistics):
        R, Q = row_space((x[train] - mean) / sd)
        Z = (x[test] - mean) / sd
        fits.append((R, target[train], weights[train]))
        held_out.append((Z if Q is None else Z @ Q, target[test], weights[test]))
    return stacked(fits), stacked(held_out)


def anchor_penalty(n, scale, task) -> float:
    """The classifier probe's penalty that scikit-learn's
    ``LogisticRegression(C=1)`` puts on ``n`` images whose features are
    divided by ``sqrt(scale)`` (one common scale).

    Its ``||w||^2 / 2 + C * sum of losses`` on the raw features is the
    probe's mean loss ``+ penalty / 2 * ||W||^2`` with ``penalty = 1 / (C
    * n * scale)`` where both penalise every class's row (several
    classes). For two classes scikit-learn fits one row ``D``, the
    difference of the softmax's two; at the probe's optimum they are
    ``D / 2`` and ``-D / 2``, so the probe's penalty on ``D`` is a quarter
    of its ``penalty`` and has to be doubled to match. A multi-label
    probe's loss is the mean over its labels, so each label's loss weighs
    ``1 / labels`` of one-vs-rest's. Sample weights count as they are
    meant in the probe's weighted mean loss, relative to each other: ``n``
    is the number of images, whatever the weights' sum."""
    penalty = 1.0 / (ANCHOR_C * n * scale)
    if task.kind == "multi_label":
        return penalty / task.n_outputs
    return 2.0 * penalty if task.n_outputs == 2 else penalty


def choose_penalty(
    x, target, weights, task, folds, scaling, eps, penalties=PENALTIES
) -> tuple:
    """``(penalty, loss)``: the penalty of ``penalties`` with the lowest
    mean held-out loss over ``folds`` (a non-empty list of ``(train,
    test)`` index arrays), and that loss.

    Each fold scales its features (:func:`scale_for`) with the statistics of
    its own training part, as the final head will with all the training
    images: statistics that include the held-out images would hide how far
    a new image can fall outside them (a feature nearly constant on the
    training images is many of their standard deviations away on a new
    one), and the held-out loss of weak penalties would be too low.

    Each fold's training part is fitted in its row space
    (:func:`row_space`), and small folds together (:func:`fit_linear` on
    their stacked training parts, up to :data:`STACK_BUDGET` numbers in
    all). The path runs from the strongest penalty down, each fold's fit
    starting from its last one, and stops once the held-out loss has risen
    twice in a row past its best (it is U-shaped in the penalty; the
    weakest penalties are the slowest to fit)."""
    statistics = []
    for train, _ in folds:
        mean, var = input_statistics(x[train], weights[train])
        statistics.append((mean, torch.sqrt(scale_for(var, scaling) + eps)))
    size = sum(
        (len(train) + len(test)) * row_space_width(len(train), x.shape[1])
        for train, test in folds
    )
    if size <= STACK_BUDGET:
        groups = [list(range(len(folds)))]
        prepared = fold_problems(x, target, weights, folds, statistics)
    else:
        groups, prepared = [[f] for f in range(len(folds))], None
    path = sorted(penalties, reverse=True)
    starts = [None] * len(groups)
    best, best_loss, rises = path[0], np.inf, 0
    for penalty in path:
        total = 0.0
        for g, members in enumerate(groups):
            fit, (Z, T, w) = prepared or fold_problems(
                x, target, weights, [folds[f] for f in members],
                [statistics[f] for f in members],
            )  # fmt: skip
            starts[g] = fit_linear(*fit, task, penalty, starts[g])
            with torch.no_grad():
                losses = stacked_losses(task, Z, *starts[g], T)
                total += float(((losses * w).sum(1) / w.sum(1)).sum())
        if total < best_loss:
            best, best_loss, rises = penalty, total, 0
        else:
            rises += 1
            if rises == 2:
                break
    return best, best_loss / len(folds)


def ridge_loo(Z, target, weights, task) -> tuple[float, float, tuple]:
    """``(penalty, loss, (W, b))`` of the squared-error task: the penalty of
    :func:`ridge_penalties` with the lowest exact leave-one-out loss, that
    loss, and the ridge solution on all images, in closed form.

    With squared error the linear probe is a weighted ridge regression, so
    every image's held-out error follows from one SVD of the weighted,
    centred features (``e_i / (1 - h_ii)``, with ``h_ii`` the diagonal of
    the hat matrix, intercept included),
    for every penalty at once: the choice ``RidgeCV`` makes, instead of the
    3-fold estimate the other tasks use. The objective is the probe's
    (the mean over outputs of the weighted mean squared error, plus
    ``penalty / 2 * ||W||^2``), computed in float64.
    """
    Z = np.asarray(Z, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    z_mean, t_mean = w @ Z, w @ t
    root = np.sqrt(w)[:, None]
    U, s, Vt = np.linalg.svd(root * (Z - z_mean), full_matrices=False)
    ts = root * (t - t_mean)
    Ut = U.T @ ts
    k = t.shape[1]
    best = None
    for penalty in ridge_penalties(int((w > 0).sum()), k):
        # the probe's objective per output is the weighted ridge problem
        # sum_i w_i r_i^2 + alpha ||W_j||^2 with alpha = penalty * k / 2
        shrink = s**2 / (s**2 + penalty * k / 2)
        # the unpenalised intercept is a column of its own, orthogonal to
        # the centred features: its leverage adds each image's weight
        leverage = w + (U**2) @ shrink
        residual = (ts - U @ (shrink[:, None] * Ut)) / root
        held_out = residual / np.maximum(1.0 - leverage, 1e-12)[:, None]
        loss = float(w @ (held_out**2).mean(axis=1))
        if best is None or loss < best[1]:
            best = (penalty, loss)
    penalty = best[0]
    coef = Vt.T @ ((s / (s**2 + penalty * k / 2))[:, None] * Ut)  # (d, k)
    bias = t_mean - z_mean @ coef
    W = torch.as_tensor(coef.T, dtype=torch.float32)
    b = torch.as_tensor(bias, dtype=torch.float32)
    return penalty, best[1], (W, b)


def ridge_penalties(n: int, k: int = 1) -> tuple:
    """The penalties :func:`ridge_loo` tries on ``n`` images and ``k``
    targets: those of :data:`RIDGE_PENALTIES` up to :data:`RIDGE_MAX`; where
    ``2 * RIDGE_SUM_MAX / (n k)`` is larger (fewer than 200 images of one
    target), up to that penalty, which ends the grid: the one whose alpha
    against each target's sum of squares is :data:`RIDGE_SUM_MAX`."""
    top = max(RIDGE_MAX, 2 * RIDGE_SUM_MAX / (n * k))
    grid = tuple(p for p in RIDGE_PENALTIES if p < top * (1 - 1e-9))
    return grid + (top,)


def smallest_class(targets: torch.Tensor) -> int:
    """The number of images of the rarest class that has any."""
    counts = np.bincount(targets.numpy())
    return int(counts[counts > 0].min())


def probe_folds(task, targets: torch.Tensor, seed: int) -> list:
    """Cross-validation folds for the penalty: stratified for single-label
    tasks; none where a class has fewer than two images. Below
    :data:`FEW_IMAGES` images the folds are drawn :data:`N_REPEATS` times
    with other shuffles (their losses averaged), since one split of a few
    hundred images or fewer is a noisy judge of the penalty."""
    from sklearn.model_selection import RepeatedKFold, RepeatedStratifiedKFold

    n = len(targets)
    repeats = N_REPEATS if n < FEW_IMAGES else 1
    if task.stratify:
        k = min(N_FOLDS, smallest_class(targets))
        if k < 2:
            return []
        splitter = RepeatedStratifiedKFold(
            n_splits=k, n_repeats=repeats, random_state=seed
        )
        return list(splitter.split(np.zeros(n), targets.numpy()))
    k = min(N_FOLDS, n)
    if k < 2:
        return []
    splitter = RepeatedKFold(n_splits=k, n_repeats=repeats, random_state=seed)
    return list(splitter.split(np.zeros(n)))


def linear_probe(head: nn.Module, features, targets, weights, task, seed=0) -> dict:
    """Start the linear ``head`` (a :class:`~sktransfer._head.Head` with no
    hidden layer: BatchNorm, Dropout, Linear) where a linear model on
    ``features`` ends.

    Two scalings of the features are tried, each with every penalty:
    each feature standardised (its own variance), or all features divided
    by one common scale (their mean variance: the raw features' geometry,
    which suits a few images a class, where per-feature variances are
    noisy; below :data:`PER_FEATURE_MIN` images, where no folds can be
    drawn, or where a class has fewer images than folds, only this one). The
    penalty is chosen by 3-fold cross-validation (:func:`probe_folds`,
    :func:`choose_penalty`), or for a regression by exact leave-one-out
    (:func:`ridge_loo`). Below :data:`PER_FEATURE_MIN` images a
    classifier's folds try only the penalty of scikit-learn's
    ``LogisticRegression()`` on the same images (:func:`anchor_penalty`)
    and half a decade either side (:data:`ANCHOR_STEPS`): on a few images
    the folds' losses are too noisy to search the whole grid, and on tiny
    draws of real photos they picked its ends and lost to the linear
    model. Where no folds can be drawn (a class with one image) that
    penalty is the choice (for a regressor on one image,
    :data:`DEFAULT_PENALTY`). The pair with the lowest held-out loss is set into
    the head's BatchNorm and the output layer is fitted on all images, with
    the penalty scaled by the folds' share of the images: it weighs the
    mean loss, and the same weight against the sum of the losses (what
    scikit-learn's ``C`` fixes, and what carries over from fewer images to
    more) is that much smaller a share of the mean over all of them.
    Returns ``{"penalty", "scaling", "train_loss"}``, ``penalty`` as fitted."""
    norm, output = head.layers[0], head.layers[-1]
    x = torch.as_tensor(np.asarray(features), dtype=torch.float32)
    w = torch.as_tensor(np.asarray(weights), dtype=torch.float32)
    target = targets.float() if targets.dtype.is_floating_point else targets
    squared_error = task.kind == "regression" and len(x) > 2
    folds = [] if squared_error else probe_folds(task, targets, seed)
    mean, var = input_statistics(x, w)
    few = len(x) < PER_FEATURE_MIN
    # a class with fewer images than folds leaves folds without it
    thin = task.stratify and bool(folds) and smallest_class(targets) < N_FOLDS
    both = not few and not thin and (folds or squared_error)
    classifier = task.kind != "regression"
    # the penalty weighs the mean loss: one chosen on the folds' training
    # parts weighs as much against the sum of their losses on all images
    # (as scikit-learn's C, on the sum, carries over from its folds)
    share = float(np.mean([len(tr) for tr, _ in folds])) / len(x) if folds else 1.0
    best = None
    for name in ("per_feature", "common") if both else ("common",):
        scale = scale_for(var, name)
        Z = (x - mean) / torch.sqrt(scale + norm.eps)
        # a classifier's LogisticRegression() penalty on these images, used
        # only where they have one common scale (few images, or no folds)
        anchor = anchor_penalty(len(x), float(scale[0]) + norm.eps, task)
        solution = None
        if squared_error:
            penalty, loss, solution = ridge_loo(Z, target, w, task)
        elif not folds:
            # nothing to cross-validate: a class's only image, a regressor's
            penalty, loss = (anchor if classifier else DEFAULT_PENALTY), 0.0
        else:
            grid = PENALTIES
            if few and classifier:
                # folds of a few images are too noisy a judge to search the
                # whole grid: the anchor and half a decade either side
                grid = tuple(anchor / share * step for step in ANCHOR_STEPS)
            penalty, loss = choose_penalty(
                x, target, w, task, folds, name, norm.eps, grid
            )
            penalty *= share
        if best is None or loss < best[2]:
            best = (name, penalty, loss, Z, scale, solution)
    name, penalty, _, Z, scale, solution = best
    set_statistics(norm, mean, scale)
    norm.scaling = name  # kept with the head: a warm start scales alike
    if solution is None:
        R, Q = row_space(Z)
        W, b = fit_linear(R, target, w, task, penalty)
        if Q is not None:
            W = W @ Q.T
    else:
        W, b = solution
    with torch.no_grad():
        output.weight.copy_(W.to(output.weight))
        output.bias.copy_(b.to(output.bias))
        loss = float((task.loss(Z @ W.T + b, target) * w).sum() / w.sum())
    return {"penalty": penalty, "scaling": name, "train_loss": loss}
