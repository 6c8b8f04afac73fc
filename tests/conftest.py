"""Test configuration: 8 host CPU devices (for sharding tests) and shared fixtures."""

import os

# Must happen before jax initialises its backend.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path

import jax
import pytest

SHARED_DATA = Path(
    os.environ.get("EQUIJAX_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


@pytest.fixture
def keys():
    """A stream of fresh PRNG keys."""
    key = jax.random.key(0)

    def next_key():
        nonlocal key
        key, sub = jax.random.split(key)
        return sub

    return next_key


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only shared data folder (present on CI next to the clone)."""
    return SHARED_DATA


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A skipped test is a failure, unless ``EQUIJAX_ALLOW_SKIP=1``.

    README's install command (``pip install -e ".[test]"``) installs every optional extra, and the
    tests find ``../shared/data`` beside the clone, so after README's two commands nothing is
    optional: a skip means something is missing. Users who installed fewer extras on purpose can
    set ``EQUIJAX_ALLOW_SKIP=1`` to see such tests skipped (with their reason) instead.
    """
    outcome = yield
    report = outcome.get_result()
    strict = os.environ.get("EQUIJAX_ALLOW_SKIP") != "1"
    if strict and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped tests fail (set EQUIJAX_ALLOW_SKIP=1 to allow): {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """The same rule for a whole module skipped at import (``pytest.importorskip``)."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("EQUIJAX_ALLOW_SKIP") != "1" and report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped module fails (set EQUIJAX_ALLOW_SKIP=1 to allow): {reason}"
