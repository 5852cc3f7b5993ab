"""Logical axis names on parameters -> mesh axes, by a short rule list.

Every parameter of `ugrad.models.transformer` names its dimensions with
logical axes (embed, heads, kv_heads, mlp, vocab) in its `out_sharding`
metadata. A rule list is a sequence of (logical axis, mesh axis or None)
pairs; a dimension whose name has no rule is replicated. A rule is skipped
for a dimension when its mesh axis is already used by another dimension of
the same array or does not divide the dimension's size (e.g. a vocabulary of
20 over 8 devices), so every rule list gives a valid sharding.
"""

from typing import Any, Mapping, Optional, Sequence

from flax import nnx
import jax
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec

from ugrad import registry

Rules = Sequence[tuple[str, Optional[str]]]

# Data parallel: every device holds all parameters; only the batch is split.
REPLICATED_RULES: Rules = ()
# Fully sharded data parallel: every parameter is split along its model width
# over the data axis and gathered by XLA when used.
FSDP_RULES: Rules = (("embed", "data"),)

RULES: dict[str, Rules] = {
    "data_parallel": REPLICATED_RULES,
    "fsdp": FSDP_RULES,
}


def get_rules(name: str) -> Rules:
  """The rule list called `name`."""
  return registry.lookup(RULES, "sharding rules", name)


def data_mesh(num_devices: Optional[int] = None, axis: str = "data") -> Mesh:
  """A one-axis mesh over the first `num_devices` devices (default: all).

  The axis is of type Auto, so XLA propagates shardings through the model;
  `jax.make_mesh`'s default in current JAX (Explicit axes) would require
  every gather in the model to name its output sharding.
  """
  n = jax.device_count() if num_devices is None else num_devices
  return jax.make_mesh((n,), (axis,),
                       axis_types=(jax.sharding.AxisType.Auto,))


def logical_to_spec(names: Sequence[Optional[str]], shape: Sequence[int],
                    axis_sizes: Mapping[str, int],
                    rules: Rules) -> PartitionSpec:
  """The PartitionSpec of one array.

  Args:
    names: logical axis name (or None) of each dimension.
    shape: the array's shape.
    axis_sizes: mesh axis name -> number of devices along it.
    rules: (logical axis, mesh axis or None) pairs, first match wins.

  Returns:
    A PartitionSpec with one entry per dimension.
  """
  if len(names) != len(shape):
    raise ValueError(f"logical axes {tuple(names)} do not match shape "
                     f"{tuple(shape)}")
  used = set()
  spec = []
  for name, size in zip(names, shape):
    chosen = None
    for logical, mesh_axis in rules:
      if logical != name or mesh_axis is None:
        continue
      if mesh_axis not in axis_sizes:
        raise ValueError(f"rule ({logical!r}, {mesh_axis!r}) names a mesh "
                         f"axis that is not in the mesh; mesh axes: "
                         f"{', '.join(axis_sizes)}")
      if mesh_axis not in used and size % axis_sizes[mesh_axis] == 0:
        chosen = mesh_axis
        break
    if chosen is not None:
      used.add(chosen)
    spec.append(chosen)
  return PartitionSpec(*spec)


def param_shardings(params: Any, mesh: Mesh, rules: Rules) -> Any:
  """NamedShardings for a parameter state, in the state's own structure.

  Args:
    params: an `nnx.State` (e.g. from `nnx.split(model, nnx.Param)`) whose
      variables carry `out_sharding` logical axis names; variables without
      them are replicated.
    mesh: the device mesh.
    rules: a rule list such as `FSDP_RULES`.

  Returns:
    The same structure with a NamedSharding in place of each value, usable
    as `jax.device_put(params, shardings)` or as jit in/out shardings.
  """
  axis_sizes = dict(mesh.shape)

  def one(var):
    if not isinstance(var, nnx.Variable):
      return NamedSharding(mesh, PartitionSpec())
    names = var.get_metadata().get("out_sharding")
    shape = var.get_value().shape
    if not names:
      return var.replace(NamedSharding(mesh, PartitionSpec()))
    spec = logical_to_spec(names, shape, axis_sizes, rules)
    return var.replace(NamedSharding(mesh, spec))

  return jax.tree.map(one, params,
                      is_leaf=lambda x: isinstance(x, nnx.Variable))
