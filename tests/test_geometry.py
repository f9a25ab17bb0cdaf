"""Geometry check, repair and measurement: named cases from the issue plus fuzzing."""

from __future__ import annotations

import math

import orjson
import pytest
import shapely
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from collab.annotations.geometry import (
    ALLOWED_TYPES,
    GeometryVerdict,
    check_geometry,
    check_geometry_general,
    closed_rings,
    measure,
    merge_measurements,
    to_geojson,
)

W, H = 100_000, 80_000


def check(geom: object, **kw: object) -> GeometryVerdict:
    kw.setdefault("width", W)
    kw.setdefault("height", H)
    kw.setdefault("mpp", 0.5)
    return check_geometry(geom, **kw)  # type: ignore[arg-type]


def polygon(*rings: list[list[float]]) -> dict:
    return {"type": "Polygon", "coordinates": [list(r) for r in rings]}


DIMENSION = {
    "Point": 0,
    "MultiPoint": 0,
    "LineString": 1,
    "MultiLineString": 1,
    "Polygon": 2,
    "MultiPolygon": 2,
}
SQUARE = [[0, 0], [100, 0], [100, 100], [0, 100], [0, 0]]


def assert_stable(verdict: GeometryVerdict, **kw: object) -> None:
    """The invariants every verdict keeps, and the no-loop guarantee for repairs."""
    assert verdict.status in ("ok", "repaired", "invalid")
    if verdict.status == "invalid":
        assert verdict.problem and verdict.problem.endswith(".")
        assert verdict.geometry is None and verdict.shape is None and verdict.measurements == {}
        return
    assert verdict.shape is not None and verdict.shape.is_valid and not verdict.shape.is_empty
    assert_sized(verdict.shape)
    if verdict.status == "ok":
        assert verdict.problem is None and verdict.geometry is None
        return
    assert verdict.problem and verdict.geometry is not None
    # What the server stores must be plain JSON, and checking it again must change nothing.
    stored = orjson.loads(orjson.dumps(verdict.geometry))
    again = check(stored, **kw)
    assert again.status == "ok", again.problem
    assert again.geometry is None
    assert again.measurements == verdict.measurements
    assert shapely.equals_exact(again.shape, verdict.shape, tolerance=0)


def assert_sized(shape: shapely.Geometry) -> None:
    """No part of a usable geometry is degenerate: polygons have area, lines have length."""
    for part in shapely.get_parts(shape):
        if part.geom_type == "Polygon":
            assert part.area > 0, part.wkt
        elif part.geom_type == "LineString":
            assert part.length > 0, part.wkt


# --- ok --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "geom",
    [
        {"type": "Point", "coordinates": [10, 20]},
        {"type": "Point", "coordinates": [0, 0]},  # the slide's corner is inside
        {"type": "Point", "coordinates": [W, H]},
        {"type": "MultiPoint", "coordinates": [[1, 1], [1, 1], [2.5, 3]]},  # repeats are fine
        {"type": "LineString", "coordinates": [[0, 0], [10, 10], [0, 10], [10, 0]]},  # crossing
        {"type": "LineString", "coordinates": [[0, 0], [0, 0], [10, 10]]},
        {"type": "MultiLineString", "coordinates": [[[0, 0], [1, 1]], [[5, 5], [6, 9]]]},
        polygon(SQUARE),
        polygon(SQUARE, [[10, 10], [20, 10], [20, 20], [10, 20], [10, 10]]),
        polygon(
            SQUARE,
            [[10, 10], [20, 10], [20, 20], [10, 10]],
            [[50, 50], [60, 50], [60, 60], [50, 60], [50, 50]],
        ),
        # A hole touching the shell at a single point is valid (OGC), so it is left alone.
        polygon(SQUARE, [[0, 50], [20, 40], [20, 60], [0, 50]]),
        # Duplicate consecutive points are not invalid: no rewrite for them.
        polygon([[0, 0], [100, 0], [100, 0], [100, 100], [0, 100], [0, 100], [0, 0]]),
        {
            "type": "MultiPolygon",
            "coordinates": [[SQUARE], [[[200, 200], [300, 200], [250, 300], [200, 200]]]],
        },
        (  # tuples, as a Python caller might build them
            {"type": "LineString", "coordinates": ((1.5, 2.5), (3, 4))}
        ),
    ],
)
def test_valid_geometries_are_ok_and_not_rewritten(geom: dict) -> None:
    verdict = check(geom)
    assert verdict.status == "ok", verdict.problem
    assert verdict.geometry is None
    assert_stable(verdict)


def test_foreign_members_do_not_matter() -> None:
    # QuPath writes a "plane" member for z-stacks; it is not ours to judge.
    geom = {"type": "Point", "coordinates": [5, 5], "plane": {"c": -1, "z": 0, "t": 0}}
    assert check(geom).status == "ok"


# --- repaired --------------------------------------------------------------------------------


def test_bowtie_becomes_two_triangles() -> None:
    verdict = check(polygon([[0, 0], [10, 10], [10, 0], [0, 10], [0, 0]]))
    assert verdict.status == "repaired"
    assert verdict.geometry is not None and verdict.geometry["type"] == "MultiPolygon"
    assert len(verdict.geometry["coordinates"]) == 2
    assert verdict.shape.area == pytest.approx(50)
    assert "self-intersection at (5, 5)" in verdict.problem
    assert_stable(verdict)


def test_figure_eight_ring_touching_itself_is_split() -> None:
    # One ring passing twice through (5, 5): invalid ("ring self-intersection").
    ring = [[5, 5], [0, 0], [0, 10], [5, 5], [10, 0], [10, 10], [5, 5]]
    verdict = check(polygon(ring))
    assert verdict.status == "repaired"
    assert verdict.shape.geom_type == "MultiPolygon"
    assert verdict.shape.area == pytest.approx(50)
    assert_stable(verdict)


def test_freehand_loop_crossing_itself_keeps_everything_it_encloses() -> None:
    # An outline that overlaps itself: the union, not the XOR ("linework") of the loops.
    ring = [[0, 0], [10, 0], [10, 10], [0, 10], [0, 1], [11, 1], [11, 9], [1, 9], [1, 0.5], [0, 0]]
    verdict = check(polygon(ring))
    assert verdict.status == "repaired"
    assert verdict.shape.area == pytest.approx(107.25)
    assert_stable(verdict)


def test_spike_is_cut_off() -> None:
    ring = [[0, 0], [10, 0], [10, 5], [20, 5], [10, 5], [10, 10], [0, 10], [0, 0]]
    verdict = check(polygon(ring))
    assert verdict.status == "repaired"
    assert verdict.shape.geom_type == "Polygon"
    assert verdict.shape.bounds == (0, 0, 10, 10)
    assert_stable(verdict)


def test_hole_along_the_shell_is_subtracted() -> None:
    hole = [[0, 20], [50, 20], [50, 50], [0, 50], [0, 20]]
    verdict = check(polygon(SQUARE, hole))
    assert verdict.status == "repaired"
    assert verdict.shape.geom_type == "Polygon"
    assert verdict.shape.area == pytest.approx(100 * 100 - 50 * 30)
    assert_stable(verdict)


def test_overlapping_multipolygon_parts_are_merged() -> None:
    other = [[50, 50], [150, 50], [150, 150], [50, 150], [50, 50]]
    verdict = check({"type": "MultiPolygon", "coordinates": [[SQUARE], [other]]})
    assert verdict.status == "repaired"
    assert verdict.shape.area == pytest.approx(2 * 100 * 100 - 50 * 50)
    assert_stable(verdict)


def test_open_ring_is_read_closed_and_left_as_written() -> None:
    verdict = check(polygon(SQUARE[:-1]))
    assert verdict.status == "ok"
    assert verdict.geometry is None  # nothing to rewrite
    assert verdict.shape.area == pytest.approx(100 * 100)
    assert verdict.problem is None


def test_closed_rings_for_export() -> None:
    open_square = {"type": "Polygon", "coordinates": [SQUARE[:-1]], "bbox": [0, 0, 100, 100]}
    assert closed_rings(open_square) == {**open_square, "coordinates": [SQUARE]}
    multi = {"type": "MultiPolygon", "coordinates": [[SQUARE[:-1]], [SQUARE]]}
    assert closed_rings(multi)["coordinates"] == [[SQUARE], [SQUARE]]
    closed = {"type": "Polygon", "coordinates": [SQUARE]}
    assert closed_rings(closed) is closed
    for garbage in (
        None, "x", {"type": "Polygon"}, {"type": "Polygon", "coordinates": [[1, 2]]},
        {"type": "Polygon", "coordinates": [None, 5]}, {"type": "LineString", "coordinates": [[0, 0], [1, 1]]},
    ):
        assert closed_rings(garbage) == garbage


def test_z_values_are_dropped() -> None:
    verdict = check({"type": "LineString", "coordinates": [[1, 1, 7], [5, 5, 7]]})
    assert verdict.status == "repaired"
    assert verdict.geometry == {"type": "LineString", "coordinates": [[1.0, 1.0], [5.0, 5.0]]}
    assert_stable(verdict)


def test_degenerate_part_of_a_multiline_is_dropped() -> None:
    geom = {"type": "MultiLineString", "coordinates": [[[1, 1], [1, 1]], [[2, 2], [3, 3]]]}
    verdict = check(geom)
    assert verdict.status == "repaired"
    assert verdict.geometry["coordinates"] == [[2.0, 2.0], [3.0, 3.0]]
    assert_stable(verdict)


def test_repair_never_leaves_a_polygon_of_zero_area() -> None:
    # Two crossing slivers: make_valid leaves a triangle whose corners round onto one line.
    rings = [[[0, 0], [5, 3], [17, 17], [0, 0]], [[0, 0], [0, 1], [19, 18], [0, 0]]]
    verdict = check(polygon(*rings, rings[0]), width=20, height=20)
    assert verdict.status == "invalid"
    assert "zero area" in verdict.problem and "self-intersection" in verdict.problem
    assert_stable(verdict)


def test_zero_area_ring_that_geos_calls_valid_is_invalid() -> None:
    sliver = [[5, 3], [12.92, 12.24], [12.920000000000002, 12.240000000000002], [5, 3]]
    assert shapely.Polygon(sliver).is_valid  # GEOS's view: the check must not rely on it
    verdict = check(polygon(sliver))
    assert verdict.status == "invalid"
    assert verdict.problem == "The polygon has zero area: nothing of it is left once made valid."


def test_zero_area_part_of_a_multipolygon_is_dropped() -> None:
    sliver = [[5, 3], [12.92, 12.24], [12.920000000000002, 12.240000000000002], [5, 3]]
    triangle = [[0, 0], [1, 0], [1, 1], [0, 0]]
    verdict = check({"type": "MultiPolygon", "coordinates": [[sliver], [triangle]]})
    assert verdict.status == "repaired"
    assert "a part with zero area" in verdict.problem
    assert verdict.shape.geom_type == "Polygon" and verdict.shape.area == pytest.approx(0.5)
    assert_stable(verdict)


def test_repair_keeps_foreign_members_but_drops_a_stale_bbox() -> None:
    bowtie = [[0, 0], [100, 100], [100, 0], [0, 100], [0, 0]]
    geom = polygon(bowtie) | {"plane": {"z": 1}, "bbox": [0, 0, 1, 1]}
    verdict = check(geom)
    assert verdict.geometry["plane"] == {"z": 1}
    assert "bbox" not in verdict.geometry


def test_repair_over_the_vertex_limit_is_invalid() -> None:
    # The bowtie has 5 positions; its repair adds the crossing point twice.
    verdict = check(polygon([[0, 0], [10, 10], [10, 0], [0, 10], [0, 0]]), max_vertices=6)
    assert verdict.status == "invalid"
    assert "repaired geometry has 8 vertices" in verdict.problem


# --- invalid ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("geom", "words"),
    [
        (polygon([[0, 0], [10, 0], [5, 0], [0, 0]]), "zero area"),
        (polygon([[0, 0], [10, 0], [20, 0], [10, 0], [0, 0]]), "zero area"),
        ({"type": "LineString", "coordinates": [[1, 1], [1, 1]]}, "zero length"),
        ({"type": "LineString", "coordinates": [[1, 1]]}, "at least 2 positions"),
        (polygon([[0, 0], [1, 1], [0, 0]]), "at least 4"),
        ({"type": "Point", "coordinates": [math.nan, 1]}, "not finite"),
        ({"type": "Point", "coordinates": [1, math.inf]}, "not finite"),
        (polygon([[0, 0], [10, -math.inf], [10, 10], [0, 0]]), "not finite"),
        ({"type": "Point", "coordinates": [W + 1, 5]}, "outside the slide"),
        ({"type": "Point", "coordinates": [-0.5, 5]}, "outside the slide"),
        ({"type": "LineString", "coordinates": [[0, 0], [5, H + 0.01]]}, "outside the slide"),
        ({"type": "MultiPoint", "coordinates": [[1, 1]] * 100_001}, "100001 vertices"),
        ({"type": "GeometryCollection", "geometries": []}, "not supported"),
        ({"type": "polygon", "coordinates": [SQUARE]}, "not supported"),
        ({"coordinates": [1, 2]}, "not supported"),
        ({"type": ["Point"], "coordinates": [1, 2]}, "not supported"),
        (None, "GeoJSON object"),
        ("POLYGON ((0 0, 1 0, 1 1, 0 0))", "GeoJSON object"),
        ([[0, 0], [1, 1]], "GeoJSON object"),
        (42, "GeoJSON object"),
        ({"type": "Point"}, "must be a list"),
        ({"type": "Point", "coordinates": "1,2"}, "must be a list"),
        ({"type": "Point", "coordinates": [1]}, "2 numbers"),
        ({"type": "Point", "coordinates": [1, 2, 3, 4]}, "2 numbers"),
        ({"type": "Point", "coordinates": ["1", "2"]}, "not a number"),
        ({"type": "Point", "coordinates": [True, 2]}, "boolean"),
        ({"type": "Point", "coordinates": [None, 2]}, "not a number"),
        ({"type": "Point", "coordinates": [10**400, 2]}, "too large"),
        ({"type": "Point", "coordinates": [[1, 2]]}, "not a list of 1 item."),
        ({"type": "LineString", "coordinates": [[0, 0], [1, 0, 0]]}, "mix 2 and 3"),
        ({"type": "LineString", "coordinates": [[0, 1], [1, False]]}, "boolean"),
        ({"type": "LineString", "coordinates": [[0, 0], {"x": 1, "y": 1}]}, "not an object"),
        ({"type": "Polygon", "coordinates": []}, "empty"),
        ({"type": "Polygon", "coordinates": [[]]}, "empty"),
        ({"type": "Polygon", "coordinates": [SQUARE, []]}, "at least 4"),
        ({"type": "Polygon", "coordinates": SQUARE}, "must be a list"),
        ({"type": "MultiPolygon", "coordinates": [[SQUARE], []]}, "no rings"),
        ({"type": "MultiLineString", "coordinates": [[[0, 0], [1, 1]], [[2, 2]]]}, "Line 1"),
    ],
)
def test_unusable_geometries_are_invalid_with_a_reason(geom: object, words: str) -> None:
    verdict = check(geom)
    assert verdict.status == "invalid"
    assert words.lower() in verdict.problem.lower(), verdict.problem
    assert_stable(verdict)


def test_vertex_limit_is_inclusive() -> None:
    line = {"type": "LineString", "coordinates": [[i % 100, 1] for i in range(100_000)]}
    assert check(line).status == "ok"
    line["coordinates"].append([1, 1])
    assert "100001 vertices, over the limit of 100000" in check(line).problem


def test_huge_geometry_is_refused_before_conversion() -> None:
    # 10 million positions of garbage: refused from the counts alone, without reading them.
    rings = [[None] * 1_000_000 for _ in range(10)]
    verdict = check({"type": "Polygon", "coordinates": rings})
    assert verdict.status == "invalid" and "over the limit" in verdict.problem


def test_bad_slide_size_makes_everything_out_of_bounds() -> None:
    assert check({"type": "Point", "coordinates": [1, 1]}, width=math.nan).status == "invalid"


# --- measure ---------------------------------------------------------------------------------


def test_measurements_in_microns() -> None:
    sq = check(polygon(SQUARE), mpp=0.5)
    assert sq.measurements == {"area_um2": 2500.0, "perimeter_um": 200.0}
    holed = check(polygon(SQUARE, [[10, 10], [20, 10], [20, 20], [10, 20], [10, 10]]), mpp=1)
    assert holed.measurements == {"area_um2": 9900.0, "perimeter_um": 440.0}
    line = check({"type": "LineString", "coordinates": [[0, 0], [3, 4]]}, mpp=0.25)
    assert line.measurements == {"length_um": 1.25}
    assert check({"type": "Point", "coordinates": [1, 1]}).measurements == {}


@pytest.mark.parametrize("mpp", [None, 0, -1, math.nan, math.inf, "0.5", True])
def test_no_measurements_without_a_usable_mpp(mpp: object) -> None:
    assert measure(shapely.box(0, 0, 10, 10), mpp) == {}  # type: ignore[arg-type]


def test_measurements_are_rounded_for_stable_rewrites() -> None:
    values = measure(shapely.box(0, 0, 1, 1 / 3), 0.2527)
    assert values == {"area_um2": 0.021, "perimeter_um": 0.674}


def test_merge_measurements_keeps_foreign_keys_and_replaces_ours() -> None:
    existing = {"Area µm^2": 12.0, "area_um2": 1.0, "length_um": 3.0}
    assert merge_measurements(existing, {"area_um2": 2.0, "perimeter_um": 4.0}) == {
        "Area µm^2": 12.0,
        "area_um2": 2.0,
        "perimeter_um": 4.0,
    }
    assert merge_measurements("garbage", {"length_um": 1.0}) == {"length_um": 1.0}


def test_to_geojson_round_trips_every_allowed_type() -> None:
    shapes = [
        shapely.Point(1, 2),
        shapely.MultiPoint([(1, 2), (3, 4)]),
        shapely.LineString([(1, 2), (3, 4)]),
        shapely.MultiLineString([[(1, 2), (3, 4)], [(5, 6), (7, 8)]]),
        shapely.box(0, 0, 10, 10).difference(shapely.box(2, 2, 4, 4)),
        shapely.MultiPolygon([shapely.box(0, 0, 1, 1), shapely.box(2, 2, 3, 3)]),
    ]
    assert sorted(s.geom_type for s in shapes) == sorted(ALLOWED_TYPES)
    for s in shapes:
        data = to_geojson(s)
        assert orjson.loads(orjson.dumps(data)) == data
        assert shapely.equals_exact(shapely.geometry.shape(data), s, tolerance=0)


# --- fuzzing ---------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=30,
)
coordinate = st.one_of(
    st.floats(min_value=-10, max_value=120),
    st.integers(min_value=-10, max_value=120),
    st.sampled_from([math.nan, math.inf, True, None, "1", 10**400]),
)
position = st.one_of(
    st.lists(st.integers(0, 100), min_size=2, max_size=2),  # mostly good positions
    st.lists(st.integers(0, 100), min_size=2, max_size=2),
    st.lists(coordinate, min_size=0, max_size=4),
    json_values,
)
nested = st.recursive(
    st.lists(position, max_size=8), lambda c: st.lists(c, max_size=3), max_leaves=40
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=json_values)
def test_arbitrary_json_never_raises(value: object) -> None:
    assert_stable(check(value, width=100, height=100))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(ALLOWED_TYPES), coords=st.one_of(nested, position, json_values))
def test_plausible_geometries_never_raise(kind: str, coords: object) -> None:
    verdict = check({"type": kind, "coordinates": coords}, width=100, height=100)
    assert_stable(verdict, width=100, height=100)
    if verdict.shape is not None:
        assert shapely.get_dimensions(verdict.shape) == DIMENSION[kind]


ring = st.lists(st.tuples(st.integers(0, 20), st.integers(0, 20)), min_size=3, max_size=12)


@settings(max_examples=200, deadline=None)
@given(polygons=st.lists(st.lists(ring, min_size=1, max_size=3), min_size=1, max_size=2))
# Found by this test: make_valid left a polygon of zero area, which was stored as "repaired".
@example(polygons=[[[(0, 0), (5, 3), (17, 17)], [(0, 0), (0, 1), (19, 18)], [(0, 0), (5, 3), (17, 17)]]])
def test_random_polygons_repair_to_stable_polygons(
    polygons: list[list[list[tuple[int, int]]]],
) -> None:
    # Random vertices on a small grid: lots of crossings, collinear spikes, touching holes
    # and holes of different lengths.
    coords = [[[list(p) for p in r] + [list(r[0])] for r in rings] for rings in polygons]
    geom = {"type": "MultiPolygon", "coordinates": coords}
    if len(coords) == 1:
        geom = {"type": "Polygon", "coordinates": coords[0]}
    verdict = check(geom, width=20, height=20)
    assert_stable(verdict, width=20, height=20)
    assert check(geom, width=20, height=20) == verdict  # deterministic
    if verdict.shape is not None:
        assert verdict.shape.geom_type in ("Polygon", "MultiPolygon")
        assert_sized(verdict.shape)


# Real-valued coordinates, with the tiny and subnormal values that round areas and lengths
# to zero.
real = st.one_of(
    st.integers(0, 20),
    st.floats(0, 20, allow_nan=False),
    st.sampled_from([1e-9, 5e-324, 2.3346829647397832e-262, 10.000000000000002]),
)
real_point = st.tuples(real, real)


@settings(max_examples=200, deadline=None)
@given(polygons=st.lists(st.lists(st.lists(real_point, min_size=3, max_size=10), min_size=1, max_size=3),
                         min_size=1, max_size=2))
# Found by this test: a repair of zero area (its corners 1e-262 apart).
@example(polygons=[[
    [(0, 20), (2.3346829647397832e-262, 0), (1, 1), (0, 12)],
    [(0, 0), (0, 0), (0, 0)],
    [(1, 0), (0, 20), (2.3346829647397832e-262, 0), (1, 0), (0, 2)],
]])
def test_real_polygons_never_repair_to_nothing(polygons: list[list[list[tuple[float, float]]]]) -> None:
    coords = [[[list(p) for p in r] + [list(r[0])] for r in rings] for rings in polygons]
    verdict = check({"type": "MultiPolygon", "coordinates": coords}, width=20, height=20)
    assert_stable(verdict, width=20, height=20)  # includes: no part of zero area


@settings(max_examples=200, deadline=None)
@given(lines=st.lists(st.lists(real_point, min_size=2, max_size=6), min_size=1, max_size=3), multi=st.booleans())
# Found by this test: a line of zero length (5e-324 is the smallest float) was "ok".
@example(lines=[[(0, 0), (0, 5e-324)]], multi=False)
def test_real_lines_never_have_zero_length(lines: list[list[tuple[float, float]]], multi: bool) -> None:
    if multi:
        geom = {"type": "MultiLineString", "coordinates": [[list(p) for p in line] for line in lines]}
    else:
        geom = {"type": "LineString", "coordinates": [list(p) for p in lines[0]]}
    verdict = check(geom, width=20, height=20)
    assert_stable(verdict, width=20, height=20)  # includes: no part of zero length


# --- the fast path for plain polygons ------------------------------------------------------

_number = st.one_of(
    st.floats(min_value=-50, max_value=1100),
    st.sampled_from([math.nan, math.inf, -math.inf]),
    st.integers(min_value=-5, max_value=1100),
    st.sampled_from([0, 1, 0.0, 1.0, True, False, "1"]),
)
_ring = st.lists(st.lists(_number, min_size=2, max_size=3), min_size=0, max_size=12)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ring=_ring, close=st.booleans(), extra_ring=st.booleans())
@example(ring=[[0, 0], [True, 0], [1, 1], [0, 1]], close=True, extra_ring=False)  # a bool read as 1
@example(ring=[[0, 0], [10, 10], [10, 0], [0, 10]], close=True, extra_ring=False)  # a bowtie
@example(ring=[[0, 0], [5, 0], [10, 0]], close=False, extra_ring=False)  # no area
@example(ring=[[0, 0], [2000, 0], [0, 10]], close=True, extra_ring=False)  # outside the slide
@example(ring=[[5, 3], [12.92, 12.24], [12.920000000000002, 12.240000000000002]], close=True,
         extra_ring=False)  # zero area, yet valid to GEOS
def test_plain_polygon_fast_path_agrees_with_the_general_check(ring: list, close: bool, extra_ring: bool) -> None:
    """Whatever the fast path answers for a one-ring Polygon is what the general check answers;
    anything it does not take (repairs, problems, holes) goes to the general check."""
    if close and ring:
        ring = [*ring, ring[0]]
    rings = [ring, [[1, 1], [2, 1], [2, 2], [1, 1]]] if extra_ring else [ring]
    geom = {"type": "Polygon", "coordinates": rings}
    fast = check_geometry(geom, width=1000, height=1000, mpp=0.25)
    general = check_geometry_general(geom, width=1000, height=1000, mpp=0.25)
    assert (fast.status, fast.problem, fast.geometry, fast.measurements) == (
        general.status, general.problem, general.geometry, general.measurements)
    assert (fast.shape is None) == (general.shape is None)
    if fast.shape is not None:
        assert shapely.equals_exact(fast.shape, general.shape, tolerance=0)
