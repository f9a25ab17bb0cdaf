"""QuPath GeoJSON in and out: the round trip, the accepted forms, and precise refusals."""

from __future__ import annotations

import copy
import json
import uuid
from pathlib import Path

import orjson
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from collab.annotations.geojson import (
    GeoJSONError,
    annotation_to_feature,
    feature_collection,
    feature_to_annotation,
    parse_feature_collection,
)
from collab.annotations.geometry import MEASUREMENT_KEYS, check_geometry, merge_measurements

FIXTURE = Path(__file__).parent / "fixtures" / "qupath_export.geojson"
SERVER_PROPERTIES = ("author", "status", "problem", "created", "updated", "comments")


def qupath_export() -> dict:
    return json.loads(FIXTURE.read_text())


def feature(**props: object) -> dict:
    return {
        "type": "Feature",
        "id": "f1",
        "geometry": {"type": "Point", "coordinates": [1, 2]},
        "properties": {"objectType": "annotation", **props},
    }


# --- round trip ------------------------------------------------------------------------------


def test_qupath_export_round_trips_exactly() -> None:
    body = qupath_export()
    records = parse_feature_collection(body)
    assert [key for key, _ in records] == [f["id"] for f in body["features"]]
    assert feature_collection(records) == body


def test_records_hold_the_documented_layout() -> None:
    records = dict(parse_feature_collection(qupath_export()))
    core = records["3f2a7c1e-9b4d-4e8a-a1c2-5d6e7f809a1b"]
    assert core["classification"] == {"name": "Tumor", "color": [200, 0, 0]}
    assert core["name"] == "Tumour core"
    assert core["locked"] is True
    assert core["measurements"] == {"Num Detections": 412.0, "Num Positive %": 37.5}
    assert core["metadata"] == {"reviewed": "yes"}  # unknown property, kept as a field
    assert core["geometry"]["type"] == "Polygon" and len(core["geometry"]["coordinates"]) == 2
    margin = records["b1c2d3e4-f5a6-4b7c-8d9e-0f1a2b3c4d5e"]
    assert margin["classification"] is None
    assert "locked" not in margin  # QuPath writes isLocked only when true
    mitosis = records["c4d5e6f7-0819-4a2b-bc3d-4e5f60718293"]
    # A derived class gets the name our clients show; QuPath's "names" is kept for export.
    assert mitosis["classification"]["name"] == "Tumor: Positive"


def test_round_trip_through_the_server_check_adds_only_server_fields() -> None:
    body = qupath_export()
    stored = []
    for key, record in parse_feature_collection(body):
        verdict = check_geometry(record["geometry"], width=100_000, height=80_000, mpp=0.25)
        assert verdict.status == "ok", verdict.problem  # QuPath's shapes need no repair
        # What the room does when it accepts an annotation from an import:
        record |= {"author": "u-roubaix", "status": "ok", "problem": None, "comments": []}
        record |= {"created": 1_700_000_000_000, "updated": 1_700_000_000_000}
        record["measurements"] = merge_measurements(
            record.get("measurements"), verdict.measurements
        )
        stored.append((key, record))
    out = feature_collection(stored)

    core = out["features"][0]["properties"]
    # A 4096 x 4096 square + two 4096-wide triangles (1024.5 and 1024 high), less a
    # 2048 x 2048 hole, at 0.25 um per pixel.
    assert core["measurements"]["area_um2"] == (20_972_544 - 4_194_304) * 0.0625
    assert core["measurements"]["Num Detections"] == 412.0
    assert core["author"] == "u-roubaix" and core["status"] == "ok"
    for f in out["features"]:
        for name in SERVER_PROPERTIES:
            f["properties"].pop(name)
        measurements = f["properties"]["measurements"]
        for name in MEASUREMENT_KEYS:
            measurements.pop(name, None)
        if not measurements:
            del f["properties"]["measurements"]
    assert out == body


def test_unknown_properties_survive_even_with_clashing_names() -> None:
    props = {
        "locked": "no",
        "geometry": "wkt",
        "extraProperties": [1],
        "color": [1, 2, 3],
        "z": None,
    }
    body = feature(**props)
    key, record = feature_to_annotation(body)
    assert record["geometry"] == body["geometry"]  # not clobbered by the property
    assert "locked" not in record
    assert annotation_to_feature(key, record) == body


def test_record_fields_written_by_clients_are_exported_as_properties() -> None:
    record = {
        "geometry": {"type": "Point", "coordinates": [1, 2]},
        "classification": None,
        "name": "dot",
        "locked": False,
        "opacity": 0.5,  # a field some client added
    }
    out = annotation_to_feature("k", record)
    assert out == {
        "type": "Feature",
        "id": "k",
        "geometry": record["geometry"],
        "properties": {
            "objectType": "annotation",
            "name": "dot",
            "isLocked": False,
            "opacity": 0.5,
        },
    }
    assert feature_to_annotation(out) == ("k", record)


# --- accepted forms --------------------------------------------------------------------------


def test_bare_list_and_single_feature_are_accepted() -> None:
    features = qupath_export()["features"]
    assert parse_feature_collection(features) == parse_feature_collection(qupath_export())
    assert parse_feature_collection(features[2]) == [parse_feature_collection(features)[2]]
    assert parse_feature_collection({"type": "FeatureCollection", "features": []}) == []


def test_features_without_an_id_get_a_uuid4() -> None:
    no_id = feature()
    del no_id["id"]
    legacy = feature()
    legacy["id"] = "PathAnnotationObject"  # QuPath v0.2 put the class name here
    (k1, _), (k2, _) = parse_feature_collection([no_id, legacy])
    assert uuid.UUID(k1).version == 4 and uuid.UUID(k2).version == 4 and k1 != k2
    counter = iter(range(100))
    assert parse_feature_collection([no_id], new_id=lambda: f"n{next(counter)}")[0][0] == "n0"


def test_numeric_id_becomes_a_string() -> None:
    assert feature_to_annotation(feature() | {"id": 7})[0] == "7"


def test_older_qupath_forms_are_read() -> None:
    body = feature(
        classification={"name": "Tumor", "colorRGB": -3670016},  # QuPath <= 0.3
        measurements=[{"name": "Area", "value": 12.5}, {"name": "Count", "value": None}],
        isLocked=False,
    )
    del body["properties"]["objectType"]  # missing means annotation, as in QuPath
    _, record = feature_to_annotation(body)
    assert record["classification"] == {"name": "Tumor", "color": [200, 0, 0]}
    assert record["measurements"] == {"Area": 12.5, "Count": None}
    assert record["locked"] is False
    props = annotation_to_feature("f1", record)["properties"]
    assert props["isLocked"] is False and props["classification"]["color"] == [200, 0, 0]


def test_packed_int_color_in_classification() -> None:
    _, record = feature_to_annotation(feature(classification={"name": "A", "color": 0x00FF8001}))
    assert record["classification"] == {"name": "A", "color": [255, 128, 1]}


def test_renamed_derived_class_exports_its_new_name() -> None:
    _, record = feature_to_annotation(feature(classification={"names": ["Tumor", "Positive"]}))
    record["classification"] = record["classification"] | {"name": "Stroma"}
    props = annotation_to_feature("f1", record)["properties"]
    assert props["classification"] == {"name": "Stroma"}


def test_comments_and_server_fields_are_read_back() -> None:
    comments = [{"id": "c1", "author": "u1", "text": "check margin", "created": 1.7e12}]
    body = feature(author="u1", status="repaired", problem="Repaired: x.", comments=comments)
    _, record = feature_to_annotation(body)
    assert record["comments"] == comments and record["status"] == "repaired"
    assert annotation_to_feature("f1", record) == body


# --- refusals --------------------------------------------------------------------------------

GOOD = feature()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (None, "not null"),
        ("FeatureCollection", "not the string"),
        ({"type": "Polygon", "coordinates": []}, '"type" must be "FeatureCollection" or "Feature"'),
        ({"type": "FeatureCollection"}, '"features" must be a list, not null'),
        ({"type": "FeatureCollection", "features": {"0": GOOD}}, '"features" must be a list'),
        ([GOOD, GOOD | {"id": "f2"}, 5], "feature 2: a Feature must be an object"),
        ([GOOD | {"type": "feature"}], 'feature 0: "type" must be "Feature"'),
        ([GOOD, GOOD], "feature 1: id 'f1' repeats the id of feature 0"),
        ([GOOD | {"id": ""}], '"id" must be a non-empty string'),
        ([GOOD | {"id": "x" * 300}], '"id" must be a non-empty string'),
        ([GOOD | {"id": True}], '"id" must be'),
        ([GOOD | {"id": 1.5}], '"id" must be'),
        ([GOOD | {"geometry": None}], '"geometry" must be a GeoJSON geometry object, not null'),
        ([GOOD | {"geometry": "POINT (1 2)"}], '"geometry" must be'),
        ([GOOD | {"geometry": {"coordinates": [1, 2]}}], '"geometry" must be'),
        ([GOOD | {"properties": []}], '"properties" must be an object'),
        ([feature(objectType="detection")], "objectType 'detection' cannot be imported"),
        ([feature(objectType=3)], "objectType the number 3"),
        ([feature(name=5)], '"name" must be a string'),
        ([feature(isLocked="true")], '"isLocked" must be true or false'),
        ([feature(classification="Tumor")], '"classification" must be an object or null'),
        ([feature(classification={"color": [1, 2, 3]})], 'needs a "name"'),
        ([feature(classification={"name": ""})], '"classification.name" must be a non-empty'),
        ([feature(classification={"names": []})], '"classification.names" must be'),
        ([feature(classification={"name": "A", "color": [1, 2]})], "[r, g, b]"),
        ([feature(classification={"name": "A", "color": [1, 2, 256]})], "[r, g, b]"),
        ([feature(classification={"name": "A", "color": [1, 2, True]})], "[r, g, b]"),
        ([feature(classification={"name": "A", "colorRGB": "red"})], "[r, g, b]"),
        ([feature(measurements=3)], '"measurements" must be an object or a list'),
        ([feature(measurements=[{"value": 1}])], '"measurements[0]" must be an object'),
        ([feature(author=1)], '"author" must be a string'),
        ([feature(created="yesterday")], '"created" must be a time'),
        ([feature(updated=float("nan"))], '"updated" must be a time'),
        ([feature(comments="nice")], '"comments" must be a list'),
        ([feature(comments=[{"id": "c"}])], '"comments[0].text" must be a string'),
        ([feature(comments=[{"text": "t", "created": "now"}])], '"comments[0].created"'),
        ([feature(comments=[{"text": "t", "author": 3}])], '"comments[0].author"'),
    ],
)
def test_malformed_bodies_are_refused_with_a_precise_message(body: object, message: str) -> None:
    before = copy.deepcopy(body)
    with pytest.raises(GeoJSONError) as caught:
        parse_feature_collection(body)
    assert message in str(caught.value)
    assert isinstance(caught.value, ValueError)  # the HTTP layer answers 400 for these
    assert body == before  # nothing was changed along the way


def test_invalid_geometry_is_not_a_parse_error() -> None:
    # A self-crossing or out-of-bounds shape is for the geometry check to judge per feature.
    bowtie = {"type": "Polygon", "coordinates": [[[0, 0], [10, 10], [10, 0], [0, 10], [0, 0]]]}
    weird = {"type": "GeometryCollection", "geometries": []}
    records = parse_feature_collection(
        [GOOD | {"geometry": bowtie}, GOOD | {"id": "f2", "geometry": weird}]
    )
    assert [r["geometry"] for _, r in records] == [bowtie, weird]


# --- fuzzing ---------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)  # what a Y document can hold
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
    max_leaves=20,
)
field_names = st.sampled_from(
    [
        "geometry",
        "classification",
        "name",
        "locked",
        "author",
        "created",
        "updated",
        "comments",
        "status",
        "problem",
        "measurements",
        "extraProperties",
        "objectType",
        "isLocked",
        "color",
    ]
) | st.text(max_size=8)


@settings(max_examples=200, deadline=None)
@given(record=st.dictionaries(field_names, json_values, max_size=8), key=st.text(min_size=1))
def test_exporting_any_record_never_raises_and_gives_json(record: dict, key: str) -> None:
    out = annotation_to_feature(key, record)
    orjson.loads(orjson.dumps(out))
    assert out["properties"]["objectType"] == "annotation"


def point_feature(props: object) -> dict:
    return {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [0, 0]},
        "properties": props,
    }


@settings(max_examples=300, deadline=None)
@given(
    body=json_values
    | st.lists(json_values.map(point_feature), max_size=3)
    | st.lists(st.dictionaries(field_names, json_values, max_size=6).map(point_feature), max_size=3)
)
def test_parsing_any_body_either_works_or_raises_geojson_error(body: object) -> None:
    try:
        records = parse_feature_collection(body)
    except GeoJSONError as exc:
        assert str(exc)
        return
    event("parsed")
    for key, record in records:
        orjson.dumps(record)
        assert annotation_to_feature(key, record)["id"] == key


unknown_props = st.dictionaries(
    st.text(min_size=1, max_size=8).filter(
        lambda k: (
            k
            not in {
                "objectType",
                "isLocked",
                "name",
                "classification",
                "measurements",
                "author",
                "status",
                "problem",
                "comments",
                "created",
                "updated",
            }
        )
    ),
    json_values,
    max_size=4,
)


@settings(max_examples=200, deadline=None)
@given(
    props=unknown_props,
    name=st.none() | st.text(max_size=10),
    cls=st.none()
    | st.builds(
        lambda n, c: {"name": n, "color": c},
        st.text(min_size=1, max_size=10),
        st.lists(st.integers(0, 255), min_size=3, max_size=3),
    ),
    locked=st.sampled_from([None, True, False]),
)
def test_any_qupath_feature_round_trips(
    props: dict, name: str | None, cls: dict | None, locked: bool | None
) -> None:
    p: dict = {"objectType": "annotation", **props}
    if name is not None:
        p["name"] = name
    if cls is not None:
        p["classification"] = cls
    if locked is not None:
        p["isLocked"] = locked
    body = {
        "type": "Feature",
        "id": "k",
        "geometry": {"type": "Point", "coordinates": [0, 0]},
        "properties": p,
    }
    key, record = feature_to_annotation(copy.deepcopy(body))
    out = annotation_to_feature(key, record)
    assert out == body
