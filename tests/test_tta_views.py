"""TTA views follow the training augmentation."""

from __future__ import annotations

import numpy as np
from PIL import Image

from sktransfer import PretrainedImageRegressor
from sktransfer._transforms import PLAIN, Preprocessing, View, render, tta_views
from tests.conftest import TINY


def test_side_on_views_start_with_the_mirror_and_keep_their_cache_keys():
    views = tta_views(4)
    assert views[0] == PLAIN and views[1].flip and views[1].zoom == 1.0
    assert not any(v.vflip or v.turns for v in views)
    assert all("vflip" not in v.key for v in views)  # keys of earlier versions


def test_views_without_augmentation_never_mirror():
    views = tta_views(6, augment=None)
    assert len(views) == 7
    assert not any(v.flip or v.vflip or v.turns for v in views)
    assert len({v.key for v in views}) == 7


def test_top_down_views_flip_vertically_and_turn():
    views = tta_views(6, augment="top_down")
    assert any(v.vflip for v in views) and any(v.turns for v in views)
    assert len({v.key for v in views}) == 7


def test_a_quarter_turn_view_renders_the_turned_picture():
    arr = np.zeros((32, 32, 3), np.uint8)
    arr[:8, :8] = 255  # a white square in the top-left corner
    img = Image.fromarray(arr)
    pre = Preprocessing(resize_size=32, crop_size=32)
    plain = render(img, pre, PLAIN)
    turned = render(img, pre, View(turns=2))
    # half a turn moves the square to the bottom-right corner
    assert plain[:8, :8].mean() > 200 and turned[-8:, -8:].mean() > 200
    assert turned[:8, :8].mean() < 60
    np.testing.assert_array_equal(turned, np.rot90(plain, 2))


def test_regressor_with_augment_none_and_tta_predicts_from_unmirrored_views(
    images, tmp_path
):
    X, labels = images
    y = (labels == "b").astype(float)
    base = dict(TINY, cache=str(tmp_path / "c"), random_state=0, augment=None)
    reg = PretrainedImageRegressor(**base, tta=2).fit(X, y)
    views = tta_views(2, augment=None)
    feats = reg.extractor_.transform(X, views=views)
    import torch

    with torch.inference_mode():
        outs = [reg.model_.eval().head_outputs([torch.from_numpy(f)]) for f in feats]
    np.testing.assert_allclose(reg.predict(X), np.mean(outs, axis=0), rtol=1e-5)
