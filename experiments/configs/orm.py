"""Outcome reward model: BCE on the last-token score, label = rule reward."""

import ml_collections

from experiments.configs import base


def rm_settings(kind: str, label: str = "hard") -> ml_collections.ConfigDict:
  """The reward-model fields (see ugrad/training/reward_models.py)."""
  return ml_collections.ConfigDict(
      dict(
          kind=kind,
          label=label,  # PRM: "hard" | "soft" | "ground_truth"
          rollouts=4,  # PRM: policy completions per step prefix
          prefix_batch=64,  # PRM: step prefixes per sampler call
          eval_questions=128,  # held-out questions, sampling.group_size each
          init_from="",  # a reward-model workdir to continue training
          replay=0.0,
      )
  )  # share of each batch replayed from init_from's data


def get_config(variant=None):
  """The config; `variant`: names in `base.VARIANTS` ("tiny")."""
  c = base.get_config()
  c.method = "orm"
  c.trainer = "reward_model"
  c.rm = rm_settings("orm")
  c.sampling.questions = 16
  c.sampling.temperature = 1.0
  c.steps = 300
  c.optim.lr = 3e-4
  c.optim.warmup_steps = 20
  c.eval_every = 50
  return base.apply_variants(c, variant)
