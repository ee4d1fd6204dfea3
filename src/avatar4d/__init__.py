"""avatar4d: a short phone video of a face -> an animatable 4D head avatar.

The library API that the ``avatar4d`` command calls (imported lazily, so ``import avatar4d`` is cheap)::

    import avatar4d
    avatar4d.prepare("selfie.mp4", "dataset")                 # track: frames, masks, poses, expression codes
    avatar4d.train("dataset", "avatar")                       # radiance field (preview preset on a CPU)
    avatar4d.evaluate("avatar")                               # held-out PSNR / SSIM / L1 / LPIPS
    avatar4d.render_orbit("avatar", "orbit.mp4")              # novel views
    avatar4d.render_edit("avatar", "smile.png", expression="smile=1")
    avatar4d.reenact("avatar", "driver.mp4", "reenact.mp4")   # another person drives the avatar
    avatar4d.export_mesh("avatar", "head.ply")                # marching cubes of the density
    avatar4d.run_batch("videos/", "runs/")                    # many videos, each into runs/NAME/, summary.csv
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {
    "prepare": "avatar4d.preparation.prepare",
    "train": "avatar4d.training.trainer",
    "evaluate": "avatar4d.evaluation.evaluate",
    "render_orbit": "avatar4d.novel_views",
    "render_edit": "avatar4d.novel_views",
    "reenact": "avatar4d.reenact.reenact",
    "export_mesh": "avatar4d.mesh",
    "export_nerface": "avatar4d.dataset.nerface_format",
    "load_avatar": "avatar4d.avatar",
    "load_dataset": "avatar4d.dataset.layout",
    "serve_viewer": "avatar4d.viewer.server",
    "run_demo": "avatar4d.demo",
    "run_batch": "avatar4d.batch.run",
}

__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'avatar4d' has no attribute {name!r}")
