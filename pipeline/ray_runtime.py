"""Where the pipeline's Ray tasks run: the cluster at ``$RAY_ADDRESS``, else a local Ray started
for this one command (no setup needed for a first run on a laptop or a single GPU box).

Shared by every command that launches tasks, so they all join clusters the same way.
"""

from __future__ import annotations

import logging
import os

import ray

from pipeline.storage import S3Timeouts

__all__ = ["ensure_ray", "cluster_has_gpus"]

log = logging.getLogger(__name__)

ADDRESS_ENV = "RAY_ADDRESS"


def ensure_ray() -> None:
    """Connect to Ray unless this process already is (a notebook, a test session, a Ray job).

    With ``$RAY_ADDRESS`` set, join that cluster; without it, start a local Ray ("local", never
    a stale cluster this machine may have run before). Worker output is not forwarded to this
    process: commands print machine-readable results on stdout, and a library's stray print in a
    worker must not end up in them. Rows report their own errors; worker logs stay in Ray's
    session log directory. Workers get this process's object-store timeouts
    (:class:`~pipeline.storage.S3Timeouts`), on whichever node they run."""
    if ray.is_initialized():
        return
    address = os.environ.get(ADDRESS_ENV)
    runtime_env = {"env_vars": S3Timeouts.from_env().env()}
    if address:
        log.info("joining the Ray cluster at %s", address)
        ray.init(address=address, log_to_driver=False, configure_logging=False, runtime_env=runtime_env)
    else:
        log.info("starting a local Ray (set %s to use a cluster)", ADDRESS_ENV)
        ray.init(
            address="local",
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
            runtime_env=runtime_env,
        )


def cluster_has_gpus() -> bool:
    """Whether the connected cluster has any GPU now (GPU nodes an autoscaler has not started
    yet do not count)."""
    return ray.cluster_resources().get("GPU", 0) > 0
