"""Compares two finished runs value by value: the behaviour check of a
refactor, and the same-seed check of a change that alters the numerics.

  python -m experiments.compare_runs WORKDIR_A WORKDIR_B

Every non-timing key of `metrics.jsonl` (and of `sft/metrics.jsonl` where
the run has a warm start) row by row, and `eval.json` as a whole; prints
the number of values compared and of differences, exit status 1 when any
differ.
"""

import json
import pathlib
import sys

from ugrad.training import records

_FILES = ("metrics.jsonl", "sft/metrics.jsonl")


def _rows(path: pathlib.Path) -> list[dict]:
  with path.open() as f:
    return [
        {
            k: v
            for k, v in json.loads(line).items()
            if k not in records.TIMING_KEYS
        }
        for line in f
    ]


def compare(a: str, b: str) -> tuple[int, list[str]]:
  """(values compared, a description of each difference)."""
  total, diffs = 0, []
  for name in _FILES:
    pa, pb = pathlib.Path(a) / name, pathlib.Path(b) / name
    if not pa.exists() and not pb.exists():
      continue
    ra, rb = _rows(pa), _rows(pb)
    if len(ra) != len(rb):
      diffs.append(f"{name}: {len(ra)} rows vs {len(rb)}")
    for i, (x, y) in enumerate(zip(ra, rb)):
      for key in sorted(set(x) | set(y)):
        total += 1
        if x.get(key) != y.get(key):
          diffs.append(f"{name} row {i} {key}: {x.get(key)} vs {y.get(key)}")
  ea = json.loads((pathlib.Path(a) / "eval.json").read_text())
  eb = json.loads((pathlib.Path(b) / "eval.json").read_text())
  if ea != eb:
    diffs.append(f"eval.json: {ea} vs {eb}")
  return total, diffs


def main(argv: list[str]) -> int:
  if len(argv) != 3:
    print(__doc__.split("\n\n")[1], file=sys.stderr)
    return 2
  total, diffs = compare(argv[1], argv[2])
  for line in diffs[:20]:
    print(line)
  print(f"{total} values compared, {len(diffs)} differences")
  return 1 if diffs else 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
