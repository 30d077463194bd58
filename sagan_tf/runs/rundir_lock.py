"""One writer per run directory: an exclusive lock file held by the training process.

A trainer holds ``<logdir>/train.lock`` for its whole life (in a multi-worker
run, the chief only). The file is a small JSON object::

    {"host": "node7", "pid": 12345, "since": 1764406862.1, "since_utc": "...",
     "token": "<random hex>"}

and its modification time is the heartbeat: the holder touches it every
``HEARTBEAT_SECS`` from a daemon thread.

Acquiring:

* the lock file is created with ``O_CREAT | O_EXCL``, so of two processes
  starting at the same moment exactly one creates it; the other sees the
  winner's file and refuses with :class:`RunDirLockedError` naming the holder
  (host, PID, since when);
* a lock whose holder is gone is removed, with a message, and the start
  competes for the lock again: on this host, a
  PID that no longer exists; from another host (whose processes cannot be
  checked), a lock whose heartbeat is older than ``STALE_AFTER_SECS``
  (10 minutes: 20 missed heartbeats);
* only the start that creates ``train.lock.takeover`` (``O_EXCL`` again)
  removes a stale lock, after reading it once more, so a fresh lock created
  meanwhile by another start is never removed; it then competes for the
  ``O_EXCL`` creation like any start.

Only local paths are locked (``O_EXCL`` creation is not atomic on object
stores such as ``gs://``); :func:`acquire` returns None for those.

The evaluator and the tools (sampling, export) never take the lock: they only
read checkpoints.
"""
import datetime
import json
import os
import secrets
import socket
import threading
import time

__all__ = ["LOCK_FILENAME", "HEARTBEAT_SECS", "STALE_AFTER_SECS", "RunDirLockedError",
           "RunDirLock", "acquire", "read_holder"]

#: Name of the lock file inside the run directory.
LOCK_FILENAME = "train.lock"
#: The holder touches the lock file this often (seconds).
HEARTBEAT_SECS = 30.0
#: A lock written on another host is stale when its heartbeat is older than this
#: (seconds). Locks of this host are judged by their PID instead.
STALE_AFTER_SECS = 600.0


class RunDirLockedError(RuntimeError):
    """Another live process holds the run directory; the message names it."""


def _utc(ts):
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%S UTC")


def _pid_alive(pid):
    """True if a process with ``pid`` exists on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def read_holder(path):
    """The lock file's JSON object plus ``"heartbeat"`` (its mtime), or None
    when there is no lock file. An unparsable file (a holder killed between
    creating and writing it) gives ``{"heartbeat": mtime}``."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
            mtime = os.fstat(f.fileno()).st_mtime
    except FileNotFoundError:
        return None
    try:
        holder = json.loads(raw.decode("utf-8"))
        if not isinstance(holder, dict):
            holder = {}
    except (UnicodeDecodeError, ValueError):
        holder = {}
    holder["heartbeat"] = mtime
    holder["raw"] = raw
    return holder


def _describe(holder):
    host = holder.get("host", "?")
    pid = holder.get("pid", "?")
    since = holder.get("since")
    since = _utc(since) if isinstance(since, (int, float)) else "an unknown time"
    return f"PID {pid} on host {host} since {since}"


def _stale_reason(holder, host, now):
    """Why ``holder``'s lock may be taken over, or None if it is live."""
    age = now - holder["heartbeat"]
    if "pid" not in holder or "host" not in holder:
        # Created but never written (its creator died at once), or garbage.
        return f"unreadable lock file, {age:.0f} s old"
    if holder["host"] == host:
        if not _pid_alive(int(holder["pid"])):
            return f"PID {holder['pid']} no longer exists on this host"
        return None
    if age > STALE_AFTER_SECS:
        return (f"its heartbeat is {age:.0f} s old (> {STALE_AFTER_SECS:.0f} s; "
                "rundir_lock.STALE_AFTER_SECS)")
    return None


class RunDirLock:
    """A held lock: refreshes the heartbeat until :meth:`release`. Use as a
    context manager or call :meth:`release` (idempotent)."""

    def __init__(self, path, token, heartbeat_secs=HEARTBEAT_SECS):
        self.path = path
        self.token = token
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(heartbeat_secs,),
                                        name="rundir-lock-heartbeat", daemon=True)
        self._thread.start()

    def _owned(self):
        holder = read_holder(self.path)
        return holder is not None and holder.get("token") == self.token

    def _beat(self, every):
        while not self._stop.wait(every):
            try:
                if self._owned():
                    os.utime(self.path)
            except OSError:
                pass  # a transient file-system error: try again next beat

    def release(self):
        """Stops the heartbeat and deletes the lock file if it is still ours."""
        if self._stop.is_set():
            return
        self._stop.set()
        try:
            if self._owned():
                os.remove(self.path)
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()
        return False


def _create(path, host, token):
    """Creates the lock file exclusively; False if it already exists."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    now = time.time()
    body = json.dumps({"host": host, "pid": os.getpid(), "since": now,
                       "since_utc": _utc(now), "token": token})
    try:
        os.write(fd, body.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    return True


#: A takeover mutex older than this (seconds) was left by a start that died
#: while removing a stale lock; it is removed.
_TAKEOVER_STALE_SECS = 30.0


def _remove_if_unchanged(path, holder):
    """Removes the stale lock ``holder``; False if another start is removing it or
    the file changed meanwhile.

    Only the holder of ``<lock>.takeover`` (created with ``O_EXCL``) removes a
    lock, after reading it again, so a fresh lock created by another start
    is never removed.
    """
    mutex = path + ".takeover"
    try:
        fd = os.open(mutex, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        try:
            if time.time() - os.stat(mutex).st_mtime > _TAKEOVER_STALE_SECS:
                os.remove(mutex)
        except OSError:
            pass
        time.sleep(0.01)
        return False
    os.close(fd)
    try:
        now = read_holder(path)
        if now is None or now.get("raw") != holder.get("raw"):
            return False
        os.remove(path)
        return True
    finally:
        os.remove(mutex)


def acquire(logdir, log=print, heartbeat_secs=HEARTBEAT_SECS, host=None):
    """Takes the run directory's lock, or raises :class:`RunDirLockedError`.

    Args:
      logdir: the run directory (created if missing). Paths with a scheme
        (``gs://...``) are not locked: returns None.
      log: prints one line (the takeover message).
      heartbeat_secs: seconds between heartbeats.
      host: this host's name (default ``socket.gethostname()``; a test seam).

    Returns:
      A :class:`RunDirLock` (release it when training ends), or None.
    """
    if "://" in str(logdir):
        return None
    os.makedirs(logdir, exist_ok=True)
    path = os.path.join(logdir, LOCK_FILENAME)
    host = host or socket.gethostname()
    token = secrets.token_hex(16)
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        if _create(path, host, token):
            return RunDirLock(path, token, heartbeat_secs)
        holder = read_holder(path)
        if holder is None:
            continue  # released just now: try again
        if ("pid" not in holder and time.time() - holder["heartbeat"] < 5.0):
            time.sleep(0.05)  # its creator is still writing it
            continue
        reason = _stale_reason(holder, host, time.time())
        if reason is None:
            raise RunDirLockedError(
                f"run directory {logdir} is in use by {_describe(holder)} (lock file "
                f"{path}); wait for that trainer to finish or stop it, or use another "
                "--checkpoint_dir")
        if _remove_if_unchanged(path, holder):
            log(f"Removed the stale lock of run directory {logdir} held by "
                f"{_describe(holder)}: {reason}")
    raise RunDirLockedError(f"could not take the lock {path}: it keeps changing "
                            "(several trainers starting at once?)")

