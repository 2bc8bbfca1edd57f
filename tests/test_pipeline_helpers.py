"""Helpers for the pipeline tests (no tests here): submit a spec over HTTP, follow the run to its end."""
from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import httpx


def submit(api: httpx.Client, ws: str, spec: Any, **headers: str) -> dict[str, Any]:
    response = api.post(f"/api/v1/workspaces/{ws}/pipelines", json={"spec": spec}, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def get_run(api: httpx.Client, ws: str, run_id: str) -> dict[str, Any]:
    response = api.get(f"/api/v1/workspaces/{ws}/pipelines/{run_id}")
    assert response.status_code == 200, response.text
    return response.json()


def wait_run(api: httpx.Client, ws: str, run_id: str, *, timeout: float = 60.0,
             until: Any = None) -> dict[str, Any]:
    """Poll until the run has ended (or `until(detail)` holds); fail the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        detail = get_run(api, ws, run_id)
        if (until(detail) if until is not None else detail["finished_at"] is not None):
            return detail
        if time.monotonic() > deadline:
            states = {s["key"]: (s["status"], s["error"]) for s in detail["steps"]}
            raise AssertionError(f"run {run_id} is still {detail['status']} after {timeout}s: {states}")
        time.sleep(0.1)


def step(detail: dict[str, Any], key: str) -> dict[str, Any]:
    return next(s for s in detail["steps"] if s["key"] == key)


def read(api: httpx.Client, ws: str, path: str) -> str:
    response = api.get(f"/api/v1/workspaces/{ws}/files/{path}")
    assert response.status_code == 200, (path, response.status_code, response.text[:200])
    return response.text


def output(api: httpx.Client, ws: str, detail: dict[str, Any], key: str, name: str) -> str:
    return read(api, ws, step(detail, key)["outputs"][name]["path"])


def when(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def task(api: httpx.Client, ws: str, task_id: str) -> dict[str, Any]:
    response = api.get(f"/api/v1/workspaces/{ws}/tasks/{task_id}")
    assert response.status_code == 200, response.text
    return response.json()


def tree(api: httpx.Client, ws: str, prefix: str = "") -> list[str]:
    response = api.get(f"/api/v1/workspaces/{ws}/tree", params={"prefix": prefix, "limit": 500})
    assert response.status_code == 200, response.text
    return [f["path"] for f in response.json()["results"]]
