"""The layout's rules: imports go one way, with no cycle; modules stay small.

Layers, bottom up (a module imports only from its own layer or below):

  0  errors, registry, masked, runtime/   (the run's machinery)
  1  rollout, loss, tasks/, models/, environments/ (plain Python: what
     answers a policy between turns; tasks write the calculator's format)
  2  coefficients/, sampling/
  3  rewards/, sources/
  4  training/
  5  the `ugrad` package itself (the public API), then experiments/
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
MAX_LINES = 450
LAYERS = {
    "errors": 0,
    "registry": 0,
    "masked": 0,
    "runtime": 0,
    "rollout": 1,
    "loss": 1,
    "tasks": 1,
    "models": 1,
    "environments": 1,
    "coefficients": 2,
    "sampling": 2,
    "rewards": 3,
    "sources": 3,
    "training": 4,
}


def _module_name(path: pathlib.Path) -> str:
  parts = list(path.relative_to(ROOT).with_suffix("").parts)
  if parts[-1] == "__init__":
    parts.pop()
  return ".".join(parts)


def _modules(package: str) -> dict[str, pathlib.Path]:
  return {_module_name(p): p for p in sorted((ROOT / package).rglob("*.py"))}


def _imports(path: pathlib.Path, known) -> set[str]:
  """The known modules `path` imports at module level or in functions."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      # `from pkg import mod` depends on pkg.mod; `from mod import name` on
      # mod.
      names = [f"{node.module}.{a.name}" for a in node.names]
      if not any(n in known for n in names):
        names = [node.module]
    else:
      continue
    found |= {n for n in names if n in known}
  return found - {_module_name(path)}


def _layer(module: str) -> int:
  parts = module.split(".")
  if parts[0] != "ugrad":
    return 6
  if len(parts) == 1:
    return 5
  return LAYERS[parts[1]]


def _graph():
  modules = _modules("ugrad") | _modules("experiments")
  return {m: _imports(p, modules) for m, p in modules.items()}


def test_every_ugrad_module_has_a_layer():
  for module in _modules("ugrad"):
    _layer(module)  # KeyError names a module outside the table.


def test_imports_go_down_the_layers():
  wrong = [
      f"{m} (layer {_layer(m)}) imports {d} (layer {_layer(d)})"
      for m, deps in _graph().items()
      for d in sorted(deps)
      if _layer(d) > _layer(m)
  ]
  assert not wrong, "\n".join(wrong)


def test_no_import_cycle():
  graph = _graph()
  # A package's __init__ that re-exports its submodules is not a cycle.
  edges = {
      m: {d for d in deps if not m.startswith(d + ".")}
      for m, deps in graph.items()
  }
  state, stack = {}, []

  def visit(m):
    state[m] = "open"
    stack.append(m)
    for d in sorted(edges[m]):
      if state.get(d) == "open":
        pytest.fail(
            "import cycle: " + " -> ".join(stack[stack.index(d) :] + [d])
        )
      if d not in state:
        visit(d)
    stack.pop()
    state[m] = "done"

  for m in sorted(edges):
    if m not in state:
      visit(m)


@pytest.mark.parametrize("package", ["ugrad", "experiments"])
def test_no_module_over_the_line_limit(package):
  long = {
      m: n
      for m, p in _modules(package).items()
      if (n := len(p.read_text().splitlines())) > MAX_LINES
  }
  assert not long, f"modules over {MAX_LINES} lines: {long}"
