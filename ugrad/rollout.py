"""The batch every data source produces and every coefficient consumes."""

from typing import Optional

import flax.struct
import jax


@flax.struct.dataclass
class Rollout:
  """A batch of B sequences of T tokens (prompt and completion together).

  Convention: `logp[b, t] = log pi(tokens[b, t] | tokens[b, :t])`, so every
  per-token field is aligned with `tokens`. Optional fields are `None` when the
  data source or reward does not provide them.

  Attributes:
    tokens: int32 [B, T] token ids.
    completion_mask: [B, T], 1 where `tokens[b, t]` is a completion token o_t
      whose log-prob is trained, 0 on prompt and padding.
    logp_old: [B, T] log-probs under the policy that sampled the rollout.
    logp_ref: [B, T] log-probs under the frozen reference policy.
    logp_teacher: [B, T] log-probs under a frozen teacher (`config.teacher`)
      of the student's samples, for on-policy distillation.
    logp_sampler: [B, T] the sampler's own log-probs, kept when a sampler
      correction runs (`logp_old` is then the trainer's, recomputed at the
      sampling parameters; `ugrad.coefficients.corrections`).
    rewards: [B] outcome reward of each sequence.
    step_rewards: [B, T] process reward of a step at the step's last token,
      0 elsewhere.
    step_mask: [B, T] 1 at the last token of each step.
    values: [B, T] critic values.
    group_ids: int32 [B], samples of one question share an id.
    pair_ids: int32 [B], the two rows of one preference pair share an id.
    pair_sign: [B], +1 for the chosen row, -1 for the rejected row.
    attention_mask: [B, T], 1 on real tokens (prompt and completion), 0 on
      padding; `None` means every token is real. Prompts are left-padded, so
      the model derives positions from this mask.
    dropout_seeds: int32 [B], each row's seed of the LoRA adapters' dropout
      in the update (`ugrad.models.lora.use_dropout`); None: no dropout.
  """

  tokens: jax.Array
  completion_mask: jax.Array
  logp_old: Optional[jax.Array] = None
  logp_ref: Optional[jax.Array] = None
  logp_sampler: Optional[jax.Array] = None
  logp_teacher: Optional[jax.Array] = None
  rewards: Optional[jax.Array] = None
  step_rewards: Optional[jax.Array] = None
  step_mask: Optional[jax.Array] = None
  values: Optional[jax.Array] = None
  group_ids: Optional[jax.Array] = None
  pair_ids: Optional[jax.Array] = None
  pair_sign: Optional[jax.Array] = None
  attention_mask: Optional[jax.Array] = None
  dropout_seeds: Optional[jax.Array] = None
