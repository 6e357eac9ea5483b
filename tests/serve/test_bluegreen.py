"""Blue/green model swaps, health checks, keep-previous and rollback (fake backends, real server)."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from tests.helpers.fake_backend import Loader, running_server

from llmtools.ops.serve.slots import KeepPolicy

ADMIN = {"Authorization": "Bearer adm"}


def ask(url, text="ping", headers=None):
    return httpx.post(f"{url}/v1/completions", json={"model": "svc", "prompt": text, "max_tokens": 4},
                      headers=headers or {}, timeout=30)


def test_keep_policy_parse():
    assert KeepPolicy.parse("2") == KeepPolicy(count=2)
    assert KeepPolicy.parse("90s") == KeepPolicy(count=None, seconds=90)
    assert KeepPolicy.parse("10m").seconds == 600
    assert KeepPolicy.parse("1h").seconds == 3600
    with pytest.raises(ValueError):
        KeepPolicy.parse("soon")


def test_admin_endpoints_need_a_key_and_are_off_without_one():
    with running_server(Loader(), model_ref="blue") as (url, _):
        r = httpx.post(f"{url}/admin/models/load", json={"model": "green"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "admin_disabled"
    with running_server(Loader(), model_ref="blue", api_keys=("user",), admin_keys=("adm",)) as (url, _):
        r = httpx.post(f"{url}/admin/models/load", json={"model": "green"}, headers={"Authorization": "Bearer user"})
        assert r.status_code == 401
        r = httpx.post(f"{url}/admin/rollback", headers={"Authorization": "Bearer user"})
        assert r.status_code == 401


def test_swap_under_traffic_has_no_failed_request_then_rollback_is_instant(tmp_path):
    loader = Loader(delay=0.002)
    log = tmp_path / "req.jsonl"
    with running_server(loader, model_ref="blue", served_name="svc", api_keys=("user",), admin_keys=("adm",),
                        max_concurrency=2, max_queue=64, log_path=str(log)) as (url, state):
        user = {"Authorization": "Bearer user"}
        stop = threading.Event()
        seen: list[tuple[int, str]] = []
        lock = threading.Lock()

        def client():
            with httpx.Client(headers=user, timeout=30) as c:
                while not stop.is_set():
                    r = c.post(f"{url}/v1/completions", json={"model": "svc", "prompt": "ping", "max_tokens": 4})
                    text = r.json()["choices"][0]["text"] if r.status_code == 200 else r.text
                    with lock:
                        seen.append((r.status_code, text.split()[0]))

        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.3)
        r = httpx.post(f"{url}/admin/models/load", json={"model": "green"}, headers=ADMIN, timeout=30)
        assert r.status_code == 200, r.text
        assert r.json()["active"]["version"] == 2 and r.json()["active"]["ref"] == "green"
        time.sleep(0.3)
        r = httpx.post(f"{url}/admin/rollback", headers=ADMIN)
        assert r.status_code == 200 and r.json()["active"]["version"] == 1
        time.sleep(0.3)
        stop.set()
        for t in threads:
            t.join()

        assert seen and all(status == 200 for status, _ in seen), [s for s in seen if s[0] != 200][:3]
        models = [m for _, m in seen]
        first_green = models.index("green")
        assert set(models[:first_green]) == {"blue"}  # blue until the swap, then green, then blue again
        assert "blue" in models[first_green:]
        # the previous version kept serving its queued requests while both were loaded
        assert loader.built["blue"].closed is False and loader.built["green"].closed is False

        body = httpx.get(f"{url}/v1/models", headers=user).json()
        assert body["active_version"] == 1 and body["data"][0]["id"] == "svc"
        assert {v["version"]: v["state"] for v in body["versions"]} == {1: "active", 2: "standby"}
    versions = {rec["model_version"] for rec in map(__import__("json").loads, log.read_text().splitlines())}
    assert versions == {1, 2}


def test_failed_health_check_keeps_the_active_version():
    loader = Loader()
    loader.per_ref["bad"] = {"fail_health": True}
    with running_server(loader, model_ref="blue", admin_keys=("adm",)) as (url, state):
        r = httpx.post(f"{url}/admin/models/load", json={"model": "bad"}, headers=ADMIN)
        assert r.status_code == 422 and r.json()["error"]["code"] == "health_check_failed"
        assert loader.built["bad"].closed is True
        r = httpx.post(f"{url}/admin/models/load", json={"model": "missing-model"}, headers=ADMIN)
        assert r.status_code == 400 and r.json()["error"]["code"] == "model_load_failed"
        assert state.manager.active.ref == "blue"
        assert httpx.post(f"{url}/v1/completions", json={"prompt": "x"}).json()["choices"][0]["text"].startswith("blue")
        assert httpx.get(f"{url}/health").status_code == 200


def test_keep_previous_zero_unloads_and_rollback_is_409():
    loader = Loader()
    with running_server(loader, model_ref="blue", admin_keys=("adm",), keep=KeepPolicy(count=0)) as (url, _):
        assert httpx.post(f"{url}/admin/models/load", json={"model": "green"}, headers=ADMIN).status_code == 200
        deadline = time.monotonic() + 5
        while not loader.built["blue"].closed and time.monotonic() < deadline:
            time.sleep(0.02)
        assert loader.built["blue"].closed is True
        r = httpx.post(f"{url}/admin/rollback", headers=ADMIN)
        assert r.status_code == 409 and r.json()["error"]["code"] == "nothing_to_roll_back"


def test_keep_previous_count_and_duration():
    loader = Loader()
    with running_server(loader, model_ref="v1", admin_keys=("adm",), keep=KeepPolicy(count=2)) as (url, state):
        for ref in ("v2", "v3", "v4"):
            assert httpx.post(f"{url}/admin/models/load", json={"model": ref}, headers=ADMIN).status_code == 200
        assert [s.ref for s in state.manager.slots()] == ["v4", "v3", "v2"]
        deadline = time.monotonic() + 5
        while not loader.built["v1"].closed and time.monotonic() < deadline:
            time.sleep(0.02)
        assert loader.built["v1"].closed
    loader = Loader()
    with running_server(loader, model_ref="v1", admin_keys=("adm",), keep=KeepPolicy(count=None, seconds=0.3)) as (url, state):
        assert httpx.post(f"{url}/admin/models/load", json={"model": "v2"}, headers=ADMIN).status_code == 200
        assert [s.ref for s in state.manager.slots()] == ["v2", "v1"]
        time.sleep(0.5)
        assert httpx.post(f"{url}/admin/rollback", headers=ADMIN).status_code == 409
        assert [s.ref for s in state.manager.slots()] == ["v2"]


def test_a_standby_version_can_be_pinned_by_its_id():
    loader = Loader()
    with running_server(loader, model_ref="blue", served_name="svc", admin_keys=("adm",)) as (url, state):
        blue_id = state.manager.active.identity.short
        assert httpx.post(f"{url}/admin/models/load", json={"model": "green"}, headers=ADMIN).status_code == 200
        r = httpx.post(f"{url}/v1/completions", json={"model": blue_id, "prompt": "x"})
        assert r.json()["choices"][0]["text"].startswith("blue")
        r = httpx.post(f"{url}/v1/completions", json={"model": "svc", "prompt": "x"})
        assert r.json()["choices"][0]["text"].startswith("green")


def test_concurrent_admin_load_is_409():
    loader = Loader()
    with running_server(loader, model_ref="blue", admin_keys=("adm",)) as (url, state):
        loader.gate = threading.Event()
        results = {}

        def load(ref):
            results[ref] = httpx.post(f"{url}/admin/models/load", json={"model": ref}, headers=ADMIN, timeout=30)

        t = threading.Thread(target=load, args=("green",))
        t.start()
        deadline = time.monotonic() + 5
        while state.manager.loading is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert httpx.get(f"{url}/health").json()["loading"] == "green"  # blue still serves meanwhile
        load("red")
        loader.gate.set()
        t.join()
        assert results["red"].status_code == 409 and results["red"].json()["error"]["code"] == "load_in_progress"
        assert results["green"].status_code == 200
