"""experiments/perf/benchmark_grpo.py: ugrad's side on a tiny shape, no peers;
the peers' tokenizer (experiments/perf/benchmark_peers.py)."""

import importlib.util
import json

import pytest

from experiments.perf import benchmark_grpo
from experiments.perf import benchmark_peers
from ugrad import tasks


# About 30 s on 2 loaded cores: four compilations and their cost analyses.
@pytest.mark.slow
def test_ugrad_step_figure_without_the_peers(tmp_path, monkeypatch, capsys):
  find_spec = importlib.util.find_spec
  monkeypatch.setattr(
      importlib.util,
      "find_spec",
      lambda name, *a: (None if name == "tunix" else find_spec(name, *a)),
  )
  work = benchmark_grpo.Work(
      model="tiny",
      prompts=2,
      group=2,
      new_tokens=4,
      hf_dir=str(tmp_path / "init"),
      workdir=str(tmp_path),
  )
  figures = benchmark_grpo.run(
      work, ["ugrad", "tunix"], repeats=2, matmul_flops=1e10
  )
  lines = [
      json.loads(line)
      for line in capsys.readouterr().out.splitlines()
      if line.startswith("{")
  ]
  skipped = [x for x in lines if x.get("contender") == "tunix"]
  assert "tunix not installed" in skipped[0]["skipped"]
  figure = figures["ugrad"]
  assert figure in lines and list(figures) == ["ugrad"]
  assert len(figure["s_per_step_all"]) == 2
  assert figure["completion_tokens_per_s"] > 0
  phases = figure["phases_s"]
  assert set(phases) >= {"sample", "host", "reference", "update", "loop"}
  assert sum(
      phases[k] for k in ("sample", "host", "reference", "update", "loop")
  ) == pytest.approx(figure["s_per_step"], rel=0.5)
  flops = figure["flops_per_step"]
  assert set(flops["analytic"]) == {"sample", "reference", "update"}
  # The update is one forward and backward pass: near 3x the reference.
  xla = flops["xla_cost_analysis"]
  assert 2 < xla["update"] / xla["reference"] < 5
  assert 0 < figure["fraction_of_floor"]


def test_hf_char_tokenizer_has_the_task_ids():
  pytest.importorskip("transformers")
  char = tasks.make_task("arithmetic").tokenizer
  tok = benchmark_peers.hf_char_tokenizer(char)
  text = "48+27-19=\n48+27=75\n#### 56"
  ids = tok("<bos>" + text, add_special_tokens=False)["input_ids"]
  assert ids == [char.bos_id] + char.encode(text)
  assert (
      tok.decode(char.encode(text) + [char.eos_id], skip_special_tokens=True)
      == text
  )
  assert (tok.pad_token_id, tok.eos_token_id) == (char.pad_id, char.eos_id)
