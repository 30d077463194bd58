"""sagan_tf.tfgan: TF-GAN's eval functions load on TF 2.21 without the package __init__."""
import sys

import numpy as np
import pytest
import tensorflow as tf

from sagan_tf import tfgan


def test_loads_functions_from_installed_tfgan_files():
    ns = tfgan.load_tfgan_eval()
    assert ns is tfgan.load_tfgan_eval()  # loaded once
    for name, sub in tfgan.EXPORTED_FUNCTIONS.items():
        fn = getattr(ns, name)
        assert fn is getattr(tfgan, name)
        # The function really is TF-GAN's: defined in the installed source file.
        assert fn.__module__ == f"tensorflow_gan.python.eval.{sub}"
        assert fn.__code__.co_filename.startswith(ns.package_dir)
    assert ns.classifier_metrics.eval_utils is ns.eval_utils


def test_no_stub_left_in_sys_modules():
    tfgan.load_tfgan_eval()
    leftovers = [m for m in sys.modules if m == "tensorflow_gan" or m.startswith("tensorflow_gan.")]
    assert leftovers == []


def test_package_init_still_broken_so_loader_is_needed():
    # Documents why the loader exists: the regular import fails on TF >= 2.16.
    if hasattr(tf, "estimator"):
        pytest.skip("this TensorFlow still has tf.estimator")
    with pytest.raises(AttributeError, match="estimator"):
        import tensorflow_gan  # noqa: F401
    tfgan.load_tfgan_eval()  # ...and the loader keeps working afterwards
    assert not [m for m in sys.modules if m == "tensorflow_gan"]


def test_unknown_attribute():
    with pytest.raises(AttributeError, match="no_such_function"):
        tfgan.no_such_function  # noqa: B018


def test_image_grid_layout():
    imgs = np.arange(4 * 2 * 3 * 3, dtype=np.float32).reshape(4, 2, 3, 3)
    grid = tfgan.image_grid(tf.constant(imgs), (2, 2), image_shape=(2, 3)).numpy()
    assert grid.shape == (1, 4, 6, 3)
    np.testing.assert_array_equal(grid[0, :2, :3], imgs[0])
    np.testing.assert_array_equal(grid[0, :2, 3:], imgs[1])
    np.testing.assert_array_equal(grid[0, 2:, :3], imgs[2])
    np.testing.assert_array_equal(grid[0, 2:, 3:], imgs[3])
