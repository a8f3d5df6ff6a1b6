"""Hostile cases for decoding, image folders and weights names.

A path, ``Image.open(path)`` and the photo's pixels must give the same
features; folder loaders must not turn OS debris or a split layout into
classes; a registry weights name must not be taken for a same-named folder.
"""

from __future__ import annotations

import io
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY
from PIL import Image, ImageOps

from sktransfer import PretrainedFeatures
from sktransfer.datasets import image_size_summary, load_image_csv, load_image_folder
from sktransfer.exceptions import ImageLoadError, WeightsUnavailableError


def _photo(width=600, height=400, seed=0) -> np.ndarray:
    """A smooth random picture: distinct features in every orientation."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(height // 40 + 1, width // 40 + 1, 3))
    big = Image.fromarray(small.astype(np.uint8)).resize(
        (width, height), Image.Resampling.BICUBIC
    )
    return np.asarray(big)


def _jpeg(path: Path, orientation=1, width=600, height=400) -> Path:
    exif = Image.Exif()
    if orientation != 1:
        exif[0x0112] = orientation
    Image.fromarray(_photo(width, height)).save(path, quality=90, exif=exif)
    return path


def _features(X, image_size=32, cache=None):
    params = dict(TINY, image_size=image_size)
    return PretrainedFeatures(**params, cache=cache).fit().transform(X)


# -- EXIF orientation and reduced-scale decoding of PIL images -----------------


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("image_size", [32, 64])
def test_a_path_and_image_open_give_the_same_features_in_every_orientation(
    tmp_path, orientation, image_size
):
    # 600 x 400: at image_size 64 the path is decoded at a quarter scale
    path = _jpeg(tmp_path / f"o{orientation}.jpg", orientation)

    from_path = _features([str(path)], image_size)
    from_pil = _features([Image.open(path)], image_size)
    from_upload = _features([Image.open(io.BytesIO(path.read_bytes()))], image_size)

    np.testing.assert_array_equal(from_pil, from_path)
    np.testing.assert_array_equal(from_upload, from_path)


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_a_loaded_pil_image_is_turned_by_its_exif_orientation(tmp_path, orientation):
    path = _jpeg(tmp_path / "turned.jpg", orientation)
    loaded = Image.open(path)
    loaded.load()  # no reduced-scale decoding possible any more
    upright = np.asarray(ImageOps.exif_transpose(Image.open(path)))
    unturned = np.asarray(Image.open(path))

    from_loaded = _features([loaded], 224)

    # at 224 px a 600 x 400 photo is decoded at full scale: its path, its
    # loaded image and its upright pixels are the same picture
    np.testing.assert_array_equal(from_loaded, _features([upright], 224))
    np.testing.assert_array_equal(from_loaded, _features([str(path)], 224))
    assert np.abs(from_loaded - _features([unturned], 224)).max() > 1e-3


def test_a_converted_pil_image_keeps_its_exif_orientation(tmp_path):
    path = _jpeg(tmp_path / "six.jpg", 6)
    converted = Image.open(path).convert("RGB")

    np.testing.assert_array_equal(
        _features([converted], 224), _features([str(path)], 224)
    )


def test_reduced_scale_decoding_is_shared_by_a_path_and_image_open(tmp_path):
    path = _jpeg(tmp_path / "wide.jpg", 1, 1200, 800)
    loaded = Image.open(path).convert("RGB")  # full-scale pixels

    from_path = _features([str(path)], 64)
    from_pil = _features([Image.open(path)], 64)
    from_loaded = _features([loaded], 64)

    np.testing.assert_array_equal(from_pil, from_path)
    # a loaded image cannot be decoded at reduced scale: it is used as given
    assert np.abs(from_loaded - from_path).max() > 1e-4


def test_the_cache_keeps_the_features_of_the_turned_pixels(tmp_path):
    cache = str(tmp_path / "cache")
    path = _jpeg(tmp_path / "eight.jpg", 8)
    unturned = Image.fromarray(np.asarray(Image.open(path)))  # no EXIF
    loaded = Image.open(path)
    loaded.load()
    expected = _features([str(path)])

    # the unturned pixels are cached first: the turned images must not
    # get their features
    first = _features([unturned], cache=cache)
    again = _features([Image.open(path), str(path)], cache=cache)
    turned = _features([loaded], cache=cache)

    assert np.abs(first - expected).max() > 1e-3
    np.testing.assert_array_equal(again, np.vstack([expected, expected]))
    np.testing.assert_array_equal(turned, _features([loaded]))
    assert np.abs(turned - first).max() > 1e-3


def test_image_open_is_still_usable_after_transform(tmp_path):
    path = _jpeg(tmp_path / "kept.jpg", 6)
    img = Image.open(path)

    _features([img])

    img.load()  # the file object was left where PIL expects it
    assert img.size == (600, 400)


def test_a_broken_image_open_is_named_in_the_error(tmp_path):
    path = _jpeg(tmp_path / "cut.jpg")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    good = _jpeg(tmp_path / "good.jpg")

    with pytest.raises(ImageLoadError) as info:
        _features([str(good), Image.open(path)])

    message = str(info.value)
    assert "1 of 2 images" in message
    assert "X[1]" in message and "cut.jpg" in message


def test_size_summary_reads_image_open_as_its_file_and_turns_loaded_images(tmp_path):
    path = _jpeg(tmp_path / "six.jpg", 6)  # stored 600 x 400, shown 400 x 600
    loaded = Image.open(path)
    loaded.load()

    summary = image_size_summary([str(path), Image.open(path), loaded])

    assert summary.unreadable == []
    assert summary.widths.tolist() == [400, 400, 400]
    assert summary.heights.tolist() == [600, 600, 600]
    assert summary.formats == {"JPEG": 3}


def test_an_image_closed_before_loading_is_named_with_the_fix(tmp_path):
    path = _jpeg(tmp_path / "closed.jpg")
    with Image.open(path) as closed:
        pass  # never loaded

    with pytest.raises(ImageLoadError) as info:
        _features([str(path), closed])

    message = str(info.value)
    assert "1 of 2 images" in message and "X[1]" in message
    assert "closed before its pixels were loaded" in message
    assert "img.load()" in message


# -- registry weights names against same-named files and folders ---------------


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An empty torch hub directory, a network that always fails, and a
    working directory of the test's own."""
    hub = tmp_path / "torch-home" / "hub"
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # restored afterwards
    torch.hub.set_dir(str(hub))

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(torch.hub, "urlopen", no_network)
    monkeypatch.setattr("urllib.request.urlopen", no_network)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


@pytest.mark.parametrize("weights", ["DEFAULT", "IMAGENET1K_V1"])
@pytest.mark.parametrize("kind", ["folder", "file"])
def test_a_registry_name_wins_over_a_same_named_folder_or_file(
    offline_hub, weights, kind
):
    if kind == "folder":
        (offline_hub / weights).mkdir()
    else:
        (offline_hub / weights).write_bytes(b"not weights")

    with pytest.raises(WeightsUnavailableError) as info:
        PretrainedFeatures("resnet18", weights=weights, cache=None).fit()

    message = str(info.value)
    assert "not in torch's cache" in message and "resnet18" in message
    assert list(offline_hub.parent.rglob("*.pth")) == []  # nothing downloaded


def test_a_file_named_like_a_registry_name_is_read_when_written_as_a_path(
    offline_hub,
):
    (offline_hub / "DEFAULT").write_bytes(b"not weights")

    with pytest.raises(ValueError, match="DEFAULT") as info:
        PretrainedFeatures("resnet18", weights="./DEFAULT", cache=None).fit()

    assert not isinstance(info.value, WeightsUnavailableError)
    assert "cache" not in str(info.value)


def test_a_folder_is_never_taken_for_a_weights_file(offline_hub):
    (offline_hub / "my_weights").mkdir()

    with pytest.raises(ValueError) as info:
        PretrainedFeatures("resnet18", weights="my_weights", cache=None).fit()

    message = str(info.value)
    assert "'my_weights' here is a folder" in message
    assert "IMAGENET1K_V1" in message  # the names to choose from


# -- image folders: OS debris, split layouts, empty classes --------------------


def _save(path: Path, colour=(200, 40, 40)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (24, 16), colour).save(path)
    return path


def _mac_debris(folder: Path) -> None:
    """What a zip made on a Mac and unpacked elsewhere leaves behind."""
    for name in ["cats/._1.jpg", "__MACOSX/cats/._1.jpg", "__MACOSX/._cats"]:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"\x00\x05\x16\x07AppleDouble metadata")
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (folder / "cats" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (folder / "cats" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    (folder / "dogs").mkdir(exist_ok=True)
    (folder / "dogs" / "desktop.ini").write_text("[.ShellClassInfo]\n")
    (folder / ".hidden" / "x").mkdir(parents=True)
    _save(folder / ".hidden" / "x" / "2.jpg")


def test_folder_loader_skips_os_debris(tmp_path):
    _save(tmp_path / "cats" / "1.jpg")
    _save(tmp_path / "dogs" / "1.jpg")
    _save(tmp_path / "dogs" / ".trash" / "old.jpg")  # a hidden sub-folder
    _mac_debris(tmp_path)

    X, y = load_image_folder(tmp_path)

    names = [Path(p).relative_to(tmp_path).as_posix() for p in X]
    assert names == ["cats/1.jpg", "dogs/1.jpg"]
    assert y.tolist() == ["cats", "dogs"]
    _features(X)  # every listed file is a photo


@pytest.mark.parametrize("splits", [("train", "val"), ("train",), ("train", "valid")])
def test_folder_loader_refuses_a_root_of_splits_naming_them_and_the_fix(
    tmp_path, splits
):
    for split in splits:
        _save(tmp_path / split / "ants" / "1.jpg")
        _save(tmp_path / split / "bees" / "1.jpg")
    (tmp_path / "models").mkdir()  # what fastai keeps beside the splits

    with pytest.raises(ValueError) as info:
        load_image_folder(tmp_path)

    message = str(info.value)
    assert all(f"'{split}'" in message for split in splits)
    assert f"split='{splits[0]}'" in message
    assert str(tmp_path / splits[0]) in message
    X, y = load_image_folder(tmp_path, split=splits[0])  # the way out works
    assert sorted(set(y)) == ["ants", "bees"]


def test_a_root_of_splits_holding_photos_directly_points_at_the_csv_loader(
    tmp_path,
):
    _save(tmp_path / "train" / "cat.1.jpg")  # Kaggle: labels in a CSV file
    _save(tmp_path / "test" / "1.jpg")

    with pytest.raises(ValueError) as info:
        load_image_folder(tmp_path)

    message = str(info.value)
    assert "'test', 'train'" in message and "load_image_csv" in message


def test_a_class_named_like_a_split_beside_other_classes_is_a_class(tmp_path):
    _save(tmp_path / "test" / "1.jpg")  # photos directly inside: a class
    _save(tmp_path / "cats" / "1.jpg")

    X, y = load_image_folder(tmp_path)

    assert y.tolist() == ["cats", "test"]


def test_a_class_folder_of_debris_or_other_files_is_named_as_empty(tmp_path):
    _save(tmp_path / "cats" / "1.jpg")
    (tmp_path / "dogs").mkdir()
    (tmp_path / "dogs" / "._1.jpg").write_bytes(b"\x00\x05\x16\x07")
    (tmp_path / "dogs" / ".DS_Store").write_bytes(b"Bud1")
    (tmp_path / "birds").mkdir()
    (tmp_path / "birds" / "IMG_1.HEIC").write_bytes(b"heic")

    with pytest.raises(ValueError) as info:
        load_image_folder(tmp_path)

    message = str(info.value)
    assert "2 class folder(s)" in message and "'dogs'" in message
    assert "'birds': it holds other files only, such as 'IMG_1.HEIC'" in message
    assert "extensions=" in message


def test_symlink_loops_are_not_followed_and_odd_extensions_are_taken(tmp_path):
    _save(tmp_path / "cats" / "1.JPG")
    _save(tmp_path / "cats" / "deeper" / "2.jpeg")
    _save(tmp_path / "dogs" / "1.png")
    (tmp_path / "cats" / "loop").symlink_to(tmp_path / "cats")
    (tmp_path / "dogs" / "up").symlink_to(tmp_path)

    X, y = load_image_folder(tmp_path)
    assert y.tolist() == ["cats", "cats", "dogs"]

    undotted = load_image_folder(tmp_path, extensions=("jpg", "JPEG", "png"))
    assert undotted[0].tolist() == X.tolist()
    with pytest.raises(ValueError, match=r"\(looked for \.png\): 'cats'"):
        load_image_folder(tmp_path, extensions="png")  # one ending, as a str


@pytest.mark.parametrize("target", ["root", "parent", "class"])
def test_a_class_folder_linked_to_root_or_another_class_is_refused(tmp_path, target):
    root = tmp_path / "photos"
    _save(root / "cats" / "1.jpg")
    _save(root / "dogs" / "1.jpg")
    linked = {"root": root, "parent": tmp_path, "class": root / "cats"}[target]
    (root / "zebras").symlink_to(linked)

    with pytest.raises(ValueError) as info:
        load_image_folder(root)

    message = str(info.value)
    assert "zebras" in message and "link" in message
    assert "Remove" in message


def test_an_unreadable_file_with_an_image_ending_is_listed_then_named(tmp_path):
    _save(tmp_path / "cats" / "1.jpg")
    _save(tmp_path / "dogs" / "1.jpg")
    (tmp_path / "dogs" / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")

    X, y = load_image_folder(tmp_path)

    assert [Path(p).name for p in X] == ["1.jpg", "1.jpg", "gone.jpg"]
    with pytest.raises(ImageLoadError, match="gone.jpg"):
        _features(X)


def test_a_missing_split_lists_the_splits_there_are(tmp_path):
    _save(tmp_path / "train" / "cats" / "1.jpg")
    _save(tmp_path / "val" / "cats" / "1.jpg")

    with pytest.raises(FileNotFoundError, match="holds train, val"):
        load_image_folder(tmp_path, split="valid")


def test_csv_ids_without_extension_never_match_os_debris(tmp_path):
    _save(tmp_path / "img" / "a1.jpg")
    _save(tmp_path / "img" / "b2.png")
    _mac_debris(tmp_path / "img")
    (tmp_path / "img" / "._a1.jpg").write_bytes(b"\x00\x05\x16\x07")
    (tmp_path / "img" / ".b2.jpg").write_bytes(b"hidden")
    csv = tmp_path / "labels.csv"
    csv.write_text("id,label\na1,cat\nb2,dog\n")

    X, y = load_image_csv(csv, tmp_path / "img")

    assert [Path(p).name for p in X] == ["a1.jpg", "b2.png"]
    assert y.tolist() == ["cat", "dog"]


def test_debris_given_by_name_is_called_macos_metadata(tmp_path):
    good = _save(tmp_path / "cats" / "1.jpg")
    _mac_debris(tmp_path)
    debris = tmp_path / "__MACOSX" / "cats" / "._1.jpg"

    with pytest.raises(ImageLoadError) as info:
        _features([str(good), str(debris)])
    summary = image_size_summary([str(good), str(debris)])

    assert "macOS metadata" in str(info.value) and "._1.jpg" in str(info.value)
    assert summary.n_readable == 1
    assert "macOS metadata" in summary.unreadable[0][1]
    thumbs = str(tmp_path / "cats" / "Thumbs.db")
    (reason,) = dict(image_size_summary([thumbs]).unreadable).values()
    assert "not a recognised image format" in reason and "not a photo" in reason
