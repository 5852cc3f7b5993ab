"""The trainer end to end on the embedded task, at toy sizes."""

import json
import math
import os
import signal
import subprocess
import sys
import time

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers import bpe_util
from tests.helpers import train_util
from ugrad.sampling import evaluation as eval_lib
from ugrad.runtime import gradlog
from ugrad.runtime import metrics as metrics_lib
from ugrad import models
from ugrad.training import runs
from ugrad.training import trainer as trainer_lib
from ugrad.training import validate

_REPO = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
)


@pytest.fixture(scope="module")
def sft_dir(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("sft"))
  trainer_lib.Trainer(train_util.tiny("sft"), workdir).train()
  return workdir


def _metrics(workdir):
  rows = metrics_lib.read_metrics(os.path.join(workdir, "metrics.jsonl"))
  return [
      {k: v for k, v in r.items() if k not in trainer_lib.TIMING_KEYS}
      for r in rows
  ]


@pytest.mark.slow
@pytest.mark.parametrize("name", train_util.CONFIGS)
def test_every_config_runs(name, sft_dir, tmp_path):
  config = train_util.tiny(name, init_from=sft_dir if name != "sft" else "")
  trainer_lib.Trainer(config, str(tmp_path)).train()
  rows = _metrics(str(tmp_path))
  assert [r["step"] for r in rows] == [1, 2]
  assert all(math.isfinite(r["loss"]) for r in rows)
  path = str(tmp_path / "gradient_log.jsonl")
  log = gradlog.verify(path)
  # One record per update, and one per checkpoint (checkpoint_every=1).
  assert sorted(gradlog.checkpoint_records(path)) == [1, 2]
  updates = 2 * config.ppo_epochs * config.minibatches
  assert log.ok and log.records == updates + 2
  assert os.path.isdir(tmp_path / runs.POLICY_DIR)


@pytest.mark.slow
def test_same_seed_same_metrics_and_resume_continues(sft_dir, tmp_path):
  full = train_util.tiny("grpo", steps=3, init_from=sft_dir)
  trainer_lib.Trainer(full, str(tmp_path / "a")).train()
  trainer_lib.Trainer(full, str(tmp_path / "b")).train()
  assert _metrics(str(tmp_path / "a")) == _metrics(str(tmp_path / "b"))
  # Two steps, then a new trainer on the same workdir finishes the third.
  part = train_util.tiny("grpo", steps=2, init_from=sft_dir)
  trainer_lib.Trainer(part, str(tmp_path / "c")).train()
  resumed = trainer_lib.Trainer(full, str(tmp_path / "c"))
  assert resumed.start_step == 2
  resumed.train()
  assert _metrics(str(tmp_path / "c")) == _metrics(str(tmp_path / "a"))
  assert gradlog.verify(str(tmp_path / "c" / "gradient_log.jsonl")).ok


class _CompileCounter:
  """XLA compilations in this process, read before each training step."""

  def __init__(self):
    self.names, self.before_step = [], {}

  def __enter__(self):
    jax.monitoring.register_event_duration_secs_listener(self._on_event)
    return self

  def __exit__(self, *unused):
    jax.monitoring.unregister_event_duration_listener(self._on_event)

  def _on_event(self, event, unused_secs, fun_name="?", **unused_kw):
    if event == "/jax/core/compile/backend_compile_duration":
      self.names.append(fun_name)

  def hook(self, unused_context, unused_state, step):
    self.before_step[step] = len(self.names)
    return trainer_lib.HookResult()

  def during_steps(self, first: int, last: int) -> list:
    """What compiled from the start of step `first` to that of `last`+1
    (0-based steps)."""
    return self.names[self.before_step[first] : self.before_step[last + 1]]


@pytest.mark.slow
@pytest.mark.parametrize("name", train_util.CONFIGS)
def test_nothing_compiles_after_the_first_step(name, sft_dir, tmp_path):
  """Every shape a step meets is fixed by the config and the step's trimmed
  width (a multiple of config.trim_bucket, or P + N): after step 1 (and the
  first checkpoint save), a step of a width already seen runs
  already-compiled code only."""
  config = train_util.tiny(
      name, steps=5, init_from=sft_dir if name != "sft" else ""
  )
  with _CompileCounter() as counter:
    trainer = trainer_lib.Trainer(config, str(tmp_path), hooks=[counter.hook])
    trainer.train()
  _assert_compiles_once_per_width(
      counter,
      [int(r["update_width"]) for r in _metrics(str(tmp_path))],
      trainer.prompt_len + config.sampling.max_new_tokens,
      config.trim_bucket,
  )


def _assert_compiles_once_per_width(counter, widths, full, bucket):
  assert all(w == full or w % bucket == 0 for w in widths), widths
  assert len(set(widths)) <= -(-full // bucket)
  for step in range(1, 4):
    if widths[step] in widths[:step]:
      assert counter.during_steps(step, step) == [], (step, widths)


@pytest.mark.slow
@pytest.mark.parametrize("bucket", [0, 1])
def test_compilations_are_bounded_by_the_trim_widths(bucket, sft_dir, tmp_path):
  """trim_bucket 0: one width (P + N), nothing compiles after the first
  step; a small bucket: several widths, each compiled once."""
  config = train_util.tiny("grpo", steps=5, init_from=sft_dir)
  config.trim_bucket = bucket
  with _CompileCounter() as counter:
    trainer = trainer_lib.Trainer(config, str(tmp_path), hooks=[counter.hook])
    trainer.train()
  widths = [int(r["update_width"]) for r in _metrics(str(tmp_path))]
  full = trainer.prompt_len + config.sampling.max_new_tokens
  if bucket:
    assert min(widths) < full, widths  # The tiny rows leave padding.
    _assert_compiles_once_per_width(counter, widths, full, bucket)
  else:
    assert set(widths) == {full}
    assert counter.during_steps(1, 3) == []


# Slow for its fixture (the module's SFT run).
@pytest.mark.slow
def test_nan_loss_stops_with_step_and_checkpoint(sft_dir, tmp_path):
  config = train_util.tiny("online_rft", steps=4, init_from=sft_dir)
  trainer = trainer_lib.Trainer(config, str(tmp_path))
  real_update = trainer.update
  calls = []

  def poisoned(params, opt_state, batch):
    calls.append(1)
    params, opt_state, metrics = real_update(params, opt_state, batch)
    if len(calls) == 3:
      metrics = dict(metrics, loss=metrics["loss"] * np.nan)
    return params, opt_state, metrics

  trainer.update = poisoned
  with pytest.raises(FloatingPointError, match=r"step 3.*step 2 in .*resume"):
    trainer.train()
  assert trainer.checkpointer.all_steps()[-1] == 2


@pytest.mark.parametrize(
    "change, message",
    [
        (
            dict(source="web"),
            "unknown source 'web'; valid: dataset, frozen_policy, online",
        ),
        (dict(reward="rules"), "unknown reward.*valid: .*rule"),
        (dict(task="gsm9k"), "unknown task .gsm9k.; valid: arithmetic"),
        (dict(model="big"), "valid: embedded"),
        (dict(normalizer="tokens"), "valid: sequence, token, constant"),
        (dict(steps=-3), "config.steps must be >= 1, got -3"),
        (dict(micro_batches=0), "config.micro_batches must be >= 1, got 0"),
        (dict(trim_bucket=-16), "config.trim_bucket must be an int >= 0"),
        (dict(source="dataset"), "pair_ids.*sampling.pairs=True"),
    ],
)
def test_bad_config_is_refused_before_work(change, message):
  config = train_util.tiny("dpo")
  for key, value in change.items():
    config[key] = value
  with pytest.raises(ValueError, match=message):
    validate.check_config(config)


def test_unknown_coefficient_lists_valid_ones():
  config = train_util.tiny("grpo")
  config.coef.name = "grpoo"
  with pytest.raises(ValueError, match="valid: sft, rft, dpo"):
    validate.check_config(config)


@pytest.mark.parametrize(
    "name, change",
    [
        ("kto", {"kto": False}),
        ("dpo", {"kto": True}),
        ("kto", {"questions": 1}),
        ("kto", {"pairs": True}),
    ],
)
def test_kto_rows_go_with_the_kto_coefficient(name, change):
  config = train_util.tiny(name, init_from="sft_workdir")
  validate.check_config(train_util.tiny("kto", init_from="sft_workdir"))
  for key, value in change.items():
    config.sampling[key] = value
  with pytest.raises(ValueError, match="sampling.kto"):
    validate.check_config(config)


def test_group_method_needs_groups():
  config = train_util.tiny("grpo")
  config.sampling.group_size = 1
  with pytest.raises(ValueError, match="group_size must be >= 2"):
    validate.check_config(config)


def _subprocess_env(devices: int) -> dict:
  env = dict(
      os.environ,
      JAX_PLATFORMS="cpu",
      XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
  )
  return env


def _main_command(workdir, sft_dir, steps):
  return [
      sys.executable,
      "-m",
      "experiments.main",
      "--config=experiments/configs/grpo.py",
      f"--workdir={workdir}",
      f"--config.init_from={sft_dir}",
      f"--config.steps={steps}",
      "--config.sampling.questions=4",
      "--config.sampling.group_size=4",
      "--config.sampling.max_new_tokens=32",
      "--config.checkpoint_every=2",
      "--config.eval_questions=8",
      "--config.quiet=True",
  ]


@pytest.mark.slow
def test_sigkilled_run_resumes_to_identical_metrics(sft_dir, tmp_path):
  steps = 10
  subprocess.run(
      _main_command(tmp_path / "full", sft_dir, steps),
      check=True,
      cwd=_REPO,
      env=_subprocess_env(1),
      capture_output=True,
  )
  killed = tmp_path / "killed"
  proc = subprocess.Popen(
      _main_command(killed, sft_dir, steps),
      cwd=_REPO,
      env=_subprocess_env(1),
      stdout=subprocess.DEVNULL,
      stderr=subprocess.DEVNULL,
  )
  log = killed / "metrics.jsonl"
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None:
    # Kill once a checkpoint is on disk and a later step has been logged.
    if (
        (killed / "checkpoints" / "2").is_dir()
        and log.exists()
        and len(log.read_text().splitlines()) >= 3
    ):
      break
    time.sleep(0.02)
  assert proc.poll() is None, "the run finished before it could be killed"
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  logged = len(log.read_text().splitlines())
  assert logged < steps
  subprocess.run(
      _main_command(killed, sft_dir, steps),
      check=True,
      cwd=_REPO,
      env=_subprocess_env(1),
      capture_output=True,
  )
  resumed, full = _metrics(str(killed)), _metrics(str(tmp_path / "full"))
  assert len(resumed) == len(full) == steps
  for a, b in zip(resumed, full):
    assert a == b, {k: (a.get(k), b.get(k)) for k in a if a.get(k) != b.get(k)}
  result = subprocess.run(
      [
          sys.executable,
          "-m",
          "ugrad.runtime.gradlog",
          "verify",
          str(killed / "gradient_log.jsonl"),
      ],
      capture_output=True,
      text=True,
      cwd=_REPO,
  )
  assert result.returncode == 0 and result.stdout.startswith("OK")


@pytest.mark.slow
def test_learned_reward_models_score_rollouts(sft_dir, tmp_path):
  graphdef, params, _ = runs.load_policy(sft_dir)
  model_config = nnx.merge(graphdef, params).config
  rm = models.ScalarModel(model_config, rngs=nnx.Rngs(3))
  # A non-zero head so the scores vary.
  kernel = rm.score_head.kernel
  kernel.set_value(
      jax.random.normal(jax.random.key(4), kernel.get_value().shape)
  )
  runs.save_model(
      str(tmp_path / "rm"),
      nnx.split(rm, nnx.Param)[1],
      model_config,
      kind="scalar",
  )
  config = train_util.tiny("grpo_process", init_from=sft_dir)
  config.reward = "process"
  config.process_reward_model = str(tmp_path / "rm")
  trainer_lib.Trainer(config, str(tmp_path / "ps")).train()
  config = train_util.tiny("grpo", init_from=sft_dir)
  config.reward = "model"
  config.reward_model = str(tmp_path / "rm")
  metrics = trainer_lib.Trainer(config, str(tmp_path / "os")).train()
  assert metrics["reward_std"] > 0
  config.reward_model = ""
  with pytest.raises(ValueError, match="config.reward_model"):
    validate.check_config(config)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["grpo", "dapo"])
def test_micro_batches_accumulate_to_the_full_batch_update(
    name, sft_dir, tmp_path
):
  results = []
  for micro in (1, 2):
    config = train_util.tiny(name, steps=1, init_from=sft_dir)
    config.micro_batches = micro
    trainer = trainer_lib.Trainer(config, str(tmp_path / str(micro)))
    metrics = trainer.train()
    results.append((metrics["loss"], jax.device_get(trainer.state["params"])))
  (loss1, p1), (loss2, p2) = results
  np.testing.assert_allclose(loss1, loss2, rtol=1e-5, atol=1e-8)
  for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p2)):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


@pytest.mark.slow
def test_rl_from_a_hugging_face_checkpoint_on_jsonl_data(tmp_path):
  rows = [
      {
          "question": f"What is {a} plus {b}?",
          "answer": f"{a} + {b} = {a + b}\n#### {a + b}",
      }
      for a in range(3, 9)
      for b in range(2, 5)
  ]
  for split, part in (("train", rows[:12]), ("test", rows[12:])):
    with open(tmp_path / f"{split}.jsonl", "w") as f:
      f.writelines(json.dumps(r) + "\n" for r in part)
  bpe = bpe_util.train_bpe([r["question"] + "\n" + r["answer"] for r in rows])
  tokenizer = models.HFTokenizer(bpe, pad_id=0, bos_id=1, eos_id=2)
  model_config = models.preset("tiny", tokenizer.vocab_size, qkv_bias=True)
  policy = models.Transformer(model_config, rngs=nnx.Rngs(0))
  models.save_pretrained(policy, tmp_path / "hf", tokenizer=tokenizer)
  config = train_util.tiny("grpo", init_from=str(tmp_path / "hf"))
  config.task = "gsm8k"
  config.data.train_path = str(tmp_path / "train.jsonl")
  config.data.test_path = str(tmp_path / "test.jsonl")
  trainer = trainer_lib.Trainer(config, str(tmp_path / "run"))
  assert trainer.policy.tokenizer.vocab_size == tokenizer.vocab_size
  metrics = trainer.train()
  assert math.isfinite(metrics["loss"])
  assert gradlog.verify(str(tmp_path / "run" / "gradient_log.jsonl")).ok
  assert 0.0 <= trainer.evaluate()["greedy_acc"] <= 1.0


@pytest.mark.slow
def test_bfloat16_compute_with_float32_parameters(sft_dir, tmp_path):
  config = train_util.tiny("grpo", init_from=sft_dir)
  config.compute_dtype = "bfloat16"
  trainer = trainer_lib.Trainer(config, str(tmp_path))
  assert trainer.policy.model_config.dtype == "bfloat16"
  metrics = trainer.train()
  assert math.isfinite(metrics["loss"])
  # bf16 logits: sampler and trainer agree to bf16 precision, not float32.
  assert metrics["logp_mismatch"] < 0.05
  leaves = jax.tree.leaves(trainer.state["params"])
  assert all(x.dtype == np.float32 for x in leaves)


@pytest.mark.slow
def test_periodic_evaluation_logs_greedy_pass_and_maj_at_k(sft_dir, tmp_path):
  config = train_util.tiny("grpo", init_from=sft_dir)
  config.eval_every = 2
  config.eval_sampled.ks = "1, 2"
  config.eval_sampled.questions = 4
  trainer_lib.Trainer(config, str(tmp_path)).train()
  first, last = _metrics(str(tmp_path))
  assert "greedy_acc" not in first and "pass@1" not in first
  for name in ("greedy_acc", "pass@1", "pass@2", "maj@1", "maj@2"):
    assert last[name + "_lo"] <= last[name] <= last[name + "_hi"], name
  # pass@k never falls with k; maj@1 is pass@1.
  assert last["pass@2"] >= last["pass@1"] == pytest.approx(last["maj@1"])
  config.eval_sampled.ks = "1,four"
  with pytest.raises(ValueError, match="'four' is not an integer"):
    validate.check_config(config)


def test_bfloat16_parameters_train(tmp_path):
  config = train_util.tiny("sft", steps=1)
  config.param_dtype = "bfloat16"
  trainer = trainer_lib.Trainer(config, str(tmp_path))
  trainer.train()
  dtypes = {x.dtype for x in jax.tree.leaves(trainer.state["params"])}
  assert dtypes == {jnp.dtype("bfloat16")}
  config.param_dtype = "float16"
  with pytest.raises(ValueError, match="unknown param_dtype 'float16'"):
    validate.check_config(config)


@pytest.mark.slow
def test_phase_times_add_up_to_the_step(tmp_path):
  trainer = trainer_lib.Trainer(train_util.tiny("sft", steps=2), str(tmp_path))
  trainer.train()
  rows = metrics_lib.read_metrics(os.path.join(str(tmp_path), "metrics.jsonl"))
  assert len(rows) == 2
  for row in rows:
    phases = [row[f"time/{p}_s"] for p in trainer_lib.PHASES]
    assert min(phases) >= 0
    np.testing.assert_allclose(sum(phases), row["step_time_s"], rtol=1e-3)


def test_eval_split_validation_evaluates_on_the_validation_questions(
    tmp_path, monkeypatch
):
  config = train_util.tiny("sft", steps=1)
  config.task_kwargs.update(val_fraction=0.05, n_validation=64)
  config.eval_split = "validation"
  trainer = trainer_lib.Trainer(config, str(tmp_path))
  asked = []
  real = eval_lib.greedy_accuracy
  monkeypatch.setattr(
      eval_lib,
      "greedy_accuracy",
      lambda *a, **k: asked.append(k["split"]) or real(*a, **k),
  )
  assert 0.0 <= trainer.evaluate()["greedy_acc"] <= 1.0
  assert asked == ["validation"]
  config.eval_split = "dev"
  with pytest.raises(
      ValueError, match="unknown eval_split 'dev'; valid: " "test, validation"
  ):
    trainer_lib.Trainer(config, str(tmp_path / "bad"))
