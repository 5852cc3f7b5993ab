"""ugrad: every post-training method is one gradient coefficient."""

from ugrad.loss import unified_loss
from ugrad.rollout import Rollout

__all__ = ["Rollout", "unified_loss"]
