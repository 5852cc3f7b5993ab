"""The run's LoRA settings (`config.lora`), checked, as a `lora.LoRASpec`."""

from ugrad import errors
from ugrad.models import lora as lora_lib
from ugrad.models import quantize


def lora_spec(config):
  """The run's `lora.LoRASpec` (`config.lora`), or None for rank 0 (every
  weight trained).

  Raises:
    UserError: a negative rank, alpha <= 0, a dropout outside [0, 1),
      an unknown base_dtype, a base_dtype without LoRA, or a reward-model
      run, each in one line.
  """
  cfg = config.get("lora")
  base_dtype = cfg.get("base_dtype", "") if cfg is not None else ""
  quantize.check_base_dtype(base_dtype)
  if base_dtype and (cfg.rank == 0):
    raise errors.UserError(
        f"lora.base_dtype={base_dtype!r} stores a frozen LoRA base: it "
        "needs lora.rank > 0 (a full fine-tuning run trains in param_dtype)"
    )
  if cfg is None or cfg.rank == 0:
    return None
  if cfg.rank < 0:
    raise errors.UserError(
        f"lora.rank must be >= 0 (0: no LoRA), got {cfg.rank}"
    )
  if config.trainer != "policy" or config.iterative.iterations > 1:
    raise errors.UserError(
        "LoRA trains a policy run only (not trainer=reward_model nor "
        "iterative RL's reward models)"
    )
  return lora_lib.LoRASpec(
      cfg.rank,
      float(cfg.alpha),
      cfg.targets,
      base_dtype=base_dtype,
      dropout=float(cfg.dropout),
  )
