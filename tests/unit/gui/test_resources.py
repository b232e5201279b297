"""Our icons exist for every state and render at tray sizes; the XDG entries say what they must."""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest
from PySide6.QtGui import QColor

from pcloud.gui.format import STATE_ICONS
from pcloud.gui.icons import icon_path, named_icon, state_icon

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("name", [*sorted(set(STATE_ICONS.values())), "app"])
@pytest.mark.parametrize("size", [16, 22, 32, 64])
def test_icons_render(name: str, size: int) -> None:
    assert icon_path(name).exists()
    image = named_icon(name).pixmap(size, size).toImage()
    assert image.width() == size
    opaque = sum(QColor(image.pixel(x, y)).alpha() > 0 for x in range(size) for y in range(size))
    assert opaque > size * size // 8  # a visible picture, not an empty square


def test_each_state_has_its_own_picture() -> None:
    states = ["Running", "Starting", "Stopped", "NeedsLogin", "Error"]
    keys = {state_icon(s).cacheKey() for s in states}
    assert len(keys) == len(states)
    assert state_icon("Stopped", busy=True).cacheKey() == state_icon("Starting").cacheKey()


def desktop_entry(name: str) -> dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read(ROOT / "packaging" / "xdg" / name)
    return dict(parser["Desktop Entry"])


def test_desktop_files() -> None:
    launcher = desktop_entry("pcloud.desktop")
    assert launcher["Exec"] == "pcloud-gui" and launcher["Icon"] == "pcloud"
    assert launcher["Type"] == "Application" and launcher["Terminal"] == "false"
    autostart = desktop_entry("pcloud-gui-autostart.desktop")
    assert autostart["Exec"] == "pcloud-gui --hidden" and autostart["NoDisplay"] == "true"
    assert autostart["TryExec"] == "pcloud-gui"
