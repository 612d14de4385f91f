"""The suite's own last resort (pyproject.toml, [tool.pytest.ini_options]): a test stuck where
pytest-timeout cannot end it, here a thread's join that never returns, has every thread's stack printed
and its worker ended, and the test is not run again; the run ends, failed."""

import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.processes

STUCK = '''
import threading

def test_stuck_in_a_join():
    never = threading.Event()
    thread = threading.Thread(target=never.wait, daemon=True)
    thread.start()
    thread.join()

def test_after_it():  # pending when the worker ends: xdist would hand the file back, stuck test and all
    pass
'''


def test_a_test_stuck_past_the_limit_is_ended_with_its_stacks_and_not_run_again(tmp_path):
    (tmp_path / "test_stuck.py").write_text(STUCK)
    run = subprocess.run(
        # the project's settings, its limit made 2 s and pytest-timeout's taken away
        [sys.executable, "-m", "pytest", "-q", "-n", "2", "--dist", "loadfile", "-p", "no:cacheprovider",
         "-c", str(ROOT / "pyproject.toml"), "-o", "faulthandler_timeout=2", "-o", "timeout=0",
         str(tmp_path / "test_stuck.py")],
        capture_output=True, text=True, cwd=tmp_path, timeout=120)  # without the limit: stuck for ever
    output = run.stdout + run.stderr
    assert run.returncode == 1, output
    assert "crashed while running '::test_stuck_in_a_join'" in output, output
    # its stack, printed as it ended, once: run once (how often the summary names it depends on the
    # terminal's width, so the names are not counted)
    assert output.count(" in test_stuck_in_a_join\n") == 1, output
    assert output.count("node down") == 1, output
