"""Tokens go to the keyring when there is one, else stay in memory with a warning."""

from __future__ import annotations

from typing import Any

from pcloud.gui.secrets import MEMORY_WARNING, SERVICE, TokenStore


class DictKeyring:
    priority = 5

    def __init__(self) -> None:
        self.items: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, user: str) -> str | None:
        return self.items.get((service, user))

    def set_password(self, service: str, user: str, secret: str) -> None:
        self.items[(service, user)] = secret

    def delete_password(self, service: str, user: str) -> None:
        del self.items[(service, user)]


class BrokenKeyring(DictKeyring):
    def set_password(self, *args: Any) -> None:
        raise RuntimeError("locked")


def test_keyring_round_trip() -> None:
    ring = DictKeyring()
    store = TokenStore(ring)
    assert store.persistent and store.warning is None
    store.save("https://a:8443", "tok")
    assert ring.items == {(SERVICE, "https://a:8443"): "tok"}
    assert TokenStore(ring).load("https://a:8443") == "tok"  # survives an app restart
    store.clear("https://a:8443")
    assert ring.items == {} and store.load("https://a:8443") is None


def test_memory_only_says_so() -> None:
    store = TokenStore(use_system=False)
    assert not store.persistent and store.warning == MEMORY_WARNING
    store.save("https://a:8443", "tok")
    assert store.load("https://a:8443") == "tok"
    assert TokenStore(use_system=False).load("https://a:8443") is None


def test_failing_keyring_falls_back_to_memory() -> None:
    store = TokenStore(BrokenKeyring())
    store.save("https://a:8443", "tok")
    assert store.load("https://a:8443") == "tok" and store.warning == MEMORY_WARNING
