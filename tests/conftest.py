"""Test-wide settings: CPU only; float64 on request for gradient checks."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top


@pytest.fixture
def x64():
  """Runs the test with 64-bit floats (gradient-equivalence checks)."""
  with jax.enable_x64(True):
    yield
