"""Loader for TF-GAN's evaluation functions on TF >= 2.16 (no package ``__init__``).

Why this module exists
----------------------
``import tensorflow_gan`` fails on TensorFlow >= 2.16: the package
``__init__`` imports ``tensorflow_gan.python``, whose ``__init__`` imports
``tensorflow_gan.python.estimator`` (and ``train``), which subclass
``tf.estimator.SessionRunHook`` -- and ``tf.estimator`` no longer exists.
The metric code itself (``tensorflow_gan/python/eval/classifier_metrics.py``
and ``eval_utils.py``) only needs ``tensorflow``, ``numpy`` and
``tensorflow_probability`` and works unchanged on TF 2.21 in eager mode.

How it is loaded
----------------
The two source files are imported with :mod:`importlib` under their real
module names, after *stub* package objects for ``tensorflow_gan``,
``tensorflow_gan.python`` and ``tensorflow_gan.python.eval`` (empty modules
whose ``__path__`` points at the installed directories) are put in
``sys.modules``. The import system then finds the two files through the stubs'
``__path__`` without ever executing any package ``__init__.py``.
Afterwards every ``sys.modules`` entry this loader added is removed again
(the loaded modules keep their own references), so a later
``import tensorflow_gan`` elsewhere behaves exactly as it would without this
module (it still fails loudly on TF >= 2.16, rather than silently returning a
stub).

Which submodules, and why only these
------------------------------------
* ``eval_utils``: ``image_grid`` (the 4x4 image grids of the eval summaries);
  also a module-level import of ``classifier_metrics``.
* ``classifier_metrics``: ``classifier_score_from_logits`` (Inception score),
  ``frechet_classifier_distance_from_activations`` (FID),
  ``kernel_classifier_distance_from_activations`` and
  ``kernel_classifier_distance_and_std_from_activations`` (KID),
  ``trace_sqrt_product`` (FID's trace term from two covariance matrices).

Deliberately not loaded: ``inception_metrics`` (imports ``tensorflow_hub``;
its ``classifier_fn_from_tfhub`` flattens with ``tf.compat.v1.layers.flatten``,
which fails under Keras 3 -- :mod:`sagan_tf.evaluation.metrics` has its own classifier
function), ``summaries`` (TF1 ``tf.compat.v1.summary`` code that also needs
``tensorflow_gan.python.namedtuples``) and ``sliced_wasserstein`` (needs
``tensorflow_gan.python.contrib_utils``; not used by the release).

Usage::

    from sagan_tf import tfgan
    score = tfgan.classifier_score_from_logits(logits)
    fid = tfgan.frechet_classifier_distance_from_activations(real, fake)
    kid = tfgan.kernel_classifier_distance_from_activations(real, fake)
    grid = tfgan.image_grid(images16, (4, 4), image_shape=(32, 32))
"""
import importlib
import importlib.util
import os
import sys
import threading
import types

__all__ = [
    "load_tfgan_eval",
    "tfgan_package_dir",
    "TFGAN_SUBMODULES",
    "EXPORTED_FUNCTIONS",
    "classifier_score_from_logits",
    "frechet_classifier_distance_from_activations",
    "kernel_classifier_distance_from_activations",
    "kernel_classifier_distance_and_std_from_activations",
    "trace_sqrt_product",
    "image_grid",
]

_PACKAGE = "tensorflow_gan"
#: The stub parent packages, outermost first, with their directory relative to
#: the installed ``tensorflow_gan`` directory.
_PARENTS = (
    ("tensorflow_gan", ()),
    ("tensorflow_gan.python", ("python",)),
    ("tensorflow_gan.python.eval", ("python", "eval")),
)
#: Submodules of ``tensorflow_gan.python.eval`` that are loaded, in dependency
#: order (``classifier_metrics`` imports ``eval_utils``).
TFGAN_SUBMODULES = ("eval_utils", "classifier_metrics")
#: Functions re-exported by this module: name -> submodule that defines it.
EXPORTED_FUNCTIONS = {
    "classifier_score_from_logits": "classifier_metrics",
    "frechet_classifier_distance_from_activations": "classifier_metrics",
    "kernel_classifier_distance_from_activations": "classifier_metrics",
    "kernel_classifier_distance_and_std_from_activations": "classifier_metrics",
    "trace_sqrt_product": "classifier_metrics",
    "image_grid": "eval_utils",
}

_lock = threading.Lock()
_loaded = None


def tfgan_package_dir():
    """Returns the directory of the installed ``tensorflow_gan`` package.

    Found with :func:`importlib.util.find_spec`, which locates the package
    without executing its ``__init__``.

    Raises:
      ImportError: if tensorflow-gan is not installed.
    """
    if _PACKAGE in sys.modules and getattr(sys.modules[_PACKAGE], "__path__", None):
        return list(sys.modules[_PACKAGE].__path__)[0]
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "tensorflow-gan is not installed (no package 'tensorflow_gan' found); "
            "install tensorflow-gan==2.1.0")
    return list(spec.submodule_search_locations)[0]


def _load():
    """Imports the TF-GAN eval submodules behind stub parents; see module doc."""
    pkg_dir = tfgan_package_dir()
    added = []
    modules = {}
    try:
        for name, rel in _PARENTS:
            if name in sys.modules:
                continue
            stub = types.ModuleType(name)
            stub.__path__ = [os.path.join(pkg_dir, *rel)]
            stub.__package__ = name
            stub.__file__ = None
            stub.__doc__ = ("Stub package registered by sagan_tf.tfgan while loading "
                            "TF-GAN eval modules without running __init__.py.")
            sys.modules[name] = stub
            added.append(name)
        for sub in TFGAN_SUBMODULES:
            full = f"tensorflow_gan.python.eval.{sub}"
            if full not in sys.modules:
                added.append(full)
            modules[sub] = importlib.import_module(full)
    finally:
        for name in reversed(added):
            sys.modules.pop(name, None)
    ns = types.SimpleNamespace(**modules)
    for fn, sub in EXPORTED_FUNCTIONS.items():
        setattr(ns, fn, getattr(modules[sub], fn))
    ns.package_dir = pkg_dir
    return ns


def load_tfgan_eval():
    """Returns a namespace with TF-GAN's eval submodules and exported functions.

    Attributes: ``eval_utils``, ``classifier_metrics`` (the modules), every name
    in :data:`EXPORTED_FUNCTIONS`, and ``package_dir``. Loaded once per process
    (thread-safe); later calls return the same namespace.
    """
    global _loaded
    if _loaded is None:
        with _lock:
            if _loaded is None:
                _loaded = _load()
    return _loaded


def __getattr__(name):
    """Lazily resolves the re-exported TF-GAN functions (PEP 562)."""
    if name in EXPORTED_FUNCTIONS:
        return getattr(load_tfgan_eval(), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
