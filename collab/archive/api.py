"""HTTP routes to the hospital archive: a slide's annotations out as DICOM and back, and the
whole-slide series the archive holds (for admins registering slides)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import highdicom as hd
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from collab.annotations.dicom import from_dicom, to_dicom
from collab.annotations.guard import AnnotationGuard
from collab.archive.series import find_slide_series
from collab.auth import Principal
from collab.errors import BadRequest, Forbidden, NotFound
from collab.http import JSONResponse, RequestAuth, read_json
from collab.layers.dicom import layer_to_dicom
from collab.layers.registry import LayerRegistry
from collab.live.keys import RoomKey
from collab.live.rooms import RoomManager
from collab.settings import Settings
from collab.slides.dicomweb import (
    DicomWebSlides,
    SeriesRef,
    archive_errors,
    check_archive_url,
    check_uid,
)
from collab.slides.registry import SlideRegistry
from collab.store import AuditRecord, Store

log = logging.getLogger(__name__)

WSI_STORAGE = "1.2.840.10008.5.1.4.1.1.77.1.6"
_TYPE2_COPIED = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyID", "StudyDate", "StudyTime",
    "ReferringPhysicianName", "AccessionNumber",
)


def _base_image(client: DICOMwebClient, ref: SeriesRef) -> Dataset:
    """The metadata of the series' largest VOLUME image: what the annotations refer to."""
    with archive_errors("reading the slide's metadata"):
        metadata = client.retrieve_series_metadata(ref.study, ref.series)
    images = [m for m in metadata if m.get("00080016", {}).get("Value", [None])[0] == WSI_STORAGE]
    if not images:
        raise BadRequest("the slide's series holds no whole-slide image")
    largest = max(images, key=lambda m: m.get("00480006", {}).get("Value", [0])[0])
    dataset = Dataset.from_json(largest, bulk_data_uri_handler=lambda *args: b"")
    if "FrameOfReferenceUID" not in dataset:
        raise BadRequest("the slide's image has no FrameOfReferenceUID: annotations cannot refer to it")
    # Type 2 attributes the annotations copy from the image; archives may leave empty ones out
    # of their JSON metadata, and empty is what they were.
    for keyword in _TYPE2_COPIED:
        if keyword not in dataset:
            setattr(dataset, keyword, None)
    return dataset


class ArchiveApi:
    def __init__(self, auth: RequestAuth, rooms: RoomManager, slides: SlideRegistry, store: Store,
                 settings: Settings, archive: DicomWebSlides, layers: LayerRegistry) -> None:
        self._auth = auth
        self._rooms = rooms
        self._slides = slides
        self._store = store
        self._settings = settings
        self._archive = archive
        self._layers = layers

    async def _guard(self, slide_id: str) -> AnnotationGuard:
        room = await self._rooms.open(RoomKey.slide(slide_id))
        guard = room.policy
        if not isinstance(guard, AnnotationGuard):
            raise BadRequest("annotations are not followed in this room (geometry checks are off)")
        await guard.catalog.wait_indexed()
        return guard

    def _audit(self, guard: AnnotationGuard, principal: Principal, action: str, detail: dict[str, Any]) -> None:
        self._store.audit(AuditRecord(guard.room.name, int(time.time() * 1000), principal.user_id,
                                      principal.site, action, None, detail))

    async def export_dicom(self, request: Request) -> Response:
        principal = self._auth.principal(request)
        slide_id = request.path_params["slide_id"]
        principal.require_slide(slide_id)
        if not principal.can_present:
            raise Forbidden("only a presenter or admin may export annotations to the archive")
        record = await self._slides.get(slide_id)
        if not isinstance(record.get("dicomweb"), dict):
            raise BadRequest("the slide is not from a DICOMweb archive: nowhere to store its annotations")
        ref = SeriesRef(**record["dicomweb"])
        guard = await self._guard(slide_id)
        records = guard.catalog.records()
        series_uid, instance_uid = hd.UID(), hd.UID()

        def export() -> int:
            client = self._archive.client(ref.url)
            source = _base_image(client, ref)
            try:
                dataset, count = to_dicom(
                    records, source, series_uid=series_uid, instance_uid=instance_uid,
                    creator=principal.name or principal.user_id, site=principal.site,
                    description=f"annotations of {record.get('title') or slide_id}",
                )
            except ValueError as exc:
                raise BadRequest(f"cannot export: {exc}") from exc
            with archive_errors("storing the annotations"):
                client.store_instances([dataset])
            return count

        count = await asyncio.to_thread(export)
        answer = {"study": ref.study, "series": str(series_uid), "instance": str(instance_uid)}
        self._audit(guard, principal, "exported-dicom", {**answer, "annotations": count})
        log.info("exported %d annotations to the archive", count, extra={"slide": slide_id, **answer})
        return JSONResponse(answer, status_code=201)

    async def export_layer_dicom(self, request: Request) -> Response:
        principal = self._auth.principal(request)
        slide_id, layer_id = request.path_params["slide_id"], request.path_params["layer_id"]
        principal.require_slide(slide_id)
        if not principal.can_present:
            raise Forbidden("only a presenter or admin may export a layer to the archive")
        record = await self._slides.get(slide_id)
        if not isinstance(record.get("dicomweb"), dict):
            raise BadRequest("the slide is not from a DICOMweb archive: nowhere to store its layer")
        ref = SeriesRef(**record["dicomweb"])
        layers = self._layers.store
        meta = await layers.get_layer(slide_id, layer_id)
        if meta is None:
            raise NotFound(f"no layer {layer_id} on slide {slide_id}")
        series_uid, instance_uid = hd.UID(), hd.UID()

        def export() -> int:
            # All of it in this worker thread: the chunks are read one at a time from the layer
            # store and encoded as bulk arrays; the event loop only waits.
            client = self._archive.client(ref.url)
            source = _base_image(client, ref)
            try:
                dataset, count = layer_to_dicom(
                    meta, layers.read_chunks(layer_id), source, series_uid=series_uid, instance_uid=instance_uid,
                    creator=principal.name or principal.user_id, site=principal.site,
                )
            except ValueError as exc:
                raise BadRequest(f"cannot export: {exc}") from exc
            with archive_errors("storing the layer"):
                client.store_instances([dataset])
            return count

        started = time.perf_counter()
        count = await asyncio.to_thread(export)
        answer = {"study": ref.study, "series": str(series_uid), "instance": str(instance_uid), "count": count}
        self._store.audit(AuditRecord(str(RoomKey.slide(slide_id)), int(time.time() * 1000), principal.user_id,
                                      principal.site, "layer_exported-dicom", layer_id, answer))
        log.info("exported a layer of %d objects to the archive in %.1f s", count, time.perf_counter() - started,
                 extra={"slide_id": slide_id, "layer": layer_id, **answer})
        return JSONResponse(answer, status_code=201)

    async def import_dicom(self, request: Request) -> Response:
        principal = self._auth.principal(request)
        slide_id = request.path_params["slide_id"]
        principal.require_slide(slide_id)
        if not principal.can_write:
            raise Forbidden("only a reviewer, presenter or admin may import annotations")
        body = await read_json(request, self._settings.max_body_bytes)
        if not isinstance(body, dict):
            raise BadRequest('body must be {"instance": "<SOPInstanceUID>"}')
        instance = check_uid(body.get("instance"), "instance")
        record = await self._slides.get(slide_id)
        if body.get("url") is not None:
            url = check_archive_url(body["url"], self._settings.dicomweb_archives)
        elif isinstance(record.get("dicomweb"), dict):
            url = record["dicomweb"]["url"]
        else:
            raise BadRequest("the slide is not from a DICOMweb archive: give url")
        guard = await self._guard(slide_id)

        def fetch() -> list[tuple[str, dict[str, Any]]]:
            client = self._archive.client(url)
            with archive_errors("finding the instance"):
                found = client.search_for_instances(search_filters={"SOPInstanceUID": instance})
            if not found:
                raise NotFound(f"the archive holds no instance {instance}")
            study, series = found[0]["0020000D"]["Value"][0], found[0]["0020000E"]["Value"][0]
            with archive_errors("reading the instance"):
                dataset = client.retrieve_instance(study, series, instance)
            try:
                return from_dicom(dataset)
            except (ValueError, AttributeError, TypeError) as exc:
                raise BadRequest(f"not importable Bulk Simple Annotations: {exc}") from exc

        items = await asyncio.to_thread(fetch)
        verdicts = [guard.check(r) for _, r in items]
        results = await guard.import_records(items, verdicts, principal)
        self._audit(guard, principal, "imported-dicom", {"instance": instance, "annotations": len(items)})
        return JSONResponse({"created": [k for k, _ in items], "results": results}, status_code=201)

    async def list_series(self, request: Request) -> Response:
        principal = self._auth.principal(request)
        if not principal.is_admin:
            raise Forbidden("only an admin may browse the archive")
        url = check_archive_url(request.query_params.get("url"), self._settings.dicomweb_archives)
        client = self._archive.client(url)
        return JSONResponse(await asyncio.to_thread(find_slide_series, client))

    def routes(self) -> list[Route]:
        return [
            Route("/api/slides/{slide_id}/export/dicom", self.export_dicom, methods=["POST"]),
            Route("/api/slides/{slide_id}/import/dicom", self.import_dicom, methods=["POST"]),
            Route("/api/slides/{slide_id}/layers/{layer_id}/export/dicom", self.export_layer_dicom, methods=["POST"]),
            Route("/api/archive/series", self.list_series, methods=["GET"]),
        ]
