"""One writer per run directory (sagan_tf/runs/rundir_lock.py).

The racing test starts several processes that import only
sagan_tf.runs.rundir_lock (the package ``__init__`` is lazy: no TensorFlow, so they
start in milliseconds and really race) and release them
at the same moment; exactly one may win. The end-to-end race of two
``train_imagenet.py`` processes is in tests/test_faults.py.
"""
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from sagan_tf.runs import rundir_lock

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: The children import this checkout's sagan_tf.
CHILD_ENV = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))

# A child: imports the lock module, waits for the start file, tries the lock;
# the winner holds it until the release file appears.
_CHILD = r"""
import os, sys, time
from sagan_tf.runs import rundir_lock as lock_module
assert "tensorflow" not in sys.modules
logdir, start, release = sys.argv[1:4]
while not os.path.exists(start):
    time.sleep(0.001)
try:
    lock = lock_module.acquire(logdir, log=lambda line: print(line, flush=True))
except lock_module.RunDirLockedError as e:
    print("REFUSED", e, flush=True)
    sys.exit(3)
print("WON", os.getpid(), flush=True)
deadline = time.time() + 60
while not os.path.exists(release) and time.time() < deadline:
    time.sleep(0.01)
lock.release()
"""


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _write_lock(logdir, host, pid, since=None, age=0.0):
    os.makedirs(logdir, exist_ok=True)
    path = os.path.join(logdir, rundir_lock.LOCK_FILENAME)
    since = time.time() - age if since is None else since
    with open(path, "w") as f:
        json.dump({"host": host, "pid": pid, "since": since, "token": "x"}, f)
    os.utime(path, (time.time() - age, time.time() - age))
    return path


def test_racing_processes_exactly_one_wins(tmp_path):
    logdir = str(tmp_path / "run")
    # A stale lock of a dead process: every racer may try to take it over.
    stale_pid = _dead_pid()
    _write_lock(logdir, socket.gethostname(), stale_pid)
    start, release = str(tmp_path / "start"), str(tmp_path / "release")
    n = 6
    procs = [subprocess.Popen([sys.executable, "-c", _CHILD, logdir, start, release],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=CHILD_ENV)
             for _ in range(n)]
    try:
        time.sleep(1.0)  # let them all reach the start line
        open(start, "w").close()
        deadline = time.time() + 60
        while sum(p.poll() is not None for p in procs) < n - 1 and time.time() < deadline:
            time.sleep(0.05)
        open(release, "w").close()
        outs = [p.communicate(timeout=60)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    winners = [(p, o) for p, o in zip(procs, outs) if "WON" in o]
    assert len(winners) == 1, outs
    winner, winner_out = winners[0]
    assert winner.returncode == 0, winner_out
    # Exactly one racer removed the stale lock (not necessarily the winner).
    removed = [o for o in outs if f"Removed the stale lock of run directory {logdir} held by "
               f"PID {stale_pid}" in o]
    assert len(removed) == 1 and "no longer exists on this host" in removed[0], outs
    for p, o in zip(procs, outs):
        if p is winner:
            continue
        assert p.returncode == 3, o
        assert f"is in use by PID {winner.pid} on host {socket.gethostname()} since" in o, o
    # Released: the file is gone and the directory can be locked again.
    assert not os.path.exists(os.path.join(logdir, rundir_lock.LOCK_FILENAME))
    rundir_lock.acquire(logdir).release()


def test_live_lock_refuses_and_names_holder(tmp_path):
    logdir = str(tmp_path / "run")
    held = rundir_lock.acquire(logdir)
    try:
        with pytest.raises(rundir_lock.RunDirLockedError) as e:
            rundir_lock.acquire(logdir)
        msg = str(e.value)
        assert f"run directory {logdir} is in use by PID {os.getpid()} on host " \
               f"{socket.gethostname()} since 20" in msg, msg
        assert "\n" not in msg
    finally:
        held.release()
    assert not os.path.exists(os.path.join(logdir, rundir_lock.LOCK_FILENAME))


def test_stale_pid_is_taken_over(tmp_path):
    logdir = str(tmp_path / "run")
    pid = _dead_pid()
    path = _write_lock(logdir, socket.gethostname(), pid)
    # A takeover mutex left by a start that died while removing a stale lock.
    mutex = path + ".takeover"
    open(mutex, "w").close()
    os.utime(mutex, (time.time() - 60, time.time() - 60))
    lines = []
    lock = rundir_lock.acquire(logdir, log=lines.append)
    assert not os.path.exists(mutex)
    try:
        assert len(lines) == 1 and f"held by PID {pid} on host {socket.gethostname()}" in lines[0] \
            and "no longer exists on this host" in lines[0], lines
        holder = rundir_lock.read_holder(lock.path)
        assert holder["pid"] == os.getpid() and holder["token"] == lock.token
    finally:
        lock.release()


def test_other_host_lock_is_taken_over_only_when_not_refreshed(tmp_path):
    logdir = str(tmp_path / "run")
    # Refreshed a minute ago on another host: live (its PID cannot be checked).
    _write_lock(logdir, "elsewhere.example", 1, age=60)
    with pytest.raises(rundir_lock.RunDirLockedError, match="PID 1 on host elsewhere.example"):
        rundir_lock.acquire(logdir)
    # Not refreshed for longer than STALE_AFTER_SECS: taken over.
    _write_lock(logdir, "elsewhere.example", 1, age=rundir_lock.STALE_AFTER_SECS + 60)
    lines = []
    lock = rundir_lock.acquire(logdir, log=lines.append)
    lock.release()
    assert "heartbeat is" in lines[0] and "elsewhere.example" in lines[0], lines


def test_heartbeat_refreshes_and_release_keeps_a_lock_taken_over(tmp_path):
    logdir = str(tmp_path / "run")
    lock = rundir_lock.acquire(logdir, heartbeat_secs=0.05)
    path = lock.path
    old = time.time() - 1000
    os.utime(path, (old, old))
    deadline = time.time() + 10
    while os.stat(path).st_mtime < old + 500 and time.time() < deadline:
        time.sleep(0.05)
    assert os.stat(path).st_mtime > old + 500, "heartbeat did not refresh the lock file"
    # Someone else holds it now (e.g. took it over): release must not delete theirs.
    _write_lock(logdir, "elsewhere.example", 1)
    lock.release()
    assert rundir_lock.read_holder(path)["host"] == "elsewhere.example"


def test_remote_paths_are_not_locked():
    assert rundir_lock.acquire("gs://bucket/run") is None
