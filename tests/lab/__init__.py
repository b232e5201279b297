"""The lab: virtual hosts (network + private mount namespaces) on a virtual LAN, for PCloud's
end-to-end tests, the README demo and the benchmarks.

    from tests.lab import Lab, wait_for

    with Lab() as lab:
        a, b = lab.add_host("rpi111"), lab.add_host("rpi112")
        a.run(["ping", "-c1", "-W1", b.ip])

Modules: `lab` (topology and teardown order), `host` (one host's namespaces, commands, paths),
`process` (background processes by PID), `netns` (`ip netns` wrappers), `wait` (deadline polling),
`teardown` (signal/atexit guard), `state` (kept-lab file), `fixtures` (pytest `lab` fixture),
and the commands `python -m tests.lab.cleanup | shell HOST | down`.
"""

from .host import Host, HostError
from .lab import Lab, LabError, unavailable_reason
from .process import Proc
from .wait import WaitTimeout, async_wait_for, wait_for

__all__ = [
    "Host",
    "HostError",
    "Lab",
    "LabError",
    "Proc",
    "WaitTimeout",
    "async_wait_for",
    "unavailable_reason",
    "wait_for",
]
