"""`experiments.evaluate` on a read-only workdir never loses what it
computed: the results go to eval_k.RUN.json in the current directory (or
$TMPDIR) and one line says where; only when nothing can be written are they
printed, and the exit status is 1."""

import errno
import json
import os

from absl import flags
from absl.testing import flagsaver
from flax import nnx
import pytest

from experiments import evaluate as evaluate_cli
from experiments.configs import sft
from ugrad import models
from ugrad.training import build
from ugrad.training import runs

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  """A finished run (untrained tiny policy) named `grpo_run`."""
  workdir = tmp_path_factory.mktemp("runs") / "grpo_run"
  config = sft.get_config()
  config.model = "tiny"
  config.task_kwargs.n_test = 8
  config.sampling.max_new_tokens = 8
  task = build.make_task(config)
  model_config = models.preset(config.model, task.tokenizer.vocab_size)
  _, params = nnx.split(
      models.Transformer(model_config, rngs=nnx.Rngs(0)), nnx.Param
  )
  runs.save_model(str(workdir), params, model_config)
  (workdir / runs.CONFIG_FILE).write_text(config.to_json())
  return workdir


def _read_only(monkeypatch, *writable):
  """Every file's final rename fails with EROFS outside the `writable`
  dirs (the tests run as root, which chmod does not stop)."""
  real = os.replace

  def replace(src, dst, **kwargs):
    if not any(str(dst).startswith(str(d)) for d in writable):
      raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dst))
    real(src, dst, **kwargs)

  monkeypatch.setattr(os, "replace", replace)


def _evaluate(run_dir):
  was_parsed = flags.FLAGS.is_parsed()
  with flagsaver.as_parsed(checkpoint=str(run_dir), k="1,2", questions="4"):
    flags.FLAGS.mark_as_parsed()
    try:
      evaluate_cli.main(["evaluate"])
    finally:
      if not was_parsed:
        flags.FLAGS.unparse_flags()


def test_results_go_to_the_current_directory_and_one_line_says_so(
    run_dir, tmp_path, monkeypatch, capsys
):
  monkeypatch.chdir(tmp_path)
  _read_only(monkeypatch, tmp_path)
  _evaluate(run_dir)  # Exit status 0: the results are saved.
  written = tmp_path / "eval_k.grpo_run.json"
  result = json.loads(written.read_text())
  assert result["ks"] == [1, 2] and result["num_questions"] == 4
  out = capsys.readouterr().out.strip().splitlines()
  assert out[-1] == (
      f"could not write {run_dir / evaluate_cli.OUTPUT_FILE} (Read-only file "
      f"system); wrote {written} instead"
  )
  _evaluate(run_dir)  # A second fallback keeps the first one's results.
  assert (tmp_path / "eval_k.grpo_run.2.json").exists()


def test_results_written_nowhere_are_printed_and_exit_1(
    run_dir, tmp_path, monkeypatch, capsys
):
  monkeypatch.chdir(tmp_path)
  _read_only(monkeypatch)
  with pytest.raises(SystemExit) as exit_:
    _evaluate(run_dir)
  assert exit_.value.code == 1
  captured = capsys.readouterr()
  printed = captured.out[captured.out.index("\n{") + 1 :]
  assert json.loads(printed)["ks"] == [1, 2]
  err = captured.err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith(
      "error: could not write the results to "
      f"{run_dir / evaluate_cli.OUTPUT_FILE} (Read-only file system); "
      f"{tmp_path / 'eval_k.grpo_run.json'} (Read-only file system); "
  )
  assert err[0].endswith("; they are printed above as JSON")
