"""ugrad.registry and the public register_* API."""

import pytest

from experiments.configs import grpo
import ugrad
from ugrad import coefficients
from ugrad import registry
from ugrad import rewards
from ugrad import sources
from ugrad.training import validate


def test_lookup_lists_the_valid_names_in_table_order():
  table = {"b": 1, "a": 2}
  assert registry.lookup(table, "thing", "a") == 2
  with pytest.raises(ValueError, match=r"unknown thing 'c'; valid: b, a$"):
    registry.lookup(table, "thing", "c")


def test_register_refuses_to_shadow_unless_asked():
  table = {"a": 1}
  with pytest.raises(ValueError, match="'a' is already registered"):
    registry.register(table, "thing", "a", 2)
  assert registry.register(table, "thing", "a", 2, replace=True) == 2
  with pytest.raises(ValueError, match="non-empty string name"):
    registry.register(table, "thing", "", 3)


def _coef(rollout, logp, *, scale=1.0):
  del rollout
  return scale * logp, {}


def test_register_coefficient_is_found_by_name(monkeypatch):
  monkeypatch.setattr(
      coefficients, "COEFFICIENTS", dict(coefficients.COEFFICIENTS)
  )
  record = ugrad.register_coefficient("scaled", _coef, normalizer="token")
  assert coefficients.get("scaled") is record
  assert coefficients.default_hparams("scaled") == {"scale": 1.0}
  assert coefficients.required_fields("scaled") == set()
  with pytest.raises(ValueError, match="already registered"):
    ugrad.register_coefficient("grpo", _coef)
  with pytest.raises(ValueError, match="unknown normalizer 'tokens'"):
    ugrad.register_coefficient("bad", _coef, normalizer="tokens")


def test_register_reward_checks_its_fields(monkeypatch):
  monkeypatch.setattr(rewards, "REWARDS", dict(rewards.REWARDS))
  ugrad.register_reward("zero", lambda ctx, batch: {})
  assert rewards.provided_fields("rule:1,zero:0.5") == {"rewards"}
  with pytest.raises(ValueError, match="unknown fields"):
    ugrad.register_reward("odd", lambda ctx, batch: {}, fields=("score",))


def test_register_source_needs_the_interface(monkeypatch):
  monkeypatch.setattr(sources, "SOURCES", dict(sources.SOURCES))
  with pytest.raises(TypeError, match="lacks 'samples'"):
    ugrad.register_source("bare", object)
  ugrad.register_source("copy", sources.DatasetSource)
  assert sources.get("copy") is sources.DatasetSource


def test_unknown_attention_kernel_is_refused_listing_the_valid_ones():
  config = grpo.get_config()
  config.attention = "flash"
  with pytest.raises(
      ValueError,
      match="unknown attention 'flash'; valid: auto, einsum, xla, cudnn",
  ):
    validate.check_config(config)
