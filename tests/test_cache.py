"""The feature cache contract: the body runs once per distinct image and model.

Work is counted two ways: in-process by the extractors' public count of
images through the body (``FeatureExtractor.images_computed_in_process``),
and across processes by the cache's own ``stats()["computed"]`` counter
(vectors written).
"""

from __future__ import annotations

import multiprocessing
import os
import runpy
import sqlite3

import numpy as np
import pytest
import torch
import torchvision
from conftest import TINY, make_images
from PIL import Image
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, cross_val_score

import sktransfer._cache
from sktransfer import FeatureCache, PretrainedFeatures, PretrainedImageClassifier
from sktransfer._cache_db import row_checksum
from sktransfer.exceptions import CacheWarning

N_IMAGES = 12  # make_images' default: 6 per class, 2 classes


def transformer(cache, **params):
    """The tiny backbone (fp32, CPU) as a transformer."""
    kwargs = dict(TINY, precision="fp32", device="cpu", cache=cache)
    kwargs.update(params)
    return PretrainedFeatures(**kwargs)


def features(X, cache, **params):
    return transformer(cache, **params).fit().transform(X)


def db_files(root):
    return sorted(p for p in root.rglob("*.sqlite*"))


# -- clones, cross-validation and grid search ----------------------------------


def test_refitting_a_clone_on_the_same_images_computes_no_features(
    image_set, tiny_params, forward_count
):
    X, y = image_set
    clf = PretrainedImageClassifier(**tiny_params).fit(X, y)
    assert forward_count["n"] == len(X)

    clone(clf).fit(X, y)

    assert forward_count["n"] == len(X)
    assert FeatureCache(tiny_params["cache"]).stats()["computed"] == len(X)


def test_cross_val_score_computes_each_image_once_in_total(
    image_set, tiny_params, forward_count
):
    X, y = image_set
    clf = PretrainedImageClassifier(**tiny_params)

    scores = cross_val_score(clf, X, y, cv=3)

    assert scores.shape == (3,)
    assert forward_count["n"] == len(set(X)) == N_IMAGES
    assert FeatureCache(tiny_params["cache"]).stats()["computed"] == N_IMAGES


HEAD_GRID = [
    {"lr": [1e-3], "dropout": [0.0], "precompute_epochs": [1]},
    {"lr": [1e-2], "dropout": [0.5], "precompute_epochs": [2]},
    {"lr": [3e-3], "dropout": [0.2], "precompute_epochs": [1]},
    {"lr": [1e-2], "dropout": [0.0], "precompute_epochs": [2]},
]


def test_grid_search_over_head_params_computes_each_image_once_sequential(
    image_set, tiny_params, forward_count
):
    X, y = image_set
    search = GridSearchCV(
        PretrainedImageClassifier(**tiny_params), HEAD_GRID, cv=2, n_jobs=1
    ).fit(X, y)

    assert len(search.cv_results_["params"]) == 4
    assert forward_count["n"] == N_IMAGES
    assert FeatureCache(tiny_params["cache"]).stats()["computed"] == N_IMAGES


def test_grid_search_over_head_params_computes_each_image_once_two_workers(
    image_set, tiny_params
):
    X, y = image_set
    search = GridSearchCV(
        PretrainedImageClassifier(**tiny_params), HEAD_GRID, cv=2, n_jobs=2
    ).fit(X, y)

    assert len(search.cv_results_["params"]) == 4
    stats = FeatureCache(tiny_params["cache"]).stats()
    assert stats["computed"] == N_IMAGES
    assert stats["entries"] == N_IMAGES


# -- what a key is made of -----------------------------------------------------


def test_file_rewritten_in_place_with_same_size_and_mtime_is_recomputed(
    tmp_path, forward_count
):
    # BMP files of equal dimensions have equal byte sizes: only the content
    # changes, the path, size and modification time stay the same.
    rng = np.random.default_rng(0)
    paths = []
    for i in range(3):
        path = tmp_path / f"img{i}.bmp"
        Image.fromarray(rng.integers(0, 256, (36, 36, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    cache = str(tmp_path / "cache")
    before = features(paths, cache)
    assert forward_count["n"] == 3

    target = paths[1]
    stat = os.stat(target)
    new_pixels = rng.integers(0, 256, (36, 36, 3), dtype=np.uint8)
    Image.fromarray(new_pixels).save(target)
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert os.path.getsize(target) == stat.st_size
    assert os.stat(target).st_mtime_ns == stat.st_mtime_ns

    after = features(paths, cache)

    assert forward_count["n"] == 4  # only the rewritten file
    assert not np.allclose(after[1], before[1])
    np.testing.assert_array_equal(after[[0, 2]], before[[0, 2]])
    np.testing.assert_allclose(after, features(paths, None), rtol=1e-4, atol=1e-4)


def _random_resnet18_file(path, seed):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    return str(path)


def test_each_model_setting_gets_its_own_entries_without_cross_talk(
    tmp_path, image_set, forward_count
):
    X, _ = image_set
    X = X[:3]
    cache = str(tmp_path / "cache")
    weights_file = _random_resnet18_file(tmp_path / "other-resnet18.pth", seed=1)
    variants = {
        "base": {},
        "image_size": {"image_size": 48},
        "backbone": {"backbone": "resnet34"},  # also 512 features
        "weights": {"weights": weights_file},
        "precision": {"precision": "bf16"},
    }
    models, cached = {}, {}
    for i, (name, params) in enumerate(variants.items(), start=1):
        models[name] = transformer(cache, **params).fit()
        cached[name] = models[name].transform(X)
        assert forward_count["n"] == 3 * i, name
        assert FeatureCache(cache).stats()["models"] == i, name

    # Each setting serves its own vectors, identical to an uncached run.
    for name, params in variants.items():
        np.testing.assert_array_equal(
            models[name].transform(X), cached[name], err_msg=name
        )
        uncached = transformer(None, **params).fit().transform(X)
        np.testing.assert_allclose(
            cached[name], uncached, rtol=1e-4, atol=1e-4, err_msg=name
        )
    for name in variants:
        if name != "base":
            assert not np.allclose(cached[name], cached["base"]), name
    assert FeatureCache(cache).stats()["entries"] == 3 * len(variants)


def test_tta_view_gets_its_own_entries(tmp_path, image_set, forward_count):
    X, _ = image_set
    X = X[:4]
    cache = str(tmp_path / "cache")
    plain = features(X, cache)
    assert forward_count["n"] == 4

    with_tta = features(X, cache, tta=1)

    assert forward_count["n"] == 8  # the mirrored view only; plain is reused
    stats = FeatureCache(cache).stats()
    assert stats["models"] == 2
    assert stats["entries"] == 8
    # The plain view's entries were not overwritten by the mirrored ones.
    np.testing.assert_array_equal(features(X, cache), plain)
    assert forward_count["n"] == 8
    assert not np.allclose(with_tta, plain)
    np.testing.assert_allclose(with_tta, features(X, None, tta=1), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("use_cache", [True, False], ids=["cache", "no-cache"])
def test_same_file_twice_in_X_is_computed_once(
    tmp_path, image_set, forward_count, use_cache
):
    X, _ = image_set
    doubled = [X[0], X[1], X[0], X[2], X[1]]
    cache = str(tmp_path / "cache") if use_cache else None

    out = features(doubled, cache)

    assert forward_count["n"] == 3
    np.testing.assert_array_equal(out[0], out[2])
    np.testing.assert_array_equal(out[1], out[4])
    if use_cache:
        assert FeatureCache(cache).stats()["entries"] == 3


def test_identical_arrays_in_X_are_computed_once(tmp_path, forward_count):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    X = np.stack([a, b, a.copy(), a.copy()])
    cache = str(tmp_path / "cache")

    out = features(X, cache)

    assert forward_count["n"] == 2
    np.testing.assert_array_equal(out[0], out[2])
    np.testing.assert_array_equal(out[0], out[3])
    assert not np.allclose(out[0], out[1])
    assert FeatureCache(cache).stats()["entries"] == 2


def test_arrays_are_cached_by_content(tmp_path, forward_count):
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, (4, 40, 40, 3), dtype=np.uint8)
    cache = str(tmp_path / "cache")
    first = features(X, cache)
    assert forward_count["n"] == 4

    same = features(X.copy(), cache)  # new objects, same pixels
    assert forward_count["n"] == 4
    np.testing.assert_array_equal(same, first)

    changed = X.copy()
    changed[2, 0, 0, 0] ^= 1  # one bit of one pixel
    out = features(changed, cache)
    assert forward_count["n"] == 5
    np.testing.assert_array_equal(out[[0, 1, 3]], first[[0, 1, 3]])


def test_pil_images_are_cached_by_content(tmp_path, forward_count):
    rng = np.random.default_rng(1)
    arrays = rng.integers(0, 256, (3, 40, 40, 3), dtype=np.uint8)
    cache = str(tmp_path / "cache")
    first = features([Image.fromarray(a) for a in arrays], cache)
    assert forward_count["n"] == 3

    same = features([Image.fromarray(a.copy()) for a in arrays], cache)
    assert forward_count["n"] == 3
    np.testing.assert_array_equal(same, first)

    edited = [Image.fromarray(a.copy()) for a in arrays]
    edited[0].putpixel((5, 5), tuple(int(v) ^ 1 for v in arrays[0, 5, 5]))
    features(edited, cache)
    assert forward_count["n"] == 4


def test_cache_none_computes_every_time_and_writes_nothing(
    tmp_path, image_set, forward_count
):
    X, y = image_set
    # Features, twice.
    features(X[:4], None)
    features(X[:4], None)
    assert forward_count["n"] == 8
    # A classifier: fit, then predict, computes the images again.
    clf = PretrainedImageClassifier(
        **TINY, cache=None, precompute_epochs=1, random_state=0
    )
    clf.fit(X, y).predict(X)
    assert forward_count["n"] == 8 + 2 * len(X)

    assert not (tmp_path / "cache").exists()  # the default ($SKTRANSFER_CACHE)
    assert db_files(tmp_path) == []


def test_cache_auto_uses_the_SKTRANSFER_CACHE_directory(
    tmp_path, image_set, forward_count
):
    X, _ = image_set
    features(X[:3], "auto")
    features(X[:3], "auto")

    assert forward_count["n"] == 3
    assert FeatureCache(tmp_path / "cache").stats()["entries"] == 3


# -- concurrency ---------------------------------------------------------------


# The writer processes load the cache modules without the package's
# ``__init__``: they need only sqlite3 and numpy, and skipping the torch import
# keeps the test fast.
_WRITER = """
import importlib
import os
import sys
import types
import numpy as np

package = types.ModuleType("sktransfer")
package.__path__ = [os.path.dirname(cache_module)]
sys.modules["sktransfer"] = package
module = importlib.import_module("sktransfer._cache")
assert "torch" not in sys.modules

def expected(key):
    seed = int.from_bytes(key.encode(), "little") % (2**32)
    return np.random.default_rng(seed).standard_normal(16).astype(np.float32)

cache = module.FeatureCache(directory)
cache.stats()  # open the database before the race starts
barrier.wait(timeout=120)
for start in range(0, len(keys), 5):
    chunk = keys[start : start + 5]
    cache.put_many(model, [(k, expected(k)) for k in chunk])
found = cache.get_many(model, keys)
assert sorted(found) == sorted(keys), "a key written by this process is missing"
for k, vec in found.items():
    np.testing.assert_array_equal(vec, expected(k))
"""


def _expected_vector(key: str) -> np.ndarray:
    seed = int.from_bytes(key.encode(), "little") % (2**32)
    return np.random.default_rng(seed).standard_normal(16).astype(np.float32)


def test_two_processes_writing_the_same_keys_both_succeed(tmp_path):
    directory = str(tmp_path / "cache")
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    keys = [f"img{i:03d}" for i in range(60)]
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = []
    for order in (keys, keys[::-1]):
        init = {
            "cache_module": sktransfer._cache.__file__,
            "directory": directory,
            "model": "model-x",
            "keys": order,
            "barrier": barrier,
        }
        procs.append(
            ctx.Process(
                target=runpy.run_path,
                args=(str(script),),
                kwargs={"init_globals": init},
            )
        )
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0, 0]

    cache = FeatureCache(directory)
    stats = cache.stats()
    assert stats["entries"] == len(keys)
    assert stats["models"] == 1
    assert stats["computed"] == 2 * len(keys)  # both writers counted
    with sqlite3.connect(cache.path) as conn:
        dup = conn.execute(
            "SELECT model, image, COUNT(*) FROM features "
            "GROUP BY model, image HAVING COUNT(*) > 1"
        ).fetchall()
    assert dup == []
    found = cache.get_many("model-x", keys)
    assert sorted(found) == keys
    for k in keys:
        np.testing.assert_array_equal(found[k], _expected_vector(k))


# -- a cache that cannot be used -----------------------------------------------


def test_read_only_cache_directory_degrades_to_computing_with_warning(
    tmp_path, image_set, forward_count
):
    X, y = image_set
    directory = tmp_path / "read-only"
    directory.mkdir()
    directory.chmod(0o555)
    try:
        if os.access(directory, os.W_OK):
            pytest.skip("running as root: chmod 0o555 does not stop writes")
        clf = PretrainedImageClassifier(
            **TINY, cache=str(directory), precompute_epochs=1, random_state=0
        )
        with pytest.warns(CacheWarning, match="cannot be used"):
            clf.fit(X, y)
        assert forward_count["n"] == len(X)
        assert clf.predict(X).shape == (len(X),)
        assert list(directory.iterdir()) == []
    finally:
        directory.chmod(0o755)


@pytest.mark.parametrize("below", [False, True], ids=["the-file", "below-the-file"])
def test_cache_path_that_is_a_regular_file_degrades_with_warning(
    tmp_path, image_set, forward_count, below
):
    X, y = image_set
    not_a_dir = tmp_path / "cache-file"
    not_a_dir.write_bytes(b"not a directory")
    cache = not_a_dir / "sub" if below else not_a_dir
    clf = PretrainedImageClassifier(
        **TINY, cache=str(cache), precompute_epochs=1, random_state=0
    )

    with pytest.warns(CacheWarning, match="cache-file"):
        clf.fit(X, y)

    assert forward_count["n"] == len(X)
    assert set(clf.predict(X)) <= set(y)
    assert forward_count["n"] == 2 * len(X)  # nothing was cached
    assert not_a_dir.read_bytes() == b"not a directory"


def test_corrupt_database_file_degrades_with_warning(tmp_path, image_set):
    X, _ = image_set
    directory = tmp_path / "corrupt"
    directory.mkdir()
    FeatureCache(directory).path.write_bytes(b"garbage, not sqlite" * 100)

    with pytest.warns(CacheWarning):
        out = features(X[:3], str(directory))

    np.testing.assert_allclose(out, features(X[:3], None), rtol=1e-4, atol=1e-4)


# -- inspection ----------------------------------------------------------------


def test_stats_report_entries_models_bytes_and_computed_and_clear_empties(
    tmp_path, forward_count
):
    X, _ = make_images(tmp_path / "images", n_per_class=2)
    directory = tmp_path / "cache"
    cache = FeatureCache(directory)
    empty = cache.stats()
    assert (empty["entries"], empty["models"], empty["computed"]) == (0, 0, 0)

    features(X, str(directory), tta=1)  # plain + mirrored view: 2 models

    stats = cache.stats()
    assert stats["entries"] == 2 * len(X)
    assert stats["models"] == 2
    assert stats["computed"] == 2 * len(X)
    on_disk = sum(p.stat().st_size for p in directory.glob(cache.path.name + "*"))
    assert stats["bytes"] == on_disk > 0

    cache.clear()

    cleared = cache.stats()
    assert cleared["entries"] == 0
    assert cleared["models"] == 0
    assert cleared["computed"] == 0
    assert forward_count["n"] == 2 * len(X)
    features(X, str(directory), tta=1)  # everything is computed again
    assert forward_count["n"] == 4 * len(X)
    assert cache.stats()["computed"] == 2 * len(X)


def test_non_finite_vectors_are_never_stored_nor_served(tmp_path):
    cache = FeatureCache(tmp_path / "cache")
    good = np.arange(4, dtype=np.float32)
    cache.put_many("m", [("good", good), ("nan", np.full(4, np.nan, np.float32))])
    assert sorted(cache.get_many("m", ["good", "nan"])) == ["good"]

    # an entry written by an older version, which stored NaN (with a
    # checksum that matches: only the check for finite values refuses it)
    data = np.array([1, np.inf, 0, 0], np.float32).tobytes()
    with sqlite3.connect(cache.path) as conn:
        conn.execute(
            "INSERT INTO features (model, image, dim, data, checksum, created) "
            "VALUES ('m', 'old', 4, ?, ?, 0)",
            (data, row_checksum("m", "old", data)),
        )
    assert sorted(cache.get_many("m", ["good", "old"])) == ["good"]
