"""What a person looks at to check tracking: landmarks, head axes and mask drawn on every frame (mp4), and the pose
angles, expression codes and errors over time (PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from avatar4d.atomic import atomic_file
from avatar4d.geometry.rigid import transform_points
from avatar4d.progress import Progress
from avatar4d.tracking.head_pose import head_angles_deg, project_template
from avatar4d.video.write import Mp4Writer

if TYPE_CHECKING:
    from avatar4d.dataset.layout import PreparedDataset


def draw_tracking(image: np.ndarray, person: np.ndarray, landmarks_px: np.ndarray, model_px: np.ndarray,
                  camera_from_head: np.ndarray, camera_matrix: np.ndarray, *, axis_length_m: float = 0.06,
                  label: str = "", flagged: bool = False) -> np.ndarray:
    """One overlay frame.

    Args:
        image: (H, W, 3) uint8 RGB crop.
        person: (H, W) uint8 person probability.
        landmarks_px: (L, 2+) tracked landmarks (green).
        model_px: (L, 2) the face model (template + expression code) projected with the head pose (red).
        camera_from_head: (4, 4) head pose; its axes are drawn from the head origin (x red, y green, z blue).

    Returns:
        (H, W, 3) uint8 RGB.
    """
    out = image.copy()
    background = person < 128
    out[background] = (0.55 * out[background] + 0.45 * np.array([40, 60, 160])).astype(np.uint8)
    contours, _ = cv2.findContours((person >= 128).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(out, contours, -1, (255, 255, 255), 1, cv2.LINE_AA)
    scale = image.shape[0] / 512.0
    radius = max(1, int(round(1.2 * scale)))
    for x, y in model_px[:, :2]:
        cv2.circle(out, (int(round(x)), int(round(y))), radius, (255, 60, 60), -1, cv2.LINE_AA)
    for x, y in landmarks_px[:, :2]:
        cv2.circle(out, (int(round(x)), int(round(y))), radius, (60, 255, 60), -1, cv2.LINE_AA)
    axes_head = np.array([[0, 0, 0], [axis_length_m, 0, 0], [0, axis_length_m, 0], [0, 0, axis_length_m]], float)
    axes_camera = transform_points(camera_from_head, axes_head)
    if (axes_camera[:, 2] > 1e-3).all():
        projected = axes_camera[:, :2] / axes_camera[:, 2:3] * np.diag(camera_matrix)[:2] + camera_matrix[:2, 2]
        origin = tuple(int(round(v)) for v in projected[0])
        for end, color in zip(projected[1:], [(255, 0, 0), (0, 255, 0), (0, 128, 255)]):
            cv2.line(out, origin, tuple(int(round(v)) for v in end), color, max(1, int(2 * scale)), cv2.LINE_AA)
    if label:
        cv2.putText(out, label, (6, int(18 * scale) + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.45 * scale + 0.1,
                    (255, 80, 80) if flagged else (255, 255, 255), 1, cv2.LINE_AA)
    return out


def write_overlay_video(dataset: PreparedDataset, path: Path, fps: float) -> None:
    """Draw the tracking on every kept frame and encode it as an H.264 mp4."""
    tracking = dataset.tracking
    model_points = dataset.face_model.landmarks(tracking.expression.astype(np.float64))
    angles = head_angles_deg(tracking.camera_from_head)
    heldout_start = int(dataset.heldout_indices[0]) if len(dataset.heldout_indices) else tracking.num_frames
    with Mp4Writer(path, fps, crf=23) as writer, Progress("overlay", tracking.num_frames, "frames") as progress:
        for i in range(tracking.num_frames):
            pose = tracking.camera_from_head[i]
            model_px = project_template(model_points[i], pose, dataset.camera)
            yaw, pitch, roll = angles[i]
            split = "held-out" if i >= heldout_start else "train"
            label = (f"#{i} src {tracking.source_frames[i]} {split}  yaw {yaw:+.0f} pitch {pitch:+.0f} roll {roll:+.0f}"
                     f"  err {tracking.reprojection_error_px[i]:.1f}px" + ("  FLAGGED" if tracking.flagged[i] else ""))
            frame = draw_tracking(dataset.load_frame(i), dataset.load_person_mask(i), tracking.landmarks[i],
                                  model_px, pose, dataset.camera.matrix, label=label, flagged=bool(tracking.flagged[i]))
            writer.write(frame)
            progress.update()


def write_tracking_plot(dataset: PreparedDataset, path: Path, num_components: int = 4) -> None:
    """Head angles, the first expression components and the re-projection error against time (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tracking = dataset.tracking
    t = tracking.times_s
    angles = head_angles_deg(tracking.camera_from_head)
    raw_angles = head_angles_deg(tracking.raw_camera_from_head)
    fig, axes = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    for k, (name, color) in enumerate(zip(("yaw", "pitch", "roll"), ("C0", "C1", "C2"))):
        axes[0].plot(t, raw_angles[:, k], color=color, alpha=0.3, linewidth=0.8)
        axes[0].plot(t, angles[:, k], color=color, label=f"{name} (smoothed; faint: raw)")
    axes[0].set_ylabel("head angle (deg)")
    evr = dataset.face_model.basis.explained_variance_ratio
    for k in range(min(num_components, tracking.expression.shape[1])):
        axes[1].plot(t, tracking.expression[:, k], label=f"e{k} ({100 * evr[k]:.0f}% var)")
    axes[1].set_ylabel("expression code")
    axes[2].plot(t, tracking.reprojection_error_px, color="k", label="re-projection error of rigid points")
    if tracking.flagged.any():
        axes[2].scatter(t[tracking.flagged], tracking.reprojection_error_px[tracking.flagged], color="r", zorder=3,
                        label="flagged (jump)")
    axes[2].set_ylabel("pixels")
    axes[2].set_xlabel("time (s)")
    if len(dataset.heldout_indices):
        for ax in axes:
            ax.axvspan(t[dataset.heldout_indices[0]], t[dataset.heldout_indices[-1]], color="0.85", zorder=0)
        axes[0].text(t[dataset.heldout_indices[0]], axes[0].get_ylim()[1], " held-out", va="top")
    for ax in axes:
        ax.legend(loc="upper left", fontsize=7, ncol=3)
        ax.grid(alpha=0.3)
    fig.suptitle(f"tracking of {Path(dataset.manifest['source']['path']).name}")
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
