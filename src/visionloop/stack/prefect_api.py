"""The few calls of Prefect's REST API the stack needs, over plain HTTP (the library never
imports Prefect): the worker's heartbeat, deployments, flow runs and their states."""

from __future__ import annotations

from datetime import datetime

from visionloop.config import Config
from visionloop.stack import http, servers
from visionloop.stack.layout import StackError


class PrefectApi:
    """The few calls of Prefect's REST API the stack needs (it never imports Prefect)."""

    def __init__(self, config: Config, passwords: dict[str, str]) -> None:
        self.base = servers.prefect_api_url(config)
        self.pool = config.stack.work_pool
        self.worker = servers.worker_name(config)
        self.headers = http.basic_auth(servers.prefect_auth_string(passwords))

    def _call(self, path: str, payload=None, method: str | None = None):
        return http.request(f"{self.base}{path}", payload, method=method, headers=self.headers)

    def worker_online(self, since: datetime | None = None) -> bool:
        """Our worker is online in the pool (and has sent a heartbeat since `since`)."""
        try:
            workers = self._call(f"/work_pools/{self.pool}/workers/filter", {})
        except (OSError, StackError):
            return False
        for worker in workers or []:
            beat = worker.get("last_heartbeat_time")
            if worker["name"] != self.worker or worker.get("status") != "ONLINE" or not beat:
                continue
            if since is None or datetime.fromisoformat(beat) >= since:
                return True
        return False

    def deployments(self, tags: list[str] | None = None, with_flow_names: bool = False):
        query: dict = {"work_pools": {"name": {"any_": [self.pool]}}}
        if tags:
            query["deployments"] = {"tags": {"all_": tags}}
        found = self._call("/deployments/filter", query)
        if with_flow_names and found:
            flow_ids = sorted({d["flow_id"] for d in found})
            flows = self._call("/flows/filter", {"flows": {"id": {"any_": flow_ids}}})
            names = {f["id"]: f["name"] for f in flows}
            for deployment in found:
                deployment["flow_name"] = names.get(deployment["flow_id"], "?")
        return found

    def deployment_names(self) -> set[str]:
        return {d["name"] for d in self.deployments()}

    def flow_runs(self, states: list[str], deployment_ids: list[str] | None = None):
        query: dict = {"flow_runs": {"state": {"type": {"any_": states}}}}
        if deployment_ids is not None:
            query["flow_runs"]["deployment_id"] = {"any_": deployment_ids}
        else:
            query["work_pools"] = {"name": {"any_": [self.pool]}}
        return self._call("/flow_runs/filter", query)

    def create_flow_run(self, deployment_id: str) -> dict:
        return self._call(f"/deployments/{deployment_id}/create_flow_run", {})

    def crash_orphaned_runs(self) -> list[str]:
        """Runs left Pending or Running by a worker that is gone: nobody will finish them, and
        a retrain run among them would hold its deployment's concurrency slot for ever."""
        try:
            orphans = self.flow_runs(states=["PENDING", "RUNNING"])
        except StackError as exc:
            if getattr(exc, "status", None) == 404:  # the pool does not exist yet
                return []
            raise
        for run in orphans:
            state = {"type": "CRASHED", "message": "its worker stopped (found by stack up)"}
            self._call(f"/flow_runs/{run['id']}/set_state", {"state": state})
        return [run["name"] for run in orphans]
