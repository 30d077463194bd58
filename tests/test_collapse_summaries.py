"""collapse/ summaries: read-only (bit-identical weights), and their values from oracles."""
import numpy as np
import pytest
import tensorflow as tf

from sagan_tf.models import layers
from sagan_tf.training.trainer import Trainer
from test_training import _inputs, _state, _tiny_config


def _sn_layers(model):
    # pylint: disable=protected-access
    return [l for l in model._flatten_layers(include_self=False, recursive=True)
            if isinstance(l, layers._SpectralNormBase) and l.use_sn]


def _first_moment(optimizer, variable):
    # pylint: disable=protected-access
    return optimizer._momentums[optimizer._get_variable_index(variable)]


def test_weights_bit_identical_with_and_without_and_values_match_oracles():
    on = Trainer(_tiny_config(data_dir="unused"), tf.distribute.get_strategy())
    off = Trainer(_tiny_config(data_dir="unused", collapse_summaries=False),
                  tf.distribute.get_strategy())
    start_on, start_off = _state(on), _state(off)
    assert all(np.array_equal(start_on[k], start_off[k]) for k in start_on)  # same seed

    rng = np.random.default_rng(3)
    batches = [_inputs(rng, on.config.z_dim) for _ in range(3)]
    d_sigma_before = {l.path: float(l.sigma()) for l in _sn_layers(on.discriminator)}
    for i, (x, y, noise) in enumerate(batches):
        m_on, _, _ = on.parity_iteration(on.make_inputs_from_global(x, y, noise))
        m_off, _, _ = off.parity_iteration(off.make_inputs_from_global(x, y, noise))
        if i == 0:
            first = {k: float(v) for k, v in m_on.items()}
            # beta1 = 0: Adam's first moment after step 1 is the last gradient.
            g_m = [_first_moment(on.g_optimizer, v) for v in on.generator.trainable_variables]
            d_m = [_first_moment(on.d_optimizer, v) for v in on.discriminator.trainable_variables]
            g_norm = np.sqrt(sum(np.sum(np.square(m.numpy(), dtype=np.float64)) for m in g_m))
            d_norm = np.sqrt(sum(np.sum(np.square(m.numpy(), dtype=np.float64)) for m in d_m))
        assert not any(k.startswith("collapse/") for k in m_off)
        for k in m_off:
            assert float(m_on[k]) == float(m_off[k]), k
    end_on, end_off = _state(on), _state(off)
    assert sum(not np.array_equal(start_on[k], end_on[k]) for k in end_on) > 0.9 * len(end_on)
    for k in end_on:  # the whole state: weights, u, BN statistics, optimiser slots
        assert end_on[k].tobytes() == end_off[k].tobytes(), k

    # Values of the first iteration against independent computations.
    assert first["collapse/g_grad_norm"] == pytest.approx(g_norm, rel=1e-5)
    assert first["collapse/d_grad_norm"] == pytest.approx(d_norm, rel=1e-5)
    share = first["collapse/real_positive_share"]
    assert 0 <= share <= 1 and share * len(batches[0][0]) == pytest.approx(
        round(share * len(batches[0][0])))
    # D's last spectral-norm call of the iteration (the D step) saw D's weights and
    # u as they stood before it: the layer's own sigma() on the starting state.
    sigmas = {k[len("collapse/sigma/"):]: v for k, v in first.items()
              if k.startswith("collapse/sigma/")}
    assert set(d_sigma_before) <= set(sigmas)
    assert {l.path for l in _sn_layers(on.generator)} <= set(sigmas)
    for path, sigma in d_sigma_before.items():
        assert sigmas[path] == pytest.approx(sigma, rel=1e-6), path


def test_collapse_plot_reads_the_event_files(tmp_path):
    from sagan_tf.evaluation import collapse_plot
    writer = tf.summary.create_file_writer(str(tmp_path))
    with writer.as_default():
        for step in (10, 20, 30):
            tf.summary.scalar("collapse/sigma/discriminator/d_block1/sn_conv1", step * 0.5,
                              step=step)
            tf.summary.scalar("collapse/sigma/generator/g_block1/snconv1", 1.0 + step,
                              step=step)
            tf.summary.scalar("collapse/g_grad_norm", 2.0 * step, step=step)
            tf.summary.scalar("collapse/d_grad_norm", 3.0 * step, step=step)
            tf.summary.scalar("collapse/real_positive_share", step / 40, step=step)
            tf.summary.text("text", "not a scalar", step=step)
    writer.flush()
    image, scalars = collapse_plot.plot_collapse_curves(str(tmp_path))
    assert scalars["collapse/d_grad_norm"] == [(10, 30.0), (20, 60.0), (30, 90.0)]
    assert "text" not in scalars and image.shape[2] == 3
    panels = collapse_plot.collapse_panels(scalars)
    assert [name for name, _ in panels[0].series] == ["d_block1/sn_conv1"]
    with pytest.raises(ValueError, match="no collapse/ summaries"):
        collapse_plot.collapse_panels({"d_loss": [(1, 0.5)]})
    with pytest.raises(FileNotFoundError, match="no TensorBoard event files"):
        collapse_plot.read_scalars(str(tmp_path / "nothing"))
