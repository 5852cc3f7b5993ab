"""The gradient log: chaining, tamper detection, resume, the CLI."""

import glob
import hashlib
import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers import train_util
from ugrad.runtime import gradlog
from ugrad.training import trainer as trainer_lib

_ROOT = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
)


def _append(log, step, seed=0):
  rng = np.random.default_rng(1000 * seed + step)
  tokens = rng.integers(0, 50, size=(4, 6), dtype=np.int32)
  coef = jnp.asarray(rng.normal(size=(4, 6)), jnp.float32)
  mask = jnp.asarray(rng.integers(0, 2, size=(4, 6)), jnp.float32)
  rewards = jnp.asarray(rng.integers(0, 2, size=(4,)), jnp.float32)
  return log.append(
      step,
      "grpo",
      tokens,
      loss=jnp.float32(rng.normal()),
      grad_norm=np.float64(rng.uniform(0, 3)),
      coef={"mean": float(coef[mask > 0].mean()), "max": float(coef.max())},
      reward={"mean": float(rewards.mean())},
      kl=rng.uniform(0, 0.1),
      clip_frac=0.125,
      extra={"zero_signal_groups": 1},
  )


def _write_log(path, steps, seed=0, resume_step=None):
  with gradlog.GradientLog(path, resume_step=resume_step) as log:
    for step in steps:
      _append(log, step, seed)
    return log.head


def _lines(path):
  with open(path, encoding="utf-8") as f:
    return f.readlines()


def _set_lines(path, lines):
  with open(path, "w", encoding="utf-8") as f:
    f.writelines(lines)


@pytest.fixture(name="log_path")
def _log_path(tmp_path):
  path = str(tmp_path / "gradient_log.jsonl")
  _write_log(path, range(1, 6))
  return path


def test_valid_log_verifies(log_path):
  result = gradlog.verify(log_path)
  assert result.ok and result.records == 5
  assert str(result) == "OK (5 records)"
  records = [json.loads(line) for line in _lines(log_path)]
  assert records[0]["prev_sha256"] == gradlog.GENESIS
  assert [r["prev_sha256"] for r in records[1:]] == [
      r["sha256"] for r in records[:-1]
  ]
  first = records[0]
  assert first["method"] == "grpo" and first["clip_frac"] == 0.125
  assert set(first["coef"]) == {"mean", "max"}


def test_sft_style_record_has_nulls(tmp_path):
  path = str(tmp_path / "log.jsonl")
  with gradlog.GradientLog(path) as log:
    record = log.append(
        1,
        "sft",
        np.zeros((2, 3), np.int32),
        loss=2.5,
        grad_norm=float("nan"),
        coef={"mean": 1.0},
    )
  assert record["reward"] is None and record["kl"] is None
  assert record["grad_norm"] == "NaN"
  assert gradlog.verify(path).ok


def _canonical_line(record):
  return json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n"


def _edit_loss(lines):
  record = json.loads(lines[2])
  record["loss"] = record["loss"] + 1e-3
  lines[2] = _canonical_line(record)
  return lines


def _delete(lines):
  return lines[:2] + lines[3:]


def _swap(lines):
  return [lines[0], lines[2], lines[1]] + lines[3:]


def _truncate_last(lines):
  return lines[:-1] + [lines[-1][:40]]


@pytest.mark.parametrize(
    "tamper, line, step, reason",
    [
        (_edit_loss, 3, 3, "hash mismatch"),
        (_delete, 3, 4, "broken link"),
        (_swap, 2, 3, "broken link"),
        (_truncate_last, 5, None, "bad JSON"),
    ],
)
def test_tampering_is_detected_at_the_right_line(
    log_path, tamper, line, step, reason
):
  _set_lines(log_path, tamper(_lines(log_path)))
  result = gradlog.verify(log_path)
  assert not result.ok
  assert (result.line, result.step) == (line, step)
  assert reason in result.reason
  assert result.records == line - 1


def test_rehashed_reorder_is_still_caught_by_step_order(log_path):
  records = [json.loads(line) for line in _lines(log_path)]
  records[1], records[2] = records[2], records[1]
  prev = gradlog.GENESIS
  for record in records:
    record["prev_sha256"] = prev
    record["sha256"] = prev = gradlog.record_sha256(record)
  _set_lines(log_path, [_canonical_line(r) for r in records])
  result = gradlog.verify(log_path)
  assert (result.line, result.step) == (3, 2)
  assert "does not follow step 3" in result.reason


def test_resume_truncates_and_keeps_the_chain(tmp_path):
  path = str(tmp_path / "log.jsonl")
  whole = str(tmp_path / "whole.jsonl")
  _write_log(whole, range(1, 9))
  # The killed run logged steps 1..6, the checkpoint it resumes from is 4,
  # and it died writing step 7.
  head = None
  with gradlog.GradientLog(path) as log:
    for step in range(1, 7):
      _append(log, step)
      if step == 4:
        head = log.head
  with open(path, "a", encoding="ascii") as f:
    f.write('{"batch_sha256":"ab')
  _write_log(path, range(5, 9), resume_step=4)
  assert gradlog.verify(path).ok
  assert _lines(path) == _lines(whole)
  assert len(_lines(path + ".dropped")) == 3
  # The head saved with the checkpoint pins the kept records.
  with pytest.raises(ValueError, match="the checkpoint expects"):
    gradlog.GradientLog(path, resume_step=4, expected_head="f" * 64)
  gradlog.GradientLog(path, resume_step=4, expected_head=head).close()


def test_resume_refuses_a_broken_chain(log_path):
  _set_lines(log_path, _edit_loss(_lines(log_path)))
  with pytest.raises(ValueError, match="broken chain: line 3 .*hash mismatch"):
    gradlog.GradientLog(log_path, resume_step=5)


def test_append_refuses_bad_input(log_path):
  with gradlog.GradientLog(log_path, resume_step=5) as log:
    with pytest.raises(ValueError, match="step must be an int after 5"):
      _append(log, 5)
    with pytest.raises(ValueError, match="'coef/mean' must be a real scalar"):
      log.append(
          6,
          "grpo",
          np.zeros((1, 2), np.int32),
          loss=0.0,
          grad_norm=0.0,
          coef={"mean": jnp.zeros(3)},
      )
    with pytest.raises(ValueError, match="tokens must be integers"):
      log.append(6, "grpo", np.zeros((1, 2)), loss=0.0, grad_norm=0.0, coef={})


def test_batch_sha256():
  tokens = np.arange(6, dtype=np.int32).reshape(2, 3)
  want = hashlib.sha256(b"int32[2,3]" + tokens.astype("<i4").tobytes())
  assert gradlog.batch_sha256(tokens) == want.hexdigest()
  assert gradlog.batch_sha256(jnp.asarray(tokens)) == want.hexdigest()
  assert gradlog.batch_sha256(tokens.astype(np.int64)) == want.hexdigest()
  # Same bytes, other shape.
  assert gradlog.batch_sha256(tokens.reshape(3, 2)) != want.hexdigest()
  assert gradlog.batch_sha256(tokens.T) != want.hexdigest()
  with pytest.raises(ValueError, match="do not fit in int32"):
    gradlog.batch_sha256(np.array([2**31], np.int64))


def _cli(*args):
  env = dict(os.environ, PYTHONPATH=_ROOT, JAX_PLATFORMS="cpu")
  return subprocess.run(
      [sys.executable, "-m", "ugrad.runtime.gradlog", *args],
      capture_output=True,
      text=True,
      env=env,
      timeout=120,
      check=False,
  )


def test_cli(log_path, tmp_path):
  good = _cli("verify", log_path)
  assert (good.returncode, good.stdout) == (0, "OK (5 records)\n"), good.stderr
  bad_path = str(tmp_path / "bad.jsonl")
  _set_lines(bad_path, _delete(_lines(log_path)))
  bad = _cli("verify", bad_path)
  assert bad.returncode == 1, bad.stderr
  assert bad.stdout.startswith(f"{bad_path}: line 3 (step 4): broken link")
  assert _cli("verify", str(tmp_path / "missing")).returncode == 2


def test_verify_workdir_checks_checkpoints_against_the_log(tmp_path, capsys):
  workdir = str(tmp_path / "run")
  config = train_util.tiny("sft", steps=3)
  config.keep_checkpoints = 2
  trainer_lib.Trainer(config, workdir).train()
  log = os.path.join(workdir, "gradient_log.jsonl")
  assert sorted(gradlog.checkpoint_records(log)) == [1, 2, 3]
  assert gradlog.main(["verify", workdir]) == 0
  assert "checkpoints match their records" in capsys.readouterr().out
  data = glob.glob(
      os.path.join(workdir, "checkpoints", "3", "state", "**", "d", "*"),
      recursive=True,
  )
  with open(data[0], "r+b") as f:
    byte = f.read(1)
    f.seek(0)
    f.write(bytes([byte[0] ^ 0x80]))
  assert gradlog.main(["verify", workdir]) == 1
  assert "the file changed after the save" in capsys.readouterr().out
