"""experiments/main.py: the SFT warm start and the launcher's run."""

import json
import os

import pytest

from experiments import main
from tests import train_util
from ugrad import metrics as metrics_lib
from ugrad import runs


def test_only_an_sft_policy_run_or_an_init_from_skips_the_warm_start():
  assert not main.needs_sft_warm_start(train_util.tiny("sft"))
  assert main.needs_sft_warm_start(train_util.tiny("grpo"))
  assert not main.needs_sft_warm_start(train_util.tiny("grpo",
                                                       init_from="x"))
  sft = main.sft_config(train_util.tiny("dpo"))
  assert (sft.coef.name, sft.source, sft.reward) == ("sft", "dataset", "none")
  assert sft.steps == 2 and not sft.sampling.pairs


@pytest.mark.slow
def test_warm_start_trains_sft_once_and_the_run_reports_both(tmp_path):
  workdir = str(tmp_path / "grpo")
  results = main.run(train_util.tiny("grpo"), workdir)
  sft_dir = os.path.join(workdir, "sft")
  assert runs.read_config(workdir).init_from == sft_dir
  assert runs.is_finished_model(sft_dir)
  assert set(results) == {"sft", "final"}
  with open(os.path.join(workdir, runs.EVAL_FILE)) as f:
    assert json.load(f) == results
  sft_rows = metrics_lib.read_metrics(os.path.join(sft_dir, "metrics.jsonl"))
  assert [r["step"] for r in sft_rows] == [1, 2]
  # Running on (here: one step longer) reuses the SFT policy and its eval.
  again = main.run(train_util.tiny("grpo", steps=3), workdir)
  assert again["sft"] == results["sft"]
  assert metrics_lib.read_metrics(
      os.path.join(sft_dir, "metrics.jsonl")) == sft_rows
  rows = metrics_lib.read_metrics(os.path.join(workdir, "metrics.jsonl"))
  assert [r["step"] for r in rows] == [1, 2, 3]
