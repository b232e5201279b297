"""The K3s command line as data: flag tables from flags.json and a parser that behaves like K3s's.

`flags.json` (shipped beside this module, a copy of the project's reference `k3s/flags.json`) is
the real flag list of the pinned K3s release. Both the driver (before it writes a config or a
command) and the stand-in `k3s` (when it starts) check every flag and config key against it, so
a flag that K3s removed, such as the seed's `--no-deploy`, can never reach a machine.

The parser follows urfave/cli v2 as K3s uses it: `--name=value`, `--name value`, `-name value`,
one-dash one-letter aliases, bool flags that take no separate value, parsing stops at the first
positional word, and an unknown flag is the usage error `flag provided but not defined: -NAME`.
Config files follow pkg/configfilearg: keys are flag names, lists repeat the flag, `key+` appends.
K3s's `server` skips unknown config keys with a warning; we refuse them for every command because
a key K3s silently ignores is a setting the driver believes in and the cluster does not have.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

FLAGS_PATH = Path(__file__).with_name("flags.json")

# Commands whose flags we know; "etcd-snapshot save" is a sub-subcommand.
COMMANDS = ("server", "agent", "etcd-snapshot", "etcd-snapshot save", "etcd-snapshot ls")


class FlagError(ValueError):
    """A flag, config key or value that K3s would refuse. `name` is the offending flag."""

    def __init__(self, message: str, name: str) -> None:
        super().__init__(message)
        self.name = name


class UnknownFlagError(FlagError):
    """K3s's own usage error, plus the replacement when flags.json records the flag as removed."""

    def __init__(self, name: str, hint: str = "") -> None:
        # Go's flag package prints one dash whatever the user typed.
        message = f"flag provided but not defined: -{name}"
        if hint:
            message += f" ({hint})"
        super().__init__(message, name)


@dataclass(frozen=True)
class Flag:
    """One flag of one command, as flags.json describes it."""

    name: str
    aliases: tuple[str, ...]
    type: str  # string, stringSlice, bool, int, duration
    env: str | None
    hidden: bool
    default: object = None

    @property
    def is_bool(self) -> bool:
        return self.type == "bool"

    @property
    def is_slice(self) -> bool:
        return self.type == "stringSlice"


@dataclass(frozen=True)
class FlagTable:
    """The flags of one command, reachable by long name or alias."""

    command: str
    flags: tuple[Flag, ...]
    by_name: Mapping[str, Flag] = field(repr=False)

    def lookup(self, name: str) -> Flag | None:
        return self.by_name.get(name)

    def names(self) -> set[str]:
        return {f.name for f in self.flags}


@dataclass
class ParsedArgs:
    """Flags in command-line order (canonical names) and the positional words after them."""

    values: list[tuple[Flag, str]]
    positional: list[str]

    def last(self, name: str) -> str | None:
        """The effective value of a scalar flag: the last one given wins, as in K3s."""
        found = [v for f, v in self.values if f.name == name]
        return found[-1] if found else None

    def all(self, name: str) -> list[str]:
        """Every value of a slice flag, split on commas where K3s itself splits them."""
        out: list[str] = []
        for f, v in self.values:
            if f.name != name:
                continue
            if name in _K3S_SPLITS:
                out.extend(p for p in v.split(",") if p)
            else:
                out.append(v)
        return out

    def values_as_args(self) -> list[str]:
        """The parsed flags back as `--name=value` arguments (canonical names)."""
        return [f"--{f.name}={v}" if len(f.name) > 1 else f"-{f.name}={v}" for f, v in self.values]

    def flag(self, name: str) -> bool:
        value = self.last(name)
        return value is not None and value.lower() in ("true", "1", "t")


# K3s splits these slice values on commas itself (urfave's splitting is disabled).
_K3S_SPLITS = {
    "tls-san",
    "cluster-cidr",
    "service-cidr",
    "cluster-dns",
    "disable",
    "node-external-ip",
    "node-ip",
}


@cache
def reference() -> dict[str, Any]:
    """The whole flags.json document (read once)."""
    data: dict[str, Any] = json.loads(FLAGS_PATH.read_text(encoding="utf-8"))
    return data


def _flag(raw: Mapping[str, Any]) -> Flag:
    return Flag(
        name=str(raw["name"]),
        aliases=tuple(str(a) for a in raw.get("aliases", ())),
        type=str(raw["type"]),
        env=raw.get("env"),
        hidden=bool(raw.get("hidden", False)),
        default=raw.get("default"),
    )


def _raw_flags(command: str) -> list[Mapping[str, Any]]:
    ref = reference()
    if command in ("server", "agent"):
        flags: list[Mapping[str, Any]] = ref[command]
        return flags
    if command == "global":
        globals_: list[Mapping[str, Any]] = ref["global_flags"]
        return globals_
    parent, _, sub = command.partition(" ")
    detail = ref["subcommand_details"].get(parent)
    if detail is None:
        raise KeyError(f"flags.json has no command {command!r}")
    if not sub:
        top: list[Mapping[str, Any]] = detail.get("flags", [])
        return top
    for entry in detail.get("subcommands", []):
        if entry["name"] == sub or sub in entry.get("aliases", []):
            subflags: list[Mapping[str, Any]] = entry.get("flags", [])
            return subflags
    raise KeyError(f"flags.json has no command {command!r}")


@cache
def table(command: str) -> FlagTable:
    """The flag table of `command` ("server", "agent", "global", "etcd-snapshot save", ...)."""
    flags = tuple(_flag(raw) for raw in _raw_flags(command))
    by_name: dict[str, Flag] = {}
    for f in flags:
        for n in (f.name, *f.aliases):
            by_name.setdefault(n, f)
    return FlagTable(command, flags, by_name)


def removed_hint(name: str) -> str:
    """What flags.json says replaced a removed flag, or "" if it was never a K3s flag."""
    for entry in reference()["removed"]:
        names = [n.strip() for n in str(entry["name"]).split("/")]
        if name in names and "kind" not in entry:
            replacement = entry.get("replacement")
            removed_in = entry.get("removed_in", "")
            use = f"; use --{replacement}" if replacement else ""
            return f"removed in K3s {removed_in}{use}".strip()
    return ""


def parse_args(command: str, args: Sequence[str]) -> ParsedArgs:
    """Parse `args` (what follows the subcommand word) the way K3s's urfave/cli does."""
    tab = table(command)
    values: list[tuple[Flag, str]] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            return ParsedArgs(values, list(args[i + 1 :]))
        if not arg.startswith("-") or arg == "-":
            return ParsedArgs(values, list(args[i:]))  # urfave stops at the first positional
        body = arg[2:] if arg.startswith("--") else arg[1:]
        name, eq, inline = body.partition("=")
        f = tab.lookup(name)
        if f is None:
            raise UnknownFlagError(name, removed_hint(name))
        if f.is_bool:
            value = inline if eq else "true"
            if value.lower() not in ("true", "false", "1", "0", "t", "f"):
                raise FlagError(f'invalid boolean value "{value}" for -{name}', f.name)
        elif eq:
            value = inline
        else:
            i += 1
            if i >= len(args):
                raise FlagError(f"flag needs an argument: -{name}", f.name)
            value = args[i]
        if f.type == "int" and not value.lstrip("-").isdigit():
            raise FlagError(f'invalid value "{value}" for flag -{name}: parse error', f.name)
        values.append((f, value))
        i += 1
    return ParsedArgs(values, [])


def _scalar(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    raise TypeError(f"config values must be scalars or lists of scalars, got {value!r}")


def merge_config(documents: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Fold the main file and its drop-ins in order: a key replaces, `key+` appends."""
    merged: dict[str, Any] = {}
    for doc in documents:
        for key, value in doc.items():
            if key.endswith("+"):
                base = key[:-1]
                old = merged.get(base, [])
                old_list = old if isinstance(old, list) else [old]
                new_list = value if isinstance(value, list) else [value]
                merged[base] = [*old_list, *new_list]
            else:
                merged[key] = value
    return merged


def config_args(
    command: str, config: Mapping[str, Any], *, skip_unknown: bool = False
) -> list[str]:
    """Turn config keys into the `--key=value` arguments K3s inserts before the command line.

    An unknown key is refused naming it (even for `server`, see the module docstring) unless
    `skip_unknown`, which `etcd-snapshot` needs: it reads the server's config file and K3s
    drops the keys that are not its own. A key that is not even a server flag is still refused.
    """
    tab = table(command)
    args: list[str] = []
    for key, value in config.items():
        f = tab.lookup(key)
        if f is None:
            if skip_unknown and table("server").lookup(key) is not None:
                continue
            raise FlagError(
                f"unknown key {key!r} in K3s config for `{command}`: "
                + str(UnknownFlagError(key, removed_hint(key))),
                key,
            )
        dashes = "-" if len(key) == 1 else "--"
        items = value if isinstance(value, list) else [value]
        if len(items) > 1 and not f.is_slice:
            raise FlagError(f"config key {key!r} takes one value, got a list", key)
        args.extend(f"{dashes}{key}={_scalar(item)}" for item in items)
    return args


def _valid_values(entry: str) -> list[str]:
    return [v.split(" ")[0] for v in reference()["flannel_backends"][entry]]


DISABLE_ITEMS = ("coredns", "servicelb", "traefik", "local-storage", "metrics-server", "runtimes")


def check_values(command: str, parsed: ParsedArgs) -> None:
    """Refuse values K3s refuses at start-up (removed flannel backends, unknown disable items)."""
    backend = parsed.last("flannel-backend")
    if backend is not None:
        valid = _valid_values("valid_now")
        if backend not in valid:
            hint = ""
            for entry in reference()["removed"]:
                if entry["name"] == f"flannel-backend={backend}":
                    hint = f" (removed; use --{entry['replacement']})"
            raise FlagError(f"Cannot configure unknown flannel backend '{backend}'{hint}", backend)
    for item in parsed.all("disable"):
        if item not in DISABLE_ITEMS:
            raise FlagError(f"invalid --disable item {item!r}: valid are {DISABLE_ITEMS}", item)
    if command == "agent":
        if parsed.last("server") is None:
            raise FlagError("agent needs --server (K3S_URL)", "server")
        if parsed.last("token") is None and parsed.last("token-file") is None:
            raise FlagError("agent needs --token or --token-file", "token")
    server = parsed.last("server")
    if server is not None and not server.startswith("https://"):
        raise FlagError(f"--server must be an https:// URL, got {server!r}", "server")


def validate_argv(command: str, args: Sequence[str]) -> ParsedArgs:
    """Parse and check a full argument list (after the subcommand word)."""
    parsed = parse_args(command, args)
    check_values(command, parsed)
    return parsed
