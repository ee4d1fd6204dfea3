"""A short-trained avatar for the viewer's tests (once per session), and a headless Chromium when one can be found."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from avatar4d.viewer.browser import CHROMIUM, CHROMIUM_ARGS


@pytest.fixture(scope="session")
def viewer_avatar(tmp_path_factory: pytest.TempPathFactory, prepared_dataset: Path) -> Path:
    """An avatar trained for 150 steps at 64 px on the sample clip: blurry, but its expressions change the face."""
    from avatar4d.training import presets
    from avatar4d.training.trainer import train

    out = tmp_path_factory.mktemp("viewer") / "avatar"
    config = dataclasses.replace(presets.get("preview", iterations=150, image_size=64), evaluations=1)
    train(prepared_dataset, out, config)
    return out


@pytest.fixture(scope="session")
def avatar_without_dataset(tmp_path_factory: pytest.TempPathFactory, viewer_avatar: Path) -> Path:
    """The same avatar, its config naming a dataset folder that does not exist."""
    import json

    out = tmp_path_factory.mktemp("viewer_nodata") / "avatar"
    shutil.copytree(viewer_avatar, out, ignore=shutil.ignore_patterns("viewer"))
    config = json.loads((out / "config.json").read_text())
    config["dataset"] = str(out.parent / "gone")
    (out / "config.json").write_text(json.dumps(config))
    return out


@pytest.fixture(scope="session")
def chromium():
    """Debian's Chromium driven by Playwright (no downloaded browser); skips where it cannot be found or started."""
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: install Debian's `chromium` package (.ci/run does, as root)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as error:
        pytest.skip(f"Playwright is not installed ({error}); `pip install -e .[test]`")
    playwright = sync_playwright().start()
    try:
        # Playwright gives every launch a new, empty profile (--user-data-dir) of its own
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    except Exception as error:  # noqa: BLE001 (any launch failure means: no browser on this machine)
        playwright.stop()
        pytest.skip(f"Chromium at {CHROMIUM} cannot be started by Playwright: {error}")
    yield browser
    browser.close()
    playwright.stop()
