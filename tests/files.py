"""Small file helpers shared by the tests of the commands that write pictures and videos."""

from pathlib import Path

import cv2
import numpy as np

KNOWN = b"an earlier result that must survive\n"
"""Content of a file that a refused command must leave as it was."""


def read_png(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB."""
    image = cv2.imread(str(path))
    assert image is not None, f"{path} is not a PNG"
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
