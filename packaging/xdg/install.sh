#!/bin/sh
# Installs the tray app's desktop integration: launcher, autostart entry and icons (hicolor).
#   packaging/xdg/install.sh [PREFIX] [SYSCONFDIR]     (defaults: /usr/local, /etc)
# PNG sizes are rendered from our SVGs with PySide6 when the Python given in $PYTHON (default
# python3) can import it; the scalable SVGs alone already work on current desktops.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
icons="$here/../../resources/icons"
prefix=${1:-/usr/local}
sysconf=${2:-/etc}
python=${PYTHON:-python3}
hicolor="$prefix/share/icons/hicolor"

install -D -m 0644 "$here/pcloud.desktop" "$prefix/share/applications/pcloud.desktop"
install -D -m 0644 "$here/pcloud-gui-autostart.desktop" "$sysconf/xdg/autostart/pcloud-gui.desktop"
install -D -m 0644 "$icons/pcloud.svg" "$hicolor/scalable/apps/pcloud.svg"
for state in connected unreachable disconnected needs-login working error; do
    install -D -m 0644 "$icons/pcloud-$state.svg" "$hicolor/scalable/status/pcloud-$state.svg"
done

if "$python" -c "import PySide6.QtSvg" 2>/dev/null; then
    QT_QPA_PLATFORM=offscreen "$python" - "$icons/pcloud.svg" "$hicolor" <<'PY'
import sys
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication, QImage, QPainter
from PySide6.QtSvg import QSvgRenderer

app = QGuiApplication(sys.argv[:1])
svg, root = QSvgRenderer(sys.argv[1]), Path(sys.argv[2])
for size in (16, 22, 24, 32, 48, 64, 128, 256):
    image = QImage(size, size, QImage.Format.Format_ARGB32)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    svg.render(painter)
    painter.end()
    target = root / f"{size}x{size}" / "apps" / "pcloud.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    image.save(str(target))
PY
fi
if command -v gtk-update-icon-cache >/dev/null 2>&1; then
    gtk-update-icon-cache -q -t -f "$hicolor" || true
fi
if command -v update-desktop-database >/dev/null 2>&1; then
    update-desktop-database -q "$prefix/share/applications" || true
fi
