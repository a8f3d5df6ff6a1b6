"""Dask: grid search and cross-validation on a distributed cluster, features
of a collection as a dask array, and the network-file-system check."""

from __future__ import annotations

import importlib
import logging

import numpy as np
import pytest

from sktransfer import FeatureCache, PretrainedFeatures
from sktransfer._mounts import network_filesystem, warn_if_network_filesystem
from sktransfer.dask import dask_features, worker_stats
from sktransfer.exceptions import CacheWarning

distributed = pytest.importorskip("distributed")
da = pytest.importorskip("dask.array")
joblib = pytest.importorskip("joblib")

#: random-init MobileNetV2 at 32 px: milliseconds per image, 1,280 features
SMALL = dict(backbone="mobilenet_v2", weights=None, image_size=32, precision="fp32")


@pytest.fixture(scope="module")
def client():
    """Two worker processes, one thread each, with sktransfer imported."""
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=logging.ERROR,
    )
    client = distributed.Client(cluster, set_as_default=False)
    client.run(importlib.import_module, "sktransfer._features")
    yield client
    client.close()
    cluster.close()


@pytest.fixture(scope="module")
def reference(images):
    """Features of the 12 test images computed in this process, no cache."""
    paths, _ = images
    return PretrainedFeatures(**SMALL, cache=None).fit().transform(paths)


def test_grid_search_under_dask_backend_runs_each_image_through_body_once(
    client, images, tmp_path, forward_count
):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, cross_val_score
    from sklearn.pipeline import make_pipeline

    paths, labels = images
    cache = str(tmp_path / "cache")
    pipe = make_pipeline(
        PretrainedFeatures(**SMALL, cache=cache), LogisticRegression(max_iter=200)
    )
    grid = GridSearchCV(pipe, {"logisticregression__C": [0.1, 1.0]}, cv=3)
    with joblib.parallel_backend("dask", client=client):
        grid.fit(paths, labels)
    # 2 candidates x 3 folds fitted on the workers; refit here reads the cache
    assert len(grid.cv_results_["mean_test_score"]) == 2
    assert FeatureCache(cache).stats()["computed"] == len(paths)
    assert forward_count["n"] == 0

    with joblib.parallel_backend("dask", client=client):
        scores = cross_val_score(pipe, paths, labels, cv=3)
    assert scores.shape == (3,) and np.all((scores >= 0) & (scores <= 1))
    assert FeatureCache(cache).stats()["computed"] == len(paths)
    assert forward_count["n"] == 0


def test_dask_features_equal_single_process_and_load_body_once_per_worker(
    client, images, tmp_path, reference, forward_count
):
    paths, _ = images
    before = client.run(worker_stats)
    cache = str(tmp_path / "cache")
    features = dask_features(
        PretrainedFeatures(**SMALL, cache=cache), paths, npartitions=6
    )
    assert isinstance(features, da.Array)
    assert features.shape == (12, 1280) and features.dtype == np.float32
    assert features.chunks == ((2,) * 6, (1280,))
    assert forward_count["n"] == 0  # lazy: nothing computed yet

    result = features.compute(scheduler=client)
    np.testing.assert_allclose(result, reference, rtol=1e-5, atol=1e-5)
    assert forward_count["n"] == 0  # all on the workers
    assert FeatureCache(cache).stats()["computed"] == len(paths)
    after = client.run(worker_stats)
    loads = [after[w]["bodies_loaded"] - before[w]["bodies_loaded"] for w in after]
    parts = [after[w]["partitions"] - before[w]["partitions"] for w in after]
    assert sum(parts) == 6
    assert all(n <= 1 for n in loads) and sum(loads) >= 1

    # a second pass reads the workers' cache: no new forward pass anywhere
    again = dask_features(
        PretrainedFeatures(**SMALL, cache=cache), paths, npartitions=3
    )
    np.testing.assert_array_equal(again.compute(scheduler=client), result)
    assert FeatureCache(cache).stats()["computed"] == len(paths)


def test_dask_bag_array_and_dataframe_column_give_the_same_features(
    client, images, cache_dir, reference
):
    dd = pytest.importorskip("dask.dataframe")
    pd = pytest.importorskip("pandas")
    bag = pytest.importorskip("dask.bag")
    paths, _ = images
    params = dict(SMALL, cache=cache_dir)  # a dict of parameters works too
    column = dd.from_pandas(pd.DataFrame({"path": paths}), npartitions=2)["path"]
    inputs = {
        "bag": bag.from_sequence(paths, npartitions=3),
        "array": da.from_array(np.array(paths, dtype=object), chunks=5),
        "column": column,
    }
    chunks = {"bag": (4, 4, 4), "array": (5, 5, 2), "column": (6, 6)}
    for kind, collection in inputs.items():
        features = dask_features(params, collection)
        assert features.chunks[0] == chunks[kind], kind
        np.testing.assert_allclose(
            features.compute(scheduler=client), reference, rtol=1e-5, atol=1e-5
        )


def test_progress_true_persists_on_the_client_and_shows_distributed_progress(
    client, images, cache_dir, reference, capsys
):
    paths, _ = images
    with client.as_current():
        features = dask_features(
            PretrainedFeatures(**SMALL, cache=cache_dir), paths, progress=True
        )
    assert "100% Completed" in capsys.readouterr().out
    assert all(f.status == "finished" for f in client.futures_of(features))
    np.testing.assert_allclose(
        features.compute(scheduler=client), reference, rtol=1e-5, atol=1e-5
    )


def test_fitted_transformer_gives_its_feature_size_without_a_cluster(images):
    paths, _ = images
    fitted = PretrainedFeatures(**SMALL, cache=None).fit()
    features = dask_features(fitted, paths, partition_size=5)
    assert features.shape == (12, fitted.n_features_out_)
    assert features.chunks[0] == (5, 5, 2)
    # without a distributed client, dask's local scheduler computes it
    np.testing.assert_allclose(
        features.compute(scheduler="sync"), fitted.transform(paths), atol=1e-5
    )


def test_bad_inputs_fail_before_any_task_with_the_culprit_named(images):
    from sktransfer.exceptions import InvalidParameterError

    paths, _ = images
    with pytest.raises(ValueError, match="needs image paths"):
        dask_features(PretrainedFeatures(**SMALL), np.zeros((2, 8, 8, 3), np.uint8))
    with pytest.raises(TypeError, match=r"\['colour'\]"):
        dask_features(dict(SMALL, colour="red"), paths)
    with pytest.raises(InvalidParameterError, match="image_size"):
        dask_features(dict(SMALL, image_size=3), paths)
    with pytest.raises(ValueError, match="repartition"):
        dask_features(
            SMALL, da.from_array(np.array(paths, dtype=object), chunks=4), npartitions=2
        )
    with pytest.raises(TypeError, match="PretrainedFeatures"):
        dask_features("mobilenet_v2", paths)
    with pytest.raises(ValueError, match="unknown backbone"):
        dask_features(dict(SMALL, backbone="mobilenet_v9"), paths)


def test_progress_without_a_client_says_how_to_start_one(client, images):
    paths, _ = images  # the module's client is not the default one
    with pytest.raises(ValueError, match="distributed.Client"):
        dask_features(SMALL, paths, progress=True)


# --- network file systems ----------------------------------------------------


@pytest.fixture
def mounts(tmp_path):
    """A mount table with an NFS share, an sshfs mount and a local disk."""
    share = tmp_path / "share"
    remote = tmp_path / "with space"
    local = tmp_path / "local"
    for d in (share, remote, local):
        d.mkdir()
    escaped = str(remote).replace(" ", "\\040")
    table = tmp_path / "mounts"
    table.write_text(
        "/dev/sda1 / ext4 rw,relatime 0 0\n"
        f"server:/export {share} nfs4 rw,relatime,vers=4.2 0 0\n"
        f"me@host:/data {escaped} fuse.sshfs rw,nosuid 0 0\n"
        f"/dev/sdb1 {local} xfs rw 0 0\n"
    )
    return table, share, remote, local


def test_network_filesystem_finds_the_mount_holding_a_path(mounts):
    table, share, remote, local = mounts
    # the cache folder need not exist yet: its nearest parent is checked
    assert network_filesystem(share / "cache" / "sub", table) == "nfs4"
    assert network_filesystem(remote / "cache", table) == "fuse.sshfs"
    assert network_filesystem(local / "cache", table) is None
    assert network_filesystem(share.parent / "elsewhere", table) is None
    assert network_filesystem(share, tmp_missing := share / "no-table") is None
    assert not tmp_missing.exists()


def test_local_folders_of_this_machine_are_not_network(tmp_path):
    assert network_filesystem(tmp_path) is None


def test_cache_on_network_filesystem_warns_with_the_fix(mounts):
    table, share, _, local = mounts
    with pytest.warns(CacheWarning, match=r"network file system \(nfs4\).*local"):
        assert warn_if_network_filesystem(share / "cache", table) == "nfs4"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert warn_if_network_filesystem(local / "cache", table) is None


def test_dask_features_warns_when_this_machine_sees_the_cache_on_nfs(
    mounts, images, monkeypatch
):
    import sktransfer._mounts

    table, share, _, local = mounts
    paths, _ = images
    monkeypatch.setattr(sktransfer._mounts, "MOUNT_TABLE", str(table))
    with pytest.warns(CacheWarning, match=r"nfs4"):
        dask_features(dict(SMALL, cache=str(share / "cache")), paths)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dask_features(dict(SMALL, cache=str(local / "cache")), paths)
        dask_features(dict(SMALL, cache=None), paths)


def test_a_bad_photo_fails_its_partition_by_name_and_the_rest_stay_cached(
    images, tmp_path
):
    from sktransfer.exceptions import ImageLoadError

    paths, _ = images
    bad = tmp_path / "notes.jpg"
    bad.write_text("not a photo")
    cache = str(tmp_path / "cache")
    features = dask_features(dict(SMALL, cache=cache), [*paths, str(bad)])
    with pytest.raises(ImageLoadError, match="notes.jpg"):
        features.compute(scheduler="sync")
    assert FeatureCache(cache).stats()["entries"] == len(paths)
