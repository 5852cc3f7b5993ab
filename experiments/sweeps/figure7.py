"""DeepSeekMath figure 7 on the embedded task: does RL raise maj@k or pass@k?

SFT (the shared warm start of each seed) against GRPO with the rule reward
from it. After training, each policy draws 64 samples at temperature 1 for
each of the first held-out questions; the report gives pass@k and maj@k for
k = 1, 4, 16, 64 with their paired gains over SFT. The paper found RL raises
maj@k but not pass@k: it makes the output distribution more robust rather
than adding capability.

  python -m experiments.sweep --sweep=experiments/sweeps/figure7.py \
      --workdir=runs/figure7 --profile=quick
"""

from experiments import sweeps

# Quick: the whole held-out split (1,024 questions) x 64 samples. Measured on
# the 2-core CPU, one policy of this sweep's quick profile: about 21 s (65,536
# samples of at most 40 tokens and the greedy pass), so the six sampled
# evaluations of 3 seeds add about 2 minutes to 3 x (SFT ~140 s + GRPO
# ~90 s): about 14 minutes in all. Command: the sampled stage of
# python -m experiments.sweep --sweep=experiments/sweeps/figure7.py
# --workdir=runs/figure7 --profile=quick, over trained runs (its log prints
# the seconds per policy); standalone, python -m experiments.evaluate
# --checkpoint=runs/figure7/sft_seed_0 --k=1,4,16,64 --questions=1024 took
# 33 s including start-up and compilation.
EVALUATE = {
    "quick": {"k": [1, 4, 16, 64], "questions": 1024, "temperature": 1.0},
    "full": {"k": [1, 4, 16, 64], "questions": 1024, "temperature": 1.0},
}


def get_sweep(profile: str) -> dict:
  sweep = sweeps.profile_settings(profile)
  sweep["runs"] = [
      {"name": "grpo", "config": sweeps.config_path("grpo"), "overrides": {}}
  ]
  sweep["evaluate"] = dict(EVALUATE[profile])
  return sweep
