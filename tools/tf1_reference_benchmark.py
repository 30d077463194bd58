r"""Times the 2018 release's training iteration as a TF1 graph (the baseline of issue #5).

The reference figures the port is measured against ("the original TF1 release
under ``tf.compat.v1``") come from a graph-mode session, not from this
package. This tool rebuilds that graph from SPEC.md with ``tf.compat.v1``
the way the release wrote it -- ``get_variable`` under ``model/g_*`` /
``model/d_*`` scopes (SPEC §10 names), spectral norm with the ``u`` write as
a control dependency of ``W_bar``, conditional BN with the moving-statistics
writes as control dependencies, the fused ``g_bn``, two D calls (real with
the ``u`` update, fake with ``NO_OPS``), and two ``AdamOptimizer.minimize``
train ops -- and times what TF-GAN's sequential train hooks ran per
iteration: ``sess.run(g_train_op)`` then ``sess.run(d_train_op)``, with z and
the fake labels drawn in the graph and fixed random real images (no input
pipeline, like ``tools/benchmark.py``). It prints one JSON line with the same
timing keys as ``tools/benchmark.py``, so both can be run back to back on one
machine:

  python tools/tf1_reference_benchmark.py --gf_dim 16 --df_dim 16 \
      --number_classes 10 --batch_size 8 --threads 2
  python tools/benchmark.py --gf_dim 16 --df_dim 16 --number_classes 10 \
      --batch_size 8 --threads 2

``--trace_file`` writes the per-op timings of one iteration (Chrome trace
format, from ``RunMetadata.step_stats``) for op-by-op comparisons.

Only the 128x128 ``test``/``baseline`` layout of SPEC §4 is built (the
release hard-wires 128x128). This is a timing baseline, not part of the
library: nothing in ``sagan_tf`` imports it.
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from sagan_tf import cli  # noqa: E402

FLAGS = flags.FLAGS
NO_OPS = "NO_OPS"


def build_release_graph(tf, batch_size, gf_dim, df_dim, z_dim, number_classes, arch="test"):
    """Builds the release's G and D train ops in the current (v1) graph.

    Returns a dict with ``g_train_op``, ``d_train_op``, ``d_loss``, ``g_loss``,
    ``model_variables`` (``{release name: shape}``) and ``parameters``
    (trainable scalars).
    """
    import numpy as np
    v1 = tf.compat.v1
    glorot = v1.glorot_uniform_initializer()

    def l2n(x):
        return x / (tf.sqrt(tf.reduce_sum(tf.square(x))) + 1e-12)

    def spectral_normed_weight(w, update_collection):
        # SPEC §1; the release writes u as a control dependency of W_bar.
        w_shape = w.shape.as_list()
        w_mat = tf.reshape(w, [-1, w_shape[-1]])
        u = v1.get_variable("u", [1, w_shape[-1]], initializer=v1.truncated_normal_initializer(),
                            trainable=False)
        v_hat = l2n(tf.matmul(u, w_mat, transpose_b=True))
        u_hat = l2n(tf.matmul(v_hat, w_mat))
        sigma = tf.squeeze(tf.matmul(tf.matmul(v_hat, w_mat), u_hat, transpose_b=True))
        if update_collection != NO_OPS:
            with tf.control_dependencies([u.assign(u_hat)]):
                return tf.identity(w / sigma)
        return w / sigma

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
            b = v1.get_variable("bias", [out], initializer=v1.zeros_initializer())
            return tf.matmul(x, spectral_normed_weight(m, update_collection)) + b

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
        b, h, w, c = x.shape.as_list()
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
        with v1.variable_scope(name):
            h = upsample(tf.nn.relu(conditional_bn(x, y, "cbn_0")))
            h = snconv2d(h, out, 3, "snconv1", None)
            h = tf.nn.relu(conditional_bn(h, y, "cbn_1"))
            h = snconv2d(h, out, 3, "snconv2", None)
            return snconv2d(upsample(x), out, 1, "snconv3", None) + h

    def generator(z, y):
        with v1.variable_scope("model", reuse=v1.AUTO_REUSE):
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
        with v1.variable_scope("model", reuse=v1.AUTO_REUSE):
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

    rs = np.random.default_rng(0)
    real = tf.constant(rs.uniform(-1, 1, (batch_size, 128, 128, 3)).astype("float32"))
    real_labels = tf.constant(rs.integers(0, number_classes, batch_size).astype("int32"))
    z = v1.random_normal([batch_size, z_dim])
    fake_labels = v1.random_uniform([batch_size], 0, number_classes, dtype=tf.int32)
    fake = generator(z, fake_labels)
    d_real = discriminator(real, real_labels, None)
    d_fake = discriminator(fake, fake_labels, NO_OPS)
    d_loss = tf.reduce_mean(tf.nn.relu(1.0 - d_real)) + tf.reduce_mean(tf.nn.relu(1.0 + d_fake))
    g_loss = -tf.reduce_mean(d_fake)
    t_vars = v1.trainable_variables()
    g_vars = [v for v in t_vars if v.name.startswith("model/g_")]
    d_vars = [v for v in t_vars if v.name.startswith("model/d_")]
    d_opt = v1.train.AdamOptimizer(4e-4, beta1=0.0, beta2=0.999)
    g_opt = v1.train.AdamOptimizer(1e-4, beta1=0.0, beta2=0.999)
    return {"g_train_op": g_opt.minimize(g_loss, var_list=g_vars),
            "d_train_op": d_opt.minimize(d_loss, var_list=d_vars),
            "g_loss": g_loss, "d_loss": d_loss,
            "model_variables": {v.name[:-2]: v.shape.as_list() for v in v1.global_variables()
                                if v.name.startswith("model/") and "Adam" not in v.name},
            "parameters": int(sum(np.prod(v.shape.as_list()) for v in g_vars + d_vars))}


class ReleaseGraphSession:
    """The release graph in its own ``tf.Graph`` and ``v1.Session``.

    ``iteration()`` runs one training iteration (``g_train_op``, then
    ``d_train_op``) and returns the D loss. Eager mode stays on in the
    calling process, so ``tools/benchmark.py --compare_tf1_reference`` can
    alternate iterations of this graph and of the port in one process.
    """

    def __init__(self, batch_size=8, gf_dim=16, df_dim=16, z_dim=128, number_classes=10,
                 arch="test", threads=0):
        import tensorflow as tf
        v1 = tf.compat.v1
        self.graph = tf.Graph()
        with self.graph.as_default():
            v1.set_random_seed(0)
            self._ops = build_release_graph(tf, batch_size, gf_dim, df_dim, z_dim,
                                            number_classes, arch)
            init = v1.global_variables_initializer()
        #: ``{release name: shape}`` of the model variables (SPEC §10).
        self.model_variables = self._ops["model_variables"]
        #: Trainable scalars (the port's ``count_parameters`` of G plus D).
        self.parameters = self._ops["parameters"]
        self.session = v1.Session(graph=self.graph, config=v1.ConfigProto(
            intra_op_parallelism_threads=threads, inter_op_parallelism_threads=threads))
        self.session.run(init)

    def iteration(self):
        # TF-GAN's sequential hooks: the G train op, then the D train op.
        self.session.run(self._ops["g_train_op"])
        _, d_loss = self.session.run([self._ops["d_train_op"], self._ops["d_loss"]])
        return float(d_loss)

    def write_trace(self, path):
        """Per-op timings of one G and one D train op (Chrome trace JSON)."""
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


def _benchmark_module():
    """tools/benchmark.py, loaded by path (its timing summary is shared)."""
    import importlib.util
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "benchmark.py")
    spec = importlib.util.spec_from_file_location("sagan_benchmark_tool", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_reference(batch_size=8, gf_dim=16, df_dim=16, z_dim=128, number_classes=10,
                  arch="test", threads=0, iterations=5, warmup=2, trace_file=None):
    """Builds the graph in a fresh v1 session, times it, returns the result dict.

    Keys: the timing keys of ``tools/benchmark.py``, ``first_iteration_seconds``,
    ``finite_loss``, ``parameters``, ``model_variables`` (``{release name:
    shape}``, SPEC §10) and ``config``.
    """
    import numpy as np
    import tensorflow as tf
    ref = ReleaseGraphSession(batch_size, gf_dim, df_dim, z_dim, number_classes, arch, threads)
    result = {"model_variables": ref.model_variables, "parameters": ref.parameters}
    try:
        t0 = time.perf_counter()
        loss = ref.iteration()
        result["first_iteration_seconds"] = time.perf_counter() - t0
        for _ in range(warmup - 1):
            ref.iteration()
        times = []
        for _ in range(iterations):
            t0 = time.perf_counter()
            loss = ref.iteration()
            times.append(time.perf_counter() - t0)
        if trace_file:
            ref.write_trace(trace_file)
    finally:
        ref.close()
    result.update(_benchmark_module()._timings(times, batch_size))
    result.update({
        "finite_loss": bool(np.isfinite(loss)),
        "config": dict(arch=arch, batch_size=batch_size, gf_dim=gf_dim, df_dim=df_dim,
                       z_dim=z_dim, number_classes=number_classes, threads=threads,
                       iterations=iterations, warmup=warmup, tensorflow=tf.__version__),
    })
    return result


def define_flags():
    flags.DEFINE_enum("arch", "test", ["test", "baseline"], "Generator and discriminator type.")
    flags.DEFINE_integer("gf_dim", 64, "Generator base channels.")
    flags.DEFINE_integer("df_dim", 64, "Discriminator base channels.")
    flags.DEFINE_integer("z_dim", 128, "Latent dimension.")
    flags.DEFINE_integer("number_classes", 1000, "Classes.")
    flags.DEFINE_integer("batch_size", 8, "Images per iteration (one tower).", lower_bound=1)
    flags.DEFINE_integer("threads", 0, "intra- and inter-op threads (0: TensorFlow's default).")
    flags.DEFINE_integer("iterations", 5, "Timed iterations.", lower_bound=0)
    flags.DEFINE_integer("warmup", 2, "Untimed iterations first.", lower_bound=1)
    flags.DEFINE_string("trace_file", None, "Write one iteration's per-op trace (JSON) here.")


def main(argv):
    cli.quiet_tensorflow()
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    result = run_reference(FLAGS.batch_size, FLAGS.gf_dim, FLAGS.df_dim, FLAGS.z_dim,
                           FLAGS.number_classes, FLAGS.arch, FLAGS.threads, FLAGS.iterations,
                           FLAGS.warmup, FLAGS.trace_file)
    result["model_variables"] = len(result["model_variables"])
    print(json.dumps(result, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    define_flags()
    cli.run(main)
