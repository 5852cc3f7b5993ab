"""Sampling: the KV-cache sampler and what is built on it.

* `sampler`: the batched KV-cache sampler; `prompts`: `sample_prompts`
  (texts -> pack -> sample -> decode), the one loop that sources,
  evaluation, reward-model labelling and iterative RL use; their public
  names are re-exported here.
* `episodes`: the multi-turn sampler of environment episodes.
* `layout`: the fixed [B, P + N] packing of prompts and completions.
* `evaluation`: greedy accuracy and pass@k / maj@k sampling on held-out data.
* `stats`: pass@k, maj@k, bootstrap intervals, AUC.
"""

from ugrad.sampling.episodes import episode_metrics
from ugrad.sampling.episodes import EpisodeCompletions
from ugrad.sampling.episodes import EpisodeSampler
from ugrad.sampling.episodes import EpisodeSpec
from ugrad.sampling.episodes import sample_episodes
from ugrad.sampling.prompts import Completions
from ugrad.sampling.prompts import make_sampler
from ugrad.sampling.prompts import prompt_sharding
from ugrad.sampling.prompts import sample_prompts
from ugrad.sampling.prompts import Sampler
from ugrad.sampling.sampler import sample
from ugrad.sampling.sampler import Samples
from ugrad.sampling.sampler import SamplingConfig
from ugrad.sampling.sampler import truncate_logits

__all__ = [
    "Completions",
    "EpisodeCompletions",
    "EpisodeSampler",
    "EpisodeSpec",
    "episode_metrics",
    "sample_episodes",
    "Sampler",
    "Samples",
    "SamplingConfig",
    "make_sampler",
    "prompt_sharding",
    "sample",
    "sample_prompts",
    "truncate_logits",
]
