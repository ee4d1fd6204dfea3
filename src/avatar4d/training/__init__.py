"""Training: losses, schedule, checkpoints, presets, the trainer."""
