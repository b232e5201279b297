"""The K3s flag tables and parser against the reference flags.json (removed flags refused)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pcloud.backend.k3s import flags

SHARED = Path(__file__).resolve().parents[4] / "shared" / "k3s" / "flags.json"


def test_packaged_copy_equals_the_reference() -> None:
    if not SHARED.exists():
        pytest.skip("no ../shared/k3s/flags.json next to the repository")
    assert json.loads(flags.FLAGS_PATH.read_text()) == json.loads(SHARED.read_text())


def test_tables_have_the_counts_flags_json_states() -> None:
    counts = flags.reference()["counts"]
    assert len(flags.table("server").flags) == counts["server"] == 124
    assert len(flags.table("agent").flags) == counts["agent"] == 46


def test_aliases_resolve_to_the_long_name() -> None:
    assert flags.table("server").lookup("t") is flags.table("server").lookup("token")
    assert flags.table("agent").lookup("i") is flags.table("agent").lookup("node-ip")


@pytest.mark.parametrize(
    "args",
    [
        ["--no-deploy", "traefik"],
        ["--no-deploy=traefik"],
        ["-no-deploy", "traefik"],
    ],
)
def test_removed_no_deploy_is_refused_with_k3s_message(args: list[str]) -> None:
    with pytest.raises(flags.UnknownFlagError) as err:
        flags.parse_args("server", args)
    assert err.value.name == "no-deploy"
    assert str(err.value).startswith("flag provided but not defined: -no-deploy")
    assert "--disable" in str(err.value)  # the replacement flags.json records


@pytest.mark.parametrize("name", ["cluster-secret", "no-flannel", "disable-selinux"])
def test_other_flags_removed_in_1_26_are_refused(name: str) -> None:
    with pytest.raises(flags.UnknownFlagError) as err:
        flags.parse_args("agent", [f"--{name}=x"])
    assert err.value.name == name


def test_server_only_flag_is_unknown_to_agent() -> None:
    flags.parse_args("server", ["--cluster-init"])
    with pytest.raises(flags.UnknownFlagError, match="-cluster-init"):
        flags.parse_args("agent", ["--cluster-init"])


def test_parse_forms_and_precedence() -> None:
    parsed = flags.parse_args(
        "server",
        ["--node-ip=10.0.0.1", "-t", "s1", "--token", "s2", "--tls-san", "a,b", "--tls-san=c"],
    )
    assert parsed.last("token") == "s2"  # the last scalar wins
    assert parsed.all("tls-san") == ["a", "b", "c"]  # K3s splits tls-san on commas
    assert parsed.last("node-ip") == "10.0.0.1"


def test_bool_takes_no_separate_value_and_parsing_stops_at_positional() -> None:
    parsed = flags.parse_args("server", ["--cluster-init", "false", "--token", "x"])
    assert parsed.flag("cluster-init")
    assert parsed.last("token") is None  # lost, as with urfave/cli
    assert parsed.positional == ["false", "--token", "x"]


def test_bad_values_are_refused() -> None:
    with pytest.raises(flags.FlagError, match="parse error"):
        flags.parse_args("server", ["--https-listen-port=abc"])
    with pytest.raises(flags.FlagError, match="wireguard-native"):
        flags.validate_argv("server", ["--flannel-backend=wireguard"])
    with pytest.raises(flags.FlagError, match="invalid --disable item"):
        flags.validate_argv("server", ["--disable=traefik,nginx"])
    with pytest.raises(flags.FlagError, match="https://"):
        flags.validate_argv("server", ["--server=http://10.0.0.1:6443"])
    with pytest.raises(flags.FlagError, match="--server"):
        flags.validate_argv("agent", ["--token=x"])


def test_config_keys_become_args_and_unknown_keys_are_refused() -> None:
    args = flags.config_args("server", {"cluster-init": True, "tls-san": ["a", "b"], "v": 2})
    assert args == ["--cluster-init=true", "--tls-san=a", "--tls-san=b", "-v=2"]
    with pytest.raises(flags.FlagError) as err:
        flags.config_args("server", {"no-deploy": ["traefik"]})
    assert err.value.name == "no-deploy"
    assert "no-deploy" in str(err.value)
    with pytest.raises(flags.FlagError, match="one value"):
        flags.config_args("server", {"node-name": ["a", "b"]})


def test_etcd_snapshot_skips_server_keys_but_not_unknown_ones() -> None:
    cfg = {"cluster-init": True, "data-dir": "/d"}
    assert flags.config_args("etcd-snapshot save", cfg, skip_unknown=True) == ["--data-dir=/d"]
    with pytest.raises(flags.FlagError):
        flags.config_args("etcd-snapshot save", {"no-deploy": "x"}, skip_unknown=True)


def test_dropin_merge_replaces_and_appends() -> None:
    merged = flags.merge_config(
        [{"node-label": ["a=1"], "node-name": "x"}, {"node-label+": ["b=2"], "node-name": "y"}]
    )
    assert merged == {"node-label": ["a=1", "b=2"], "node-name": "y"}
