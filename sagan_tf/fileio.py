"""File helpers shared by the modules: atomic writes of results a user keeps,
and reading a JSON object (config.json) with errors that name the file.

A file is written to a temporary name in its own directory, flushed to disk
and renamed over the target, so a reader (or a crash) never sees half a file
and an existing file is only ever replaced whole.
"""
import json
import os
import tempfile

__all__ = ["absolute_path", "atomic_write", "current_umask", "read_json_object"]


def read_json_object(path):
    """The JSON object (dict) in ``path``; ``ValueError`` naming the file if the
    content is not valid JSON or not an object (``OSError`` if unreadable)."""
    with open(path) as f:
        try:
            value = json.load(f)
        except ValueError as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(value, dict):
        raise ValueError(f"{path} does not hold a JSON object")
    return value


def absolute_path(path):
    """``os.path.abspath(path)`` for a local path; a URL (``gs://...``) unchanged."""
    return str(path) if "://" in str(path) else os.path.abspath(path)


def current_umask():
    """The process umask (read without changing it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path, data):
    """Writes ``data`` to ``path`` atomically; creates the parent directory.

    Args:
      path: target file.
      data: ``bytes``, ``str`` (written as UTF-8), or a callable taking the
        open binary file object (e.g. ``lambda f: np.savez(f, **arrays)``).

    Returns:
      ``path``. On any error the temporary file is removed and the target is
      left as it was. A URL-like ``path`` (``gs://``, ``ram://``) is written
      through ``tf.io.gfile``: a temporary object renamed over the target.
    """
    if "://" in str(path):
        return _atomic_write_gfile(str(path), data)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp_" + os.path.basename(path) + ".", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp's 0600 -> the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def _atomic_write_gfile(path, data):
    """:func:`atomic_write` through ``tf.io.gfile`` (object stores, TF filesystems)."""
    import io  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    if callable(data):
        buffer = io.BytesIO()
        data(buffer)
        data = buffer.getvalue()
    tf.io.gfile.makedirs(path.rsplit("/", 1)[0])
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with tf.io.gfile.GFile(tmp, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        tf.io.gfile.rename(tmp, path, overwrite=True)
    except BaseException:
        if tf.io.gfile.exists(tmp):
            tf.io.gfile.remove(tmp)
        raise
    return path
