"""The release's record pixels (sagan_tf/data/release_pixels.py, the converter's default
pixel pipeline) against tests/improved_gan_reference.py, a reference written from
the improved-GAN converter and scipy 0.18's pilutil, on two real photographs in
the modes ImageNet files come in (tests/data/README.md)."""
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import improved_gan_reference as ref
from sagan_tf.data import pixel_pipelines, release_pixels

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
PHOTOS = {"china": "photo_china_231x300.jpg",    # crop margin 69 columns: odd
          "flower": "photo_flower_300x203.jpg"}  # crop margin 97 rows: odd


def _gray(rgb):
    return rgb.convert("L")


def _save(image, path, **kwargs):
    image.save(path, **kwargs)
    return path


def _make_variants(rgb, folder, name):
    """The photo in the modes and formats ImageNet-like folders hold -> {variant: path}."""
    arr = np.asarray(rgb)
    h, w = arr.shape[:2]
    alpha = np.broadcast_to(np.linspace(30, 255, w).astype(np.uint8), (h, w))
    low = np.round(arr * (50 / 255) + 90).astype(np.uint8)  # values 90..140 only
    palette = rgb.convert("P", palette=Image.ADAPTIVE, colors=64)
    out = os.path.join(folder, name)
    return {
        "jpeg": os.path.join(DATA, PHOTOS[name]),
        "gray_jpeg": _save(_gray(rgb), out + "_gray.jpg", quality=90),
        "cmyk_jpeg": _save(rgb.convert("CMYK"), out + "_cmyk.jpg", quality=90),
        "rgba_png": _save(Image.fromarray(np.dstack([arr, alpha])), out + "_rgba.png"),
        "palette_png": _save(palette, out + "_palette.png"),
        "palette_transparent_png": _save(palette, out + "_palette_t.png", transparency=3),
        "low_contrast_jpeg": _save(Image.fromarray(low), out + "_low.jpg", quality=90),
        "bilevel_png": _save(rgb.convert("1"), out + "_bilevel.png"),
        "gray16_png": _save(Image.fromarray(np.asarray(_gray(rgb), np.uint16) * 257),
                            out + "_gray16.png"),
    }


VARIANTS = ("jpeg", "gray_jpeg", "cmyk_jpeg", "rgba_png", "palette_png",
            "palette_transparent_png", "low_contrast_jpeg", "bilevel_png", "gray16_png")


@pytest.fixture(scope="module")
def photo_files(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("photos"))
    files = {}
    for name, filename in PHOTOS.items():
        with Image.open(os.path.join(DATA, filename)) as rgb:
            for variant, path in _make_variants(rgb.convert("RGB"), folder, name).items():
                files[name, variant] = path
    for (name, variant), path in files.items():  # the modes the tests mean to cover
        with Image.open(path) as im:
            want = {"gray_jpeg": "L", "cmyk_jpeg": "CMYK", "rgba_png": "RGBA", "palette_png": "P",
                    "bilevel_png": "1", "gray16_png": "I;16"}.get(variant)
            assert want is None or im.mode == want, (name, variant, im.mode)
    return files


def _differences(got, want):
    """``(mean |difference|, largest, share of values off by more than 2)``."""
    diff = np.abs(got.astype(int) - want.astype(int))
    return diff.mean(), diff.max(), (diff > 2).mean()


@pytest.mark.parametrize("size", [128, 64])
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("photo", sorted(PHOTOS))
def test_release_pixels_equal_the_reference_on_photos(photo_files, photo, variant, size):
    path = photo_files[photo, variant]
    want = ref.record_from_file(path, size)
    assert want.shape == (size, size, 3) and want.dtype == np.uint8
    with open(path, "rb") as f:
        encoded = f.read()
    with Image.open(path) as im:
        decoded = release_pixels.read_like_imread(im)
    candidates = {
        "file": release_pixels.release_pixels_from_file(path, size),
        "array": release_pixels.release_pixels(decoded, size),
        "bytes (TFDS)": pixel_pipelines.pixels_from_file(encoded, pixel_pipelines.RELEASE, size),
    }
    for how, got in candidates.items():
        mean, worst, share = _differences(got, want)
        assert got.shape == want.shape and got.dtype == np.uint8, how
        # The bar is mean <= 0.5 and <= 1% off by more than 2; the port is exact.
        assert mean <= 0.5 and share <= 0.01, (how, mean, worst, share)
        np.testing.assert_array_equal(got, want, err_msg=f"{how}: mean {mean:.4f}, max {worst}")


def test_low_contrast_photo_is_stretched_to_the_full_range(photo_files):
    """bytescale stretches the crop's own min..max to 0..255; the old pipeline kept it."""
    path = photo_files["flower", "low_contrast_jpeg"]
    release = pixel_pipelines.pixels_from_file(path, pixel_pipelines.RELEASE, 64)
    old = pixel_pipelines.pixels_from_file(path, pixel_pipelines.TF_HALF_PIXEL_BILINEAR, 64)
    old_range = int(old.max()) - int(old.min())
    assert old_range < 100  # about 90..140, JPEG ringing aside
    assert int(release.max()) - int(release.min()) > 2 * old_range


def test_crop_offsets_round_half_away_from_zero():
    for h in list(range(1, 14)) + [231, 300, 375, 500]:
        for w in list(range(1, 14)) + [203, 300, 333, 500]:
            side = min(h, w)
            want = (int(ref.python2_round((h - side) / 2.0)),
                    int(ref.python2_round((w - side) / 2.0)), side)
            assert release_pixels.release_crop_box(h, w) == want, (h, w)
    # an odd margin puts the extra pixel before the crop, where floor division puts it after
    assert release_pixels.release_crop_box(5, 8) == (0, 2, 5)
    assert release_pixels.release_crop_box(300, 203) == (49, 0, 203)
    image = np.arange(5 * 8 * 3).reshape(5, 8, 3)
    np.testing.assert_array_equal(pixel_pipelines.center_crop(image), image[:, 1:6])


def test_bytescale_is_scipy_0_18():
    """scipy's own docstring example, the per-pixel reference, tables, a flat crop."""
    img = np.array([[91.06794177, 3.39058326, 84.4221549],
                    [73.88003259, 80.91433048, 4.88878881],
                    [51.53875334, 34.45808177, 27.5873488]])
    want = np.array([[255, 0, 236], [205, 225, 4], [140, 90, 70]], dtype=np.uint8)
    np.testing.assert_array_equal(ref.scipy_bytescale(img), want)
    np.testing.assert_array_equal(release_pixels.bytescale(img), want)
    rng = np.random.default_rng(3)
    for _ in range(200):
        lo, hi = sorted(rng.integers(0, 256, 2))
        values = np.arange(lo, hi + 1, dtype=np.float64)
        np.testing.assert_array_equal(release_pixels.bytescale_table(lo, hi)[lo:hi + 1],
                                      ref.scipy_bytescale(values.copy()), err_msg=f"{lo}..{hi}")
    flat = np.full((4, 4), 77.0)
    np.testing.assert_array_equal(release_pixels.bytescale(flat), np.zeros((4, 4), np.uint8))
    flat_record = release_pixels.release_pixels(np.full((9, 9, 3), 77, np.uint8), 4)
    np.testing.assert_array_equal(flat_record, np.zeros((4, 4, 3), np.uint8))


def test_round_trip_truncates_twenty_byte_values():
    """``(u / 127.5 - 1 + 1) * 255 / 2`` in float64, cast to uint8: 20 bytes come back
    one lower (docs/NUMERICS.md §7.1)."""
    u = np.arange(256, dtype=np.uint8).reshape(16, 16)
    x = ref.utils_colorize(u / 127.5 - 1.0)
    x += 1.0
    x *= 255.0 / 2.0
    want = x.astype("uint8")[:, :, 0].reshape(-1)
    np.testing.assert_array_equal(release_pixels.ROUND_TRIP_TABLE, want)
    lowered = np.nonzero(want != np.arange(256))[0]
    assert len(lowered) == 20 and (want[lowered] == lowered - 1).all()
    assert lowered.tolist()[:6] == [1, 2, 5, 9, 10, 13] and lowered.max() == 58


def _top_half_energy(image):
    """Share of a gray image's spectral energy above half the Nyquist frequency."""
    spectrum = np.abs(np.fft.fft2(image.astype(float) - image.mean())) ** 2
    f = np.abs(np.fft.fftfreq(image.shape[0]))
    return spectrum[(f[:, None] > 0.25) | (f[None, :] > 0.25)].sum() / spectrum.sum()


@pytest.mark.parametrize("size", [128, 64, 300])
def test_pillow_bilinear_is_the_documented_filter(size):
    """Pillow's BILINEAR on square crops = the numpy model of NUMERICS §7.1: triangle
    filter widened by the shrink factor (antialiasing), separable, 8-bit passes."""
    with Image.open(os.path.join(DATA, PHOTOS["flower"])) as im:
        rgb = np.asarray(im.convert("RGB"))[49:252]  # the 203 x 203 crop
    gray = np.asarray(Image.fromarray(rgb).convert("L"))
    for image in (rgb, gray):
        pil = np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))
        np.testing.assert_array_equal(pil, ref.pillow_bilinear_resize(image, size))
    if size < 203:  # shrinking: far less aliased energy than TF's two-tap bilinear
        pil = np.asarray(Image.fromarray(gray).resize((size, size), Image.BILINEAR))
        tf_like = pixel_pipelines.resize_bilinear(gray[:, :, None], size)[:, :, 0]
        assert _top_half_energy(pil) < 0.6 * _top_half_energy(tf_like)


def test_gray_given_as_rgb_equals_gray():
    """A TFDS array of a grayscale JPEG has three equal channels: same record as imread's
    2-D array."""
    with Image.open(os.path.join(DATA, PHOTOS["china"])) as im:
        gray = np.asarray(im.convert("L"))
    as_rgb = np.repeat(gray[:, :, None], 3, axis=2)
    np.testing.assert_array_equal(release_pixels.release_pixels(as_rgb, 64),
                                  release_pixels.release_pixels(gray, 64))
    np.testing.assert_array_equal(release_pixels.release_pixels(gray[:, :, None], 64),
                                  ref.record_from_array(gray, 64))


def test_images_the_release_could_not_take_are_refused():
    with pytest.raises(ValueError, match="2-channel"):
        release_pixels.release_pixels(np.zeros((20, 30, 2), np.uint8), 8)
    with pytest.raises(ValueError, match="side 3 or 4"):
        release_pixels.release_pixels(np.zeros((3, 30, 3), np.uint8), 8)
    with pytest.raises(ValueError, match="empty"):
        release_pixels.release_pixels(np.zeros((0, 30, 3), np.uint8), 8)
    with pytest.raises(ValueError, match="unknown pixel pipeline"):
        pixel_pipelines.pixels_from_array(np.zeros((9, 9, 3), np.uint8), "bicubic", 8)


def test_compare_tool_reports_against_golden_records(tmp_path):
    """tools/parity/compare_pixel_pipelines.py: release vs a golden .npz (here the reference's
    records, as tools/parity/release_pixels_py27.py writes them) and vs the old pipeline."""
    paths = [os.path.join(DATA, name) for name in sorted(PHOTOS.values())]
    golden = str(tmp_path / "golden.npz")
    np.savez(golden, **{os.path.basename(p): ref.record_from_file(p, 64) for p in paths})
    repo = os.path.dirname(os.path.dirname(DATA))
    tool = os.path.join(repo, "tools", "parity", "compare_pixel_pipelines.py")
    env = dict(os.environ, PYTHONPATH=repo + os.pathsep + os.environ.get("PYTHONPATH", ""))
    run = subprocess.run([sys.executable, tool, "--image_size", "64", "--golden", golden]
                         + paths, capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.splitlines()
    assert len(lines) == 2
    for line in lines:
        assert "release vs golden: mean  0.000, >2   0.00%, max   0" in line, line
        old_mean = float(line.split("tf_half_pixel_bilinear vs release: mean")[1].split(",")[0])
        assert old_mean > 4, line
