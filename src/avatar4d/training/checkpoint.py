"""Training checkpoints in safetensors (no pickle), written atomically, with everything needed to resume a killed
run to the same result as an unbroken one: model, optimizer moments, occupancy, random generator state, step."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from avatar4d.atomic import atomic_file
from avatar4d.errors import AvatarError


@dataclass
class TrainingState:
    """The resumable state of a run, apart from the modules themselves."""

    step: int
    generator_state: torch.Tensor
    """uint8 state of the run's torch.Generator."""
    log: list[dict]
    """One entry per logged step (loss, PSNR, time...)."""
    elapsed_s: float
    """Training seconds before this checkpoint (over all resumed sessions)."""


def save_checkpoint(path: Path, modules: dict[str, torch.nn.Module], optimizer: torch.optim.Optimizer,
                    state: TrainingState, config: dict) -> None:
    """Write modules' state dicts, the optimizer's moments and the training state to one safetensors file."""
    tensors: dict[str, torch.Tensor] = {}
    for name, module in modules.items():
        for key, value in module.state_dict().items():
            tensors[f"{name}.{key}"] = value.detach().contiguous().cpu()
    optimizer_state = optimizer.state_dict()
    for index, param_state in optimizer_state["state"].items():
        for key, value in param_state.items():
            tensors[f"optimizer.{index}.{key}"] = torch.as_tensor(value).detach().contiguous().cpu()
    tensors["generator_state"] = state.generator_state.contiguous()
    metadata = {
        "format": "avatar4d.checkpoint",
        "version": "1",
        "step": str(state.step),
        "elapsed_s": repr(state.elapsed_s),
        "log": json.dumps(state.log),
        "param_groups": json.dumps(optimizer_state["param_groups"]),
        "config": json.dumps(config),
    }
    with atomic_file(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def read_checkpoint_config(path: Path) -> dict:
    """The training configuration a checkpoint was written with.

    Raises:
        AvatarError: the file cannot be read or is not a checkpoint of this version.
    """
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (OSError, ValueError, SafetensorError) as error:
        raise AvatarError(f"cannot read the checkpoint {path} ({error}); start without --resume") from error
    if metadata.get("format") != "avatar4d.checkpoint" or metadata.get("version") != "1" or "config" not in metadata:
        raise AvatarError(f"{path} is not an avatar4d checkpoint of this version")
    return json.loads(metadata["config"])


def load_checkpoint(path: Path, modules: dict[str, torch.nn.Module], optimizer: torch.optim.Optimizer) -> TrainingState:
    """Restore modules and optimizer in place; return the training state.

    Raises:
        AvatarError: the file is not a checkpoint of this version or does not match the modules.
    """
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            if metadata.get("format") != "avatar4d.checkpoint" or metadata.get("version") != "1":
                raise AvatarError(f"{path} is not an avatar4d checkpoint of this version")
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (OSError, ValueError, SafetensorError) as error:
        raise AvatarError(f"cannot read the checkpoint {path} ({error}); start without --resume") from error
    for name, module in modules.items():
        prefix = f"{name}."
        module_state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        try:
            module.load_state_dict(module_state, strict=True)
        except RuntimeError as error:
            raise AvatarError(f"the checkpoint {path} does not match this model ({error}); start without --resume") \
                from error
    param_groups = json.loads(metadata["param_groups"])
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": param_groups})
    return TrainingState(step=int(metadata["step"]), generator_state=tensors["generator_state"],
                         log=json.loads(metadata["log"]), elapsed_s=float(metadata["elapsed_s"]))
