"""glibc's allocator tuned so that XLA:CPU's per-step temporaries are
reused, not mapped and faulted in again at every call."""

import os
import subprocess
import sys
import textwrap

import pytest

from ugrad.runtime import host_memory

_REPO = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
)

# SFT steps of the embedded model (the main job's warm start, whose update
# has a 127 MB temporary at its batch of 64; here 128 rows, about twice
# that); prints the page faults per step after the first.
_PROGRAM = textwrap.dedent("""
    import resource, tempfile
    from ugrad.runtime import host_memory
    print(host_memory.keep_freed_memory())
    from experiments.configs import sft
    from ugrad.training import trainer as trainer_lib
    faults = {}

    def hook(unused_context, unused_state, step):
      faults[step] = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
      return trainer_lib.HookResult()

    config = sft.get_config()
    config.steps, config.quiet, config.eval_questions = 6, True, 8
    config.batch_size = 128  # A temporary well over glibc's 64 MB heaps.
    config.trim_bucket = 0  # Every step the same shape: the same temporary.
    trainer_lib.Trainer(config, tempfile.mkdtemp(), hooks=[hook]).train()
    print((faults[5] - faults[1]) / 4)
""")


def _faults_per_call(malloc: str) -> tuple[bool, float]:
  env = dict(os.environ, JAX_PLATFORMS="cpu", **{host_memory.OPT_OUT: malloc})
  out = subprocess.run(
      [sys.executable, "-c", _PROGRAM],
      env=env,
      cwd=_REPO,
      capture_output=True,
      text=True,
      timeout=300,
      check=True,
  ).stdout.split()
  return out[0] == "True", float(out[1])


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="glibc's allocator")
def test_temporaries_are_reused_not_faulted_in_each_step():
  tuned, faults = _faults_per_call("tuned")
  untouched, system_faults = _faults_per_call("system")
  assert (tuned, untouched) == (True, False)
  # Untouched, each step maps its temporary afresh: a page fault per 4 KiB.
  assert system_faults > 40_000, system_faults
  assert faults < system_faults / 10, (faults, system_faults)


@pytest.mark.parametrize(
    "platforms,files,cpu",
    [
        ("cpu", ["/dev/nvidiactl"], True),  # JAX_PLATFORMS decides.
        ("cuda", [], False),
        ("tpu,cpu", [], False),
        ("", [], True),  # Unset: the device files decide.
        ("", ["/dev/nvidiactl"], False),
        ("", ["/dev/vfio/0"], False),
    ],
)
def test_computes_on_cpu(monkeypatch, platforms, files, cpu):
  monkeypatch.setenv("JAX_PLATFORMS", platforms)
  monkeypatch.setattr(
      host_memory.glob,
      "glob",
      lambda pattern: [f for f in files if f.startswith(pattern.split("[")[0])],
  )
  assert host_memory.computes_on_cpu() is cpu


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's allocator")
def test_an_accelerator_host_keeps_the_system_allocator(monkeypatch):
  calls = []
  monkeypatch.setattr(host_memory, "computes_on_cpu", lambda: False)
  monkeypatch.setattr(
      host_memory.ctypes,
      "CDLL",
      lambda name: calls.append(name) or pytest.fail("tuned the allocator"),
  )
  monkeypatch.delenv(host_memory.OPT_OUT, raising=False)
  assert not host_memory.keep_freed_memory()
  assert not calls
