"""Test-wide settings: CPU only; float64 on request for gradient checks."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Launchers started by tests compile afresh (tests/runtime/test_compile_cache.py
# turns the persistent cache on where it tests it).
os.environ.setdefault("UGRAD_COMPILATION_CACHE", "off")

import jax  # pylint: disable=import-outside-toplevel
import pytest  # pylint: disable=import-outside-toplevel


@pytest.fixture
def x64():
  """Runs the test with 64-bit floats (gradient-equivalence checks)."""
  with jax.enable_x64(True):
    yield
