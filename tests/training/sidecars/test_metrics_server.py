"""The Prometheus endpoint: exposition format, HTTP scrape, declared-only families."""

from __future__ import annotations

import httpx
import pytest

from training.sidecars.metrics_server import CONTENT_TYPE, Metrics, MetricsServer, sidecar_metrics


def test_render_exposition_format() -> None:
    m = Metrics("dlbc_test")
    m.declare("commits_total", "counter", "Models committed.")
    m.declare("errors_total", "counter", "Errors by kind.", ["kind"])
    m.declare("current_round", "gauge", "Round.")
    m.inc("commits_total")
    m.inc("commits_total", 2)
    m.inc("errors_total", kind='di"gest')
    m.set("current_round", 7)
    text = m.render()
    assert "# HELP dlbc_test_commits_total Models committed.\n" in text
    assert "# TYPE dlbc_test_commits_total counter\n" in text
    assert "\ndlbc_test_commits_total 3.0\n" in text
    assert 'dlbc_test_errors_total{kind="di\\"gest"} 1.0\n' in text
    assert "# TYPE dlbc_test_current_round gauge\ndlbc_test_current_round 7.0\n" in text
    assert "_created" not in text
    assert m.get("commits_total") == 3 and m.total("errors_total") == 1


def test_untouched_family_reports_zero() -> None:
    text = sidecar_metrics("miner").render()
    for name in ("rounds_seen_total", "commits_total", "reveals_total", "verdicts_total",
                 "training_seconds_total", "wins_total"):
        assert f"\ndlbc_miner_{name} 0.0\n" in "\n" + text
    # a labelled family is declared from the start; each label set appears once it is used
    for name in ("errors_total", "txs_total"):
        assert f"# TYPE dlbc_miner_{name} counter\n" in text


def test_invalid_undeclared_or_wrong_kind() -> None:
    m = sidecar_metrics("verifier")
    with pytest.raises(KeyError):
        m.inc("typo_total")
    with pytest.raises(TypeError):
        m.set("commits_total", 1)
    with pytest.raises(ValueError):
        m.inc("commits_total", -1)
    with pytest.raises(ValueError):
        m.inc("errors_total", what="undeclared label")


def test_scrape_over_http() -> None:
    m = sidecar_metrics("publisher")
    m.inc("reveals_total", 2)
    with MetricsServer(m, port=0) as srv:
        r = httpx.get(srv.url, timeout=5)
        assert r.status_code == 200
        assert r.headers["content-type"] == CONTENT_TYPE
        assert "dlbc_publisher_reveals_total 2.0" in r.text
        m.inc("reveals_total")
        assert "dlbc_publisher_reveals_total 3.0" in httpx.get(srv.url, timeout=5).text
        assert httpx.get(srv.url.replace("/metrics", "/other"), timeout=5).status_code == 404


def test_invalid_port_in_use_is_a_clear_error() -> None:
    with MetricsServer(sidecar_metrics("miner"), port=0) as srv, \
            pytest.raises(OSError, match="--metrics-port"):
        MetricsServer(sidecar_metrics("miner"), port=srv.port)
