"""Files shipped with PCloud: the tray icons (resources/icons) that the GUI loads at run time."""
