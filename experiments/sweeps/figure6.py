"""DeepSeekMath figure 6 on the embedded task: iterative RL.

Per seed, an outcome reward model is trained on samples of the SFT policy
(`orm`); GRPO then learns from its scores for 150 steps, either with that
reward model fixed (`grpo_orm`) or iteratively (`grpo_orm_iterative`,
Algorithm 1): 3 iterations of 50 steps (full profile: 4 of 250); after
each, the reference resets to the policy and the reward model continues for
100 steps on the policy's fresh samples, 10% of each batch replayed from
its earlier data. The same three rows follow with a process reward model
on hard Math-Shepherd labels and process GRPO (`prm`, `grpo_prm`,
`grpo_prm_iterative`), the paper's setting. GRPO on the rule reward
(`grpo_rule`) is the control for what a learned reward costs.

  python -m experiments.sweep --sweep=experiments/sweeps/figure6.py \
      --workdir=runs/figure6 --profile=quick
"""

from experiments import sweeps

# Iterations divide the profile's RL steps: 150 = 3 x 50, 1000 = 4 x 250.
ITERATIONS = {"quick": 3, "full": 4}


def reward_model_rows(
    kind: str, policy_config: str, reward: str, field: str, iterations: int
) -> list[dict]:
  """A reward model of `kind` and GRPO on it, fixed and iterative."""
  learned = {"reward": reward, field: "{run:%s}" % kind}
  return [
      {"name": kind, "config": sweeps.config_path(kind), "overrides": {}},
      {
          "name": f"grpo_{kind}",
          "config": sweeps.config_path(policy_config),
          "overrides": learned,
      },
      {
          "name": f"grpo_{kind}_iterative",
          "config": sweeps.config_path(policy_config),
          "overrides": dict(
              learned,
              **{
                  "iterative.iterations": iterations,
                  "iterative.rm_steps": 100,
                  "iterative.replay": 0.1,
              },
          ),
      },
  ]


def get_sweep(profile: str) -> dict:
  sweep = sweeps.profile_settings(profile)
  iterations = ITERATIONS[profile]
  grpo_rule = {
      "name": "grpo_rule",
      "config": sweeps.config_path("grpo"),
      "overrides": {},
  }
  outcome = reward_model_rows(
      "orm", "grpo", "model", "reward_model", iterations
  )
  process = reward_model_rows(
      "prm", "grpo_process", "process", "process_reward_model", iterations
  )
  # The outcome rows first, in their original order, so a workdir of the
  # sweep from before the process rows is reused.
  sweep["runs"] = outcome[:1] + [grpo_rule] + outcome[1:] + process
  return sweep
