"""Run as `python -m tests.helpers.episodes_mesh OUT.npz` on 8 (fake) devices:
scripted episodes (tests/sampling/test_episodes.py) sampled on one device
and on a data x tensor mesh, both results saved for the test to compare."""

import sys

import jax
import numpy as np

from tests.sampling import test_episodes as scripted
from ugrad.models import sharding as sharding_lib
from ugrad.sampling import episodes

FIELDS = ("tokens", "completion_mask", "attention_mask", "logp", "step_mask")
PROMPTS = scripted.PROMPTS + ["3*4=\n"]  # 4 prompts: split over data=4


def _sample(graphdef, params, mesh):
  out = episodes.sample_episodes(
      graphdef,
      params,
      PROMPTS,
      scripted.TOK,
      8,
      jax.random.key(0),
      scripted.CONFIG,
      episodes.EpisodeSpec(scripted.Scripted(), 8, 0.5),
      examples=PROMPTS,
      mesh=mesh,
  )
  return {k: np.asarray(getattr(out, k)) for k in FIELDS} | {
      "texts": np.asarray(out.texts)
  }


def main(path: str):
  assert jax.device_count() == 8, jax.devices()
  graphdef, params = scripted.make_model()
  one = _sample(graphdef, params, None)
  mesh = sharding_lib.make_mesh(
      sharding_lib.mesh_shape(dict(dcn_data=1, data=4, fsdp=1, tensor=2))
  )
  sharded = jax.device_put(
      params, sharding_lib.param_shardings(params, mesh, sharding_lib.RULES)
  )
  eight = _sample(graphdef, sharded, mesh)
  np.savez(
      path,
      **{f"one_{k}": v for k, v in one.items()},
      **{f"eight_{k}": v for k, v in eight.items()},
  )


if __name__ == "__main__":
  main(sys.argv[1])
