"""What a run kind provides to the trainer: the `Learner` protocol.

The `ugrad.training.trainer.Trainer` owns a run's state (the checkpointed
pytree), its phase clock and its loop. A learner holds none of the state:
it is built from the `RunContext`, each method receives the state it
reads, and a method that changes the state returns the new one.
`PolicyLearner` (`ugrad.training.policy_learner`) and `RewardModelLearner`
(`ugrad.training.reward_models`) implement it.

Hooks (`Hook`) run before each step's clock starts; what they change in
the run reaches the learner through the trainer (`HookResult`).
"""

import dataclasses
from typing import Any, Callable, Optional, Protocol

from ugrad.runtime import distributed

# The config fields of the learned reward models a policy run scores with.
REWARD_MODEL_FIELDS = ("reward_model", "process_reward_model")


@dataclasses.dataclass(frozen=True)
class RunContext:
  """What a run is built on; the trainer makes it once, before the state.

  Attributes:
    config: the run's config.
    workdir: the run's directory (resolved).
    task: the task; its tokenizer is the policy's.
    mesh: the run's `build.Mesh`.
    policy: the `build.Policy` (graph, model config, tokenizer).
    init_params: the policy's initial parameters, on the mesh (the
      sampler of a frozen source, the first reference, a critic's and a
      reward model's backbone); never donated.
    prompt_len: P, the longest encoded prompt of the task.
    max_new: N, the completion budget (`config.sampling.max_new_tokens`).
  """

  config: Any
  workdir: str
  task: Any
  mesh: Any
  policy: Any
  init_params: Any
  prompt_len: int
  max_new: int

  def device_batch(self, rollout):
    """A host rollout (the same on every process) on the mesh, rows over
    the batch axes; each process puts only its own shards."""
    return distributed.put_global(rollout, self.mesh.batch)


@dataclasses.dataclass(frozen=True)
class HookResult:
  """What a hook reports before a step.

  Attributes:
    metrics: logged with the step.
    reward_models: {field of `REWARD_MODEL_FIELDS`: workdir} to score with
      from this step on (`Learner.use_reward_models`); None leaves the
      rewards as they are.
  """

  metrics: dict = dataclasses.field(default_factory=dict)
  reward_models: Optional[dict] = None


# Called before each step's clock starts: hook(context, state, step).
Hook = Callable[[RunContext, dict, int], HookResult]


class Learner(Protocol):
  """A run kind: what it trains, on what data, and how it is judged.

  `state` is the trainer's: "params" and "opt_state" of the trained model
  and the extras of `init_state`.
  """

  chunk: int  # rows that stay together in a minibatch (a group, a pair)
  # Parameters the loss reads but the run does not train (a LoRA base,
  # `update.make_update`'s `frozen`), or None.
  frozen: Any

  def init_state(self) -> dict:
    """The initial state but "opt_state": "params" (a copy the update may
    donate) and the learner's checkpointed extras."""

  def loss_fn(self) -> Callable:
    """The `update.LossFn` of the trained model."""

  def draw(self, state: dict, step: int) -> Any:
    """The "sample" phase: the step's `sources.Batch`, scored."""

  def prepare(self, state: dict, batch, step: int) -> Any:
    """The "prepare" phase: the batch as the `Rollout` the update reads,
    host arrays, with what the loss needs beyond the draw."""

  def after_update(self, state: dict, minibatch) -> tuple[dict, dict]:
    """(the state, metrics) after the update on `minibatch`."""

  def after_step(self, state: dict, step: int) -> dict:
    """The state at the end of step `step`."""

  def batch_stats(self, batch) -> dict:
    """Metrics of the step's batch."""

  def use_reward_models(self, dirs: dict) -> None:
    """Scores with the learned reward models in `dirs` from now on (see
    `HookResult.reward_models`)."""

  def evaluate(self, params, num_questions: Optional[int] = None) -> dict:
    """The held-out evaluation of `params`."""

  def periodic_evaluation(self, state: dict) -> dict:
    """Metrics of the evaluation every `config.eval_every` steps."""

  def save(self, workdir: str, state: dict) -> None:
    """Saves the trained model in `workdir` (for `init_from`)."""
