r"""A finished run's policy out to Hugging Face and PEFT.

  python -m experiments.export --checkpoint=runs/grpo --out=hf/grpo
  python -m experiments.export --checkpoint=runs/lora --out=hf/adapter \
      --format=peft

--format=merged (the default, for every policy run) writes a Hugging Face
model directory (config.json, model.safetensors and, when the run trained
with a Hugging Face tokenizer, tokenizer.json) that
`transformers.AutoModelForCausalLM.from_pretrained` loads; a LoRA run's
adapters are folded into the weights. --format=peft writes a LoRA run's
adapters alone (adapter_config.json, adapter_model.safetensors) for
`peft.PeftModel.from_pretrained` over the run's base (its `init_from`, named
in adapter_config.json; a base that is a ugrad run is itself exported with
--format=merged).
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging
from flax import nnx

from ugrad import errors
from ugrad import models
from ugrad.models import hf_peft
from ugrad.training import lora_config
from ugrad.training import runs

# Its own flag set: experiments.evaluate defines a global --checkpoint too.
_FLAGS = flags.FlagValues()
flags.DEFINE_string(
    "checkpoint", None, "Workdir of a finished ugrad run.", flag_values=_FLAGS
)
flags.DEFINE_string(
    "out", None, "Directory to write (absent or empty).", flag_values=_FLAGS
)
flags.DEFINE_enum(
    "format",
    "merged",
    ["merged", "peft"],
    "merged: a full Hugging Face model (LoRA folded in); peft: a LoRA "
    "run's adapters as a PEFT directory.",
    flag_values=_FLAGS,
)


def check_out(out: str) -> None:
  """Refuses an `out` that is a file or a non-empty directory."""
  if os.path.exists(out) and not (os.path.isdir(out) and not os.listdir(out)):
    raise errors.UserError(
        f"--out={out} already exists and is not an empty directory; "
        "export into a new one"
    )


def _base(config, run_dir: str) -> str:
  """The base a LoRA run adapted (its `init_from`), as a path PEFT reads.

  Raises:
    errors.UserError: the run has no LoRA or no saved base.
  """
  if lora_config.lora_spec(config) is None:
    raise errors.UserError(
        f"--format=peft exports a LoRA run's adapters, and {run_dir} "
        "trained every weight (lora.rank = 0); use --format=merged"
    )
  if not config.init_from:
    raise errors.UserError(
        f"{run_dir} put its adapters on a freshly initialised base that "
        "no directory holds (init_from is empty); use --format=merged"
    )
  base = config.init_from
  return base if "://" in base else os.path.abspath(base)


def export(run_dir: str, out: str, fmt: str = "merged") -> str:
  """Writes the finished run in `run_dir` to the new directory `out` in
  `fmt` ("merged" or "peft"); returns a line saying what it wrote.

  Raises:
    errors.UserError: (errors.MissingInput included) an unfinished run, an
      existing non-empty `out`, a PEFT export of a run without adapters.
  """
  config = runs.finished_config(run_dir)
  check_out(out)
  tokenizer = runs.run_tokenizer(config)
  if fmt == "peft":
    base = _base(config, run_dir)
    spec = lora_config.lora_spec(config)
    adapters = runs.load_adapters(run_dir, spec)
    hf_peft.save(out, adapters, spec, runs.saved_model_config(run_dir), base)
    if tokenizer is not None:
      tokenizer.save(out)
    what = f"PEFT LoRA adapters (rank {spec.rank}) over {base}"
    if runs.is_finished_model(base):
      what += " (a ugrad run: export it with --format=merged for peft)"
  else:
    model = nnx.merge(*runs.load_model(run_dir))
    models.save_pretrained(model, out, tokenizer=tokenizer)
    what = "a Hugging Face model"
  with_tokenizer = "with" if tokenizer is not None else "without"
  return f"wrote {what} to {out}, {with_tokenizer} a tokenizer"


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.WARNING)
  try:  # A missing or unfinished run, a used --out: a message, no trace.
    print(export(_FLAGS.checkpoint, _FLAGS.out, _FLAGS.format), flush=True)
  except errors.UserError as e:
    raise app.UsageError(str(e)) from e


def _parse_flags(argv: list[str]) -> list[str]:
  rest = _FLAGS(argv, known_only=True)
  for name in ("checkpoint", "out"):
    if _FLAGS[name].value is None:  # One line, as absl's required flags.
      sys.exit(f"FATAL Flags parsing error: --{name} is required")
  return flags.FLAGS(rest)


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
