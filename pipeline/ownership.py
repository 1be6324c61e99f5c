"""Which style an ``apply`` output folder belongs to, so that an ``ok`` row always describes the
bytes at its ``output_uri``.

Result paths mirror the inputs' paths and do not name the style: a second style written into the
same folder would overwrite the first one's files while the first one's rows still said ``ok``.
So an output folder belongs to one style *name*, recorded in ``_manifest/owner.json`` when the
first run claims it; any other name is refused before any work. The owner also records the
*version* whose files the folder holds and the run that started writing them (``since``):
applying another version of the same style re-claims the folder (the files are about to be
overwritten) and from then on only rows of that version from ``since`` on count as done, so
switching ``v1 -> v2 -> v1`` restyles everything each time instead of trusting old rows.

Every batch checks the owner before it writes a result: a run whose folder was re-claimed by a
newer run stops there (a rerun of the current version resumes).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.manifests import ManifestError
from pipeline.names import InvalidName, validate_name
from pipeline.outputs_manifest import MANIFEST_DIR, iter_outputs
from pipeline.storage import AlreadyExists, filesystem, join, write_atomic, write_exclusive

__all__ = ["OWNER_FILE", "Owner", "OutputTaken", "check_owner", "claim_output", "current_filter", "read_owner"]

log = logging.getLogger(__name__)

OWNER_FILE = "owner.json"
_MAX_OWNER_BYTES = 4096


class OutputTaken(ManifestError):
    """The output folder belongs to another style (or was re-claimed by another version)."""


@dataclass(frozen=True)
class Owner:
    """The style name an output folder belongs to, the version whose results it holds, and the
    run id from which that version's rows count (``""``: every row, for a folder written before
    owners were recorded that holds only this version)."""

    style: str
    style_version: str
    since: str

    @property
    def spec(self) -> str:
        return f"{self.style}@{self.style_version}"


def _owner_uri(output_uri: str) -> str:
    return join(output_uri, MANIFEST_DIR, OWNER_FILE)


def read_owner(output_uri: str) -> Owner | None:
    """The recorded owner of an output folder; None when none is recorded (a fresh folder, or
    one written before owners were recorded). A damaged owner file is refused, naming it."""
    uri = _owner_uri(output_uri)
    fs, path = filesystem(uri)
    try:
        data = fs.cat_file(path, start=0, end=_MAX_OWNER_BYTES + 1)
    except FileNotFoundError:
        return None
    try:
        if len(data) > _MAX_OWNER_BYTES:
            raise ValueError(f"larger than {_MAX_OWNER_BYTES} bytes")
        doc = json.loads(data)
        owner = Owner(**{k: doc[k] for k in ("style", "style_version", "since")})
        validate_name(owner.style)
        if not all(isinstance(v, str) for v in (owner.style_version, owner.since)):
            raise ValueError("style_version and since must be strings")
    except (ValueError, KeyError, TypeError, InvalidName) as exc:
        raise ManifestError(f"{uri}: not a valid owner record ({exc}); restore it or remove it to re-claim the folder") from exc
    return owner


def _write_owner(output_uri: str, owner: Owner, *, exclusive: bool) -> None:
    fs, path = filesystem(_owner_uri(output_uri))
    data = json.dumps(asdict(owner), indent=2).encode()
    (write_exclusive if exclusive else write_atomic)(fs, path, data)


def _recorded_styles(output_uri: str) -> set[tuple[str, str]]:
    """The ``(style, style_version)`` pairs of an output's manifest rows (a folder written before
    owners were recorded), one Arrow batch at a time."""
    found: set[tuple[str, str]] = set()
    for batch in iter_outputs(output_uri, ["style", "style_version"]):
        pairs = pa.Table.from_batches([batch]).group_by(["style", "style_version"]).aggregate([])
        found.update(zip(pairs["style"].to_pylist(), pairs["style_version"].to_pylist()))
    return found


def claim_output(output_uri: str, style: str, style_version: str, run_id: str) -> Owner:
    """Make ``style@style_version`` the owner of an output folder before a run writes there, or
    raise :class:`OutputTaken` naming the style that owns it.

    A fresh folder is claimed with an exclusive create (two first runs of different styles:
    one wins, the other is refused). A folder written before owners were recorded is claimed by
    the style its rows name, if they name only one. Another version of the owning style
    re-claims the folder from ``run_id`` on: everything is stylised again."""
    owner = read_owner(output_uri)
    if owner is None:
        recorded = _recorded_styles(output_uri)
        others = sorted({s for s, _ in recorded} - {style})
        if others:
            raise OutputTaken(_taken(output_uri, ", ".join(repr(s) for s in others), style))
        since = "" if recorded <= {(style, style_version)} else run_id
        try:
            _write_owner(output_uri, Owner(style, style_version, since), exclusive=True)
            log.info("%s now belongs to style %r", output_uri, style)
            return Owner(style, style_version, since)
        except AlreadyExists:  # another run claimed it first
            owner = read_owner(output_uri)
            if owner is None:
                raise ManifestError(f"{_owner_uri(output_uri)}: vanished while claiming the folder") from None
    if owner.style != style:
        raise OutputTaken(_taken(output_uri, repr(owner.style), style))
    if owner.style_version == style_version:
        return owner
    new = Owner(style, style_version, run_id)
    _write_owner(output_uri, new, exclusive=False)
    log.warning(
        "%s held %s; it now holds %s: every photo is stylised again (its %s rows no longer count)",
        output_uri, owner.spec, new.spec, owner.spec,
    )
    return new


def _taken(output_uri: str, owner: str, style: str) -> str:
    return (
        f"--output {output_uri} holds the results of style {owner}, not {style!r}: result paths do not "
        f"name the style, so one output folder holds one style; use another --output for {style!r}"
    )


def check_owner(output_uri: str, expected: Owner) -> None:
    """Raise :class:`OutputTaken` unless the folder's owner is still ``expected`` (called before
    each batch writes: a newer run may have re-claimed the folder for another version)."""
    owner = read_owner(output_uri)
    if owner != expected:
        now = f"{owner.spec} since run {owner.since}" if owner else "no owner record"
        raise OutputTaken(
            f"{output_uri} was re-claimed while this run wrote {expected.spec} (now: {now}); "
            "stopped before writing over its files"
        )


def current_filter(owner: Owner | None) -> pc.Expression:
    """Rows that describe the files the folder holds now: the owner's version from ``since``
    on (every row when no owner is recorded)."""
    if owner is None:
        return pc.scalar(True)
    return (pc.field("style") == owner.style) & (pc.field("style_version") == owner.style_version) & (
        pc.field("run_id") >= owner.since
    )
