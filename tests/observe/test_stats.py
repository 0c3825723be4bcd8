"""The naming layer: every statistic a process exposes maps to a Kamailio name and is
documented in docs/observability.md."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sipmesh.observe.stats import (
    KAMAILIO_STATS,
    Children,
    counter,
    kamailio_name,
    register_instance_info,
    shared,
)
from tests.e2e.procs import make_process

DOC = Path(__file__).resolve().parents[2] / "docs" / "observability.md"


def test_kamailio_names_of_exposed_samples() -> None:
    assert kamailio_name("sipmesh_accepted_regs_total") == "registrar:accepted_regs"
    assert kamailio_name("sipmesh_registered_users") == "usrloc:registered_users"
    assert kamailio_name("sipmesh_rcv_requests_total").startswith("core:rcv_requests")
    assert kamailio_name("sipmesh_store_operation_seconds_bucket").startswith("sipmesh:")
    assert kamailio_name("sipmesh_no_such_thing") == ""


def test_helpers_register_on_the_given_registry_only() -> None:
    registry = CollectorRegistry()
    hits = counter(registry, "rcv_requests", "requests", ["method"])
    hits.labels("INVITE").inc()
    register_instance_info(
        registry, instance_id="e1", service="edge", targets=("edge", "router"), version="1"
    )
    text = generate_latest(registry).decode()
    assert 'sipmesh_rcv_requests_total{method="INVITE"} 1.0' in text
    assert 'target="edge,router"' in text
    assert shared(registry, "rcv_requests") is hits
    assert shared(CollectorRegistry(), "rcv_requests") is None


def test_every_statistic_is_in_the_documentation() -> None:
    doc = DOC.read_text()
    missing = [s.name for s in KAMAILIO_STATS if f"`sipmesh_{s.name}" not in doc]
    assert missing == []


@pytest.mark.e2e
def test_every_family_of_a_full_process_is_mapped(tmp_path: Path) -> None:
    proc = make_process(
        "stats-all",
        tmp_path,
        extra_args=["--domain", "sipmesh.test"],
        env={"SIPMESH_MEDIA_RELAY__NG_LISTEN": ""},  # no fixed control port in tests
    )
    proc.start()
    try:
        proc.wait_ready()
        text = proc.metrics()
    finally:
        proc.stop()
    families = {
        f.name for f in text_string_to_metric_families(text) if f.name.startswith("sipmesh_")
    }
    assert "sipmesh_rcv_requests" in families
    unmapped = sorted(f for f in families if not kamailio_name(f))
    assert unmapped == []
    # Kamailio's statistic names survive verbatim after the prefix.
    assert all(re.fullmatch(r"sipmesh_[A-Za-z0-9_]+", f) for f in families)


def test_children_counts_into_the_family_and_bounds_what_it_remembers() -> None:
    registry = CollectorRegistry()
    family = counter(registry, "test_children", "test", ["code"])
    children = Children(family, limit=2)
    for code in ("200", "200", "401", "404", "404"):
        children(code).inc()
    assert children("200") is family.labels("200")  # the same child, remembered
    assert registry.get_sample_value("sipmesh_test_children_total", {"code": "200"}) == 2
    assert registry.get_sample_value("sipmesh_test_children_total", {"code": "404"}) == 2
    assert len(children._seen) == 2  # "404" came after the limit: asked each time
