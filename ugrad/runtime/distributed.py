"""Several JAX processes (hosts) as one run.

The model of a multi-host run: every process runs the same program on the
same config and seed, so every process computes the same prompts and the
same host-side batches (data draws are functions of (seed, step)); each
process puts only its own shards of a global batch on its devices
(`put_global`), and values the host needs (sampled tokens for rule rewards,
metrics) are gathered to every process (`host_get`). Only process 0 writes
files other than checkpoints (`is_main`); Orbax checkpoints are written and
read by every process together.
"""

from typing import Any

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np

from ugrad import errors

# Seconds a process waits for a peer that stopped answering before it exits
# with an error (JAX's coordination-service heartbeat), and for all
# processes to join at start-up.
HEARTBEAT_TIMEOUT_S = 100
INIT_TIMEOUT_S = 300


def initialize(
    coordinator_address: str = "",
    num_processes: int = 0,
    process_id: int = -1,
    auto: bool = False,
    cpu_collectives: str = "gloo",
) -> bool:
  """Joins the processes of a multi-host run (`jax.distributed.initialize`).

  Args:
    coordinator_address: "host:port" of process 0; with `num_processes` and
      `process_id`, an explicit launch (any machine, e.g. localhost tests).
    num_processes: how many processes take part.
    process_id: this process's index, 0..num_processes - 1.
    auto: with no address, let JAX detect the cluster (Cloud TPU VM slices,
      SLURM, Open MPI).
    cpu_collectives: the CPU backend's cross-process collectives ("gloo").

  Returns:
    Whether this process joined a multi-process run.

  Raises:
    ValueError: for a partial explicit launch (an address without the
      process count or id, or an id out of range).
  """
  explicit = bool(coordinator_address) or num_processes > 0 or process_id >= 0
  if not explicit and not auto:
    return False
  if explicit:
    if not (coordinator_address and num_processes > 0 and process_id >= 0):
      raise errors.UserError(
          "a multi-process launch needs --coordinator_address, "
          "--num_processes and --process_id together (got "
          f"{coordinator_address!r}, {num_processes}, {process_id})"
      )
    if process_id >= num_processes:
      raise errors.UserError(
          f"--process_id={process_id} is not below "
          f"--num_processes={num_processes}"
      )
  jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
  kwargs = dict(
      initialization_timeout=INIT_TIMEOUT_S,
      heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT_S,
  )
  if explicit:
    kwargs.update(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
    )
  jax.distributed.initialize(**kwargs)
  logging.info(
      "process %d of %d, %d local of %d devices",
      jax.process_index(),
      jax.process_count(),
      jax.local_device_count(),
      jax.device_count(),
  )
  return True


def is_main() -> bool:
  """Whether this process writes the run's files (process 0)."""
  return jax.process_index() == 0


def sync(name: str) -> None:
  """Waits until every process reaches this point (no-op on one process)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def agree(ok: bool) -> bool:
  """Process 0's `ok`, on every process (e.g. whether process 0 could
  take the workdir's lock), so that all of them go the same way."""
  if jax.process_count() == 1:
    return ok
  return bool(multihost_utils.broadcast_one_to_all(np.int32(ok)))


def _to_host(x: Any) -> Any:
  if not isinstance(x, jax.Array):
    return x  # Host values stay as they are (as with jax.device_get).
  if x.is_fully_addressable:
    return np.asarray(x)
  if x.is_fully_replicated:
    return np.asarray(x.addressable_data(0))
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def host_get(tree: Any) -> Any:
  """`jax.device_get` for (possibly multi-host) global arrays: numpy copies
  holding the whole global value on every process."""
  return jax.tree.map(_to_host, tree)


def put_global(tree: Any, sharding: jax.sharding.Sharding) -> Any:
  """Global arrays with `sharding` from host values that every process
  holds in full; each process copies in only its own shards."""

  def one(x):
    x = np.asarray(x)
    return jax.make_array_from_callback(
        x.shape, sharding, lambda index: x[index]
    )

  return jax.tree.map(one, tree)
