"""Crash consistency: a worker killed with SIGKILL twice, restarted each time, gives what an uninterrupted
worker gives -- the same messages processed and dead-lettered, the same set of alert ids (a copy again
is allowed: delivery is at least once), a desk with one case per key, and the same table state.

This is ``bench/crash_harness.py`` (its module docstring explains the runs and the checks) at a size
for CI: 3,000 messages of a simulated night (province 65: misreads, corrections, halves arriving
separately, duplicates; every 500th message truncated JSON), 2 kills at seeded random moments, on an
embedded broker of its own. ~35-60 s on 2 cores.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.broker

HARNESS = Path(__file__).resolve().parents[1] / "bench" / "crash_harness.py"


def load_harness():
    """bench/ is not a package: the harness module, loaded from its file."""
    spec = importlib.util.spec_from_file_location("pantau_bench_crash_harness", HARNESS)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.mark.xfail(strict=True, reason="known bug (docs/reliability.md): after a SIGKILL the restarted worker raises "
                   "revision.changed alerts an uninterrupted worker does not, and its region sums differ; a fix must "
                   "make this test pass (strict: an unexpected pass fails, to remove this mark)")
def test_a_worker_killed_twice_gives_what_an_uninterrupted_worker_gives(tmp_path: Path):
    harness = load_harness()
    report = harness.run(n=3_000, kills=2, seed=1, workdir=tmp_path, say=print)
    summary = "\n".join(report.lines())
    print(summary)  # shown with a failure, with the work directory's worker logs
    assert len(report.kills) == 2, summary
    assert report.consumed == 3_000 and report.deadlettered >= report.invalid_injected == 6, summary
    assert report.alert_messages > 0 and report.cases > 0, summary
    failed = [f"{check.name}: {check.detail}" for check in report.checks if not check.ok]
    assert not failed, "\n".join(failed) + f"\n\n{summary}\n(work directory {tmp_path})"
