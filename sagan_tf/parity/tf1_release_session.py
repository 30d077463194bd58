r"""The release's TF1 graph in a ``v1.Session``: iterations, weights in and out.

``ReleaseGraphSession`` holds ``tf1_release_graph.build_release_graph`` in a
graph and session of its own (eager mode stays on in the caller) and runs
the release's iteration: ``sess.run(g_train_op)`` then
``sess.run(d_train_op)``. ``run_iterations`` runs it from given weights on
given inputs, the reference half of ``sagan_tf.parity.comparison``.

As a script it runs ``run_iterations`` in a process of its own
(``TF_ENABLE_ONEDNN_OPTS`` is read once per process), reading and writing
npz files (``write_parity_input`` / ``read_parity_output``)::

    python -m sagan_tf.parity.tf1_release_session --parity_input in.npz \
        --parity_output out.npz
"""
import argparse
import json
import sys

import numpy as np
import tensorflow as tf

from sagan_tf.parity.tf1_release_graph import build_release_graph

v1 = tf.compat.v1


class ReleaseGraphSession:
    """The release graph in its own ``tf.Graph`` and ``v1.Session``.

    Eager mode stays on in the calling process, so ``tools/perf/benchmark.py
    --compare_tf1_reference`` can alternate iterations of this graph and of
    the port in one process.
    """

    def __init__(self, batch_size=8, gf_dim=16, df_dim=16, z_dim=128, number_classes=10,
                 arch="test", threads=0, ref_variables=True):
        self.graph = tf.Graph()
        with self.graph.as_default():
            v1.set_random_seed(0)
            self._ops = build_release_graph(batch_size, gf_dim, df_dim, z_dim,
                                            number_classes, arch, ref_variables)
            init = v1.global_variables_initializer()
            self._placeholders = {name: v1.placeholder(v.dtype.base_dtype, v.shape)
                                  for name, v in self._ops["variables"].items()}
            self._loads = {name: v.assign(self._placeholders[name])
                           for name, v in self._ops["variables"].items()}
        #: ``{release name: shape}`` of the model variables (docs/NUMERICS.md §10).
        self.model_variables = self._ops["model_variables"]
        #: Trainable scalars (the port's ``count_parameters`` of G plus D).
        self.parameters = self._ops["parameters"]
        self.session = v1.Session(graph=self.graph, config=v1.ConfigProto(
            intra_op_parallelism_threads=threads, inter_op_parallelism_threads=threads))
        self.session.run(init)

    def _feed(self, **inputs):
        return {self._ops["inputs"][k]: v for k, v in inputs.items() if v is not None}

    def g_step(self, z=None, fake_labels=None, fetch_gradients=False):
        """``sess.run(g_train_op)``; returns ``(g_loss, {name: gradient} or None)``."""
        fetches = {"op": self._ops["g_train_op"], "loss": self._ops["g_loss"]}
        if fetch_gradients:
            fetches["grads"] = self._ops["g_grads"]
        out = self.session.run(fetches, self._feed(z=z, fake_labels=fake_labels))
        return float(out["loss"]), out.get("grads")

    def d_step(self, real_images=None, real_labels=None, z=None, fake_labels=None,
               fetch_gradients=False):
        """``sess.run(d_train_op)``; returns ``(d_loss, {name: gradient} or None)``."""
        fetches = {"op": self._ops["d_train_op"], "loss": self._ops["d_loss"]}
        if fetch_gradients:
            fetches["grads"] = self._ops["d_grads"]
        out = self.session.run(fetches, self._feed(
            real_images=real_images, real_labels=real_labels, z=z, fake_labels=fake_labels))
        return float(out["loss"]), out.get("grads")

    def iteration(self):
        """One training iteration (G op, then D op) with drawn inputs; returns the D loss."""
        self.g_step()
        return self.d_step()[0]

    def set_weights(self, weights):
        """Assigns ``{release name: array}`` to the model variables (every one must be given)."""
        missing = sorted(set(self._loads) - set(weights))
        if missing:
            raise KeyError(f"no value for {missing}")
        self.session.run(list(self._loads.values()),
                         {self._placeholders[n]: weights[n] for n in self._loads})

    def get_weights(self):
        """``{release name: array}`` of every model variable."""
        return self.session.run({n: v.value() for n, v in self._ops["variables"].items()})

    def write_trace(self, path):
        """Per-op timings of one G and one D train op (Chrome trace JSON)."""
        from tensorflow.python.client import timeline  # pylint: disable=import-outside-toplevel
        traces = {}
        for part in ("g", "d"):
            meta = v1.RunMetadata()
            self.session.run(self._ops[f"{part}_train_op"],
                             options=v1.RunOptions(trace_level=v1.RunOptions.FULL_TRACE),
                             run_metadata=meta)
            traces[part] = json.loads(timeline.Timeline(meta.step_stats)
                                      .generate_chrome_trace_format())
        with open(path, "w") as f:
            json.dump(traces, f)

    def close(self):
        """Closes the session."""
        self.session.close()


def run_iterations(config, weights, inputs, ref_variables=True):
    """Runs ``len(inputs["z_g"])`` release iterations from ``weights`` on given inputs.

    Args:
      config: dict with ``arch, batch_size, gf_dim, df_dim, z_dim, number_classes``.
      weights: ``{release name: array}`` initial model variables.
      inputs: arrays with a leading iteration axis: ``z_g, y_g`` (G step),
        ``z_d, y_d, x_real, y_real`` (D step).

    Returns:
      ``{"g_loss": [..], "d_loss": [..], "g_grads": {..}, "d_grads": {..},
      "weights": {..}}``: per-iteration losses, the first iteration's
      gradients (as the train ops applied them) and the final model variables.
    """
    session = ReleaseGraphSession(config["batch_size"], config["gf_dim"], config["df_dim"],
                                  config["z_dim"], config["number_classes"], config["arch"],
                                  ref_variables=ref_variables)
    try:
        session.set_weights(weights)
        result = {"g_loss": [], "d_loss": []}
        for k in range(len(inputs["z_g"])):
            g_loss, g_grads = session.g_step(inputs["z_g"][k], inputs["y_g"][k],
                                             fetch_gradients=k == 0)
            d_loss, d_grads = session.d_step(inputs["x_real"][k], inputs["y_real"][k],
                                             inputs["z_d"][k], inputs["y_d"][k],
                                             fetch_gradients=k == 0)
            result["g_loss"].append(g_loss)
            result["d_loss"].append(d_loss)
            if k == 0:
                result["g_grads"], result["d_grads"] = g_grads, d_grads
        result["weights"] = session.get_weights()
        return result
    finally:
        session.close()


def write_parity_input(path, config, weights, inputs):
    """Writes what ``run_iterations`` takes to an npz (``config:``, ``weights:``
    and ``inputs:`` prefixed keys), for a process of its own (``main``)."""
    arrays = {f"config:{k}": np.array(v) for k, v in config.items()}
    arrays.update({f"weights:{k}": v for k, v in weights.items()})
    arrays.update({f"inputs:{k}": v for k, v in inputs.items()})
    np.savez(path, **arrays)


def read_parity_input(path):
    """``(config, weights, inputs)`` from ``write_parity_input``'s npz."""
    with np.load(path) as data:
        config = {k[len("config:"):]: (str(data[k]) if data[k].dtype.kind == "U" else int(data[k]))
                  for k in data.files if k.startswith("config:")}
        weights = {k[len("weights:"):]: data[k] for k in data.files if k.startswith("weights:")}
        inputs = {k[len("inputs:"):]: data[k] for k in data.files if k.startswith("inputs:")}
    return config, weights, inputs


def write_parity_output(path, result):
    """Writes ``run_iterations``' result to an npz (``g_loss``, ``d_loss`` and
    ``g_grads:``, ``d_grads:``, ``weights:`` prefixed keys)."""
    flat = {"g_loss": np.array(result["g_loss"]), "d_loss": np.array(result["d_loss"])}
    for part in ("g_grads", "d_grads", "weights"):
        flat.update({f"{part}:{k}": v for k, v in result[part].items()})
    np.savez(path, **flat)


def read_parity_output(path):
    """``run_iterations``' result from ``write_parity_output``'s npz."""
    result = {"g_loss": [], "d_loss": [], "g_grads": {}, "d_grads": {}, "weights": {}}
    with np.load(path) as data:
        for key in data.files:
            if ":" in key:
                part, name = key.split(":", 1)
                result[part][name] = data[key]
            else:
                result[key] = list(data[key])
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parity_input", required=True,
                        help="npz of write_parity_input: config, weights, inputs")
    parser.add_argument("--parity_output", required=True, help="npz to write the results to")
    parser.add_argument("--resource_variables", action="store_true",
                        help="build on resource variables instead of the release's ref variables")
    args = parser.parse_args(argv)
    config, weights, inputs = read_parity_input(args.parity_input)
    result = run_iterations(config, weights, inputs, ref_variables=not args.resource_variables)
    write_parity_output(args.parity_output, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
