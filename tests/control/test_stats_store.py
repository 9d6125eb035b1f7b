"""The live views' store and rows as functions of heartbeats and a clock:
deltas of cumulative counters into time bins, baselines and restarts, which
edges count for services, routes and edges, quantiles interpolated inside
their bucket, and the bounds (retention, cells per bin, edges per heartbeat)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from meshctl.control.stats import views
from meshctl.control.stats.report import MAX_EDGES, TelemetryReport
from meshctl.control.stats.store import BIN_SECONDS, MAX_CELLS_PER_BIN, RETENTION_SECONDS, StatsStore
from meshctl.sidecar.mesh import MAX_TELEMETRY_EDGES, busiest_edges

T0 = 1_700_000_040.0  # a bin and minute boundary


def edge(direction: str, source: str, destination: str, requests: int, failures: int = 0, **kw: Any) -> dict[str, Any]:
    """One edge of `DataPlane.telemetry()` (contract B)."""
    return {
        "protocol": "http",
        "direction": direction,
        "listener": "inbound" if direction == "inbound" else f"outbound/{destination}",
        "route": "inbound" if direction == "inbound" else f"{destination}/default",
        "source": source,
        "destination": destination,
        "mtls": True,
        "requests": requests,
        "failures": failures,
        "latency_buckets": [[1.0, requests]] if requests else [],
        "latency_sum_ms": 0.9 * requests,
        "request_bytes": 0,
        "response_bytes": 0,
    } | kw


def report(*edges: dict[str, Any]) -> TelemetryReport:
    return TelemetryReport.model_validate({"edges": list(edges)})


def fed(*heartbeats: tuple[float, int, str, TelemetryReport | None]) -> StatsStore:
    store = StatsStore()
    for at, sidecar, service, r in heartbeats:
        store.ingest(sidecar=sidecar, service=service, report=r, now=at)
    return store


def only(rows: list[views.StatRow]) -> views.StatRow:
    (row,) = rows
    return row


# === deltas, baselines and restarts ===


def test_a_starting_sidecar_counts_from_zero_and_deltas_make_the_rates() -> None:
    store = fed(
        (T0, 1, "default/catalog", None),  # registered before its data plane ran
        (T0 + 5, 1, "default/catalog", report(edge("inbound", "default/frontend", "default/catalog", 30))),
        (T0 + 10, 1, "default/catalog", report(edge("inbound", "default/frontend", "default/catalog", 90, 3))),
    )
    w = store.window(60, now=T0 + 65)
    row = only(views.service_rows(w, ["default/catalog"]))
    assert (row.requests, row.success_rate) == (90, round(1 - 3 / 90, 4))
    assert row.rps == round(90 / 65, 3)  # from the start of the bin 60 s back falls in: 65 s of data
    assert store.window(10, now=T0 + 65).cells == {}  # nothing in the last 10 s


def test_the_first_heartbeat_this_process_hears_is_a_baseline_not_a_burst() -> None:
    store = fed(
        (T0, 1, "default/catalog", report(edge("inbound", "", "default/catalog", 1_000_000))),
        (T0 + 5, 1, "default/catalog", report(edge("inbound", "", "default/catalog", 1_000_010))),
    )
    assert only(views.service_rows(store.window(60, now=T0 + 10), ["default/catalog"])).requests == 10


def test_a_counter_that_goes_down_is_a_restart_and_its_new_value_the_delta() -> None:
    svc = "default/catalog"
    store = fed(
        (T0, 1, svc, None),
        (T0 + 1, 1, svc, report(edge("inbound", "", svc, 100, 10))),
        (T0 + 2, 1, svc, report(edge("inbound", "", svc, 7, 1))),  # the data plane restarted
        (T0 + 3, 1, svc, report(edge("inbound", "", svc, 9, 1))),
        (T0 + 4, 1, svc, None),  # the sidecar restarted: zero so far
        (T0 + 5, 1, svc, report(edge("inbound", "", svc, 4))),
    )
    row = only(views.service_rows(store.window(60, now=T0 + 9), [svc]))
    assert (row.requests, row.success_rate) == (100 + 7 + 2 + 4, round(1 - 11 / 113, 4))


def test_an_edge_that_leaves_the_busiest_and_comes_back_is_not_counted_twice() -> None:
    svc = "default/catalog"
    a, b = edge("inbound", "default/a", svc, 50), edge("inbound", "default/b", svc, 5)
    store = fed(
        (T0, 1, svc, None),
        (T0 + 1, 1, svc, report(a, b)),
        (T0 + 2, 1, svc, report(a)),  # b fell out of the sidecar's busiest edges
        (T0 + 3, 1, svc, report(a, edge("inbound", "default/b", svc, 6))),
    )
    assert only(views.service_rows(store.window(60, now=T0 + 9), [svc])).requests == 56


# === what counts for what ===


def mesh_store() -> StatsStore:
    """frontend calls catalog (which has a reporting sidecar) and legacy (which has none)."""
    front, cat = "default/frontend", "default/catalog"
    out = [edge("outbound", front, cat, 100, 2), edge("outbound", front, "default/legacy", 20, 5, mtls=False)]
    into = [edge("inbound", front, cat, 100, 2), edge("inbound", "", cat, 10)]
    return fed(
        (T0, 1, front, None),
        (T0, 2, cat, None),
        (T0 + 5, 1, front, report(*out)),
        (T0 + 5, 2, cat, report(*into)),
    )


def test_services_count_inbound_and_those_without_a_reporting_sidecar_outbound() -> None:
    w = mesh_store().window(60, now=T0 + 10)
    rows = views.service_rows(w, ["default/catalog", "default/frontend", "default/legacy"])
    assert [(r.name, r.requests, r.success_rate) for r in rows] == [
        ("default/catalog", 110, round(1 - 2 / 110, 4)),  # every caller, the unknown one too; not twice
        ("default/frontend", 0, None),
        ("default/legacy", 20, 0.75),
    ]
    assert rows[1].p99_ms is None and rows[1].rps == 0


def test_routes_are_the_callers_and_edges_are_inbound_plus_outbound_only() -> None:
    w = mesh_store().window(60, now=T0 + 10)
    routes = views.route_rows(w)
    assert [(r.name, r.service, r.requests) for r in routes] == [
        ("default/catalog/default", "default/catalog", 100),
        ("default/legacy/default", "default/legacy", 20),
    ]
    assert [r.name for r in views.route_rows(w, "default/legacy")] == ["default/legacy/default"]
    edges = views.edge_rows(w)
    assert [(e.name, e.mtls, e.requests) for e in edges] == [
        ("(unknown) -> default/catalog", True, 10),
        ("default/frontend -> default/catalog", True, 100),
        ("default/frontend -> default/legacy", False, 20),
    ]
    assert [e.name for e in views.edge_rows(w, "default/legacy")] == ["default/frontend -> default/legacy"]
    graph = views.edges(w, 60)
    assert [(e.source, e.destination, e.protocol, e.success_rate) for e in graph.edges] == [
        ("", "default/catalog", "http", 1.0),
        ("default/frontend", "default/catalog", "http", 0.98),
        ("default/frontend", "default/legacy", "http", 0.75),
    ]


def test_a_service_counts_outbound_once_its_sidecars_stop_reporting() -> None:
    store = mesh_store()
    late = T0 + 5 + 2 * RETENTION_SECONDS // 3
    store.ingest(
        sidecar=1,
        service="default/frontend",
        report=report(edge("outbound", "default/frontend", "default/catalog", 130, 2)),
        now=late,
    )
    # catalog's sidecar is silent since T0 + 5: its callers' numbers stand in.
    assert only(views.service_rows(store.window(60, now=late), ["default/catalog"])).requests == 30


# === quantiles ===


def test_quantiles_interpolate_inside_the_bucket() -> None:
    lower = 2.0 / views.BUCKET_RATIO
    latency = {1.0: 50, 2.0: 50}
    assert views.quantile(latency, 0.5) == 1.0
    assert views.quantile(latency, 0.95) == round(lower + (2.0 - lower) * 0.9, 3)
    assert views.quantile(latency, 0.99) == round(lower + (2.0 - lower) * 0.98, 3)
    assert views.quantile({views.FIRST_UPPER_MS: 4}, 0.5) == round(views.FIRST_UPPER_MS / 2, 3)  # from 0
    assert views.quantile({}, 0.5) is None


def test_latency_buckets_merge_across_sidecars_and_heartbeats() -> None:
    svc = "default/catalog"
    fast = edge("inbound", "", svc, 90, latency_buckets=[[1.0, 90]])
    slow = edge("inbound", "", svc, 10, latency_buckets=[[100.0, 10]])
    store = fed((T0, 1, svc, None), (T0, 2, svc, None), (T0 + 1, 1, svc, report(fast)), (T0 + 2, 2, svc, report(slow)))
    row = only(views.service_rows(store.window(60, now=T0 + 3), [svc]))
    assert row.p50_ms is not None and row.p50_ms <= 1.0
    assert row.p95_ms is not None and 100 / views.BUCKET_RATIO < row.p95_ms <= 100


# === series ===


def test_a_series_has_one_point_per_step_oldest_first() -> None:
    svc = "default/catalog"
    beats: list[tuple[float, int, str, TelemetryReport | None]] = [(T0, 1, svc, None)]
    beats += [(T0 + 60 * i + 5, 1, svc, report(edge("inbound", "", svc, 60 * (i + 1)))) for i in range(5)]
    store = fed(*beats)
    s = views.series(store.steps(300, 60, now=T0 + 299), svc, 60)
    assert [p.t for p in s.points] == [T0 + 60 * i for i in range(5)]
    assert [p.rps for p in s.points] == [1.0] * 4 + [round(60 / 59, 3)]  # the last step: 59 s so far
    assert all(p.success_rate == 1.0 and p.p50_ms is not None for p in s.points)


# === bounds ===


def test_bins_older_than_the_retention_and_silent_sidecars_are_forgotten() -> None:
    svc = "default/catalog"
    store = fed((T0, 1, svc, None), (T0 + 1, 1, svc, report(edge("inbound", "", svc, 5))))
    later = T0 + RETENTION_SECONDS + 2 * BIN_SECONDS
    store.ingest(sidecar=2, service=svc, report=None, now=later)
    assert store.window(RETENTION_SECONDS, now=later).cells == {}
    # Sidecar 1 was forgotten: its next heartbeat is a baseline again, not a delta of 5.
    store.ingest(sidecar=1, service=svc, report=report(edge("inbound", "", svc, 10)), now=later + 1)
    assert store.window(60, now=later + 2).cells == {}


def test_a_full_bin_drops_new_edges_and_counts_them() -> None:
    svc = "default/catalog"
    many = [edge("inbound", f"default/c{i}", svc, 1) for i in range(MAX_EDGES)]
    store = StatsStore()
    for sidecar in range(3):
        store.ingest(sidecar=sidecar, service=svc, report=None, now=T0)
        batch = [e | {"source": f"{e['source']}-{sidecar}"} for e in many]
        store.ingest(sidecar=sidecar, service=svc, report=report(*batch), now=T0 + 1)
    assert len(store.window(10, now=T0 + 2).cells) == MAX_CELLS_PER_BIN
    assert store.dropped == 3 * MAX_EDGES - MAX_CELLS_PER_BIN


def test_the_sidecar_sends_its_busiest_edges_only() -> None:
    edges = [edge("inbound", f"default/c{i}", "default/s", i) for i in range(MAX_TELEMETRY_EDGES + 20)]
    sent = busiest_edges({"edges": edges})["edges"]
    assert len(sent) == MAX_TELEMETRY_EDGES == MAX_EDGES
    assert min(e["requests"] for e in sent) == 20
    assert busiest_edges({"edges": edges[:3]}) == {"edges": edges[:3]}


@pytest.mark.parametrize(
    ("bad", "loc"),
    [
        ({"requests": -1}, ("edges", 0, "requests")),
        ({"direction": "sideways"}, ("edges", 0, "direction")),
        ({"latency_buckets": [[float("inf"), 1]]}, ("edges", 0, "latency_buckets", 0, 0)),
        ({"latency_buckets": [[1.0, 1]] * 129}, ("edges", 0, "latency_buckets")),
    ],
)
def test_a_garbled_report_is_refused_naming_the_field(bad: dict[str, Any], loc: tuple[Any, ...]) -> None:
    with pytest.raises(ValidationError) as e:
        report(edge("inbound", "", "default/s", 1) | bad)
    assert e.value.errors()[0]["loc"] == loc
