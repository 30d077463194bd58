r"""The 2018 release's training iteration as a TF1 graph: the reference the port is checked against.

An independent re-implementation, written from the release's ``model.py`` /
``ops.py`` / ``generator.py`` / ``discriminator.py`` / ``non_local.py`` as
they ran under TF 1.5 (docs/NUMERICS.md), with ``tf.compat.v1`` on TF1 ref
variables. It imports nothing of the port's model code, so that the port
(``sagan_tf.models.networks``, ``sagan_tf.training.trainer``) can be compared with the
release's algorithm *as TF1 executed it*:

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
  TF-GAN's sequential train hooks ran), each with fresh inputs
  (``tf1_release_session`` runs it).

Only the release's 128x128 ``test`` / ``baseline`` layout is built (the
release hard-wires 128x128), on one tower.

Inputs are placeholders with defaults: without feeds each ``sess.run`` draws
its own z and fake labels (as the release did) and uses fixed random reals
(the benchmarks); the parity comparison feeds the port's inputs.
"""
import numpy as np
import tensorflow as tf

v1 = tf.compat.v1

#: The update collection of a D pass that does not write ``u`` (the fakes').
NO_OPS = "NO_OPS"
#: The release's Adam settings (docs/NUMERICS.md §6).
D_LEARNING_RATE, G_LEARNING_RATE, BETA1, BETA2 = 4e-4, 1e-4, 0.0, 0.999


# The release's ops.py: spectral normalisation and the layers built on it.

def _l2normalize(x):
    # ops._l2normalize: eps added to the norm.
    return x / (tf.sqrt(tf.reduce_sum(tf.square(x))) + 1e-12)


def spectral_normed_weight(w, update_collection):
    """``w / sigma(w)`` by one power iteration from the variable ``u``
    (``[1, out]``); with ``update_collection=None`` the write of ``u`` is a
    control dependency of the result (the release's choice), with ``NO_OPS``
    there is no write."""
    w_shape = w.shape.as_list()
    w_mat = tf.reshape(w, [-1, w_shape[-1]])
    u = v1.get_variable("u", [1, w_shape[-1]], initializer=v1.truncated_normal_initializer(),
                        trainable=False)
    v_hat = _l2normalize(tf.matmul(u, w_mat, transpose_b=True))
    u_hat = _l2normalize(tf.matmul(v_hat, w_mat))
    sigma = tf.squeeze(tf.matmul(tf.matmul(v_hat, w_mat), u_hat, transpose_b=True))
    w_mat = w_mat / sigma
    if update_collection is None:
        with tf.control_dependencies([u.assign(u_hat)]):
            return tf.reshape(w_mat, w_shape)
    return tf.reshape(w_mat, w_shape)


def snconv2d(x, out, k, name, update_collection, bias=True):
    """SAME ``k x k`` convolution to ``out`` channels with a spectrally normed kernel."""
    with v1.variable_scope(name):
        w = v1.get_variable("w", [k, k, x.shape[-1], out],
                            initializer=v1.glorot_uniform_initializer())
        y = tf.nn.conv2d(x, spectral_normed_weight(w, update_collection), [1, 1, 1, 1], "SAME")
        if bias:
            y = tf.nn.bias_add(y, v1.get_variable("biases", [out],
                                                  initializer=v1.zeros_initializer()))
        return y


def snlinear(x, out, name, update_collection):
    """``x @ Matrix_bar + bias``, ``[B, in] -> [B, out]``."""
    with v1.variable_scope(name):
        m = v1.get_variable("Matrix", [x.shape[-1], out],
                            initializer=v1.glorot_uniform_initializer())
        m_bar = spectral_normed_weight(m, update_collection)
        b = v1.get_variable("bias", [out], initializer=v1.zeros_initializer())
        return tf.matmul(x, m_bar) + b


def sn_embedding(y, number_classes, size, name, update_collection):
    """Rows ``y`` of the spectrally normed ``[number_classes, size]`` embedding
    (normed as its transpose, the release's layout)."""
    with v1.variable_scope(name):
        emb = v1.get_variable("embedding_map", [number_classes, size],
                              initializer=v1.glorot_uniform_initializer())
        emb_bar = tf.transpose(spectral_normed_weight(tf.transpose(emb), update_collection))
        return tf.nn.embedding_lookup(emb_bar, y)


def conditional_bn(x, y, number_classes, name):
    """Batch norm of ``[B, H, W, C]`` with per-class ``gamma``/``beta``; the
    moving-statistics writes (momentum 0.999) are control dependencies."""
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
    """G's last batch norm (``g_bn``), as ``tf.contrib.layers.batch_norm`` ran it."""
    c = x.shape[-1]
    with v1.variable_scope(name):
        gamma = v1.get_variable("gamma", [c], initializer=v1.ones_initializer())
        beta = v1.get_variable("beta", [c], initializer=v1.zeros_initializer())
        mm = v1.get_variable("moving_mean", [c], initializer=v1.zeros_initializer(),
                             trainable=False)
        mv = v1.get_variable("moving_variance", [c], initializer=v1.ones_initializer(),
                             trainable=False)
        # The fused kernel: epsilon clamped to 1.001e-5, Bessel-corrected
        # variance for the update.
        out, bm, bv = v1.nn.fused_batch_norm(x, gamma, beta, epsilon=1.001e-5, is_training=True)
        updates = [mm.assign(mm * 0.9999 + bm * 0.0001), mv.assign(mv * 0.9999 + bv * 0.0001)]
        with tf.control_dependencies(updates):
            return tf.identity(out)


def upsample(x):
    """Nearest-neighbour 2x upsampling."""
    h, w = x.shape[1], x.shape[2]
    return v1.image.resize_nearest_neighbor(x, [2 * h, 2 * w])


def avg_pool(x):
    """2x2 average pooling, stride 2."""
    return tf.nn.avg_pool2d(x, 2, 2, "VALID")


def non_local(x, name, update_collection):
    """The release's non_local.py: self-attention over ``[B, H, W, C]``, keys
    and values max-pooled 2x2, residual scaled by ``sigma_ratio``."""
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


# The release's generator.py and discriminator.py (128x128 test/baseline).

class ReleaseNetworks:
    """G and D of one configuration, on ref variables under ``model/g_*`` and
    ``model/d_*`` (resource variables with ``ref_variables=False``); each
    call builds a pass that shares the variables of the earlier ones."""

    def __init__(self, gf_dim, df_dim, number_classes, arch="test", ref_variables=True):
        self.gf_dim, self.df_dim = gf_dim, df_dim
        self.number_classes, self.arch = number_classes, arch
        self.ref_variables = ref_variables

    def _model_scope(self):
        return v1.variable_scope("model", reuse=v1.AUTO_REUSE,
                                 use_resource=not self.ref_variables)

    def _g_block(self, x, y, out, name):
        # The release's generator always writes u (update_collection=None).
        with v1.variable_scope(name):
            h = upsample(tf.nn.relu(conditional_bn(x, y, self.number_classes, "cbn_0")))
            h = snconv2d(h, out, 3, "snconv1", None)
            h = tf.nn.relu(conditional_bn(h, y, self.number_classes, "cbn_1"))
            h = snconv2d(h, out, 3, "snconv2", None)
            return snconv2d(upsample(x), out, 1, "snconv3", None) + h

    def generator(self, z, y):
        """``[B, z_dim]``, ``[B]`` -> images ``[B, 128, 128, 3]`` in (-1, 1)."""
        gf_dim = self.gf_dim
        with self._model_scope():
            h = tf.reshape(snlinear(z, 4 * 4 * 16 * gf_dim, "g_snh0", None),
                           [-1, 4, 4, 16 * gf_dim])
            for i, mult in enumerate([16, 8, 4, 2, 1], start=1):
                h = self._g_block(h, y, mult * gf_dim, f"g_block{i}")
                if i == 3 and self.arch == "test":
                    h = non_local(h, "g_non_local", None)
            h = tf.nn.relu(final_bn(h, "g_bn"))
            return tf.tanh(snconv2d(h, 3, 3, "g_snconv_last", None))

    @staticmethod
    def _d_block(x, out, name, uc, downsample=True):
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

    def discriminator(self, x, y, uc):
        """Images ``[B, 128, 128, 3]``, labels ``[B]`` -> logits ``[B, 1]``;
        ``uc``: the update collection (None: write ``u``, ``NO_OPS``: don't)."""
        df_dim = self.df_dim
        with self._model_scope():
            with v1.variable_scope("d_optimized_block1"):
                h = snconv2d(x, df_dim, 3, "sn_conv1", uc)
                h = avg_pool(snconv2d(tf.nn.relu(h), df_dim, 3, "sn_conv2", uc))
                h = h + snconv2d(avg_pool(x), df_dim, 1, "sn_conv3", uc)
            h = self._d_block(h, 2 * df_dim, "d_block2", uc)
            if self.arch == "test":
                h = non_local(h, "d_non_local", uc)
            h = self._d_block(h, 4 * df_dim, "d_block3", uc)
            h = self._d_block(h, 8 * df_dim, "d_block4", uc)
            h = self._d_block(h, 16 * df_dim, "d_block5", uc)
            h = self._d_block(h, 16 * df_dim, "d_block6", uc, downsample=False)
            h = tf.reduce_sum(tf.nn.relu(h), [1, 2])
            logit = snlinear(h, 1, "d_sn_linear", uc)
            embedding = sn_embedding(y, self.number_classes, 16 * df_dim, "d_embedding", uc)
            return logit + tf.reduce_sum(h * embedding, axis=1, keepdims=True)


# The release's model.py: inputs, hinge losses, two Adam optimizers.

def release_inputs(batch_size, z_dim, number_classes, seed=0):
    """``{"z", "fake_labels", "real_images", "real_labels"}`` placeholders with
    defaults: z and fake labels drawn in the graph at every ``sess.run`` (as
    the release did), fixed random real images and labels (from ``seed``)."""
    rs = np.random.default_rng(seed)
    return {
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


def hinge_losses(d_real, d_fake):
    """``(d_loss, g_loss)``: ``mean relu(1 - D(x)) + mean relu(1 + D(G(z)))``
    and ``-mean D(G(z))``."""
    d_loss = tf.reduce_mean(tf.nn.relu(1.0 - d_real)) + tf.reduce_mean(tf.nn.relu(1.0 + d_fake))
    return d_loss, -tf.reduce_mean(d_fake)


def _release_name(v):
    return v.name[:-2]


def _dense(g):
    return tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g


def adam_train_ops(g_loss, d_loss):
    """The two ``AdamOptimizer`` (``compute_gradients`` + ``apply_gradients``)
    over the ``model/g_*`` and ``model/d_*`` trainable variables.

    Returns ``g_train_op``, ``d_train_op``, ``g_grads`` / ``d_grads``
    (``{release name: gradient}`` as the train ops apply them), ``variables``
    (``{release name: variable}`` of the model, Adam slots excluded),
    ``model_variables`` (``{release name: shape}``) and ``parameters``
    (trainable scalars).
    """
    t_vars = v1.trainable_variables()
    g_vars = [v for v in t_vars if v.name.startswith("model/g_")]
    d_vars = [v for v in t_vars if v.name.startswith("model/d_")]
    d_opt = v1.train.AdamOptimizer(D_LEARNING_RATE, beta1=BETA1, beta2=BETA2)
    g_opt = v1.train.AdamOptimizer(G_LEARNING_RATE, beta1=BETA1, beta2=BETA2)
    d_grads = d_opt.compute_gradients(d_loss, var_list=d_vars)
    g_grads = g_opt.compute_gradients(g_loss, var_list=g_vars)
    model_vars = [v for v in v1.global_variables()
                  if v.name.startswith("model/") and "Adam" not in v.name]
    return {"g_train_op": g_opt.apply_gradients(g_grads),
            "d_train_op": d_opt.apply_gradients(d_grads),
            "g_grads": {_release_name(v): _dense(g) for g, v in g_grads},
            "d_grads": {_release_name(v): _dense(g) for g, v in d_grads},
            "variables": {_release_name(v): v for v in model_vars},
            "model_variables": {_release_name(v): v.shape.as_list() for v in model_vars},
            "parameters": int(sum(np.prod(v.shape.as_list()) for v in g_vars + d_vars))}


def build_release_graph(batch_size, gf_dim, df_dim, z_dim, number_classes, arch="test",
                        ref_variables=True, seed=0):
    """Builds the release's G and D train ops in the current (v1) graph.

    Inputs (``release_inputs``), G on the fake inputs, D on the reals (with
    the ``u`` write) and on the fakes (``NO_OPS``), the hinge losses and the
    Adam train ops (``adam_train_ops``). Returns ``adam_train_ops``' dict
    with ``g_loss``, ``d_loss`` and ``inputs`` added.
    """
    nets = ReleaseNetworks(gf_dim, df_dim, number_classes, arch, ref_variables)
    inputs = release_inputs(batch_size, z_dim, number_classes, seed)
    fake = nets.generator(inputs["z"], inputs["fake_labels"])
    d_real = nets.discriminator(inputs["real_images"], inputs["real_labels"], None)
    d_fake = nets.discriminator(fake, inputs["fake_labels"], NO_OPS)
    d_loss, g_loss = hinge_losses(d_real, d_fake)
    return {**adam_train_ops(g_loss, d_loss), "g_loss": g_loss, "d_loss": d_loss,
            "inputs": inputs}
