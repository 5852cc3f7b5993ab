"""A method's settings are declared once: its hyper-parameters' defaults in
its function's keywords, its normaliser in its `Coefficient` record."""

import inspect

import pytest

from tests.helpers import train_util
from ugrad import coefficients
from ugrad.training import build


@pytest.mark.parametrize("name", sorted(coefficients.COEFFICIENTS))
def test_fields_functions_declare_no_defaults(name):
  params = inspect.signature(coefficients.get(name).fields).parameters
  defaults = {
      p.name
      for p in params.values()
      if p.default is not inspect.Parameter.empty
  }
  assert not defaults, f"{name}: fields() repeats defaults {defaults}"


@pytest.mark.parametrize("config_name", train_util.CONFIGS)
def test_every_config_trains_with_its_coefficients_own_normalizer(config_name):
  config = train_util.tiny(config_name)
  own = coefficients.get(config.coef.name).normalizer
  assert build.normalizer(config) == own
  assert not build.normalizer_deviation(config)


def test_switching_the_method_switches_the_normalizer():
  config = train_util.tiny("grpo")
  config.coef = coefficients.bind_hparams("dapo")
  config.coef.name = "dapo"
  assert build.normalizer(config) == "token"


def test_an_explicit_other_normalizer_is_a_stated_deviation():
  config = train_util.tiny("dapo")
  config.normalizer = "sequence"
  assert build.normalizer(config) == "sequence"
  line = build.normalizer_deviation(config)
  assert "'sequence'" in line and "'dapo'" in line and "'token'" in line
