"""The small pieces of a training run on their own: StopRequest (signals), Progress (the bar),
the running totals behind images/s, and the checkpoint helpers' bookkeeping. tests/test_training.py
runs them end to end."""

import io
import os
import signal

import numpy as np
import pytest

from keras_alexnet import checkpoints
from keras_alexnet.logs import Progress
from keras_alexnet.training import StopRequest, _RunningTotals


@pytest.fixture
def stop():
    request = StopRequest(stream=io.StringIO())
    request.install()
    yield request
    request.uninstall()


def test_sigterm_is_remembered_not_raised(stop):
    assert not stop.requested
    os.kill(os.getpid(), signal.SIGTERM)
    assert stop.requested and stop.signal_name == "SIGTERM" and stop.exit_code == 143


def test_ctrl_c_once_asks_for_a_checkpoint_and_twice_stops_at_once(stop):
    os.kill(os.getpid(), signal.SIGINT)
    assert stop.requested and stop.exit_code == 130
    assert "saving a checkpoint after this step" in stop.stream.getvalue()
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)


def test_uninstall_gives_the_signals_back():
    before = signal.getsignal(signal.SIGTERM)
    request = StopRequest()
    request.install()
    assert signal.getsignal(signal.SIGTERM) != before
    request.uninstall()
    assert signal.getsignal(signal.SIGTERM) == before


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_in_a_file_prints_a_few_plain_lines_per_epoch():
    out = io.StringIO()
    progress = Progress(steps_per_epoch=100, epochs=2, global_batch_size=10, stream=out, lines_per_epoch=5)
    for step in range(1, 101):
        progress.update(0, step, loss=1.0, top1=0.5, images_per_sec=100.0)
    lines = out.getvalue().splitlines()
    assert len(lines) == 6 and "\r" not in out.getvalue()  # steps 1, 20, 40, 60, 80, 100
    assert lines[-1].startswith("epoch 1/2 [========================] 100/100 loss 1.0000 top-1 0.500 100.0 img/s")
    assert lines[-1].endswith("ETA 0:00:10")  # one epoch of 100 steps x 10 images left at 100 images/s


def test_progress_on_a_terminal_redraws_one_line():
    out = Terminal()
    progress = Progress(steps_per_epoch=4, epochs=1, global_batch_size=8, stream=out)
    for step in range(1, 5):
        progress.update(0, step, loss=0.5, top1=0.9, images_per_sec=0.0)
    progress.end_epoch("epoch 1/1: done")
    text = out.getvalue()
    assert text.count("\r") == 4 and text.count("\n") == 2 and "ETA ?" in text  # no rate yet: no ETA


def test_progress_of_the_compiling_steps_has_no_rate_and_no_eta():
    out = io.StringIO()
    progress = Progress(steps_per_epoch=10, epochs=1, global_batch_size=8, stream=out, lines_per_epoch=10)
    progress.update(0, 1, loss=2.3, top1=0.1, images_per_sec=None)  # the run's first loop
    progress.update(0, 2, loss=2.2, top1=0.2, images_per_sec=80.0)
    first, second = out.getvalue().splitlines()
    assert first.endswith("top-1 0.100 (compiling: no rate yet)") and "ETA" not in first
    assert second.endswith("80.0 img/s ETA 0:00:00")  # 8 steps x 8 images at 80 images/s


def test_running_totals_leave_the_compiling_loop_out_of_images_per_second():
    totals = _RunningTotals()
    totals.add(np.array([20.0, 8.0, 10.0, 10.0]), seconds=100.0, compiled=False)  # tracing and compiling
    totals.add(np.array([10.0, 6.0, 10.0, 10.0]), seconds=1.0, compiled=True)
    means = totals.means()
    assert means["loss"] == 1.5 and means["top1"] == 0.7 and means["top5"] == 1.0
    assert means["images_per_sec"] == 10.0
    totals.restart()
    totals.add(np.array([2.0, 1.0, 2.0, 2.0]), seconds=4.0, compiled=False)  # only a compiling loop: counted
    assert totals.means()["images_per_sec"] == 0.5


def test_config_round_trips_and_a_missing_one_names_the_flag(tmp_path):
    checkpoints.write_config(str(tmp_path), {"image_size": 67, "num_classes": 3})
    assert checkpoints.read_config(str(tmp_path)) == {"image_size": 67, "num_classes": 3}
    assert not (tmp_path / "config.json.tmp").exists()
    with pytest.raises(FileNotFoundError, match="--model_dir must be a directory written by scripts/train.py"):
        checkpoints.read_config(str(tmp_path / "elsewhere"))
    assert checkpoints.class_names({"num_classes": 2}) == ["0", "1"]


def test_the_state_file_is_parsed_and_prefixes_sort_by_step(tmp_path):
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "ckpt-10"\nall_model_checkpoint_paths: "ckpt-9"\n'
                                         'all_model_checkpoint_paths: "ckpt-10"\nlast_preserved_timestamp: 1.5\n')
    named, problem = checkpoints.read_state(str(tmp_path))
    assert problem is None and [os.path.basename(p) for p in named] == ["ckpt-9", "ckpt-10", "ckpt-10"]
    (tmp_path / "ckpt-11.index").write_bytes(b"")  # on disk but not in the state file: still found
    prefixes, _ = checkpoints.checkpoint_prefixes(str(tmp_path))
    assert [os.path.basename(p) for p in prefixes] == ["ckpt-11", "ckpt-10", "ckpt-9"]  # by number, not by name
    (tmp_path / "checkpoint").write_text("model_checkpoint_path: [not text format")
    assert checkpoints.read_state(str(tmp_path)) == ([], "garbled")


def test_latest_checkpoint_needs_an_index_not_the_state_file(tmp_path):
    directory = tmp_path / checkpoints.CHECKPOINT_DIR
    directory.mkdir()
    (directory / "checkpoint").write_text('model_checkpoint_path: "ckpt-12"\n')  # stale: ckpt-12 is gone
    (directory / "ckpt-8.index").write_bytes(b"")
    assert checkpoints.latest_checkpoint(str(tmp_path)) == str(directory / "ckpt-8")
