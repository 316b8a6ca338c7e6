"""Suite-wide rules: in CI a skipped test is a failure, because skips hide missing features;
the tests whose figures need the machine to themselves get it."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator

import pytest

# Tests whose assertions are figures the machine must have the CPU for (three consumers
# sustaining the project's limit): the other worker waits while one runs. Beside a light
# test they measured 265-390/s of 500 in ci-fresh runs, and passed alone.
_ALONE = {"test_scale_out.py"}


@pytest.fixture(autouse=True)
def _machine_share(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """A reader-writer lock over the machine, shared by the xdist workers (their base
    temporary directories have one parent): every test holds it shared, an `_ALONE` test
    exclusively. The turnstile makes it fair: a test waiting to run alone stops new shared
    holders, so it waits for the current test only."""
    if "PYTEST_XDIST_WORKER" not in os.environ:  # one process: nothing to share
        yield
        return
    alone = request.node.path.name in _ALONE
    where = tmp_path_factory.getbasetemp().parent
    turnstile_path, machine_path = where / "turnstile.lock", where / "machine.lock"
    with turnstile_path.open("a") as turnstile, machine_path.open("a") as machine:
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        try:
            fcntl.flock(machine, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        finally:
            fcntl.flock(turnstile, fcntl.LOCK_UN)
        yield  # the lock goes with the file's closing


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter is not None else 0
    if os.environ.get("CI") and skipped and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        if reporter is not None:
            reporter.write_line(f"CI: {skipped} test(s) skipped; a skip counts as a failure here")
