"""Prometheus metrics at GET /metrics, read from Redis at scrape time.

No background thread and no state in the API process: every figure comes from the counters
and indexes the store keeps exact, or from RQ's own queues and worker registry, so any number
of API replicas report the same values.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import get_args

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from rq import Queue, Worker

from speedq.api import StoreDep
from speedq.keys import queue_name
from speedq.schemas import BackendName, Priority
from speedq.store import Store

router = APIRouter()


class SpeedqCollector(Collector):
    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        teams = self.store.team_names()
        depth = GaugeMetricFamily("speedq_queue_depth", "Jobs waiting in RQ, by team and priority (all backends)",
                                  labels=["team", "priority"])
        jobs = GaugeMetricFamily("speedq_jobs", "Job records by state and team", labels=["state", "team"])
        attempts = CounterMetricFamily("speedq_attempts", "Ended attempts by outcome and team",
                                       labels=["outcome", "team"])
        gpu_hours = CounterMetricFamily("speedq_gpu_hours", "GPU-hours of ended attempts, by team", labels=["team"])
        for team in teams:
            for priority in get_args(Priority):
                waiting = sum(
                    Queue(queue_name(backend, team, priority), connection=self.store.conn).count
                    for backend in get_args(BackendName)
                )
                depth.add_metric([team, priority], waiting)
            for state, n in self.store.counts(team).items():
                jobs.add_metric([state.value, team], n)
            for outcome, n in sorted(self.store.attempt_outcomes(team).items()):
                attempts.add_metric([outcome, team], n)
            gpu_hours.add_metric([team], sum(self.store.gpu_seconds(team).values()) / 3600)
        yield from (depth, jobs, attempts, gpu_hours)
        yield self._heartbeats()

    def _heartbeats(self) -> Metric:
        beats = GaugeMetricFamily("speedq_worker_last_heartbeat_seconds",
                                  "Unix time of each live RQ worker's last heartbeat", labels=["worker"])
        for worker in Worker.all(connection=self.store.conn):
            if worker.last_heartbeat is not None:
                beats.add_metric([worker.name], worker.last_heartbeat.timestamp())
        return beats


@router.get("/metrics", include_in_schema=False)
def metrics(store: StoreDep) -> Response:
    """The Prometheus text format; no token, as scrapers expect (the figures are not sensitive)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SpeedqCollector(store))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
