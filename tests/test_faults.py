"""What goes wrong in real use: killed and racing writers, caches of another
format or corrupt, locations that cannot be written, a full disk, the size
limit, Ctrl-C in the middle of a fit, and models saved and loaded elsewhere.

Writer processes load the cache modules without the package's
``__init__`` (they need only sqlite3 and numpy): skipping the torch import
keeps them fast.
"""

from __future__ import annotations

import io
import os
import pickle
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import warnings

import joblib
import numpy as np
import pytest
import torch
import torchvision
from conftest import TINY, make_images
from sklearn.utils.validation import check_is_fitted

import sktransfer._cache
from sktransfer import FeatureCache, PretrainedFeatures, PretrainedImageClassifier
from sktransfer._cache import resolve_cache
from sktransfer._cache_db import FORMAT_VERSION
from sktransfer._extractor import FeatureExtractor
from sktransfer._fingerprints import fingerprint
from sktransfer.exceptions import CacheWarning

CACHE_MODULE = sktransfer._cache.__file__


def expected(key: str, dim: int = 64) -> np.ndarray:
    """The vector stored under ``key``: its first value is the key's number,
    the rest follow from it, so any mix-up or truncation shows."""
    number = int(key.lstrip("k"))
    vec = np.random.default_rng(number).standard_normal(dim).astype(np.float32)
    vec[0] = number
    return vec


def assert_entries_are_intact(cache: FeatureCache, keys, dim: int) -> dict:
    found = cache.get_many("model", keys)
    for key, vec in found.items():
        assert vec.shape == (dim,), key
        np.testing.assert_array_equal(vec, expected(key, dim), err_msg=key)
    return found


def stored_keys(cache: FeatureCache) -> list[str]:
    """Every image key in the database, read around the cache's own code."""
    with sqlite3.connect(cache.path) as conn:
        return [key for (key,) in conn.execute("SELECT image FROM features")]


def integrity(cache: FeatureCache) -> str:
    with sqlite3.connect(cache.path) as conn:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]


def writer_script(body: str) -> str:
    """A Python program with the cache module loaded as ``cache_module``."""
    head = textwrap.dedent(
        f"""
        import importlib, os, sys, time, types
        import numpy as np
        # the package without its __init__, which imports torch
        package = types.ModuleType("sktransfer")
        package.__path__ = [os.path.dirname({CACHE_MODULE!r})]
        sys.modules["sktransfer"] = package
        cache_module = importlib.import_module("sktransfer._cache")
        assert "torch" not in sys.modules

        def expected(key, dim):
            number = int(key.lstrip("k"))
            vec = np.random.default_rng(number).standard_normal(dim).astype(np.float32)
            vec[0] = number
            return vec
        """
    )
    return head + textwrap.dedent(body)


def uncached(extractor: FeatureExtractor) -> FeatureExtractor:
    """The same body and preprocessing, without a cache."""
    return FeatureExtractor(
        extractor.backbone,
        extractor.preprocessing,
        extractor.precision,
        extractor.device,
        None,
    )


def spawn(code: str, *args) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", code, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# -- a writer killed mid-write ----------------------------------------------------

_ENDLESS_WRITER = """
directory, limit = sys.argv[1], sys.argv[4]
first, dim = int(sys.argv[2]), int(sys.argv[3])
cache = cache_module.FeatureCache(directory, max_bytes=None if limit == "-" else limit)
batch = 0
while True:
    keys = [f"k{i}" for i in range(first + 40 * batch, first + 40 * batch + 40)]
    cache.put_many("model", [(k, expected(k, dim)) for k in keys])
    if batch == 0:
        print("started", flush=True)
    batch += 1
"""


@pytest.mark.parametrize("max_bytes", [None, "3M"], ids=["unlimited", "evicting"])
def test_sigkill_mid_write_leaves_only_complete_entries(tmp_path, max_bytes):
    directory = tmp_path / "cache"
    dim = 300
    code = writer_script(_ENDLESS_WRITER)
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    for round_ in range(3):  # each writer is killed at a random moment
        first = 1_000_000 * round_
        proc = spawn(code, directory, first, dim, max_bytes or "-")
        try:
            assert proc.stdout.readline().strip() == "started", proc.stderr.read()
            time.sleep(rng.uniform(0.0, 1.0))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
        assert proc.returncode == -signal.SIGKILL

        cache = FeatureCache(directory)  # opens the database the writer left
        with warnings.catch_warnings():
            warnings.simplefilter("error", CacheWarning)  # nothing to rebuild
            stats = cache.stats()
            keys = stored_keys(cache)
            found = assert_entries_are_intact(cache, keys, dim)
        assert len(found) == len(keys) == stats["entries"] > 0, f"seed {seed}"
        if max_bytes is None:  # the first batch, at least, was committed
            assert {f"k{i}" for i in range(first, first + 40)} <= set(found)
        assert integrity(cache) == "ok", f"seed {seed}"
        # the killed writer's lock and open transaction do not block the next one
        cache.put_many("model", [("k7", expected("k7", dim))])
        np.testing.assert_array_equal(
            cache.get_many("model", ["k7"])["k7"], expected("k7", dim)
        )
        cache.close()


# -- concurrent writers -------------------------------------------------------------

_SAME_KEYS_WRITER = """
directory, order, step, limit = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
keys = [f"k{i}" for i in range(1500)]
if order == "backward":
    keys = keys[::-1]
cache = cache_module.FeatureCache(directory, max_bytes=None if limit == "-" else limit)
cache.stats()
print("ready", flush=True)
while not os.path.exists(os.path.join(directory, "go")):
    time.sleep(0.01)
for start in range(0, len(keys), step):
    cache.put_many("model", [(k, expected(k, 128)) for k in keys[start : start + step]])
    found = cache.get_many("model", keys[start : start + step])
    for k, vec in found.items():
        assert vec.shape == (128,) and np.array_equal(vec, expected(k, 128)), k
print("done", flush=True)
"""


@pytest.mark.parametrize("max_bytes", [None, "1500K"], ids=["unlimited", "evicting"])
def test_two_processes_writing_the_same_keys_at_once_both_finish(tmp_path, max_bytes):
    directory = tmp_path / "cache"
    directory.mkdir()
    code = writer_script(_SAME_KEYS_WRITER)
    procs = [
        spawn(code, directory, order, step, max_bytes or "-")
        for order, step in (("forward", 7), ("backward", 13))
    ]
    try:
        for proc in procs:
            assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        (directory / "go").touch()
        outputs = [proc.communicate(timeout=300) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
        assert out.split() == ["done"]  # after "ready", read above
        assert "CacheWarning" not in err

    cache = FeatureCache(directory, max_bytes=max_bytes)
    keys = [f"k{i}" for i in range(1500)]
    found = assert_entries_are_intact(cache, keys, 128)
    stats = cache.stats()
    assert stats["computed"] == 2 * len(keys)
    assert integrity(cache) == "ok"
    if max_bytes is None:
        assert sorted(found) == sorted(keys)
        assert stats["entries"] == len(keys)
    else:
        assert 0 < stats["entries"] < len(keys)
        assert stats["evicted"] > 0
        cache.put_many("model", [("k0", expected("k0", 128))])  # alone now
        assert cache.stats()["bytes"] <= cache.max_bytes


# -- caches of another format, or not a database at all -----------------------------


def _old_format(path):
    with sqlite3.connect(path) as conn:  # the version-1 layout, marked version 0
        conn.executescript(
            """
            CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
            CREATE TABLE features (model TEXT, image TEXT, dim INTEGER, data BLOB,
                                   created REAL, PRIMARY KEY (model, image));
            CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
            INSERT INTO meta VALUES ('format_version', '0');
            """
        )
        conn.execute(  # an entry the new version must not serve
            "INSERT INTO features VALUES ('model', 'k1', 64, ?, 0)",
            (np.zeros(64, np.float32).tobytes(),),
        )


def _newer_format(path):
    cache = FeatureCache(path.parent)
    cache.put_many("model", [("k1", expected("k1"))])  # must not be served
    cache.close()
    with sqlite3.connect(path) as conn:
        conn.execute(
            "UPDATE meta SET value = ? WHERE name = 'format_version'",
            (str(FORMAT_VERSION + 1),),
        )


def _foreign_database(path):
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE photos (name TEXT)")


def _garbage(path):
    path.write_bytes(b"garbage, not sqlite" * 1000)


def _truncated(path):
    cache = FeatureCache(path.parent)
    cache.put_many("model", [(f"k{i}", expected(f"k{i}")) for i in range(2000)])
    cache.evict(10**12)  # checkpoint: everything into the main file
    cache.close()
    data = path.read_bytes()
    for suffix in ("-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    path.write_bytes(data[:150_000])


BROKEN = {
    "older-version": (_old_format, "format version '0'"),
    "newer-version": (_newer_format, f"format version '{FORMAT_VERSION + 1}'"),
    "foreign-database": (_foreign_database, "lacks the table"),
    "garbage": (_garbage, "not a valid SQLite database"),
    "truncated": (_truncated, "corrupt|malformed"),
}


@pytest.mark.parametrize("kind", list(BROKEN))
def test_database_of_another_format_or_broken_is_rebuilt_with_warning(tmp_path, kind):
    make, message = BROKEN[kind]
    directory = tmp_path / "cache"
    directory.mkdir()
    path = FeatureCache(directory).path
    make(path)

    cache = FeatureCache(directory)
    with pytest.warns(CacheWarning, match=message):
        found = cache.get_many("model", ["k1", "k2"])
        cache.put_many("model", [("k1", expected("k1")), ("k2", expected("k2"))])

    assert found == {}  # nothing of the old file is ever served
    assert sorted(cache.get_many("model", ["k1", "k2", "k3"])) == ["k1", "k2"]
    assert cache.stats()["entries"] == 2
    with sqlite3.connect(path) as conn:
        version = conn.execute("SELECT value FROM meta WHERE name = 'format_version'")
        assert version.fetchone()[0] == str(FORMAT_VERSION)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)  # rebuilt once, then fine
        assert FeatureCache(directory).stats()["entries"] == 2


@pytest.mark.parametrize("kind", ["older-version", "garbage"])
def test_features_through_a_rebuilt_cache_are_correct(tmp_path, image_set, kind):
    X, _ = image_set
    directory = tmp_path / "cache"
    directory.mkdir()
    BROKEN[kind][0](FeatureCache(directory).path)
    params = dict(TINY, precision="fp32", device="cpu")
    model = PretrainedFeatures(**params, cache=str(directory)).fit()

    with pytest.warns(CacheWarning, match="deleted and rebuilt"):
        first = model.transform(X[:4])

    np.testing.assert_array_equal(model.transform(X[:4]), first)  # from the cache
    assert FeatureCache(directory).stats()["entries"] == 4
    reference = uncached(model.extractor_).transform(X[:4])[0]
    np.testing.assert_allclose(first, reference, rtol=1e-4, atol=1e-4)


def test_corruption_found_while_reading_rebuilds_the_cache(tmp_path):
    directory = tmp_path / "cache"
    cache = FeatureCache(directory)
    keys = [f"k{i}" for i in range(3000)]
    cache.put_many("model", [(k, expected(k)) for k in keys])
    cache.evict(10**12)  # checkpoint: everything into the main file
    with sqlite3.connect(cache.path) as conn:
        (root,) = conn.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = 'features'"
        ).fetchone()
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    with open(cache.path, "r+b") as f:  # wreck the table's root page
        f.seek((root - 1) * page_size)
        f.write(b"\xff" * 64)

    reader = FeatureCache(directory)
    assert reader.stats()["entries"] >= 0  # the schema is fine: opens
    with pytest.warns(CacheWarning, match="corrupt"):
        assert reader.get_many("model", keys[:10]) == {}

    reader.put_many("model", [("k1", expected("k1"))])
    assert sorted(reader.get_many("model", keys[:10])) == ["k1"]
    assert integrity(reader) == "ok"


# -- a location that cannot be written -------------------------------------------


def test_fit_with_cache_below_a_regular_file_succeeds_with_warning(
    tmp_path, image_set, forward_count
):
    # Even root cannot create a folder inside a file.
    X, y = image_set
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    clf = PretrainedImageClassifier(
        **TINY, cache=str(blocker / "cache"), precompute_epochs=1, random_state=0
    )

    with pytest.warns(CacheWarning, match="cannot be used"):
        clf.fit(X, y)

    check_is_fitted(clf, "head_")
    assert forward_count["n"] == len(X)
    assert clf.predict(X).shape == (len(X),)
    assert blocker.read_text() == "not a folder"


def test_full_disk_while_writing_warns_and_the_fit_goes_on(
    tmp_path, forward_count, monkeypatch
):
    X, y = make_images(tmp_path / "images", n_per_class=20)
    directory = tmp_path / "cache"
    FeatureCache(directory).stats()  # an empty cache, made while there was room
    # SQLite's page limit gives the error of a full disk, "database or disk
    # is full", on the first write that needs a new page: 40 vectors of 512
    # floats do not fit in the one free page of an empty cache.
    original = sktransfer._cache.raw_connect

    def full_disk_connect(path):
        conn = original(path)
        conn.execute("PRAGMA max_page_count = 1")  # clamped to the current size
        return conn

    monkeypatch.setattr(sktransfer._cache, "raw_connect", full_disk_connect)
    clf = PretrainedImageClassifier(
        **TINY,
        cache=str(directory),
        precompute_epochs=1,
        extract_batch_size=8,
        random_state=0,
    )

    with pytest.warns(CacheWarning, match="database or disk is full"):
        clf.fit(X, y)

    check_is_fitted(clf, "head_")
    assert forward_count["n"] == len(X)
    cache = FeatureCache(directory)
    stored = cache.get_many(clf.extractor_.model_key, [fingerprint(p) for p in X])
    assert 0 < len(stored) < len(X)  # the batches written before the disk was full
    reference = uncached(clf.extractor_).transform(X)[0]
    for i, path in enumerate(X):
        if fingerprint(path) in stored:
            np.testing.assert_allclose(
                stored[fingerprint(path)], reference[i], atol=1e-5
            )
    assert integrity(cache) == "ok"


_FULL_DISK_WRITER = """
import resource, signal, warnings
directory = sys.argv[1]
cache = cache_module.FeatureCache(directory)
cache.stats()
# Past this size a write fails (EFBIG) as on a full disk.
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (2_000_000, 2_000_000))
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    for b in range(200):
        keys = [f"k{i}" for i in range(40 * b, 40 * b + 40)]
        cache.put_many("model", [(k, expected(k, 512)) for k in keys])
messages = [str(w.message) for w in caught]
assert len(messages) == 1, messages
print(messages[0])
found = cache.get_many("model", [f"k{i}" for i in range(8000)])
assert 0 < len(found) < 8000
for k, vec in found.items():
    assert np.array_equal(vec, expected(k, 512)), k
"""


def test_file_size_limit_hit_mid_run_warns_once_and_keeps_what_was_written(tmp_path):
    directory = tmp_path / "cache"
    proc = subprocess.run(
        [sys.executable, "-c", writer_script(_FULL_DISK_WRITER), str(directory)],
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert proc.returncode == 0, proc.stderr
    assert "cannot be used to store new features" in proc.stdout
    cache = FeatureCache(directory)
    found = assert_entries_are_intact(cache, [f"k{i}" for i in range(8000)], 512)
    assert len(found) == cache.stats()["entries"] > 0
    assert integrity(cache) == "ok"


# -- the size limit -----------------------------------------------------------------


def test_size_limit_evicts_the_oldest_and_keeps_the_newest(tmp_path):
    limit = 2 * 1024**2
    cache = FeatureCache(tmp_path / "cache", max_bytes=limit)
    dim, batch, n_batches = 512, 50, 60  # 6 MB of vectors into a 2 MB cache
    for b in range(n_batches):
        keys = [f"k{i}" for i in range(b * batch, (b + 1) * batch)]
        cache.put_many("model", [(k, expected(k, dim)) for k in keys])
        assert cache.stats()["bytes"] <= limit, f"after batch {b}"

    keys = [f"k{i}" for i in range(n_batches * batch)]
    found = assert_entries_are_intact(cache, keys, dim)
    stats = cache.stats()
    kept = sorted(int(k[1:]) for k in found)
    # what is left is the newest run of entries, the last batch complete
    assert kept == list(range(kept[0], n_batches * batch))
    assert kept[0] > 0
    assert stats["entries"] == len(kept)
    assert stats["evicted"] == n_batches * batch - len(kept)
    assert stats["computed"] == n_batches * batch
    # most of the limit stays in use: eviction is not all or nothing
    assert len(kept) * dim * 4 > 0.5 * limit
    # the files are what stats() reports
    on_disk = sum(p.stat().st_size for p in cache.directory.glob(cache.path.name + "*"))
    assert stats["bytes"] == on_disk


def test_evict_shrinks_to_the_size_given(tmp_path):
    cache = FeatureCache(tmp_path / "cache")
    keys = [f"k{i}" for i in range(2000)]
    for start in range(0, len(keys), 100):
        chunk = keys[start : start + 100]
        cache.put_many("model", [(k, expected(k, 512)) for k in chunk])
    before = cache.stats()
    assert before["bytes"] > 4 * 1024**2

    deleted = cache.evict("1500K")

    after = cache.stats()
    assert after["bytes"] <= 1500 * 1024
    assert deleted == after["evicted"] == before["entries"] - after["entries"] > 0
    found = assert_entries_are_intact(cache, keys, 512)
    assert sorted(found, key=lambda k: int(k[1:])) == keys[len(keys) - len(found) :]
    assert cache.evict(10**12) == 0


def test_size_limit_from_environment_and_through_pickling(tmp_path, monkeypatch):
    monkeypatch.setenv("SKTRANSFER_CACHE_MAX_BYTES", "3G")
    assert FeatureCache(tmp_path).max_bytes == 3 * 1024**3
    assert resolve_cache("auto").max_bytes == 3 * 1024**3
    assert FeatureCache(tmp_path, max_bytes=2_000_000).max_bytes == 2_000_000  # wins
    copy = pickle.loads(pickle.dumps(FeatureCache(tmp_path, max_bytes="2.5M")))
    assert copy.max_bytes == int(2.5 * 1024**2)

    monkeypatch.setenv("SKTRANSFER_CACHE_MAX_BYTES", "lots")
    with pytest.raises(ValueError, match="SKTRANSFER_CACHE_MAX_BYTES .* 'lots'"):
        FeatureCache(tmp_path)
    monkeypatch.delenv("SKTRANSFER_CACHE_MAX_BYTES")
    assert FeatureCache(tmp_path).max_bytes is None
    with pytest.raises(ValueError, match="max_bytes must be"):
        FeatureCache(tmp_path, max_bytes=-1)


def test_transform_through_an_evicting_cache_returns_correct_features(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, (300, 36, 36, 3), dtype=np.uint8)
    params = dict(TINY, precision="fp32", device="cpu", extract_batch_size=50)
    cache = FeatureCache(tmp_path / "cache", max_bytes=1024**2)
    model = PretrainedFeatures(**params, cache=cache).fit()

    first = model.transform(X)
    second = model.transform(X)  # the evicted ones are computed again

    stats = cache.stats()
    assert stats["evicted"] > 0 and stats["bytes"] <= 1024**2
    reference = uncached(model.extractor_).transform(X)[0]
    np.testing.assert_allclose(first, reference, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(second, reference, rtol=1e-4, atol=1e-4)


def test_cache_reads_stream_and_do_not_copy_the_vectors(tmp_path):
    cache = FeatureCache(tmp_path / "cache")
    keys = [f"k{i}" for i in range(1200)]
    cache.put_many("model", [(k, expected(k)) for k in keys])
    selects = []
    cache._connect().set_trace_callback(
        lambda sql: selects.append(sql) if sql.startswith("SELECT") else None
    )

    stream = cache.iter_many("model", iter(keys))
    key, vec = next(stream)

    assert len(selects) == 1  # 500 keys looked up, not all 1200
    assert not vec.flags.owndata and not vec.flags.writeable  # a view of the row
    np.testing.assert_array_equal(vec, expected(key))
    assert len(list(stream)) == len(keys) - 1
    assert len(selects) == 3
    found = cache.get_many("model", keys + keys[:10])  # repeats are harmless
    assert sorted(found) == sorted(keys)
    assert not any(v.flags.owndata for v in found.values())


# -- Ctrl-C in the middle of a fit ------------------------------------------------


def interrupt_on_batch(monkeypatch, n: int):
    """Make the body raise KeyboardInterrupt on its ``n``-th batch."""
    calls = {"n": 0}
    original = FeatureExtractor.forward

    def forward(self, batch):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(FeatureExtractor, "forward", forward)
    return calls


def test_keyboard_interrupt_in_fit_keeps_finished_batches_and_no_net(
    tmp_path, image_set, monkeypatch
):
    X, y = image_set
    cache_dir = str(tmp_path / "cache")
    clf = PretrainedImageClassifier(
        **TINY,
        cache=cache_dir,
        precompute_epochs=1,
        extract_batch_size=2,
        random_state=0,
    )
    interrupt_on_batch(monkeypatch, 3)

    with pytest.raises(KeyboardInterrupt):
        clf.fit(X, y)

    assert not hasattr(clf, "head_")
    assert not hasattr(clf, "extractor_")
    cache = FeatureCache(cache_dir)
    assert cache.stats()["entries"] == 4  # the first 2 batches of 2 images
    model_keys = [row[0] for row in _models(cache)]
    assert len(model_keys) == 1
    stored = cache.get_many(model_keys[0], [fingerprint(p) for p in X])
    assert sorted(stored) == sorted(fingerprint(p) for p in X[:4])

    monkeypatch.undo()
    counted = {"n": 0}
    original = FeatureExtractor.forward

    def counting(self, batch):
        counted["n"] += len(batch)
        return original(self, batch)

    monkeypatch.setattr(FeatureExtractor, "forward", counting)
    clf.fit(X, y)

    assert counted["n"] == len(X) - 4  # only the rest
    check_is_fitted(clf, "head_")
    assert cache.stats()["entries"] == len(X)


def test_keyboard_interrupt_in_fit_leaves_no_fitted_attribute(
    tmp_path, image_set, monkeypatch
):
    X, y = image_set
    clf = PretrainedImageClassifier(
        **TINY, cache=str(tmp_path / "cache"), precompute_epochs=1, extract_batch_size=2
    )
    interrupt_on_batch(monkeypatch, 3)

    with pytest.raises(KeyboardInterrupt):
        clf.fit(X, y)

    fitted = [k for k in vars(clf) if k.endswith("_") and not k.startswith("__")]
    assert fitted == []


def test_keyboard_interrupt_in_refit_leaves_the_fitted_model_as_it_was(
    tmp_path, image_set, monkeypatch
):
    X, y = image_set
    clf = PretrainedImageClassifier(
        **TINY, cache=None, precompute_epochs=1, extract_batch_size=2, random_state=0
    ).fit(X, y)
    before = clf.predict_proba(X)
    head = clf.head_
    interrupt_on_batch(monkeypatch, 3)

    with pytest.raises(KeyboardInterrupt):
        clf.fit(X[::-1], y[::-1])

    monkeypatch.undo()
    assert clf.head_ is head
    np.testing.assert_array_equal(clf.predict_proba(X), before)


def _models(cache: FeatureCache):
    with sqlite3.connect(cache.path) as conn:
        return conn.execute("SELECT DISTINCT model FROM features").fetchall()


# -- persistence -----------------------------------------------------------------------


def _body_bytes(clf) -> int:
    buffer = io.BytesIO()
    torch.save(clf.extractor_.backbone.body.state_dict(), buffer)
    return buffer.tell()


def test_saved_classifier_is_the_size_of_its_weights_without_data_or_cache(
    tmp_path, image_set
):
    X, y = image_set
    clf = PretrainedImageClassifier(
        **TINY, cache=None, precompute_epochs=1, random_state=0
    )
    clf.fit(X, y)
    path = tmp_path / "model.joblib"
    joblib.dump(clf, path)

    size, weights = path.stat().st_size, _body_bytes(clf)
    assert 0.9 * weights < size < 1.5 * weights, (size, weights)
    data = path.read_bytes()
    training_features = clf.extractor_.transform(X)[0]
    for i in range(len(X)):
        assert X[i].encode() not in data  # no path of a training image
        assert training_features[i].tobytes() not in data  # nor its features
    assert b"SQLite format 3" not in data

    # A cached model saves the cache's location only, not its content.
    cached = PretrainedImageClassifier(
        **TINY, cache=str(tmp_path / "cache"), precompute_epochs=1, random_state=0
    ).fit(X, y)
    cached_path = tmp_path / "cached.joblib"
    joblib.dump(cached, cached_path)
    assert FeatureCache(tmp_path / "cache").stats()["entries"] == len(X)
    assert b"SQLite format 3" not in cached_path.read_bytes()
    assert cached_path.stat().st_size < 1.5 * _body_bytes(cached)


_LOAD_AND_PREDICT = """
import sys, warnings
import joblib, numpy as np, torch
warnings.simplefilter("error", FutureWarning)  # e.g. torch.load without weights_only
clf = joblib.load(sys.argv[1])
assert clf.extractor_.device.type == "cpu", clf.extractor_.device
assert next(clf.extractor_.backbone.body.parameters()).device.type == "cpu"
np.save(sys.argv[2], clf.predict_proba(sys.argv[3:]))
"""


def test_saved_classifier_loads_and_predicts_in_a_fresh_cpu_process(
    tmp_path, image_set
):
    X, y = image_set
    clf = PretrainedImageClassifier(
        **TINY, cache=None, precompute_epochs=1, random_state=0
    )
    clf.fit(X, y)
    model_path, out = tmp_path / "model.joblib", tmp_path / "proba.npy"
    joblib.dump(clf, model_path)

    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-c", _LOAD_AND_PREDICT, str(model_path), str(out), *X],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )

    assert proc.returncode == 0, proc.stderr
    np.testing.assert_allclose(np.load(out), clf.predict_proba(X), atol=1e-5)


def test_weights_files_are_read_with_torch_load_weights_only(tmp_path, monkeypatch):
    path = tmp_path / "resnet18.pth"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    calls = []
    original = torch.load

    def recording_load(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return original(*args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    PretrainedFeatures(
        "resnet18", weights=str(path), image_size=32, cache=None, device="cpu"
    ).fit()

    assert calls == [True]
