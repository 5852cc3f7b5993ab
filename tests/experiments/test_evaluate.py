"""experiments/evaluate.py: sampled evaluation of a finished run.

The run is a tiny untrained policy, saved as a finished run of the embedded
task.
"""

import json
import os

from absl import app
from absl import flags
from absl.testing import flagsaver
from flax import nnx
import pytest

from experiments import evaluate as evaluate_cli
from experiments.configs import sft
from ugrad.training import build
from ugrad import models
from ugrad.training import runs

QUESTIONS = 6
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
  task = build.make_task(config)
  model_config = models.preset(config.model, task.tokenizer.vocab_size)
  _, params = nnx.split(
      models.Transformer(model_config, rngs=nnx.Rngs(0)), nnx.Param
  )
  runs.save_model(workdir, params, model_config)
  with open(os.path.join(workdir, runs.CONFIG_FILE), "w") as f:
    f.write(config.to_json())
  return workdir


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
    run_dir, tmp_path, capsys
):
  common = dict(
      checkpoint=run_dir, k="1,2,4", questions=str(QUESTIONS), seed="5"
  )
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


@pytest.mark.parametrize(
    "flag_values, match",
    [
        (dict(k="1,4", samples="2"), "--samples=2 is fewer than the largest k"),
        (dict(k="1,x"), "'x' is not an integer"),
        (dict(k="0,2"), "every k must be >= 1"),
    ],
)
def test_cli_refuses_bad_flags(run_dir, flag_values, match):
  with pytest.raises(app.UsageError, match=match):
    _cli(checkpoint=run_dir, **flag_values)


def test_cli_refuses_missing_and_unfinished_runs(tmp_path):
  with pytest.raises(app.UsageError, match="no such directory"):
    _cli(checkpoint=str(tmp_path / "missing"))
  with pytest.raises(app.UsageError, match="is not a ugrad run"):
    _cli(checkpoint=str(tmp_path))
  (tmp_path / runs.CONFIG_FILE).write_text(_config().to_json())
  with pytest.raises(app.UsageError, match="holds an unfinished run"):
    _cli(checkpoint=str(tmp_path))


def test_run_tokenizer_follows_init_from_to_a_hugging_face_directory(tmp_path):
  tokenizers = pytest.importorskip("tokenizers")
  hf_dir = tmp_path / "hf"
  hf_dir.mkdir()
  tokenizers.Tokenizer(
      tokenizers.models.WordLevel(
          {"<pad>": 0, "</s>": 1, "a": 2}, unk_token="<pad>"
      )
  ).save(str(hf_dir / "tokenizer.json"))
  (hf_dir / "tokenizer_config.json").write_text(
      json.dumps({"eos_token": "</s>", "pad_token": "<pad>"})
  )

  def run(name, init_from):
    path = tmp_path / name
    path.mkdir()
    (path / runs.MODEL_FILE).write_text("{}")
    config = _config()
    config.init_from = str(init_from)
    (path / runs.CONFIG_FILE).write_text(config.to_json())
    return config

  run("sft", hf_dir)
  rl = run("rl", tmp_path / "sft")  # an RL run started from the SFT run
  tok = runs.run_tokenizer(rl)
  assert (tok.eos_id, tok.pad_id, tok.vocab_size) == (1, 0, 3)
  assert runs.run_tokenizer(_config()) is None  # the task's own
  loop = run("loop", tmp_path / "loop")
  assert runs.run_tokenizer(loop) is None
