"""most_confused, top_losses and plot_top_losses on small fitted models."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.multioutput import MultiOutputClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from sktransfer.inspection import most_confused, plot_top_losses, top_losses

matplotlib = pytest.importorskip("matplotlib")


@pytest.fixture(autouse=True)
def _agg():
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    yield
    plt.close("all")


def _flatten(X):
    return np.asarray(X, dtype=float).reshape(len(X), -1) / 255


def _brightness_images(n=12, seed=0):
    """uint8 images whose class is their brightness; two labelled wrongly."""
    rng = np.random.default_rng(seed)
    levels = np.linspace(20, 235, n)
    X = np.stack([np.full((8, 8, 3), v) + rng.normal(0, 3, (8, 8, 3)) for v in levels])
    X = np.clip(X, 0, 255).astype(np.uint8)
    y = np.where(levels > 127, "light", "dark")
    y_noisy = y.copy()
    y_noisy[[0, n - 1]] = ["light", "dark"]  # the darkest and the lightest
    return X, y, y_noisy


def test_most_confused_counts_off_diagonal_pairs_most_frequent_first():
    y_true = np.array([1, 1, 1, 2, 2, 3, 3, 3, 3])
    y_pred = np.array([1, 2, 2, 1, 2, 1, 2, 2, 2])

    pairs = most_confused(y_true, y_pred)

    assert pairs == [(3, 2, 3), (1, 2, 2), (2, 1, 1), (3, 1, 1)]
    assert all(type(t) is int for t, _, _ in pairs)  # plain Python values
    assert most_confused(y_true, y_pred, min_count=3) == [(3, 2, 3)]
    assert most_confused([0, 1], [0, 1]) == []


def test_most_confused_refuses_mismatched_or_multilabel_input():
    with pytest.raises(ValueError, match="different lengths: 2 and 3"):
        most_confused([0, 1], [0, 1, 1])
    with pytest.raises(ValueError, match="1-D labels"):
        most_confused(np.eye(2), np.eye(2))


def test_top_losses_of_a_classifier_are_the_log_loss_of_the_true_class():
    X, y, y_noisy = _brightness_images()
    model = make_pipeline(FunctionTransformer(_flatten), LogisticRegression(C=10))
    model.fit(X, y)

    indices, losses = top_losses(model, X, y_noisy, k=2)

    assert sorted(indices.tolist()) == [0, len(X) - 1]  # the two mislabelled
    proba = model.predict_proba(X)
    true = np.searchsorted(model.classes_, y_noisy)
    expected = -np.log(proba[np.arange(len(X)), true])
    np.testing.assert_allclose(losses, np.sort(expected)[::-1][:2])
    all_indices, all_losses = top_losses(model, X, y_noisy)
    assert len(all_indices) == len(X) and np.all(np.diff(all_losses) <= 0)
    with pytest.raises(ValueError, match="not fitted on: \\['grey'\\]"):
        top_losses(model, X[:1], ["grey"])
    with pytest.raises(ValueError, match="k must be"):
        top_losses(model, X, y, k=0)


def test_top_losses_of_a_regressor_are_squared_errors():
    X = np.arange(6, dtype=float).reshape(-1, 1)
    y = 2 * X.ravel()
    model = LinearRegression().fit(X, y)
    y_off = y.copy()
    y_off[4] += 3.0

    indices, losses = top_losses(model, X, y_off, k=1)

    assert indices.tolist() == [4]
    np.testing.assert_allclose(losses, [9.0])


def test_top_losses_of_a_multilabel_classifier_average_binary_log_losses():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    Y = (X[:, :2] > 0).astype(int)
    model = MultiOutputClassifier(LogisticRegression()).fit(X, Y)
    Y_wrong = Y.copy()
    Y_wrong[7] = 1 - Y_wrong[7]  # both labels of sample 7 flipped

    indices, _ = top_losses(model, X, Y_wrong, k=1)

    assert indices.tolist() == [7]


def test_plot_top_losses_shows_the_worst_images_with_their_numbers(tmp_path):
    X, y, y_noisy = _brightness_images()
    paths = []
    for i, image in enumerate(X):  # paths work as well as arrays
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(image).save(paths[-1])
    read = FunctionTransformer(
        lambda ps: _flatten([np.asarray(Image.open(p)) for p in ps])
    )
    model = make_pipeline(read, LogisticRegression(C=10)).fit(paths, y)

    axes = plot_top_losses(model, paths, y_noisy, k=3, ncols=2)

    assert axes.shape == (2, 2)
    shown = [ax for ax in axes.ravel() if ax.images]
    assert len(shown) == 3
    predicted, true, loss, probability = shown[0].get_title().split(" / ")
    assert {predicted, true} == {"light", "dark"} and predicted != true
    assert float(loss) > 1 and float(probability) < 0.5
    worst, _ = top_losses(model, paths, y_noisy, k=1)
    np.testing.assert_array_equal(shown[0].images[0].get_array(), X[worst[0]])


def test_top_losses_of_a_multilabel_model_take_label_collections():
    class MultiLabelModel:
        """Stands for a fitted multi-label PretrainedImageClassifier."""

        classes_ = np.array(["rose", "tulip"])
        multilabel_ = True

        def predict_proba(self, X):
            return np.array([[0.9, 0.1], [0.9, 0.8], [0.2, 0.7]])

    y = [["rose"], ["rose", "tulip"], ["rose"]]  # the third is wrong twice

    indices, losses = top_losses(MultiLabelModel(), np.zeros((3, 4, 4, 3)), y)

    assert indices.tolist() == [2, 1, 0]
    expected = -(np.log(0.2) + np.log(0.3)) / 2
    np.testing.assert_allclose(losses[0], expected)
    with pytest.raises(ValueError, match="not fitted on: 'daisy'"):
        top_losses(MultiLabelModel(), np.zeros((3, 4, 4, 3)), [["daisy"], [], []])
