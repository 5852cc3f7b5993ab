"""Ablation sweeps: which methods to compare, on which seeds, at what scale.

A sweep file is a module with `get_sweep(profile)` returning a plain dict:

  {"runs": [{"name": "grpo", "config": "experiments/configs/grpo.py",
             "overrides": {"coef.beta": 0.0}}, ...],
   "seeds": [0, 1, 2],
   "shared": {...},  # every run AND the shared SFT warm start
   "sft": {...},     # the SFT warm start only (experiments/configs/sft.py)
   "rl": {...},      # every RL (policy) run (steps, eval_every, ...)
   "rm": {...},      # every reward-model run (orm.py, prm.py); optional
   "evaluate": {"k": [1, 4, 16, 64], "questions": 256,
                "temperature": 1.0},  # optional: pass@k and maj@k
   "findings": [{"claim": "GRPO > online RFT", "a": "grpo",
                 "b": "online_rft"},
                {"claim": "RL raises maj@64 more than pass@64", "a": "grpo",
                 "k": 64}]}  # optional: verdicts in the report

Override keys are dotted config paths. `experiments.sweep` applies, to a
locked ConfigDict, `shared`, then `sft`, `rl` or `rm` (by the config's
`trainer`), then the run's own `overrides`, so a typo fails. An override
value "{run:orm}" is the directory of the same seed's run "orm", which must
be listed earlier (e.g. `"reward_model": "{run:orm}"`). With "evaluate", the
SFT policy and every policy run are sampled after training. With
"findings", the report gives each claim's paired difference over seeds and
a verdict (reproduces, contradicted, undecided). `profile_settings`
gives the two profiles every shipped sweep uses.
"""

import copy

# "quick": a 2-core CPU, 21 runs (3 SFT + 18 RL) in about 35 minutes.
# Measured on that machine with seed 0 of this profile at 100 RL steps
# (python -m experiments.sweep with runs grpo, ppo, dapo, rft): SFT 1500
# steps 137 s (71.4% held-out greedy accuracy), GRPO 64 s (+5.8 points), PPO
# 87 s, DAPO 56 s, RFT 54 s, each including about 15 s of start-up and
# compilation and five evaluations on the whole held-out split (1024
# questions). At 150 steps that extrapolates to about 90 s per RL run and
# 34 minutes per sweep. "full": accelerator scale (the paper's section 5.2
# regime on the embedded task), not yet run: the 2.9M model, a longer warm
# start, 5 seeds, 1000 RL steps. Each method keeps its own config's sampling
# (GRPO 32 x 8, PPO 128 x 1, ...).
#
# Reward models ("rm"), quick: 200 steps each (ORM 16 x 8 samples per step,
# PRM 8 x 8 with 4 Math-Shepherd rollouts per step prefix), evaluated every
# 50 steps on 128 x 8 held-out samples. Measured on the 2-core CPU from a
# quick-profile SFT policy (python -m experiments.main
# --config=experiments/configs/prm.py --config.init_from=SFT_RUN
# --config.quiet=True --config.steps=50 --config.eval_every=50): PRM 0.62 s
# per step, ORM (orm.py, 300 steps) about 0.4 s per step; see figure5.py for
# whole runs. "full": 1000 steps, 512 held-out questions.
_PROFILES = {
    "quick": {
        "seeds": [0, 1, 2],
        "shared": {"eval_questions": 1024, "quiet": True},
        # The warm start these sweeps' results were measured with (before
        # the default became a 1,200-step cosine to half the rate).
        "sft": {
            "steps": 1500,
            "optim.schedule": "constant",
            "optim.final_fraction": 0.0,
        },
        "rl": {
            "steps": 150,
            "eval_every": 25,
            "checkpoint_every": 50,
            "sample_log_every": 50,
        },
        "rm": {"steps": 200, "eval_every": 50, "checkpoint_every": 50},
    },
    "full": {
        "seeds": [0, 1, 2, 3, 4],
        "shared": {
            "model": "qwen2_2.9m",
            "eval_questions": 1024,
            "quiet": True,
        },
        "sft": {
            "steps": 6000,
            "batch_size": 128,
            "optim.lr": 1e-3,
            "optim.warmup_steps": 100,
        },
        "rl": {
            "steps": 1000,
            "eval_every": 50,
            "checkpoint_every": 100,
            "sample_log_every": 100,
            "sampling.pool_questions": 4096,
        },
        "rm": {
            "steps": 1000,
            "eval_every": 100,
            "checkpoint_every": 100,
            "rm.eval_questions": 512,
        },
    },
}

PROFILES = tuple(_PROFILES)

# A harder embedded task where intermediate steps matter: 5 operands of 1-2
# digits with multiplication (running values up to ~10^8, negative ones
# included), each step written on its own line. Measured: the default SFT
# warm start (1,500 steps) reaches 28.7% greedy (95% CI 24.6-32.8, 512
# held-out questions), against 71.4% on the default task; command in
# BUILD_NOTES.md.
HARD_TASK = {
    "task_kwargs.num_operands": 5,
    "task_kwargs.operators": "+-*",
    "sampling.max_new_tokens": 96,
}


# HARD_TASK's tools variant (ugrad/environments/calculator.py): the same
# questions, the calculator's error mark in the vocabulary, and the gold
# solutions of half of the questions calling the calculator at every step,
# "(48*27)=1296", so an SFT warm start knows the call format.
HARD_TOOLS_TASK = {
    **HARD_TASK,
    "task_kwargs.tools": True,
    "task_kwargs.tool_fraction": 0.5,
}


def profile_settings(profile: str) -> dict:
  """A deep copy of the profile's seeds and shared / sft / rl / rm
  overrides.

  Raises:
    ValueError: for an unknown profile, listing the valid ones.
  """
  if profile not in _PROFILES:
    raise ValueError(
        f"unknown profile {profile!r}; valid profiles: "
        f"{', '.join(PROFILES)}"
    )
  return copy.deepcopy(_PROFILES[profile])


def config_path(method: str) -> str:
  """The config file of a method, relative to the repository root."""
  return f"experiments/configs/{method}.py"
