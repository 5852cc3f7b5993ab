"""Which settings count as a change when a workdir resumes."""

import json

import ml_collections

from ugrad.training import config_identity


def _config(**fields):
  return ml_collections.ConfigDict(
      {"steps": 10, "optim": {"lr": 1e-4}, **fields}
  )


def test_a_changed_setting_is_named_and_budget_keys_are_exempt():
  stored = _config().to_json()
  assert not config_identity.config_changes(stored, _config(steps=20))
  changed = _config()
  changed.optim.lr = 1e-3
  changes = config_identity.config_changes(stored, changed)
  assert changes == {"optim.lr": (1e-4, 1e-3)}
  assert config_identity.describe_changes(changes) == (
      "optim.lr 0.0001 -> 0.001"
  )


def test_a_setting_added_since_the_run_started_counts_only_when_on():
  stored = _config().to_json()
  for off in (False, "", 0, None):
    assert not config_identity.config_changes(
        stored, _config(lora={"rank": off})
    )
  changes = config_identity.config_changes(stored, _config(lora={"rank": 8}))
  assert config_identity.describe_changes(changes) == "lora.rank absent -> 8"
  # A setting the code no longer has is a change.
  old = json.loads(_config(teacher="/t").to_json())
  changes = config_identity.config_changes(json.dumps(old), _config())
  assert config_identity.describe_changes(changes) == "teacher '/t' -> absent"


def test_remat_is_compared_as_it_resolves_on_this_host():
  """A run stored with remat "none" resumes under the default "auto" on a
  CPU, where auto is none; "full" is a change."""
  stored = _config(remat="none").to_json()
  assert not config_identity.config_changes(stored, _config(remat="auto"))
  changes = config_identity.config_changes(stored, _config(remat="full"))
  assert changes == {"remat": ("none", "full")}
