"""DNS names in the netmap: the domain setting, each peer's `HOST.<domain>`, the same name after a
restart, distinct names for two devices asking for one, and a rename in the next delta."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pcloud.server.config import Listen, Settings
from pcloud.server.netmap import build
from pcloud.server.protocol import Netmap, check_domain, dns_label
from pcloud.server.state import State
from pcloud.server.store.sqlite import SqliteStore


def _state(tmp_path: Path, domain: str = "pcloud.internal") -> State:
    settings = Settings(state_dir=tmp_path, listen=(Listen("127.0.0.1", 1),), domain=domain)
    return State(settings, SqliteStore(tmp_path / "pcloud.db"))


async def _register(state: State, name: str, n: int) -> int:
    node = await state.register(
        public_key=f"{n:043d}=", hostname=name, endpoints=(), user="admin", role="client",
        tags=(), ephemeral=False, token_digest=f"t{n}", observed=None,
    )  # fmt: skip
    return node.id


def test_dns_label_is_one_normalisation() -> None:
    assert dns_label("rpi112") == "rpi112"  # a valid hostname is its own label
    assert dns_label("My_Laptop.lan") == "my-laptop-lan"
    assert dns_label("--Ünïcode  box--") == "n-code-box"
    assert dns_label("x" * 70 + "-y") == "x" * 63
    assert dns_label("___") == "device"
    assert check_domain("home.arpa") == "home.arpa"
    for bad in ("Pcloud.internal", "a..b", "-a.b", "a.b.\n", "", "a" * 64 + ".b"):
        with pytest.raises(ValueError, match="domain"):
            check_domain(bad)
    with pytest.raises(ValueError, match="--domain"):
        Settings(state_dir=Path("/nonexistent"), listen=(), domain="Not A Domain")


async def test_names_are_in_full_and_delta_netmaps_and_survive_a_restart(tmp_path: Path) -> None:
    state = _state(tmp_path, domain="home.internal")
    a = await _register(state, "rpi112", 1)
    b = await _register(state, "rpi112", 2)  # the same name asked twice: suffixed by the server
    full = Netmap.model_validate_json(build.full_json(state, a))
    assert full.domain == "home.internal"
    assert full.self.dns_name == "rpi112.home.internal"
    assert [p.dns_name for p in full.peers] == ["rpi112-2.home.internal"]
    version = state.version
    await state.update_node(b, hostname="web")
    delta = json.loads(build.delta_json(state, a, state.bus.delta(a, version)))
    assert delta["domain"] == "home.internal"
    assert [p["dns_name"] for p in delta["peers_changed"]] == ["web.home.internal"]
    assert (
        build.full(state, a).model_dump()
        == Netmap.model_validate_json(build.full_json(state, a)).model_dump()
    )
    state.close()
    again = _state(tmp_path, domain="home.internal")  # a restart: the same names
    names = {p.dns_name for p in build.full(again, b).peers} | {build.full(again, b).self.dns_name}
    assert names == {"rpi112.home.internal", "web.home.internal"}
    again.close()
