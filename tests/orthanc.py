"""A real DICOMweb archive for the tests: Debian's Orthanc with its DICOMweb plugin.

Started on free ports with a configuration of its own (storage under a temporary directory,
remote access and authentication off), never the system service on 8042. `dicomize` turns
a slide file into a DICOM VL Whole Slide Microscopy pyramid with OrthancWSIDicomizer and
uploads it; `OrthancArchive.series()` tells the UIDs it got.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ORTHANC = "Orthanc"
DICOMIZER = "OrthancWSIDicomizer"
PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


# What the dicomizer writes besides the pixels (it leaves ImageType out unless told). No
# real patient: the archive routes must show none of it anyway.
DATASET = {
    "PatientID": "TEST-0001",
    "PatientName": "TEST^PATIENT",
    "AccessionNumber": "ACC-42",
    "StudyDescription": "collab test study",
    "ImageType": "DERIVED\\PRIMARY\\VOLUME\\NONE",
}


def available() -> str | None:
    """Why the archive cannot run here, or None."""
    for tool in (ORTHANC, DICOMIZER):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install orthanc orthanc-dicomweb orthanc-wsi)"
    if not PLUGIN.exists():
        return f"{PLUGIN} is missing (apt-get install orthanc-dicomweb)"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class OrthancArchive:
    url: str  # the REST root, http://127.0.0.1:PORT
    process: subprocess.Popen[bytes]
    log_path: Path
    auth: tuple[str, str] | None = None  # (user, password) when authentication is on

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    def dicomize(self, slide: Path, *, mpp: float, width: int, height: int, tile: int = 256,
                 compression: str = "jpeg", description: str = "demo tissue") -> tuple[str, str]:
        """Upload `slide` as a WSI pyramid; returns (StudyInstanceUID, SeriesInstanceUID).
        The imaged size is given so the pixel spacing is the slide's mpp."""
        before = set(self.series())
        dataset = slide.with_suffix(".dataset.json")
        # A WSI image needs a frame of reference (the dicomizer writes none): what the
        # exported annotations share with it.
        frame = "2.25." + str(uuid.uuid4().int)
        dataset.write_text(json.dumps(DATASET | {"SeriesDescription": description, "FrameOfReferenceUID": frame}))
        subprocess.run(
            [DICOMIZER, str(slide), f"--orthanc={self.url}/", f"--compression={compression}",
             f"--dataset={dataset}",
             *([f"--username={self.auth[0]}", f"--password={self.auth[1]}"] if self.auth else []),
             f"--tile-width={tile}", f"--tile-height={tile}", "--jpeg-quality=90",
             # Swapped on purpose: Orthanc WSI 1.1 divides the imaged height by the pixel
             # width (and the reverse) for the pixel spacing; swapped, it is the slide's mpp.
             f"--imaged-width={height * mpp / 1000}", f"--imaged-height={width * mpp / 1000}"],
            check=True, capture_output=True, timeout=300,
        )
        added = [s for s in self.series() if s not in before]
        assert len(added) == 1, added
        return added[0]

    def series(self) -> list[tuple[str, str]]:
        found = httpx.get(f"{self.dicomweb}/series", timeout=10, auth=self.auth)
        if found.status_code == 204:
            return []
        found.raise_for_status()
        return [(s["0020000D"]["Value"][0], s["0020000E"]["Value"][0]) for s in found.json()]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


@contextlib.contextmanager
def running_orthanc(root: Path, timeout: float = 60, *, auth: tuple[str, str] | None = None
                    ) -> Iterator[OrthancArchive]:
    """Orthanc on free ports; with `auth`, HTTP basic authentication is on for that one user."""
    why = available()
    if why:
        # Skipped on a developer's machine without it; under CI (which installs it) a skip would
        # hide that nothing was tested.
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    root.mkdir(parents=True, exist_ok=True)
    http_port, dicom_port = _free_port(), _free_port()
    config = {
        "Name": "collab-test",
        "StorageDirectory": str(root / "storage"),
        "IndexDirectory": str(root / "storage"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": "COLLABTEST",
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": auth is not None,
        "RegisteredUsers": dict([auth]) if auth else {},
        "Plugins": [str(PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "HttpTimeout": 30,
    }
    config_path = root / "orthanc.json"
    config_path.write_text(json.dumps(config))
    log_path = root / "orthanc.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen([ORTHANC, str(config_path)], stdout=log, stderr=subprocess.STDOUT)
    archive = OrthancArchive(f"http://127.0.0.1:{http_port}", process, log_path, auth)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"Orthanc exited: {log_path.read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{archive.url}/system", timeout=1, auth=auth).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"Orthanc did not answer within {timeout} s")
            time.sleep(0.1)
        yield archive
    finally:
        archive.stop()
