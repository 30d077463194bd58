r"""The 2018 release's training iteration as a TF1 graph: the reference of the parity tests.

This is not part of ``sagan_tf``: it rebuilds, with ``tf.compat.v1``, what
the release's ``model.py`` / ``ops.py`` / ``generator.py`` /
``discriminator.py`` / ``non_local.py`` built under TF 1.5
(docs/NUMERICS.md), so that the port can be compared with the release's
algorithm *as TF1 executed it*:

- **ref variables** (``use_resource=False``), as TF 1.5 created them. This
  matters: the read of a ref variable aliases its buffer, so the spectral-norm
  write ``u.assign(u_new)`` -- a control dependency of ``W_bar`` -- is what
  the backward pass of ``u @ W^T`` later reads (docs/NUMERICS.md §1.2).
  ``ref_variables=False`` builds the same graph on resource variables (the
  exact gradient), for comparison;
- ``get_variable`` under ``model/g_*`` and ``model/d_*`` (docs/NUMERICS.md
  §10 names), Glorot-uniform weights, truncated-normal ``u``;
- conditional BN with the moving-statistics writes as control dependencies,
  the fused ``g_bn`` with its updates;
- two D calls: reals with the ``u`` write, fakes with ``NO_OPS``;
- two ``AdamOptimizer`` (``compute_gradients`` + ``apply_gradients``), and an
  iteration is ``sess.run(g_train_op)`` then ``sess.run(d_train_op)`` (what
  TF-GAN's sequential train hooks ran), each with fresh inputs.

Only the release's 128x128 ``test`` / ``baseline`` layout is built (the
release hard-wires 128x128), on one tower.

Inputs are placeholders with defaults: without feeds each ``sess.run`` draws
its own z and fake labels (as the release did) and uses fixed random reals
(the benchmark); the parity tool feeds the port's inputs.

As a script it is the TF1 half of ``tools/release_parity.py``, run in a
process of its own (``TF_ENABLE_ONEDNN_OPTS`` is read once per process)::

    python tools/tf1_release_graph.py --parity_input in.npz --parity_output out.npz
"""
import argparse
import os
import sys

import numpy as np

NO_OPS = "NO_OPS"
#: The release's Adam settings (docs/NUMERICS.md §6).
D_LEARNING_RATE, G_LEARNING_RATE, BETA1, BETA2 = 4e-4, 1e-4, 0.0, 0.999


def build_release_graph(tf, batch_size, gf_dim, df_dim, z_dim, number_classes, arch="test",
                        ref_variables=True, seed=0):
    """Builds the release's G and D train ops in the current (v1) graph.

    Returns a dict with ``g_train_op``, ``d_train_op``, ``g_loss``, ``d_loss``,
    ``g_grads`` / ``d_grads`` (``{release name: gradient tensor}`` of the
    tensors the train ops apply), ``inputs`` (``{"z", "fake_labels",
    "real_images", "real_labels"}`` placeholders with defaults),
    ``variables`` (``{release name: variable}`` of the model, Adam slots
    excluded), ``model_variables`` (``{release name: shape}``) and
    ``parameters`` (trainable scalars).
    """
    v1 = tf.compat.v1
    glorot = v1.glorot_uniform_initializer()

    def l2n(x):
        # ops._l2normalize: eps added to the norm.
        return x / (tf.sqrt(tf.reduce_sum(tf.square(x))) + 1e-12)

    def spectral_normed_weight(w, update_collection):
        w_shape = w.shape.as_list()
        w_mat = tf.reshape(w, [-1, w_shape[-1]])
        u = v1.get_variable("u", [1, w_shape[-1]], initializer=v1.truncated_normal_initializer(),
                            trainable=False)
        v_hat = l2n(tf.matmul(u, w_mat, transpose_b=True))
        u_hat = l2n(tf.matmul(v_hat, w_mat))
        sigma = tf.squeeze(tf.matmul(tf.matmul(v_hat, w_mat), u_hat, transpose_b=True))
        w_mat = w_mat / sigma
        if update_collection is None:
            # The write is a control dependency of W_bar (the release's choice).
            with tf.control_dependencies([u.assign(u_hat)]):
                return tf.reshape(w_mat, w_shape)
        return tf.reshape(w_mat, w_shape)

    def snconv2d(x, out, k, name, update_collection, bias=True):
        with v1.variable_scope(name):
            w = v1.get_variable("w", [k, k, x.shape[-1], out], initializer=glorot)
            y = tf.nn.conv2d(x, spectral_normed_weight(w, update_collection), [1, 1, 1, 1], "SAME")
            if bias:
                y = tf.nn.bias_add(y, v1.get_variable("biases", [out],
                                                      initializer=v1.zeros_initializer()))
            return y

    def snlinear(x, out, name, update_collection):
        with v1.variable_scope(name):
            m = v1.get_variable("Matrix", [x.shape[-1], out], initializer=glorot)
            m_bar = spectral_normed_weight(m, update_collection)
            b = v1.get_variable("bias", [out], initializer=v1.zeros_initializer())
            return tf.matmul(x, m_bar) + b

    def sn_embedding(y, size, name, update_collection):
        with v1.variable_scope(name):
            emb = v1.get_variable("embedding_map", [number_classes, size], initializer=glorot)
            emb_bar = tf.transpose(spectral_normed_weight(tf.transpose(emb), update_collection))
            return tf.nn.embedding_lookup(emb_bar, y)

    def conditional_bn(x, y, name):
        c = x.shape[-1]
        with v1.variable_scope(name):
            gamma = v1.get_variable("gamma", [number_classes, c], initializer=v1.ones_initializer())
            beta = v1.get_variable("beta", [number_classes, c], initializer=v1.zeros_initializer())
            mean = v1.get_variable("mean", [1, 1, 1, c], initializer=v1.zeros_initializer(),
                                   trainable=False)
            var = v1.get_variable("var", [1, 1, 1, c], initializer=v1.ones_initializer(),
                                  trainable=False)
            g = tf.reshape(tf.gather(gamma, y), [-1, 1, 1, c])
            b = tf.reshape(tf.gather(beta, y), [-1, 1, 1, c])
            bm, bv = tf.nn.moments(x, [0, 1, 2], keepdims=True)
            updates = [mean.assign(mean * 0.999 + bm * 0.001), var.assign(var * 0.999 + bv * 0.001)]
            with tf.control_dependencies(updates):
                return tf.nn.batch_normalization(x, bm, bv, b, g, 1e-5)

    def final_bn(x, name):
        c = x.shape[-1]
        with v1.variable_scope(name):
            gamma = v1.get_variable("gamma", [c], initializer=v1.ones_initializer())
            beta = v1.get_variable("beta", [c], initializer=v1.zeros_initializer())
            mm = v1.get_variable("moving_mean", [c], initializer=v1.zeros_initializer(),
                                 trainable=False)
            mv = v1.get_variable("moving_variance", [c], initializer=v1.ones_initializer(),
                                 trainable=False)
            # tf.contrib.layers.batch_norm ran the fused kernel: epsilon
            # clamped to 1.001e-5, Bessel-corrected variance for the update.
            out, bm, bv = v1.nn.fused_batch_norm(x, gamma, beta, epsilon=1.001e-5, is_training=True)
            updates = [mm.assign(mm * 0.9999 + bm * 0.0001), mv.assign(mv * 0.9999 + bv * 0.0001)]
            with tf.control_dependencies(updates):
                return tf.identity(out)

    def upsample(x):
        h, w = x.shape[1], x.shape[2]
        return v1.image.resize_nearest_neighbor(x, [2 * h, 2 * w])

    def avg_pool(x):
        return tf.nn.avg_pool2d(x, 2, 2, "VALID")

    def non_local(x, name, update_collection):
        _, h, w, c = x.shape.as_list()
        n = h * w
        with v1.variable_scope(name):
            theta = tf.reshape(snconv2d(x, c // 8, 1, "sn_conv_theta", update_collection, False),
                               [-1, n, c // 8])
            phi = tf.nn.max_pool2d(snconv2d(x, c // 8, 1, "sn_conv_phi", update_collection, False),
                                   2, 2, "VALID")
            phi = tf.reshape(phi, [-1, n // 4, c // 8])
            attn = tf.nn.softmax(tf.matmul(theta, phi, transpose_b=True))
            g = tf.nn.max_pool2d(snconv2d(x, c // 2, 1, "sn_conv_g", update_collection, False),
                                 2, 2, "VALID")
            g = tf.reshape(g, [-1, n // 4, c // 2])
            o = tf.reshape(tf.matmul(attn, g), [-1, h, w, c // 2])
            o = snconv2d(o, c, 1, "sn_conv_attn", update_collection, False)
            sigma_ratio = v1.get_variable("sigma_ratio", [], initializer=v1.zeros_initializer())
            return x + sigma_ratio * o

    def g_block(x, y, out, name):
        # The release's generator always writes u (update_collection=None).
        with v1.variable_scope(name):
            h = upsample(tf.nn.relu(conditional_bn(x, y, "cbn_0")))
            h = snconv2d(h, out, 3, "snconv1", None)
            h = tf.nn.relu(conditional_bn(h, y, "cbn_1"))
            h = snconv2d(h, out, 3, "snconv2", None)
            return snconv2d(upsample(x), out, 1, "snconv3", None) + h

    def generator(z, y):
        with v1.variable_scope("model", reuse=v1.AUTO_REUSE, use_resource=not ref_variables):
            h = tf.reshape(snlinear(z, 4 * 4 * 16 * gf_dim, "g_snh0", None), [-1, 4, 4, 16 * gf_dim])
            for i, mult in enumerate([16, 8, 4, 2, 1], start=1):
                h = g_block(h, y, mult * gf_dim, f"g_block{i}")
                if i == 3 and arch == "test":
                    h = non_local(h, "g_non_local", None)
            h = tf.nn.relu(final_bn(h, "g_bn"))
            return tf.tanh(snconv2d(h, 3, 3, "g_snconv_last", None))

    def d_block(x, out, name, uc, downsample=True):
        with v1.variable_scope(name):
            h = snconv2d(tf.nn.relu(x), out, 3, "sn_conv1", uc)
            h = snconv2d(tf.nn.relu(h), out, 3, "sn_conv2", uc)
            if downsample:
                h = avg_pool(h)
            if downsample or x.shape[-1] != out:
                s = snconv2d(x, out, 1, "sn_conv3", uc)
                if downsample:
                    s = avg_pool(s)
            else:
                s = x
            return s + h

    def discriminator(x, y, uc):
        with v1.variable_scope("model", reuse=v1.AUTO_REUSE, use_resource=not ref_variables):
            with v1.variable_scope("d_optimized_block1"):
                h = snconv2d(x, df_dim, 3, "sn_conv1", uc)
                h = avg_pool(snconv2d(tf.nn.relu(h), df_dim, 3, "sn_conv2", uc))
                h = h + snconv2d(avg_pool(x), df_dim, 1, "sn_conv3", uc)
            h = d_block(h, 2 * df_dim, "d_block2", uc)
            if arch == "test":
                h = non_local(h, "d_non_local", uc)
            h = d_block(h, 4 * df_dim, "d_block3", uc)
            h = d_block(h, 8 * df_dim, "d_block4", uc)
            h = d_block(h, 16 * df_dim, "d_block5", uc)
            h = d_block(h, 16 * df_dim, "d_block6", uc, downsample=False)
            h = tf.reduce_sum(tf.nn.relu(h), [1, 2])
            logit = snlinear(h, 1, "d_sn_linear", uc)
            return logit + tf.reduce_sum(h * sn_embedding(y, 16 * df_dim, "d_embedding", uc),
                                         axis=1, keepdims=True)

    rs = np.random.default_rng(seed)
    inputs = {
        "z": v1.placeholder_with_default(v1.random_normal([batch_size, z_dim]),
                                         [batch_size, z_dim], name="z"),
        "fake_labels": v1.placeholder_with_default(
            v1.random_uniform([batch_size], 0, number_classes, dtype=tf.int32),
            [batch_size], name="fake_labels"),
        "real_images": v1.placeholder_with_default(
            rs.uniform(-1, 1, (batch_size, 128, 128, 3)).astype("float32"),
            [batch_size, 128, 128, 3], name="real_images"),
        "real_labels": v1.placeholder_with_default(
            rs.integers(0, number_classes, batch_size).astype("int32"), [batch_size],
            name="real_labels"),
    }
    fake = generator(inputs["z"], inputs["fake_labels"])
    d_real = discriminator(inputs["real_images"], inputs["real_labels"], None)
    d_fake = discriminator(fake, inputs["fake_labels"], NO_OPS)
    d_loss = tf.reduce_mean(tf.nn.relu(1.0 - d_real)) + tf.reduce_mean(tf.nn.relu(1.0 + d_fake))
    g_loss = -tf.reduce_mean(d_fake)
    t_vars = v1.trainable_variables()
    g_vars = [v for v in t_vars if v.name.startswith("model/g_")]
    d_vars = [v for v in t_vars if v.name.startswith("model/d_")]
    d_opt = v1.train.AdamOptimizer(D_LEARNING_RATE, beta1=BETA1, beta2=BETA2)
    g_opt = v1.train.AdamOptimizer(G_LEARNING_RATE, beta1=BETA1, beta2=BETA2)
    d_grads = d_opt.compute_gradients(d_loss, var_list=d_vars)
    g_grads = g_opt.compute_gradients(g_loss, var_list=g_vars)

    def name(v):
        return v.name[:-2]

    def dense(g):
        return tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g

    model_vars = [v for v in v1.global_variables()
                  if v.name.startswith("model/") and "Adam" not in v.name]
    return {"g_train_op": g_opt.apply_gradients(g_grads),
            "d_train_op": d_opt.apply_gradients(d_grads),
            "g_loss": g_loss, "d_loss": d_loss, "inputs": inputs,
            "g_grads": {name(v): dense(g) for g, v in g_grads},
            "d_grads": {name(v): dense(g) for g, v in d_grads},
            "variables": {name(v): v for v in model_vars},
            "model_variables": {name(v): v.shape.as_list() for v in model_vars},
            "parameters": int(sum(np.prod(v.shape.as_list()) for v in g_vars + d_vars))}


class ReleaseGraphSession:
    """The release graph in its own ``tf.Graph`` and ``v1.Session``.

    Eager mode stays on in the calling process, so ``tools/benchmark.py
    --compare_tf1_reference`` can alternate iterations of this graph and of
    the port in one process.
    """

    def __init__(self, batch_size=8, gf_dim=16, df_dim=16, z_dim=128, number_classes=10,
                 arch="test", threads=0, ref_variables=True):
        import tensorflow as tf
        v1 = tf.compat.v1
        self.graph = tf.Graph()
        with self.graph.as_default():
            v1.set_random_seed(0)
            self._ops = build_release_graph(tf, batch_size, gf_dim, df_dim, z_dim,
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
        import json
        import tensorflow as tf
        from tensorflow.python.client import timeline
        v1 = tf.compat.v1
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


def _flatten(result):
    flat = {"g_loss": np.array(result["g_loss"]), "d_loss": np.array(result["d_loss"])}
    for part in ("g_grads", "d_grads", "weights"):
        flat.update({f"{part}:{k}": v for k, v in result[part].items()})
    return flat


def unflatten(flat):
    """Inverse of the ``--parity_output`` layout."""
    result = {"g_loss": list(flat["g_loss"]), "d_loss": list(flat["d_loss"]),
              "g_grads": {}, "d_grads": {}, "weights": {}}
    for key in flat:
        if ":" in key:
            part, name = key.split(":", 1)
            result[part][name] = flat[key]
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parity_input", required=True,
                        help="npz from tools/release_parity.py: config, weights, inputs")
    parser.add_argument("--parity_output", required=True, help="npz to write the results to")
    parser.add_argument("--resource_variables", action="store_true",
                        help="build on resource variables instead of the release's ref variables")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with np.load(args.parity_input) as data:
        config = {k[len("config:"):]: (str(data[k]) if data[k].dtype.kind == "U" else int(data[k]))
                  for k in data.files if k.startswith("config:")}
        weights = {k[len("weights:"):]: data[k] for k in data.files if k.startswith("weights:")}
        inputs = {k[len("inputs:"):]: data[k] for k in data.files if k.startswith("inputs:")}
    result = run_iterations(config, weights, inputs, ref_variables=not args.resource_variables)
    np.savez(args.parity_output, **_flatten(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
