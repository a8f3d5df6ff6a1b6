"""Hostile inputs and environments: each test is one way a user, a file or a
machine can break the package, and what must happen instead (a clear error
naming the culprit, or a warning and a working fit)."""

from __future__ import annotations

import os
import pickle
import pwd
import sqlite3
import stat
import struct
import tempfile
import threading
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from conftest import TINY, make_images
from PIL import Image, PngImagePlugin

from sktransfer import FeatureCache, PretrainedFeatures, PretrainedImageClassifier
from sktransfer._backbones import load_backbone
from sktransfer._decoding import load_image
from sktransfer._image_checks import image_fingerprints
from sktransfer._image_files import MAX_FILE_BYTES
from sktransfer.datasets import image_size_summary, load_image_csv
from sktransfer.exceptions import CacheWarning, ImageLoadError, WeightsUnavailableError

pytestmark = pytest.mark.filterwarnings("error::sktransfer.exceptions.CacheWarning")


def transformer(cache=None, **params):
    kwargs = dict(TINY, precision="fp32", device="cpu", cache=cache)
    kwargs.update(params)
    return PretrainedFeatures(**kwargs)


def solid(path: Path, colour, size=(40, 30)) -> str:
    Image.new("RGB", size, colour).save(path)
    return str(path)


# -- 1. a file replaced while its features are computed ----------------------------


def test_file_replaced_after_fingerprinting_is_cached_under_its_new_content(
    tmp_path,
):
    red = solid(tmp_path / "red.png", (200, 30, 30))
    blue = solid(tmp_path / "blue.png", (30, 30, 200))
    path = tmp_path / "photo.png"
    red_bytes, blue_bytes = Path(red).read_bytes(), Path(blue).read_bytes()
    reference = transformer(cache=None).fit()
    red_features, blue_features = reference.transform([red, blue])
    assert not np.allclose(red_features, blue_features)
    cache = str(tmp_path / "cache")
    extractor = transformer(cache=cache).fit().extractor_

    # The classifier's order of work: fingerprint every image first, compute
    # the features later. The file changes in between.
    path.write_bytes(red_bytes)
    fingerprints = image_fingerprints([str(path)], {})
    path.write_bytes(blue_bytes)
    got = extractor.transform([str(path)], fingerprints=fingerprints)[0]

    np.testing.assert_allclose(got[0], blue_features, rtol=1e-4, atol=1e-5)
    # A later process reading the cache gets each content's own features.
    later = transformer(cache=cache).fit()
    path.write_bytes(red_bytes)
    np.testing.assert_allclose(
        later.transform([str(path)])[0], red_features, rtol=1e-4, atol=1e-5
    )
    path.write_bytes(blue_bytes)
    np.testing.assert_allclose(
        later.transform([str(path)])[0], blue_features, rtol=1e-4, atol=1e-5
    )


def test_array_changed_in_place_after_fingerprinting_is_cached_under_new_pixels(
    tmp_path,
):
    rng = np.random.default_rng(0)
    first = rng.integers(0, 256, (36, 36, 3), dtype=np.uint8)
    second = rng.integers(0, 256, (36, 36, 3), dtype=np.uint8)
    reference = transformer(cache=None).fit().transform([first, second])
    cache = str(tmp_path / "cache")
    extractor = transformer(cache=cache).fit().extractor_

    image = first.copy()
    fingerprints = image_fingerprints([image], {})
    image[...] = second
    extractor.transform([image], fingerprints=fingerprints)

    again = transformer(cache=cache).fit().transform([first.copy(), second.copy()])
    np.testing.assert_allclose(again, reference, rtol=1e-4, atol=1e-5)


def test_duplicate_of_a_replaced_file_gets_the_content_it_names(tmp_path):
    red = solid(tmp_path / "red.png", (200, 30, 30))
    blue = solid(tmp_path / "blue.png", (30, 30, 200))
    reference = transformer(cache=None).fit().transform([red, blue])
    changing = tmp_path / "changing.png"
    changing.write_bytes(Path(red).read_bytes())
    X = [str(changing), red]  # same content when fingerprinted
    fingerprints = image_fingerprints(X, {})
    changing.write_bytes(Path(blue).read_bytes())

    extractor = transformer(cache=str(tmp_path / "cache")).fit().extractor_
    got = extractor.transform(X, fingerprints=fingerprints)[0]

    np.testing.assert_allclose(got, reference[::-1], rtol=1e-4, atol=1e-5)


# -- 3. non-finite features are never cached ---------------------------------------


def test_zero_std_is_refused_before_loading_naming_the_key(tmp_path):
    cache = tmp_path / "cache"
    model = transformer(cache=str(cache), preprocessing={"std": (0, 0, 0)})

    with pytest.raises(ValueError, match=r"preprocessing\['std'\].*divides by zero"):
        model.fit()
    assert not cache.exists()


def test_features_that_overflow_raise_naming_the_weights_and_cache_nothing(
    tmp_path,
):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        state = torchvision.models.resnet18().state_dict()
    state["layer4.0.bn2.bias"].fill_(3e38)  # finite, but the next conv overflows
    weights = tmp_path / "overflowing.pth"
    torch.save(state, weights)
    X, _ = make_images(tmp_path / "images", n_per_class=2)
    cache = str(tmp_path / "cache")
    model = transformer(weights=str(weights), cache=cache).fit()

    with pytest.raises(ValueError, match="non-finite features") as info:
        model.transform(X)

    message = str(info.value)
    assert str(weights) in message and "std" in message
    assert "none of them was cached" in message
    assert FeatureCache(cache).stats()["entries"] == 0


def test_weights_file_holding_nan_is_refused_naming_the_file(tmp_path):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = torchvision.models.resnet18()
    state = model.state_dict()
    state["layer2.0.conv1.weight"][0, 0, 0, 0] = float("nan")
    path = tmp_path / "diverged.pth"
    torch.save(state, path)

    with pytest.raises(ValueError, match="non-finite") as info:
        transformer(weights=str(path), cache=str(tmp_path / "cache")).fit()
    assert str(path) in str(info.value)
    assert "layer2.0.conv1.weight" in str(info.value)


# -- 5. empty images ---------------------------------------------------------------


def test_array_of_empty_images_is_refused(tmp_path):
    X = np.zeros((20, 0, 0, 3), np.uint8)
    y = np.array([0, 1] * 10)
    with pytest.raises(ValueError, match=r"\(20, 0, 0, 3\).*empty"):
        transformer().fit().transform(X)
    with pytest.raises(ValueError, match="empty"):
        PretrainedImageClassifier(**TINY, cache=None).fit(X, y)


@pytest.mark.parametrize(
    "empty",
    [Image.new("RGB", (0, 12)), np.zeros((12, 0, 3), np.uint8)],
    ids=["pil", "array"],
)
def test_empty_image_in_a_list_is_refused_naming_its_index(empty):
    good = np.zeros((20, 20, 3), np.uint8)
    with pytest.raises(ImageLoadError, match=r"(?s)1 of 2 images.*X\[1\].*empty"):
        transformer().fit().transform([good, empty])


# -- 6. registry weights in torch's hub cache --------------------------------------


class _Payload:
    """Unpickling this creates ``marker``: code that runs on load."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty torch hub directory; downloads fail."""
    torch_home = tmp_path / "torch-home"
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    torch.hub.set_dir(str(torch_home / "hub"))

    def no_network(*args, **kwargs):
        raise OSError("network disabled in tests")

    monkeypatch.setattr(torch.hub, "urlopen", no_network)
    monkeypatch.setattr("urllib.request.urlopen", no_network)
    checkpoints = torch_home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    return checkpoints


def test_poisoned_file_in_torch_hub_cache_is_refused_and_never_unpickled(hub, tmp_path):
    marker = tmp_path / "code-ran"
    member = torchvision.models.ResNet18_Weights.DEFAULT
    poisoned = hub / Path(member.url).name  # resnet18-f37072fd.pth
    torch.save({"conv1.weight": _Payload(marker)}, poisoned)

    with pytest.raises(WeightsUnavailableError) as info:
        load_backbone("resnet18", "DEFAULT")

    message = str(info.value)
    assert str(poisoned) in message and "f37072fd" in message
    assert "Delete it" in message
    assert not marker.exists()


def test_file_with_the_published_hash_is_still_read_without_running_code(
    hub, tmp_path, monkeypatch
):
    import hashlib

    marker = tmp_path / "code-ran"
    member = torchvision.models.ResNet18_Weights.DEFAULT
    draft = hub / "draft.pth"
    torch.save({"conv1.weight": _Payload(marker)}, draft)
    prefix = hashlib.sha256(draft.read_bytes()).hexdigest()[:8]
    published = draft.rename(hub / f"resnet18-{prefix}.pth")
    monkeypatch.setattr(member.value, "url", f"https://x.invalid/{published.name}")

    with pytest.raises(ValueError, match="weights_only=True") as info:
        load_backbone("resnet18", "DEFAULT")

    assert str(published) in str(info.value)
    assert not marker.exists()


def test_timm_url_weights_in_the_hub_cache_are_checked_against_their_hash(hub):
    timm = pytest.importorskip("timm")
    cfg = timm.models.get_pretrained_cfg("gcvit_xxtiny")
    if cfg is None or not cfg.url or cfg.hf_hub_id:
        pytest.skip("this timm release loads gcvit_xxtiny from elsewhere")
    poisoned = hub / Path(cfg.url).name
    poisoned.write_bytes(b"not the published file")

    with pytest.raises(WeightsUnavailableError, match="Delete it") as info:
        load_backbone("timm:gcvit_xxtiny", "DEFAULT")
    assert str(poisoned) in str(info.value)


# -- 7. path traversal in a CSV ------------------------------------------------------


def test_csv_ids_outside_the_image_folder_are_refused_naming_their_lines(tmp_path):
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    solid(images / "ok.png", (1, 2, 3))
    solid(tmp_path / "secret.png", (4, 5, 6))
    csv = tmp_path / "labels.csv"
    csv.write_text(
        "id,label\n"
        "ok.png,a\n"
        "/etc/passwd,b\n"
        "../../../../etc/hostname,a\n"
        "sub/../../secret.png,b\n"
        "sub/../ok.png,a\n"
    )

    with pytest.raises(ValueError, match="outside") as info:
        load_image_csv(csv, images)

    message = str(info.value)
    assert "lines 3, 4, 5" in message and "allow_outside=True" in message
    assert "'/etc/passwd'" in message


def test_csv_ids_outside_the_image_folder_are_read_when_allowed(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    secret = solid(tmp_path / "secret.png", (4, 5, 6))
    csv = tmp_path / "labels.csv"
    csv.write_text(f"id,label\n../secret.png,a\n{secret},b\n")

    X, y = load_image_csv(csv, images, allow_outside=True)

    assert [os.path.realpath(p) for p in X] == [os.path.realpath(secret)] * 2
    assert list(y) == ["a", "b"]


# -- 8. the cache never follows links, and the default one is private ---------------


def _foreign_database(path: Path) -> bytes:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE accounts (name TEXT)")
    conn.execute("INSERT INTO accounts VALUES ('alice')")
    conn.commit()
    conn.close()
    return path.read_bytes()


@pytest.mark.filterwarnings("default::sktransfer.exceptions.CacheWarning")
def test_symlinked_database_is_not_opened_and_the_foreign_file_is_untouched(
    tmp_path, image_set, forward_count
):
    X, _ = image_set
    foreign = tmp_path / "other-program.sqlite"
    before = _foreign_database(foreign)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / FeatureCache(cache).path.name).symlink_to(foreign)

    with pytest.warns(CacheWarning, match="symbolic link"):
        features = transformer(cache=str(cache)).fit().transform(X)

    assert features.shape == (len(X), 512) and forward_count["n"] == len(X)
    assert foreign.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "cache",
        "images",
        "other-program.sqlite",
    ]
    conn = sqlite3.connect(foreign)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


@pytest.mark.filterwarnings("default::sktransfer.exceptions.CacheWarning")
@pytest.mark.parametrize("link", ["", "-wal", "-shm"])
def test_dangling_symlinks_never_create_files_outside_the_cache(tmp_path, link):
    cache = tmp_path / "cache"
    cache.mkdir()
    target = tmp_path / "elsewhere" / "created-by-mistake"
    target.parent.mkdir()
    name = FeatureCache(cache).path.name + link
    (cache / name).symlink_to(target)

    with pytest.warns(CacheWarning, match="symbolic link"):
        transformer(cache=str(cache)).fit().transform([np.zeros((8, 8, 3), np.uint8)])

    assert list(target.parent.iterdir()) == []


@pytest.mark.filterwarnings("default::sktransfer.exceptions.CacheWarning")
def test_hard_linked_database_is_not_opened(tmp_path):
    foreign = tmp_path / "other-program.sqlite"
    before = _foreign_database(foreign)
    cache = tmp_path / "cache"
    cache.mkdir()
    os.link(foreign, cache / FeatureCache(cache).path.name)

    with pytest.warns(CacheWarning, match="hard link"):
        transformer(cache=str(cache)).fit().transform([np.zeros((8, 8, 3), np.uint8)])
    assert foreign.read_bytes() == before


def _modes(folder: Path) -> dict:
    return {
        str(p.relative_to(folder)): stat.S_IMODE(p.stat().st_mode)
        for p in [folder, *folder.rglob("*")]
    }


@pytest.fixture
def umask_022():
    before = os.umask(0o022)
    yield
    os.umask(before)


def test_default_cache_folder_and_files_are_private_to_the_user(
    tmp_path, monkeypatch, umask_022
):
    monkeypatch.delenv("SKTRANSFER_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    model = transformer(cache="auto").fit()
    model.transform([np.zeros((8, 8, 3), np.uint8)])
    folder = tmp_path / "xdg" / "sktransfer"

    modes = _modes(folder)
    assert modes.pop(".") == 0o700 and modes.pop("locks") == 0o700
    assert any(name.endswith("-wal") for name in modes)
    assert set(modes.values()) == {0o600}, modes


def test_cache_folder_chosen_by_the_user_keeps_the_umask_permissions(
    tmp_path, umask_022
):
    folder = tmp_path / "team-cache"
    transformer(cache=str(folder)).fit().transform([np.zeros((8, 8, 3), np.uint8)])

    modes = _modes(folder)
    assert modes.pop(".") == 0o755 and modes.pop("locks") == 0o755
    assert set(modes.values()) == {0o644}, modes


# -- 9. no usable home directory --------------------------------------------------


@pytest.fixture
def no_home(tmp_path, monkeypatch):
    """A process with no $HOME and no passwd entry (``docker --user 1234``),
    its temporary folder inside ``tmp_path``."""
    monkeypatch.delenv("SKTRANSFER_CACHE")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.delenv("HOME", raising=False)

    def no_entry(uid):
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    monkeypatch.setattr(pwd, "getpwuid", no_entry)
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    with pytest.raises(RuntimeError):
        Path.home()
    return temp


@pytest.mark.filterwarnings("default::sktransfer.exceptions.CacheWarning")
def test_no_home_directory_falls_back_to_a_private_temporary_cache(
    no_home, image_set, forward_count
):
    X, y = image_set

    with pytest.warns(CacheWarning, match="no home directory") as info:
        clf = PretrainedImageClassifier(**TINY, precompute_epochs=1, random_state=0)
        clf.fit(X, y)
    assert forward_count["n"] == len(X)
    folder = no_home / f"sktransfer-cache-{os.getuid()}"
    assert str(folder) in str(info[0].message)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700

    with pytest.warns(CacheWarning):
        PretrainedImageClassifier(**TINY, precompute_epochs=1).fit(X, y)
    assert forward_count["n"] == len(X)  # the second fit read the cache
    assert list(Path.cwd().iterdir()) == []


@pytest.mark.filterwarnings("default::sktransfer.exceptions.CacheWarning")
@pytest.mark.skipif(
    not hasattr(os, "getuid") or os.getuid() != 0, reason="chown needs root"
)
def test_temporary_cache_folder_of_another_user_is_not_used(no_home):
    folder = no_home / f"sktransfer-cache-{os.getuid()}"
    folder.mkdir(mode=0o777)
    os.chown(folder, 4242, -1)

    with pytest.warns(CacheWarning) as info:
        transformer(cache="auto").fit().transform([np.zeros((8, 8, 3), np.uint8)])

    assert any("another user" in str(w.message) for w in info)
    assert list(folder.iterdir()) == []


@pytest.mark.filterwarnings("default::sktransfer.exceptions.CacheWarning")
@pytest.mark.parametrize("home", ["", "relative/home"])
def test_empty_or_relative_HOME_falls_back_with_a_warning(no_home, monkeypatch, home):
    monkeypatch.setenv("HOME", home)

    with pytest.warns(CacheWarning, match=r"\$HOME=.*not an absolute path"):
        transformer(cache="auto").fit().transform([np.zeros((8, 8, 3), np.uint8)])

    assert (no_home / f"sktransfer-cache-{os.getuid()}").is_dir()
    assert list(Path.cwd().iterdir()) == []


@pytest.mark.filterwarnings("default::sktransfer.exceptions.CacheWarning")
def test_relative_XDG_CACHE_HOME_is_ignored_with_a_warning(tmp_path, monkeypatch):
    monkeypatch.delenv("SKTRANSFER_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", "relative-cache")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)

    with pytest.warns(CacheWarning, match="XDG_CACHE_HOME='relative-cache'"):
        transformer(cache="auto").fit().transform([np.zeros((8, 8, 3), np.uint8)])

    assert (tmp_path / "home" / ".cache" / "sktransfer").is_dir()
    assert list(work.iterdir()) == []


def test_empty_cache_path_is_refused_before_any_work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="cache='' is an empty path.*None"):
        transformer(cache="").fit()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.filterwarnings("default::sktransfer.exceptions.CacheWarning")
def test_cache_under_an_unknown_users_home_computes_without_caching(
    tmp_path, monkeypatch, forward_count
):
    monkeypatch.chdir(tmp_path)
    X = [np.full((8, 8, 3), 7, np.uint8)]

    with pytest.warns(CacheWarning, match="'~nosuchuser'.*no home directory"):
        model = transformer(cache="~nosuchuser/x").fit()
        model.transform(X)
        model.transform(X)

    assert forward_count["n"] == 2
    assert list(tmp_path.iterdir()) == []


# -- 10. only regular files, of a bounded size ---------------------------------------


def _transform_in_thread(paths):
    """Run transform in a thread: a hang fails the test instead of blocking."""
    result = {}

    def run():
        try:
            transformer().fit().transform(paths)
        except Exception as exc:
            result["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive(), "transform hangs"
    return result.get("error")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_fifo_is_refused_at_once_naming_it(tmp_path):
    fifo = tmp_path / "photo.jpg"
    os.mkfifo(fifo)

    error = _transform_in_thread([str(fifo)])

    assert isinstance(error, ImageLoadError)
    assert str(fifo) in str(error) and "FIFO" in str(error)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_image_size_summary_lists_a_fifo_as_unreadable_without_waiting(tmp_path):
    fifo = tmp_path / "photo.jpg"
    os.mkfifo(fifo)
    good = solid(tmp_path / "good.png", (1, 2, 3))
    result = {}
    thread = threading.Thread(
        target=lambda: result.update(s=image_size_summary([str(fifo), good])),
        daemon=True,
    )
    thread.start()
    thread.join(timeout=60)

    assert not thread.is_alive(), "image_size_summary hangs"
    assert result["s"].n_readable == 1
    assert "FIFO" in result["s"].unreadable[0][1]


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
def test_endless_device_is_refused_at_once():
    error = _transform_in_thread(["/dev/zero"])

    assert isinstance(error, ImageLoadError)
    assert "'/dev/zero' is a character device" in str(error)


def test_file_larger_than_any_image_is_refused_naming_its_size(tmp_path):
    huge = tmp_path / "huge.png"
    with open(huge, "wb") as f:
        f.truncate(MAX_FILE_BYTES + 1)  # sparse: takes no disk space

    with pytest.raises(ImageLoadError, match=f"{MAX_FILE_BYTES + 1:,} bytes"):
        load_image(str(huge))


# -- 12. messages that name the culprit -------------------------------------------


@pytest.mark.parametrize(
    "device, words",
    [
        ("banana", "device='banana' is not a device name"),
        ("meta", "device='meta' holds no data"),
        ("cuda:99", "device='cuda:99'"),
    ],
)
def test_bad_device_is_refused_naming_it_and_what_is_available(device, words):
    with pytest.raises(ValueError, match=words) as info:
        transformer(device=device).fit()
    assert "available here: 'auto', 'cpu'" in str(info.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_on_a_machine_without_it_is_refused_clearly():
    with pytest.raises(ValueError, match="device='cuda': this machine has no CUDA"):
        transformer(device="cuda").fit()


@pytest.mark.parametrize(
    "preprocessing, words",
    [
        ({"crop_size": 0}, r"preprocessing\['crop_size'\] must be a whole number"),
        ({"resize_size": 2.5}, r"preprocessing\['resize_size'\]"),
        ({"mean": "abc"}, r"preprocessing\['mean'\] must be three numbers"),
        ({"mean": (0.5,)}, r"preprocessing\['mean'\].*got 1 value"),
        ({"std": (0.2, float("nan"), 0.2)}, r"preprocessing\['std'\].*non-finite"),
        ({"mean": (123.7, 116.3, 103.5)}, r"preprocessing\['mean'\].*divide by 255"),
        ({"interpolation": "cubic"}, r"preprocessing\['interpolation'\].*'bicubic'"),
        ({"resize_mode": "zoom"}, r"preprocessing\['resize_mode'\].*'squish'"),
        ({"crop": 200}, r"unknown key\(s\) 'crop'"),
        ({"interpolation": np.str_("x")}, r"got 'x'\."),
    ],
)
def test_bad_preprocessing_value_is_refused_naming_the_key(preprocessing, words):
    with pytest.raises(ValueError, match=words):
        transformer(preprocessing=preprocessing).fit()


def test_interpolation_name_is_case_insensitive(tmp_path, forward_count):
    cache = str(tmp_path / "cache")
    X = [np.full((20, 20, 3), 9, np.uint8)]
    lower = transformer(cache=cache, preprocessing={"interpolation": "bilinear"})
    upper = transformer(cache=cache, preprocessing={"interpolation": "BILINEAR"})

    np.testing.assert_array_equal(lower.fit().transform(X), upper.fit().transform(X))
    assert forward_count["n"] == 1  # one setting, one cache entry


def test_column_of_paths_asks_to_ravel():
    with pytest.raises(ValueError, match=r"shape \(2, 1\).*X\.ravel\(\)"):
        transformer().fit().transform(np.array([["a.jpg"], ["b.jpg"]]))


def test_uint8_tensor_is_accepted_like_the_numpy_array():
    X = np.random.default_rng(0).integers(0, 256, (3, 20, 20, 3), dtype=np.uint8)
    model = transformer().fit()

    np.testing.assert_array_equal(
        model.transform(torch.from_numpy(X)), model.transform(X)
    )


def test_channels_first_tensor_and_arrays_say_how_to_permute(forward_count):
    model = transformer().fit()
    with pytest.raises(ValueError, match=r"X\.permute\(0, 2, 3, 1\)"):
        model.transform(torch.zeros((2, 3, 20, 20), dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"X\[1\].*np\.transpose\(x, \(1, 2, 0\)\)"):
        model.transform(
            [np.zeros((20, 20, 3), np.uint8), np.zeros((3, 20, 20), np.uint8)]
        )
    assert forward_count["n"] == 0  # refused before any work


def test_cache_limit_too_small_to_keep_anything_is_refused(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="max_bytes=500,000 bytes.*'1M'"):
        FeatureCache(tmp_path, max_bytes=500_000)
    monkeypatch.setenv("SKTRANSFER_CACHE_MAX_BYTES", "100K")
    with pytest.raises(ValueError, match="SKTRANSFER_CACHE_MAX_BYTES=102,400"):
        FeatureCache(tmp_path)
    monkeypatch.delenv("SKTRANSFER_CACHE_MAX_BYTES")
    assert FeatureCache(tmp_path, max_bytes="1M").max_bytes == 1024**2


def test_png_with_a_5_MB_text_chunk_decodes(tmp_path):
    path = tmp_path / "annotated.png"
    info = PngImagePlugin.PngInfo()
    info.add_text("notes", "x" * 5_000_000, zip=True)
    Image.new("RGB", (30, 20), (10, 200, 30)).save(path, pnginfo=info)

    img = load_image(str(path))

    assert img.size == (30, 20) and img.getpixel((5, 5)) == (10, 200, 30)


def _png_header_only(path: Path, width: int, height: int, colour_type: int) -> None:
    """A PNG that claims a size (its pixels are never reached)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")
    )


def test_decoded_memory_is_bounded_by_bytes_per_pixel_not_pixels_alone(tmp_path):
    rgba = tmp_path / "rgba.png"
    _png_header_only(rgba, 9400, 9400, colour_type=6)  # 88 megapixels RGBA

    with pytest.raises(ImageLoadError, match=r"9400x9400 pixels in mode RGBA.*353 MB"):
        load_image(str(rgba))


def test_bad_image_message_mentions_cached_others_only_when_there_are_some(
    tmp_path,
):
    missing = str(tmp_path / "missing.jpg")
    good = solid(tmp_path / "good.png", (1, 2, 3))
    model = transformer(cache=str(tmp_path / "cache")).fit()

    with pytest.raises(ImageLoadError) as alone:
        model.transform([missing])
    with pytest.raises(ImageLoadError) as with_others:
        model.transform([missing, good, good.replace("good", "good")])

    assert str(alone.value).startswith("1 of 1 images could not be used:")
    assert "cached" not in str(alone.value)
    assert "(the features of the other 2 are cached)" in str(with_others.value)
    with pytest.raises(ImageLoadError) as uncached:
        transformer(cache=None).fit().transform([missing, good])
    assert "cached" not in str(uncached.value)


def test_numpy_strings_are_shown_as_plain_strings_in_messages(tmp_path):
    missing = np.array([str(tmp_path / "cats.jpg")])
    with pytest.raises(ImageLoadError) as info:
        transformer().fit().transform(list(missing))
    assert f"'{tmp_path / 'cats.jpg'}'" in str(info.value)
    assert "np.str_" not in str(info.value)


# -- the renamed parameter -------------------------------------------------------------


def test_extract_batch_size_is_the_images_per_forward_pass(monkeypatch):
    from sktransfer._extractor import FeatureExtractor

    sizes = []
    original = FeatureExtractor.forward

    def recording(self, batch):
        sizes.append(len(batch))
        return original(self, batch)

    monkeypatch.setattr(FeatureExtractor, "forward", recording)
    X = [np.full((20, 20, 3), i, np.uint8) for i in range(5)]
    model = transformer(extract_batch_size=2).fit()
    assert "batch_size" not in model.get_params()

    model.transform(X)

    assert sizes == [2, 2, 1]
    assert pickle.loads(pickle.dumps(model)).extract_batch_size == 2


# -- found by a hostile pass after the fixes above ------------------------------


@pytest.mark.parametrize(
    "X, words",
    [
        ({"a.jpg", "b.jpg"}, "got a set"),
        ({"a.jpg": 0}, "got a dict"),
        (torch.zeros((1, 8, 8, 3), dtype=torch.uint8, device="meta"), "device meta"),
    ],
    ids=["set", "dict", "meta-tensor"],
)
def test_unordered_or_unreadable_X_is_refused(X, words):
    with pytest.raises(ValueError, match=words):
        transformer().fit().transform(X)


def test_closed_pil_image_is_reported_as_a_bad_image_naming_it(tmp_path):
    path = solid(tmp_path / "a.png", (1, 2, 3))
    closed = Image.open(path)
    closed.close()

    with pytest.raises(ImageLoadError, match=r"(?s)1 of 2 images.*X\[1\].*closed"):
        transformer().fit().transform([np.zeros((8, 8, 3), np.uint8), closed])


def test_device_names_are_case_insensitive():
    assert transformer(device="CPU").fit().extractor_.device == torch.device("cpu")


@pytest.mark.parametrize(
    "params, words",
    [
        (dict(image_size=100_000), "image_size"),
        (dict(image_size=None, preprocessing={"crop_size": 100_000}), "<= 4096"),
        (dict(preprocessing={"resize_size": True}), "resize_size"),
    ],
)
def test_sizes_that_cannot_be_rendered_are_refused(params, words):
    with pytest.raises(ValueError, match=words):
        transformer(**params).fit()


@pytest.mark.filterwarnings("default::sktransfer.exceptions.CacheWarning")
def test_SKTRANSFER_CACHE_under_an_empty_HOME_is_not_read_as_the_root(
    no_home, monkeypatch
):
    monkeypatch.setenv("HOME", "")
    monkeypatch.setenv("SKTRANSFER_CACHE", "~/features")

    with pytest.warns(CacheWarning, match=r"SKTRANSFER_CACHE='~/features'"):
        transformer(cache="auto").fit().transform([np.zeros((8, 8, 3), np.uint8)])

    assert (no_home / f"sktransfer-cache-{os.getuid()}").is_dir()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_weights_and_csv_that_are_fifos_are_named_as_such(tmp_path):
    fifo = tmp_path / "weights.pth"
    os.mkfifo(fifo)
    with pytest.raises(FileNotFoundError, match="is not a regular file"):
        transformer(weights=str(fifo)).fit()
    with pytest.raises(FileNotFoundError, match="CSV file .* is not a regular file"):
        load_image_csv(fifo, tmp_path)


def test_float_image_of_nan_only_gives_finite_features_without_warnings():
    nan = Image.fromarray(np.full((20, 20), np.nan, np.float32))
    model = transformer().fit()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        features = model.transform([nan])
    assert np.isfinite(features).all()


def test_oversized_array_is_refused_before_any_copy_of_its_pixels():
    import tracemalloc

    huge = np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (17000, 17000, 3))
    bad = {}
    tracemalloc.start()
    try:
        fingerprints = image_fingerprints([np.zeros((8, 8, 3), np.uint8), huge], bad)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert fingerprints[1] is None
    assert "X[1]" in bad[1] and "289,000,000 pixels" in bad[1]
    assert peak < 10 * 1024**2  # the 867 MB the pixels would take were never made
