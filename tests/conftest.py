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
