"""Photos decoded by several threads give the same results as one thread,
in feature extraction and in the image stages, and bad photos are still all
named with nothing computed lost. (The suite runs torch on one thread, which
also makes one decoding thread the default: these tests ask for more with
``SKTRANSFER_DECODE_WORKERS``.)"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import TINY, make_images

from sktransfer import PretrainedFeatures, PretrainedImageClassifier
from sktransfer.exceptions import ImageLoadError


@pytest.fixture
def photos(tmp_path):
    paths, y = make_images(tmp_path / "images", n_per_class=9)
    # the same picture twice, under two names: computed once, copied
    twin = tmp_path / "images" / "twin.jpg"
    twin.write_bytes(open(paths[0], "rb").read())
    return [*paths, str(twin)], np.array([*y, y[0]])


def features(paths, workers, monkeypatch, cache=None):
    monkeypatch.setenv("SKTRANSFER_DECODE_WORKERS", str(workers))
    tr = PretrainedFeatures(**TINY, precision="fp32", cache=cache, extract_batch_size=4)
    return tr.fit().transform(paths)


def test_features_do_not_depend_on_the_number_of_decoding_threads(photos, monkeypatch):
    paths, _ = photos
    one = features(paths, 1, monkeypatch)
    three = features(paths, 3, monkeypatch)
    np.testing.assert_array_equal(one, three)
    np.testing.assert_array_equal(three[0], three[-1])  # the twin


def test_bad_photos_are_all_named_and_good_ones_cached_with_several_threads(
    photos, tmp_path, monkeypatch, forward_count
):
    paths, _ = photos
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    mixed = [*paths[:5], str(broken), *paths[5:], str(empty)]
    cache = str(tmp_path / "cache")
    with pytest.raises(ImageLoadError) as info:
        features(mixed, 3, monkeypatch, cache=cache)
    assert "broken.jpg" in str(info.value) and "empty.jpg" in str(info.value)
    computed = forward_count["n"]
    assert computed == len(paths) - 1  # the twin is a copy
    # every good photo was cached before the error: nothing is computed again
    again = features(paths, 3, monkeypatch, cache=cache)
    assert forward_count["n"] == computed
    np.testing.assert_array_equal(again, features(paths, 1, monkeypatch))


def test_image_stages_train_the_same_with_several_decoding_threads(photos, monkeypatch):
    paths, y = photos
    params = dict(
        TINY,
        precision="fp32",
        cache=None,
        precompute_epochs=1,
        augmented_cycles=1,
        augmented_copies=0,  # photos augmented afresh in the image stage
        unfrozen_cycles=1,
        batch_size=4,
        random_state=0,
    )
    fitted = {}
    for workers in (1, 3):
        monkeypatch.setenv("SKTRANSFER_DECODE_WORKERS", str(workers))
        clf = PretrainedImageClassifier(**params).fit(paths, y)
        fitted[workers] = (
            [r["train_loss"] for r in clf.history_],
            clf.predict_proba(paths),
        )
    assert fitted[1][0] == pytest.approx(fitted[3][0], rel=1e-5)
    np.testing.assert_allclose(fitted[1][1], fitted[3][1], rtol=1e-5, atol=1e-6)
