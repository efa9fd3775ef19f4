"""TensorFlow's start-up lines on stderr, filtered out of the scripts' output.

`import tensorflow` writes, from C++ and before its logging reads TF_CPP_MIN_LOG_LEVEL, about
seven lines at the top of every command: absl's "All log messages before absl::InitializeLog()"
notice, "oneDNN custom operations are on" and, on a machine without a GPU driver, "Could not find
cuda drivers" (each twice: two of TensorFlow's libraries print them), then "E... failed call to
cuInit" when the devices are first listed. None of them needs the user's attention on a CPU, and
the `E` line reads as a failure. `install()` (called by scripts/_cli.py) wraps the first import
of TensorFlow, and a first listing of its devices, with stderr sent to a temporary file, then
writes back every line except those (`kept_lines`). Nothing else is filtered: another warning or
error written during the import, or the import's own exception, reaches stderr as before.
TF_CPP_MIN_LOG_LEVEL=0 in the environment turns the filter off.
"""

import contextlib
import importlib.abc
import importlib.machinery
import os
import re
import sys
import tempfile

_NO_DRIVER = re.compile(r"^I\d{4} [\d:.]+ +\d+ cudart_stub\.cc:\d+\] Could not find cuda drivers on your machine")
_NOISE = (
    re.compile(r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$"),
    re.compile(r"^I\d{4} [\d:.]+ +\d+ port\.cc:\d+\] oneDNN custom operations are on\."),
    _NO_DRIVER,
)
# cuInit fails on every machine without a GPU driver; where a driver was found, its failure is news.
_CUINIT_WITHOUT_DRIVER = re.compile(r"^E\d{4} [\d:.]+ +\d+ cuda_platform\.cc:\d+\] failed call to cuInit")


def kept_lines(text):
    """The lines of `text` (with their line ends) that are not TensorFlow's start-up noise."""
    lines = text.splitlines(keepends=True)
    no_driver = any(_NO_DRIVER.match(line) for line in lines)
    return [line for line in lines
            if not any(pattern.match(line) for pattern in _NOISE)
            and not (no_driver and _CUINIT_WITHOUT_DRIVER.match(line))]


@contextlib.contextmanager
def filtered_stderr():
    """File descriptor 2 goes to a temporary file inside the block; its kept lines are written
    to the real stderr at the end, also when the block raises."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            sys.stderr.write("".join(kept_lines(captured.read().decode("utf-8", "replace"))))
            sys.stderr.flush()


class _QuietLoader(importlib.abc.Loader):
    """TensorFlow's own loader, run inside `filtered_stderr`, with its devices listed there too
    (listing physical devices does not start the runtime: thread and memory settings still apply)."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        with filtered_stderr():
            self.loader.exec_module(module)
            module.__spec__.loader = module.__loader__ = self.loader
            module.config.list_physical_devices()


class _QuietFinder(importlib.abc.MetaPathFinder):
    """Finds `tensorflow` once, as the next finder would, and hands it to a `_QuietLoader`."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def install():
    """Filter the first `import tensorflow` of this process, unless TensorFlow is already imported
    or TF_CPP_MIN_LOG_LEVEL=0 asks for every line."""
    if "tensorflow" in sys.modules or os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0":
        return
    if not any(isinstance(finder, _QuietFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _QuietFinder())
