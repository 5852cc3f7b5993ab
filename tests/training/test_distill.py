"""On-policy distillation end to end: a frozen teacher (a ugrad run) scores
the student's samples and the student trains towards it."""

import math
import os

import pytest

from tests.helpers import train_util
from ugrad.runtime import metrics as metrics_lib
from ugrad.training import trainer as trainer_lib
from ugrad.training import validate


def _run(config, workdir):
  trainer_lib.Trainer(config, workdir).train()
  return metrics_lib.read_metrics(os.path.join(workdir, "metrics.jsonl"))


@pytest.mark.slow
def test_a_tiny_student_trains_on_its_teachers_log_probs(tmp_path):
  student = str(tmp_path / "student")
  _run(train_util.tiny("sft", steps=2), student)
  teacher = train_util.tiny("sft", steps=6)
  teacher.seed = 1
  _run(teacher, str(tmp_path / "teacher"))
  config = train_util.tiny("distill", steps=4, init_from=student)
  config.teacher = str(tmp_path / "teacher")
  rows = _run(config, str(tmp_path / "distill"))
  assert [r["step"] for r in rows] == [1, 2, 3, 4]
  assert all(math.isfinite(r["loss"]) for r in rows)
  # The coefficient is the teacher's log-ratio to the student: not zero,
  # and its mean (minus the k1 estimate of KL(student || teacher) on the
  # samples) rises as the student moves to the teacher (measured: -0.012 at
  # step 1, 0.038 at step 4).
  assert all(r["gc_neg_frac"] > 0 for r in rows)
  assert rows[-1]["gc_mean"] > rows[0]["gc_mean"]


def test_distill_needs_a_teacher_and_a_teacher_needs_distill():
  config = train_util.tiny("distill", init_from="sft_workdir")
  with pytest.raises(ValueError, match="logp_teacher.*config.teacher"):
    validate.check_config(config)
  config = train_util.tiny("grpo", init_from="sft_workdir")
  config.teacher = "teacher_workdir"
  with pytest.raises(ValueError, match="config.teacher is set but"):
    validate.check_config(config)
