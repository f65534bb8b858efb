"""The one gateway to the Google Calendar API.

Every Calendar call of the app goes through `CalendarGateway`, which:

- authenticates as the service account in GOOGLE_SERVICE_ACCOUNT_FILE (the key's own
  ``token_uri`` is honoured, so the local emulator can stand in for Google) with the
  narrowest scope that does the job, ``calendar.events``; in delegated mode
  (GOOGLE_DELEGATED_USER set) it acts as that one booking user;
- refuses, before any request is made, every calendar id that is not an in-scope room,
  and logs the refusal: least privilege in code, beyond what Google's sharing enforces;
- takes a token of its `kind` (write, sync, sweep, renewal) from the call budget shared by
  every process (roombridge/call_budget.py) before EVERY Calendar call, list pages, watch and
  stop included; refused, it raises `OverBudget`, a `RetriableGoogleError` that says when to
  come back;
- retries what can recover a few times: a rate-limit answer (429, 403 rateLimitExceeded or
  userRateLimitExceeded) sets the budget's shared pause, which every process honours before its
  next call; 5xx and network errors back off here, truncated exponential with full jitter.
  Then it raises `RetriableGoogleError` for the job queue to retry later; it raises
  `PermanentGoogleError` with Google's reason for what will not get better by waiting (not
  shared, forbidden, quota exceeded);
- makes inserts idempotent: our event ids are deterministic, so a retried insert that
  Google already stored answers 409 ``duplicate`` and we read the event back;
- pages through events.list to the end and hands back the new sync token;
- records every call it makes, and every call it refuses, in the call log
  (roombridge/call_log.py): one Redis command after the answer, never a reason for a call to fail.

It talks through the real google-api-python-client over HTTP, to Google or to the
emulator (GOOGLE_CALENDAR_API_URL).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import httplib2
import sqlalchemy as sa
from flask import Flask, current_app
from google.oauth2 import service_account
from google_auth_httplib2 import AuthorizedHttp
from googleapiclient import discovery
from googleapiclient.errors import HttpError
from redis.exceptions import RedisError

from roombridge import metrics
from roombridge.call_budget import KINDS, CallBudget, Decision
from roombridge.call_log import REFUSED, ROOM_CALENDAR_SUFFIX, CallLog, CallRecord, outcome_of
from roombridge.config import CALENDAR_EVENTS_SCOPE, Config
from roombridge.queue import redis

log = logging.getLogger(__name__)

RESERVATION_PROPERTY = "roombridgeReservationId"
# An HMAC of the reservation id under SECRET_KEY: only we can write it, so only our events carry a valid one.
SIGNATURE_PROPERTY = "roombridgeSignature"
_RESERVATION_ID = re.compile(r"[0-9]{1,18}")  # ASCII digits only: str.isdigit() takes '²', int() refuses it
RATE_LIMIT_REASONS = {"rateLimitExceeded", "userRateLimitExceeded"}
RETRIABLE_STATUSES = {429, 500, 502, 503, 504}
WRITE_ROLES = {"writer", "owner"}


class GoogleError(Exception):
    """A Calendar call that did not succeed; `reason` is Google's (or ours, before a call)."""

    retriable = False

    def __init__(self, message: str, *, status: int | None = None, reason: str | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.reason = reason

    def __str__(self) -> str:
        where = f"{self.status} {self.reason}" if self.status else (self.reason or "error")
        return f"Google Calendar: {where}: {self.message}"


class RetriableGoogleError(GoogleError):
    """Rate limited, Google failing, or the network: worth trying again later."""

    retriable = True


class OverBudget(RetriableGoogleError):
    """Not called: the shared call budget refused (exhausted, paused, or Redis unreachable)."""

    def __init__(self, message: str, *, reason: str, retry_after: float):
        super().__init__(message, reason=reason)
        self.retry_after = retry_after


class PermanentGoogleError(GoogleError):
    """Waiting will not help: the calendar is not shared, the call is forbidden, quota is gone..."""


class CalendarNotInScope(PermanentGoogleError):
    """Refused by us before any request: the calendar is not an in-scope room."""


class EventNotFound(PermanentGoogleError):
    """The event does not exist (or the calendar is not visible to us)."""


class EventIdTaken(PermanentGoogleError):
    """Our deterministic id is used by a deleted or foreign event; insert under a new revision."""


class SyncTokenInvalid(GoogleError):
    """410 fullSyncRequired: drop the sync token and run a full sync."""


def event_id_for(reservation_id: int, revision: int = 0) -> str:
    """The deterministic Google event id of our reservation: base32hex (a-v, 0-9), 5+ chars.

    The revision is part of it because Google never lets a deleted id be used again.
    """
    raw = f"roombridge:{reservation_id}:{revision}".encode()
    return base64.b32hexencode(raw).decode().rstrip("=").lower()


def series_event_id_for(series_id: str, revision: int = 0) -> str:
    """The deterministic Google event id of a series booked here (one recurring event), as `event_id_for`."""
    raw = f"roombridge-series:{series_id}:{revision}".encode()
    return base64.b32hexencode(raw).decode().rstrip("=").lower()


def instance_id_for(event_id: str, original_start: datetime) -> str:
    """Google's id of a recurring event's instance: `<eventId>_<its original start, UTC, YYYYMMDDTHHMMSSZ>`."""
    return f"{event_id}_{original_start.astimezone(UTC):%Y%m%dT%H%M%SZ}"


def reservation_signature(reservation_id: int, key: str) -> str:
    """What SIGNATURE_PROPERTY holds for our reservation: HMAC-SHA256 of its id under `key` (SECRET_KEY)."""
    return hmac.new(key.encode("utf-8", "surrogatepass"), f"reservation:{reservation_id}".encode(),
                    hashlib.sha256).hexdigest()


def own_properties(reservation_id: int, key: str) -> dict[str, str]:
    """The private extended properties that mark an event as our reservation's."""
    return {RESERVATION_PROPERTY: str(reservation_id), SIGNATURE_PROPERTY: reservation_signature(reservation_id, key)}


def _own_marks(event: dict) -> tuple[object, object]:
    private = (event.get("extendedProperties") or {}).get("private") or {}
    return private.get(RESERVATION_PROPERTY), private.get(SIGNATURE_PROPERTY)


def reservation_id_of(event: dict, key: str | None) -> int | None:
    """Our reservation id if the event carries our private properties with a valid signature, else None.

    Never read from the event id: anyone who may write to a room calendar chooses its event ids
    (and may copy our property, but cannot sign it without SECRET_KEY).
    """
    value, signature = _own_marks(event)
    if not key or not isinstance(value, str) or not isinstance(signature, str) or not _RESERVATION_ID.fullmatch(value):
        return None
    reservation_id = int(value)
    expected = reservation_signature(reservation_id, key).encode()
    return reservation_id if hmac.compare_digest(signature.encode("utf-8", "surrogatepass"), expected) else None


def signing_key() -> str:
    """The key our events' signatures are made with: the app's SECRET_KEY (set for every process)."""
    return current_app.config["SECRET_KEY"]


def is_room_calendar(calendar_id: str) -> bool:
    return calendar_id.endswith(ROOM_CALENDAR_SUFFIX)


@dataclass(frozen=True)
class WatchResult:
    id: str
    resource_id: str
    expiration: datetime


@dataclass(frozen=True)
class AccessCheck:
    ok: bool
    role: str | None
    problem: str | None


def _parse_error(err: HttpError) -> tuple[int, str | None, str]:
    status = int(err.resp.status)
    reason, message = None, err.reason or ""
    try:
        error = json.loads(err.content.decode("utf-8", "replace"))["error"]
        message = error.get("message", message)
        items = error.get("errors") or []
        if items:
            reason = items[0].get("reason")
    except (ValueError, KeyError, TypeError, AttributeError):
        pass
    return status, reason, message


def is_rate_limit(error: GoogleError) -> bool:
    return error.status == 429 or (error.status == 403 and error.reason in RATE_LIMIT_REASONS)


def _outcome(error: GoogleError) -> str:
    if is_rate_limit(error):
        return "rate_limited"
    if error.reason == "network":
        return "network"
    return "server_error" if (error.status or 0) >= 500 else "client_error"


def classify(err: HttpError) -> GoogleError:
    """Turn Google's answer into one of our errors.

    410 fullSyncRequired: the sync token is dead, list everything again. 429, 500, 502-504 and 403
    rate-limit reasons: retriable, with backoff. 404 and 410: the event is not there. Any
    other 4xx: permanent (retrying will not change Google's mind).
    """
    status, reason, message = _parse_error(err)
    if status == 410 and reason == "fullSyncRequired":
        return SyncTokenInvalid(message, status=status, reason=reason)
    if status in RETRIABLE_STATUSES or (status == 403 and reason in RATE_LIMIT_REASONS):
        return RetriableGoogleError(message, status=status, reason=reason)
    if status in (404, 410):
        return EventNotFound(message, status=status, reason=reason or "notFound")
    return PermanentGoogleError(message, status=status, reason=reason)


@functools.cache
def discovery_cache_doc() -> str:
    """Calendar v3's discovery document, shipped with the client: no network, read once."""
    from googleapiclient import discovery_cache

    return discovery_cache.get_static_doc("calendar", "v3")


class CalendarGateway:
    def __init__(
        self,
        credentials,
        api_url: str,
        *,
        in_scope: Callable[[str], bool],
        budget: CallBudget,
        kind: str,
        delegated: bool = False,
        call_log: CallLog | None = None,
        max_attempts: int = 4,
        retry_base: float = 0.5,
        timeout: float = 30.0,
    ):
        self.credentials = credentials
        self.delegated = delegated
        self._in_scope = in_scope
        if kind not in KINDS:
            raise ValueError(f"unknown call kind {kind!r}; one of {', '.join(KINDS)}")
        self.budget = budget
        self.kind = kind
        self.call_log = call_log
        self.max_attempts = max_attempts
        self.retry_base = retry_base
        http = AuthorizedHttp(credentials, http=httplib2.Http(timeout=timeout))
        self.service = discovery.build_from_document(
            discovery_cache_doc(),
            http=http,
            client_options={"api_endpoint": api_url},
        )
        # Built once: the client library builds every method of a resource each time `events()`
        # is called, about 11 ms of CPU, which was more than the emulator's answer took.
        self.events = self.service.events()

    @classmethod
    def for_app(cls, app: Flask | None = None, *, kind: str) -> CalendarGateway:
        """The gateway of the current app for calls of `kind` (see roombridge/call_budget.py).

        The allowlist is the in-scope rooms in its database; the budget is shared in its Redis.
        """
        from roombridge import db
        from roombridge.models import Room

        app = app or current_app._get_current_object()
        config: Config = app.config["ROOMBRIDGE"]

        sessions = db.session_factory(app)

        def in_scope(calendar_id: str) -> bool:
            # Its own short transaction: the caller's must not stay open across the HTTP call.
            with sessions() as session:
                found = session.scalar(
                    sa.select(Room.id).where(Room.calendar_id == calendar_id, Room.in_scope.is_(True))
                )
            return found is not None

        return cls(
            _credentials(app, config),
            config.GOOGLE_CALENDAR_API_URL,
            in_scope=in_scope,
            budget=call_budget(app),
            kind=kind,
            delegated=config.delegated_mode,
            call_log=CallLog(redis(app)),
            max_attempts=config.GOOGLE_MAX_ATTEMPTS,
            retry_base=config.GOOGLE_RETRY_BASE_SECONDS,
            timeout=config.GOOGLE_TIMEOUT_SECONDS,
        )

    # --- the allowlist and the retry loop -------------------------------------------------

    def _require_in_scope(self, calendar_id: str, operation: str) -> None:
        if not is_room_calendar(calendar_id) or not self._in_scope(calendar_id):
            log.warning("refused a Calendar call for %s: not an in-scope room calendar", calendar_id)
            self._record(calendar_id, operation, REFUSED, None, time.time(), 0.0)
            try:
                self.budget.count_allowlist_refusal(calendar_id)
            except RedisError:
                log.warning("could not count the refusal in Redis")
            raise CalendarNotInScope(
                f"{calendar_id} is not an in-scope room calendar", reason="notInScope"
            )

    def _record(self, calendar_id: str | None, operation: str, outcome: str, status: int | None, began: float,
                elapsed: float) -> None:
        if self.call_log is not None:
            self.call_log.record(CallRecord(began, calendar_id, operation, self.kind, outcome, status,
                                            round(elapsed * 1000)))

    def _execute(self, request, what: str, calendar_id: str | None) -> dict:
        """Run `request` (on `calendar_id`'s calendar), with the budget and the retries; each attempt is logged."""
        operation = request.methodId.removeprefix("calendar.")
        answered = _capture_status(request)
        attempt = 0
        while True:
            attempt += 1
            self._take_budget(what)
            began, started = time.time(), time.monotonic()
            try:
                answer = request.execute(num_retries=0)
            except HttpError as err:
                error = classify(err)
            except (OSError, httplib2.HttpLib2Error) as err:  # refused, reset, timed out
                error = RetriableGoogleError(f"{type(err).__name__}: {err}", reason="network")
            else:
                metrics.GOOGLE_CALLS.labels(self.kind, "ok").inc()
                self._record(calendar_id, operation, "ok", answered.get("status"), began, time.monotonic() - started)
                return answer
            self._record(calendar_id, operation, outcome_of(error.status, error.reason), error.status, began,
                         time.monotonic() - started)
            metrics.GOOGLE_CALLS.labels(self.kind, _outcome(error)).inc()
            # A rate limit pauses every process (the next _take_budget waits for it), not just this one.
            paused = is_rate_limit(error) and self._pause_everyone(error, what)
            if not error.retriable or attempt >= self.max_attempts:
                log.info("%s failed after %d attempt(s): %s", what, attempt, error)
                raise error
            if not paused:
                # Truncated exponential backoff with full jitter (Google's advice).
                delay = random.uniform(0, min(32.0, self.retry_base * 2 ** (attempt - 1)))
                log.info("%s: %s; retrying in %.2fs", what, error, delay)
                time.sleep(delay)

    def _take_budget(self, what: str) -> None:
        """A token of our kind, waiting as long as the kind may; else OverBudget. Redis down: writes go on."""
        try:
            decision: Decision = self.budget.acquire(self.kind)
        except RedisError as err:
            metrics.BUDGET_REFUSALS.labels(self.kind, "unavailable").inc()
            if self.call_log is not None:
                self.call_log.unavailable()  # so the record after this call does not wait on Redis too
            if self.kind == "write":
                # A person is waiting, and Google's own quota still stands behind us.
                log.warning("%s: call budget unavailable (%s); a write goes ahead without it", what, err)
                return
            raise OverBudget(f"{what}: the call budget is unavailable ({type(err).__name__}); try again later",
                             reason="budgetUnavailable", retry_after=30.0) from err
        if not decision.granted:
            metrics.BUDGET_REFUSALS.labels(self.kind, decision.verdict).inc()
            raise OverBudget(f"{what}: the {self.kind} budget is {decision.verdict}; "
                             f"try again in {decision.retry_after:.1f}s",
                             reason=f"budget{decision.verdict.capitalize()}", retry_after=decision.retry_after)

    def _pause_everyone(self, error: GoogleError, what: str) -> bool:
        """Record the rate-limit answer and set the shared pause; False when Redis cannot (back off here)."""
        metrics.GOOGLE_RATE_LIMITS.labels(self.kind, error.reason or str(error.status)).inc()
        try:
            left = self.budget.pause_after(self.kind, error.status, error.reason, what)
        except RedisError:
            log.warning("%s: rate limited and the shared pause could not be set; backing off here", what)
            return False
        log.warning("%s: Google rate limit (%s %s); every process pauses %.2fs", what, error.status, error.reason,
                    left)
        return True

    # --- events ----------------------------------------------------------------------------

    def insert_event(self, calendar_id: str, event_id: str, body: dict, send_updates: str = "none") -> dict:
        """Insert under our deterministic id; a retry that finds it already stored returns it."""
        self._require_in_scope(calendar_id, "events.insert")
        request = self.events.insert(
            calendarId=calendar_id, body={**body, "id": event_id}, sendUpdates=send_updates
        )
        try:
            return self._execute(request, f"insert {event_id} on {calendar_id}", calendar_id)
        except PermanentGoogleError as error:
            if error.status != 409:
                raise
        existing = self.get_event(calendar_id, event_id)
        if existing.get("status") == "cancelled" or _own_marks(existing) != _own_marks(body):
            raise EventIdTaken(
                f"event id {event_id} is used by a deleted or foreign event", status=409, reason="duplicate"
            )
        return existing

    def get_event(self, calendar_id: str, event_id: str) -> dict:
        self._require_in_scope(calendar_id, "events.get")
        request = self.events.get(calendarId=calendar_id, eventId=event_id)
        return self._execute(request, f"get {event_id} on {calendar_id}", calendar_id)

    def patch_event(self, calendar_id: str, event_id: str, body: dict, send_updates: str = "none") -> dict:
        self._require_in_scope(calendar_id, "events.patch")
        request = self.events.patch(
            calendarId=calendar_id, eventId=event_id, body=body, sendUpdates=send_updates
        )
        return self._execute(request, f"patch {event_id} on {calendar_id}", calendar_id)

    def delete_event(self, calendar_id: str, event_id: str, send_updates: str = "none") -> bool:
        """Delete; False when Google no longer had it (already deleted is as good as deleted)."""
        self._require_in_scope(calendar_id, "events.delete")
        request = self.events.delete(calendarId=calendar_id, eventId=event_id, sendUpdates=send_updates)
        try:
            self._execute(request, f"delete {event_id} on {calendar_id}", calendar_id)
        except EventNotFound:
            return False
        return True

    def list_events(
        self,
        calendar_id: str,
        *,
        sync_token: str | None = None,
        time_min: datetime | None = None,
        time_max: datetime | None = None,
        page_size: int = 250,
    ) -> EventListing:
        """Changes since `sync_token`, or with none, every event in [time_min, time_max)."""
        self._require_in_scope(calendar_id, "events.list")
        query: dict = {"calendarId": calendar_id, "singleEvents": True, "maxResults": page_size}
        if sync_token:
            # Google answers 400 to a sync token combined with a time window, so a sync token goes alone.
            query["syncToken"] = sync_token
        else:
            if time_min:
                query["timeMin"] = _rfc3339(time_min)
            if time_max:
                query["timeMax"] = _rfc3339(time_max)
        return EventListing(self, query)

    # --- channels ----------------------------------------------------------------------------

    def watch(
        self, calendar_id: str, *, channel_id: str, address: str, token: str, ttl_seconds: int | None = None
    ) -> WatchResult:
        self._require_in_scope(calendar_id, "events.watch")
        body = {"id": channel_id, "type": "web_hook", "address": address, "token": token}
        if ttl_seconds:
            body["params"] = {"ttl": str(int(ttl_seconds))}
        request = self.events.watch(calendarId=calendar_id, body=body)
        answer = self._execute(request, f"watch {calendar_id}", calendar_id)
        return WatchResult(
            id=answer["id"],
            resource_id=answer["resourceId"],
            expiration=datetime.fromtimestamp(int(answer["expiration"]) / 1000, UTC),
        )

    def stop_channel(self, channel_id: str, resource_id: str, calendar_id: str | None = None) -> bool:
        """Stop a channel (on `calendar_id`, for the call log); False when Google no longer knew it."""
        request = self.service.channels().stop(body={"id": channel_id, "resourceId": resource_id})
        try:
            self._execute(request, f"stop channel {channel_id}", calendar_id)
        except EventNotFound:
            return False
        return True

    # --- access --------------------------------------------------------------------------------

    def check_access(self, calendar_id: str) -> AccessCheck:
        """What the service account may do on a room calendar that is not (yet) in scope.

        Only room calendars are ever checked, never a person's. events.list with one result
        is the cheapest call the calendar.events scope allows; its accessRole says the role.
        """
        if not is_room_calendar(calendar_id):
            return AccessCheck(False, None, f"{calendar_id} is not a room (resource) calendar address")
        request = self.events.list(calendarId=calendar_id, maxResults=1, singleEvents=True)
        who = getattr(self.credentials, "service_account_email", "the service account")
        try:
            answer = self._execute(request, f"check access to {calendar_id}", calendar_id)
        except EventNotFound:
            return AccessCheck(
                False, None, f"{calendar_id} is not shared with {who} (or does not exist)"
            )
        except PermanentGoogleError as error:
            return AccessCheck(False, None, f"Google refused access: {error.message}")
        role = answer.get("accessRole")
        if role not in WRITE_ROLES:
            return AccessCheck(
                False,
                role,
                f"{who} has only '{role}' access; share the calendar with "
                "'Make changes to events' so bookings can be written",
            )
        return AccessCheck(True, role, None)


class EventListing:
    """The pages of one events.list query, fetched lazily; `next_sync_token` once done."""

    def __init__(self, gateway: CalendarGateway, query: dict):
        self._gateway = gateway
        self._query = query
        self.next_sync_token: str | None = None
        self.page_count = 0

    def pages(self) -> Iterator[list[dict]]:
        page_token = None
        while True:
            query = dict(self._query, pageToken=page_token) if page_token else self._query
            request = self._gateway.events.list(**query)
            calendar_id = self._query["calendarId"]
            answer = self._gateway._execute(request, f"list {calendar_id}", calendar_id)
            self.page_count += 1
            yield answer.get("items", [])
            page_token = answer.get("nextPageToken")
            if not page_token:
                # Google puts nextSyncToken on the last page only.
                self.next_sync_token = answer.get("nextSyncToken")
                return


def _capture_status(request) -> dict:
    """The status of `request`'s successful answers (200, 204...), which execute() keeps to itself."""
    answered: dict = {}
    postproc = request.postproc

    def keep_status(response, content):
        answered["status"] = int(response.status)
        return postproc(response, content)

    request.postproc = keep_status
    return answered


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_credentials_lock = threading.Lock()


def call_budget(app: Flask) -> CallBudget:
    """The app's view of the shared budget (its Redis, its GOOGLE_CALLS_PER_MINUTE)."""
    config: Config = app.config["ROOMBRIDGE"]
    return CallBudget(redis(app), config.GOOGLE_CALLS_PER_MINUTE, pause_base=config.GOOGLE_RETRY_BASE_SECONDS)


def _credentials(app: Flask, config: Config):
    """One credentials object per app: its access token is reused until it expires."""
    with _credentials_lock:
        cached = app.extensions.get("roombridge.google_credentials")
        if cached is None:
            if not config.GOOGLE_SERVICE_ACCOUNT_FILE:
                raise PermanentGoogleError(
                    "GOOGLE_SERVICE_ACCOUNT_FILE is not set", reason="notConfigured"
                )
            cached = service_account.Credentials.from_service_account_file(
                config.GOOGLE_SERVICE_ACCOUNT_FILE, scopes=[CALENDAR_EVENTS_SCOPE]
            )
            if config.GOOGLE_DELEGATED_USER:
                cached = cached.with_subject(config.GOOGLE_DELEGATED_USER)
            app.extensions["roombridge.google_credentials"] = cached
        return cached
