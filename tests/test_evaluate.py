"""Sampled evaluation (ugrad.eval.sample_eval) and experiments/evaluate.py.

The policy is a tiny untrained model, saved as a finished run; tasks whose
reward is known (every completion right, none right, right by its first
character) give the statistics something to be checked against.
"""

import json
import os
import string

from absl import app
from absl import flags
from absl.testing import flagsaver
from flax import nnx
import pytest

from experiments import evaluate as evaluate_cli
from experiments.configs import sft
from ugrad import eval as ev
from ugrad import models
from ugrad import tasks as tasks_lib
from ugrad import train
from ugrad.tasks import arithmetic

# One shape for every sampler call below, so the sampler compiles once per
# (samples, rows) pair.
N_SAMPLES = 4
QUESTIONS = 6
BATCH_QUESTIONS = 4
MAX_NEW = 12


def _config():
  c = sft.get_config()
  c.model = "tiny"
  c.task_kwargs.n_train = 32
  c.task_kwargs.n_test = 16
  c.sampling.max_new_tokens = MAX_NEW
  return c


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  """A finished run of the tiny (untrained) policy on the embedded task."""
  workdir = str(tmp_path_factory.mktemp("run"))
  config = _config()
  task = train.make_task(config)
  model_config = models.preset(config.model, task.tokenizer.vocab_size)
  _, params = nnx.split(models.Transformer(model_config, rngs=nnx.Rngs(0)),
                        nnx.Param)
  train.save_model(workdir, params, model_config)
  with open(os.path.join(workdir, train.CONFIG_FILE), "w") as f:
    f.write(config.to_json())
  return workdir


@pytest.fixture(scope="module")
def policy(run_dir):
  graphdef, params, _ = train.load_policy(run_dir)
  return graphdef, params


class _KnownRewardTask(arithmetic.ArithmeticTask):
  """The embedded task's questions under a reward fixed by the test."""

  def __init__(self, reward_fn):
    super().__init__(n_train=32, n_test=16)
    self.reward_fn = reward_fn

  def reward(self, example, completion):
    del example
    return self.reward_fn(completion)


def _first_char(text):
  return text[:1]


# Half of the characters a completion can start with count as right.
_RIGHT_FIRST = set(string.digits[::2] + "+=#\n")


def _sample_eval(task, policy, **kwargs):
  graphdef, params = policy
  kwargs = dict(dict(num_questions=QUESTIONS, n_samples=N_SAMPLES,
                     ks=[1, 2, 4], batch_questions=BATCH_QUESTIONS,
                     answer_fn=_first_char, equivalent=None), **kwargs)
  return ev.sample_eval(task, graphdef, params,
                        prompt_len=train.prompt_length(task),
                        max_new_tokens=MAX_NEW, **kwargs)


@pytest.mark.parametrize("reward", [1.0, 0.0])
def test_sample_eval_when_every_or_no_completion_is_right(policy, reward):
  out = _sample_eval(_KnownRewardTask(lambda text: reward), policy)
  assert out["num_questions"] == QUESTIONS
  assert out["samples_per_question"] == [N_SAMPLES, N_SAMPLES]
  for name in ("pass@1", "pass@2", "pass@4", "maj@1", "maj@2", "maj@4",
               "greedy_acc"):
    assert out[name] == reward, name
    assert out[name + "_ci"] == [reward, reward], name
  assert out["correct_per_question"] == [int(reward) * N_SAMPLES] * QUESTIONS


def test_sample_eval_statistics_agree_with_the_sample_counts(policy):
  task = _KnownRewardTask(lambda text: float(text[:1] in _RIGHT_FIRST))
  out = _sample_eval(task, policy)
  counts = out["correct_per_question"]
  assert len(counts) == QUESTIONS
  assert out["pass@1"] == pytest.approx(sum(counts) / (N_SAMPLES * QUESTIONS))
  assert out["pass@4"] == pytest.approx(
      sum(c > 0 for c in counts) / QUESTIONS)
  # Samples that share a first character share the reward, so a vote of one
  # is exactly one sample's correctness.
  assert out["maj@1"] == pytest.approx(out["pass@1"])
  # Not degenerate: some samples right, some questions not always right.
  assert 0 < out["pass@1"] < out["pass@2"] < out["pass@4"]
  for name in ("pass@1", "pass@2", "pass@4", "maj@2", "maj@4"):
    low, high = out[name + "_ci"]
    assert 0 <= low <= out[name] <= high <= 1, name


def test_sample_eval_is_deterministic_given_the_seed(policy):
  task = _KnownRewardTask(lambda text: float(text[:1] in _RIGHT_FIRST))
  first = _sample_eval(task, policy, seed=3)
  assert _sample_eval(task, policy, seed=3) == first
  assert (_sample_eval(task, policy, seed=4)["correct_per_question"]
          != first["correct_per_question"])


def test_sample_eval_padding_is_sampled_but_not_scored(policy):
  task = _KnownRewardTask(lambda text: float(text[:1] in _RIGHT_FIRST))
  six = _sample_eval(task, policy)  # a full batch, then 2 of 4 padded
  four = _sample_eval(task, policy, num_questions=4)  # the same first call
  assert four["num_questions"] == 4
  assert four["correct_per_question"] == six["correct_per_question"][:4]


def test_sample_eval_rejects_bad_settings(policy):
  task = _KnownRewardTask(lambda text: 1.0)
  with pytest.raises(ValueError, match=r"every k must be in \[1, n_samples"):
    _sample_eval(task, policy, ks=[1, 8])
  with pytest.raises(ValueError, match="n_samples must be >= 1"):
    _sample_eval(task, policy, n_samples=0)
  with pytest.raises(ValueError, match="ks is empty"):
    _sample_eval(task, policy, ks=[])


def test_answer_functions_of_the_tasks(tmp_path):
  read, same = ev.answer_functions(tasks_lib.ArithmeticTask(n_train=8,
                                                            n_test=8))
  assert read("1+2=3\n#### 3") == 3 and read("1+2=3") is None
  assert same(3, 3) and not same(3, 4)
  path = tmp_path / "gsm8k.jsonl"
  path.write_text(json.dumps({"question": "q", "answer": "#### 1000"}) + "\n")
  read, same = ev.answer_functions(tasks_lib.gsm8k_task(test_path=str(path)))
  assert read("so\n#### 1,000\nmore") == "1,000"
  assert read("no answer") is None and read("#### ") is None
  assert same("1,000", "1000") and not same("1000", "999")
  assert same("\\unparsable{", "\\unparsable{")  # equal strings vote together
  with pytest.raises(ValueError, match="known tasks: ArithmeticTask"):
    ev.answer_functions(object())


def _cli(**flag_values):
  """Runs the CLI's main in-process with the given flags (as strings)."""
  was_parsed = flags.FLAGS.is_parsed()
  with flagsaver.as_parsed(**flag_values):
    flags.FLAGS.mark_as_parsed()
    try:
      evaluate_cli.main(["evaluate"])
    finally:
      if not was_parsed:
        flags.FLAGS.unparse_flags()


def test_cli_writes_pass_and_maj_for_every_k_deterministically(
    run_dir, tmp_path, capsys):
  common = dict(checkpoint=run_dir, k="1,2,4", questions=str(QUESTIONS),
                seed="5")
  _cli(**common)
  with open(os.path.join(run_dir, evaluate_cli.OUTPUT_FILE)) as f:
    result = json.load(f)
  table = capsys.readouterr().out
  assert "pass@k" in table and "maj@k" in table and "greedy" in table
  assert result["samples_per_question"] == [4, 4]  # the largest k
  assert result["num_questions"] == QUESTIONS
  assert result["ks"] == [1, 2, 4] and result["task"] == "arithmetic"
  assert result["max_new_tokens"] == MAX_NEW
  for k in (1, 2, 4):
    for name in (f"pass@{k}", f"maj@{k}"):
      low, high = result[name + "_ci"]
      assert 0 <= low <= result[name] <= high <= 1, name
  assert result["pass@1"] <= result["pass@2"] <= result["pass@4"]
  again = tmp_path / "again" / "eval.json"
  _cli(output=str(again), **common)
  assert json.loads(again.read_text()) == result


@pytest.mark.parametrize("flag_values, match", [
    (dict(k="1,4", samples="2"), "--samples=2 is fewer than the largest k"),
    (dict(k="1,x"), "'x' is not an integer"),
    (dict(k="0,2"), "every k must be >= 1"),
])
def test_cli_refuses_bad_flags(run_dir, flag_values, match):
  with pytest.raises(app.UsageError, match=match):
    _cli(checkpoint=run_dir, **flag_values)


def test_cli_refuses_missing_and_unfinished_runs(tmp_path):
  with pytest.raises(app.UsageError, match="no such directory"):
    _cli(checkpoint=str(tmp_path / "missing"))
  with pytest.raises(app.UsageError, match="is not a ugrad run"):
    _cli(checkpoint=str(tmp_path))
  (tmp_path / train.CONFIG_FILE).write_text(_config().to_json())
  with pytest.raises(app.UsageError, match="holds an unfinished run"):
    _cli(checkpoint=str(tmp_path))


def test_run_tokenizer_follows_init_from_to_a_hugging_face_directory(
    tmp_path):
  tokenizers = pytest.importorskip("tokenizers")
  hf_dir = tmp_path / "hf"
  hf_dir.mkdir()
  tokenizers.Tokenizer(tokenizers.models.WordLevel(
      {"<pad>": 0, "</s>": 1, "a": 2}, unk_token="<pad>")).save(
          str(hf_dir / "tokenizer.json"))
  (hf_dir / "tokenizer_config.json").write_text(
      json.dumps({"eos_token": "</s>", "pad_token": "<pad>"}))

  def run(name, init_from):
    path = tmp_path / name
    path.mkdir()
    (path / train.MODEL_FILE).write_text("{}")
    config = _config()
    config.init_from = str(init_from)
    (path / train.CONFIG_FILE).write_text(config.to_json())
    return config

  run("sft", hf_dir)
  rl = run("rl", tmp_path / "sft")  # an RL run started from the SFT run
  tok = evaluate_cli.run_tokenizer(rl)
  assert (tok.eos_id, tok.pad_id, tok.vocab_size) == (1, 0, 3)
  assert evaluate_cli.run_tokenizer(_config()) is None  # the task's own
  loop = run("loop", tmp_path / "loop")
  assert evaluate_cli.run_tokenizer(loop) is None
