"""Procedural scenes and videos for training, tests and demos of the vision apps: bins over a
day, a food factory's clean zone, faces at a gate; :mod:`.synth` holds their camera effects."""
