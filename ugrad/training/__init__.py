"""Training: the loop and what each kind of run adds to it.

* `trainer`: `Trainer`, the one owner of a run's state and its loop
  (update, metrics, gradient log, checkpoints, hooks).
* `learner`: the `Learner` protocol a run kind implements.
* `update`: coefficient -> unified loss -> grads -> optimizer, jitted.
* `policy_learner`, `reward_models`: the policy's and the reward model's
  learners; `reward_labels` the Math-Shepherd labels the latter trains on.
* `build`, `validate`, `runs`: objects from a config, start-up checks, the
  workdir's artifacts; `iterative`: iterative RL as a trainer hook.
"""
