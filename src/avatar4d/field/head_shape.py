"""A coarse head-shape prior built from the subject's own landmark template (no licensed head model): an ellipsoid
for the cranium, placed behind the face, whose inner core is surely inside the head.

A monocular video that barely turns the head says nothing about the sides and back of the skull; the core gives the
field something solid there (the training loss pushes its density up), so that views beyond the video's turn show a
head rather than the background through it. Head frame (``avatar4d.tracking.face_model``): x across the face, y up,
z out of the face toward the camera, metres.

Proportions (rough adult head proportions, chosen by hand and not fitted to any data, as ratios of what the
landmarks measure): the cranium's breadth is the template's width
(its outermost landmarks sit by the ears), its length 1.15 times its breadth (a cephalic index of 0.87), its top
1.8 times the forehead landmark's height above the eyes; its front is as far forward as the forehead landmark.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from avatar4d.tracking import landmarks as lm

LENGTH_PER_BREADTH = 1.15
TOP_PER_FOREHEAD = 1.8
CENTRE_PER_FOREHEAD = 0.2
"""The cranium's centre sits this share of the forehead's height above the eyes."""
CORE_SCALE = 0.85
"""The core is the cranium shrunk by this factor ..."""
CORE_MARGIN = 0.15
"""... or more, so that every landmark lies at least this far (in units of the radii) outside it."""


@dataclass(frozen=True)
class Ellipsoid:
    """An axis-aligned ellipsoid in the head frame, metres."""

    centre: tuple[float, float, float]
    radii: tuple[float, float, float]

    def radius_of(self, points: np.ndarray) -> np.ndarray:
        """(N,) normalised radius of (N, 3) points: below 1 inside, 1 on the surface."""
        return np.linalg.norm((np.asarray(points) - np.array(self.centre)) / np.array(self.radii), axis=-1)

    def scaled(self, factor: float) -> Ellipsoid:
        """The same ellipsoid with its radii times ``factor``."""
        return Ellipsoid(self.centre, tuple(float(r * factor) for r in self.radii))

    def sample(self, count: int, generator: torch.Generator) -> Tensor:
        """(count, 3) float32 points drawn uniformly inside."""
        direction = torch.nn.functional.normalize(torch.randn(count, 3, generator=generator), dim=-1)
        radius = torch.rand(count, 1, generator=generator) ** (1.0 / 3.0)
        return torch.tensor(self.centre) + direction * radius * torch.tensor(self.radii)


def cranium(template: np.ndarray) -> Ellipsoid:
    """The cranium's ellipsoid from a (L, 3) landmark template (head frame, metres)."""
    template = np.asarray(template, dtype=np.float64)
    low, high = template.min(0), template.max(0)
    breadth = high[0] - low[0]
    eyes_y = template[list(lm.RIGHT_EYE_CORNERS + lm.LEFT_EYE_CORNERS), 1].mean()
    forehead = template[lm.FOREHEAD]
    rise = forehead[1] - eyes_y
    half_length = LENGTH_PER_BREADTH * breadth / 2.0
    centre_y = eyes_y + CENTRE_PER_FOREHEAD * rise
    return Ellipsoid(centre=(float((low[0] + high[0]) / 2.0), float(centre_y), float(forehead[2] - half_length)),
                     radii=(float(breadth / 2.0), float(eyes_y + TOP_PER_FOREHEAD * rise - centre_y),
                            float(half_length)))


def head_core(template: np.ndarray) -> Ellipsoid:
    """The part of :func:`cranium` that is surely inside the head: shrunk by :data:`CORE_SCALE`, or further so that
    no landmark of the (L, 3) template is within :data:`CORE_MARGIN` of it (the face is never inside the core)."""
    shape = cranium(template)
    return shape.scaled(min(CORE_SCALE, float(shape.radius_of(template).min()) - CORE_MARGIN))
