"""grad_cam, plot_grad_cam and plot_top_losses(heatmap=True) on small models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import MOBILENET, requires_shared
from sklearn.exceptions import NotFittedError

from sktransfer import (
    PretrainedFeatures,
    PretrainedImageClassifier,
    PretrainedImageRegressor,
)
from sktransfer.export import to_torch
from sktransfer.inspection import grad_cam, plot_grad_cam, plot_top_losses

#: ResNet-18's last map is 2x2 at 64 px (1x1 at conftest's 32 px).
SMALL = dict(backbone="resnet18", weights=None, image_size=64, cache=None)

COLOURS = {"red": (230, 30, 30), "green": (30, 230, 30), "blue": (30, 30, 230)}


def _squares(n, size=64, seed=0):
    """Grey noisy images with a bright square at a random place; the class is
    the square's colour. Returns (X, y, masks of the squares)."""
    rng = np.random.default_rng(seed)
    side = size // 4
    X = np.clip(rng.normal(128, 8, (n, size, size, 3)), 0, 255).astype(np.uint8)
    masks = np.zeros((n, size, size), dtype=bool)
    names = list(COLOURS)
    y = []
    for i in range(n):
        name = names[i % len(names)]
        row, col = rng.integers(0, size - side, 2)
        X[i, row : row + side, col : col + side] = COLOURS[name]
        masks[i, row : row + side, col : col + side] = True
        y.append(name)
    return X, np.array(y), masks


@pytest.fixture(scope="module")
def squares():
    return _squares(24)


@pytest.fixture(scope="module")
def classifier(squares):
    X, y, _ = squares
    return PretrainedImageClassifier(
        **SMALL, precompute_epochs=3, precision="fp32", random_state=0
    ).fit(X, y)


@pytest.fixture
def _agg():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    yield
    plt.close("all")


def _reference_grad_cam(model, crops, column):
    """Grad-CAM written out for a ResNet graph of ``to_torch``: gradient of
    the logit of ``column`` (averaged over the heads of an ensemble) with
    respect to ``layer4``'s output."""
    (body,) = model.bodies
    saved = {}

    def keep(module, inputs, output):
        saved["map"] = output

    handle = body.layer4.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            x = model.normalize(torch.from_numpy(crops))
            for p in body.layer4.parameters():
                p.requires_grad_(True)  # the copy's: a path to layer4's output
            features = body(x)
            logits = sum(head(features) for head in model.heads) / len(model.heads)
            fmap = saved["map"]
            (grad,) = torch.autograd.grad(logits[:, column].sum(), fmap)
    finally:
        handle.remove()
    weights = grad.mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((weights * fmap).sum(dim=1, keepdim=True))
    cam = torch.nn.functional.interpolate(
        cam, size=crops.shape[1:3], mode="bilinear", align_corners=False
    )[:, 0]
    top = cam.flatten(1).amax(dim=1).view(-1, 1, 1)
    cam = torch.where(top > 0, cam / top.clamp_min(1e-30), 0.0)
    return cam.detach().numpy()


# -- what the heatmaps are ------------------------------------------------------


def test_heatmaps_have_the_size_of_the_input_crop_and_values_in_0_1(classifier):
    rng = np.random.default_rng(1)
    photos = rng.integers(0, 256, (5, 80, 120, 3), dtype=np.uint8)  # not square

    heatmaps = grad_cam(classifier, photos)

    assert heatmaps.shape == (5, 64, 64) == classifier.preprocess(photos).shape[:3]
    assert heatmaps.dtype == np.float32
    assert heatmaps.min() >= 0.0 and heatmaps.max() <= 1.0
    peaks = heatmaps.reshape(5, -1).max(axis=1)
    assert np.all((peaks == 0) | np.isclose(peaks, 1.0))  # normalised per image
    assert np.any(peaks == 1.0)


def test_heatmaps_are_grad_cam_of_the_last_feature_map_of_the_body(classifier, squares):
    X, _, _ = squares
    crops = classifier.preprocess(X[:6])
    model = to_torch(classifier)
    column = list(classifier.classes_).index("green")

    heatmaps = grad_cam(classifier, X[:6], target="green")

    expected = _reference_grad_cam(model, crops, column)
    np.testing.assert_allclose(heatmaps, expected, atol=1e-5)
    assert np.ptp(expected.reshape(6, -1), axis=1).max() > 0.5  # not uniform


def test_default_target_is_the_predicted_class_and_the_target_matters(
    classifier, squares
):
    X, _, _ = squares
    predicted = classifier.predict(X)

    default = grad_cam(classifier, X)

    np.testing.assert_array_equal(default, grad_cam(classifier, X, target=predicted))
    classes = list(classifier.classes_)
    others = [classes[(classes.index(p) + 1) % 3] for p in predicted]
    assert not np.allclose(default, grad_cam(classifier, X, target=others))
    one_label = grad_cam(classifier, X, target="red")
    np.testing.assert_array_equal(
        one_label, grad_cam(classifier, X, target=["red"] * len(X))
    )


def test_a_bad_target_names_itself_and_the_classes(classifier, squares):
    X, _, _ = squares
    with pytest.raises(ValueError, match=r"target 'purple'.*\['blue', 'green'"):
        grad_cam(classifier, X[:2], target="purple")
    with pytest.raises(ValueError, match="target 'purple'"):
        grad_cam(classifier, X[:2], target=["red", "purple"])
    with pytest.raises(ValueError, match="3 values but X has 2 images"):
        grad_cam(classifier, X[:2], target=["red", "red", "red"])


def test_an_unfitted_or_unsupported_estimator_is_refused(classifier, squares):
    X, _, _ = squares
    with pytest.raises(NotFittedError):
        grad_cam(PretrainedImageClassifier(**SMALL), X[:2])
    features = PretrainedFeatures("resnet18", weights=None, image_size=64, cache=None)
    with pytest.raises(TypeError, match="got PretrainedFeatures"):
        grad_cam(features.fit(), X[:2])


def test_a_last_feature_map_of_one_position_is_refused(squares):
    X, y, _ = squares
    clf = PretrainedImageClassifier(
        **{**SMALL, "image_size": 32}, precompute_epochs=1, random_state=0
    ).fit(X, y)

    with pytest.raises(
        ValueError, match="'resnet18' is 1x1 at this input size.*larger image_size"
    ):
        grad_cam(clf, X[:2])


def test_the_model_is_left_as_it_was(squares):
    X, y, _ = squares
    clf = PretrainedImageClassifier(
        **SMALL,
        precompute_epochs=1,
        unfrozen_cycles=1,  # a fine-tuned body
        precision="bf16",  # extracts in bf16; the gradient pass is float32
        random_state=0,
    ).fit(X, y)
    body, head = clf.extractor_.backbone.body, clf.head_
    modules = list(body.modules()) + list(head.modules())
    before = {
        "state": [
            {k: v.clone() for k, v in m.state_dict().items()} for m in (body, head)
        ],
        "requires_grad": [
            p.requires_grad for m in (body, head) for p in m.parameters()
        ],
        "training": [m.training for m in modules],
        "proba": clf.predict_proba(X),
    }
    head.train()  # a mode of the caller's is restored too
    modes = [m.training for m in modules]

    with torch.no_grad():  # and a caller's no_grad context does not matter
        heatmaps = grad_cam(clf, X[:4])
    with torch.inference_mode():
        np.testing.assert_array_equal(grad_cam(clf, X[:4]), heatmaps)

    assert heatmaps.shape == (4, 64, 64) and heatmaps.max() == 1.0
    for module, state in zip((body, head), before["state"]):
        for name, value in module.state_dict().items():
            assert torch.equal(value, state[name]), name
    after = [p.requires_grad for m in (body, head) for p in m.parameters()]
    assert after == before["requires_grad"]
    assert [m.training for m in modules] == modes
    head.eval()
    assert [m.training for m in modules] == before["training"]
    np.testing.assert_array_equal(clf.predict_proba(X), before["proba"])


# -- other kinds of model -------------------------------------------------------


def test_a_regressor_explains_the_output_it_is_asked_for(squares):
    X, _, masks = squares
    column = np.argmax(masks.any(axis=1), axis=1)  # where the square starts
    y = np.column_stack([column, X.mean(axis=(1, 2, 3))])
    reg = PretrainedImageRegressor(
        **SMALL, head_init="random", precompute_epochs=2, random_state=0
    )
    reg.fit(X, y)

    first = grad_cam(reg, X)
    second = grad_cam(reg, X, target=1)

    assert first.shape == second.shape == (len(X), 64, 64)
    np.testing.assert_array_equal(first, grad_cam(reg, X, target=0))
    assert first.max() == second.max() == 1.0
    assert not np.allclose(first, second)
    with pytest.raises(ValueError, match="target 2 is not an output.*0 to 1"):
        grad_cam(reg, X[:4], target=2)
    with pytest.raises(ValueError, match="target 'red' is not an output"):
        grad_cam(reg, X[:4], target="red")


def test_a_multilabel_classifier_explains_one_label(squares):
    X, y, _ = squares
    labels = [[c, "square"] if i % 2 else [c] for i, c in enumerate(y)]
    clf = PretrainedImageClassifier(**SMALL, precompute_epochs=2, random_state=0)
    clf.fit(X, labels)
    assert clf.multilabel_
    proba = clf.predict_proba(X[:6])
    most_probable = clf.classes_[np.argmax(proba, axis=1)]

    default = grad_cam(clf, X[:6])

    assert default.shape == (6, 64, 64)
    np.testing.assert_array_equal(default, grad_cam(clf, X[:6], target=most_probable))
    square = grad_cam(clf, X[:6], target="square")
    assert square.shape == (6, 64, 64) and 0 <= square.min() <= square.max() <= 1
    with pytest.raises(ValueError, match="target 'circle'"):
        grad_cam(clf, X[:6], target="circle")


def test_a_timm_backbone_works_offline(squares):
    pytest.importorskip("timm")
    X, y, _ = squares
    clf = PretrainedImageClassifier(
        "timm:resnet10t",
        weights=None,
        image_size=64,
        cache=None,
        precompute_epochs=1,
        random_state=0,
    ).fit(X, y)

    heatmaps = grad_cam(clf, X[:6])

    assert heatmaps.shape == (6, 64, 64)
    assert heatmaps.min() >= 0 and heatmaps.max() <= 1
    assert np.mean(np.ptp(heatmaps.reshape(6, -1), axis=1) > 0.5) >= 0.5


def test_a_snapshot_ensemble_is_explained_by_its_mean_logit(squares):
    X, y, _ = squares
    clf = PretrainedImageClassifier(
        **SMALL,
        head_init="random",
        precompute_epochs=2,
        snapshot_ensemble=True,
        cycle_len=1,
        random_state=0,
    ).fit(X, y)

    assert len(clf.ensemble_) > 1

    heatmaps = grad_cam(clf, X[:6], target="red")

    column = list(clf.classes_).index("red")
    expected = _reference_grad_cam(to_torch(clf), clf.preprocess(X[:6]), column)
    np.testing.assert_allclose(heatmaps, expected, atol=1e-5)
    first_member = to_torch(clf)
    del first_member.heads[1:]
    alone = _reference_grad_cam(first_member, clf.preprocess(X[:6]), column)
    assert not np.allclose(heatmaps, alone, atol=1e-3)


# -- where it looks -------------------------------------------------------------


@requires_shared
def test_heatmaps_of_a_pretrained_model_fall_on_the_coloured_square():
    X, y, _ = _squares(60, size=128, seed=0)
    X_test, _, masks = _squares(30, size=128, seed=1)
    clf = PretrainedImageClassifier(
        "mobilenet_v2",
        weights=str(MOBILENET),
        image_size=128,
        cache=None,
        precision="fp32",
        random_state=0,
    ).fit(X, y)

    heatmaps = grad_cam(clf, X_test)

    share = (heatmaps * masks).sum(axis=(1, 2)) / heatmaps.sum(axis=(1, 2))
    area = masks.mean(axis=(1, 2))  # the share a uniform map would give
    assert np.mean(share > 1.2 * area) >= 0.8
    assert np.median(share / area) > 1.5


# -- figures --------------------------------------------------------------------


@pytest.mark.usefixtures("_agg")
def test_plot_grad_cam_overlays_the_heatmaps_on_the_crops(classifier, squares):
    X, y, _ = squares

    axes = plot_grad_cam(classifier, X[:3], y=y[:3], ncols=2, alpha=0.4)

    assert axes.shape == (2, 2)
    shown = [ax for ax in axes.ravel() if ax.images]
    assert len(shown) == 3
    crop, heat = shown[0].images
    np.testing.assert_array_equal(crop.get_array(), classifier.preprocess(X[:1])[0])
    np.testing.assert_allclose(
        heat.get_array(), grad_cam(classifier, X[:1])[0], atol=1e-5
    )
    assert heat.get_alpha() == 0.4
    target, predicted, true, probability = shown[0].get_title().split(" / ")
    assert target == predicted == classifier.predict(X[:1])[0] and true == y[0]
    np.testing.assert_allclose(
        float(probability), classifier.predict_proba(X[:1]).max(), atol=0.01
    )
    assert axes[0, 0].figure.get_suptitle().startswith("Grad-CAM")


@pytest.mark.usefixtures("_agg")
def test_plot_top_losses_can_overlay_heatmaps(classifier, squares):
    X, y, _ = squares
    y_wrong = y.copy()
    y_wrong[0] = "blue" if y[0] != "blue" else "red"

    axes = plot_top_losses(classifier, X, y_wrong, k=2, ncols=2, heatmap=True)

    shown = [ax for ax in axes.ravel() if ax.images]
    assert len(shown) == 2 and all(len(ax.images) == 2 for ax in shown)
    assert shown[0].images[0].get_array().shape == (64, 64, 3)
    plain = plot_top_losses(classifier, X, y_wrong, k=2, ncols=2)
    assert all(len(ax.images) == 1 for ax in plain.ravel() if ax.images)


def test_a_vision_transformer_is_refused_with_a_clear_error(squares):
    pytest.importorskip("timm")
    X, y, _ = squares
    clf = PretrainedImageClassifier(
        "timm:vit_tiny_patch16_224",
        weights=None,
        cache=None,
        precompute_epochs=1,
        random_state=0,
    ).fit(X[:6], y[:6])

    with pytest.raises(ValueError, match="'timm:vit_tiny_patch16_224'.*token seq"):
        grad_cam(clf, X[:1])
