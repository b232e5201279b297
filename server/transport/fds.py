"""The open-files limit: every held connection is a file descriptor."""

from __future__ import annotations

import logging
import resource

log = logging.getLogger("pcloud.server.transport")

NR_OPEN_DEFAULT = 1 << 20


def raise_open_files_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard one and return it.

    The soft limit is often 1024 outside systemd (the units set LimitNOFILE), which a few
    hundred slow clients exhaust; the hard limit is what the administrator allows.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # An unlimited hard limit still stops at the kernel's fs.nr_open (2**20 by default).
    target = hard if hard != resource.RLIM_INFINITY else NR_OPEN_DEFAULT
    if soft != target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-files limit from %d to %d: %s", soft, hard, exc)
    if soft < 4096:
        log.warning(
            "only %d open files allowed: each connected node needs one (raise LimitNOFILE)", soft
        )
    return soft
