"""The multi-turn sampler on a scripted environment with fixed answers."""

import dataclasses
import os
import subprocess
import sys

from flax import nnx
import jax
import numpy as np
import pytest

from ugrad import environments
from ugrad import errors
from ugrad import sampling
from ugrad.models import logprobs
from ugrad.models import model_config
from ugrad.models import transformer as tr
from ugrad.sampling import episodes
from ugrad.sampling import evaluation
from ugrad.tasks import arithmetic
from ugrad.tasks import CharTokenizer

_REPO = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
)
TOK = CharTokenizer(arithmetic.TOOL_CHARS)
CFG = model_config.ModelConfig(
    vocab_size=TOK.vocab_size,
    hidden_size=32,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    mlp_size=48,
    tie_embeddings=False,
)
PROMPTS = ["12+3=\n", "7*8-1=\n", "5=\n"]
CONFIG = sampling.SamplingConfig(
    max_new_tokens=24,
    eos_id=TOK.eos_id,
    pad_id=TOK.pad_id,
    num_samples=2,
    temperature=1.0,
    kv_block=16,
)
OBS = "=7\n"


class Scripted:
  """Turns end at any digit 1-4; each is answered OBS with reward
  0.25 * turn number; the third answer ends the episode."""

  stop_strings = ("1", "2", "3", "4")

  def __init__(self, fail_rows=(), fail_open=()):
    self.fail_rows, self.opened, self.seen = set(fail_rows), 0, []
    self.fail_open = set(fail_open)

  def open(self, example):
    row, self.opened = self.opened, self.opened + 1
    if row in self.fail_open:
      raise RuntimeError("scripted open failure")
    return _Episode(self, row, example)


class _Episode:

  def __init__(self, env, row, example):
    self.env, self.row, self.example, self.turn = env, row, example, 0

  def step(self, text, ids):
    self.env.seen.append((self.row, text, list(ids)))
    if self.row in self.env.fail_rows:
      raise RuntimeError("scripted failure")
    self.turn += 1
    return environments.Turn(OBS, 0.25 * self.turn, done=self.turn == 3)


def make_model():
  """(graphdef, params) of a small policy whose weights are 4x the init:
  varied samples, several turns per episode."""
  m = tr.Transformer(CFG, rngs=nnx.Rngs(0))
  params = nnx.state(m, nnx.Param)
  nnx.update(m, jax.tree.map(lambda x: x * 4.0, params))
  return nnx.split(m, nnx.Param)


@pytest.fixture(scope="module", name="model")
def model_fixture():
  return make_model()


def run(model, env, config=CONFIG, max_turns=8, rate=0.5, seed=0):
  graphdef, params = model
  return episodes.sample_episodes(
      graphdef,
      params,
      PROMPTS,
      TOK,
      8,
      jax.random.key(seed),
      config,
      episodes.EpisodeSpec(env, max_turns, rate),
      examples=PROMPTS,
  )


@jax.jit
def _logprobs(params, tokens, mask):
  graphdef = nnx.graphdef(tr.Transformer(CFG, rngs=nnx.Rngs(0)))
  return logprobs.token_logprobs(nnx.merge(graphdef, params), tokens, mask)


def _check_episode_layout(out, env):
  """Observations follow each answered turn unmasked; rewards at the
  turn's last policy token; texts hold policy and observation text."""
  obs = TOK.encode(OBS)
  answered = {}
  for row, _, ids in env.seen:
    answered.setdefault(row, []).append(ids)
  p = 8
  for r in range(out.tokens.shape[0]):
    comp, real = out.completion_mask[r], out.attention_mask[r]
    cols = np.flatnonzero(out.step_mask[r])
    assert len(cols) == len(answered.get(r, []))
    for k, col in enumerate(cols):
      assert comp[col] == 1
      assert TOK.decode([out.tokens[r, col]]) in Scripted.stop_strings
      assert out.step_rewards[r, col] == pytest.approx(0.25 * (k + 1))
      if k < 2 and col + 1 + len(obs) <= out.tokens.shape[1]:
        np.testing.assert_array_equal(
            out.tokens[r, col + 1 : col + 1 + len(obs)], obs
        )
        np.testing.assert_array_equal(comp[col + 1 : col + 1 + len(obs)], 0)
        np.testing.assert_array_equal(real[col + 1 : col + 1 + len(obs)], 1)
    # The turn each answer saw is exactly the policy tokens since the last
    # observation (as sampled, never re-encoded).
    starts = [p] + [c + 1 + len(obs) for c in cols[:-1]]
    for ids, start, col in zip(answered.get(r, []), starts, cols):
      assert ids == out.tokens[r, start : col + 1].tolist()
    n_real = int(real[p:].sum())
    assert out.texts[r] == TOK.decode(out.tokens[r, p : p + n_real])
    np.testing.assert_array_equal(real[p : p + n_real], 1)
  assert out.step_mask.sum() > 6  # the script answered several turns
  assert out.calls.sum() == len(env.seen)


def test_episodes_masks_rewards_and_logp(model):
  env = Scripted()
  out = run(model, env)
  _check_episode_layout(out, env)
  done_early = out.calls == 3
  assert done_early.any()
  policy = out.completion_mask > 0
  recomputed = np.asarray(_logprobs(model[1], out.tokens, out.attention_mask))
  np.testing.assert_allclose(out.logp[policy], recomputed[policy], atol=1e-4)
  np.testing.assert_array_equal(out.logp[~policy], 0.0)
  assert env.opened == len(PROMPTS) * CONFIG.num_samples


@pytest.mark.slow
def test_budget_overflow_and_max_turns_truncate(model):
  short = dataclasses.replace(CONFIG, max_new_tokens=6)
  out = run(model, Scripted(), config=short, max_turns=2)
  ended = (out.calls == 3) | (
      out.attention_mask[:, 8:].sum(1) < short.max_new_tokens
  )
  np.testing.assert_array_equal(out.truncated, ~ended | (out.turns > 2))
  assert out.truncated.any()
  assert (out.calls <= 1).all()  # max_turns=2: one answer, then cut


def test_failing_environment_ends_its_rows(model, caplog):
  env = Scripted(fail_rows=set(range(6)), fail_open={0})
  out = run(model, env, rate=1.0)
  stepped = {row for row, _, _ in env.seen}
  assert 0 not in stepped and len(stepped) >= 2
  assert out.failed.tolist() == [r == 0 or r in stepped for r in range(6)]
  assert "scripted failure" in caplog.text
  assert "scripted open failure" in caplog.text
  assert out.step_mask.sum() == 0 and out.calls.sum() == 0
  # A failed row stops at its failing turn: nothing after it.
  for row, _, ids in env.seen:
    assert out.completion_mask[row].sum() == len(ids)
  assert (out.completion_mask[0] == 0).all()
  with pytest.raises(errors.UserError, match="failed on 2 of 6 episodes"):
    run(model, Scripted(fail_open={0, 3}), rate=0.2)


def test_calculator_answers_calls():
  env = environments.make("calculator", None)
  assert env.step("12+3=\n(48*27)", []).observation == "=1296"
  assert env.step("(1/0)", []).observation == "=?"
  assert env.step("(2+*3)", []).observation == "=?"
  assert env.step("(__import__)", []).observation == "=?"
  assert env.step("(" + "1+" * 40 + "1)", []).observation == "=?"
  assert env.step("(-42+12*2)", []).observation == "=-18"
  assert env.step("(7/2)", []).observation == "=3.5"
  assert env.step("(1/3)", []).observation == "=0.333333"


@pytest.mark.slow
def test_episodes_on_a_mesh_match_one_device(tmp_path):
  path = str(tmp_path / "mesh.npz")
  env = dict(
      os.environ,
      JAX_PLATFORMS="cpu",
      XLA_FLAGS="--xla_force_host_platform_device_count=8",
  )
  proc = subprocess.run(
      [sys.executable, "-m", "tests.helpers.episodes_mesh", path],
      env=env,
      cwd=_REPO,
      capture_output=True,
      text=True,
      timeout=600,
      check=False,
  )
  assert proc.returncode == 0, proc.stderr[-4000:]
  with np.load(path) as f:
    got = dict(f)
  assert got["one_step_mask"].sum() > 4  # the script answered turns
  for k in ("tokens", "completion_mask", "attention_mask", "step_mask"):
    np.testing.assert_array_equal(got[f"eight_{k}"], got[f"one_{k}"], k)
  np.testing.assert_allclose(got["eight_logp"], got["one_logp"], atol=1e-5)
  assert got["eight_texts"].tolist() == got["one_texts"].tolist()


class _Answers:
  """Answers every turn with the question's gold answer line, then ends:
  a row scores when (and only when) its episode reached a turn's end."""

  stop_strings = ("1", "2", "3", "4")

  def __init__(self):
    self.calls = 0

  def open(self, example):
    return _AnswerEpisode(self, example)


class _AnswerEpisode:

  def __init__(self, env, example):
    self.env, self.example = env, example

  def step(self, text, ids):
    del text, ids
    self.env.calls += 1
    return environments.Turn(f"\n#### {self.example.answer}\n")


@pytest.mark.slow
def test_evaluation_samples_episodes(model):
  graphdef, params = model
  task = arithmetic.ArithmeticTask(tools=True, n_train=16, n_test=8)
  width = max(len(task.prompt(ex)) + 1 for ex in task.examples("test"))
  env = _Answers()
  spec = episodes.EpisodeSpec(env, max_turns=2, max_error_rate=0.0)
  got = evaluation.sample_eval(
      task, graphdef, params, 8, 4, [1, 4], width, 24, episodes=spec
  )
  plain = evaluation.sample_eval(
      task, graphdef, params, 8, 4, [1, 4], width, 24
  )
  assert env.calls > 8  # sampled and greedy episodes reached the tool
  # An answered episode holds the gold answer: only episodes score.
  assert got["pass@4"] > 0.5 > plain["pass@4"]
  assert got["maj@4"] > plain["maj@4"]
