"""What changes with the training step: the image resolution (progressive: low first, full at the end) and the
learning rates (exponential decay)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ScheduleConfig:
    """Steps and resolutions."""

    iterations: int = 2000
    resolutions: tuple[int, ...] = (64, 128)
    """Image sizes, low to high; the last is the avatar's training resolution."""
    resolution_starts: tuple[float, ...] = (0.0, 0.3)
    """Fraction of the run at which each resolution begins."""
    final_lr_factor: float = 0.1
    """Learning rates decay exponentially to this fraction of their start."""

    def __post_init__(self) -> None:
        if len(self.resolutions) != len(self.resolution_starts):
            raise ValueError("resolutions and resolution_starts must have the same length")
        if list(self.resolution_starts) != sorted(self.resolution_starts) or self.resolution_starts[0] != 0.0:
            raise ValueError("resolution_starts must increase from 0.0")


def resolution_at(step: int, config: ScheduleConfig) -> int:
    """The image size used at ``step``."""
    fraction = step / max(config.iterations, 1)
    size = config.resolutions[0]
    for start, candidate in zip(config.resolution_starts, config.resolutions):
        if fraction >= start:
            size = candidate
    return size


def lr_factor_at(step: int, config: ScheduleConfig) -> float:
    """Multiplier of every learning rate at ``step`` (1 at the start, ``final_lr_factor`` at the end)."""
    return config.final_lr_factor ** (min(step, config.iterations) / max(config.iterations, 1))
