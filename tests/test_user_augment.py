"""The user's own augmentation (``augment=callable``), through ``fit``."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from conftest import TINY
from PIL import Image
from sklearn.base import clone

from sktransfer import PretrainedImageClassifier, save
from sktransfer.datasets import augmented_copies
from sktransfer.exceptions import InvalidParameterError


class Recording:
    """An augmentation that records the photos it gets (their sizes and
    mean colours) and returns ``result(photo)``, by default the photo
    turned upside down."""

    def __init__(self, result=None):
        self.result = result or (lambda photo: photo.rotate(180))
        self.seen = []
        self.lock = threading.Lock()  # decoding threads call it

    def __call__(self, photo):
        with self.lock:
            self.seen.append((photo.size, np.asarray(photo).mean()))
        return self.result(photo)

    def __deepcopy__(self, memo):  # clone shares the record
        return self


@pytest.fixture
def base(tmp_path):
    return dict(TINY, cache=str(tmp_path / "cache"), batch_size=6, random_state=0)


def test_each_training_photo_goes_through_the_function_every_epoch(images, base):
    X, y = images
    fn = Recording()
    PretrainedImageClassifier(
        **base,
        augment=fn,
        augmented_cycles=2,
        augmented_copies=0,  # augmented afresh on every epoch
        validation_fraction=0.25,
    ).fit(X, y)
    # 9 training photos, 2 epochs; the 3 validation photos stay plain
    assert len(fn.seen) == 18
    assert all(size == (40, 40) for size, _ in fn.seen)  # the decoded photo
    means = {round(m, 6) for _, m in fn.seen}
    assert len(means) == 9  # the same 9 photos in both epochs


def test_a_result_of_the_input_size_is_what_the_network_sees(tmp_path):
    red = np.zeros((32, 32, 3), np.uint8)
    red[..., 0] = 255
    photo = np.full((50, 70, 3), 90, np.uint8)
    copies = augmented_copies(
        photo, 2, augment=lambda p: Image.fromarray(red), image_size=32
    )
    np.testing.assert_array_equal(copies[0], red)
    # any other size becomes the input the plain way (here: squished)
    tall = lambda p: np.zeros((64, 8, 3), np.uint8)  # noqa: E731
    copies = augmented_copies(photo, 1, augment=tall, image_size=32)
    assert copies.shape == (1, 32, 32, 3) and not copies.any()
    gray = lambda p: torch.full((1, 20, 20), 7, dtype=torch.uint8)  # noqa: E731
    copies = augmented_copies(photo, 1, augment=gray, image_size=32)
    assert (copies == 7).all()


def test_torchvision_transforms_work_as_they_are(images, base):
    v2 = pytest.importorskip("torchvision.transforms.v2")
    X, y = images
    augment = v2.Compose(
        [v2.RandomResizedCrop(32, scale=(0.5, 1.0)), v2.ColorJitter(0.3, 0.3)]
    )
    clf = PretrainedImageClassifier(
        **base,
        augment=augment,
        augmented_cycles=1,
        augmented_copies=0,
        unfrozen_cycles=1,
    ).fit(X, y)
    assert np.isfinite(clf.predict_proba(X)).all()
    assert clone(clf).get_params()["augment"] is not None


def test_copies_by_the_function_are_made_anew_every_fit(images, base, forward_count):
    """The plain features come from the cache on the second fit; the
    function's copies are never stored there (a function's behaviour has
    no fingerprint), so they go through the body again."""
    X, y = images
    fn = Recording()
    params = dict(base, augment=fn, augmented_cycles=1, cycle_len=2, augmented_copies=2)
    PretrainedImageClassifier(**params).fit(X, y)
    first = forward_count["n"]
    assert first == 12 + 2 * 12 and len(fn.seen) == 24
    forward_count["n"] = 0
    PretrainedImageClassifier(**params).fit(X, y)
    assert forward_count["n"] == 2 * 12 and len(fn.seen) == 48


def test_a_function_returning_no_image_is_named(images, base):
    X, y = images

    def to_text(photo):
        return "not an image"

    clf = PretrainedImageClassifier(
        **base, augment=to_text, augmented_cycles=1, augmented_copies=0
    )
    with pytest.raises(TypeError, match="augment=<function .*to_text.* returned a str"):
        clf.fit(X, y)
    floats = lambda p: np.zeros((8, 8, 3))  # noqa: E731
    with pytest.raises(TypeError, match="dtype float64"):
        augmented_copies(np.zeros((8, 8, 3), np.uint8), 1, augment=floats)


@pytest.mark.parametrize("bad", ["sideways", 3])
def test_an_augment_that_is_neither_preset_nor_callable_is_named(images, base, bad):
    X, y = images
    clf = PretrainedImageClassifier(**base, augment=bad, augmented_cycles=1)
    with pytest.raises(InvalidParameterError, match="'augment' parameter.*a callable"):
        clf.fit(X, y)


def test_a_model_trained_with_a_function_cannot_be_saved_without_pickle(
    images, base, tmp_path
):
    X, y = images
    clf = PretrainedImageClassifier(**base, augment=Recording()).fit(X, y)
    with pytest.raises(TypeError, match="parameter 'augment'"):
        save(clf, tmp_path / "model")
