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
    """On CI (``EQUIJAX_NO_SKIP=1``, set by ``.ci/run``) a skipped test is a failure.

    Skips exist for users without an optional extra or the shared data folder; CI installs every
    extra and has ``../shared``, so a skip there means something is missing, not optional.
    """
    outcome = yield
    report = outcome.get_result()
    on_ci = os.environ.get("EQUIJAX_NO_SKIP") == "1"
    if on_ci and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped on CI (EQUIJAX_NO_SKIP=1): {reason}"
