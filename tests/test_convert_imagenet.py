"""ImageNet -> records converter: sagan_tf/data/imagenet_records.py and
tools/convert_imagenet_to_records.py (the default pixel pipeline, the release's, is
checked against tests/improved_gan_reference.py; the pixels themselves on real photos
in tests/test_release_pixels.py)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import improved_gan_reference as ref
from sagan_tf.data import pipeline as data, record_format
from sagan_tf.data import imagenet_records as ir
from sagan_tf.data import pixel_pipelines as pp

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(REPO, "tools", "convert_imagenet_to_records.py")
S = 24  # upsamples the 20-pixel crop, downsamples the others


def _oracle(rgb, size=S):
    """tf_half_pixel_bilinear, independently: numpy centred crop, tf.image.resize bilinear."""
    h, w = rgb.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = rgb[top:top + side, left:left + side].astype(np.float32)
    resized = tf.image.resize(crop[None], [size, size], method="bilinear").numpy()[0]
    return np.clip(np.round(resized), 0, 255).astype(np.uint8)


def _assert_close(got, want):
    assert got.shape == want.shape and got.dtype == np.uint8
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1


@pytest.fixture(scope="module")
def image_tree(tmp_path_factory):
    """Three synsets (created out of order) of odd-sized images in awkward formats.

    Returns (root, {path: expected RGB uint8 source or None for the corrupt file}, order)
    with order the (path, label) pairs in sorted-synset, sorted-name order.
    """
    root = tmp_path_factory.mktemp("imagenet") / "train"
    rng = np.random.default_rng(0)
    expected = {}

    def rgb(h, w):
        return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)

    def add(synset, name, save):
        folder = root / synset
        folder.mkdir(parents=True, exist_ok=True)
        path = str(folder / name)
        expected[path] = save(path)

    def jpeg_rgb(path, h=37, w=53):
        Image.fromarray(rgb(h, w)).save(path, format="JPEG", quality=95)
        return np.asarray(Image.open(path).convert("RGB"))

    def png_rgb(path, h=61, w=29):
        arr = rgb(h, w)
        Image.fromarray(arr).save(path, format="PNG")
        return arr

    def gray_jpeg(path):
        Image.fromarray(rng.integers(0, 256, (40, 41), dtype=np.uint8), "L").save(
            path, format="JPEG")
        gray = np.asarray(Image.open(path))
        assert gray.ndim == 2
        return np.repeat(gray[:, :, None], 3, axis=2)

    def cmyk_jpeg(path):
        cmyk = rng.integers(0, 256, (30, 45, 4), dtype=np.uint8)
        Image.fromarray(cmyk, "CMYK").save(path, format="JPEG")
        with Image.open(path) as im:
            assert im.mode == "CMYK"
            return np.asarray(im.convert("RGB"))

    def png_named_jpeg(path):
        rgba = rng.integers(0, 256, (33, 35, 4), dtype=np.uint8)
        Image.fromarray(rgba, "RGBA").save(path, format="PNG")  # .JPEG name, PNG content
        return rgba[:, :, :3]

    def palette_png(path):
        index = rng.integers(0, 4, (20, 28), dtype=np.uint8)
        palette = rng.integers(0, 256, (4, 3), dtype=np.uint8)
        im = Image.fromarray(index, "P")
        im.putpalette(palette.reshape(-1).tolist())
        im.save(path, format="PNG")
        return palette[index]

    def garbage(path):
        with open(path, "wb") as f:
            f.write(b"\xff\xd8\xff\xe0 definitely not a complete JPEG" * 3)
        return None

    add("n03000000", "a.JPEG", jpeg_rgb)
    add("n03000000", "b_palette.png", palette_png)
    add("n01000000", "z.JPEG", jpeg_rgb)
    add("n01000000", "m_tall.png", png_rgb)
    add("n02000000", "gray.JPEG", gray_jpeg)
    add("n02000000", "cmyk.JPEG", cmyk_jpeg)
    add("n02000000", "disguised_png.JPEG", png_named_jpeg)
    add("n02000000", "corrupt.JPEG", garbage)
    synsets = ["n01000000", "n02000000", "n03000000"]
    order = [(p, synsets.index(os.path.basename(os.path.dirname(p))))
             for p in sorted(expected, key=lambda p: (os.path.dirname(p), os.path.basename(p)))]
    return str(root), expected, order


def _read_records(directory):
    records = []
    for path in record_format.list_record_files(directory):
        for serialized in record_format.iter_serialized_records(path):
            ex = tf.train.Example.FromString(serialized).features.feature
            assert [ex[k].int64_list.value[0] for k in ("height", "width", "depth")] == [S, S, 3]
            records.append(record_format.decode_example_numpy(serialized))
    return records


# --------------------------------------------------------------------------- per image
@pytest.mark.parametrize("shape,size", [((37, 53, 3), 16), ((5, 5, 3), 24), ((61, 29, 3), 29),
                                        ((128, 128, 3), 128), ((300, 200, 3), 64)])
def test_resize_matches_tf_bilinear(shape, size):
    image = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    crop = pp.center_crop(image)
    want = tf.image.resize(crop[None].astype(np.float32), [size, size], "bilinear").numpy()[0]
    np.testing.assert_allclose(pp.resize_bilinear(crop, size), want, atol=1e-3)
    _assert_close(pp.center_crop_resize(image, size), _oracle(image, size))


def test_center_crop_is_largest_centred_square():
    image = np.arange(5 * 8 * 3).reshape(5, 8, 3)
    np.testing.assert_array_equal(pp.center_crop(image), image[:, 1:6])
    np.testing.assert_array_equal(pp.center_crop(image.transpose(1, 0, 2)),
                                  image.transpose(1, 0, 2)[1:6])


def test_load_image_rgb_handles_modes(image_tree):
    _, expected, _ = image_tree
    for path, want in expected.items():
        if want is None:
            with pytest.raises(Exception):
                pp.load_image_rgb(path)
            continue
        got = pp.load_image_rgb(path)
        assert got.dtype == np.uint8 and got.ndim == 3 and got.shape[2] == 3, path
        np.testing.assert_array_equal(got, want, err_msg=path)


# --------------------------------------------------------------------------- folder tool
def test_convert_image_folder_records_manifest_and_resume(image_tree, tmp_path):
    root, expected, order = image_tree
    out = str(tmp_path / "out")
    logs = []
    manifest = ir.convert_image_folder(root, out, image_size=S, num_shards=3, num_workers=2,
                                       shuffle=False, log=logs.append, progress_interval=0)
    # records: folder order minus the corrupt file, each against the oracle
    good = [(p, label) for p, label in order if expected[p] is not None]
    records = _read_records(out)
    assert len(records) == len(good) == 7
    for (image, label), (path, want_label) in zip(records, good):
        assert label == want_label, path
        np.testing.assert_array_equal(image, ref.record_from_file(path, S), err_msg=path)

    assert manifest == json.load(open(os.path.join(out, "manifest.json")))
    assert manifest["pixel_pipeline"] == "release"
    assert pp.records_pixel_pipeline(out)[0] == "release"
    assert manifest["synsets"] == ["n01000000", "n02000000", "n03000000"]
    assert manifest["images_per_class"] == {"n01000000": 2, "n02000000": 3, "n03000000": 2}
    assert manifest["num_images"] == 7 and manifest["num_skipped"] == 1
    assert manifest["skipped"][0]["file"].endswith(os.path.join("n02000000", "corrupt.JPEG"))
    assert manifest["skipped"][0]["error"]
    assert any("corrupt.JPEG" in line and "skipping" in line for line in logs)
    assert any("images/s" in line and "ETA" in line for line in logs)
    shards = sorted(f for f in os.listdir(out) if f.endswith(".tfrecords"))
    assert shards == [f"train-0000{k}-of-00003.tfrecords" for k in range(3)]
    assert not [f for f in os.listdir(out) if ".tmp" in f]

    # rerun: every shard is finished -> skipped, untouched
    paths = [os.path.join(out, s) for s in shards]
    before = {p: (os.stat(p).st_mtime_ns, open(p, "rb").read()) for p in paths}
    logs.clear()
    again = ir.convert_image_folder(root, out, image_size=S, num_shards=3, num_workers=1,
                                    shuffle=False, log=logs.append)
    assert sum("already finished" in line for line in logs) == 3
    assert {p: (os.stat(p).st_mtime_ns, open(p, "rb").read()) for p in paths} == before
    assert again["images_per_class"] == manifest["images_per_class"]
    assert again["skipped"] == manifest["skipped"]  # remembered from the first run

    # an interrupted run: one shard missing -> only it is rewritten, identically
    os.remove(paths[1])
    logs.clear()
    ir.convert_image_folder(root, out, image_size=S, num_shards=3, num_workers=1,
                            shuffle=False, log=logs.append)
    assert sum("already finished" in line for line in logs) == 2
    assert os.stat(paths[0]).st_mtime_ns == before[paths[0]][0]
    assert open(paths[1], "rb").read() == before[paths[1]][1]

    # other settings or another pixel pipeline into the same directory: refused
    with pytest.raises(FileExistsError, match="other inputs or settings"):
        ir.convert_image_folder(root, out, image_size=S + 8, num_shards=3, shuffle=False,
                                log=logs.append)
    with pytest.raises(FileExistsError, match="pixel pipeline 'release'.*asks for "
                                              "'tf_half_pixel_bilinear'"):
        ir.convert_image_folder(root, out, image_size=S, num_shards=3, shuffle=False,
                                log=logs.append, pixel_pipeline="tf_half_pixel_bilinear")


def test_tf_half_pixel_pipeline_and_conversions_from_before_it_was_named(image_tree, tmp_path):
    root, expected, order = image_tree
    out = str(tmp_path / "old")
    manifest = ir.convert_image_folder(root, out, image_size=S, num_shards=2, shuffle=False,
                                       log=lambda m: None,
                                       pixel_pipeline="tf_half_pixel_bilinear")
    good = [p for p, _ in order if expected[p] is not None]
    for (image, _), path in zip(_read_records(out), good):
        _assert_close(image, _oracle(expected[path]))
    assert manifest["pixel_pipeline"] == "tf_half_pixel_bilinear"
    assert pp.records_pixel_pipeline(out)[0] == "tf_half_pixel_bilinear"

    # A conversion written before pipelines were named: no pixel_pipeline anywhere.
    state_dir = os.path.join(out, ir.STATE_DIR)
    for name in os.listdir(state_dir):
        state = json.load(open(os.path.join(state_dir, name)))
        del state["settings"]["pixel_pipeline"]
        json.dump(state, open(os.path.join(state_dir, name), "w"))
    legacy = {k: v for k, v in manifest.items() if not k.startswith("pixel_pipeline")}
    legacy["resize"] = ("largest centred square crop, tf.image.resize bilinear (half-pixel "
                        "centres, no antialias), round to nearest")
    json.dump(legacy, open(os.path.join(out, "manifest.json"), "w"))
    assert pp.records_pixel_pipeline(out)[0] == "tf_half_pixel_bilinear"
    with pytest.raises(FileExistsError, match="'tf_half_pixel_bilinear', this run asks for "
                                              "'release'.*--pixel_pipeline tf_half_pixel"):
        ir.convert_image_folder(root, out, image_size=S, num_shards=2, shuffle=False,
                                log=lambda m: None)
    logs = []
    ir.convert_image_folder(root, out, image_size=S, num_shards=2, shuffle=False,
                            log=logs.append, pixel_pipeline="tf_half_pixel_bilinear")
    assert sum("already finished" in line for line in logs) == 2
    with pytest.raises(ValueError, match="--pixel_pipeline must be one of"):
        ir.convert_image_folder(root, str(tmp_path / "x"), pixel_pipeline="bicubic")


def test_records_pixel_pipeline_reads_the_manifest(tmp_path):
    assert pp.records_pixel_pipeline(str(tmp_path)) == (
        None, "no manifest.json beside the records")
    (tmp_path / "manifest.json").write_text(json.dumps({"dataset": "sagan_tf demo (x)"}))
    assert pp.records_pixel_pipeline(str(tmp_path))[0] == "demo"
    (tmp_path / "manifest.json").write_text(json.dumps({"pixel_pipeline": "lanczos"}))
    assert pp.records_pixel_pipeline(str(tmp_path))[0] is None
    (tmp_path / "manifest.json").write_text("{not json")
    name, how = pp.records_pixel_pipeline(str(tmp_path))
    assert name is None and "unreadable" in how
    lines = []
    pp.log_records("/r", "release", "/r/manifest.json", log=lines.append)
    pp.log_records("/r", "tf_half_pixel_bilinear", "/r/manifest.json", log=lines.append)
    pp.log_records("/r", None, "no manifest.json beside the records", log=lines.append)
    assert lines[0] == "Records: /r written by pixel pipeline 'release' (/r/manifest.json)"
    assert lines[2].startswith("WARNING: these are not the release's pixels")
    assert lines[3] == "Records: /r: pixel pipeline unknown (no manifest.json beside the records)"
    assert len(lines) == 4


def test_shuffled_conversion_spreads_the_same_records(image_tree, tmp_path):
    root, _, _ = image_tree
    ir.convert_image_folder(root, str(tmp_path / "plain"), image_size=S, num_shards=2,
                            shuffle=False, log=lambda m: None)
    ir.convert_image_folder(root, str(tmp_path / "mixed"), image_size=S, num_shards=2,
                            shuffle=True, seed=5, log=lambda m: None)
    plain = _read_records(str(tmp_path / "plain"))
    mixed = _read_records(str(tmp_path / "mixed"))
    key = lambda r: (r[1], r[0].tobytes())  # noqa: E731
    assert sorted(map(key, plain)) == sorted(map(key, mixed))
    assert [r[1] for r in plain] != [r[1] for r in mixed]
    # and the pipeline reads them
    ds = data.make_dataset(str(tmp_path / "mixed"), S, 7, 3, shuffle=False, repeat=False)
    images, labels = next(iter(ds))
    assert images.shape == (7, S, S, 3)
    np.testing.assert_array_equal(
        images.numpy(),
        np.stack([r[0] for r in mixed]).astype(np.float32) * np.float32(2 / 255) - 1)


def test_bad_folder_arguments(tmp_path, image_tree):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ir.convert_image_folder(str(tmp_path / "missing"), str(tmp_path / "o"))
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "x.JPEG").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="subfolder"):
        ir.convert_image_folder(str(tmp_path / "flat"), str(tmp_path / "o"))
    with pytest.raises(ValueError, match="num_shards"):
        ir.convert_image_folder(image_tree[0], str(tmp_path / "o"), num_shards=100)


def test_tool_cli_resumes_and_reports_progress(image_tree, tmp_path):
    root, _, _ = image_tree
    out = tmp_path / "cli"
    help_run = subprocess.run([sys.executable, TOOL, "--help"], capture_output=True,
                              text=True, timeout=60)
    assert help_run.returncode in (0, 1), help_run.stderr  # absl's --help exits 1
    for text in ("--imagenet_dir", "--tfds_name", "--num_shards", "--num_workers",
                 "centred square crop", "skips the finished shards", "--pixel_pipeline",
                 "tf_half_pixel_bilinear", "bytescale"):
        assert text in help_run.stdout, text

    args = ["--imagenet_dir", root, "--output_dir", str(out), "--image_size", str(S),
            "--num_shards", "2", "--seed", "1"]
    ir.convert_image_folder(root, str(out), image_size=S, num_shards=2, seed=1,
                            log=lambda m: None)
    first = out / "train-00000-of-00002.tfrecords"
    mtime = os.stat(first).st_mtime_ns
    os.remove(out / "train-00001-of-00002.tfrecords")
    run = subprocess.run([sys.executable, TOOL] + args + ["--num_workers", "2",
                                                          "--progress_interval", "0"],
                         capture_output=True, text=True, timeout=180, cwd=str(tmp_path))
    assert run.returncode == 0, run.stderr[-3000:]
    assert "train-00000-of-00002.tfrecords already finished" in run.stderr
    assert "images/s" in run.stderr and "ETA" in run.stderr
    assert os.stat(first).st_mtime_ns == mtime
    assert json.load(open(out / "manifest.json"))["num_images"] == 7
    assert json.load(open(out / "manifest.json"))["pixel_pipeline"] == "release"


# --------------------------------------------------------------------------- TFDS
def _tfds_builder_class():
    import tensorflow_datasets as tfds

    class SaganTfTestTinyImagenet(tfds.core.GeneratorBasedBuilder):
        """7 random images of odd sizes, 3 classes."""
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3)),
                "label": tfds.features.ClassLabel(names=["n01", "n02", "n03"])}))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            for i, (image, label) in enumerate(zip(*_tfds_source())):
                yield i, {"image": image, "label": label}

    return SaganTfTestTinyImagenet


def _tfds_source():
    rng = np.random.default_rng(7)
    shapes = [(20, 31), (17, 12), (16, 16), (9, 40), (33, 30), (24, 24), (50, 21)]
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in shapes]
    return images, [i % 3 for i in range(len(shapes))]


def _match_records(records, images, labels, same):
    """Each record matches (``same(image, record)``) exactly one distinct source image."""
    assert len(records) == len(images)
    unused = set(range(len(images)))
    for image, label in records:
        match = [i for i in unused if labels[i] == label and same(images[i], image)]
        assert len(match) == 1
        unused.discard(match[0])
    assert not unused


def test_convert_tfds(tmp_path):
    import tensorflow_datasets as tfds

    builder_class = _tfds_builder_class()
    tfds_dir = str(tmp_path / "tfds")
    builder_class(data_dir=tfds_dir).download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    out = str(tmp_path / "out")
    logs = []
    manifest = ir.convert_tfds("sagan_tf_test_tiny_imagenet", out, data_dir=tfds_dir,
                               image_size=S, num_shards=2, num_workers=1, log=logs.append)
    assert manifest["synsets"] == ["n01", "n02", "n03"]
    assert manifest["images_per_class"] == {"n01": 3, "n02": 2, "n03": 2}
    assert manifest["pixel_pipeline"] == "release"
    images, labels = _tfds_source()
    # every record is the release's record of a distinct source image (stored as PNG
    # by TFDS, decoded with PIL from those bytes: the source pixels exactly)
    _match_records(_read_records(out), images, labels,
                   lambda image, rec: np.array_equal(ref.record_from_array(image, S), rec))
    old_out = str(tmp_path / "old")
    ir.convert_tfds("sagan_tf_test_tiny_imagenet", old_out, data_dir=tfds_dir, image_size=S,
                    num_shards=1, log=lambda m: None, pixel_pipeline="tf_half_pixel_bilinear")
    _match_records(_read_records(old_out), images, labels, lambda image, rec: np.abs(
        _oracle(image).astype(int) - rec.astype(int)).max() <= 1)

    logs.clear()
    ir.convert_tfds("sagan_tf_test_tiny_imagenet", out, data_dir=tfds_dir, image_size=S,
                    num_shards=2, log=logs.append)
    assert sum("already finished" in line for line in logs) == 2
    with pytest.raises(FileNotFoundError, match="not prepared|cannot open"):
        ir.convert_tfds("sagan_tf_test_tiny_imagenet", str(tmp_path / "o2"),
                        data_dir=str(tmp_path / "empty_tfds"), image_size=S, num_shards=2)
