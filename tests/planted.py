"""A planted pickle for the hostile-file tests: unpickling it creates a marker file."""

from __future__ import annotations

from pathlib import Path

import joblib


class Planted:
    """Unpickling this creates ``marker``: the proof that a file was (or was not) unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def planted_payload(marker: Path, tmp_path: Path) -> bytes:
    """A joblib stream that creates ``marker`` when loaded; checked to be live, then reset."""
    probe = tmp_path / "probe.joblib"
    joblib.dump(Planted(marker), probe)
    joblib.load(probe)
    assert marker.exists(), "the planted payload must really run when unpickled"
    marker.unlink()
    return probe.read_bytes()
