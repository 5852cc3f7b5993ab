"""Follow-ups to GRPO: Dr. GRPO, DAPO, RLOO, REINFORCE++ and GSPO.

Every method runs with its own config's defaults (normaliser, KL, clipping,
dynamic sampling) from one shared SFT policy per seed, so the runs differ
only in the method. The curves to read are accuracy and response length
against steps: Dr. GRPO's and DAPO's normalisers target the 1/|o| length
bias of GRPO.

  python -m experiments.sweep --sweep=experiments/sweeps/followups.py \
      --workdir=runs/followups --profile=quick
"""

from experiments import sweeps

METHODS = ("grpo", "dr_grpo", "dapo", "rloo", "reinforce_pp", "gspo")


def get_sweep(profile: str) -> dict:
  sweep = sweeps.profile_settings(profile)
  sweep["runs"] = [
      {"name": m, "config": sweeps.config_path(m), "overrides": {}}
      for m in METHODS
  ]
  return sweep
