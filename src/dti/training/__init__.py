"""Learning a word: settings, photos, the loop and its callbacks, the run session (train, resume, lock,
run folder, checkpoints), many subjects at once, data-parallel runs, memory hooks, sweeps."""
