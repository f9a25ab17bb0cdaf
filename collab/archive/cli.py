"""`collab archive list --url ...`: the whole-slide series of an archive, without the patient."""

from __future__ import annotations

import argparse
import os
import sys

import orjson

from collab.errors import CollabError
from collab.settings import Settings

_COLUMNS = ("study_date", "accession", "series_description", "width", "height", "instances", "study", "series")


def add_archive_args(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("archive", help="the hospital archive (DICOMweb): `collab archive list --url ...`")
    action = p.add_subparsers(dest="action", required=True)
    listing = action.add_parser(
        "list", help="list whole-slide series (modality SM): date, accession, description, size, UIDs"
    )
    listing.add_argument("--url", required=True, help="DICOMweb base URL, e.g. https://pacs/dicom-web")
    listing.add_argument("--json", action="store_true", help="one JSON array instead of a table")


def archive_command(args: argparse.Namespace) -> int:
    """Credentials and timeout come from the COLLAB_DICOMWEB_* settings, as for the server."""
    # Here, not at the top: the other commands need not load the DICOM libraries.
    from collab.archive.series import find_slide_series
    from collab.slides.dicomweb import archive_client, check_archive_url, parse_credentials

    settings = Settings.from_env(os.environ)
    try:
        url = check_archive_url(args.url, settings.dicomweb_archives)
        client = archive_client(url, parse_credentials(settings.dicomweb_auth), settings.dicomweb_timeout)
        rows = find_slide_series(client)
    except (CollabError, ValueError) as exc:
        print(f"collab archive: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        return 0
    print("\t".join(_COLUMNS))
    for row in rows:
        print("\t".join("" if row.get(c) is None else str(row[c]) for c in _COLUMNS))
    print(f"{len(rows)} whole-slide series. Register one with POST /api/slides "
          '{"id", "title", "dicomweb": {"url", "study", "series"}}.', file=sys.stderr)
    return 0
