"""Sampling: the KV-cache sampler and what is built on it.

* `sampler`: the batched sampler and `sample_prompts` (texts -> pack ->
  sample -> decode), the one loop that sources, evaluation, reward-model
  labelling and iterative RL use; its public names are re-exported here.
* `layout`: the fixed [B, P + N] packing of prompts and completions.
* `evaluation`: greedy accuracy and pass@k / maj@k sampling on held-out data.
* `stats`: pass@k, maj@k, bootstrap intervals, AUC.
"""

from ugrad.sampling.sampler import Completions
from ugrad.sampling.sampler import make_sampler
from ugrad.sampling.sampler import prompt_sharding
from ugrad.sampling.sampler import sample
from ugrad.sampling.sampler import sample_prompts
from ugrad.sampling.sampler import Sampler
from ugrad.sampling.sampler import Samples
from ugrad.sampling.sampler import SamplingConfig
from ugrad.sampling.sampler import truncate_logits

__all__ = [
    "Completions",
    "Sampler",
    "Samples",
    "SamplingConfig",
    "make_sampler",
    "prompt_sharding",
    "sample",
    "sample_prompts",
    "truncate_logits",
]
