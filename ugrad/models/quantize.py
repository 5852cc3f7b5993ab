"""A frozen LoRA base stored in a narrow type (QLoRA, Dettmers et al., 2023).

`config.lora.base_dtype` chooses how the kernels of the adapted projections
(the `Dense` modules LoRA targets) are kept while they are frozen:

* "" keeps them in `param_dtype`, as a full fine-tuning run would;
* "float32" / "bfloat16" cast them (bfloat16 under a bfloat16 compute dtype
  computes exactly what "" does, in half the memory);
* "int8": symmetric absmax int8, one scale per output column;
* "nf4": the 16 NormalFloat levels, absmax per block of 64 consecutive
  inputs of one output column (bitsandbytes' layout of a torch [out, in]
  weight), 4 bits a weight plus a float32 scale per block.

The quantizers are qwix's (`qwix.quantize` / `qwix.dequantize`, used as
plain functions on the kernel's array). A quantized kernel becomes a
`QuantizedKernel` in the `Dense`'s `kernel` attribute: two frozen
`nnx.Param`s, `qvalue` (int8, or uint4 for nf4) and `scale`, carrying the
kernel's logical axes, so the base is quantized once, stored quantized and
dequantized to the compute dtype inside each matmul. Embeddings, norms,
biases and projections no adapter targets stay in `param_dtype`.
"""

import math

from flax import nnx
import jax
import jax.numpy as jnp
import qwix

from ugrad import errors

BASE_DTYPES = ("", "float32", "bfloat16", "int8", "nf4")
QUANTIZED = ("int8", "nf4")
NF4_BLOCK = 64  # Inputs per nf4 scale (QLoRA's block size).
# A quantized value's storage dtype names its format.
_QTYPES = {jnp.dtype(jnp.int8): jnp.int8, jnp.dtype(jnp.uint4): "nf4"}
# QLoRA's 16 NormalFloat levels (Dettmers et al., 2023, appendix E), the
# ones qwix quantizes to (tests/models/test_quantize.py checks).
NF4_LEVELS = (
    -1.0,
    -0.6961928009986877,
    -0.5250730514526367,
    -0.39491748809814453,
    -0.28444138169288635,
    -0.18477343022823334,
    -0.09105003625154495,
    0.0,
    0.07958029955625534,
    0.16093020141124725,
    0.24611230194568634,
    0.33791524171829224,
    0.44070982933044434,
    0.5626170039176941,
    0.7229568362236023,
    1.0,
)


def check_base_dtype(base_dtype: str) -> None:
  """Raises a one-line UserError for an unknown `lora.base_dtype`."""
  if base_dtype not in BASE_DTYPES:
    raise errors.UserError(
        f"lora.base_dtype must be one of "
        f"{', '.join(repr(d) for d in BASE_DTYPES)}, got {base_dtype!r}"
    )


def nf4_block(d_in: int) -> int:
  """The nf4 block: 64 inputs, or the largest divisor of `d_in` under it
  (a small model's narrow projections)."""
  return math.gcd(d_in, NF4_BLOCK)


def quantize(kernel: jax.Array, base_dtype: str) -> qwix.QArray:
  """A [in, out] kernel quantized as `base_dtype` ("int8" or "nf4"); the
  scales keep the kernel's dtype."""
  if base_dtype == "int8":
    return qwix.quantize(kernel, jnp.int8, channelwise_axes=(1,))
  return qwix.quantize(
      kernel,
      "nf4",
      channelwise_axes=(1,),
      tiled_axes={0: nf4_block(kernel.shape[0])},
  )


def dequantize(qvalue: jax.Array, scale: jax.Array, dtype) -> jax.Array:
  """The [in, out] kernel of `quantize`'s parts, in `dtype`.

  nf4 is dequantized here, elementwise (`_nf4_levels`), with the values
  `qwix.dequantize` gives: qwix maps nf4 indices through a gather over the
  flattened array (a vmapped table lookup), which XLA cannot fuse into the
  matmul that reads the kernel. Its decode step then wrote and read every
  dequantized kernel in float32 (40.6x the step's minimum bytes on the
  2-layer 7B plan; BUILD_NOTES.md)."""
  if _QTYPES[jnp.dtype(qvalue.dtype)] != "nf4":
    return qwix.dequantize(
        qwix.QArray(qvalue, scale.astype(dtype), None, jnp.int8)
    )
  block = qvalue.shape[0] // scale.shape[0]
  return _nf4_levels(qvalue, dtype) * jnp.repeat(
      scale.astype(dtype), block, axis=0
  )


def _nf4_levels(qvalue: jax.Array, dtype) -> jax.Array:
  """The NormalFloat level of each uint4 index, in `dtype`: a chain of
  elementwise selects, which fuses into its consumer."""
  index = qvalue.astype(jnp.int32)
  levels = [jnp.asarray(level, dtype) for level in NF4_LEVELS]
  out = jnp.full(qvalue.shape, levels[0], dtype)
  for k in range(1, len(levels)):
    out = jnp.where(index == k, levels[k], out)
  return out


def _quantized_matmul(x, qvalue, scale, dtype):
  return x.astype(dtype) @ dequantize(qvalue, scale, dtype)


# Under jax.checkpoint the backward pass dequantizes again rather than
# keeping each layer's dequantized kernel as a residual: training holds the
# quantized base only.
_matmul = jax.checkpoint(
    _quantized_matmul,
    policy=jax.checkpoint_policies.nothing_saveable,
    static_argnums=(3,),
)


class QuantizedKernel(nnx.Module):
  """A frozen [in, out] kernel stored as int8 or nf4 (see the module
  docstring)."""

  def __init__(self, kernel: nnx.Param, base_dtype: str):
    axes = kernel.get_metadata().get("logical_axes") or (None, None)
    q = quantize(kernel[...], base_dtype)
    self.qvalue = nnx.Param(q.qvalue, logical_axes=axes)
    # A scale axis of one entry (int8's inputs) is not sharded.
    self.scale = nnx.Param(
        q.scale,
        logical_axes=tuple(
            a if n > 1 else None for a, n in zip(axes, q.scale.shape)
        ),
    )

  def value(self, dtype=None) -> jax.Array:
    """The dequantized kernel, in `dtype` (default: the scale's)."""
    return dequantize(
        self.qvalue[...], self.scale[...], dtype or self.scale[...].dtype
    )

  def __call__(self, x: jax.Array, dtype, bias=None) -> jax.Array:
    """x [N, in] @ the dequantized kernel (+ a `bias` Param), in `dtype`."""
    y = _matmul(x, self.qvalue[...], self.scale[...], jnp.dtype(dtype))
    return y if bias is None else y + bias[...].astype(y.dtype)


def freeze_kernel(dense, base_dtype: str) -> None:
  """Stores `dense`'s kernel as `base_dtype` (in place): a
  `QuantizedKernel`, or the kernel cast to a float dtype ("" leaves it)."""
  if base_dtype in QUANTIZED:
    dense.kernel = QuantizedKernel(dense.kernel, base_dtype)
  elif base_dtype:
    dense.kernel.set_value(dense.kernel[...].astype(base_dtype))


def kernel_value(dense) -> jax.Array:
  """`dense`'s [in, out] kernel as an array, dequantized if stored
  quantized."""
  if isinstance(dense.kernel, QuantizedKernel):
    return dense.kernel.value()
  return dense.kernel[...]


def dequantized(state):
  """An `nnx.Param` state with each `QuantizedKernel`'s ("...", "kernel",
  "qvalue" | "scale") pair replaced by the plain ("...", "kernel") it
  stores, in the scale's dtype and with the kernel's logical axes (a plain
  model's state when the adapters are left out)."""
  flat = dict(nnx.to_flat_state(state))
  out = {}
  for path, var in flat.items():
    if path[-2:] == ("kernel", "scale"):
      continue
    if path[-2:] == ("kernel", "qvalue"):
      scale = flat[path[:-1] + ("scale",)][...]
      var = var.replace(dequantize(var[...], scale, scale.dtype))
      path = path[:-1]
    out[path] = var
  return nnx.from_flat_state(out)
