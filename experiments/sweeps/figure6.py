"""DeepSeekMath figure 6 on the embedded task: iterative RL.

Per seed, an outcome reward model is trained on samples of the SFT policy
(`orm`); GRPO then learns from its scores for 150 steps, either with that
reward model fixed (`grpo_orm`) or iteratively (`grpo_orm_iterative`,
Algorithm 1): 3 iterations of 50 steps (full profile: 4 of 250); after
each, the reference resets to the policy and the reward model continues for
100 steps on the policy's fresh samples, 10% of each batch replayed from
its earlier data. GRPO on
the rule reward (`grpo_rule`) is the control for what a learned reward
costs. The paper's figure uses a process reward model; this sweep uses the
outcome one, whose labels are cheap on a CPU (Math-Shepherd labels need
policy roll-outs from every step).

  python -m experiments.sweep --sweep=experiments/sweeps/figure6.py \
      --workdir=runs/figure6 --profile=quick
"""

from experiments import sweeps

_ORM = "{run:orm}"
# Iterations divide the profile's RL steps: 150 = 3 x 50, 1000 = 4 x 250.
ITERATIONS = {"quick": 3, "full": 4}


def get_sweep(profile: str) -> dict:
  sweep = sweeps.profile_settings(profile)
  iterations = ITERATIONS[profile]
  learned = {"reward": "model", "reward_model": _ORM}
  sweep["runs"] = [
      {"name": "orm", "config": sweeps.config_path("orm"), "overrides": {}},
      {"name": "grpo_rule", "config": sweeps.config_path("grpo"),
       "overrides": {}},
      {"name": "grpo_orm", "config": sweeps.config_path("grpo"),
       "overrides": learned},
      {"name": "grpo_orm_iterative", "config": sweeps.config_path("grpo"),
       "overrides": dict(learned, **{"iterative.iterations": iterations,
                                     "iterative.rm_steps": 100,
                                     "iterative.replay": 0.1})},
  ]
  return sweep
