"""Whole-slide series in an archive (QIDO-RS, modality SM), described without the patient."""

from __future__ import annotations

from typing import Any

from dicomweb_client.api import DICOMwebClient

from collab.slides.dicomweb import archive_errors

__all__ = ["find_slide_series"]

_STUDY, _SERIES = "0020000D", "0020000E"
# Only these leave the server: dates, accession, descriptions, sizes. Never a patient field.
_FIELDS = {
    "00080020": "study_date",
    "00080050": "accession",
    "00081030": "study_description",
    "0008103E": "series_description",
    "00201209": "instances",
}
_COLUMNS, _ROWS = "00480006", "00480007"  # TotalPixelMatrixColumns, TotalPixelMatrixRows


def _value(entry: dict[str, Any], tag: str) -> Any:
    values = entry.get(tag, {}).get("Value")
    return values[0] if values else None


def find_slide_series(client: DICOMwebClient, limit: int = 500) -> list[dict[str, Any]]:
    """``{"study", "series", "study_date", "accession", "study_description",
    "series_description", "instances", "width", "height"}`` per SM series (blocking)."""
    with archive_errors("searching the archive"):
        found = client.search_for_series(
            search_filters={"Modality": "SM"}, fields=list(_FIELDS), limit=limit,
        ) or []
    out = []
    for entry in found:
        row = {"study": _value(entry, _STUDY), "series": _value(entry, _SERIES)}
        row.update({name: _value(entry, tag) for tag, name in _FIELDS.items()})
        row["width"], row["height"] = _size(client, row["study"], row["series"])
        out.append(row)
    return out


def _size(client: DICOMwebClient, study: str, series: str) -> tuple[int | None, int | None]:
    """The largest total pixel matrix of the series (from one instance's metadata per image)."""
    with archive_errors("reading the series' metadata"):
        metadata = client.retrieve_series_metadata(study, series)
    sizes = [(_value(m, _COLUMNS), _value(m, _ROWS)) for m in metadata if _value(m, _COLUMNS)]
    return max(sizes, default=(None, None))
