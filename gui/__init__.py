"""PCloud tray app: a PySide6 front end that speaks only the backend's local API."""
