"""The radiance field: canonical and expression feature grids, the tiny decoder MLP, the head field."""
