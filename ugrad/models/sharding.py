"""The device mesh and logical axis names on parameters -> mesh axes.

The mesh has four axes, each of any size (1 switches it off):

* `dcn_data`: data parallelism across slices or hosts over the data-centre
  network (a hybrid mesh: only gradients cross it);
* `data`: data parallelism within a slice (parameters replicated; their
  gradients and optimizer moments split over it, ZeRO stages 1 and 2:
  `moment_sharding`);
* `fsdp`: the batch AND every parameter's model width (`embed`) are split,
  parameters gathered by XLA where used (fully sharded data parallel);
* `tensor`: attention heads, the MLP width and the vocabulary are split
  (tensor parallelism, Megatron-style).

Every parameter of `ugrad.models.transformer` names its dimensions with
logical axes (embed, heads, kv_heads, mlp, vocab) in its `logical_axes`
metadata; `RULES` maps them to mesh axes. A rule is skipped for a dimension
when its mesh axis is already used by another dimension of the same array or
does not divide the dimension's size (e.g. a 20-character vocabulary over
tensor=8), so the rules always give a valid sharding; `check_model` refuses
the cases where skipping would silently undo the user's tensor or fsdp
choice (heads, kv_heads, mlp, embed).
"""

import functools
import math
from typing import Any, Mapping, Optional, Sequence

from flax import nnx
import jax
from jax.experimental import mesh_utils
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec

from ugrad import errors

Rules = Sequence[tuple[str, Optional[str]]]

MESH_AXES = ("dcn_data", "data", "fsdp", "tensor")
# The batch's rows are split over these axes, in this order.
BATCH_AXES = ("dcn_data", "data", "fsdp")
RULES: Rules = (
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("vocab", "tensor"),
)


def mesh_shape(
    requested: Mapping[str, int], num_devices: Optional[int] = None
) -> dict:
  """Axis sizes with one -1 resolved to the devices that remain.

  Args:
    requested: a size for each of `MESH_AXES` (missing axes are 1); at most
      one may be -1.
    num_devices: devices to fill (default: all of them).

  Raises:
    ValueError: naming the sizes when they do not multiply to the devices.
  """
  n = jax.device_count() if num_devices is None else num_devices
  unknown = sorted(set(requested) - set(MESH_AXES))
  if unknown:
    raise errors.UserError(
        f"unknown mesh axes {unknown}; valid: " f"{', '.join(MESH_AXES)}"
    )
  shape = {axis: int(requested.get(axis, 1)) for axis in MESH_AXES}
  bad = [f"{a}={v}" for a, v in shape.items() if v == 0 or v < -1]
  if bad:
    raise errors.UserError(
        f"mesh sizes must be >= 1 or -1, got {', '.join(bad)}"
    )
  free = [a for a, v in shape.items() if v == -1]
  if len(free) > 1:
    raise errors.UserError(
        f"only one mesh axis may be -1, got {', '.join(free)}"
    )
  fixed = math.prod(v for v in shape.values() if v != -1)
  if free:
    if n % fixed:
      raise errors.UserError(
          f"mesh {_show(shape)} cannot fill {n} devices: {n} is "
          f"not a multiple of {fixed}"
      )
    shape[free[0]] = n // fixed
  if math.prod(shape.values()) != n:
    raise errors.UserError(
        f"mesh {_show(shape)} has {math.prod(shape.values())} "
        f"devices but there are {n}"
    )
  return shape


def _show(shape: Mapping[str, int]) -> str:
  return " x ".join(f"{a}={v}" for a, v in shape.items())


def make_mesh(
    shape: Mapping[str, int], devices: Optional[Sequence[Any]] = None
) -> Mesh:
  """The mesh of `shape` (from `mesh_shape`) over `devices` (default all).

  With dcn_data > 1 the devices are laid out as a hybrid mesh: dcn_data
  groups of one slice (TPU) or one process (elsewhere) each, so only the
  dcn_data axis crosses the data-centre network. Axes are of type Auto: XLA
  propagates shardings through the model.
  """
  devices = list(jax.devices() if devices is None else devices)
  ici = tuple(shape[a] if a != "dcn_data" else 1 for a in MESH_AXES)
  if shape["dcn_data"] > 1:
    dcn = (shape["dcn_data"], 1, 1, 1)
    granule = not hasattr(devices[0], "slice_index")
    array = mesh_utils.create_hybrid_device_mesh(
        ici, dcn, devices, process_is_granule=granule
    )
  else:
    array = mesh_utils.create_device_mesh(ici, devices)
  return Mesh(
      array,
      MESH_AXES,
      axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES),
  )


def batch_shards(shape: Mapping[str, int]) -> int:
  """How many pieces the batch's rows are split into."""
  return math.prod(shape[a] for a in BATCH_AXES)


def check_model(model_config, shape: Mapping[str, int]) -> None:
  """Refuses a mesh that does not divide the model, with the numbers."""
  tensor, fsdp = shape["tensor"], shape["fsdp"]
  for axis, size, field in (
      ("tensor", tensor, "num_heads"),
      ("tensor", tensor, "num_kv_heads"),
      ("tensor", tensor, "mlp_size"),
      ("fsdp", fsdp, "hidden_size"),
  ):
    value = getattr(model_config, field)
    if value % size:
      raise errors.UserError(f"{axis}={size} does not divide {field}={value}")


def logical_to_spec(
    names: Sequence[Optional[str]],
    shape: Sequence[int],
    axis_sizes: Mapping[str, int],
    rules: Rules,
) -> PartitionSpec:
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
    raise errors.UserError(
        f"logical axes {tuple(names)} do not match shape " f"{tuple(shape)}"
    )
  used = set()
  spec = []
  for name, size in zip(names, shape):
    chosen = None
    for logical, mesh_axis in rules:
      if logical != name or mesh_axis is None:
        continue
      if mesh_axis not in axis_sizes:
        raise errors.UserError(
            f"rule ({logical!r}, {mesh_axis!r}) names a mesh "
            f"axis that is not in the mesh; mesh axes: "
            f"{', '.join(axis_sizes)}"
        )
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
      variables carry `logical_axes` names; variables without
      them are replicated.
    mesh: the device mesh.
    rules: a rule list such as `RULES`.

  Returns:
    The same structure with a NamedSharding in place of each value, usable
    as `jax.device_put(params, shardings)` or as jit in/out shardings.
  """
  axis_sizes = dict(mesh.shape)

  def one(var):
    if not isinstance(var, nnx.Variable):
      return NamedSharding(mesh, PartitionSpec())
    names = var.get_metadata().get("logical_axes")
    shape = var.get_value().shape
    if not names:
      return var.replace(NamedSharding(mesh, PartitionSpec()))
    spec = logical_to_spec(names, shape, axis_sizes, rules)
    return var.replace(NamedSharding(mesh, spec))

  return jax.tree.map(
      one, params, is_leaf=lambda x: isinstance(x, nnx.Variable)
  )


def moment_sharding(
    param: NamedSharding, shape: Sequence[int]
) -> NamedSharding:
  """Where a parameter's gradient and optimizer moments live: its own
  sharding with the `data` axis added to the largest dimension that the
  result still divides (ZeRO stages 1 and 2: each data-parallel replica
  reduces, clips and updates its slice, and the new parameters are gathered
  back); `param` itself when data is 1 or divides no dimension."""
  mesh = param.mesh
  if mesh.shape.get("data", 1) == 1 or "data" in jax.tree.leaves(param.spec):
    return param
  spec = list(param.spec) + [None] * (len(shape) - len(param.spec))
  best = None
  for dim, size in enumerate(shape):
    axes = spec[dim] if isinstance(spec[dim], tuple) else (spec[dim],)
    axes = tuple(a for a in axes if a is not None) + ("data",)
    if size % math.prod(mesh.shape[a] for a in axes) == 0 and (
        best is None or size > shape[best[0]]
    ):
      best = (dim, axes)
  if best is None:
    return param
  spec[best[0]] = best[1] if len(best[1]) > 1 else best[1][0]
  return NamedSharding(mesh, PartitionSpec(*spec))


def _moment_spec(mesh, names, shape) -> PartitionSpec:
  """`moment_sharding`'s spec for an array with logical axes `names` (or
  None: replicated) under `mesh`, with `RULES`."""
  param = logical_to_spec(names, shape, mesh.shape, RULES) if names else ()
  return moment_sharding(NamedSharding(mesh, PartitionSpec(*param)), shape).spec


def _data_parallel_mesh():
  """The set mesh when its data axis splits anything, else None."""
  mesh = jax.sharding.get_abstract_mesh()
  return None if mesh.empty or mesh.shape.get("data", 1) == 1 else mesh


def constrain_as_moments(grads: Any, state: Any) -> Any:
  """The gradients `grads` of a module's `state` (variables with logical
  axes) constrained to where their optimizer moments live under the set
  mesh (`moment_sharding` of the `RULES` sharding), so that data-parallel
  replicas reduce-scatter them where they are made; as they are when no
  mesh is set or its data axis is 1."""
  mesh = _data_parallel_mesh()
  if mesh is None:
    return grads
  variables = jax.tree.leaves(
      state, is_leaf=lambda x: isinstance(x, nnx.Variable)
  )
  leaves, tree = jax.tree.flatten(grads)
  return tree.unflatten(
      [
          jax.lax.with_sharding_constraint(
              g,
              _moment_spec(
                  mesh,
                  v.get_metadata().get("logical_axes"),
                  v.get_value().shape,
              ),
          )
          for g, v in zip(leaves, variables, strict=True)
      ]
  )


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _gradient_constrained(x, spec):
  del spec
  return x


def _gradient_constrained_fwd(x, spec):
  del spec
  return x, None


def _gradient_constrained_bwd(spec, _, cotangent):
  return (jax.lax.with_sharding_constraint(cotangent, spec),)


_gradient_constrained.defvjp(
    _gradient_constrained_fwd, _gradient_constrained_bwd
)


def reduce_gradient_here(x: jax.Array, names: Sequence[Optional[str]]):
  """`x` (logical axes `names`), whose gradient from what reads this value
  is reduce-scattered to its optimizer moments' sharding as soon as it is
  complete, not summed in full with the parameter's other uses first (the
  vocabulary head's share of a tied embedding's gradient, before the input
  lookup's arrives at the end of the backward pass). `x` itself without a
  data-parallel mesh."""
  mesh = _data_parallel_mesh()
  if mesh is None:
    return x
  return _gradient_constrained(x, _moment_spec(mesh, names, x.shape))


def row_shards(rows: int) -> int:
  """How many blocks `constrain_rows` splits `rows` rows into: the product
  of the set mesh's batch axes when it divides `rows`, else 1."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return 1
  n = math.prod(mesh.shape[a] for a in BATCH_AXES if a in mesh.axis_names)
  return 1 if rows % n else n


def constrain_rows(x: jax.Array) -> jax.Array:
  """`x` with its rows over the mesh's batch axes, when a mesh is set
  (`jax.set_mesh`, as the trainer does) and they divide; else `x`. Placed at
  layer boundaries so XLA keeps activations batch-sharded (and replicated
  over tensor) instead of guessing."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return x
  axes = tuple(a for a in BATCH_AXES if a in mesh.axis_names)
  if not axes or x.shape[0] % math.prod(mesh.shape[a] for a in axes):
    return x
  return jax.lax.with_sharding_constraint(x, jax.P(axes))
