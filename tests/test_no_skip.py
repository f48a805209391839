"""`GAD_NO_SKIP=1` (set by .ci/run) turns every kind of skip into a failure naming its reason."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

SKIPPING = '''
import pytest

def test_runs():
    pass

def test_skips_inside():
    pytest.skip("the data is not here")

@pytest.mark.skipif(True, reason="no browser here")
def test_skipped_by_marker():
    pass

@pytest.mark.xfail(reason="a known bug", strict=True)
def test_expected_failure():
    assert False
'''

MODULE_SKIP = '''
import pytest

pytest.importorskip("no_such_module_anywhere")

def test_never_collected():
    pass
'''


def run_pytest(folder: Path, no_skip: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "GAD_NO_SKIP"}
    if no_skip is not None:
        env["GAD_NO_SKIP"] = no_skip
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "tests.no_skip", "-p", "no:cacheprovider", "-rA",
                           "--rootdir", str(folder), str(folder)], capture_output=True, text=True, env=env, cwd=folder)


def test_skips_fail_the_run_under_gad_no_skip(tmp_path):
    tests, module = tmp_path / "tests", tmp_path / "module"
    tests.mkdir(), module.mkdir()
    (tests / "test_some.py").write_text(SKIPPING)
    (module / "test_module.py").write_text(MODULE_SKIP)
    (module / "test_other.py").write_text("def test_runs():\n    pass\n")
    for unset in (None, "0"):
        plain = run_pytest(tests, unset)
        assert plain.returncode == 0 and "1 passed, 2 skipped, 1 xfailed in" in plain.stdout, plain.stdout
        plain = run_pytest(module, unset)
        assert plain.returncode == 0 and "1 passed, 1 skipped in" in plain.stdout, plain.stdout

    strict = run_pytest(tests, "1")
    # a skip inside the test fails it; a skip marker fails its set-up (an error); xfail stays as it was
    assert strict.returncode == 1 and "1 failed, 1 passed, 1 xfailed, 1 error in" in strict.stdout, strict.stdout
    for reason in ("the data is not here", "no browser here"):
        assert f"skipped, and GAD_NO_SKIP=1 turns a skip into a failure: Skipped: {reason}\n" in strict.stdout
    # a skip at import time (importorskip) stops the collection with an error, naming the reason
    strict = run_pytest(module, "1")
    assert strict.returncode == 2 and "1 error in" in strict.stdout, strict.stdout
    assert ("skipped, and GAD_NO_SKIP=1 turns a skip into a failure: Skipped: could not import "
            "'no_such_module_anywhere'") in strict.stdout
