"""The training curve a person looks at: loss and PSNR (training batches and held-out probe) over training time."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the file-only backend)

from avatar4d.atomic import atomic_file  # noqa: E402


def plot_training_curve(log: list[dict], path: Path) -> None:
    steps = [e for e in log if "psnr" in e]
    held = [e for e in log if "heldout_psnr" in e]
    fig, (ax_loss, ax_psnr) = plt.subplots(1, 2, figsize=(11, 4))
    ax_loss.semilogy([e["time_s"] for e in steps], [e["total"] for e in steps], label="total loss")
    ax_loss.semilogy([e["time_s"] for e in steps], [e["rgb"] for e in steps], label="colour MSE")
    ax_loss.set_xlabel("training time (s)")
    ax_loss.legend()
    ax_loss.grid(alpha=0.3)
    ax_psnr.plot([e["time_s"] for e in steps], [e["psnr"] for e in steps], alpha=0.5, label="train batch PSNR")
    ax_psnr.plot([e["time_s"] for e in held], [e["heldout_psnr"] for e in held], "o-", label="held-out PSNR")
    ax_psnr.set_xlabel("training time (s)")
    ax_psnr.set_ylabel("dB")
    ax_psnr.legend()
    ax_psnr.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
