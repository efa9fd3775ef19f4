"""scripts/_cli.py: one-line errors and exit codes for scripts/ (no TensorFlow work)."""

import errno
import importlib.util
import io
import json
import os
import re
import signal
import subprocess
import sys

import pytest
from absl import flags

from keras_alexnet.errors import UsageError, counted, few

SCRIPTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts")


def load_cli():
    if SCRIPTS not in sys.path:  # as for a script: its folder first, where _cli finds _startup_noise
        sys.path.insert(0, SCRIPTS)
    spec = importlib.util.spec_from_file_location("_cli", os.path.join(SCRIPTS, "_cli.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cli = load_cli()


def test_importing_it_imports_neither_tensorflow_nor_keras_alexnet():
    """The scripts answer usage errors before TensorFlow is imported (seconds)."""
    code = ("import sys; import _cli; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'keras_alexnet')))")
    done = subprocess.run([sys.executable, "-c", code], cwd=SCRIPTS, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def exit_code(excinfo):
    return excinfo.value.code


def test_fail_prints_one_line_and_exits_2(capsys):
    with pytest.raises(SystemExit) as excinfo:
        cli.fail("--batch_size=0: use a positive number.")
    assert exit_code(excinfo) == 2
    captured = capsys.readouterr()
    assert captured.err == "error: --batch_size=0: use a positive number.\n"
    assert captured.out == ""


def test_fail_takes_an_exception_and_another_code(capsys):
    with pytest.raises(SystemExit) as excinfo:
        cli.fail(RuntimeError("loss is NaN at step 3"), code=1)
    assert exit_code(excinfo) == 1
    assert capsys.readouterr().err == "error: loss is NaN at step 3\n"


@pytest.fixture
def flag_values():
    values = flags.FlagValues()
    flags.DEFINE_integer("batch_size", 32, "Images per batch.", flag_values=values)
    flags.DEFINE_enum("crops", "1", ["1", "10"], "Views per image.", flag_values=values)
    return values


def test_parse_flags_returns_positional_arguments(flag_values):
    assert cli.parse_flags(["prog", "--batch_size=8", "a.jpg"], flag_values) == ["prog", "a.jpg"]
    assert flag_values.batch_size == 8


def test_a_path_from_the_home_folder_is_expanded_as_a_shell_would(flag_values, monkeypatch, tmp_path):
    # Quoted (a YAML file, a job spec), --model_dir "~/run" made a folder named "~" in the current one [seen].
    monkeypatch.setenv("HOME", str(tmp_path))
    flags.DEFINE_string("model_dir", None, "A run.", flag_values=flag_values)
    flags.DEFINE_list("queries", [], "Images.", flag_values=flag_values)
    positional = cli.parse_flags(["prog", "--model_dir=~/run", "--queries=~/a.jpg,b~.jpg", "~/c.jpg"], flag_values)
    assert flag_values.model_dir == str(tmp_path / "run") and positional == ["prog", str(tmp_path / "c.jpg")]
    assert flag_values.queries == [str(tmp_path / "a.jpg"), "b~.jpg"]


@pytest.mark.parametrize(
    "argument,message",
    [
        ("--no_such_flag", "error: Unknown command line flag 'no_such_flag'. See --helpfull."),
        ("--batch_size=many", "error: flag --batch_size=many: invalid literal for int() with base 10: 'many'. See --helpfull."),
        ("--crops=5", "error: flag --crops=5: value should be one of <1|10>. See --helpfull."),
    ],
)
def test_parse_flags_errors_are_one_line_and_exit_2(flag_values, capsys, argument, message):
    with pytest.raises(SystemExit) as excinfo:
        cli.parse_flags(["prog", argument], flag_values)
    assert exit_code(excinfo) == 2
    assert capsys.readouterr().err == message + "\n"


def test_a_missing_required_flag_is_named_with_its_help(flag_values, capsys):
    flags.DEFINE_string("model_dir", None, "A training run's folder.", required=True, flag_values=flag_values)
    with pytest.raises(SystemExit) as excinfo:
        cli.parse_flags(["prog"], flag_values)
    assert exit_code(excinfo) == 2
    # absl's own: "flag --model_dir=None: Flag --model_dir must have a value other than None.. See --helpfull."
    assert capsys.readouterr().err == "error: --model_dir is required: a training run's folder.\n"


def run(main, argv, positional=False):
    """cli.run on argv; returns the exit code (absl's app.run always exits)."""
    with pytest.raises(SystemExit) as excinfo:
        cli.run(main, positional=positional, argv=argv)
    return exit_code(excinfo)


def test_run_returns_main_exit_code_and_passes_positional_arguments():
    seen = []

    def main(argv):
        seen.append(argv)
        return 1

    assert run(main, ["prog", "a.jpg", "b.png"], positional=True) == 1
    assert seen == [["prog", "a.jpg", "b.png"]]


def test_run_refuses_positional_arguments_unless_asked(capsys):
    called = []
    assert run(called.append, ["prog", "stray"]) == 2
    assert called == []
    assert capsys.readouterr().err == "error: unexpected arguments ['stray']: flags are --name=value.\n"


def test_a_value_after_a_true_false_flag_is_explained(flag_values):
    # `--xla false` parses as --xla (true) and a stray "false": the run was refused as "unexpected arguments".
    flags.DEFINE_bool("xla", True, "XLA.", flag_values=flag_values)
    message = cli.stray_arguments_message(["train.py", "--xla", "false", "--batch_size", "8"], ["false"], flag_values)
    assert message == "--xla false: a true/false flag takes its value after '=': --xla=false (or --xla for true, --noxla for false)."
    # A value after a flag that is not true/false is absl's to take; what is left is a stray argument.
    assert cli.stray_arguments_message(["train.py", "--batch_size", "8", "x.jpg"], ["x.jpg"], flag_values) == (
        "unexpected arguments ['x.jpg']: flags are --name=value.")


@pytest.mark.parametrize("verbosity, expected", [
    ([], "warning: skipped a.jpg\n"),
    # --verbosity asks for absl's own lines, with their prefix (W1206 13:49:24.463258 ... file:line]).
    (["--verbosity=0"], re.compile(r"W\d{4} [\d:.]+ +\d+ <string>:\d+\] skipped a.jpg\n")),
])
def test_log_lines_read_as_the_scripts_own_warnings(verbosity, expected):
    code = ("import sys, _cli; from absl import logging; _cli.run(lambda argv: logging.warning('skipped %s', 'a.jpg'), "
            "argv=['prog', *sys.argv[1:]], keras_backend=None)")
    done = subprocess.run([sys.executable, "-c", code, *verbosity], cwd=SCRIPTS, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    if isinstance(expected, str):
        assert done.stderr == expected  # was absl's "W1206 13:49:24.463258 139912443586240 data.py:83] skipped ..."
    else:
        assert expected.fullmatch(done.stderr), done.stderr


@pytest.mark.parametrize("argv, stray, expected", [
    # `--queries photos/*.jpg`: the shell gives each file as an argument; absl took the first only.
    (["nearest_neighbors.py", "--queries", "a.jpg", "b.jpg", "--k=3"], ["b.jpg"],
     "--queries takes its values as one comma-separated argument: --queries=a.jpg,b.jpg "
     "(2 values came as separate arguments, e.g. from a shell wildcard)."),
    (["learning_check.py", "--seeds=0", "1", "2", "3"], ["1", "2", "3"],
     "--seeds takes its values as one comma-separated argument: --seeds=0,1,2,... "
     "(4 values came as separate arguments, e.g. from a shell wildcard)."),
    # After a flag that takes one value the left-over argument is only a stray.
    (["nearest_neighbors.py", "--out", "a.png", "b.png"], ["b.png"], "unexpected arguments ['b.png']: flags are --name=value."),
])
def test_values_given_to_a_list_flag_as_separate_arguments_are_explained(flag_values, argv, stray, expected):
    flags.DEFINE_list("queries", [], "Query images.", flag_values=flag_values)
    flags.DEFINE_list("seeds", ["0"], "Seeds.", flag_values=flag_values)
    flags.DEFINE_string("out", "fig.png", "Figure.", flag_values=flag_values)
    assert cli.stray_arguments_message(argv, stray, flag_values) == expected


class _TensorFlowError(Exception):
    """Stands in for tensorflow.errors.FailedPreconditionError (this file imports no TensorFlow)."""


_TensorFlowError.__module__ = "tensorflow.python.framework.errors_impl"


class ResourceExhaustedError(_TensorFlowError):
    """Stands in for tensorflow.errors.ResourceExhaustedError."""


# What TensorFlow raised from the first file call on gs:// without a network (seen), a traceback before.
UNREACHABLE = _TensorFlowError("Error executing an HTTP request: libcurl code 6 meaning 'Could not resolve hostname', "
                               "error details: Could not resolve host: www.googleapis.com\n\t when reading metadata of "
                               "gs://bucket/run/checkpoints/checkpoint")
# What a batch too large for a GPU raises (TensorFlow's message), a traceback through the training loop before.
OUT_OF_MEMORY = ResourceExhaustedError("{{function_node __inference_train_loop_812}} OOM when allocating tensor with "
                                       "shape[1024,96,55,55] and type float on /job:localhost/replica:0/task:0/device:GPU:0 "
                                       "by allocator GPU_0_bfc\n\t [[{{node conv1/Relu}}]]\nHint: If you want to see ...")


@pytest.mark.parametrize(
    "error,line",
    [
        (UsageError("--dataset=nonsense: not a dataset."), "error: --dataset=nonsense: not a dataset.\n"),
        (FileNotFoundError("/data/x/config.json not found."), "error: /data/x/config.json not found.\n"),
        # A full disk or quota, from Python's own writes or from a TensorFlow op's message.
        (OSError(errno.ENOSPC, "No space left on device", "/out/sets/a.jpg"),
         "error: No space left on device writing /out/sets/a.jpg: free disk space or write somewhere else, then rerun.\n"),
        (RuntimeError("/out/1/variables.data; Disk quota exceeded [Op:SaveV2]"),
         "error: Disk quota exceeded: free disk space or write somewhere else, then rerun.\n"),
        (UNREACHABLE,
         "error: could not reach gs://bucket/run/checkpoints/checkpoint (Could not resolve host: www.googleapis.com): "
         "check the network and the storage's credentials (for gs://: gcloud auth application-default login, or "
         "GOOGLE_APPLICATION_CREDENTIALS), or use a local folder.\n"),
        (OUT_OF_MEMORY,
         "error: out of memory (OOM when allocating tensor with shape[1024,96,55,55] and type float on "
         "/job:localhost/replica:0/task:0/device:GPU:0 by allocator GPU_0_bfc): lower --batch_size (or --image_size), "
         "or run where there is more memory; files already written are kept.\n"),
    ],
)
def test_run_turns_usage_errors_into_one_line_and_exit_2(capsys, error, line):
    def main(argv):
        raise error

    assert run(main, ["prog"]) == 2
    captured = capsys.readouterr()
    assert captured.err == line
    assert "Traceback" not in captured.err


def test_run_lets_other_exits_and_errors_through(capsys):
    def preempted(argv):
        raise SystemExit(143)

    assert run(preempted, ["prog"]) == 143

    def broken(argv):
        raise RuntimeError("a bug, not bad input")

    with pytest.raises(RuntimeError, match="a bug"):
        cli.run(broken, argv=["prog"])

    def unreadable(argv):  # an OSError that is not about space stays a traceback
        raise OSError(errno.EIO, "Input/output error", "/data/x.jpg")

    with pytest.raises(OSError, match="Input/output error"):
        cli.run(unreadable, argv=["prog"])


@pytest.mark.parametrize(
    "model_dir,weights,message",
    [
        (None, None, "exactly one of --model_dir"),
        ("run", "w.npz", "exactly one of --model_dir"),
        (None, "missing.npz", "--weights=missing.npz: no such file"),
        ("empty_run", None, "has no config.json"),
    ],
)
def test_require_model_source_refuses_bad_sources(tmp_path, capsys, monkeypatch, model_dir, weights, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(SystemExit) as excinfo:
        cli.require_model_source(model_dir, weights)
    assert exit_code(excinfo) == 2
    assert message in capsys.readouterr().err


def test_require_model_source_accepts_a_run_or_a_file(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "w.npz").write_bytes(b"")
    cli.require_model_source(str(tmp_path), None)
    cli.require_model_source(None, str(tmp_path / "w.npz"))


TENSORFLOW_START_UP = """\
WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
I0000 00:00:1795999113.155019    6487 port.cc:153] oneDNN custom operations are on. You may see slightly different results.
I0000 00:00:1795999113.155363    6487 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.
W0000 00:00:1795999113.200000    6487 some_op.cc:12] a warning the user must see
E0000 00:00:1795999115.655524    6487 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)
"""


def test_start_up_noise_filter_keeps_every_other_line():
    from _startup_noise import kept_lines

    assert kept_lines(TENSORFLOW_START_UP) == ["W0000 00:00:1795999113.200000    6487 some_op.cc:12] a warning the user must see\n"]
    # Where a CUDA driver was found, cuInit's failure is kept: the GPU will not be used.
    with_driver = "".join(line for line in TENSORFLOW_START_UP.splitlines(keepends=True) if "cudart_stub" not in line)
    assert [line.split()[3] for line in kept_lines(with_driver)] == ["some_op.cc:12]", "cuda_platform.cc:52]"]


@pytest.mark.parametrize("level,noisy", [(None, False), ("0", True)])
def test_scripts_import_tensorflow_without_its_start_up_lines(level, noisy):
    """What `import tensorflow` prints to stderr (a C++ write) under scripts/_cli.py; a line the
    filter does not know, written during the import, still reaches stderr."""
    code = ("import os, sys, _cli, _startup_noise\n"
            "with _startup_noise.filtered_stderr():\n"
            "    os.write(2, b'E0000 00:00:1.0 1 other.cc:1] kept\\n')\n"
            "import tensorflow as tf\n"
            "print(float(tf.constant(2.0) * 3))\n")
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    if level is not None:
        env["TF_CPP_MIN_LOG_LEVEL"] = level
    done = subprocess.run([sys.executable, "-c", code], cwd=SCRIPTS, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "6.0"
    assert done.stderr.startswith("E0000 00:00:1.0 1 other.cc:1] kept\n")
    assert ("oneDNN custom operations" in done.stderr) == noisy
    assert ("absl::InitializeLog" in done.stderr) == noisy


@pytest.mark.parametrize("environment, keras_json, note", [
    ({"KERAS_BACKEND": "jax"}, None, "note: Keras' backend is jax by KERAS_BACKEND; this script runs on TensorFlow, "
                                     "so it uses Keras' tensorflow backend (keras_alexnet.build() alone works under any backend).\n"),
    ({}, {"backend": "torch"}, "note: Keras' backend is torch by {home}/keras.json; this script runs on TensorFlow"),
    ({}, {"backend": "tensorflow"}, ""),
    ({"KERAS_BACKEND": "tensorflow"}, None, ""),
    ({}, None, ""),
])
def test_the_scripts_use_keras_tensorflow_backend_and_say_so_when_another_was_chosen(
        tmp_path, monkeypatch, capsys, environment, keras_json, note):
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    if keras_json:
        (tmp_path / "keras.json").write_text(json.dumps(keras_json))
    cli.use_keras_backend("tensorflow")
    assert os.environ["KERAS_BACKEND"] == "tensorflow"
    err = capsys.readouterr().err
    assert err.startswith(note.format(home=tmp_path)) if note else err == ""


def test_only_tensorflow_errors_that_could_not_reach_storage_are_explained_as_such():
    assert cli.unreachable_storage_message(UNREACHABLE).startswith("could not reach gs://bucket/run/checkpoints/checkpoint")
    assert cli.unreachable_storage_message(RuntimeError(str(UNREACHABLE))) is None  # not TensorFlow's: not ours to explain
    assert cli.unreachable_storage_message(_TensorFlowError("Input to reshape is a tensor with 3 values")) is None


def test_only_allocations_that_failed_are_explained_as_memory():
    assert cli.out_of_memory_message(OUT_OF_MEMORY).startswith("out of memory (OOM when allocating tensor with")
    host = MemoryError("Unable to allocate 230. GiB for an array with shape (200000, 227, 227, 3) and data type int64")
    assert cli.out_of_memory_message(host).startswith("out of memory (Unable to allocate 230. GiB for an array")
    assert cli.out_of_memory_message(ResourceExhaustedError("quota exceeded for bucket")) is None  # not memory
    assert cli.out_of_memory_message(RuntimeError("OOM when allocating")) is None


FAILING_CLEANUP = "raise AssertionError('Nesting violated for default stack')"


@pytest.mark.parametrize("name, cleanup_raises", [("SIGTERM", False), ("SIGHUP", False), ("SIGINT", False),
                                                  ("SIGTERM", True), ("SIGINT", True)])
def test_a_stop_signal_unwinds_main_so_its_cleanups_run(tmp_path, name, cleanup_raises):
    # Killed where it stood, export.py left its .tmp-export-* staging folder in the export base and
    # nearest_neighbors.py its temporary activations (20 GB on ImageNet) [seen with SIGTERM].
    # In a process of its own: without the handler the signal would end the test run.
    code = ("import os, signal, sys, time, _cli\n"
            # As in a terminal: a job started in the background by a script inherits SIGINT ignored [seen in CI].
            "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
            "def main(argv):\n"
            "    try:\n"
            f"        os.kill(os.getpid(), signal.{name})\n"
            "        time.sleep(30)\n"
            "    finally:\n"
            f"        open({str(tmp_path / 'cleaned')!r}, 'w').close()\n"
            # As TensorFlow's graph stack did when the signal came while it traced a function [seen]:
            f"        {FAILING_CLEANUP if cleanup_raises else 'pass'}\n"
            "before = signal.getsignal(signal.SIGTERM)\n"
            "try:\n"
            "    _cli.run(main, argv=['prog'], keras_backend=None)\n"
            "finally:\n"
            "    print('restored' if signal.getsignal(signal.SIGTERM) is before else 'not restored')\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=SCRIPTS, capture_output=True, text=True, timeout=60)
    assert done.returncode == 128 + getattr(signal, name), done.stderr
    # Ctrl-C was a KeyboardInterrupt traceback (exit 130 from the interpreter) [seen]: now one line too.
    assert (tmp_path / "cleaned").exists() and done.stderr == f"stopped by {'Ctrl-C' if name == 'SIGINT' else name}.\n"
    assert done.stdout == "restored\n"  # the caller's handlers are back


def test_a_ctrl_c_the_shell_ignores_stays_ignored():
    # A script's background job (`cmd &` in a script) starts with SIGINT ignored: so it stays.
    code = ("import os, signal, time, _cli\n"
            "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
            "def main(argv):\n"
            "    os.kill(os.getpid(), signal.SIGINT)\n"
            "    time.sleep(0.2)\n"
            "    print('finished')\n"
            "_cli.run(main, argv=['prog'], keras_backend=None)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=SCRIPTS, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout == "finished\n" and done.stderr == "", done.stderr


class _PipeWithoutReader(io.StringIO):
    def write(self, text):
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")


class _ClosedTerminal(io.StringIO):
    def write(self, text):
        raise OSError(errno.EIO, "Input/output error")


class _FullDisk(io.StringIO):
    def write(self, text):
        raise OSError(errno.ENOSPC, "No space left on device")


def test_stdout_without_a_reader_drops_what_is_printed_and_says_so_once(capsys):
    stdout = cli.ReaderSafeStdout(_PipeWithoutReader())
    for line in ("epoch 1/10 ...\n", "epoch 2/10 ...\n"):
        assert stdout.write(line) == len(line)  # no BrokenPipeError out of a progress line
    stdout.flush()
    assert capsys.readouterr().err == ("note: standard output was closed by its reader; going on without printing progress "
                                       "(the run's files keep being written).\n")
    assert stdout.isatty() is False  # everything else is the stream's own
    stdout = cli.ReaderSafeStdout(_ClosedTerminal())  # after SIGHUP, while the run saves its checkpoint
    assert stdout.write("epoch 1/10 ...\n") == 15 and "note: standard output was closed" in capsys.readouterr().err
    with pytest.raises(OSError):  # another error of the stream is not hidden
        cli.ReaderSafeStdout(_FullDisk()).write("epoch 1/10 ...\n")



def test_counts_and_lists_in_one_line_messages_read_as_english():
    assert [counted(n, "epoch") for n in (0, 1, 2, 1.0, 0.5, 2.5)] == [
        "0 epochs", "1 epoch", "2 epochs", "1 epoch", "0.5 epochs", "2.5 epochs"]
    assert counted(1, "class", "classes") == "1 class" and counted(3, "class", "classes") == "3 classes"
    assert few(["a", "b"], 3) == "a, b" and few("abcde", 3) == "a, b, c and 2 more"
