"""How far the port's training iteration is from the release's, against the release's own noise.

The reference is the release's algorithm as TF1 executed it
(``tf1_release_graph``: a ``tf.compat.v1`` graph on ref variables), on
oneDNN's kernels. Its *noise floor* is the same graph run again on the other
kernels it could equally have run on (:data:`FLOOR_KERNELS`: Eigen's, and
oneDNN's capped at AVX and at SSE4.1; other blockings, other summation
orders, other rounding): per quantity, the largest distance of any of them
from the reference. One such run alone is a single draw of a chaotic
quantity (after a few Adam steps, a near-zero gradient whose sign flips
moves its weight by a whole learning rate) and under-states the spread.
Each runs in a process of its own (``Tf1Run``; the settings are read once
per process); the port runs in the calling one (``run_port``). All start
from the same weights (the port's initial weights, copied by the release's
variable names, attention ``sigma_ratio`` set non-zero so that attention
takes part) and get the same z, fake labels, real images and labels at
every step (``make_inputs``).

``compare`` measures, per case: the first-iteration gradients of G (G step)
and D (D step), per variable, ``max|port - ref| / max|ref|`` beside the
noise floor's largest ``max|noise - ref| / max|ref|``; after the iterations, the
fraction of trainable weights more than ``0.1 * lr`` away from the
reference; the per-step losses' largest relative difference.
``within_noise`` is the parity criterion on that report.
``tools/parity/release_parity.py`` prints the figures;
``tests/test_release_parity.py`` asserts the criterion.
"""
import os
import subprocess
import sys
import tempfile

import numpy as np

# The TF1 modules import TensorFlow: they are imported where they are used,
# so that a tool's --help does not start TensorFlow.

#: What is compared: small widths, the release's 128x128 layout.
DEFAULT_CASE = dict(gf_dim=8, df_dim=8, z_dim=16, number_classes=5, batch_size=4)
#: Attention's residual scale in the shared initial weights (0 at a real
#: initialisation would leave the attention convolutions without gradient).
SIGMA_RATIO = 0.3
#: A weight counts as "apart" beyond this fraction of its learning rate.
APART_FRACTION_OF_LR = 0.1
#: The kernels of the reference run (the variables a reference process gets).
REFERENCE_KERNELS = {"TF_ENABLE_ONEDNN_OPTS": "1"}
#: The kernels of the noise-floor runs, by name. ``ONEDNN_MAX_CPU_ISA`` caps
#: oneDNN below every x86-64 CPU's own ISA with AVX, so that each is a
#: different blocking from the reference's on any such machine.
FLOOR_KERNELS = {
    "Eigen": {"TF_ENABLE_ONEDNN_OPTS": "0"},
    "oneDNN avx": {"TF_ENABLE_ONEDNN_OPTS": "1", "ONEDNN_MAX_CPU_ISA": "AVX"},
    "oneDNN sse41": {"TF_ENABLE_ONEDNN_OPTS": "1", "ONEDNN_MAX_CPU_ISA": "SSE41"},
}


def make_inputs(config, iterations=4, seed=0):
    """The inputs of ``iterations`` iterations (numpy, leading iteration axis)."""
    rs = np.random.default_rng(seed)
    k, b, n = iterations, config["batch_size"], config["number_classes"]
    return {
        "z_g": rs.standard_normal((k, b, config["z_dim"])).astype(np.float32),
        "y_g": rs.integers(0, n, (k, b)).astype(np.int32),
        "z_d": rs.standard_normal((k, b, config["z_dim"])).astype(np.float32),
        "y_d": rs.integers(0, n, (k, b)).astype(np.int32),
        "x_real": rs.uniform(-1, 1, (k, b, 128, 128, 3)).astype(np.float32),
        "y_real": rs.integers(0, n, (k, b)).astype(np.int32),
    }


def run_port(config, inputs, sn_gradient="release", weights=None, seed=1,
             graph_optimization="auto"):
    """The port's iterations: ``(initial weights, result)`` in the layout of
    ``tf1_release_session.run_iterations``.

    The first iteration's gradients come from the Trainer's own G and D
    passes (``sagan_tf.training.passes``, eagerly, state written in place);
    the state is then restored from a checkpoint and every iteration runs
    through the compiled ``Trainer.parity_iteration`` on the release graph's
    noise, under ``graph_optimization`` (``TrainConfig.graph_optimization``).
    """
    import tensorflow as tf

    from sagan_tf.models.pass_state import IN_PLACE
    from sagan_tf.runs.legacy import spec_variable_map
    from sagan_tf.training import passes
    from sagan_tf.training.config import TrainConfig
    from sagan_tf.training.trainer import Trainer

    cfg = TrainConfig(
        data_dir="unused", image_size=128, gf_dim=config["gf_dim"], df_dim=config["df_dim"],
        z_dim=config["z_dim"], number_classes=config["number_classes"],
        batch_size=config["batch_size"], generator_type=config["arch"],
        discriminator_type=config["arch"], seed=seed, sn_gradient=sn_gradient,
        graph_optimization=graph_optimization)
    trainer = Trainer(cfg, tf.distribute.get_strategy())
    G, D = trainer.generator, trainer.discriminator
    variables = spec_variable_map(G, D)
    if weights is None:
        for name, var in variables.items():
            if name.endswith("sigma_ratio"):
                var.assign(SIGMA_RATIO)
        weights = {name: var.numpy() for name, var in variables.items()}
    else:
        for name, var in variables.items():
            var.assign(weights[name])

    def names(model):
        return ["model/" + v.path.split("/", 1)[1] for v in model.trainable_variables]

    result = {"g_loss": [], "d_loss": []}
    with tempfile.TemporaryDirectory() as tmp:
        start = trainer.checkpoint.write(os.path.join(tmp, "start"))
        _, g_grads = passes.generator_pass(trainer, IN_PLACE, None,
                                           inputs["z_g"][0], inputs["y_g"][0])
        trainer.g_optimizer.apply_gradients(zip(g_grads, G.trainable_variables))
        _, d_grads = passes.discriminator_pass(trainer, IN_PLACE, None, inputs["x_real"][0],
                                               inputs["y_real"][0], inputs["z_d"][0],
                                               inputs["y_d"][0])
        result["g_grads"] = {n: g.numpy() for n, g in zip(names(G), g_grads)}
        result["d_grads"] = {n: g.numpy() for n, g in zip(names(D), d_grads)}
        trainer.checkpoint.read(start).assert_consumed()
    for k in range(len(inputs["z_g"])):
        noise = {"g": [(inputs["z_g"][k], inputs["y_g"][k])],
                 "d": [(inputs["z_d"][k], inputs["y_d"][k])]}
        metrics, _, _ = trainer.parity_iteration(trainer.make_inputs_from_global(
            inputs["x_real"][k], inputs["y_real"][k], noise))
        result["g_loss"].append(float(metrics["g_loss"]))
        result["d_loss"].append(float(metrics["d_loss"]))
    result["weights"] = {name: var.numpy() for name, var in variables.items()}
    return weights, result


def _child_env(kernels):
    """The environment of a release-graph process: this one's with the
    ``kernels`` variables set, quiet, CPU only, and this ``sagan_tf`` first
    on the path (the child runs the same copy of the reference as this
    process imported)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="", PYTHONPATH=path,
                **kernels)


class Tf1Run:
    """The release graph run in a fresh process (``python -m
    sagan_tf.parity.tf1_release_session``), in the background, on
    ``kernels`` (environment variables; default :data:`REFERENCE_KERNELS`).

    ``result()`` waits for it and returns what
    ``tf1_release_session.run_iterations`` returned there.
    """

    def __init__(self, config, weights, inputs, kernels=None, resource_variables=False):
        from sagan_tf.parity import tf1_release_session  # pylint: disable=import-outside-toplevel
        self._tmp = tempfile.TemporaryDirectory()
        src = os.path.join(self._tmp.name, "in.npz")
        self._dst = os.path.join(self._tmp.name, "out.npz")
        tf1_release_session.write_parity_input(src, config, weights, inputs)
        self._cmd = [sys.executable, "-m", "sagan_tf.parity.tf1_release_session",
                     "--parity_input", src, "--parity_output", self._dst]
        if resource_variables:
            self._cmd.append("--resource_variables")
        env = _child_env(REFERENCE_KERNELS if kernels is None else kernels)
        self._proc = subprocess.Popen(self._cmd, env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, text=True)

    def result(self, timeout=900):
        """Waits for the process (at most ``timeout`` seconds); its result, or a
        RuntimeError with the end of its stderr."""
        try:
            _, stderr = self._proc.communicate(timeout=timeout)
            if self._proc.returncode != 0:
                raise RuntimeError(f"{' '.join(self._cmd)} failed:\n{stderr[-3000:]}")
            from sagan_tf.parity import \
                tf1_release_session  # pylint: disable=import-outside-toplevel
            return tf1_release_session.read_parity_output(self._dst)
        finally:
            self.close()

    def close(self):
        """Stops the process if it still runs and removes its files."""
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._tmp.cleanup()


class ReleaseRuns:
    """The reference run and the noise-floor runs (:data:`FLOOR_KERNELS`) of
    one case, started together in the background.

    ``results()`` waits for all: ``(reference result, {floor name: result})``;
    if one fails, the others are stopped and its error raised.
    """

    def __init__(self, config, weights, inputs):
        self._reference = Tf1Run(config, weights, inputs)
        self._floor = {name: Tf1Run(config, weights, inputs, kernels)
                       for name, kernels in FLOOR_KERNELS.items()}

    def results(self, timeout=900):
        """``(reference, {floor name: result})``, waiting at most ``timeout``
        seconds for each process."""
        try:
            reference = self._reference.result(timeout)
            return reference, {name: run.result(timeout) for name, run in self._floor.items()}
        finally:
            for run in (self._reference, *self._floor.values()):
                run.close()


def relative_error(a, ref):
    """``max|a - ref| / max|ref|`` (``max|a - ref|`` where ``ref`` is all zero)."""
    scale = float(np.abs(ref).max())
    err = float(np.abs(np.asarray(a, np.float64) - ref).max())
    return err / scale if scale > 0 else err


def within_noise(report, factor=4.0, floor=1e-6, apart_factor=1.2, apart_slack=0.01,
                 loss_factor=3.0, loss_floor=1e-5):
    """The parity criterion: ``[]`` if the port is within the noise floor, else what is not.

    ``noise`` is the noise floor: the largest distance of a floor run from
    the reference. Per variable: ``max|port - ref| <= factor * max|noise -
    ref| + floor * max|gradient|`` (the floor, relative to the largest
    gradient of that network, covers variables whose true gradient is ~0,
    such as biases followed by a batch norm). After the iterations: the fraction of
    weights apart at most ``apart_factor`` times the noise's plus
    ``apart_slack``; the losses' relative difference at most ``loss_factor``
    times the noise's plus ``loss_floor``.
    """
    failures = []
    scale = {}
    for name, r in report["gradients"].items():
        net = name[len("model/"):][0]
        scale[net] = max(scale.get(net, 0.0), r["scale"])
    for name, r in sorted(report["gradients"].items()):
        s = r["scale"] if r["scale"] > 0 else 1.0
        port_abs, noise_abs = r["port"] * s, r["noise"] * s
        bound = factor * noise_abs + floor * scale[name[len("model/"):][0]]
        if port_abs > bound:
            failures.append(f"gradient of {name}: port error {port_abs:.3g} > bound {bound:.3g} "
                            f"(noise floor {noise_abs:.3g}, max|gradient| {r['scale']:.3g})")
    apart, loss = report["apart"], report["loss"]
    if apart["port"] > apart_factor * apart["noise"] + apart_slack:
        failures.append(f"weights apart after the iterations: port {apart['port']:.1%} vs "
                        f"noise floor {apart['noise']:.1%}")
    if loss["port"] > loss_factor * loss["noise"] + loss_floor:
        failures.append(f"losses: port {loss['port']:.3g} vs noise floor {loss['noise']:.3g}")
    return failures


def compare(port, ref, floor):
    """Distances of ``port`` and of the noise floor from ``ref`` (results of one case).

    ``floor``: ``{name: result}`` of the floor runs; each quantity's
    ``"noise"`` is the largest of their distances, and ``"floor"`` keeps
    each run's weights apart and losses. Returns ``{"gradients": {name:
    {"port", "noise", "scale"}}, "apart": {"port", "noise", "floor"},
    "loss": {"port", "noise", "floor"}}``.
    """
    from sagan_tf.parity import tf1_release_graph  # pylint: disable=import-outside-toplevel
    report = {"gradients": {}}
    for part in ("g_grads", "d_grads"):
        for name, r in ref[part].items():
            report["gradients"][name] = {
                "port": relative_error(port[part][name], r),
                "noise": max(relative_error(f[part][name], r) for f in floor.values()),
                "scale": float(np.abs(r).max())}

    def apart(result):
        count = total = 0
        for part, lr in (("g_grads", tf1_release_graph.G_LEARNING_RATE),
                         ("d_grads", tf1_release_graph.D_LEARNING_RATE)):
            for name in ref[part]:
                diff = np.abs(result["weights"][name] - ref["weights"][name])
                count += int((diff > APART_FRACTION_OF_LR * lr).sum())
                total += diff.size
        return count / total

    def loss(result):
        return max(abs(a - b) / max(abs(b), 1e-12)
                   for key in ("g_loss", "d_loss") for a, b in zip(result[key], ref[key]))

    for key, measure in (("apart", apart), ("loss", loss)):
        each = {name: measure(f) for name, f in floor.items()}
        report[key] = {"port": measure(port), "noise": max(each.values()), "floor": each}
    return report


def variable_class(name):
    """A coarse grouping of release names for summaries (e.g. ``g snconv3/w``)."""
    net = "g" if name.startswith("model/g_") else "d"
    parts = name.split("/")
    return f"{net} {parts[-2]}/{parts[-1]}" if len(parts) > 2 else f"{net} {parts[-1]}"


def summarize(report):
    """Per variable class: the largest port and noise gradient errors."""
    classes = {}
    for name, r in report["gradients"].items():
        c = classes.setdefault(variable_class(name), {"port": 0.0, "noise": 0.0, "count": 0})
        c["port"] = max(c["port"], r["port"])
        c["noise"] = max(c["noise"], r["noise"])
        c["count"] += 1
    return classes
