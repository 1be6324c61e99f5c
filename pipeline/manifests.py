"""What every manifest shares: the error that names a bad manifest, and the status values a row
records.

The manifests themselves have a module each: :mod:`pipeline.pairs_manifest` (``train``'s input) and
:mod:`pipeline.outputs_manifest` (``apply``'s record of what it did).
"""

from __future__ import annotations

__all__ = ["STATUS_ERROR", "STATUS_OK", "ManifestError"]

STATUS_OK = "ok"
STATUS_ERROR = "error"


class ManifestError(ValueError):
    """A manifest that is missing, unreadable or invalid; the message names the file (and the
    row) and the problem."""
