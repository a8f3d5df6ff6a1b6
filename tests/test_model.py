"""The fitted model is one torch module, ``model_``: it gives what
``predict_proba`` / ``predict`` give (tta=0, fp32), its body is the very
module the feature cache's extractor runs, and save/load rebuild it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TINY

from sktransfer import PretrainedImageClassifier, PretrainedImageRegressor, load, save
from sktransfer.export import to_torch

EXACT = dict(TINY, precision="fp32", random_state=0)

KINDS = {
    "classifier": (PretrainedImageClassifier, dict(), 1, 1),
    "regressor": (PretrainedImageRegressor, dict(), 1, 1),
    "regressor-2d": (PretrainedImageRegressor, dict(), 1, 1),
    "multilabel": (PretrainedImageClassifier, dict(), 1, 1),
    "snapshot-heads": (
        PretrainedImageClassifier,
        dict(snapshot_ensemble=True, precompute_epochs=3, cycle_len=1),
        1,
        3,
    ),
    "snapshot-bodies": (
        PretrainedImageRegressor,
        dict(
            snapshot_ensemble=True,
            precompute_epochs=1,
            unfrozen_cycles=2,
            unfreeze_from=2,
            unfrozen_lr=1e-3,
            batch_size=4,
        ),
        2,
        2,
    ),
}


def targets(kind, labels):
    n = len(labels)
    if kind == "regressor-2d":
        return np.c_[np.arange(n), np.arange(n) ** 2].astype(float)
    if kind == "multilabel":
        return np.c_[labels == "a", np.arange(n) % 2, np.arange(n) % 3 == 0].astype(int)
    if kind.startswith("regressor") or kind == "snapshot-bodies":
        return (labels == "b") * 10.0 + np.arange(n)
    return labels


def predictions(estimator, X):
    if hasattr(estimator, "predict_proba"):
        return estimator.predict_proba(X)
    return estimator.predict(X)


def model_outputs(model, batch) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.as_tensor(batch)).numpy()


@pytest.fixture(scope="module", params=list(KINDS))
def fitted(request, images, cache_dir):
    cls, params, _, _ = KINDS[request.param]
    paths, labels = images
    estimator = cls(**EXACT, **params, cache=cache_dir)
    return request.param, estimator.fit(paths, targets(request.param, labels))


def test_the_model_gives_what_predict_gives(fitted, images):
    kind, estimator = fitted
    paths, _ = images
    _, _, n_bodies, n_heads = KINDS[kind]
    model = estimator.model_
    assert isinstance(model, torch.nn.Module)
    assert (len(model.bodies), len(model.heads)) == (n_bodies, n_heads)
    expected = predictions(estimator, paths)
    out = model_outputs(model, estimator.preprocess(paths))
    assert out.dtype == np.float64  # predict's dtype
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-5)


def test_the_model_in_two_parts_is_the_whole(fitted, images):
    _, estimator = fitted
    paths, _ = images
    model = estimator.model_
    batch = torch.as_tensor(estimator.preprocess(paths))
    with torch.inference_mode():
        features = model.features(batch)
        assert [f.shape for f in features] == [
            (len(paths), estimator.n_features_)
        ] * len(model.bodies)
        parts = model.head_outputs(features).numpy()
    np.testing.assert_array_equal(parts, model_outputs(model, batch))


def test_the_cache_runs_the_very_bodies_of_the_model(fitted):
    _, estimator = fitted
    model = estimator.model_
    assert estimator.extractor_.backbone.body is model.bodies[-1]
    assert estimator.head_ is model.heads[-1]
    for extractor, head in estimator.ensemble_:
        assert any(extractor.backbone.body is body for body in model.bodies)
        assert any(head is h for h in model.heads)


def test_export_is_a_float32_copy_of_the_model(fitted, images):
    _, estimator = fitted
    paths, _ = images
    exported = to_torch(estimator)
    assert type(exported) is type(estimator.model_)
    assert not any(
        p is q for p in exported.parameters() for q in estimator.model_.parameters()
    )
    batch = estimator.preprocess(paths)
    out = model_outputs(exported, batch)
    assert out.dtype == np.float32
    np.testing.assert_allclose(
        out, model_outputs(estimator.model_, batch), rtol=1e-6, atol=1e-5
    )


def test_save_then_load_gives_the_same_model(fitted, images, tmp_path):
    _, estimator = fitted
    paths, _ = images
    loaded = load(save(estimator, tmp_path / "model"), cache=None)
    before, after = estimator.model_.state_dict(), loaded.model_.state_dict()
    assert list(after) == list(before)
    for name, tensor in before.items():
        assert torch.equal(after[name], tensor), name
    batch = estimator.preprocess(paths)
    np.testing.assert_array_equal(
        model_outputs(loaded.model_, batch), model_outputs(estimator.model_, batch)
    )
    np.testing.assert_array_equal(
        predictions(loaded, paths), predictions(estimator, paths)
    )
    assert loaded.extractor_.backbone.body is loaded.model_.bodies[-1]
    assert loaded.extractor_.model_key == estimator.extractor_.model_key
