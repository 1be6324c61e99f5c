"""Where the pipeline's Ray tasks run: the cluster at ``$RAY_ADDRESS``, else a local Ray started
for this one command (no setup needed for a first run on a laptop or a single GPU box).

Shared by every command that launches tasks, so they all join clusters the same way, and refuse
the same way a local path that each node would resolve on its own disk.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
from collections.abc import Mapping
from types import FrameType
from typing import Any, TextIO

import ray
from fsspec.implementations.local import LocalFileSystem

from pipeline.storage import S3Timeouts, filesystem

__all__ = ["NodeLocalPath", "cluster_has_gpus", "ensure_ray", "refuse_node_local"]

log = logging.getLogger(__name__)

ADDRESS_ENV = "RAY_ADDRESS"
_NAMED = 3  # local paths named in a refusal; the rest are counted


class NodeLocalPath(ValueError):
    """A local path given to a job that runs on several nodes: each would read or write its own
    disk there (results scattered over the nodes, photos not found), unless it is shared."""


def ensure_ray() -> None:
    """Connect to Ray unless this process already is (a notebook, a test session, a Ray job).

    With ``$RAY_ADDRESS`` set, join that cluster; without it, start a local Ray ("local", never
    a stale cluster this machine may have run before). Worker output is not forwarded to this
    process: commands print machine-readable results on stdout, and a library's stray print in a
    worker must not end up in them. Rows report their own errors; worker logs stay in Ray's
    session log directory. Workers get this process's object-store timeouts
    (:class:`~pipeline.storage.S3Timeouts`), on whichever node they run. Ray still prints
    cluster events (a node's death) to stdout, so from here on its prints go to stderr
    (:class:`_CommandStdout`)."""
    if ray.is_initialized():
        return
    _route_ray_prints()
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
    # Ray disconnects at exit (an atexit handler registered when ray is imported) and prints the
    # repeats it held back; by then ``--json`` has put the real stdout back in place of the one
    # routed above. Handlers run last-registered first, so this one routes Ray's prints again.
    atexit.register(_route_ray_prints)


def _route_ray_prints() -> None:
    """Send Ray's own prints to stderr from here on (see :class:`_CommandStdout`)."""
    if not isinstance(sys.stdout, _CommandStdout):
        sys.stdout = _CommandStdout(sys.stdout, sys.stderr)


class _CommandStdout:
    """``sys.stdout`` for what the command itself prints; ``sys.stderr`` for Ray's own prints
    and anything a background thread writes. The driver's Ray prints cluster error messages
    (e.g. a raylet's state dump when its node dies) to ``sys.stdout`` whatever ``log_to_driver``
    says: from a background thread as they come, and from the main thread when it disconnects
    at exit (the repeats it held back). ``--json`` promises one JSON document on stdout.

    ``isatty`` answers for the same stream: Ray Data picks bars or periodic log lines by
    ``sys.stdout.isatty()`` but draws on stderr, so ``apply 2> apply.log`` from a terminal
    would otherwise fill the log with bar redraws (and ``apply > out`` lose its bars)."""

    def __init__(self, stdout: TextIO, stderr: TextIO) -> None:
        self._stdout, self._stderr = stdout, stderr

    def _target(self, caller: FrameType | None) -> TextIO:
        from_ray = caller is not None and caller.f_globals.get("__name__", "").startswith("ray.")
        main = threading.current_thread() is threading.main_thread()
        return self._stderr if from_ray or not main else self._stdout

    def write(self, text: str) -> int:
        return self._target(sys._getframe().f_back).write(text)

    def flush(self) -> None:
        self._target(sys._getframe().f_back).flush()

    def isatty(self) -> bool:
        return self._target(sys._getframe().f_back).isatty()

    def __getattr__(self, name: str) -> Any:  # encoding, fileno, ...: the real stdout's
        return getattr(self._stdout, name)


def cluster_has_gpus() -> bool:
    """Whether the connected cluster has any GPU now (GPU nodes an autoscaler has not started
    yet do not count)."""
    return ray.cluster_resources().get("GPU", 0) > 0


def refuse_node_local(paths: Mapping[str, str], *, shared_fs: bool) -> None:
    """Raise :class:`NodeLocalPath`, naming each, if any of ``paths`` (what the user calls it ->
    URI, e.g. ``{"--output": "/data/out"}``) is local and the Ray cluster has more than one node,
    unless the user declared local paths shared (``--shared-fs``: an NFS/EFS mount on every node).

    Joins the cluster at ``$RAY_ADDRESS`` to count its nodes; without one, the command starts a
    local Ray of one node and there is nothing to refuse."""
    local = [(what, uri) for what, uri in paths.items() if isinstance(filesystem(uri)[0], LocalFileSystem)]
    if not local or shared_fs or not (ray.is_initialized() or os.environ.get(ADDRESS_ENV)):
        return
    ensure_ray()
    nodes = sum(1 for node in ray.nodes() if node["Alive"])
    if nodes < 2:
        return
    named = "; ".join(f"{what} {uri}" for what, uri in local[:_NAMED])
    more = f" (and {len(local) - _NAMED} more)" if len(local) > _NAMED else ""
    raise NodeLocalPath(
        f"{named}{more}: a local path, but the Ray cluster has {nodes} nodes and each would use its own disk "
        "there; use an object store (s3://...), or pass --shared-fs if every node mounts this path"
    )
