"""Effective settings of a stand-in command: command line, config files, environment, defaults.

Built the way K3s builds them (pkg/configfilearg): config keys become `--key=value` arguments
inserted before the command line, so the command line wins; every flag and key is checked
against flags.json first.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pcloud.backend.k3s import flags, yamlish

EXIT_USAGE = 1
EXIT_NOT_EMULATED = 3


class Usage(Exception):
    """A command-line or config error: printed like urfave/cli prints it, exit 1."""


def read_config(path: str) -> dict[str, Any]:
    """The main config file then its drop-ins (`<path>.d/*.yaml|yml`), merged as K3s does."""
    docs: list[dict[str, Any]] = []
    main = Path(path)
    if main.is_file():
        docs.append(_load(main))
    dropins = main.parent / (main.name + ".d")
    if dropins.is_dir():
        for p in sorted(dropins.iterdir()):
            if p.is_file() and p.suffix.lower() in (".yaml", ".yml"):
                docs.append(_load(p))
    return flags.merge_config(docs)


def _load(path: Path) -> dict[str, Any]:
    try:
        return dict(yamlish.load_flat(path.read_text()))
    except yamlish.YamlError as exc:
        raise Usage(f"{path}: {exc}") from None


class Settings:
    """Effective flag values: command line > config > environment > default (K3s's order)."""

    def __init__(self, command: str, parsed: flags.ParsedArgs) -> None:
        self.command = command
        self.parsed = parsed
        self.table = flags.table(command)

    def get(self, name: str) -> str | None:
        value = self.parsed.last(name)
        if value is not None:
            return value
        f = self.table.lookup(name)
        if f is None:
            return None
        if f.env and os.environ.get(f.env):
            return os.environ[f.env]
        return None if f.default is None else str(f.default)

    def all(self, name: str) -> list[str]:
        return self.parsed.all(name)

    def flag(self, name: str) -> bool:
        return (self.get(name) or "false").lower() in ("true", "1", "t")


def parse_command(command: str, args: Sequence[str], *, global_data_dir: str | None) -> Settings:
    """Validate the command line, fold in the config files, validate everything together."""
    try:
        cmdline = flags.parse_args(command, args)
        config_path = (
            os.environ.get("K3S_CONFIG_FILE")
            or cmdline.last("config")
            or "/etc/rancher/k3s/config.yaml"
        )
        config = read_config(config_path)
        # K3s skips unknown keys for etcd-snapshot (it shares the server's file); for server
        # and agent the stand-in refuses them, see flags.py.
        cfg_args = flags.config_args(
            command, config, skip_unknown=command.startswith("etcd-snapshot")
        )
        pre = [f"--data-dir={global_data_dir}"] if global_data_dir else []
        parsed = flags.validate_argv(command, [*pre, *cfg_args, *cmdline.values_as_args()])
    except flags.FlagError as exc:
        raise Usage(str(exc)) from None
    return Settings(command, parsed)
