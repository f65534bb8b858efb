"""What Roombridge shows Prometheus: counters the processes bump, and gauges read at scrape time.

Counters (`GOOGLE_CALLS` and friends) are incremented where things happen: the Calendar
gateway, the webhook. With PROMETHEUS_MULTIPROC_DIR set (gunicorn's workers, the RQ workers,
the scheduler: every process of a host, one directory, emptied when they start) each process
writes its counts to a file there and a scrape adds them up (prometheus_client's multiprocess
mode); without it, a scrape sees the serving process's own counts only.

Gauges are not kept in processes at all: `read_gauges` asks Redis and the database when
Prometheus scrapes, so they hold for every host at once: the call budget, queue depths,
reservations waiting for Google, the channel expiry horizon, sync lag. A source that does not
answer is reported as ``roombridge_metrics_source_up{source=...} 0`` and the rest still served.
"""

from __future__ import annotations

import logging
from bisect import bisect_right
from collections.abc import Iterator
from datetime import datetime

import sqlalchemy as sa
from prometheus_client import Counter
from prometheus_client.core import GaugeHistogramMetricFamily, GaugeMetricFamily, Metric
from redis import Redis
from rq import Queue
from rq.registry import FailedJobRegistry
from sqlalchemy.orm import Session

from roombridge.call_budget import KEY_PREFIX, KINDS, CallBudget
from roombridge.models import Reservation, ReservationStatus, Room, RoomSyncState, WatchChannel
from roombridge.queue import QUEUE_NAMES

log = logging.getLogger(__name__)

GOOGLE_CALLS = Counter("roombridge_google_calls", "Calendar API calls made, by kind and outcome",
                       ["kind", "outcome"])
GOOGLE_RATE_LIMITS = Counter("roombridge_google_rate_limit_answers",
                             "Rate-limit answers from Google (403 rateLimitExceeded/userRateLimitExceeded, 429)",
                             ["kind", "reason"])
BUDGET_REFUSALS = Counter("roombridge_google_budget_refusals",
                          "Calendar calls not made because the shared budget refused them", ["kind", "reason"])
GOOGLE_CALL_LOG_DROPPED = Counter("roombridge_google_call_log_dropped",
                                  "Records of Google calls not kept in the call log (the call itself went ahead)",
                                  ["reason"])
WEBHOOK_PUSHES = Counter("roombridge_webhook_pushes", "Google push notifications answered, by outcome and reason",
                         ["outcome", "reason"])

CALL_LOG_BUFFER_KEY = f"{KEY_PREFIX}:call-log"  # roombridge/call_log.py's BUFFER_KEY (it imports this module)
SYNC_LAG_BUCKETS = (60, 300, 900, 3600, 6 * 3600, 24 * 3600)
STALEST_ROOMS_SHOWN = 10


def read_gauges(session: Session, conn: Redis, budget: CallBudget, now: datetime) -> list[Metric]:
    """Every gauge, read now from Redis and the database; a source that fails is marked down, not raised."""
    found: list[Metric] = []
    up = GaugeMetricFamily("roombridge_metrics_source_up", "Whether a source of these figures answered",
                           labels=["source"])
    for source, read in (("redis", lambda: _redis_gauges(conn, budget)),
                         ("database", lambda: _database_gauges(session, now))):
        try:
            found.extend(read())
            up.add_metric([source], 1)
        except Exception:  # a scrape must still answer with what the other source knows
            log.warning("metrics: could not read %s", source, exc_info=True)
            up.add_metric([source], 0)
            if source == "database":
                session.rollback()
    return [*found, up]


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _redis_gauges(conn: Redis, budget: CallBudget) -> Iterator[Metric]:
    usage = budget.usage(minutes=2)
    yield _gauge("roombridge_google_budget_calls_per_minute", "The shared budget (GOOGLE_CALLS_PER_MINUTE)",
                 usage.calls_per_minute)
    yield _gauge("roombridge_google_budget_tokens_left", "Calls the budget would grant at once (writes)",
                 usage.tokens_left)
    yield _gauge("roombridge_google_pause_seconds", "Seconds left of the shared pause after a rate-limit answer",
                 usage.pause_left)
    last_minute = usage.minutes[0]  # the last complete minute, for every process of every host
    calls = GaugeMetricFamily("roombridge_google_budget_calls_last_minute",
                              "Calls granted by the budget in the last complete minute, all hosts", labels=["kind"])
    for kind in KINDS:
        calls.add_metric([kind], last_minute.granted[kind])
    yield calls
    depth = GaugeMetricFamily("roombridge_queue_jobs", "Jobs waiting in each queue", labels=["queue"])
    failed = GaugeMetricFamily("roombridge_queue_failed_jobs", "Failed jobs kept for admins", labels=["queue"])
    pipe = conn.pipeline(transaction=False)
    for name in QUEUE_NAMES:
        pipe.llen(Queue(name, connection=conn).key)
        pipe.zcard(FailedJobRegistry(name, connection=conn).key)
    counts = pipe.execute()
    for i, name in enumerate(QUEUE_NAMES):
        depth.add_metric([name], counts[2 * i])
        failed.add_metric([name], counts[2 * i + 1])
    yield depth
    yield failed
    yield _gauge("roombridge_google_call_log_buffered", "Google call records waiting in Redis for the call log table",
                 conn.llen(CALL_LOG_BUFFER_KEY))


def _database_gauges(session: Session, now: datetime) -> Iterator[Metric]:
    waiting = GaugeMetricFamily("roombridge_reservations", "Reservations not yet ended, pending or failed in Google",
                                labels=["status"])
    by_status = dict(session.execute(
        sa.select(Reservation.status, sa.func.count())
        .where(Reservation.status.in_((ReservationStatus.PENDING, ReservationStatus.FAILED)), Reservation.end_at > now)
        .group_by(Reservation.status)
    ).all())
    for status in (ReservationStatus.PENDING, ReservationStatus.FAILED):
        waiting.add_metric([status.value], by_status.get(status, 0))
    yield waiting
    oldest = session.scalar(sa.select(sa.func.min(Reservation.created_at))
                            .where(Reservation.status == ReservationStatus.PENDING))
    yield _gauge("roombridge_reservation_oldest_pending_seconds", "Age of the oldest reservation not yet in Google",
                 (now - oldest).total_seconds() if oldest else 0)

    in_scope = session.scalar(sa.select(sa.func.count()).select_from(Room).where(Room.in_scope.is_(True))) or 0
    latest = (sa.select(sa.func.max(WatchChannel.expiration).label("expires"))
              .join(Room, Room.id == WatchChannel.room_id)
              .where(Room.in_scope.is_(True), WatchChannel.stopped_at.is_(None), WatchChannel.expiration > now)
              .group_by(WatchChannel.room_id).subquery())
    soonest, watched = session.execute(sa.select(sa.func.min(latest.c.expires), sa.func.count())).one()
    yield _gauge("roombridge_channel_expiry_horizon_seconds",
                 "Seconds until the first in-scope room loses its last live channel",
                 (soonest - now).total_seconds() if soonest else 0)
    yield _gauge("roombridge_rooms_without_live_channel", "In-scope rooms with no live push channel",
                 in_scope - watched)
    yield from _sync_lag(session, now, in_scope)


def _sync_lag(session: Session, now: datetime, in_scope: int) -> Iterator[Metric]:
    synced = (sa.select(Room.calendar_id, RoomSyncState.last_sync_at)
              .outerjoin(RoomSyncState, RoomSyncState.room_id == Room.id)
              .where(Room.in_scope.is_(True)))
    last = RoomSyncState.last_sync_at
    # One column of in-scope rooms (10,000 timestamps is a few milliseconds), bucketed here: the
    # date arithmetic a histogram's sum needs differs between SQLite and PostgreSQL.
    lags = sorted((now - at).total_seconds() for at in session.scalars(synced.with_only_columns(last)) if at)
    yield GaugeHistogramMetricFamily(
        "roombridge_sync_lag_seconds", "In-scope rooms by time since their last successful sync (never: +Inf only)",
        buckets=[*((str(float(b)), bisect_right(lags, b)) for b in SYNC_LAG_BUCKETS), ("+Inf", in_scope)],
        gsum_value=sum(lags))
    yield _gauge("roombridge_rooms_never_synced", "In-scope rooms never synced", in_scope - len(lags))
    stalest = GaugeMetricFamily("roombridge_room_sync_lag_seconds",
                                f"Time since the last successful sync, the {STALEST_ROOMS_SHOWN} stalest rooms",
                                labels=["room"])
    for calendar_id, at in session.execute(synced.where(last.is_not(None)).order_by(last).limit(STALEST_ROOMS_SHOWN)):
        stalest.add_metric([calendar_id], (now - at).total_seconds())
    yield stalest
