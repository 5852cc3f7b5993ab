"""W-REINFORCE written outside ugrad: one coefficient function, registered
with its own (token) normaliser by the config that uses it."""
