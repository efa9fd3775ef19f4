"""The README's set-up commands are what CI runs, and its notebook example runs as written."""

import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def readme_commands():
    lines = [line.strip() for line in (ROOT / "README.md").read_text().splitlines()[:15]]
    return [line for line in lines if line.startswith("python3 -m venv")]


def test_readme_starts_with_two_setup_commands():
    commands = readme_commands()
    assert len(commands) == 2, commands
    main_job, tests = commands
    assert "pip install -e ." in main_job and "python scripts/" in main_job
    assert (ROOT / main_job.split("python ")[-1].split()[0]).is_file()
    assert 'pip install -e ".[test]"' in tests


def test_ci_runs_the_readme_test_command():
    test_command = readme_commands()[1].split("&& ")[-1]
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_command in ci.splitlines(), f"{test_command!r} is not a line of .ci/run"


def python_blocks(page):
    """The ```python blocks of a Markdown page of the repository (README.md, docs/input.md)."""
    text = (ROOT / page).read_text()
    return [block.split("```", 1)[0] for block in text.split("```python\n")[1:]]


def test_the_notebook_example_runs_as_written(capsys):
    import numpy as np

    [example] = python_blocks("README.md")
    names = {}
    exec(compile(example, "README.md", "exec"), names)
    assert "conv1" in capsys.readouterr().out  # model.summary()
    assert tuple(names["fc7"].output.shape) == (None, 4096)
    assert tuple(names["features"].output.shape) == (None, 6, 6, 256)
    # The commented-out fit, on two images: the compiled model trains as the README says.
    images = np.random.default_rng(0).uniform(-100, 100, size=(2, 227, 227, 3)).astype("float32")
    history = names["model"].fit(images, np.array([3, 7]), batch_size=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
