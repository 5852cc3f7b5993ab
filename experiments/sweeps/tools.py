"""GRPO with the calculator tool against GRPO without it, on the hard task.

Both arms start from the same SFT warm start per seed, trained on
`sweeps.HARD_TOOLS_TASK` (5 operands with multiplication; half of the gold
solutions call the calculator at every step, "(48*27)=1296"), and differ only
in the environment during RL and evaluation:

* `grpo_tools`: episodes with the `calculator` environment
  (experiments/configs/grpo_tools.py): a turn that ends with a call "(...)"
  is answered "=VALUE" (mask 0, never trained on) and the policy goes on.
* `grpo`: one completion per sample (experiments/configs/grpo.py): a call
  the policy writes is not answered, so it must compute "=VALUE" itself, or
  learn to write the plain steps.

The report gives greedy accuracy per arm and the paired difference over
seeds; each run's metrics.jsonl logs tool calls per episode
(source_episode_tool_calls), the share of calls that were well formed
(source_episode_valid_call_frac) and tokens per episode
(source_episode_tokens).

  python -m experiments.sweep --sweep=experiments/sweeps/tools.py \\
      --workdir=runs/tools --profile=quick
"""

from experiments import sweeps


def get_sweep(profile: str) -> dict:
  sweep = sweeps.profile_settings(profile)
  sweep["shared"].update(sweeps.HARD_TOOLS_TASK)
  sweep["runs"] = [
      {
          "name": "grpo_tools",
          "config": sweeps.config_path("grpo_tools"),
          "overrides": {},
      },
      {"name": "grpo", "config": sweeps.config_path("grpo"), "overrides": {}},
  ]
  sweep["findings"] = [
      {
          "claim": "GRPO with the calculator > GRPO without it",
          "a": "grpo_tools",
          "b": "grpo",
      }
  ]
  return sweep
