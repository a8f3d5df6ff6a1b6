"""CSV labels, image size summaries and their plot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA, requires_shared
from PIL import Image, ImageFile

from sktransfer.datasets import (
    image_size_summary,
    load_image_csv,
    load_image_folder,
    load_image_paths,
)


def write_images(folder: Path, names, size=(12, 8)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        fmt = "PNG" if path.suffix.lower() == ".png" else "JPEG"
        Image.new("RGB", size, (90, 120, 150)).save(path, format=fmt)


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text.lstrip("\n"), encoding="utf-8")
    return path


# -- load_image_csv -------------------------------------------------------------


def test_csv_ids_without_extension_find_their_image_file(tmp_path):
    write_images(tmp_path / "train", ["b7.jpg", "a1.png", "c3.jpeg"])
    csv = write_csv(
        tmp_path / "labels.csv", "id,breed\nb7,beagle\na1,akita\nc3,corgi\n"
    )

    X, y = load_image_csv(csv, tmp_path / "train")

    train = tmp_path / "train"
    assert X.tolist() == [
        str(train / "b7.jpg"),
        str(train / "a1.png"),
        str(train / "c3.jpeg"),
    ]
    assert y.tolist() == ["beagle", "akita", "corgi"]  # the order of the rows


def test_csv_ids_with_extension_and_subfolders_are_used_as_they_are(tmp_path):
    write_images(tmp_path / "img", ["x/1.jpg", "y/2.png"])
    csv = write_csv(tmp_path / "l.csv", "file,label\nx/1.jpg,cat\ny/2.png,dog\n")

    X, y = load_image_csv(csv, tmp_path / "img")

    assert X.tolist() == [str(tmp_path / "img/x/1.jpg"), str(tmp_path / "img/y/2.png")]
    assert y.tolist() == ["cat", "dog"]


def test_csv_suffix_is_appended_to_every_id(tmp_path):
    # With suffix, 'a' means a_rgb.png only, although a.jpg exists too.
    write_images(tmp_path / "img", ["a_rgb.png", "a.jpg", "b_rgb.png"])
    csv = write_csv(tmp_path / "l.csv", "id,label\na,0\nb,1\n")

    X, y = load_image_csv(csv, tmp_path / "img", suffix="_rgb.png")

    assert [Path(p).name for p in X] == ["a_rgb.png", "b_rgb.png"]
    assert y.tolist() == ["0", "1"]


def test_csv_columns_by_name_and_position(tmp_path):
    write_images(tmp_path / "img", ["a.jpg", "b.jpg"])
    csv = write_csv(
        tmp_path / "l.csv",
        "split,label,image,score\ntrain,cat,a,0.5\ntrain,dog,b,0.7\n",
    )

    X1, y1 = load_image_csv(
        csv, tmp_path / "img", id_column="image", label_column="label"
    )
    X2, y2 = load_image_csv(csv, tmp_path / "img", id_column=2, label_column=1)
    X3, y3 = load_image_csv(csv, tmp_path / "img", id_column=-2, label_column="label")

    for X, y in ((X1, y1), (X2, y2), (X3, y3)):
        assert [Path(p).name for p in X] == ["a.jpg", "b.jpg"]
        assert y.tolist() == ["cat", "dog"]


def test_csv_multi_label_with_label_sep(tmp_path):
    write_images(tmp_path / "img", ["t0.jpg", "t1.jpg", "t2.jpg"])
    csv = write_csv(
        tmp_path / "train_v2.csv",
        "image_name,tags\nt0,haze primary\n"
        "t1,  clear  primary water \nt2,cloudy cloudy\n",
    )

    X, y = load_image_csv(csv, tmp_path / "img", label_sep=" ")

    assert len(X) == 3
    assert y == [["haze", "primary"], ["clear", "primary", "water"], ["cloudy"]]


def test_csv_multi_label_with_a_character_separator_and_tsv(tmp_path):
    write_images(tmp_path / "img", ["a.jpg", "b.jpg"])
    csv = write_csv(tmp_path / "l.tsv", "id\tlabels\na\tx|y\nb\ty||z|\n")

    _, y = load_image_csv(csv, tmp_path / "img", label_sep="|")

    assert y == [["x", "y"], ["y", "z"]]


def test_csv_with_byte_order_mark_and_blank_lines(tmp_path):
    write_images(tmp_path / "img", ["a.jpg", "b.jpg"])
    csv = tmp_path / "l.csv"
    csv.write_bytes(b"\xef\xbb\xbfid,label\r\na,cat\r\n\r\nb,dog\r\n")

    X, y = load_image_csv(csv, tmp_path / "img", id_column="id")

    assert len(X) == 2
    assert y.tolist() == ["cat", "dog"]


def test_csv_missing_images_are_all_named_in_one_error(tmp_path):
    write_images(tmp_path / "img", ["a.jpg", "c.jpg"])
    csv = write_csv(tmp_path / "l.csv", "id,label\na,0\nb,1\nc,0\nd,1\ne.png,0\n")

    with pytest.raises(FileNotFoundError) as info:
        load_image_csv(csv, tmp_path / "img")

    message = str(info.value)
    assert "3 of 5 images named in" in message
    assert "l.csv" in message and "'id'" in message
    for name in ("'b'", "'d'", "'e.png'"):
        assert name in message
    assert info.value.missing == ["b", "d", "e.png"]


def test_csv_many_missing_images_are_counted_and_the_first_50_named(tmp_path):
    write_images(tmp_path / "img", ["a.jpg"])
    rows = "".join(f"m{i},0\n" for i in range(120))
    csv = write_csv(tmp_path / "l.csv", "id,label\na,1\n" + rows)

    with pytest.raises(FileNotFoundError, match="120 of 121 images") as info:
        load_image_csv(csv, tmp_path / "img")

    assert "'m49'" in str(info.value) and "'m50'" not in str(info.value)
    assert "and 70 more" in str(info.value)
    assert len(info.value.missing) == 120


def test_csv_nothing_found_hints_at_image_dir_or_suffix(tmp_path):
    (tmp_path / "empty").mkdir()
    csv = write_csv(tmp_path / "l.csv", "id,label\na,0\nb,1\n")

    with pytest.raises(FileNotFoundError, match="is image_dir right"):
        load_image_csv(csv, tmp_path / "empty")


def test_csv_duplicate_ids_are_an_error_naming_them_and_their_lines(tmp_path):
    write_images(tmp_path / "img", ["a.jpg", "b.jpg"])
    csv = write_csv(tmp_path / "l.csv", "id,label\na,0\nb,1\na,1\n")

    with pytest.raises(ValueError, match=r"'a' \(lines 2 and 4\)"):
        load_image_csv(csv, tmp_path / "img")


def test_csv_two_ids_naming_the_same_file_are_an_error(tmp_path):
    write_images(tmp_path / "img", ["a.jpg"])
    csv = write_csv(tmp_path / "l.csv", "id,label\na,0\na.jpg,1\n")

    with pytest.raises(ValueError, match="image files named in .* appear twice"):
        load_image_csv(csv, tmp_path / "img")


def test_csv_id_matching_several_files_asks_for_a_suffix(tmp_path):
    write_images(tmp_path / "img", ["a.jpg", "a.png", "b.jpg"])
    csv = write_csv(tmp_path / "l.csv", "id,label\na,0\nb,1\n")

    with pytest.raises(ValueError, match=r"'a' \(line 2\): a.jpg, a.png.*") as info:
        load_image_csv(csv, tmp_path / "img")
    assert "suffix=" in str(info.value)


def test_csv_empty_labels_are_an_error_naming_the_lines(tmp_path):
    write_images(tmp_path / "img", ["a.jpg", "b.jpg", "c.jpg"])
    csv = write_csv(tmp_path / "l.csv", "id,label\na,cat\nb,\nc, \n")

    with pytest.raises(ValueError, match=r"2 rows .* empty label .*lines 3, 4"):
        load_image_csv(csv, tmp_path / "img")
    with pytest.raises(ValueError, match="empty label"):
        load_image_csv(csv, tmp_path / "img", label_sep=" ")


def test_csv_missing_column_names_it_and_lists_the_columns(tmp_path):
    write_images(tmp_path / "img", ["a.jpg"])
    csv = write_csv(tmp_path / "l.csv", "id,breed\na,akita\n")

    with pytest.raises(ValueError, match=r"label_column='label' .*\['id', 'breed'\]"):
        load_image_csv(csv, tmp_path / "img", label_column="label")
    with pytest.raises(ValueError, match="id_column=5 .* 2 column"):
        load_image_csv(csv, tmp_path / "img", id_column=5)
    one_column = write_csv(tmp_path / "ids.csv", "id\na\n")
    with pytest.raises(ValueError, match="label_column=1 .* 1 column"):
        load_image_csv(one_column, tmp_path / "img")


def test_csv_short_rows_and_empty_files_are_errors(tmp_path):
    write_images(tmp_path / "img", ["a.jpg"])
    short = write_csv(tmp_path / "short.csv", "id,label\na,0\nb\n")
    with pytest.raises(ValueError, match="fewer than 2 fields: lines 3"):
        load_image_csv(short, tmp_path / "img")
    header_only = write_csv(tmp_path / "h.csv", "id,label\n")
    with pytest.raises(ValueError, match="no rows"):
        load_image_csv(header_only, tmp_path / "img")
    empty = write_csv(tmp_path / "e.csv", "")
    with pytest.raises(ValueError, match="is empty"):
        load_image_csv(empty, tmp_path / "img")


def test_csv_file_or_image_dir_that_does_not_exist(tmp_path):
    write_images(tmp_path / "img", ["a.jpg"])
    csv = write_csv(tmp_path / "l.csv", "id,label\na,0\n")
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        load_image_csv(tmp_path / "nope.csv", tmp_path / "img")
    with pytest.raises(FileNotFoundError, match="no-dir"):
        load_image_csv(csv, tmp_path / "no-dir")


@requires_shared
def test_csv_of_the_real_dogscats_photos_matches_the_folder_loader(tmp_path):
    root = DATA / "dogscats" / "train"
    X_folder, y_folder = load_image_folder(root)
    ids = [str(Path(p).relative_to(root).with_suffix("")) for p in X_folder]
    lines = "".join(f"{i},{label}\n" for i, label in zip(ids, y_folder, strict=True))
    csv = write_csv(tmp_path / "labels.csv", "id,label\n" + lines)

    X, y = load_image_csv(csv, root)

    assert X.tolist() == X_folder.tolist()
    assert y.tolist() == y_folder.tolist()


# -- image_size_summary -----------------------------------------------------------


def test_summary_counts_sizes_modes_and_formats(tmp_path):
    specs = [
        ("a.jpg", "RGB", (40, 30), "JPEG"),
        ("b.jpg", "L", (64, 48), "JPEG"),
        ("c.png", "RGBA", (10, 100), "PNG"),
        ("d.png", "P", (20, 20), "PNG"),
        ("e.gif", "P", (33, 11), "GIF"),
        ("f.bmp", "RGB", (7, 9), "BMP"),
    ]
    paths = []
    for name, mode, size, fmt in specs:
        Image.new(mode, size).save(tmp_path / name, format=fmt)
        paths.append(str(tmp_path / name))

    summary = image_size_summary(paths)

    widths = np.array([s[2][0] for s in specs])
    heights = np.array([s[2][1] for s in specs])
    assert (summary.n_images, summary.n_readable, summary.unreadable) == (6, 6, [])
    np.testing.assert_array_equal(summary.widths, widths)
    np.testing.assert_array_equal(summary.heights, heights)
    assert summary.width["min"] == 7 and summary.width["max"] == 64
    assert summary.height["median"] == np.median(heights)
    assert summary.width["q25"] == pytest.approx(np.quantile(widths, 0.25))
    assert summary.height["q95"] == pytest.approx(np.quantile(heights, 0.95))
    assert summary.modes == {"P": 2, "RGB": 2, "L": 1, "RGBA": 1}
    assert summary.formats == {"JPEG": 2, "PNG": 2, "GIF": 1, "BMP": 1}
    counts = list(summary.modes.values())
    assert counts == sorted(counts, reverse=True)  # most frequent first
    assert summary.to_dict()["formats"]["PNG"] == 2
    assert "6 of 6 images readable" in str(summary)


def test_summary_lists_unreadable_files_without_raising(tmp_path):
    good = tmp_path / "good.jpg"
    Image.new("RGB", (8, 6)).save(good)
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"this is not an image" * 10)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    folder = tmp_path / "folder.jpg"
    folder.mkdir()
    X = [
        str(good),
        str(garbage),
        str(tmp_path / "missing.jpg"),
        str(empty),
        str(folder),
    ]

    summary = image_size_summary(X)

    assert summary.n_images == 5
    assert summary.n_readable == 1
    assert [name for name, _ in summary.unreadable] == X[1:]
    reasons = dict(summary.unreadable)
    assert "UnidentifiedImageError" in reasons[str(garbage)]
    assert "does not exist" in reasons[str(tmp_path / "missing.jpg")]
    assert "unreadable: " + str(garbage) in str(summary)


def test_summary_with_no_readable_image_has_empty_statistics(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")

    summary = image_size_summary([str(bad)])

    assert summary.n_readable == 0
    assert summary.width["median"] is None and summary.height["max"] is None
    assert summary.modes == {} and summary.formats == {}


def test_summary_reads_headers_only(tmp_path, monkeypatch):
    # A JPEG cut after its header: decoding it would fail, its size is known.
    full = tmp_path / "full.jpg"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)).save(full)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(full.read_bytes()[:2000])

    def no_decoding(self, *args, **kwargs):
        raise AssertionError("image_size_summary decoded pixels")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    monkeypatch.setattr(Image.Image, "load", no_decoding)
    summary = image_size_summary([str(full), str(cut)])

    assert summary.unreadable == []
    assert summary.widths.tolist() == [400, 400]
    assert summary.heights.tolist() == [300, 300]


def test_summary_swaps_width_and_height_of_jpeg_rotated_by_exif(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    path = tmp_path / "portrait.jpg"
    Image.new("RGB", (40, 30)).save(path, exif=exif.tobytes())

    summary = image_size_summary([str(path)])

    assert (summary.widths[0], summary.heights[0]) == (30, 40)


def test_summary_of_arrays_and_pil_images_and_with_progress_bar():
    arrays = np.zeros((2, 5, 7, 3), dtype=np.uint8)
    pil = [Image.new("L", (3, 4)), Image.new("RGBA", (6, 2))]

    from_arrays = image_size_summary(arrays, verbose=1)
    from_pil = image_size_summary(pil)

    assert from_arrays.widths.tolist() == [7, 7] and from_arrays.formats == {"array": 2}
    assert from_pil.modes == {"L": 1, "RGBA": 1}
    assert from_pil.heights.tolist() == [4, 2]


@requires_shared
def test_summary_of_the_real_ants_and_bees_matches_the_data_readme():
    X, _ = load_image_folder(DATA / "hymenoptera_data" / "train")

    summary = image_size_summary(X)

    assert summary.n_readable == summary.n_images == 245
    assert summary.formats == {"JPEG": 244, "GIF": 1}  # imageNotFound.gif
    assert summary.modes.get("P") == 1  # the palette-mode image of the README
    assert summary.width["min"] >= 193 and summary.height["min"] >= 130
    assert summary.width["max"] <= 2592 and summary.height["max"] <= 1984


# plot_image_sizes is tested in test_plotting.py.


def test_importing_sktransfer_plotting_does_not_import_matplotlib():
    code = "import sktransfer.plotting, sys; assert 'matplotlib' not in sys.modules"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr


# -- load_image_paths -----------------------------------------------------------


def test_load_image_paths_lists_photos_sorted_and_skips_os_debris(tmp_path):
    write_images(tmp_path, ["b.jpg", "a.PNG", "sub/c.jpeg", "sub/deeper/d.jpg"])
    write_images(tmp_path, ["__MACOSX/._b.jpg", ".hidden/e.jpg", "._a.jpg"])
    (tmp_path / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (tmp_path / "Thumbs.db").write_bytes(b"\0")
    (tmp_path / "notes.txt").write_text("not a photo")

    found = load_image_paths(tmp_path)
    top = load_image_paths(tmp_path, recursive=False)
    jpeg_only = load_image_paths(tmp_path, extensions=("jpg",))

    relative = [Path(p).relative_to(tmp_path).as_posix() for p in found]
    assert relative == ["a.PNG", "b.jpg", "sub/c.jpeg", "sub/deeper/d.jpg"]
    assert [Path(p).name for p in top] == ["a.PNG", "b.jpg"]
    assert [Path(p).name for p in jpeg_only] == ["b.jpg", "d.jpg"]


def test_load_image_paths_names_a_missing_or_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not a photo")

    with pytest.raises(FileNotFoundError, match="'.*nowhere' does not exist"):
        load_image_paths(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="holds no images .*'notes.txt'"):
        load_image_paths(tmp_path / "empty")
