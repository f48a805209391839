"""``GAD_NO_SKIP=1``: a skipped test fails the run instead, with its skip reason (CI sets it).

A test that skips where its inputs are missing (the shared eval data, a browser) is right on a
laptop and wrong in CI, where everything is there: there a skip would hide a check that never ran.
Loaded by ``tests/conftest.py``; ``pytest -p tests.no_skip`` loads it elsewhere (its own test does).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

ENV = "GAD_NO_SKIP"


def _fail_if_skipped(report: pytest.TestReport | pytest.CollectReport) -> None:
    if os.environ.get(ENV) != "1" or not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = f"skipped, and {ENV}=1 turns a skip into a failure: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome = yield
    _fail_if_skipped(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    outcome = yield
    _fail_if_skipped(outcome.get_result())
