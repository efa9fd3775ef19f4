"""One training run per model_dir (keras_alexnet.run_lease): refused while a live run holds it,
taken over when the holder is gone, race-safe, released at the end."""

import io
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import pytest

from keras_alexnet import run_lease
from keras_alexnet.errors import UsageError
from keras_alexnet.training import TrainConfig, train

ROOT = pathlib.Path(__file__).resolve().parents[1]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def write_holder(model_dir, **fields):
    """A lease.json as another run would have written it."""
    now = time.time()
    record = {"host": socket.gethostname(), "boot_id": run_lease._boot_id(), "pid": os.getppid(),
              "since": now - 60, "heartbeat": now, "token": "other", **fields}
    path = os.path.join(str(model_dir), run_lease.LEASE_FILE)
    import tensorflow as tf

    tf.io.gfile.makedirs(str(model_dir))
    if tf.io.gfile.exists(path):
        tf.io.gfile.remove(path)  # ram:// appends to an existing file opened with "w"
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(json.dumps(record))
    return record


def a_dead_pid():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_live_holder_refuses_and_a_gone_one_is_taken_over(tmp_path):
    write_holder(tmp_path)  # pytest's parent: alive, this machine
    with pytest.raises(UsageError) as refused:
        run_lease.acquire(str(tmp_path))
    message = str(refused.value)
    assert f"--model_dir={tmp_path} is in use by another training run (host {socket.gethostname()}, " \
           f"process {os.getppid()}, since " in message and "UTC" in message and "another --model_dir" in message
    assert "\n" not in message
    assert json.loads((tmp_path / "lease.json").read_text())["token"] == "other"  # left alone

    for fields, reason in [({"pid": a_dead_pid()}, "is no longer running"),
                           ({"heartbeat": time.time() - 1000, "host": "elsewhere"}, "no heartbeat for 1000 s"),
                           ({"boot_id": "an-earlier-boot"}, "its machine restarted since")]:
        write_holder(tmp_path, **fields)
        notices = io.StringIO()
        lease = run_lease.acquire(str(tmp_path), stream=notices)
        try:
            assert notices.getvalue().startswith(f"warning: taking over the lease of {tmp_path} from a run that is gone")
            assert reason in notices.getvalue() and notices.getvalue().count("\n") == 1
            held = json.loads((tmp_path / "lease.json").read_text())
            assert (held["pid"], held["host"], held["token"]) == (os.getpid(), socket.gethostname(), lease.token)
        finally:
            lease.release()
        assert not (tmp_path / "lease.json").exists()


def test_another_machine_with_a_fresh_heartbeat_holds_it(tmp_path):
    write_holder(tmp_path, host="worker-7", pid=1)  # a pid that runs here too: the host decides
    with pytest.raises(UsageError, match=r"host worker-7, process 1, since .*last heartbeat 0 s ago"):
        run_lease.acquire(str(tmp_path))


def test_heartbeat_refreshes_and_release_removes(tmp_path):
    lease = run_lease.acquire(str(tmp_path), heartbeat_seconds=0.05)
    first = json.loads((tmp_path / "lease.json").read_text())
    time.sleep(0.5)
    later = json.loads((tmp_path / "lease.json").read_text())
    assert later["heartbeat"] > first["heartbeat"] and later["since"] == first["since"]
    lease.release()
    lease.release()  # twice is harmless
    assert not (tmp_path / "lease.json").exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_without_locks_the_last_claim_wins(monkeypatch):
    # gs:// has no locks: a run writes its claim, waits, and reads it back. Here another run's
    # claim lands while this one waits (as the later writer of two started together).
    model_dir = f"ram://lease-{os.getpid()}/run"
    monkeypatch.setattr(run_lease, "claims_need_settling", lambda path: True)
    monkeypatch.setattr(run_lease.time, "sleep", lambda seconds: write_holder(model_dir, host="worker-1", pid=9))
    with pytest.raises(UsageError, match="host worker-1, process 9"):
        run_lease.acquire(model_dir)
    monkeypatch.setattr(run_lease.time, "sleep", lambda seconds: None)  # nobody else: this claim stays
    write_holder(model_dir, host="worker-1", heartbeat=0.0)
    lease = run_lease.acquire(model_dir, stream=io.StringIO())
    lease.release()


HOLDER = (
    "import sys, time\n"
    "from keras_alexnet import run_lease\n"
    "lease = run_lease.acquire(sys.argv[1])\n"
    "print('HELD', flush=True)\n"
    "time.sleep(float(sys.argv[2]))\n"
    "lease.release()\n"
)


def start_holder(model_dir, seconds):
    return subprocess.Popen([sys.executable, "-c", HOLDER, str(model_dir), str(seconds)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)


def test_second_train_is_refused_and_a_killed_holder_is_taken_over(tmp_path):
    holder = start_holder(tmp_path, 600)
    try:
        assert holder.stdout.readline().strip() == "HELD", holder.stderr.read()
        second = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "train.py"), f"--model_dir={tmp_path}", "--dataset=shapes:train=64,validation=16",
             "--image_size=67", "--batch_size=8", "--epochs=1", "--steps_per_epoch=2", "--export_dir=", "--precision=float32"],
            capture_output=True, text=True, env=ENV, timeout=300)
        assert second.returncode == 2, second.stderr[-3000:]
        errors = [line for line in second.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "Traceback" not in second.stderr, second.stderr[-3000:]
        assert f"is in use by another training run (host {socket.gethostname()}, process {holder.pid}, since " in errors[0]
        assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "config.json").exists()  # no work done
    finally:
        holder.send_signal(signal.SIGKILL)  # not reaped yet: a zombie, as under a busy job scheduler
    time.sleep(0.5)
    assert json.loads((tmp_path / "lease.json").read_text())["pid"] == holder.pid  # SIGKILL: nothing cleaned up
    out = io.StringIO()
    result = train(TrainConfig(dataset="shapes:train=64,validation=16", image_size=67, batch_size=8, epochs=1,
                               steps_per_epoch=2, export_dir=None, precision="float32", xla=False,
                               model_dir=str(tmp_path), strategy="default"), stream=out)
    assert result["step"] == 2
    assert f"warning: taking over the lease of {tmp_path} from a run that is gone (host {socket.gethostname()}, " \
           f"process {holder.pid}, since " in out.getvalue()
    assert f"process {holder.pid} is no longer running" in out.getvalue()
    assert not (tmp_path / "lease.json").exists()  # released at the end
    assert holder.wait() == -signal.SIGKILL


def test_a_lease_left_by_an_earlier_run_in_this_process_is_taken_over(tmp_path):
    # A notebook: train() raised before releasing; the next train() on the same model_dir goes on.
    earlier = run_lease.acquire(str(tmp_path), heartbeat_seconds=0.05)
    notices = io.StringIO()
    later = run_lease.acquire(str(tmp_path), stream=notices)
    assert "left by an earlier run in this process" in notices.getvalue()
    assert not earlier._thread.is_alive()  # its heartbeat no longer writes over the new lease
    earlier.release()  # not its lease any more: left alone
    assert json.loads((tmp_path / "lease.json").read_text())["token"] == later.token
    later.release()
    assert not (tmp_path / "lease.json").exists()


RACER = (
    "import os, sys, time\n"
    "from keras_alexnet import run_lease\n"
    "from keras_alexnet.errors import UsageError\n"
    "read = run_lease.read_lease\n"  # a slow filesystem: half a second between the check and the claim
    "run_lease.read_lease = lambda path: (read(path), time.sleep(0.5))[0]\n"
    "print('READY', flush=True)\n"
    "while not os.path.exists(sys.argv[2]): pass\n"  # both claim at the same moment
    "try:\n"
    "    lease = run_lease.acquire(sys.argv[1])\n"
    "except UsageError:\n"
    "    print('REFUSED'); sys.exit(0)\n"
    "print('WON', flush=True); time.sleep(1); lease.release()\n"
)


def test_of_two_runs_started_together_exactly_one_wins(tmp_path):
    go = tmp_path / "go"
    racers = [subprocess.Popen([sys.executable, "-c", RACER, str(tmp_path / "run"), str(go)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=ENV) for _ in range(2)]
    try:
        assert [racer.stdout.readline().strip() for racer in racers] == ["READY", "READY"]  # TensorFlow imported
        go.touch()
        outcomes = sorted(racer.communicate(timeout=120)[0].strip() for racer in racers)
    finally:
        for racer in racers:
            racer.kill()
    assert outcomes == ["REFUSED", "WON"], [racer.stderr for racer in racers]
