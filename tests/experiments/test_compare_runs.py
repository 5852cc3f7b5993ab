"""experiments.compare_runs: timing keys ignored, any other difference
counted."""

import json

from experiments import compare_runs


def _run(path, losses, times, accuracy):
  (path / "sft").mkdir(parents=True)
  for name in ("metrics.jsonl", "sft/metrics.jsonl"):
    rows = [{"loss": l, "step_time_s": s} for l, s in zip(losses, times)]
    (path / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
  (path / "eval.json").write_text(json.dumps({"final": accuracy}))
  return str(path)


def test_timings_do_not_count_and_values_do(tmp_path):
  a = _run(tmp_path / "a", [1.0, 0.5], [3.0, 1.0], 0.7)
  b = _run(tmp_path / "b", [1.0, 0.5], [9.0, 2.0], 0.7)
  c = _run(tmp_path / "c", [1.0, 0.25], [3.0, 1.0], 0.8)
  assert compare_runs.compare(a, b) == (4, [])
  total, diffs = compare_runs.compare(a, c)
  assert total == 4 and len(diffs) == 3  # two losses and eval.json
  assert compare_runs.main(["x", a, b]) == 0
  assert compare_runs.main(["x", a, c]) == 1
