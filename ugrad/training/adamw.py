"""The optimizer of a run: AdamW after a global-norm clip, on a schedule."""

import optax

# The learning rate after the warm-up (`optim.schedule`).
SCHEDULES = ("constant", "cosine")


def make_optimizer(config, optim=None) -> optax.GradientTransformation:
  """AdamW for run `config` with the settings `optim` (`config.optim` by
  default; the critic's differ in their rate).

  The rate rises linearly from 0 over `optim.warmup_steps` updates, then
  stays at `optim.lr` (schedule "constant"; also a config stored before the
  key existed) or follows a cosine down to `optim.lr` x
  `optim.final_fraction` (0 in a config stored before that key existed) at
  the run's last update (steps x ppo_epochs x minibatches; "cosine").
  """
  optim = config.optim if optim is None else optim
  warmup = optim.warmup_steps
  schedule = optim.lr
  if optim.get("schedule", "constant") == "cosine":
    updates = config.steps * config.ppo_epochs * config.minibatches
    schedule = optax.warmup_cosine_decay_schedule(
        0.0,
        optim.lr,
        warmup,
        max(updates, warmup + 1),
        end_value=optim.lr * optim.get("final_fraction", 0.0),
    )
  elif warmup:
    schedule = optax.linear_schedule(0.0, optim.lr, warmup)
  return optax.chain(
      optax.clip_by_global_norm(optim.grad_clip),
      optax.adamw(
          schedule, b1=optim.b1, b2=optim.b2, weight_decay=optim.weight_decay
      ),
  )
