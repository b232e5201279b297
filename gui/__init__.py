"""PCloud tray app: a PySide6 front end that speaks only the backend's local API.

Importing the package first repairs PySide6's `emit()` reference bug (see `qtfix`), before any
module of the app can emit a signal.
"""

from pcloud.gui.qtfix import repair_signal_emit

repair_signal_emit()
