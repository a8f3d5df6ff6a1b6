"""Hostile environments and parameters around the feature cache: each test is
one way a setting, a variable or an interruption can make the cache serve
wrong features, write where it should not, or fail unclearly, and what must
happen instead."""

from __future__ import annotations

import copy
import functools
import os
import pickle
import random
import shutil
import sqlite3
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY, make_images
from sklearn.base import clone

import sktransfer
from sktransfer import (
    FeatureCache,
    PretrainedFeatures,
    PretrainedImageClassifier,
)
from sktransfer.exceptions import CacheWarning

PARAMS = dict(TINY, precision="fp32", device="cpu")


def transformer(cache=None, **params):
    return PretrainedFeatures(**{**PARAMS, "cache": cache, **params})


def database(folder) -> Path:
    """The cache database file in ``folder``."""
    return FeatureCache(folder).path


def entries(folder) -> int:
    path = database(folder)
    if not path.exists():
        return 0
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT COUNT(*) FROM features").fetchone()[0]


@pytest.fixture(scope="module")
def photos(module_dir):
    paths, labels = make_images(module_dir / "photos", n_per_class=3)
    return paths, labels


@pytest.fixture(scope="module")
def reference(photos):
    """The features of ``photos`` computed without any cache."""
    return transformer(cache=None).fit().transform(photos[0])


# -- "auto" is the cache of whoever uses the model ------------------------------------


def test_unpickled_features_with_cache_auto_use_the_cache_of_the_new_environment(
    tmp_path, monkeypatch, photos, reference
):
    fitted_in = tmp_path / "fitting-machine"
    monkeypatch.setenv("SKTRANSFER_CACHE", str(fitted_in))
    blob = pickle.dumps(transformer(cache="auto").fit())

    used_in = tmp_path / "using-machine"
    monkeypatch.setenv("SKTRANSFER_CACHE", str(used_in))
    features = pickle.loads(blob).transform(photos[0])

    np.testing.assert_allclose(features, reference, rtol=1e-5, atol=1e-6)
    assert not fitted_in.exists()  # never re-created on the other machine
    assert entries(used_in) == len(photos[0])


def test_features_with_cache_auto_follow_the_variable_set_after_fit(
    tmp_path, monkeypatch, photos
):
    monkeypatch.setenv("SKTRANSFER_CACHE", str(tmp_path / "first"))
    model = transformer(cache="auto").fit()
    model.transform(photos[0][:2])
    monkeypatch.setenv("SKTRANSFER_CACHE", str(tmp_path / "second"))

    model.transform(photos[0])

    assert entries(tmp_path / "first") == 2
    assert entries(tmp_path / "second") == len(photos[0])


def test_unpickled_classifier_with_cache_auto_uses_the_cache_of_the_new_environment(
    tmp_path, monkeypatch, photos
):
    X, y = photos
    fitted_in = tmp_path / "fitting-machine"
    monkeypatch.setenv("SKTRANSFER_CACHE", str(fitted_in))
    model = PretrainedImageClassifier(
        **PARAMS, cache="auto", precompute_epochs=1, augmented_cycles=0
    ).fit(X, y)
    expected = model.predict_proba(X)
    blob = pickle.dumps(model)
    shutil.rmtree(fitted_in)

    used_in = tmp_path / "using-machine"
    monkeypatch.setenv("SKTRANSFER_CACHE", str(used_in))
    np.testing.assert_allclose(
        pickle.loads(blob).predict_proba(X), expected, rtol=1e-5, atol=1e-6
    )

    assert entries(used_in) == len(X)
    assert not fitted_in.exists()


# -- parameters set after fit are checked where they are used --------------------------


def _fit_error(estimator_class, params, name, value, X=None, y=None):
    """The message ``fit`` gives for ``name=value``."""
    with pytest.raises(ValueError) as caught:
        estimator_class(**{**params, name: value}).fit(X, y)
    return str(caught.value)


BAD_AFTER_FIT = [
    ("extract_batch_size", -1),
    ("extract_batch_size", 0),
    ("extract_batch_size", "x"),
    ("extract_batch_size", 2.5),
    ("tta", -1),
    ("verbose", -3),
    ("device", "junk"),
    ("device", 7),
]


@pytest.mark.parametrize(("name", "value"), BAD_AFTER_FIT)
def test_features_parameter_set_after_fit_is_refused_by_transform_as_by_fit(
    photos, name, value
):
    model = transformer(cache=None).fit()
    model.set_params(**{name: value})

    with pytest.raises(ValueError) as caught:
        model.transform(photos[0][:2])

    expected = _fit_error(PretrainedFeatures, {**PARAMS, "cache": None}, name, value)
    assert str(caught.value) == expected
    assert repr(value) in expected or str(value) in expected


@pytest.fixture(scope="module")
def fitted_classifier(photos, module_dir):
    X, y = photos
    return PretrainedImageClassifier(
        **PARAMS,
        cache=str(module_dir / "classifier-cache"),
        precompute_epochs=1,
        augmented_cycles=0,
    ).fit(X, y)


@pytest.mark.parametrize(
    ("name", "value"), [*BAD_AFTER_FIT, ("augment", "sideways"), ("threshold", 2.0)]
)
def test_classifier_parameter_set_after_fit_is_refused_by_predict_as_by_fit(
    photos, fitted_classifier, name, value
):
    X, y = photos
    model = copy.deepcopy(fitted_classifier)
    model.set_params(**{name: value})

    with pytest.raises(ValueError) as caught:
        model.predict(X[:2])

    params = {**clone(fitted_classifier).get_params(), name: value}
    with pytest.raises(ValueError) as at_fit:
        PretrainedImageClassifier(**params).fit(X, y)
    assert str(caught.value) == str(at_fit.value)


def test_valid_parameters_set_after_fit_still_predict(photos, fitted_classifier):
    X, _ = photos
    model = copy.deepcopy(fitted_classifier)
    expected = model.predict_proba(X)
    model.set_params(extract_batch_size=1, device="CPU", verbose=0)

    np.testing.assert_allclose(model.predict_proba(X), expected, rtol=1e-5, atol=1e-6)


# -- a damaged entry is never served ---------------------------------------------------


def test_vector_overwritten_inside_the_database_is_recomputed_with_a_warning(
    tmp_path, photos, reference
):
    X = photos[0]
    folder = tmp_path / "cache"
    transformer(cache=str(folder)).fit().transform(X)
    path = database(folder)
    checkpoint = FeatureCache(folder)
    checkpoint.evict(10**12)  # deletes nothing; moves everything to the file
    checkpoint.close()
    data = bytearray(path.read_bytes())
    victim = 4
    stored = None
    with sqlite3.connect(path) as conn:  # the bytes as stored (any precision)
        for (blob,) in conn.execute("SELECT data FROM features"):
            if np.allclose(
                np.frombuffer(blob, np.float32), reference[victim], atol=1e-6
            ):
                stored = blob
    assert stored is not None and data.count(stored) == 1
    at = data.index(stored)
    data[at + 40 : at + 48] = b"\x7f\x7f\x7f\x7f\x00\x00\x80\x3f"  # 3.4e38, 1.0
    path.write_bytes(bytes(data))
    with sqlite3.connect(path) as conn:  # the damage SQLite itself cannot see
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    with pytest.warns(CacheWarning, match=str(path)) as caught:
        features = transformer(cache=str(folder)).fit().transform(X)

    np.testing.assert_allclose(features, reference, rtol=1e-5, atol=1e-6)
    assert any("checksum" in str(w.message) for w in caught)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)  # rewritten: served again
        again = transformer(cache=str(folder)).fit().transform(X)
    np.testing.assert_array_equal(again, features)


def test_database_of_the_previous_format_is_left_alone_and_not_served(
    tmp_path, photos, reference
):
    folder = tmp_path / "cache"
    folder.mkdir()
    old = folder / "features-v2.sqlite"
    with sqlite3.connect(old) as conn:  # the layout of version 2, all zeros
        conn.executescript(
            """
            CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
            CREATE TABLE features (id INTEGER PRIMARY KEY, model TEXT NOT NULL,
                image TEXT NOT NULL, dim INTEGER NOT NULL, data BLOB NOT NULL,
                created REAL NOT NULL, UNIQUE (model, image));
            CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
            INSERT INTO meta VALUES ('format_version', '2');
            """
        )
    before = old.read_bytes()

    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)
        features = transformer(cache=str(folder)).fit().transform(photos[0])

    np.testing.assert_allclose(features, reference, rtol=1e-5, atol=1e-6)
    assert database(folder) != old
    assert old.read_bytes() == before  # an older sktransfer may still use it


# -- $SKTRANSFER_CACHE follows the rules of the cache parameter ------------------------


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (" ", "empty"),
        ("\t\n", "empty"),
        ("relative/cache", "not an absolute path"),
        ("./cache", "not an absolute path"),
        ("/", "root"),
        ("//", "root"),
        ("/..", "root"),
    ],
)
def test_unusable_SKTRANSFER_CACHE_is_ignored_with_a_warning_naming_it(
    tmp_path, monkeypatch, photos, value, problem
):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("SKTRANSFER_CACHE", value)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    root_before = set(os.listdir("/"))

    assert FeatureCache.default_directory() == tmp_path / "xdg" / "sktransfer"
    with pytest.warns(CacheWarning) as caught:
        transformer(cache="auto").fit().transform(photos[0][:2])

    message = " ".join(str(w.message) for w in caught)
    assert f"$SKTRANSFER_CACHE={value!r}" in message and problem in message
    assert str(tmp_path / "xdg" / "sktransfer") in message
    assert os.listdir(work) == []  # nothing created in the working folder
    assert set(os.listdir("/")) == root_before
    assert entries(tmp_path / "xdg" / "sktransfer") == 2


@pytest.mark.parametrize("value", ["/", "//", "/..", " "])
def test_cache_parameter_naming_the_root_or_nothing_is_refused(value):
    with pytest.raises(ValueError, match=r"cache=") as caught:
        transformer(cache=value).fit()
    assert repr(value) in str(caught.value)


def test_SKTRANSFER_CACHE_with_a_home_folder_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SKTRANSFER_CACHE", "~/features")

    assert FeatureCache.default_directory() == tmp_path / "home" / "features"


# -- $SKTRANSFER_DECODE_WORKERS --------------------------------------------------------


@pytest.mark.parametrize("value", ["-1", "0", "abc", "²", "٣", "1.5", "+2", " "])
def test_bad_SKTRANSFER_DECODE_WORKERS_fails_naming_the_variable_and_value(
    monkeypatch, photos, value
):
    monkeypatch.setenv("SKTRANSFER_DECODE_WORKERS", value)
    model = transformer(cache=None).fit()

    with pytest.raises(ValueError) as caught:
        model.transform(photos[0][:2])

    message = str(caught.value)
    assert f"SKTRANSFER_DECODE_WORKERS={value!r}" in message
    assert "int()" not in message and "unset it" in message


@pytest.mark.parametrize("value", ["1", " 3 ", ""])
def test_good_SKTRANSFER_DECODE_WORKERS_gives_the_same_features(
    monkeypatch, photos, reference, value
):
    monkeypatch.setenv("SKTRANSFER_DECODE_WORKERS", value)

    features = transformer(cache=None).fit().transform(photos[0])

    np.testing.assert_allclose(features, reference, rtol=1e-5, atol=1e-6)


# -- a write interrupted at any moment -------------------------------------------------


PACKAGE = os.path.dirname(sktransfer.__file__)


class _InterruptAt:
    """A profile hook raising KeyboardInterrupt at the ``n``-th event (a call
    or return of a Python or C function, a generator's yield or resumption)
    in the package's own code, in this thread; without ``n``, it records them.

    An exception raised by the hook at a ``return`` event skips the
    ``finally`` blocks of the returning frame, which no real Ctrl-C can do;
    one due there is raised at the next event instead (the caller's next
    step). Events inside the standard library are left out: CPython itself
    does not promise that a lock taken by a ``with`` statement is released
    when an exception arrives between the acquisition and the block (an
    interrupt there can leave a ``concurrent.futures`` lock held forever)."""

    def __init__(self, n=None):
        self.n, self.seen, self.events = n, 0, []

    def __call__(self, frame, event, arg):
        code = frame.f_code
        if not code.co_filename.startswith(PACKAGE):
            return
        self.seen += 1
        if self.n is None:
            where = (os.path.basename(code.co_filename), code.co_name)
            self.events.append((*where, frame.f_lineno, event))
        elif self.seen >= self.n and event != "return":
            sys.setprofile(None)
            raise KeyboardInterrupt(f"event {self.n} ({event})")

    def run(self, fn):
        sys.setprofile(self)
        try:
            return fn()
        finally:
            sys.setprofile(None)


@pytest.fixture
def interrupted_transforms(tmp_path, photos):
    """Interrupt a cached ``transform`` at chosen events, each time from an
    empty cache; after each, a fresh
    transform and the interrupted model's own must give exactly the features
    computed without a cache, and the database must be whole and complete.
    Returns the recorded events of one uninterrupted transform."""
    X = photos[0][:4]
    exact = transformer(cache=None, extract_batch_size=1).fit().transform(X)
    base = transformer(cache=str(tmp_path / "cache"), extract_batch_size=1).fit()
    path = database(tmp_path / "cache")
    checker = copy.deepcopy(base)

    def emptied():
        model = copy.deepcopy(base)  # a connection of its own
        model.extractor_.cache.clear()
        return model

    recorder, model = _InterruptAt(), emptied()
    recorder.run(lambda: model.transform(X))

    def interrupt_at(points) -> int:
        interrupted = 0
        for n in points:
            model = emptied()
            try:
                _InterruptAt(n).run(functools.partial(model.transform, X))
            except KeyboardInterrupt:
                interrupted += 1
            checker.extractor_.cache.close()  # a new connection, as a new process
            with warnings.catch_warnings():
                warnings.simplefilter("error", CacheWarning)  # nothing to rebuild
                np.testing.assert_array_equal(checker.transform(X), exact)
                np.testing.assert_array_equal(model.transform(X), exact)
            with sqlite3.connect(path) as conn:
                assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
                count = conn.execute("SELECT COUNT(*) FROM features").fetchone()[0]
            assert count == len(X)
        return interrupted

    return recorder.events, interrupt_at


def test_transform_interrupted_at_random_moments_leaves_a_usable_cache(
    interrupted_transforms,
):
    events, interrupt_at = interrupted_transforms
    # the image reader's events too: an interrupt just after it wrapped a
    # file descriptor in a file object used to close that descriptor twice
    reader = [n for n, e in enumerate(events, start=1) if e[0] in IMAGE_FILES]
    rng = random.Random(0)
    points = set(rng.sample(range(1, len(events) + 1), 25) + rng.sample(reader, 10))

    # an interrupt due at the very last returns comes after the work is done
    assert interrupt_at(sorted(points)) >= len(points) - 1


def test_transform_interrupted_at_each_step_of_a_cache_write_leaves_a_usable_cache(
    interrupted_transforms,
):
    events, interrupt_at = interrupted_transforms
    first = {}  # the first time each step of the write path runs
    for n, event in enumerate(events, start=1):
        if event[0] in CACHE_FILES and event[1] in WRITE_PATH:
            first.setdefault(event, n)
    assert {event[1] for event in first} == WRITE_PATH

    assert interrupt_at(sorted(first.values())) == len(first)


CACHE_FILES = {"_cache.py", "_cache_db.py", "_cache_files.py"}
IMAGE_FILES = {"_images.py", "_image_files.py", "_fingerprints.py", "_decoding.py"}
WRITE_PATH = {"put_many", "transaction", "file_lock", "row_checksum"}
