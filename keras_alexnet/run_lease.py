"""One training run per model_dir: a lease file with a heartbeat.

    model_dir/lease.json   {"host", "boot_id", "pid", "since", "heartbeat", "token"}

`acquire(model_dir)` is called by the training run (the chief of a multi-worker job; evaluation,
export and prediction only read and never take it). While the run lives, a background thread
rewrites the file every `heartbeat_seconds`; `release()` removes it at the end, also after an
exception, SIGTERM or Ctrl-C (training.train's `finally:`) and at interpreter exit.

A second run on the same model_dir is refused with a UsageError (one line naming the holder and
the fix) unless the holder is gone: its process is not running on this machine (SIGKILL, a crash),
the machine rebooted, or its heartbeat is older than `stale_seconds` (a machine lost, seen from
another host). A stale lease is taken over with a one-line notice.

Race safety. On a local folder the check-and-write runs under an flock on model_dir/.lease.lock,
so of two runs started together exactly one wins. TensorFlow filesystems such as gs:// have no
locks and no create-if-absent, so there the last writer wins: a run writes its claim, waits
`settle_seconds`, reads the file back and goes on only if its own claim is still there. Two runs
both pass only if one wrote its claim more than `settle_seconds` after the other checked, which a
check-then-write of milliseconds does not do.

Every file goes through tf.io.gfile, as everything else in model_dir.
"""

import atexit
import contextlib
import datetime
import json
import os
import socket
import sys
import threading
import time
import uuid

import tensorflow as tf

from keras_alexnet.errors import UsageError

LEASE_FILE = "lease.json"
LOCK_FILE = ".lease.lock"
HEARTBEAT_SECONDS = 30.0
# A heartbeat this old means the holder is gone. Large against the heartbeat interval and against
# clock differences between hosts (the heartbeat is the holder's clock, the check is ours).
STALE_SECONDS = 300.0
SETTLE_SECONDS = 2.0

# The leases this process holds, by path: a lease left behind by an earlier train() in this
# process (an exception in a notebook) is taken over by the next one, not refused.
_HELD = {}


def acquire(model_dir, stream=None, **options):
    """Take the lease of model_dir (see the module docstring) and return it; `release()` it at
    the end. Raises UsageError when a live run holds it."""
    lease = RunLease(model_dir, stream=stream, **options)
    lease.acquire()
    return lease


def lease_path(model_dir):
    return os.path.join(model_dir, LEASE_FILE)


def read_lease(path):
    """The holder recorded in a lease file, or None when there is none or it is unreadable."""
    try:
        with tf.io.gfile.GFile(path) as f:
            holder = json.loads(f.read())
    except (tf.errors.NotFoundError, ValueError):
        return None
    return holder if isinstance(holder, dict) and "token" in holder else None


class RunLease:
    """The lease of one run on one model_dir. Use `acquire()` above, or `with RunLease(...)`."""

    def __init__(self, model_dir, stream=None, heartbeat_seconds=HEARTBEAT_SECONDS,
                 stale_seconds=STALE_SECONDS, settle_seconds=SETTLE_SECONDS):
        self.model_dir = str(model_dir)
        self.path = lease_path(self.model_dir)
        self.stream = stream
        self.heartbeat_seconds = heartbeat_seconds
        self.stale_seconds = stale_seconds
        self.settle_seconds = settle_seconds
        self.token = uuid.uuid4().hex
        self.since = None
        self._stop = threading.Event()
        self._thread = None

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc_info):
        self.release()

    def acquire(self):
        tf.io.gfile.makedirs(self.model_dir)
        earlier = _HELD.pop(self.path, None)
        if earlier is not None:  # left by an earlier train() in this process: stop its heartbeat
            earlier._stop_heartbeat()  # (before taking the lock, which that heartbeat may wait for)
        with _exclusive(self.model_dir):
            holder = read_lease(self.path)
            if holder is not None:
                reason = stale_reason(holder, self.stale_seconds)
                if reason is None:
                    raise UsageError(self._held_message(holder))
                self._say(f"warning: taking over the lease of {self.model_dir} from a run that is gone "
                          f"({describe(holder)}; {reason}).")
            self.since = time.time()
            self._write()
        if claims_need_settling(self.model_dir):
            time.sleep(self.settle_seconds)  # no lock here: the last writer wins; see who did
            holder = read_lease(self.path)
            if holder is None or holder["token"] != self.token:
                raise UsageError(self._held_message(holder or {}))
        _HELD[self.path] = self
        self._thread = threading.Thread(target=self._beat, name="run-lease-heartbeat", daemon=True)
        self._thread.start()
        atexit.register(self.release)

    def release(self):
        """Stop the heartbeat and remove the lease file if it is still ours. Safe to call twice."""
        self._stop_heartbeat()
        if _HELD.get(self.path) is self:
            del _HELD[self.path]
        atexit.unregister(self.release)
        holder = read_lease(self.path)
        if holder is not None and holder["token"] == self.token:
            try:
                tf.io.gfile.remove(self.path)
            except tf.errors.NotFoundError:
                pass

    def _stop_heartbeat(self):
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def _beat(self):
        while not self._stop.wait(self.heartbeat_seconds):
            try:
                with _exclusive(self.model_dir):  # a run taking over waits: no write over its claim
                    holder = read_lease(self.path)
                    if holder is None or holder["token"] != self.token:
                        # Another run judged this one gone and took over (this process stood still
                        # for stale_seconds: SIGSTOP, a suspended VM): say so, and leave its lease.
                        self._say(f"warning: lost the lease of {self.model_dir} to another run "
                                  f"({describe(holder) if holder else 'lease removed'}).")
                        return
                    self._write()
            except (OSError, tf.errors.OpError):
                pass  # a passing filesystem error: the next beat tries again

    def _write(self):
        """Write the lease with a fresh heartbeat: a temporary file renamed over the lease, so a
        reader sees the old or the new one, never half of one."""
        record = {"host": socket.gethostname(), "boot_id": _boot_id(), "pid": os.getpid(),
                  "since": self.since, "heartbeat": time.time(), "token": self.token}
        tmp = f"{self.path}.{self.token}.tmp"
        with tf.io.gfile.GFile(tmp, "w") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
        tf.io.gfile.rename(tmp, self.path, overwrite=True)

    def _held_message(self, holder):
        age = max(0.0, time.time() - holder.get("heartbeat", time.time()))
        return (f"--model_dir={self.model_dir} is in use by another training run ({describe(holder)}, "
                f"last heartbeat {age:.0f} s ago): wait for it to end or stop it, or pass another --model_dir. "
                f"A run that died is taken over by the next one (at once on its own machine, after "
                f"{self.stale_seconds:.0f} s without a heartbeat from elsewhere).")

    def _say(self, message):
        print(message, file=self.stream or sys.stderr, flush=True)


def describe(holder):
    """'host H, process P, since YYYY-MM-DD HH:MM:SS UTC' for a lease record."""
    since = holder.get("since")
    when = (datetime.datetime.fromtimestamp(since, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
            if isinstance(since, (int, float)) else "an unknown time")
    return f"host {holder.get('host', '?')}, process {holder.get('pid', '?')}, since {when}"


def stale_reason(holder, stale_seconds=STALE_SECONDS, now=None):
    """Why the holder of a lease is gone, or None if it may still be running."""
    now = time.time() if now is None else now
    age = now - float(holder.get("heartbeat", 0))
    if age > stale_seconds:
        return f"no heartbeat for {age:.0f} s"
    if holder.get("host") != socket.gethostname():
        return None  # another machine: only its heartbeat tells
    if holder.get("boot_id") and _boot_id() and holder["boot_id"] != _boot_id():
        return "its machine restarted since"
    pid = holder.get("pid")
    if pid == os.getpid():  # a train() that ended by an exception before releasing (a notebook)
        return "left by an earlier run in this process"
    if not _pid_running(pid):
        return f"process {pid} is no longer running"
    return None


def _pid_running(pid):
    """Whether a process with this id runs on this machine (a zombie, killed but not yet reaped by
    its parent, does not count)."""
    try:
        pid = int(pid)
        if pid <= 0:
            return False
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except (ProcessLookupError, TypeError, ValueError, OverflowError):
        return False
    except PermissionError:
        return True  # it exists, as another user's process
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc (macOS): os.kill said it exists


def _boot_id():
    """This boot of this machine (Linux), or None: a lease from an earlier boot is stale."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return None


def _is_local(path):
    return "://" not in path or path.startswith("file://")


def claims_need_settling(path):
    """Whether two processes may write claims at once where no lock orders them: shared
    filesystems without locks (gs://, s3://, hdfs://), not local folders (flock) nor ram://
    (TensorFlow's in-memory filesystem is seen by this process only)."""
    return not _is_local(path) and not path.startswith("ram://")


@contextlib.contextmanager
def _exclusive(model_dir):
    """On a local folder, an flock held while the lease is checked and written: two runs started
    together take turns. Elsewhere (gs://, ram://) nothing: see the module docstring."""
    if not _is_local(model_dir):
        yield
        return
    import fcntl

    local_dir = model_dir[len("file://"):] if model_dir.startswith("file://") else model_dir
    fd = os.open(os.path.join(local_dir, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock (and a process that dies releases it too)
