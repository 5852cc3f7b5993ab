"""SFT: gold solutions, GC = 1.

Also the SFT warm start of RL runs on the embedded task (`warm_start`):
`experiments.main` trains it in WORKDIR/sft when a config has no init_from.
"""

import ml_collections

from experiments.configs import _common
from experiments.configs import base


def train_sft(c: ml_collections.ConfigDict):
  """Makes `c` train SFT with the settings of `c.warm_start`, in place:
  gold solutions from the dataset, GC = 1, no RL machinery."""
  ws = c.warm_start
  c.trainer = "policy"
  c.init_from = ""
  c.source = "dataset"
  c.reward = "none"
  c.coef = _common.coef("sft")
  c.steps = ws.steps
  c.batch_size = ws.batch_size
  c.optim.lr = ws.lr
  c.optim.warmup_steps = ws.warmup_steps
  c.optim.schedule = ws.schedule
  c.optim.final_fraction = ws.get("final_fraction", 0.0)
  c.ppo_epochs = c.minibatches = c.micro_batches = 1
  c.sampling.pairs = False
  if "environment" in c:  # gold solutions: no episodes
    c.environment = ""
  c.ref_reset_every = 0
  c.iterative.iterations = 1
  c.eval_every = 0


def warm_start(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The SFT warm-start run of `config` on the embedded task: a copy of it
  (task, model, sampling, mesh, seed) that trains SFT instead, with a
  checkpoint every quarter of its steps."""
  sft = ml_collections.ConfigDict(config.to_dict())
  sft.method = "sft_warm_start"
  train_sft(sft)
  sft.checkpoint_every = max(sft.steps // 4, 1)
  return sft


def get_config(variant=None):
  """The config; `variant`: names in `base.VARIANTS` ("tiny")."""
  c = base.get_config()
  c.method = "sft"
  train_sft(c)
  return base.apply_variants(c, variant)
