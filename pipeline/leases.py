"""One ``apply`` run per output folder at a time: the run's lease, and the fence its commits check.

Ray's workers outlive a killed driver by a second or two and may still commit the batch in their
hands. A restarted driver (KubeRay's ``backoffLimit``) that planned inside that window would
redo those photos, and the manifest would hold two ``ok`` rows for each. So every run holds a
lease, an empty object at ``<output>/_manifest/lease-<run_id>``:

- a run creates its lease before it reads what is done, and deletes every other run's lease
  (a newer run always takes over: the older one is dead, or about to be stopped);
- a batch checks that its run's lease still exists before writing its photos and again just
  before committing its manifest part; a batch of a revoked run writes nothing more and reports
  why (its driver, if alive, stops with that message);
- after revoking a lease, the new run waits :data:`GRACE_SECONDS` before planning, so a commit
  that passed its check just before the revocation has landed and is seen as done. A commit
  slower than half of that re-checks after writing and withdraws its part if the lease is gone
  (its photos are then redone by a later run: never recorded twice).

A run that ends, however it ends short of a crash, deletes its own lease; a lease left by a
crash costs the next run the grace period once.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from pipeline.outputs_manifest import MANIFEST_DIR
from pipeline.storage import AlreadyExists, filesystem, join, uri_of, write_exclusive

__all__ = ["GRACE_SECONDS", "LeaseLost", "RunLease"]

log = logging.getLogger(__name__)

_PREFIX = "lease-"  # beside the manifest parts (whose readers skip any other name)
GRACE_SECONDS = 5.0  # far above one lease check + one part PUT (tens of ms on S3)


class LeaseLost(RuntimeError):
    """This run's lease on its output was revoked by a newer run: it must commit nothing more."""


@dataclass(frozen=True)
class RunLease:
    """The lease of run ``run_id`` on the output folder ``output``."""

    output: str
    run_id: str

    @property
    def uri(self) -> str:
        return join(self.output, MANIFEST_DIR, _PREFIX + self.run_id)

    def acquire(self) -> list[str]:
        """Take the output over: create this run's lease, revoke every other one, and (if there
        was one) wait out the grace period. Returns the revoked runs' ids."""
        fs, path = filesystem(self.uri)
        try:
            write_exclusive(fs, path, b"")
        except AlreadyExists:
            pass  # acquired twice by the same run: still ours
        directory = path.rsplit("/", 1)[0]
        fs.invalidate_cache(directory)
        others = sorted(p for p in fs.ls(directory, detail=False) if p != path and p.rsplit("/", 1)[-1].startswith(_PREFIX))
        if not others:
            return []
        for other in others:  # one at a time: another new run may be revoking the same ones
            try:
                fs.rm(other)
            except FileNotFoundError:
                pass
        revoked = [p.rsplit("/", 1)[-1][len(_PREFIX) :] for p in others]
        log.warning(
            "revoked the lease of run(s) %s on %s (a crashed or concurrent apply); waiting %.0f s for "
            "their last commits before reading what is done",
            ", ".join(revoked), self.output, GRACE_SECONDS,
        )
        time.sleep(GRACE_SECONDS)
        return revoked

    def held(self) -> bool:
        """Whether this run still holds its lease (one HEAD request, never cached)."""
        fs, path = filesystem(self.uri)
        fs.invalidate_cache(path)
        return fs.exists(path)

    def check(self) -> None:
        """Raise :class:`LeaseLost` unless this run still holds its lease."""
        if not self.held():
            fs, path = filesystem(self.uri)
            raise LeaseLost(
                f"run {self.run_id} no longer holds its lease on {self.output} ({uri_of(fs, path)} was revoked): "
                "a newer apply to this output took it over (one apply per output at a time)"
            )

    def release(self) -> None:
        """Give the lease up at the end of the run (nothing to do if it was revoked)."""
        fs, path = filesystem(self.uri)
        try:
            fs.rm(path)
        except FileNotFoundError:
            pass
