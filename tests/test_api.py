"""The control API over real HTTP on loopback, in front of the real pipeline and engine.

A product-recall incident is opened the way the pipeline opens one (an
anomaly through the incident manager, its events emitted to the engine),
with the shipped playbooks and roster, a ``file`` delivery target, and the
API bound to a free port; the tests then drive it with httpx.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playbook_fixtures import T0, anomaly

from daemon import config as config_mod
from daemon import metrics
from daemon.api import ControlApi
from daemon.assembly import assemble
from daemon.clock import SimClock
from daemon.decode import Decoder
from daemon.pipeline import Pipeline
from daemon.response import Response

REPO = Path(__file__).resolve().parent.parent
TOKEN = "s3cret-token-for-tests"


@dataclass
class Rig:
    pipeline: Pipeline
    response: Response
    api: ControlApi
    http: httpx.AsyncClient
    incident: str

    def auth(self, token: str = TOKEN) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}


class FakeSource:
    connected = True
    received = 5
    connects = 1
    backlog = 3
    acked_early = 2


def make_config(tmp: Path, **api: object) -> config_mod.Config:
    base = config_mod.load(REPO / "config.yaml")
    (tmp / "token").write_text(TOKEN + "\n")
    return base.model_copy(update={
        "state_dir": tmp / "state",
        "targets": {"files": config_mod.TargetConfig(type="file", path=tmp / "out")},
        "playbooks": config_mod.PlaybooksConfig(dir=REPO / "playbooks"),
        "api": config_mod.ApiConfig(listen="127.0.0.1:0", token_file=tmp / "token", **api),
    })


@pytest.fixture
async def rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Rig]:
    monkeypatch.delenv("CRISISD_API_TOKEN", raising=False)
    cfg = make_config(tmp_path)
    pipeline, response = assemble(cfg, SimClock(T0))
    assert response is not None
    latency = metrics.DeliveryLatency()
    latency.attach(response.engine.outbox)
    await response.start()
    decoder = Decoder()
    decoder.invalid["bad_json"] += 2
    for event in pipeline.incidents.observe(anomaly(T0, terms=("recall",), brand="northwind")):
        pipeline.emit(event)
    (incident,) = pipeline.incidents.open
    api = ControlApi(cfg.api, pipeline, response=response, source=FakeSource(),  # type: ignore[arg-type]
                     decoder=decoder, latency=latency)
    await api.start()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api.port}", trust_env=False) as http:
        yield Rig(pipeline, response, api, http, incident)
    await api.stop()
    await response.stop()
    pipeline.close()


async def test_health_and_metrics(rig: Rig) -> None:
    r = await rig.http.get("/healthz")
    assert r.status_code == 200
    doc = r.json()
    assert doc["broker_connected"] is True and doc["incidents_open"] == 1
    assert isinstance(doc["outbox_backlog"], int)
    await rig.response.engine.outbox.deliver_due()
    rig.pipeline.stats.anomalies[("volume", "low", "down")] += 1  # the feed gone quiet
    r = await rig.http.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    for name in ("crisisd_mentions_received_total",
                 'crisisd_items_invalid_total{reason="bad_json"} 2',
                 "crisisd_events_late_total", "crisisd_events_refused_total 0",
                 "crisisd_buckets_closed_total",
                 "crisisd_incidents_open 1", 'crisisd_actions{target="files",medium="page",'
                 'outcome="delivered"}', "crisisd_delivery_latency_seconds_bucket{le=\"+Inf\"}",
                 "crisisd_detector_seconds_total", "crisisd_outbox_backlog",
                 "crisisd_mqtt_connected 1", "crisisd_mqtt_backlog 3",
                 "crisisd_mqtt_acked_early_total 2",
                 'crisisd_anomalies_total{signal="volume",severity="low",direction="down"} 1'):
        assert name in text, name
    # Every sample line is `name{labels} value` with a number, every family has TYPE.
    for line in text.splitlines():
        if not line.startswith("#"):
            float(line.rsplit(" ", 1)[1])
    FakeSource.connected = False
    try:
        r = await rig.http.get("/healthz")
        assert r.status_code == 503 and r.json()["status"] == "degraded"
    finally:
        FakeSource.connected = True


async def test_writes_need_the_token_reads_are_open_on_loopback(rig: Rig) -> None:
    path = f"/incidents/{rig.incident}/ack"
    r = await rig.http.post(path, json={"by": "alice"})
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    r = await rig.http.post(path, json={"by": "alice"}, headers=rig.auth("wrong"))
    assert r.status_code == 401
    assert (await rig.http.get("/incidents")).status_code == 200
    assert (await rig.http.delete("/silences/x")).status_code == 401


async def test_no_token_configured_means_no_writes(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("CRISISD_API_TOKEN", raising=False)
    cfg = make_config(tmp_path).api.model_copy(update={"token_file": None, "auth_reads": True})
    pipeline = Pipeline(config_mod.Config(), SimClock(T0))
    api = ControlApi(cfg, pipeline)
    assert api.handle("POST", "/silences", {}, b"{}").status == 403
    assert api.handle("GET", "/incidents", {}, b"").status == 403  # auth_reads
    monkeypatch.setenv("CRISISD_API_TOKEN", "from-env")
    api = ControlApi(cfg, pipeline)
    ok = {"authorization": "Bearer from-env"}
    assert api.handle("GET", "/incidents", ok, b"").status == 200
    assert api.handle("GET", "/healthz", ok, b"").status == 200  # no source: not degraded
    assert api.handle("POST", "/silences", ok, b"{}").status == 501  # no playbooks, no store
    pipeline.close()


async def test_incident_show_ack_approve_resolve(rig: Rig) -> None:
    listed = (await rig.http.get("/incidents")).json()
    assert [i["id"] for i in listed] == [rig.incident]
    assert listed[0]["playbook"] == "product-recall"
    doc = (await rig.http.get(f"/incidents/{rig.incident}")).json()
    (st,) = doc["statements"]
    assert st["status"] == "pending" and "safety" in st["text"]
    assert st["sha256"] == hashlib.sha256(st["text"].encode()).hexdigest()
    assert any(e["kind"] == "statement_drafted" for e in doc["timeline"])
    assert doc["actions"] and doc["anomalies"][0]["signal"] == "volume"

    base = f"/incidents/{rig.incident}"
    h = rig.auth()
    approver = rig.response.engine.approvers(rig.incident, st["sid"])[0]
    r = await rig.http.post(f"{base}/approve", headers=h,
                            json={"statement": st["sid"], "sha256": "0" * 64, "by": approver})
    assert r.status_code == 409 and "text changed" in r.json()["error"]
    r = await rig.http.post(f"{base}/approve", headers=h,
                            json={"statement": st["sid"], "sha256": st["sha256"], "by": "nobody"})
    assert r.status_code == 409 and "may not approve" in r.json()["error"]
    r = await rig.http.post(f"{base}/approve", headers=h, json={"statement": st["sid"]})
    assert r.status_code == 400
    r = await rig.http.post(f"{base}/approve", headers=h,
                            json={"statement": st["sid"], "sha256": st["sha256"], "by": approver})
    assert r.status_code == 200, r.text
    assert r.json()["status"] in ("approved", "posted") and r.json()["approved_by"] == approver

    r = await rig.http.post(f"{base}/ack", headers=h, json={"by": "alice"})
    assert r.status_code == 200 and r.json()["status"] == "acknowledged"
    assert (await rig.http.post(f"{base}/ack", headers=h, json={"by": "alice"})).status_code == 409
    r = await rig.http.post(f"{base}/resolve", headers=h, json={"by": "alice", "reason": "done"})
    assert r.status_code == 200 and r.json()["status"] == "resolved"
    assert (await rig.http.post(f"{base}/resolve", headers=h,
                                json={"by": "alice"})).status_code == 409
    assert (await rig.http.get("/incidents")).json() == []
    everything = (await rig.http.get("/incidents?all=1")).json()
    assert [i["status"] for i in everything] == ["resolved"]
    shown = (await rig.http.get(base)).json()
    kinds = [e["kind"] for e in shown["timeline"]]
    assert "approval_granted" in kinds and "acknowledged" in kinds and "resolved" in kinds
    assert (await rig.http.get("/incidents/nope")).status_code == 404


async def test_silences_add_list_expire(rig: Rig) -> None:
    h = rig.auth()
    r = await rig.http.post("/silences", headers=h, json={
        "brand": "northwind", "signal": "term:*", "duration": "2h", "reason": "launch",
        "by": "alice"})
    assert r.status_code == 201, r.text
    s = r.json()
    assert s["end"] - s["start"] == 7200 and s["created_by"] == "alice"
    assert [x["id"] for x in (await rig.http.get("/silences")).json()] == [s["id"]]
    assert (await rig.http.post("/silences", headers=h,
                                json={"by": "a", "duration": "2 hours"})).status_code == 400
    assert (await rig.http.post("/silences", headers=h, json={"by": "a"})).status_code == 400
    assert (await rig.http.delete(f"/silences/{s['id']}", headers=h)).status_code == 200
    assert (await rig.http.delete(f"/silences/{s['id']}", headers=h)).status_code == 404
    assert (await rig.http.get("/silences")).json() == []


async def test_actions_retry_cancel_and_bad_requests(rig: Rig) -> None:
    h = rig.auth()
    await rig.response.engine.outbox.deliver_due()
    await rig.response.engine.outbox.stop()  # no worker racing the states set below
    done = rig.response.store.actions(rig.incident)[0]
    assert done.status == "delivered"
    for verb in ("retry", "cancel"):  # a delivered action can be neither
        r = await rig.http.post(f"/actions/{done.id}/{verb}", headers=h, json={"by": "alice"})
        assert r.status_code == 409, r.text
    r = await rig.http.post("/actions/999999/retry", headers=h, json={"by": "alice"})
    assert r.status_code == 404
    rig.response.store.mark(done.id, "failed", error="made to fail by the test")
    r = await rig.http.post(f"/actions/{done.id}/retry", headers=h, json={"by": "alice"})
    assert r.status_code == 200 and r.json()["status"] == "pending", r.text
    r = await rig.http.post(f"/actions/{done.id}/cancel", headers=h, json={"by": "alice"})
    assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
    kinds = [e["kind"] for e in (await rig.http.get(f"/incidents/{rig.incident}")).json()[
        "timeline"]]
    assert "delivery_retried" in kinds and "delivery_cancelled" in kinds
    assert (await rig.http.post("/actions/x/retry", headers=h, json={"by": "a"})).status_code == 400
    r = await rig.http.post(f"/incidents/{rig.incident}/ack", headers=h, content=b"{nope")
    assert r.status_code == 400
    assert (await rig.http.post(f"/incidents/{rig.incident}/ack", headers=h,
                                json={})).status_code == 400  # who?
    assert (await rig.http.get("/nothing")).status_code == 404
    assert (await rig.http.put("/incidents", headers=h)).status_code == 405
    r = await rig.http.post("/silences", headers=h, content=b"x" * (70 * 1024))
    assert r.status_code == 413
