"""On-policy distillation: the student samples, a frozen teacher
(--config.teacher: a ugrad run workdir or a Hugging Face directory with the
same tokenizer) scores its samples, and each token's coefficient is
log pi_teacher - log pi_student (reverse KL on the sampled tokens). The rule
reward is only reported."""

from experiments.configs import _common
from experiments.configs import base


def get_config(variant=None):
  """The config; `variant`: names in `base.VARIANTS` ("tiny")."""
  c = base.get_config()
  c.method = "distill"
  c.source = "online"
  c.sampling.group_size = 1  # distinct questions; no group baseline
  c.sampling.questions = 64
  c.reward = "rule"
  c.coef = _common.coef("distill")
  return base.apply_variants(c, variant)
