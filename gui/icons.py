"""Maps a backend state to its tray picture (our SVGs in resources/icons) and draws status dots.

The SVGs ship in the distribution (`pcloud.resources`, resources/ in the source tree); the icon
theme where packaging/ installs them (hicolor) is the fallback.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QIcon, QPainter, QPixmap

from pcloud.gui.format import STATE_ICONS, UNREACHABLE_ICON

# The icons ship inside the distribution as pcloud.resources (resources/ in the source tree).
ICON_DIR = Path(str(files("pcloud.resources") / "icons"))

ONLINE_COLOR = "#2da44e"
OFFLINE_COLOR = "#8c959f"


def icon_path(name: str) -> Path:
    return ICON_DIR / f"pcloud-{name}.svg" if name != "app" else ICON_DIR / "pcloud.svg"


@cache
def named_icon(name: str) -> QIcon:
    """`connected`, `disconnected`, `needs-login`, `working`, `error` or `app`."""
    path = icon_path(name)
    if path.exists():
        return QIcon(str(path))
    theme_name = "pcloud" if name == "app" else f"pcloud-{name}"
    return QIcon.fromTheme(theme_name)


def state_icon(state: str | None, *, busy: bool = False) -> QIcon:
    """The tray picture for a state (or `format.icon_key`'s UNREACHABLE_ICON); `None` (backend
    unavailable) shows the error picture."""
    if busy:
        return named_icon("working")
    if state is None:
        return named_icon("error")
    if state == UNREACHABLE_ICON:
        return named_icon(UNREACHABLE_ICON)
    return named_icon(STATE_ICONS.get(state, "error"))


@cache
def dot_icon(online: bool, size: int = 12) -> QIcon:
    """A filled circle: green for an online peer, grey for an offline one."""
    pixmap = QPixmap(size, size)
    pixmap.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setPen(Qt.PenStyle.NoPen)
    painter.setBrush(QColor(ONLINE_COLOR if online else OFFLINE_COLOR))
    painter.drawEllipse(1, 1, size - 2, size - 2)
    painter.end()
    return QIcon(pixmap)
