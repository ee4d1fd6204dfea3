"""Self-reenactment scored against ground truth: drive an avatar with its own source video through ``reenact``'s path
(re-tracked, a face model of its own, transfer relative to its mean face and pose) and score the held-out frames,
next to ``avatar4d evaluate``'s score with the dataset's own tracking.

    python benchmarks/self_reenactment.py AVATAR DATASET VIDEO
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import torch


def main(avatar_dir: Path, dataset_dir: Path, video: Path) -> dict:
    from avatar4d.dataset.layout import load_dataset
    from avatar4d.evaluation.evaluate import score
    from avatar4d.reenact.reenact import drive

    torch.set_num_threads(1)
    avatar, _, result = drive(avatar_dir, video)
    dataset = load_dataset(dataset_dir)
    position = {int(f): i for i, f in enumerate(result.source_frames)}
    size = avatar.image_size
    rows = []
    for index in dataset.heldout_indices:
        p = position[int(dataset.tracking.source_frames[index])]
        truth = cv2.resize(dataset.load_frame(int(index)), (size, size), interpolation=cv2.INTER_AREA)
        face = cv2.resize(dataset.load_face_mask(int(index)), (size, size), interpolation=cv2.INTER_AREA) > 127
        render = avatar.render(result.camera_from_head[p], result.codes[p], size=size).rgb
        rows.append(score(render.reshape(size, size, 3).clamp(0, 1), torch.from_numpy(truth.astype(np.float32) / 255),
                          torch.from_numpy(face)))
    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    print("SELF", json.dumps(mean))
    return mean


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    main(*map(Path, sys.argv[1:4]))
