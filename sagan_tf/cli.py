"""What every entry point and tool shares: a quiet TensorFlow start and one-line errors.

Importing this module does not import TensorFlow. An entry script starts with::

    from sagan_tf import cli
    cli.quiet_tensorflow()          # before anything imports TensorFlow
    ...
    if __name__ == "__main__":
        cli.run(main)               # absl app.run, expected errors -> one line

Kernels: unless the user set ``TF_ENABLE_ONEDNN_OPTS``, TensorFlow loads with
oneDNN's kernels on x86 CPUs (:mod:`sagan_tf.kernels`).

Quiet start: unless the user set ``TF_CPP_MIN_LOG_LEVEL``, it is set to 2
(TensorFlow's C++ warnings and infos hidden, errors shown), and the lines
TensorFlow's libraries print while loading -- before its log level applies
(oneDNN notice, CPU feature guard, "could not find cuda drivers", the failed
``cuInit`` of a machine without GPU) are dropped; any other line printed
then is passed on as it comes (a crash inside the import still shows what
TensorFlow printed before it). TensorFlow's Python logger and absl's are set to warnings (unless ``--verbosity``
was given). With
``TF_CPP_MIN_LOG_LEVEL`` set by the user nothing is filtered.

Tools that read a trained generator share their checkpoint flags:
:func:`define_checkpoint_flags` at import, :func:`load_from_flags` in ``main``.

Errors: :func:`run` turns the expected failures -- :class:`UserError`, the
``ValueError`` / ``OSError`` family the library raises for bad flags, missing
or mismatched directories, mismatched checkpoints, an unreachable classifier,
and TensorFlow's ``OpError`` (an unreadable file) -- into one line
``<program>: error: <message>`` on stderr and exit status
:data:`EXIT_USER_ERROR`; Ctrl-C exits with 130 and one line. Anything else (a
bug) keeps its traceback.
"""
import contextlib
import os
import re
import subprocess
import sys

from sagan_tf import kernels

__all__ = ["UserError", "EXIT_USER_ERROR", "EXPECTED_ERRORS", "quiet_tensorflow", "run",
           "error_line", "define_standing_stats_flags", "define_checkpoint_flags",
           "load_from_flags", "loaded_description", "CHECKPOINT_FLAGS", "start", "int_list",
           "define_device_flags", "configure_device"]

#: Exit status of an expected error (a usage error, as absl and argparse use).
EXIT_USER_ERROR = 2


class UserError(Exception):
    """An expected failure caused by the user's input; its message names the
    culprit and the fix. Entry points print it as one line (no traceback)."""


#: Exceptions :func:`run` reports as one line. ValueError covers the library's
#: ConfigError, CheckpointMismatchError and ClassifierError; OSError covers
#: FileNotFoundError, FileExistsError, NotADirectoryError, PermissionError.
EXPECTED_ERRORS = (UserError, ValueError, OSError)

# Lines TensorFlow's shared libraries print at load time through absl, before
# TF_CPP_MIN_LOG_LEVEL takes effect.
_STARTUP_NOISE = re.compile(
    r"^(I\d{4} .*|WARNING: All log messages before absl::InitializeLog\(\) is called.*"
    r"|To enable the following instructions: .*|E\d{4} .*failed call to cuInit.*)$")


def quiet_tensorflow():
    """Imports TensorFlow quietly (see the module docstring), with oneDNN's
    kernels on for x86 CPUs unless ``TF_ENABLE_ONEDNN_OPTS`` is set
    (:func:`sagan_tf.kernels.use_onednn_by_default`); returns the module.

    Also sets ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` unless the user set it, so that
    TensorFlow numbers the GPUs as ``nvidia-smi`` does. Call it before anything
    imports TensorFlow; calling it later (or twice) only sets the Python
    logger's level.
    """
    from sagan_tf.training.nvidia import \
        use_pci_bus_order  # pylint: disable=import-outside-toplevel
    use_pci_bus_order()
    if "tensorflow" not in sys.modules:
        kernels.use_onednn_by_default()  # read once, when TensorFlow loads
    user_set = "TF_CPP_MIN_LOG_LEVEL" in os.environ
    if user_set or "tensorflow" in sys.modules:
        import tensorflow as tf  # pylint: disable=import-outside-toplevel
        if not user_set:
            _quiet_python_logging(tf)
        return tf
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    with _filtered_stderr():
        import tensorflow as tf  # pylint: disable=import-outside-toplevel
        tf.config.list_physical_devices()  # loads the device plugins (cuInit) now
    _quiet_python_logging(tf)
    return tf


#: Passes its standard input to its standard output line by line as it comes,
#: without the lines matching argv[1]. A separate process, so that what
#: TensorFlow printed before a crash inside its import (a segfault in a CUDA
#: library) still reaches the terminal: the pipe drains when this process dies.
_FILTER = ("import re, sys\n"
           "noise = re.compile(sys.argv[1].encode())\n"
           "for line in iter(sys.stdin.buffer.readline, b''):\n"
           "    if line.strip() and not noise.match(line.rstrip(b'\\r\\n')):\n"
           "        sys.stdout.buffer.write(line)\n"
           "        sys.stdout.buffer.flush()\n")


@contextlib.contextmanager
def _filtered_stderr():
    """File descriptor 2 goes through :data:`_FILTER` (dropping
    :data:`_STARTUP_NOISE`) to the real stderr, streamed, while the block runs."""
    sys.stderr.flush()
    saved = os.dup(2)
    read_end, write_end = os.pipe()
    try:
        pipe_filter = subprocess.Popen(
            [sys.executable, "-S", "-c", _FILTER, _STARTUP_NOISE.pattern], stdin=read_end,
            stdout=saved, stderr=saved)
    finally:
        os.close(read_end)
    try:
        os.dup2(write_end, 2)
    finally:
        os.close(write_end)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # closes the pipe's last write end: the filter drains and ends
        os.close(saved)
        try:
            pipe_filter.wait(timeout=10)
        except subprocess.TimeoutExpired:  # a child of the import holds the pipe: let it be
            pass


def _quiet_python_logging(tf):
    """TensorFlow's Python logger and absl's (which TensorFlow's checkpoint code
    uses for INFO lines) at warnings, unless ``--verbosity`` was given."""
    tf.get_logger().setLevel("WARNING")
    from absl import flags, logging  # pylint: disable=import-outside-toplevel
    if not (flags.FLAGS.is_parsed() and "verbosity" in flags.FLAGS
            and flags.FLAGS["verbosity"].present):
        logging.set_verbosity(logging.WARNING)


def error_line(error):
    """The message of an expected error: the library's own messages whole (they
    are one line, and a multi-line one must not lose its culprit), TensorFlow's
    ``OpError`` messages cut to their first line (the rest is graph context)."""
    text = str(getattr(error, "message", None) or error).strip() or type(error).__name__
    tf = sys.modules.get("tensorflow")
    op_error = getattr(getattr(tf, "errors", None), "OpError", None)
    if op_error is not None and isinstance(error, op_error):
        return text.splitlines()[0]
    return text


def _expected_errors():
    """:data:`EXPECTED_ERRORS` plus TensorFlow's ``OpError`` (an unreadable
    checkpoint or record file) when TensorFlow is loaded."""
    tf = sys.modules.get("tensorflow")
    op_error = getattr(getattr(tf, "errors", None), "OpError", None)
    return EXPECTED_ERRORS + ((op_error,) if op_error else ())


def run(main, program=None):
    """``absl.app.run(main)`` printing expected errors as one line.

    Args:
      main: the absl main function ``main(argv) -> exit status or None``.
      program: the name in the error line (default: the script's file name).
    """
    from absl import app  # pylint: disable=import-outside-toplevel
    program = program or os.path.basename(sys.argv[0])

    def guarded(argv):
        try:
            return main(argv)
        except app.UsageError:
            raise  # absl prints it with the usage hint
        except KeyboardInterrupt:
            print(f"{program}: interrupted", file=sys.stderr, flush=True)
            return 130
        except _expected_errors() as e:
            print(f"{program}: error: {error_line(e)}", file=sys.stderr, flush=True)
            return EXIT_USER_ERROR

    app.run(guarded)


def start(argv, flag_values=None):
    """The first line of a tool's ``main``: :func:`quiet_tensorflow`, then a
    usage error for positional arguments (the tools take flags only), then,
    when ``flag_values`` has them, the device flags applied
    (:func:`configure_device`). Returns the TensorFlow module."""
    tf = quiet_tensorflow()
    if len(argv) > 1:
        from absl import app  # pylint: disable=import-outside-toplevel
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if flag_values is not None and "device" in flag_values:
        configure_device(flag_values)
    return tf


def define_device_flags(flag_values=None, _depth=1):
    """Defines ``--device`` and ``--allow_tf32``: the one device the evaluator or
    a tool runs on (:func:`sagan_tf.training.devices.configure_single_device`)."""
    from absl import flags  # pylint: disable=import-outside-toplevel
    flag_values = flags.FLAGS if flag_values is None else flag_values
    flags.DEFINE_string(
        "device", "auto", "The one device to run on: gpu:N (N-th GPU TensorFlow sees, in "
        "nvidia-smi's order), cpu, or auto: the last visible GPU without memory in use by "
        "nvidia-smi (with 5 GPUs and the trainer on the first 4: the fifth; a warning when "
        "it must share one), else the CPU. With memory growth; the other GPUs are not "
        "touched. CUDA_VISIBLE_DEVICES=4 works too (the GPU is then gpu:0).",
        flag_values=flag_values)
    flags.DEFINE_boolean(
        "allow_tf32", False, "Let float32 convolutions and matmuls run in TF32 on GPUs that "
        "have it (TensorFlow's default); off: float32 as the release computed it.",
        flag_values=flag_values)
    _register_key_flags(flag_values, ("device", "allow_tf32"), _depth)


def configure_device(flag_values):
    """Applies ``--device`` and ``--allow_tf32`` before TensorFlow runs anything;
    returns the device's description (e.g. ``GPU:4 of 5 visible (...)``)."""
    from sagan_tf.training import devices  # pylint: disable=import-outside-toplevel
    return devices.configure_single_device(flag_values.device, flag_values.allow_tf32)


def int_list(values, flag):
    """A list flag's values as ints (None when empty); a usage error naming ``flag``."""
    from absl import app  # pylint: disable=import-outside-toplevel
    try:
        return [int(c) for c in values] if values else None
    except ValueError:
        raise app.UsageError(f"{flag} must be integers, got {values}") from None


def _register_key_flags(flag_values, names, depth):
    """Makes ``names`` key flags of the tool ``depth`` frames up, so that its
    ``--help`` lists them (absl names a script's module by its path)."""
    caller = sys._getframe(depth + 1).f_globals.get("__name__")  # pylint: disable=protected-access
    module = sys.argv[0] if caller == "__main__" else caller
    for name in names:
        flag_values.register_key_flag_for_module(module, flag_values[name])


def define_standing_stats_flags(flag_values=None, _depth=1):
    """Defines ``--standing_stats_batches`` and ``--standing_stats_batch_size``,
    the sampling tools' shared choice of G's batch-norm statistics
    (:mod:`sagan_tf.models.standing_statistics`)."""
    from absl import flags  # pylint: disable=import-outside-toplevel
    flag_values = flags.FLAGS if flag_values is None else flag_values
    flags.DEFINE_integer(
        "standing_stats_batches", 0,
        "0: G samples with its moving batch-norm statistics (the release). N > 0: standing "
        "statistics, every batch norm's statistics averaged over N batches of G in training "
        "mode first (in memory; docs/DEVIATIONS.md).", lower_bound=0, flag_values=flag_values)
    flags.DEFINE_integer(
        "standing_stats_batch_size", None, "Batch size of the standing-statistics batches "
        "(default: the training batch_size of config.json).", lower_bound=1,
        flag_values=flag_values)
    _register_key_flags(flag_values, ("standing_stats_batches", "standing_stats_batch_size"),
                        _depth)


def define_generator_weights_flag(flag_values=None, _depth=1):
    """Defines ``--generator_weights``: which of a checkpoint's generators to use
    (:func:`sagan_tf.runs.rundir.generator_child`)."""
    from absl import flags  # pylint: disable=import-outside-toplevel
    flag_values = flags.FLAGS if flag_values is None else flag_values
    flags.DEFINE_enum(
        "generator_weights", "auto", ["auto", "raw", "ema"],
        "raw: G's trained weights (the release). ema: the exponential moving average a run "
        "trained with --g_ema_decay keeps (BigGAN's G_ema; docs/DEVIATIONS.md). auto: ema "
        "when the checkpoint has it, else raw. Outputs say which (generator_weights).",
        flag_values=flag_values)
    _register_key_flags(flag_values, ("generator_weights",), _depth)


#: The flags :func:`define_checkpoint_flags` defines (besides the standing-statistics
#: and generator-weights ones).
CHECKPOINT_FLAGS = ("checkpoint_dir", "checkpoint_path", "batch_size",
                    "attention_query_block_size")


def define_checkpoint_flags(flag_values=None):
    """Defines the flags of every tool that reads a trained generator:
    ``--checkpoint_dir``, ``--checkpoint_path``, ``--batch_size``,
    ``--attention_query_block_size``, the standing-statistics flags
    (:func:`define_standing_stats_flags`) and the device flags
    (:func:`define_device_flags`, applied by :func:`start`);
    :func:`load_from_flags` reads them."""
    from absl import flags  # pylint: disable=import-outside-toplevel
    flag_values = flags.FLAGS if flag_values is None else flag_values
    flags.DEFINE_string(
        "checkpoint_dir", None,
        "Training directory (<checkpoint_dir> of train_imagenet.py, or its "
        "imagenet_<batch_size> subdirectory), or a converted TF1 checkpoint dir.",
        flag_values=flag_values)
    flags.DEFINE_string("checkpoint_path", None,
                        "A specific checkpoint prefix (default: newest).", flag_values=flag_values)
    flags.DEFINE_integer(
        "batch_size", None, "Training batch size: picks <checkpoint_dir>/imagenet_<batch_size> "
        "when there are several runs.", flag_values=flag_values)
    flags.DEFINE_integer(
        "attention_query_block_size", None,
        "Build the networks with the memory-efficient attention path, query blocks of this "
        "size (same outputs).", flag_values=flag_values)
    _register_key_flags(flag_values, CHECKPOINT_FLAGS, 1)
    define_standing_stats_flags(flag_values, _depth=2)
    define_generator_weights_flag(flag_values, _depth=2)
    define_device_flags(flag_values, _depth=2)


def load_from_flags(flag_values, discriminator=False, seed=0):
    """The generator (and with ``discriminator`` the discriminator) the flags of
    :func:`define_checkpoint_flags` name, restored, with G's batch-norm
    statistics as the standing-statistics flags ask (drawn from ``seed``).
    Returns a :class:`sagan_tf.runs.rundir.LoadedCheckpoint`. Imports TensorFlow."""
    from sagan_tf.runs import rundir  # pylint: disable=import-outside-toplevel
    loaded = rundir.load_checkpoint(
        flag_values.checkpoint_dir, flag_values.checkpoint_path, flag_values.batch_size,
        discriminator=discriminator,
        attention_query_block_size=flag_values.attention_query_block_size,
        generator_weights=flag_values.generator_weights)
    rundir.use_standing_statistics(loaded, flag_values.standing_stats_batches,
                                   flag_values.standing_stats_batch_size, seed=seed)
    return loaded


def loaded_description(loaded):
    """``checkpoint <path>, step <N>`` of a :class:`sagan_tf.runs.rundir.LoadedCheckpoint`,
    for a tool's final line."""
    weights = ", G's averaged weights (generator_ema)" if loaded.generator_weights == "ema" else ""
    return f"checkpoint {loaded.checkpoint_path}, step {loaded.step}{weights}"
