"""GRPO on a learned outcome reward model, and the controls against hacking.

In figure5 GRPO on the learned ORM collapses (held-out accuracy falls far
below its SFT start) while the reward-model score it optimises climbs: the
policy finds what the small reward model rewards wrongly. The standard
controls, each one row beside the unprotected run:

* "grpo_orm": the figure5 row, no control;
* "grpo_orm_kl": a 5x larger KL coefficient (beta 0.2) holding the policy
  near its SFT reference;
* "orm_long" + "grpo_orm_long": a reward model trained 4x longer on 2x the
  samples per step, then GRPO on it;
* "grpo_orm_mixed": the rule reward mixed in, `rule:1.0,model:0.5`.

The report's accuracy rows say which control keeps the policy at or above
its SFT start. The task split is figure5_tuned's (a validation split held
out), so the SFT policies and the "orm" and "grpo_orm" runs are the same
configs as in `figure5_tuned` and `headline` and may be copied from them.

  python -m experiments.sweep --sweep=experiments/sweeps/reward_hacking.py \
      --workdir=runs/reward_hacking --profile=quick
"""

from experiments import sweeps
from experiments.sweeps import figure5_tuned

ORM = {"reward": "model", "reward_model": "{run:orm}"}


def get_sweep(profile: str) -> dict:
  sweep = sweeps.profile_settings(profile)
  sweep["shared"]["task_kwargs.val_fraction"] = figure5_tuned.VAL_FRACTION
  rm_steps = sweep["rm"].get("steps", 200)
  grpo = sweeps.config_path("grpo")
  sweep["runs"] = [
      {"name": "orm", "config": sweeps.config_path("orm"), "overrides": {}},
      {"name": "grpo_orm", "config": grpo, "overrides": dict(ORM)},
      {
          "name": "grpo_orm_kl",
          "config": grpo,
          "overrides": dict(ORM, **{"coef.beta": 0.2}),
      },
      {
          "name": "orm_long",
          "config": sweeps.config_path("orm"),
          "overrides": {"steps": 4 * rm_steps, "sampling.questions": 32},
      },
      {
          "name": "grpo_orm_long",
          "config": grpo,
          "overrides": {"reward": "model", "reward_model": "{run:orm_long}"},
      },
      {
          "name": "grpo_orm_mixed",
          "config": grpo,
          "overrides": dict(ORM, reward="rule:1.0,model:0.5"),
      },
  ]
  controls = (
      ("grpo_orm_kl", "KL beta 0.2"),
      ("grpo_orm_long", "the longer-trained ORM"),
      ("grpo_orm_mixed", "the rule reward mixed in"),
  )
  sweep["findings"] = [
      {
          "claim": f"{label} beats the unprotected run",
          "a": name,
          "b": "grpo_orm",
      }
      for name, label in controls
  ] + [
      {"claim": f"{label} ends above SFT", "a": name, "b": "sft"}
      for name, label in controls
  ]
  return sweep
