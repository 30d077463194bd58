"""A numpy oracle of the release's networks, written from docs/NUMERICS.md alone.

Nothing here imports sagan_tf or TensorFlow. Parameters are a dict keyed by
the release's checkpoint names (NUMERICS §10, e.g. `model/g_block1/cbn_0/gamma`).
Forward functions return the output and a dict of the state the release
would write (`u`, BN moving statistics), without changing `params`.
"""
import numpy as np

F = np.float64  # compute in float64: the oracle should be more exact than the port


def l2n(x):
    return x / (np.sqrt(np.sum(x ** 2)) + 1e-12)


def spectral_norm(w, u):
    """NUMERICS §1: returns (w / sigma, u_new, sigma)."""
    w = np.asarray(w, F)
    w_mat = w.reshape(-1, w.shape[-1])
    v = l2n(u @ w_mat.T)
    u_new = l2n(v @ w_mat)
    sigma = (v @ w_mat @ u_new.T).item()
    return w / sigma, u_new, sigma


def conv2d_same(x, w, b=None):
    """Stride-1 SAME conv, x [B,H,W,Cin], w [k,k,Cin,Cout] (odd k)."""
    k = w.shape[0]
    p = (k - 1) // 2
    xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    h, wd = x.shape[1], x.shape[2]
    out = np.zeros(x.shape[:3] + (w.shape[-1],), F)
    for i in range(k):
        for j in range(k):
            out += np.einsum("bhwc,cd->bhwd", xp[:, i:i + h, j:j + wd, :], w[i, j])
    if b is not None:
        out = out + b
    return out


def avgpool2(x):
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def maxpool2(x):
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def upsample2(x):
    return x.repeat(2, axis=1).repeat(2, axis=2)


def relu(x):
    return np.maximum(x, 0)


def softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


class _Net:
    """Reads params by name, records state updates."""

    def __init__(self, params, update_sn):
        self.p = params
        self.update_sn = update_sn
        self.new_state = {}

    def w_bar(self, scope, wname):
        w = self.p[f"{scope}/{wname}"]
        u_key = f"{scope}/u"
        u = self.new_state.get(u_key, self.p[u_key])
        w_bar, u_new, _ = spectral_norm(w, np.asarray(u, F))
        if self.update_sn:
            self.new_state[u_key] = u_new
        return w_bar

    def snconv(self, x, scope, bias=True):
        w = self.w_bar(scope, "w")
        return conv2d_same(x, w, self.p[f"{scope}/biases"] if bias else None)

    def snlinear(self, x, scope):
        return x @ self.w_bar(scope, "Matrix") + self.p[f"{scope}/bias"]

    def sn_embedding(self, y, scope):
        emb = self.p[f"{scope}/embedding_map"]
        u_key = f"{scope}/u"
        w_bar_t, u_new, _ = spectral_norm(np.asarray(emb, F).T, np.asarray(self.p[u_key], F))
        if self.update_sn:
            self.new_state[u_key] = u_new
        return w_bar_t.T[y]

    def cbn(self, x, y, scope, training, decay=0.999, eps=1e-5):
        gamma = self.p[f"{scope}/gamma"][y][:, None, None, :]
        beta = self.p[f"{scope}/beta"][y][:, None, None, :]
        if training:
            mean = x.mean(axis=(0, 1, 2), keepdims=True)
            var = x.var(axis=(0, 1, 2), keepdims=True)
            self.new_state[f"{scope}/mean"] = self.p[f"{scope}/mean"] * decay + mean * (1 - decay)
            self.new_state[f"{scope}/var"] = self.p[f"{scope}/var"] * decay + var * (1 - decay)
        else:
            mean, var = self.p[f"{scope}/mean"], self.p[f"{scope}/var"]
        return (x - mean) / np.sqrt(var + eps) * gamma + beta

    def final_bn(self, x, scope, training, decay=0.9999, eps=1.001e-5):
        gamma, beta = self.p[f"{scope}/gamma"], self.p[f"{scope}/beta"]
        if training:
            mean = x.mean(axis=(0, 1, 2))
            var = x.var(axis=(0, 1, 2))
            n = x.shape[0] * x.shape[1] * x.shape[2]
            self.new_state[f"{scope}/moving_mean"] = (
                self.p[f"{scope}/moving_mean"] * decay + mean * (1 - decay))
            self.new_state[f"{scope}/moving_variance"] = (
                self.p[f"{scope}/moving_variance"] * decay + var * n / (n - 1) * (1 - decay))
        else:
            mean, var = self.p[f"{scope}/moving_mean"], self.p[f"{scope}/moving_variance"]
        return (x - mean) / np.sqrt(var + eps) * gamma + beta

    def attention(self, x, scope):
        """NUMERICS §3, the release's pooled block."""
        b, h, w, c = x.shape
        n = h * w
        theta = self.snconv(x, f"{scope}/sn_conv_theta", bias=False).reshape(b, n, c // 8)
        phi = maxpool2(self.snconv(x, f"{scope}/sn_conv_phi", bias=False)).reshape(b, n // 4, c // 8)
        attn = softmax(theta @ phi.transpose(0, 2, 1))
        g = maxpool2(self.snconv(x, f"{scope}/sn_conv_g", bias=False)).reshape(b, n // 4, c // 2)
        o = (attn @ g).reshape(b, h, w, c // 2)
        o = self.snconv(o, f"{scope}/sn_conv_attn", bias=False)
        return x + self.p[f"{scope}/sigma_ratio"] * o

    def slide_attention(self, x, scope):
        """The paper-slide variant: f, g (C/8), h (C), no pooling, no output conv."""
        b, h, w, c = x.shape
        n = h * w
        f = self.snconv(x, f"{scope}/sn_conv_f", bias=False).reshape(b, n, c // 8)
        g = self.snconv(x, f"{scope}/sn_conv_g", bias=False).reshape(b, n, c // 8)
        hh = self.snconv(x, f"{scope}/sn_conv_h", bias=False).reshape(b, n, c)
        o = (softmax(f @ g.transpose(0, 2, 1)) @ hh).reshape(b, h, w, c)
        return x + self.p[f"{scope}/sigma_ratio"] * o


def generator_forward(params, z, y, gf_dim, block_multipliers, attention_after,
                      training=True, update_sn=True):
    """NUMERICS §4 generator. `block_multipliers` e.g. [16, 8, 4, 2, 1] at 128x128;
    attention after the 1-based block `attention_after` (3 for `test`), or None."""
    net = _Net(params, update_sn)
    z = np.asarray(z, F)
    h = net.snlinear(z, "model/g_snh0").reshape(-1, 4, 4, 16 * gf_dim)
    for i, mult in enumerate(block_multipliers, start=1):
        s = f"model/g_block{i}"
        x = h
        h = relu(net.cbn(x, y, f"{s}/cbn_0", training))
        h = net.snconv(upsample2(h), f"{s}/snconv1")
        h = relu(net.cbn(h, y, f"{s}/cbn_1", training))
        h = net.snconv(h, f"{s}/snconv2")
        h = net.snconv(upsample2(x), f"{s}/snconv3") + h
        if i == attention_after:
            h = net.attention(h, "model/g_non_local")
    h = relu(net.final_bn(h, "model/g_bn", training))
    return np.tanh(net.snconv(h, "model/g_snconv_last")), net.new_state


def discriminator_forward(params, x, y, df_dim, block_multipliers, attention_after,
                          update_sn=True, return_features=False):
    """NUMERICS §4 discriminator. `block_multipliers` of the downsampling blocks,
    e.g. [1, 2, 4, 8, 16] at 128 (the first is the optimized block), followed
    by a non-downsampling 16x block; attention after the 1-based block index."""
    net = _Net(params, update_sn)
    h = np.asarray(x, F)
    # optimized block
    s = "model/d_optimized_block1"
    x0 = h
    h = relu(net.snconv(h, f"{s}/sn_conv1"))
    h = avgpool2(net.snconv(h, f"{s}/sn_conv2"))
    h = net.snconv(avgpool2(x0), f"{s}/sn_conv3") + h
    if attention_after == 1:
        h = net.attention(h, "model/d_non_local")
    blocks = [(m * df_dim, True) for m in block_multipliers[1:]] + [(16 * df_dim, False)]
    for i, (out, down) in enumerate(blocks, start=2):
        s = f"model/d_block{i}"
        x0 = h
        h = net.snconv(relu(h), f"{s}/sn_conv1")
        h = net.snconv(relu(h), f"{s}/sn_conv2")
        if down:
            h = avgpool2(h)
        if down or x0.shape[-1] != out:
            x0 = net.snconv(x0, f"{s}/sn_conv3")
            if down:
                x0 = avgpool2(x0)
        h = x0 + h
        if i == attention_after:
            h = net.attention(h, "model/d_non_local")
    h = relu(h).sum(axis=(1, 2))
    logits = net.snlinear(h, "model/d_sn_linear")
    logits = logits + np.sum(h * net.sn_embedding(y, "model/d_embedding"), axis=1, keepdims=True)
    if return_features:
        return logits, h, net.new_state
    return logits, net.new_state


def random_params(shapes, rng):
    """Random values for `{name: shape}`: gammas near 1, variances positive."""
    params = {}
    for name, shape in shapes.items():
        leaf = name.rsplit("/", 1)[-1]
        if leaf in ("var", "moving_variance"):
            params[name] = rng.uniform(0.5, 1.5, shape)
        elif leaf == "gamma":
            params[name] = rng.uniform(0.5, 1.5, shape)
        elif leaf == "sigma_ratio":
            params[name] = np.asarray(rng.uniform(0.5, 1.0))
        elif leaf in ("w", "Matrix", "embedding_map"):
            fan = np.prod(shape[:-1])
            params[name] = rng.normal(0, 1.0 / np.sqrt(fan), shape)
        elif leaf == "u":
            params[name] = rng.normal(0, 1.0, shape)
        else:  # biases, betas, moving means
            params[name] = rng.normal(0, 0.1, shape)
    return params
