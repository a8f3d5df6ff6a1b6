"""Decoding images into RGB, turning ``X`` into a list of sources, fingerprints
and the deterministic views (crop boxes, rendering, TTA, normalisation)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import sktransfer._decoding as decoding
from sktransfer._decoding import load_image
from sktransfer._fingerprints import fingerprint
from sktransfer._images import as_image_list
from sktransfer._transforms import (
    PLAIN,
    Preprocessing,
    View,
    crop_box,
    random_augment,
    render,
    to_tensor,
    tta_views,
)
from sktransfer.datasets import augmented_copies
from sktransfer.exceptions import ImageLoadError

WHITE = (255, 255, 255)


def decode_file(img: Image.Image, path: Path, **save) -> Image.Image:
    img.save(path, **save)
    out = load_image(str(path))
    assert out.mode == "RGB"
    assert out.size == img.size
    return out


def rgb(img: Image.Image, x: int, y: int = 0) -> tuple:
    return tuple(int(v) for v in img.getpixel((x, y)))


# -- every mode becomes RGB ----------------------------------------------------


def _palette_image() -> Image.Image:
    img = Image.new("P", (3, 1))
    img.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (3 * 253))
    img.putdata([0, 1, 2])
    return img


def test_palette_image_without_transparency_uses_palette_colours(tmp_path):
    out = decode_file(_palette_image(), tmp_path / "p.png")
    assert [rgb(out, x) for x in range(3)] == [(255, 0, 0), (0, 255, 0), (0, 0, 255)]


def test_palette_image_with_transparency_composites_over_white(tmp_path):
    out = decode_file(_palette_image(), tmp_path / "p.png", transparency=1)
    assert [rgb(out, x) for x in range(3)] == [(255, 0, 0), WHITE, (0, 0, 255)]


def test_grayscale_L_image_repeats_gray_in_every_channel(tmp_path):
    img = Image.fromarray(np.array([[0, 77, 255]], dtype=np.uint8), "L")
    out = decode_file(img, tmp_path / "l.png")
    assert [rgb(out, x) for x in range(3)] == [(0, 0, 0), (77, 77, 77), WHITE]


def test_LA_image_composites_transparent_pixels_over_white(tmp_path):
    img = Image.new("LA", (2, 1))
    img.putdata([(77, 0), (77, 255)])
    out = decode_file(img, tmp_path / "la.png")
    assert rgb(out, 0) == WHITE
    assert rgb(out, 1) == (77, 77, 77)


def test_RGBA_image_composites_over_white(tmp_path):
    img = Image.new("RGBA", (3, 1))
    img.putdata([(10, 20, 30, 0), (10, 20, 30, 255), (0, 0, 0, 128)])
    out = decode_file(img, tmp_path / "rgba.png")
    assert rgb(out, 0) == WHITE  # fully transparent -> white, not black
    assert rgb(out, 1) == (10, 20, 30)
    half = np.array(rgb(out, 2))
    assert np.all(np.abs(half - 127) <= 1)


def test_RGBA_pil_image_and_array_composite_over_white():
    arr = np.zeros((1, 2, 4), dtype=np.uint8)
    arr[0, 1] = (10, 20, 30, 255)
    for source in (Image.fromarray(arr, "RGBA"), arr):
        out = load_image(source)
        assert out.mode == "RGB"
        assert rgb(out, 0) == WHITE
        assert rgb(out, 1) == (10, 20, 30)


def test_CMYK_image_converts_to_RGB(tmp_path):
    img = Image.new("CMYK", (3, 1))
    img.putdata([(255, 0, 0, 0), (0, 0, 0, 0), (0, 0, 0, 255)])
    out = decode_file(img, tmp_path / "cmyk.tif")
    assert [rgb(out, x) for x in range(3)] == [(0, 255, 255), WHITE, (0, 0, 0)]


def test_CMYK_jpeg_decodes_to_RGB(tmp_path):
    img = Image.new("CMYK", (16, 16), (255, 0, 0, 0))
    out = decode_file(img, tmp_path / "cmyk.jpg", quality=95)
    r, g, b = rgb(out, 8, 8)
    assert r < 40 and g > 215 and b > 215  # cyan


def test_16_bit_png_scales_full_range_to_8_bits(tmp_path):
    img = Image.fromarray(np.array([[0, 32768, 65535]], dtype=np.uint16))
    assert img.mode == "I;16"
    out = decode_file(img, tmp_path / "deep.png")
    grays = [rgb(out, x) for x in range(3)]
    assert all(r == g == b for r, g, b in grays)
    assert grays[0][0] == 0
    assert abs(grays[1][0] - 128) <= 1
    assert grays[2][0] == 255


@pytest.mark.parametrize("as_file", [True, False], ids=["tiff", "pil"])
def test_32_bit_integer_I_image_becomes_gray_RGB(tmp_path, as_file):
    img = Image.fromarray(np.array([[0, 1000, 2000]], dtype=np.int32))
    assert img.mode == "I"
    out = decode_file(img, tmp_path / "i.tif") if as_file else load_image(img)
    grays = [rgb(out, x) for x in range(3)]
    assert out.mode == "RGB"
    assert all(r == g == b for r, g, b in grays)
    assert grays[0][0] == 0 and grays[2][0] == 255
    assert abs(grays[1][0] - 128) <= 1


@pytest.mark.parametrize("as_file", [True, False], ids=["tiff", "pil"])
def test_float_F_image_is_rescaled_to_gray_RGB(tmp_path, as_file):
    img = Image.fromarray(np.array([[-1.0, 0.0, 1.0]], dtype=np.float32))
    assert img.mode == "F"
    out = decode_file(img, tmp_path / "f.tif") if as_file else load_image(img)
    grays = [rgb(out, x) for x in range(3)]
    assert out.mode == "RGB"
    assert all(r == g == b for r, g, b in grays)
    assert grays[0][0] == 0 and grays[2][0] == 255
    assert abs(grays[1][0] - 127.5) <= 1


def test_bilevel_1_image_becomes_black_and_white(tmp_path):
    img = Image.new("1", (2, 1))
    img.putdata([0, 1])
    out = decode_file(img, tmp_path / "bw.png")
    assert rgb(out, 0) == (0, 0, 0)
    assert rgb(out, 1) == WHITE


# -- EXIF orientation and draft decoding ---------------------------------------


@pytest.mark.parametrize(
    "orientation, marker_xy",
    [
        (6, (40 - 1 - 5, 5)),  # rotate 90 clockwise: top-left -> top-right
        (8, (5, 60 - 1 - 5)),  # rotate 90 counter-clockwise: -> bottom-left
    ],
)
def test_exif_orientation_is_applied(tmp_path, orientation, marker_xy):
    img = Image.new("RGB", (60, 40), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 12, 12))  # a red marker in the top-left corner
    exif = img.getexif()
    exif[0x0112] = orientation
    path = tmp_path / "rotated.jpg"
    img.save(path, quality=95, exif=exif)

    out = load_image(str(path))

    assert out.size == (40, 60)
    r, g, b = rgb(out, *marker_xy)
    assert r > 200 and b < 60  # the marker moved with the rotation


def test_large_jpeg_is_decoded_at_reduced_scale_but_not_below_draft_size(tmp_path):
    w, h = 2000, 1500
    gradient = np.linspace(0, 255, w, dtype=np.float32)[None, :, None]
    arr = np.broadcast_to(gradient, (h, w, 3)).astype(np.uint8)
    path = tmp_path / "large.jpg"
    Image.fromarray(arr).save(path, quality=80)

    full = load_image(str(path))
    small = load_image(str(path), draft_size=256)

    assert full.size == (w, h)
    assert small.size[0] < w and small.size[1] < h
    assert min(small.size) >= 256
    assert small.size[0] / small.size[1] == pytest.approx(w / h, rel=0.02)
    assert small.mode == "RGB"


def test_decompression_bomb_guard_raises_naming_the_file(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    Image.new("RGB", (20, 20)).save(path)
    monkeypatch.setattr(decoding, "MAX_IMAGE_PIXELS", 100)

    with pytest.raises(ImageLoadError, match="bomb.png") as info:
        load_image(str(path))
    assert "400" in str(info.value)  # the pixel count that was refused
    with pytest.raises(ImageLoadError, match=r"X\[3\]"):
        load_image(Image.new("RGB", (20, 20)), index=3)


def test_missing_empty_and_undecodable_files_raise_ImageLoadError_naming_them(
    tmp_path,
):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "notes.jpg"
    text.write_text("this is not a picture")
    for path, words in [
        (tmp_path / "missing.jpg", "does not exist"),
        (empty, "empty"),
        (text, "could not be decoded"),
        (tmp_path, "directory"),
    ]:
        with pytest.raises(ImageLoadError, match=words) as info:
            load_image(str(path))
        assert str(path) in str(info.value)


# -- as_image_list -------------------------------------------------------------


def test_as_image_list_accepts_paths_as_str_and_Path():
    out = as_image_list(["a.jpg", Path("dir/b.png")])
    assert out == ["a.jpg", str(Path("dir/b.png"))]
    assert all(type(p) is str for p in out)


def test_as_image_list_accepts_numpy_string_array():
    out = as_image_list(np.array(["a.jpg", "b.jpg"]))
    assert out == ["a.jpg", "b.jpg"]
    assert all(type(p) is str for p in out)


def test_as_image_list_decodes_numpy_bytes_array_to_paths():
    out = as_image_list(np.array([b"a.jpg", b"dir/b.jpg"]))
    assert out == ["a.jpg", "dir/b.jpg"]


def test_as_image_list_accepts_pandas_series_of_str_and_Path():
    assert as_image_list(pd.Series(["a.jpg", "b.jpg"], index=[10, 20])) == [
        "a.jpg",
        "b.jpg",
    ]
    assert as_image_list(pd.Series([Path("a.jpg"), Path("b.jpg")])) == [
        "a.jpg",
        "b.jpg",
    ]


def test_as_image_list_keeps_pil_images():
    imgs = [Image.new("RGB", (4, 4)), Image.new("L", (5, 5))]
    out = as_image_list(imgs)
    assert len(out) == 2
    assert out[0] is imgs[0] and out[1] is imgs[1]


def test_as_image_list_splits_uint8_arrays_into_images():
    color = np.zeros((3, 8, 9, 3), dtype=np.uint8)
    gray = np.zeros((2, 8, 9), dtype=np.uint8)
    assert [a.shape for a in as_image_list(color)] == [(8, 9, 3)] * 3
    assert [a.shape for a in as_image_list(gray)] == [(8, 9)] * 2
    out = load_image(as_image_list(gray)[0])
    assert out.mode == "RGB" and out.size == (9, 8)


@pytest.mark.parametrize(
    "X, words",
    [
        ("a.jpg", "wrap it in a list"),
        (Path("a.jpg"), "wrap it in a list"),
        (pd.DataFrame({"path": ["a.jpg"], "other": [1]}), "df\\['path'\\]"),
        (np.zeros((2, 8, 8, 3), dtype=np.float32), "uint8"),
        (np.zeros((2, 8, 8, 3), dtype=np.int64), "uint8"),
        (np.zeros((2, 8, 8, 2), dtype=np.uint8), "shape"),
        (np.zeros((8, 8), dtype=np.uint8), "shape"),
        (np.zeros((1, 2, 8, 8, 3), dtype=np.uint8), "shape"),
        (["a.jpg", 3], r"X\[1\] is a int"),
        ([np.zeros((8, 8, 3), dtype=np.float64)], r"X\[0\]"),
        (42, "got int"),
    ],
    ids=[
        "single-str",
        "single-Path",
        "dataframe",
        "float-array",
        "int64-array",
        "two-channels",
        "2d-array",
        "5d-array",
        "int-item",
        "float-item",
        "scalar",
    ],
)
def test_as_image_list_rejects_bad_inputs_with_a_message(X, words):
    with pytest.raises(ValueError, match=words):
        as_image_list(X)


# -- fingerprints --------------------------------------------------------------


def test_fingerprint_changes_when_file_bytes_change(tmp_path):
    path = tmp_path / "x.png"
    Image.new("RGB", (8, 8), (1, 2, 3)).save(path)
    before = fingerprint(str(path))
    assert fingerprint(str(path)) == before  # stable

    Image.new("RGB", (8, 8), (1, 2, 4)).save(path)
    changed = fingerprint(str(path))
    assert changed != before

    Image.new("RGB", (8, 8), (1, 2, 3)).save(path)  # the original bytes again
    assert fingerprint(str(path)) == before


def test_fingerprint_is_equal_for_identical_arrays_and_pil_images():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)
    assert fingerprint(a) == fingerprint(a.copy())
    assert fingerprint(Image.fromarray(a)) == fingerprint(Image.fromarray(a.copy()))
    b = a.copy()
    b[0, 0, 0] ^= 1
    assert fingerprint(b) != fingerprint(a)
    assert fingerprint(Image.fromarray(b)) != fingerprint(Image.fromarray(a))


def test_fingerprint_of_arrays_depends_on_shape_not_only_bytes():
    a = np.arange(2 * 6 * 3, dtype=np.uint8).reshape(2, 6, 3)
    assert fingerprint(a) != fingerprint(a.reshape(6, 2, 3))


def test_fingerprint_of_missing_file_raises_ImageLoadError(tmp_path):
    with pytest.raises(ImageLoadError, match="nope.jpg"):
        fingerprint(str(tmp_path / "nope.jpg"))


# -- views ---------------------------------------------------------------------

IMAGENET = Preprocessing(resize_size=256, crop_size=224)


def test_plain_crop_box_is_centred_with_short_side_times_crop_over_resize():
    side = 300 * 224 / 256
    box = crop_box(400, 300, IMAGENET, PLAIN)
    assert box == pytest.approx(
        (200 - side / 2, 150 - side / 2, 200 + side / 2, 150 + side / 2)
    )
    portrait = crop_box(300, 400, IMAGENET, PLAIN)
    assert portrait == pytest.approx(
        (150 - side / 2, 200 - side / 2, 150 + side / 2, 200 + side / 2)
    )


def test_zoomed_and_shifted_views_stay_inside_the_image():
    side = 300 * 224 / 256 / 1.1
    left_top = crop_box(400, 300, IMAGENET, View(zoom=1.1, dx=-1, dy=-1))
    right_bottom = crop_box(400, 300, IMAGENET, View(zoom=1.1, dx=1, dy=1))
    assert left_top == pytest.approx((0, 0, side, side))
    assert right_bottom == pytest.approx((400 - side, 300 - side, 400, 300))


def _photo(w=80, h=60, seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_render_returns_crop_by_crop_uint8():
    pre = Preprocessing(resize_size=64, crop_size=56)
    for view in tta_views(3):
        out = render(_photo(), pre, view)
        assert out.shape == (56, 56, 3)
        assert out.dtype == np.uint8


def test_flipped_view_is_the_mirror_of_the_plain_view():
    pre = Preprocessing(resize_size=40, crop_size=32)
    img = _photo()
    plain = render(img, pre, PLAIN)
    flipped = render(img, pre, View(flip=True))
    np.testing.assert_array_equal(flipped, plain[:, ::-1])
    assert not np.array_equal(flipped, plain)


def test_tta_views_are_distinct_deterministic_and_start_with_plain():
    for n in (0, 1, 2, 5):
        views = tta_views(n)
        assert len(views) == n + 1
        assert views[0] == PLAIN
        assert len(set(views)) == n + 1
        assert len({v.key for v in views}) == n + 1  # distinct cache keys
        assert tta_views(n) == views
    assert tta_views(1)[1] == View(flip=True)
    assert tta_views(5)[:3] == tta_views(2)  # more views extend, never reshuffle


def test_to_tensor_normalises_with_mean_and_std():
    mean = (100 / 255, 50 / 255, 200 / 255)
    std = (0.5, 0.25, 0.125)
    pre = Preprocessing(mean=mean, std=std)
    batch = np.zeros((2, 3, 4, 3), dtype=np.uint8)
    batch[0, 1, 2] = (100, 50, 200)  # the mean -> 0
    batch[1, 0, 0] = (255, 255, 255)

    x = to_tensor(batch, pre)

    assert x.shape == (2, 3, 3, 4)
    assert x.dtype == torch.float32
    assert torch.allclose(x[0, :, 1, 2], torch.zeros(3), atol=1e-6)
    expected = torch.tensor([(1 - m) / s for m, s in zip(mean, std, strict=True)])
    assert torch.allclose(x[1, :, 0, 0], expected, atol=1e-5)


# -- fuzzing the decoder -------------------------------------------------------


def _valid_file(fmt: str) -> bytes:
    buf = io.BytesIO()
    _photo(24, 16, seed=1).save(buf, format=fmt)
    return buf.getvalue()


SEEDS = {"JPEG": _valid_file("JPEG"), "PNG": _valid_file("PNG")}

mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(0, 7)),
    st.tuples(st.just("truncate"), st.integers(0, 10**6)),
    st.tuples(
        st.just("insert"), st.integers(0, 10**6), st.binary(min_size=1, max_size=16)
    ),
)


def _mutate(data: bytes, mutations) -> bytes:
    buf = bytearray(data)
    for m in mutations:
        if not buf:
            break
        pos = m[1] % len(buf)
        if m[0] == "flip":
            buf[pos] ^= 1 << m[2]
        elif m[0] == "truncate":
            del buf[pos:]
        else:
            buf[pos:pos] = m[2]
    return bytes(buf)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    fmt=st.sampled_from(sorted(SEEDS)),
    mutations=st.lists(mutation, min_size=1, max_size=4),
    draft=st.sampled_from([None, 8]),
)
def test_mutated_files_decode_to_RGB_or_raise_ImageLoadError(
    tmp_path, fmt, mutations, draft
):
    data = _mutate(SEEDS[fmt], mutations)
    path = tmp_path / f"fuzz.{fmt.lower()}"
    path.write_bytes(data)
    try:
        img = load_image(str(path), draft_size=draft)
    except ImageLoadError as exc:
        assert str(path) in str(exc)
    else:
        assert isinstance(img, Image.Image)
        assert img.mode == "RGB"
        assert img.width > 0 and img.height > 0
        np.asarray(img)  # the pixels are really there


def test_palette_images_with_other_colours_get_other_fingerprints():
    from sktransfer._fingerprints import fingerprint

    idx = np.zeros((8, 8), dtype=np.uint8)
    red = Image.fromarray(idx, "P")
    red.putpalette([255, 0, 0] * 256)
    blue = Image.fromarray(idx, "P")
    blue.putpalette([0, 0, 255] * 256)
    assert fingerprint(red) != fingerprint(blue)


# -- resize modes: crop, squish, pad -------------------------------------------

RED, GREY = (255, 0, 0), (128, 128, 128)


def _bordered(width=60, height=20, border=4) -> Image.Image:
    """A wide grey picture whose left and right edges are red."""
    arr = np.full((height, width, 3), GREY, np.uint8)
    arr[:, :border] = RED
    arr[:, -border:] = RED
    return Image.fromarray(arr)


def _pre(mode: str) -> Preprocessing:
    return Preprocessing(
        resize_size=32, crop_size=32, interpolation="nearest", resize_mode=mode
    )


def _is(out: np.ndarray, colour) -> np.ndarray:
    return np.all(out == colour, axis=-1)


def test_crop_cuts_the_borders_of_a_wide_picture():
    out = render(_bordered(), _pre("crop"))

    assert out.shape == (32, 32, 3)
    assert not _is(out, RED).any()


def test_squish_keeps_the_whole_picture_stretched_to_the_square():
    out = render(_bordered(), _pre("squish"))

    assert out.shape == (32, 32, 3)
    assert _is(out[:, :2], RED).all() and _is(out[:, -2:], RED).all()
    assert _is(out[:, 3:-3], GREY).all()


def test_pad_fits_the_whole_picture_and_pads_with_the_mean_colour():
    pre = _pre("pad")
    mean = tuple(round(m * 255) for m in pre.mean)

    out = render(_bordered(), pre)

    rows = np.flatnonzero(~_is(out, mean).all(axis=1))  # rows of the picture
    assert rows.tolist() == list(range(10, 21))  # 20 * 32 / 60 = 10.7 -> 11 rows
    assert _is(out[:10], mean).all() and _is(out[21:], mean).all()
    assert _is(out[rows][:, :2], RED).all() and _is(out[rows][:, -2:], RED).all()


@pytest.mark.parametrize("mode", ["squish", "pad"])
def test_tta_views_and_augmentation_keep_the_resize_mode(mode):
    pre = _pre(mode)
    img = _bordered()
    plain = render(img, pre)

    for view in tta_views(3)[1:]:
        out = render(img, pre, view)
        assert _is(out, RED).any()  # a zoom of at most 1.1 keeps a border
        if mode == "pad":
            assert _is(out[0], plain[0, 0]).all()  # the padding stays
    np.testing.assert_array_equal(render(img, pre, View(flip=True)), plain[:, ::-1])

    rng = np.random.default_rng(0)
    still = [
        random_augment(img, pre, rng, "side_on", 1.0, max_rotate=0, max_lighting=0)
        for _ in range(8)
    ]
    for out in still:  # only flips remain: the plain view or its mirror
        assert np.array_equal(out, plain) or np.array_equal(out, plain[:, ::-1])
    rotated = random_augment(img, pre, rng, "side_on", 1.0, 10.0, 0.0)
    assert not _is(rotated, (0, 0, 0)).any()  # corners filled like padding


@pytest.mark.parametrize("mode", ["crop", "squish"])
def test_a_rotated_view_at_the_edge_is_the_view_of_the_mirrored_photo(mode):
    """The one-pass render with its mirrored margin matches mirroring the
    whole photo, rotating it and cutting the view (up to interpolation),
    corners included: a wrong shift of the map would move them."""
    from sktransfer._transforms import View, render_rotated

    yy, xx = np.mgrid[0:90, 0:120]
    smooth = np.stack([xx * 2, yy * 2, (xx + 2 * yy) % 256], -1).astype(np.uint8)
    m = 40
    mirrored = np.pad(smooth, ((m, m), (m, m), (0, 0)), mode="reflect")
    pre = Preprocessing(resize_size=32, crop_size=32, resize_mode=mode)
    for view, angle in [(View(dx=1.0, dy=1.0), 12.0), (View(dx=-1.0), -9.0)]:
        turned = np.asarray(
            Image.fromarray(mirrored).rotate(angle, Image.Resampling.BILINEAR)
        )[m:-m, m:-m]
        expected = render(turned, pre, view).astype(int)
        got = render_rotated(smooth, pre, view, angle).astype(int)
        assert np.abs(got - expected).mean() < 4
        corners = [(0, 0), (0, -1), (-1, 0), (-1, -1)]
        for r, c in corners:
            assert np.abs(got[r, c] - expected[r, c]).max() < 24


@pytest.mark.parametrize("mode", ["crop", "squish", "pad"])
def test_rotated_copies_mirror_the_photo_into_their_corners(mode):
    """A rotation uncovers corners of the square. They show the photo's
    edge mirrored (a photo of one colour stays that colour everywhere),
    except in "pad" mode, where they are padding like the rest."""
    photo = np.zeros((48, 64, 3), np.uint8)
    photo[:] = RED
    copies = augmented_copies(
        photo, n=6, image_size=32, max_zoom=1.0, resize_mode=mode, random_state=3
    )
    if mode == "pad":
        mean = tuple(round(m * 255) for m in Preprocessing().mean)
        # up to the lighting change every copy gets
        assert (np.abs(copies[:, 0, 0].astype(int) - mean) < 20).all()
        return
    reddish = (copies[..., 0] > 200) & (copies[..., 1:] < 40).all(-1)
    assert reddish.all()


def test_augmented_copies_follow_the_resize_mode():
    img = _bordered(120, 40, border=8)
    pad = augmented_copies(img, n=4, image_size=32, max_zoom=1.0, resize_mode="pad")

    reddish = (pad[..., 0] > 200) & (pad[..., 1] < 60) & (pad[..., 2] < 60)
    # every copy shows the whole picture: both red edges
    assert reddish[:, :, :16].any(axis=(1, 2)).all()
    assert reddish[:, :, 16:].any(axis=(1, 2)).all()


def test_resize_mode_is_part_of_the_cache_key(tmp_path, forward_count):
    from sktransfer import FeatureCache, PretrainedFeatures

    cache = str(tmp_path / "cache")
    X = [np.asarray(_bordered())]

    def features(**preprocessing):
        return (
            PretrainedFeatures(
                backbone="resnet18",
                weights=None,
                image_size=32,
                device="cpu",
                precision="fp32",
                cache=cache,
                preprocessing=preprocessing or None,
            )
            .fit()
            .transform(X)
        )

    default = features()
    squish = features(resize_mode="squish")
    crop = features(resize_mode="CROP")

    assert not np.allclose(default, squish)
    np.testing.assert_array_equal(crop, default)
    assert forward_count["n"] == 2  # "crop" is the default's cache entry
    assert FeatureCache(cache).stats()["models"] == 2


def test_unknown_resize_mode_is_refused_naming_the_choices():
    with pytest.raises(ValueError, match=r"'resize_mode'.*'crop', 'squish', 'pad'"):
        Preprocessing(resize_mode="fit")


# --- the network's pixels: JPEGs straight into arrays, torch resizes ---------


def _pil_reference(path: Path, draft_size=None) -> np.ndarray:
    """What PIL alone makes of a file: decode (DCT-scaled like fit does),
    EXIF orientation, RGB."""
    from PIL import ImageOps

    img = Image.open(path)
    if draft_size and img.format == "JPEG":
        w, h = img.size
        scale = draft_size / min(w, h)
        img.draft("RGB", (max(1, int(w * scale)), max(1, int(h * scale))))
    img = ImageOps.exif_transpose(img)
    return np.asarray(img.convert("RGB"))


def _textured(w: int, h: int, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    big = Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC)
    return np.asarray(big)


JPEG_VARIANTS = {
    "baseline 4:2:0": {"quality": 90},
    "4:4:4": {"quality": 90, "subsampling": 0},
    "4:2:2": {"quality": 85, "subsampling": 1},
    "progressive": {"quality": 80, "progressive": True},
    "optimized, low quality": {"quality": 20, "optimize": True},
}


@pytest.mark.parametrize("variant", sorted(JPEG_VARIANTS))
@pytest.mark.parametrize("draft_size", [None, 256, 100])
def test_jpeg_pixels_are_exactly_those_pil_decodes(tmp_path, variant, draft_size):
    path = tmp_path / "photo.jpg"
    Image.fromarray(_textured(1030, 770)).save(path, **JPEG_VARIANTS[variant])
    pixels = decoding.load_pixels(str(path), draft_size=draft_size)
    expected = _pil_reference(path, draft_size)
    assert pixels.dtype == np.uint8 and pixels.flags.c_contiguous
    np.testing.assert_array_equal(pixels, expected)
    if draft_size:  # DCT scaling did happen, and not below the size asked
        assert pixels.shape[0] < 770 and min(pixels.shape[:2]) >= draft_size


@pytest.mark.parametrize("orientation", range(1, 9))
def test_jpeg_pixels_follow_every_exif_orientation_as_pil_does(tmp_path, orientation):
    path = tmp_path / f"o{orientation}.jpg"
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(_textured(64, 40)).save(path, quality=95, exif=exif)
    pixels = decoding.load_pixels(str(path))
    np.testing.assert_array_equal(pixels, _pil_reference(path))
    assert pixels.shape[:2] == ((64, 40) if orientation >= 5 else (40, 64))


@pytest.mark.parametrize("mode", ["L", "CMYK"])
def test_gray_and_cmyk_jpegs_give_pils_rgb(tmp_path, mode):
    path = tmp_path / f"{mode}.jpg"
    Image.fromarray(_textured(48, 32)).convert(mode).save(path, quality=90)
    pixels = decoding.load_pixels(str(path))
    assert pixels.shape == (32, 48, 3)
    np.testing.assert_array_equal(pixels, _pil_reference(path))


def test_a_truncated_jpeg_is_refused_by_name_not_filled_in(tmp_path):
    path = tmp_path / "cut.jpg"
    Image.fromarray(_textured(200, 150)).save(path, quality=90)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError, match="cut.jpg"):
        decoding.load_pixels(str(path))


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic", "lanczos"])
@pytest.mark.parametrize("mode", ["crop", "squish", "pad"])
def test_render_resizes_the_whole_pixel_box_as_pil_does(interpolation, mode):
    photo = _textured(500, 375, seed=1)
    pre = Preprocessing(interpolation=interpolation, resize_mode=mode)
    out = render(photo, pre).astype(int)
    # the same box on whole pixels, resized by PIL
    if mode == "crop":
        side = round(375 * 224 / 256)  # 328: the centre square
        left, top = round((500 - side) / 2), round((375 - side) / 2)
        box, size = (left, top, left + side, top + side), (224, 224)
    else:
        box, size = (0, 0, 500, 375), (224, 224) if mode == "squish" else (224, 168)
    expected = np.asarray(
        Image.fromarray(photo)
        .crop(box)
        .resize(size, getattr(Image.Resampling, interpolation.upper()))
    ).astype(int)
    if mode == "pad":  # centred, mean colour above and below
        assert (out[:28] == [124, 116, 104]).all() and (out[196:] == out[0, 0]).all()
        out = out[28:196]
    diff = np.abs(out - expected)
    assert diff.max() <= 3, diff.max()
    assert diff.mean() < 0.05


def test_a_pil_image_and_its_array_render_alike():
    photo = _textured(300, 200, seed=2)
    for view in [PLAIN, View(flip=True, zoom=1.1, dx=0.5, dy=-1), View(turns=1)]:
        np.testing.assert_array_equal(
            render(Image.fromarray(photo), IMAGENET, view),
            render(photo, IMAGENET, view),
        )
