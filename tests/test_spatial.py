"""SpatialIndex answers equal a brute-force shapely scan, through edits and rebuilds."""

from __future__ import annotations

import asyncio
import math
import random

import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from collab.annotations.spatial import SpatialIndex, build_tree

SIZE = 1000  # the random slide is SIZE x SIZE pixels


# --- brute force: the definitions the index must agree with ----------------------------------


def brute_bbox(model: dict[str, shapely.Geometry], box: tuple[float, ...]) -> list[str]:
    region = shapely.box(*box)
    return sorted(k for k, g in model.items() if g.intersects(region))


def brute_point(model: dict[str, shapely.Geometry], x: float, y: float, tol: float) -> list[str]:
    p = shapely.Point(x, y)
    return sorted(
        k
        for k, g in model.items()
        if (g.covers(p) if shapely.get_dimensions(g) == 2 else g.distance(p) <= tol)
    )


def brute_stats(
    model: dict[str, shapely.Geometry], box: tuple[float, ...], classes: dict[str, str | None]
) -> dict[str | None, tuple[int, float]]:
    region = shapely.box(*box)
    out: dict[str | None, tuple[int, float]] = {}
    for k, g in model.items():
        if g.intersects(region):
            count, area = out.get(classes[k], (0, 0.0))
            out[classes[k]] = (count + 1, area + g.intersection(region).area)
    return out


# --- random data -----------------------------------------------------------------------------

# Pixel coordinates with a thousandth of a pixel of resolution: no subnormal oddities.
coord = st.integers(0, SIZE * 1000).map(lambda v: v / 1000)


def make_shape(seed: int) -> shapely.Geometry:
    """A valid shape of any kind the index holds, of very different sizes, from a seed.

    One drawn integer per shape keeps generation cheap; hypothesis still shrinks the
    operation lists and boxes around it.
    """
    rnd = random.Random(seed)
    kind = rnd.choice(["polygon", "polygon", "polygon", "holed", "multi", "line", "point"])
    x, y = round(rnd.uniform(0, SIZE), 3), round(rnd.uniform(0, SIZE), 3)
    r = rnd.choice([1.0, 10.0, 80.0, 400.0])
    if kind == "point":
        return shapely.Point(x, y)
    if kind == "line":
        return shapely.LineString([(x, y), (rnd.uniform(0, SIZE), rnd.uniform(0, SIZE))])
    disc = shapely.Point(x, y).buffer(r, quad_segs=rnd.randint(1, 6))
    if kind == "holed":
        return disc.difference(shapely.Point(x, y).buffer(r / 2))
    if kind == "multi":
        return shapely.MultiPolygon([disc, shapely.box(x + 2 * r, y, x + 3 * r, y + r)])
    # A random star-ish polygon with crossings, made valid the way the server would.
    ring = [
        (x + r * rnd.uniform(0.2, 1) * math.cos(a), y + r * rnd.uniform(0.2, 1) * math.sin(a))
        for a in sorted(rnd.uniform(0, 2 * math.pi) for _ in range(rnd.randint(3, 24)))
    ]
    poly = shapely.make_valid(shapely.Polygon(ring), method="structure", keep_collapsed=False)
    return poly if not poly.is_empty else disc


shapes = st.builds(make_shape, st.integers(0, 2**32))
ids = st.sampled_from([f"a{i}" for i in range(40)])
classes = st.sampled_from(["Tumor", "Stroma", "Necrosis", None])
ops = st.lists(
    st.one_of(
        st.tuples(st.just("upsert"), ids, shapes),
        st.tuples(st.just("upsert"), ids, shapes),
        st.tuples(st.just("remove"), ids),
        st.tuples(st.just("rebuild")),
        st.tuples(st.just("snapshot")),  # start a background build ...
        st.tuples(st.just("install")),  # ... and install it later, after more edits
    ),
    max_size=60,
)
boxes = st.tuples(coord, coord, coord, coord).filter(lambda b: b[0] != b[2] and b[1] != b[3])


def run(ops_: list[tuple], index: SpatialIndex, model: dict[str, shapely.Geometry]) -> None:
    pending = None
    for op in ops_:
        if op[0] == "upsert":
            index.upsert(op[1], op[2])
            model[op[1]] = op[2]
        elif op[0] == "remove":
            index.remove(op[1])
            model.pop(op[1], None)
        elif op[0] == "rebuild":
            index.rebuild()
        elif op[0] == "snapshot":
            pending = build_tree(*index.snapshot())
        elif op[0] == "install" and pending is not None:
            index.install(pending)
        assert len(index) == len(model)


@settings(max_examples=200, deadline=None)
@given(
    initial=st.lists(st.tuples(ids, shapes), max_size=30),
    ops_=ops,
    queries=st.lists(boxes, min_size=1, max_size=4),
    points=st.lists(st.tuples(coord, coord, st.sampled_from([0.0, 2.0, 50.0])), max_size=4),
    labels=st.dictionaries(ids, classes),
    limit=st.sampled_from([1, 3, 256]),
)
def test_queries_match_brute_force(
    initial: list[tuple[str, shapely.Geometry]],
    ops_: list[tuple],
    queries: list[tuple[float, ...]],
    points: list[tuple[float, float, float]],
    labels: dict[str, str | None],
    limit: int,
) -> None:
    index = SpatialIndex(initial, min_delta_limit=limit)
    model = dict(initial)
    run(ops_, index, model)
    classification = {k: labels.get(k) for k in model}
    # A box around everything first, so a lost or stale id shows up wherever it is.
    assert index.query_bbox(-SIZE, -SIZE, 3 * SIZE, 3 * SIZE) == sorted(model)
    for box in queries:
        assert index.query_bbox(*box) == brute_bbox(model, box)
        # Corners in any order mean the same box.
        assert index.query_bbox(box[2], box[3], box[0], box[1]) == brute_bbox(model, box)
        stats = index.stats_bbox(*box, classification.__getitem__, mpp=0.5)
        expected = brute_stats(model, box, classification)
        rows = {row["name"]: row for row in stats["classes"]}
        assert set(rows) == set(expected)
        for name, (count, area) in expected.items():
            assert rows[name]["count"] == count
            assert rows[name]["area_px2"] == pytest.approx(area, rel=1e-9, abs=2e-3)
            assert rows[name]["area_um2"] == pytest.approx(area * 0.25, rel=1e-9, abs=2e-3)
        assert stats["count"] == sum(c for c, _ in expected.values())
    for x, y, tol in points:
        assert index.query_point(x, y, tolerance=tol) == brute_point(model, x, y, tol)


# --- the delta and rebuilds ------------------------------------------------------------------


def square(x: float, y: float, size: float = 10) -> shapely.Geometry:
    return shapely.box(x, y, x + size, y + size)


def test_edits_stay_in_the_delta_until_a_rebuild() -> None:
    index = SpatialIndex([(f"s{i}", square(i * 20, 0)) for i in range(1000)], min_delta_limit=5)
    assert index.delta_size == 0 and not index.needs_rebuild
    assert index.delta_limit == 31  # sqrt(1000) beats the minimum of 5
    index.upsert("s0", square(500, 500))  # moved
    index.remove("s1")
    index.upsert("new", square(0, 0))
    assert index.delta_size == 3
    assert index.query_bbox(0, 0, 30, 5) == ["new"]
    assert index.query_bbox(500, 500, 501, 501) == ["s0"]
    index.rebuild()
    assert index.delta_size == 0
    assert index.query_bbox(0, 0, 30, 5) == ["new"]
    assert index.query_bbox(500, 500, 501, 501) == ["s0"]


def test_needs_rebuild_past_the_limit() -> None:
    index = SpatialIndex(min_delta_limit=4)
    for i in range(3):
        index.upsert(f"s{i}", square(i, i))
    assert not index.needs_rebuild
    index.upsert("s3", square(3, 3))
    assert index.needs_rebuild


def test_equal_shape_is_not_an_edit() -> None:
    index = SpatialIndex([("a", square(0, 0))])
    index.upsert("a", square(0, 0))  # a re-check after a classification change
    assert index.delta_size == 0
    index.upsert("a", square(0, 1))
    assert index.delta_size == 1


def test_none_or_empty_shape_removes() -> None:
    index = SpatialIndex([("a", square(0, 0)), ("b", square(0, 0))])
    index.upsert("a", None)
    index.upsert("b", shapely.Polygon())
    assert len(index) == 0 and index.query_bbox(0, 0, 10, 10) == []
    index.remove("never-there")  # not an error, not an edit
    assert index.delta_size == 2


def test_stale_tree_is_refused_and_edits_after_a_snapshot_survive_install() -> None:
    index = SpatialIndex([("a", square(0, 0))])
    old = build_tree(*index.snapshot())
    index.upsert("b", square(100, 100))
    newer = build_tree(*index.snapshot())
    index.upsert("a", square(200, 200))  # after both snapshots
    index.remove("b")
    assert index.install(newer)
    assert not index.install(old)
    assert index.delta_size == 2  # a's move and b's removal are still pending
    assert index.query_bbox(0, 0, 300, 300) == ["a"]
    assert index.query_bbox(0, 0, 50, 50) == []


async def test_refresh_builds_in_a_thread_while_edits_go_on() -> None:
    index = SpatialIndex([(f"s{i}", square(i * 20, 0)) for i in range(100)], min_delta_limit=10)
    for i in range(10):
        index.upsert(f"s{i}", square(i * 20, 500))
    assert index.needs_rebuild
    task = asyncio.create_task(index.refresh())
    await asyncio.sleep(0)  # the snapshot is taken; the build runs in a worker thread
    index.upsert("late", square(0, 900))
    await task
    assert not index.needs_rebuild
    assert index.delta_size == 1  # only the edit made during the build
    assert index.query_bbox(0, 490, 200, 520) == [f"s{i}" for i in range(10)]
    assert index.query_bbox(0, 890, 5, 905) == ["late"]


def test_exact_intersection_not_envelope() -> None:
    # An L-shape whose envelope covers the query box, while the shape does not.
    ell = shapely.Polygon([(0, 0), (100, 0), (100, 10), (10, 10), (10, 100), (0, 100)])
    diagonal = shapely.LineString([(0, 0), (100, 100)])
    index = SpatialIndex([("ell", ell), ("diag", diagonal)])
    assert index.query_bbox(50, 50, 60, 60) == ["diag"]
    assert index.query_bbox(60, 20, 70, 30) == []
    index.upsert("ell2", ell)  # the same in the delta
    assert index.query_bbox(60, 20, 70, 30) == []


def test_degenerate_boxes_and_bad_input() -> None:
    index = SpatialIndex([("a", square(0, 0)), ("line", shapely.LineString([(20, 0), (20, 10)]))])
    assert index.query_bbox(5, 5, 5, 5) == ["a"]  # a point
    assert index.query_bbox(15, 5, 25, 5) == ["line"]  # a horizontal segment
    assert index.query_bbox(-5, 5, 0, 5) == ["a"]  # touching the edge counts
    with pytest.raises(ValueError, match="finite"):
        index.query_bbox(0, 0, math.nan, 1)
    with pytest.raises(ValueError, match="finite"):
        index.query_point(math.inf, 0)


def test_point_query_semantics() -> None:
    holed = shapely.box(0, 0, 100, 100).difference(shapely.box(40, 40, 60, 60))
    index = SpatialIndex(
        [
            ("holed", holed),
            ("dot", shapely.Point(50, 50)),
            ("line", shapely.LineString([(0, 200), (100, 200)])),
        ]
    )
    assert index.query_point(10, 10) == ["holed"]
    assert index.query_point(100, 50) == ["holed"]  # on the edge
    assert index.query_point(50, 50) == ["dot"]  # in the hole, on the dot
    assert index.query_point(51.5, 50) == ["dot"]  # within the default 2 px
    assert index.query_point(53, 50) == []
    assert index.query_point(50, 201, tolerance=1) == ["line"]
    assert index.query_point(50, 201, tolerance=0.5) == []


def test_stats_clip_to_the_box_and_group_by_class() -> None:
    index = SpatialIndex(
        [
            ("t1", square(0, 0, 100)),  # half inside the box below
            ("t2", square(60, 0, 10)),  # wholly inside
            ("s1", square(0, 0, 100)),
            ("u", shapely.LineString([(0, 0), (100, 100)])),
            ("far", square(500, 500)),
        ]
    )
    names = {"t1": "Tumor", "t2": "Tumor", "s1": "Stroma", "u": None, "far": "Tumor"}
    stats = index.stats_bbox(50, 0, 150, 100, names.__getitem__, mpp=2.0)
    assert stats == {
        "bbox": [50, 0, 150, 100],
        "count": 4,
        "area_px2": 5000 + 100 + 5000,
        "area_um2": 4 * (5000 + 100 + 5000),
        "classes": [
            {"name": "Stroma", "count": 1, "area_px2": 5000, "area_um2": 20000},
            {"name": "Tumor", "count": 2, "area_px2": 5100, "area_um2": 20400},
            {"name": None, "count": 1, "area_px2": 0, "area_um2": 0},
        ],
    }
    no_mpp = index.stats_bbox(50, 0, 150, 100, names.__getitem__)
    assert no_mpp["area_um2"] is None and no_mpp["classes"][0]["area_um2"] is None
    empty = index.stats_bbox(900, 900, 950, 950, names.__getitem__)
    assert empty == {
        "bbox": [900, 900, 950, 950],
        "count": 0,
        "area_px2": 0,
        "area_um2": None,
        "classes": [],
    }
