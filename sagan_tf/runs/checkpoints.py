"""Checkpoint discovery, completeness and checked restore.

One module used by training (resume), evaluation (which checkpoints to
evaluate) and sampling/tools (which checkpoint to load).

What "complete" means
  ``tf.train.CheckpointManager.save`` writes a checkpoint in three stages:
  the data shards (``ckpt-N.data-0000i-of-0000k``), the ``ckpt-N.index`` file
  (TensorFlow writes each of these to a temporary name and renames it into
  place), and then the ``checkpoint`` state file (rewritten atomically)
  listing ``ckpt-N``; only then does it delete checkpoints beyond
  ``max_to_keep``. A process killed at any moment can therefore leave files of
  a checkpoint that is not (yet) in the state file, a ``ckpt-N_temp``
  directory, or a state file still listing a checkpoint whose files were just
  deleted. On non-atomic file systems (object stores) or after a disk error a
  listed checkpoint may also be truncated. A checkpoint is *complete* when

  1. it is listed in the state file,
  2. its ``.index`` file exists and ``tf.train.load_checkpoint`` reads it, and
  3. every data shard the shard names announce (``-of-0000k``) exists.

  Reading every tensor is left to the restore itself: :func:`restore_newest`
  falls back to the next older complete checkpoint when a restore fails with
  a read error (e.g. a truncated data shard).

Architecture check
  :func:`check_compatible` walks the checkpoint's object graph together with
  the live objects (by the same local names ``tf.train.Checkpoint`` uses) and
  compares every variable's shape with the stored tensor before anything is
  restored. The first difference raises :class:`CheckpointMismatchError`
  naming the variable, both shapes and a guess at the flag behind it.
"""
import glob
import logging
import os
import re

import tensorflow as tf
from tensorflow.core.protobuf import trackable_object_graph_pb2

__all__ = [
    "STATE_FILENAME", "STEP_KEY", "CheckpointMismatchError", "NoRestorableCheckpointError",
    "listed_checkpoints", "checkpoint_problem", "list_complete_checkpoints",
    "latest_complete_checkpoint", "unlisted_checkpoints", "count_variables",
    "checkpoint_step", "check_compatible", "restore_checked", "restore_newest",
    "CheckpointSaveError", "SAVE_FAULT_ENV", "save",
]

log = logging.getLogger(__name__)

STATE_FILENAME = "checkpoint"
STEP_KEY = "step/.ATTRIBUTES/VARIABLE_VALUE"
_OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
_VALUE_ATTRIBUTE = "VARIABLE_VALUE"
_SHARD_RE = re.compile(r"\.data-(\d+)-of-(\d+)$")


class CheckpointMismatchError(ValueError):
    """The checkpoint holds a network of another architecture than the model."""


class NoRestorableCheckpointError(RuntimeError):
    """Checkpoints are listed, but none of them can be restored."""


def _name(path):
    return os.path.basename(path)


# ----------------------------------------------------------------------------
# Discovery.

def listed_checkpoints(logdir):
    """Checkpoint prefixes listed in ``<logdir>/checkpoint``, oldest first.

    Returns [] when there is no state file; an unreadable state file is
    logged and treated as empty.
    """
    if not tf.io.gfile.exists(os.path.join(logdir, STATE_FILENAME)):
        return []
    try:
        state = tf.train.get_checkpoint_state(logdir)
    except (tf.errors.OpError, ValueError) as e:
        log.warning("Could not read checkpoint state in %s: %s", logdir, e)
        return []
    if state is None:
        return []
    paths = list(state.all_model_checkpoint_paths) or [state.model_checkpoint_path]
    out = []
    for p in paths:  # get_checkpoint_state has made relative paths relative to logdir
        if p and p not in out:
            out.append(p)
    return out


def checkpoint_problem(path):
    """Why the checkpoint prefix ``path`` is incomplete, or None if it is complete
    (apart from the state-file condition, see :func:`list_complete_checkpoints`)."""
    if not tf.io.gfile.exists(path + ".index"):
        return f"no {_name(path)}.index"
    shards = {}
    for f in tf.io.gfile.glob(glob.escape(path) + ".data-*-of-*"):
        m = _SHARD_RE.search(f)
        if m:
            shards[int(m.group(1))] = int(m.group(2))
    if not shards:
        return f"no {_name(path)}.data-* shard"
    total = max(shards.values())
    missing = [i for i in range(total) if i not in shards]
    if missing:
        return f"data shard {_name(path)}.data-{missing[0]:05d}-of-{total:05d} is missing"
    try:
        tf.train.load_checkpoint(path)
    except (tf.errors.OpError, ValueError) as e:
        return f"unreadable index: {str(e).strip().splitlines()[0] if str(e).strip() else e}"
    return None


def list_complete_checkpoints(logdir):
    """Complete checkpoints of ``logdir`` (see the module docstring), oldest first.

    A checkpoint being written (not yet in the state file) or deleted by
    ``max_to_keep`` in the meantime is left out.
    """
    return [p for p in listed_checkpoints(logdir) if checkpoint_problem(p) is None]


def latest_complete_checkpoint(logdir):
    """The newest complete checkpoint of ``logdir``, or None."""
    ckpts = list_complete_checkpoints(logdir)
    return ckpts[-1] if ckpts else None


def _number(path):
    m = re.search(r"-(\d+)$", path)
    return int(m.group(1)) if m else -1


def unlisted_checkpoints(logdir):
    """``ckpt-N`` prefixes with files in ``logdir`` that the state file does not
    list (left by a save that did not finish), plus ``*_temp`` directories."""
    listed = set(listed_checkpoints(logdir))
    found = set()
    for f in tf.io.gfile.glob(os.path.join(glob.escape(logdir), "ckpt-*")):
        base = re.sub(r"(\.index|\.data-\d+-of-\d+|_temp.*)$", "", f)
        if base not in listed and re.search(r"ckpt-\d+$", base):
            found.add(base)
    return sorted(found, key=_number)


def checkpoint_step(path):
    """Global step of a checkpoint: its ``step`` variable, else the ``-N`` suffix."""
    try:
        reader = tf.train.load_checkpoint(path)
        if reader.has_tensor(STEP_KEY):
            return int(reader.get_tensor(STEP_KEY))
    except tf.errors.OpError:
        pass
    n = _number(path)
    return n if n >= 0 else 0


# ----------------------------------------------------------------------------
# The object graph.

def _object_graph(reader):
    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(reader.get_tensor(_OBJECT_GRAPH_KEY))
    return graph


def _value_key(node):
    for a in node.attributes:
        if a.name == _VALUE_ATTRIBUTE:
            return a.checkpoint_key
    return None


def count_variables(path_or_reader, child):
    """Number of variables reachable from the root's ``child`` in a checkpoint.

    Walks the object graph rather than counting keys: a variable shared with
    another object (e.g. a trainable variable also tracked by the optimizer)
    is stored once, under whichever path the saver found first.
    Returns None if the checkpoint has no such child.
    """
    reader = (tf.train.load_checkpoint(path_or_reader) if isinstance(path_or_reader, str)
              else path_or_reader)
    graph = _object_graph(reader)
    start = [c.node_id for c in graph.nodes[0].children if c.local_name == child]
    if not start:
        return None
    seen, stack, count = set(start), list(start), 0
    while stack:
        node = graph.nodes[stack.pop()]
        if _value_key(node) is not None:
            count += 1
        for c in node.children:
            if c.node_id not in seen:
                seen.add(c.node_id)
                stack.append(c.node_id)
    return count


def _live_children(obj):
    fn = getattr(obj, "_trackable_children", None)
    if fn is None:
        return {}
    try:
        return dict(fn(save_type="checkpoint"))
    except TypeError:
        return dict(fn())


def _is_variable(obj):
    return isinstance(obj, tf.Variable) or (hasattr(obj, "shape") and hasattr(obj, "assign")
                                            and hasattr(obj, "dtype"))


def _shape_list(shape):
    return [int(d) if d is not None else None for d in shape]


def _hint(path, stored, live):
    top = path.split("/", 1)[0]
    flag = {"generator": "gf_dim", "discriminator": "df_dim"}.get(top)
    if stored is None or live is None:
        kind = {"generator": "--generator_type", "discriminator": "--discriminator_type"}.get(top)
        return (f" (a different {kind} or attention variant?)" if kind else
                " (different architecture flags?)")
    if len(stored) == len(live) and stored and live and stored[-1] and live[-1] and flag:
        a, b = stored[-1], live[-1]
        if a != b and (a % b == 0 or b % a == 0):
            return f" (--{flag} differs by a factor {max(a, b) // min(a, b)}: a different --{flag}?)"
    if stored and live and len(stored) >= 1 and stored[0] != live[0] and len(stored) == 2:
        return " (a different --number_classes or --z_dim?)"
    if len(stored) == 4 and len(live) == 4 and stored[:2] == live[:2]:
        return f" (a different --{flag or 'gf_dim/--df_dim'}?)"
    return ""


#: What reading a checkpoint that is truncated or being deleted raises: e.g. a
#: truncated data shard, where the object graph is stored, makes the reader
#: raise IndexError("Read less bytes than requested").
READ_ERRORS = (tf.errors.OpError, IndexError, ValueError, RuntimeError)


#: Failures of the machine, not of a checkpoint's files, even while one is
#: read (out of memory, a CUDA error, a lost device): never "unreadable".
NOT_READ_ERRORS = (tf.errors.ResourceExhaustedError, tf.errors.InternalError,
                   tf.errors.UnavailableError)


class CheckpointReadError(OSError):
    """A checkpoint's files cannot be read back: truncated, corrupt, or deleted
    (e.g. by the trainer's ``max_to_keep``) while being read. The evaluator
    skips such a checkpoint and keeps watching; it stops on anything else."""


class CheckpointNotFoundError(CheckpointReadError, FileNotFoundError):
    """The checkpoint's ``.index`` does not exist (never written, or deleted)."""


def unreadable(path, error):
    """The ``DataLossError`` that reports one of :data:`READ_ERRORS` for ``path``."""
    return tf.errors.DataLossError(None, None, f"cannot read checkpoint {path}: "
                                   f"{type(error).__name__}: {error}")


def check_compatible(root, path, what=None):
    """Checks that every variable under ``root`` matches checkpoint ``path``.

    ``root`` is the ``tf.train.Checkpoint`` that will restore (e.g.
    ``Checkpoint(generator=G)`` or the trainer's full checkpoint); each of its
    children is compared with the checkpoint's child of the same name.

    Raises:
      CheckpointMismatchError: naming the first variable whose stored shape
        differs, that the checkpoint lacks, or that the checkpoint holds and
        the model lacks.
    """
    try:
        reader = tf.train.load_checkpoint(path)
        shapes = reader.get_variable_to_shape_map()
        graph = _object_graph(reader)
    except READ_ERRORS as e:
        raise unreadable(path, e) from e
    name = _name(path)

    def fail(var_path, detail, stored=None, live=None):
        top = var_path.split("/", 1)[0]
        raise CheckpointMismatchError(
            f"checkpoint {name} does not match this {what or top} (the architecture does "
            f"not match): {var_path} {detail}{_hint(var_path, stored, live)} [{path}]")

    top_children = {c.local_name: c.node_id for c in graph.nodes[0].children}
    order = {"generator": 0, "discriminator": 1}
    children = sorted(_live_children(root).items(), key=lambda kv: order.get(kv[0], 2))
    for child_name, live_child in children:
        if child_name not in top_children:
            fail(child_name, "is not in the checkpoint (its objects: "
                 f"{sorted(top_children)})")
        stack = [(live_child, top_children[child_name], child_name)]
        seen = set()
        while stack:
            obj, node_id, var_path = stack.pop()
            if node_id in seen:
                continue
            seen.add(node_id)
            node = graph.nodes[node_id]
            key = _value_key(node)
            if key is not None and _is_variable(obj):
                stored = _shape_list(shapes.get(key, []))
                live = _shape_list(obj.shape)
                if stored != live:
                    fail(var_path, f"has shape {stored} in the checkpoint, {live} in the model",
                         stored, live)
            live_kids = _live_children(obj)
            stored_kids = {c.local_name: c.node_id for c in node.children}
            for k, child in reversed(list(live_kids.items())):  # popped in order
                if k in stored_kids:
                    stack.append((child, stored_kids[k], f"{var_path}/{k}"))
                elif _is_variable(child) or _live_children(child):
                    if _has_variables(child):
                        fail(f"{var_path}/{k}", "is in the model but not in the checkpoint",
                             None, None)
            for k, nid in stored_kids.items():
                if k not in live_kids and _node_has_variables(graph, nid):
                    fail(f"{var_path}/{k}", "is in the checkpoint but not in the model",
                         None, None)


def _has_variables(obj, depth=0):
    if _is_variable(obj):
        return True
    if depth > 50:
        return False
    return any(_has_variables(c, depth + 1) for c in _live_children(obj).values())


def _node_has_variables(graph, node_id):
    seen, stack = {node_id}, [node_id]
    while stack:
        node = graph.nodes[stack.pop()]
        if _value_key(node) is not None:
            return True
        for c in node.children:
            if c.node_id not in seen:
                seen.add(c.node_id)
                stack.append(c.node_id)
    return False


def restore_checked(root, path, what=None, partial=False):
    """:func:`check_compatible`, then ``root.restore(path)``.

    ``partial``: the checkpoint may hold more than ``root`` (e.g. the
    optimizers when only the generator is restored).

    Raises:
      CheckpointMismatchError: architecture mismatch (nothing restored).
      tf.errors.OpError: the checkpoint's data cannot be read.
    """
    check_compatible(root, path, what)
    status = root.restore(path)
    if partial:
        status.expect_partial()
    try:
        status.assert_existing_objects_matched()
    except AssertionError as e:
        raise CheckpointMismatchError(f"checkpoint {_name(path)} does not match this "
                                      f"{what or 'model'} (the architecture does not match): "
                                      f"{e}") from e
    return status


def restore_newest(root, logdir, log_fn=print):
    """Restores the newest complete, readable checkpoint of ``logdir`` into ``root``.

    Falls back to older checkpoints when the newest listed one is incomplete
    or fails to read, saying so ("latest checkpoint ckpt-7 is incomplete or
    corrupt (<reason>); resuming from ckpt-6"). Files of saves that did not
    finish (not in the state file) are reported and removed.

    Returns:
      the restored path, or None when the state file lists no checkpoint.

    Raises:
      CheckpointMismatchError: the newest complete checkpoint is of another
        architecture (no fallback: that is not damage).
      NoRestorableCheckpointError: checkpoints are listed but none restores.
    """
    listed = listed_checkpoints(logdir)
    newest_listed = max((_number(p) for p in listed), default=-1)
    # Unfinished saves: unlisted and newer than every listed checkpoint, or
    # with a *_temp directory. Never read by anyone; removed so that they do
    # not pile up. (Older unlisted complete checkpoints are left alone.)
    leftovers = [p for p in unlisted_checkpoints(logdir)
                 if _number(p) > newest_listed or tf.io.gfile.exists(p + "_temp")]
    if leftovers:
        for p in leftovers:
            _remove_partial(logdir, _number(p), set(listed))
        log_fn(f"Removed {', '.join(_name(p) for p in leftovers)} from {logdir}: not in the "
               f"'{STATE_FILENAME}' state file (left by a save that did not finish)")
    bad = []
    for path in reversed(listed):
        reason = checkpoint_problem(path)
        if reason is None:
            try:
                restore_checked(root, path)
            except CheckpointMismatchError:
                raise
            except Exception as e:  # pylint: disable=broad-except  # any read failure
                msg = str(e).strip().splitlines()
                reason = f"restore failed: {type(e).__name__}: {msg[0] if msg else e}"
        if reason is None:
            if bad:
                first, first_reason = bad[0]
                more = "".join(f"; {_name(p)} is incomplete or corrupt ({r})"
                               for p, r in bad[1:])
                log_fn(f"WARNING: latest checkpoint {_name(first)} is incomplete or corrupt "
                       f"({first_reason}){more}; resuming from {_name(path)}")
            return path
        bad.append((path, reason))
    if bad:
        raise NoRestorableCheckpointError(
            f"no checkpoint in {logdir} can be restored: " +
            "; ".join(f"{_name(p)}: {r}" for p, r in bad) +
            " (move them away to start from scratch)")
    return None


# ----------------------------------------------------------------------------
# Saving.

class CheckpointSaveError(OSError):
    """A checkpoint could not be written (full disk, unwritable directory, ...);
    the message names the directory; earlier checkpoints are intact."""


#: Test seam (documented in docs/ARCHITECTURE.md): ``SAGAN_TF_TEST_SAVE_FAULT=enospc@N``
#: makes the save of ``ckpt-N`` fail as a full disk does -- part of the data
#: written to the temporary ``ckpt-N_temp`` directory, then ``OSError(ENOSPC)``.
#: ``enospc@*`` fails every save. Unset in normal use.
SAVE_FAULT_ENV = "SAGAN_TF_TEST_SAVE_FAULT"


def _injected_save_fault(directory, number):
    spec = os.environ.get(SAVE_FAULT_ENV, "")
    if not spec.startswith("enospc@"):
        return
    at = spec.split("@", 1)[1]
    if at != "*" and at != str(number):
        return
    import errno  # pylint: disable=import-outside-toplevel
    temp = os.path.join(directory, f"ckpt-{number}_temp")
    tf.io.gfile.makedirs(temp)
    with tf.io.gfile.GFile(os.path.join(temp, "part-00000-of-00001.data-00000-of-00001"),
                           "wb") as f:
        f.write(b"\0" * 1024)
    raise OSError(errno.ENOSPC, f"No space left on device (injected by {SAVE_FAULT_ENV})",
                  temp)


def _remove_partial(directory, number, listed):
    """Deletes the files of an unfinished save of ``ckpt-<number>`` (never a listed one)."""
    prefix = os.path.join(directory, f"ckpt-{number}")
    if prefix in listed:
        return
    for f in tf.io.gfile.glob(glob.escape(prefix) + "*"):
        rest = f[len(prefix):]
        if rest == ".index" or rest.startswith(".data-") or rest.startswith("_temp"):
            try:
                if tf.io.gfile.isdir(f):
                    tf.io.gfile.rmtree(f)
                else:
                    tf.io.gfile.remove(f)
            except (OSError, tf.errors.OpError):
                pass


def save(manager, number):
    """``manager.save(checkpoint_number=number)``; a failure becomes a
    :class:`CheckpointSaveError` naming the directory, after the files of the
    unfinished checkpoint are removed (earlier checkpoints are not touched:
    the state file is only rewritten after a checkpoint is complete)."""
    directory = manager.directory
    try:
        _injected_save_fault(directory, number)
        return manager.save(checkpoint_number=number)
    except (OSError, tf.errors.OpError) as e:
        listed = set(listed_checkpoints(directory))
        _remove_partial(directory, number, listed)
        intact = [_name(p) for p in list_complete_checkpoints(directory)]
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointSaveError(
            f"could not save checkpoint ckpt-{number} in {directory}: {detail}. "
            f"Earlier checkpoints are intact: {', '.join(intact) if intact else 'none'}") from e
