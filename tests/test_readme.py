"""The README's set-up commands are what CI runs."""

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
