"""Sweep report: Student t-intervals over seeds, gains paired with the same
seed's SFT policy, the reward models' held-out metrics, and the findings'
verdicts."""

import pytest

from experiments import sweep_report as report_lib


def test_t_interval():
  mean, lo, hi = report_lib.t_interval([1.0, 2.0, 3.0])
  # t(0.975, 2) = 4.302653, standard error 1 / sqrt(3).
  assert mean == 2.0
  assert hi - mean == pytest.approx(4.302653 / 3**0.5, rel=1e-6)
  assert mean - lo == pytest.approx(hi - mean)
  assert report_lib.t_interval([0.5]) == (0.5, None, None)


def _finals(accuracies):
  return [{"greedy_acc": a, "greedy_acc_ci": [a, a]} for a in accuracies]


def test_gains_are_paired_with_the_same_seeds_sft():
  sweep = {"seeds": [0, 1, 2]}
  summary = report_lib.summarize(
      sweep,
      {
          report_lib.SFT_NAME: _finals([0.5, 0.6, 0.7]),
          "grpo": _finals([0.6, 0.7, 0.8]),
      },
  )
  # Every seed gains 0.1: the paired interval has no width, the accuracy's
  # (the seeds' spread) does.
  assert summary["grpo"]["gain_ci"] == pytest.approx((0.1, 0.1, 0.1))
  assert summary["grpo"]["acc_ci"] == pytest.approx(
      (0.7, 0.4516, 0.9484), abs=1e-4
  )
  lines = report_lib.report(sweep, summary).splitlines()
  assert lines[-2:] == [
      "| SFT (no RL) | 60.0 [35.2, 84.8] | (baseline) | 50.0, 60.0, 70.0 |",
      "| grpo | 70.0 [45.2, 94.8] | 10.0 [10.0, 10.0] | 60.0, 70.0, 80.0 |",
  ]


def test_reward_model_summary_keeps_the_held_out_metrics():
  finals = [
      {
          "train_acc": 1.0,
          "loss": 0.7,
          "orm_acc": a,
          "orm_auc": 0.5,
          "orm_acc_lo": 0.0,
      }
      for a in (0.25, 0.75)
  ]
  summary = report_lib.summarize_reward_models({"orm": finals})
  assert list(summary["orm"]) == ["orm_acc", "orm_auc"]
  assert summary["orm"]["orm_acc"]["values"] == [0.25, 0.75]
  assert summary["orm"]["orm_acc"]["ci"][0] == 0.5


@pytest.mark.parametrize(
    "accs_b,verdict",
    [
        ([0.5, 0.6, 0.7], "reproduces"),  # a ahead by 0.1 in every seed
        ([0.7, 0.8, 0.9], "contradicted"),  # a behind by 0.1 in every seed
        ([0.5, 0.8, 0.6], "undecided"),  # +0.1, -0.1, +0.2
    ],
)
def test_findings_are_paired_differences_with_verdicts(accs_b, verdict):
  sweep = {
      "seeds": [0, 1, 2],
      "findings": [{"claim": "a beats b", "a": "a", "b": "b"}],
  }
  summary = report_lib.summarize(
      sweep,
      {
          report_lib.SFT_NAME: _finals([0.1, 0.1, 0.1]),
          "a": _finals([0.6, 0.7, 0.8]),
          "b": _finals(accs_b),
      },
  )
  ci = report_lib.finding_difference(sweep["findings"][0], summary, None)
  diffs = [x - y for x, y in zip([0.6, 0.7, 0.8], accs_b)]
  assert ci == pytest.approx(report_lib.t_interval(diffs))
  assert report_lib.verdict(ci) == verdict
  assert report_lib.report(sweep, summary).splitlines()[-1] == (
      f"| a beats b | {report_lib._pct(*ci)} | {verdict} |"
  )
  assert report_lib.verdict((0.1, None, None)) == "undecided (one seed)"


def test_maj_at_k_finding_reads_the_sampled_gain_difference():
  sweep = {
      "seeds": [0, 1],
      "evaluate": {"k": [1, 4], "questions": 2},
      "findings": [{"claim": "maj", "a": "grpo", "k": 4}],
  }
  rows = [
      {"name": n, "seed": s, "k": k, "pass_at_k": p, "maj_at_k": m}
      for n, s, k, p, m in [
          ("sft", 0, 1, 0.5, 0.5),
          ("sft", 0, 4, 0.8, 0.6),
          ("sft", 1, 1, 0.4, 0.4),
          ("sft", 1, 4, 0.7, 0.5),
          ("grpo", 0, 1, 0.6, 0.6),
          ("grpo", 0, 4, 0.8, 0.8),
          ("grpo", 1, 1, 0.5, 0.5),
          ("grpo", 1, 4, 0.75, 0.75),
      ]
  ]
  sampled = report_lib.summarize_sampled(sweep, ["sft", "grpo"], rows)
  summary = report_lib.summarize(
      sweep, {"sft": _finals([0.4, 0.4]), "grpo": _finals([0.5, 0.5])}
  )
  ci = report_lib.finding_difference(sweep["findings"][0], summary, sampled)
  # maj@4 gains 0.2, 0.25; pass@4 gains 0.0, 0.05: differences 0.2, 0.2.
  assert ci == pytest.approx((0.2, 0.2, 0.2))
  assert report_lib.verdict(ci) == "reproduces"
