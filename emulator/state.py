"""The in-memory Google Calendar: accounts, calendars, sharing, events, sync and channels.

Every public method takes the one state lock; nothing here talks to the network (push
delivery only queues work for the dispatcher thread). Google behaviours followed, from the
Calendar API v3 reference and guides:

Access (reference "Acl", guide "Handle API errors")
- A principal reaches a user calendar it owns (id = its email) and any calendar shared with
  it. Calendars it cannot see answer 404 ``notFound``; writing with a ``reader`` share answers
  403 ``requiredAccessLevel`` "You need to have writer access to this calendar.". A
  ``freeBusyReader`` share does not give events (403 "... reader access ...").
- A service-account token acts as the account; a delegated token (``sub``) acts as the user.

Events (reference "Events: insert/get/list/patch/update/delete")
- Client ids: base32hex (a-v, 0-9), 5-1024 chars, else 400 ``invalid`` "Invalid resource id
  value."; an existing id, including a deleted one, is 409 ``duplicate``.
- ``etag`` changes on every modification; ``updated``/``created`` RFC 3339 UTC with millis;
  ``sequence`` grows when start, end or recurrence change; ``iCalUID`` is ``<id>@google.com``
  unless given; the organizer of an event created on a calendar is that calendar (``self``
  on its own copy), the creator is the caller.
- ``If-Match`` with a stale etag answers 412 ``conditionNotMet``.
- A service account without delegation may not add attendees: 403
  ``forbiddenForServiceAccounts``.
- ``extendedProperties.private``/``shared``: keys over 44 characters are dropped, values over
  1024 characters truncated.
- delete marks the event ``cancelled`` and keeps it for sync; deleting it again is 410
  ``deleted``. get still returns a cancelled event.
- A timed series must name ``timeZone`` on start and end (400 ``required`` "Missing time zone
  definition for start time."); it is expanded in that zone's wall time.
- Recurring series expand with ``singleEvents=true`` (lists, sync and ``events.instances``)
  into instances ``<id>_<start>`` with ``recurringEventId`` and ``originalStartTime``.
  Patching or deleting an instance id stores an exception: an event of its own with that id
  (same iCalUID, no ``recurrence``); a deleted one is ``cancelled`` and is listed as a stub
  (id, status, recurringEventId, originalStartTime). The series' rule is not rewritten, so a
  sync reports only the exception. Without ``singleEvents`` lists give the series plus its
  exceptions. When the series is deleted, or its rule (e.g. an UNTIL for "this and
  following") no longer has an instance, that instance's exception is cancelled too.
  A later change to the series reaches each exception's fields that it had not overridden
  (an exception's own start, end and status are never overwritten).
- patch merges objects (``null`` removes a field) and replaces arrays; update replaces.

Listing and sync (guide "Synchronize resources efficiently", reference "Events: list")
- ``nextPageToken`` on every page but the last, ``nextSyncToken`` only on the last. Page
  tokens carry the query and a snapshot of the calendar, so later pages answer the same
  question; changes made meanwhile show up in the next incremental sync.
- With ``syncToken`` the response holds every event changed since the token, deletions
  included as ``cancelled`` stubs (id and status), whatever ``showDeleted`` says. iCalUID,
  orderBy, privateExtendedProperty, q, sharedExtendedProperty, timeMin, timeMax and updatedMin
  are refused with 400 (Google documents the refusal but not its words; the emulator answers
  ``invalid`` naming the parameter). An expired or unreadable token is 410
  ``fullSyncRequired``.
- ``maxResults`` defaults to 250 and is capped at 2500; ``orderBy=startTime`` needs
  ``singleEvents=true``.

Resources (Google's room behaviour)
- A person's event that lists a room (``resource: true``) is copied to the room calendar with
  the same id and iCalUID; the room accepts when it is free and declines on a clash.
- The room's copy is an attendee's copy (organizer the person): its holder may change only
  the room's own answer and per-copy fields; other changes are 403 ``forbiddenForNonOrganizer``
  "Shared properties can only be changed by the organizer of the event.". An answer changed
  there reaches the organizer's copy (Google propagates attendee responses); nothing is
  deleted, and a declined booking no longer keeps the room busy.

The emulator relaxes Google in places, each stated where it happens (http:// push addresses
on loopback only, iat/exp checked against real time).
"""

import base64
import copy
import itertools
import json
import random
import re
import secrets
import threading
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, urlparse

from . import errors
from .auth import (
    CALENDAR_SCOPES,
    key_file,
    new_key_id,
    new_key_pair,
    project_of,
    verify_assertion,
)
from .errors import ApiError, invalid
from .push import Delivery, push_log_entry
from .quota import QuotaMeter
from .timeutil import (
    EXPANSION_HORIZON,
    Clock,
    event_span,
    format_http_date,
    format_rfc3339,
    instance_suffix,
    occurrences,
    parse_rfc3339,
    time_field,
    validate_recurrence,
    zone,
)

ROLE_RANK = {"freeBusyReader": 0, "reader": 1, "writer": 2, "owner": 3}
EVENT_ID = re.compile(r"^[a-v0-9]{5,1024}$")
BASE32HEX_ALPHABET = "0123456789abcdefghijklmnopqrstuv"
SYNC_TOKEN_FORBIDDEN = ("iCalUID", "orderBy", "privateExtendedProperty", "q",
                        "sharedExtendedProperty", "timeMin", "timeMax", "updatedMin")
DEFAULT_MAX_RESULTS = 250
MAX_MAX_RESULTS = 2500
DEFAULT_CHANNEL_TTL = 604800
EXTENDED_KEY_MAX = 44
EXTENDED_VALUE_MAX = 1024
CHANNEL_ID_MAX = 64
CHANNEL_TOKEN_MAX = 256
SEND_UPDATES = ("all", "externalOnly", "none")
RESPONSE_STATUSES = ("needsAction", "declined", "tentative", "accepted")
# What an attendee may change on its own copy of someone else's event (Events reference:
# private extended properties, reminders, colour, transparency, and its own answer);
# anything else is a shared property: 403 forbiddenForNonOrganizer.
ATTENDEE_OWN_FIELDS = frozenset({"reminders", "colorId", "transparency"})
# Fields the server owns: a client body cannot set them.
SERVER_FIELDS = frozenset({"kind", "etag", "id", "htmlLink", "created", "updated", "creator",
                           "organizer", "iCalUID", "recurringEventId", "originalStartTime",
                           "sequence"})
# Server fields carried from version to version (an exception also keeps its series link).
STORED_SERVER_FIELDS = ("id", "created", "creator", "organizer", "iCalUID", "sequence",
                        "recurringEventId", "originalStartTime")
# An exception's own timing and state: a change to the series never overwrites them.
INSTANCE_OWN_FIELDS = frozenset({"start", "end", "recurrence", "status"})
LOOPBACK_HOSTS = frozenset({"localhost", "::1"})
FAR_FUTURE = datetime.max.replace(tzinfo=UTC)
FAR_PAST = datetime.min.replace(tzinfo=UTC)


@dataclass
class Settings:
    """Knobs the control API can turn; the defaults behave like Google."""

    page_size_cap: int | None = None
    push_delay: float = 0.0
    push_drop_ratio: float = 0.0
    access_token_ttl: int = 3600
    max_channel_ttl: int = DEFAULT_CHANNEL_TTL
    latency: float = 0.0
    push_retry_base: float = 1.0
    push_retry_cap: float = 60.0
    push_max_attempts: int = 6
    stopped_channel_delivers_once: bool = False
    # Google's quotas (emulator.quota); off unless asked for, so tests that do not care
    # are not refused. quota_user_status: 403 (userRateLimitExceeded) or 429.
    quota_enabled: bool = False
    quota_per_user: int = 600
    quota_per_project: int = 10000
    quota_user_status: int = 403
    # Seconds that must pass between two writes to one calendar (0: no pacing).
    calendar_write_interval: float = 0.0


@dataclass
class ServiceAccount:
    email: str
    client_id: str
    public_keys: dict
    delegation: bool = False


@dataclass
class AccessToken:
    service_account: str
    subject: str | None
    scopes: frozenset
    expires_at: datetime


@dataclass
class Caller:
    """Who a request acts as: ``email`` is the principal access is checked for."""

    email: str
    service_account: str | None = None
    subject: str | None = None

    @property
    def may_invite(self):
        return self.service_account is None or self.subject is not None


@dataclass
class Calendar:
    id: str
    summary: str
    kind: str
    time_zone: str
    resource_id: str
    capacity: int | None = None
    building: str | None = None
    floor: str | None = None
    features: list = field(default_factory=list)
    acl: dict = field(default_factory=dict)
    events: dict = field(default_factory=dict)
    sync_epoch: int = 0

    def info(self):
        return {"id": self.id, "summary": self.summary, "kind": self.kind,
                "timeZone": self.time_zone, "capacity": self.capacity,
                "building": self.building, "floor": self.floor, "features": list(self.features),
                "resourceId": self.resource_id, "acl": dict(self.acl)}


@dataclass
class StoredEvent:
    resource: dict
    change: int
    # Instance ids a change removed from a series: id -> (change number, cancelled stub).
    removed_instances: dict = field(default_factory=dict)

    @property
    def cancelled(self):
        return self.resource.get("status") == "cancelled"


@dataclass
class Channel:
    id: str
    calendar_id: str
    resource_id: str
    resource_uri: str
    address: str
    token: str | None
    expiration: datetime
    principal: str
    created: datetime | None = None  # the emulator's clock at the watch call
    stopped: bool = False
    stopped_at: datetime | None = None  # the emulator's clock at channels.stop
    last_message_number: int = 0
    stopped_deliveries_left: int = 0

    def info(self):
        # created and stoppedAt are the emulator's own (Google shows neither): tests measure coverage.
        return {"id": self.id, "calendar": self.calendar_id, "resourceId": self.resource_id,
                "resourceUri": self.resource_uri, "address": self.address, "token": self.token,
                "expiration": str(millis(self.expiration)), "principal": self.principal,
                "stopped": self.stopped, "created": millis(self.created) if self.created else None,
                "stoppedAt": millis(self.stopped_at) if self.stopped_at else None}


def millis(moment):
    return int(moment.timestamp() * 1000)


def encode_token(payload):
    raw = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token):
    try:
        padded = token + "=" * (-len(token) % 4)
        payload = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, TypeError):
        return None
    return payload if isinstance(payload, dict) else None


def deep_merge(base, changes):
    """Patch semantics: objects merge, ``None`` removes, arrays and times are replaced."""
    merged = copy.deepcopy(base)
    for key, value in changes.items():
        if value is None:
            merged.pop(key, None)
        elif (isinstance(value, dict) and isinstance(merged.get(key), dict)
              and key not in ("start", "end")):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def is_loopback(address):
    host = urlparse(address).hostname or ""
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def time_input(value, time_zone=None):
    """Control-API convenience: an RFC 3339 string or a yyyy-mm-dd date as a start/end field."""
    if value is None or isinstance(value, dict):
        return value
    if len(value) == 10:
        return {"date": value}
    result = {"dateTime": value}
    if time_zone:
        result["timeZone"] = time_zone
    return result


def same_start(original_start, value):
    """Whether an instance's originalStartTime is the ``originalStart`` query value."""
    if original_start.get("date"):
        return original_start["date"] == value
    try:
        return parse_rfc3339(original_start["dateTime"]) == parse_rfc3339(value)
    except ApiError:
        return False


def is_attendee_copy(resource, calendar_id):
    """This calendar holds the event as an invited attendee (e.g. a room), not as organizer."""
    return resource.get("organizer", {}).get("email") != calendar_id and any(
        a.get("email") == calendar_id for a in resource.get("attendees", []))


def own_answer(resource, calendar_id):
    return next((a.get("responseStatus") for a in resource.get("attendees", [])
                 if a.get("email") == calendar_id), None)


def shared_view(resource, calendar_id):
    """What an attendee's copy shares with the organizer's: all but the attendee's own fields."""
    view = {k: copy.deepcopy(v) for k, v in resource.items()
            if k not in SERVER_FIELDS and k not in ATTENDEE_OWN_FIELDS}
    view.setdefault("status", "confirmed")
    view.setdefault("eventType", "default")
    properties = {k: v for k, v in view.pop("extendedProperties", {}).items() if k != "private"}
    if any(properties.values()):
        view["extendedProperties"] = properties
    view["attendees"] = sorted(
        (a.get("email"), None if a.get("email") == calendar_id else a.get("responseStatus"))
        for a in view.get("attendees", []))
    return view


class EmulatorState:
    """All emulated Google data and rules, guarded by ``self.lock``."""

    def __init__(self, base_url="http://127.0.0.1", dispatcher=None, **settings):
        self.lock = threading.RLock()
        self.clock = Clock()
        self.base_url = base_url
        self.dispatcher = dispatcher
        self._default_settings = Settings(**settings)
        self._clear()

    # -- lifecycle and settings ---------------------------------------------------------

    def _clear(self):
        self.settings = copy.copy(self._default_settings)
        self.service_accounts = {}
        self.users = {}
        self.calendars = {}
        self.access_tokens = {}
        self.channels = {}
        self.request_log = []
        self.push_log = []
        self.faults = []
        self.quota = QuotaMeter()
        self._changes = itertools.count(1)
        self._last_change = 0
        # Tokens name the generation they were issued in, so a reset invalidates them.
        self._generation = uuid.uuid4().hex[:12]

    def reset(self):
        """Forget everything: accounts, calendars, tokens, channels, logs, faults, settings."""
        with self.lock:
            self._clear()
            self.clock.reset()
            if self.dispatcher is not None:
                self.dispatcher.clear()

    @property
    def token_url(self):
        return self.base_url + "/token"

    @property
    def calendar_api_url(self):
        return self.base_url + "/calendar/v3/"

    def update_settings(self, **changes):
        with self.lock:
            for name, value in changes.items():
                if not hasattr(self.settings, name):
                    raise ValueError(f"unknown setting {name!r}")
                if name == "quota_user_status" and value not in (403, 429):
                    raise ValueError("quota_user_status must be 403 or 429")
                setattr(self.settings, name, value)
            return asdict(self.settings)

    def advance_clock(self, seconds):
        self.clock.advance(seconds)
        return self.clock_info()

    def clock_info(self):
        return {"now": format_rfc3339(self.clock.now()), "offset_seconds": self.clock.offset}

    def _next_change(self):
        self._last_change = next(self._changes)
        return self._last_change

    # -- accounts, calendars, sharing ---------------------------------------------------

    def create_service_account(self, email, delegation=False):
        """Register a service account with a fresh key and return its JSON key file."""
        pem, public_key = new_key_pair()
        key_id = new_key_id()
        with self.lock:
            account = self.service_accounts.get(email)
            if account is None:
                account = ServiceAccount(email, str(random.randrange(10**20, 10**21)), {})
                self.service_accounts[email] = account
            account.public_keys[key_id] = public_key
            account.delegation = bool(delegation)
            return key_file(email, pem, key_id, account.client_id, self.token_url)

    def set_delegation(self, email, enabled):
        with self.lock:
            if email not in self.service_accounts:
                raise KeyError(email)
            self.service_accounts[email].delegation = bool(enabled)

    def add_user(self, email, name=None, time_zone="Europe/London"):
        """A person with a primary calendar whose id is their email."""
        with self.lock:
            self.users[email] = {"email": email, "name": name or email}
            if email not in self.calendars:
                self.add_calendar(email, name or email, kind="user", time_zone=time_zone)
            return dict(self.users[email])

    def add_calendar(self, calendar_id, summary, kind="room", time_zone="Europe/London",
                     capacity=None, building=None, floor=None, features=None):
        if kind not in ("room", "user"):
            raise ValueError("kind must be 'room' or 'user'")
        zone(time_zone)
        with self.lock:
            existing = self.calendars.get(calendar_id)
            calendar = Calendar(
                calendar_id, summary, kind, time_zone,
                resource_id=existing.resource_id if existing else secrets.token_urlsafe(20),
                capacity=capacity, building=building, floor=floor,
                features=list(features or []),
                acl=existing.acl if existing else {},
                events=existing.events if existing else {},
            )
            self.calendars[calendar_id] = calendar
            return calendar.info()

    def list_calendars(self):
        with self.lock:
            return [calendar.info() for calendar in self.calendars.values()]

    def share(self, calendar_id, email, role):
        if role not in ROLE_RANK:
            raise ValueError(f"role must be one of {sorted(ROLE_RANK)}")
        with self.lock:
            self._calendar(calendar_id).acl[email] = role

    def unshare(self, calendar_id, email):
        with self.lock:
            self._calendar(calendar_id).acl.pop(email, None)

    def _calendar(self, calendar_id):
        calendar = self.calendars.get(calendar_id)
        if calendar is None:
            raise KeyError(calendar_id)
        return calendar

    def _role(self, email, calendar):
        if calendar.kind == "user" and calendar.id == email:
            return "owner"
        return calendar.acl.get(email)

    def _accessible(self, caller, calendar_id, needed):
        calendar = self.calendars.get(calendar_id)
        role = self._role(caller.email, calendar) if calendar else None
        if role is None:
            raise errors.not_found()
        if ROLE_RANK[role] < ROLE_RANK[needed]:
            raise errors.access_level(needed)
        return calendar

    # -- OAuth ----------------------------------------------------------------------------

    def issue_token(self, form):
        """The JWT-bearer grant of POST /token; raises OAuthError like Google."""
        with self.lock:
            account, scopes, subject = verify_assertion(form, self.service_accounts,
                                                        self.token_url)
            ttl = int(self.settings.access_token_ttl)
            token = "ya29.emu-" + secrets.token_urlsafe(32)
            self.access_tokens[token] = AccessToken(account.email, subject, scopes,
                                                    self.clock.now() + timedelta(seconds=ttl))
            return {"access_token": token, "expires_in": ttl, "token_type": "Bearer"}

    def authenticate(self, authorization):
        """The Caller behind an ``Authorization: Bearer`` header, or Google's 401/403."""
        scheme, _, token = (authorization or "").partition(" ")
        with self.lock:
            grant = self.access_tokens.get(token.strip()) if scheme.lower() == "bearer" else None
            if grant is None or grant.expires_at <= self.clock.now():
                raise errors.invalid_credentials()
            if not grant.scopes & CALENDAR_SCOPES:
                raise errors.insufficient_scopes()
            return Caller(grant.subject or grant.service_account, grant.service_account,
                          grant.subject)

    # -- the Calendar API ---------------------------------------------------------------

    def get_calendar(self, caller, calendar_id):
        with self.lock:
            calendar = self._accessible(caller, calendar_id, "freeBusyReader")
            return {"kind": "calendar#calendar", "etag": f'"{calendar.sync_epoch}"',
                    "id": calendar.id, "summary": calendar.summary,
                    "timeZone": calendar.time_zone}

    def insert_event(self, caller, calendar_id, body):
        with self.lock:
            calendar = self._accessible(caller, calendar_id, "writer")
            if body.get("attendees") and not caller.may_invite:
                raise errors.forbidden_for_service_accounts()
            return copy.deepcopy(self._insert(calendar, caller.email, body).resource)

    def get_event(self, caller, calendar_id, event_id):
        with self.lock:
            calendar = self._accessible(caller, calendar_id, "reader")
            return copy.deepcopy(self._existing(calendar, event_id, None).resource)

    def list_instances(self, caller, calendar_id, event_id, args):
        """events.instances: a series' instances by start time, its exceptions in place."""
        with self.lock:
            calendar = self._accessible(caller, calendar_id, "reader")
            master = calendar.events.get(event_id)
            if master is None or master.resource.get("recurringEventId"):
                raise errors.not_found()
            page_token = (args.get("pageToken") or [None])[0]
            offset = 0
            if page_token:
                page = decode_token(page_token)
                if (not page or page.get("kind") != "instances"
                        or page.get("event") != [calendar.id, event_id]
                        or page.get("generation") != self._generation):
                    raise invalid("Invalid page token value.", "pageToken")
                args, offset = page["query"], page["offset"]
            params = {k: v[0] for k, v in args.items() if v and k != "pageToken"}
            time_min = parse_rfc3339(params["timeMin"], "timeMin") if "timeMin" in params else None
            time_max = parse_rfc3339(params["timeMax"], "timeMax") if "timeMax" in params else None
            window = (time_min or FAR_PAST, time_max or FAR_FUTURE)
            show_deleted = params.get("showDeleted", "false").lower() == "true"
            rows = []
            if master.resource.get("recurrence") and not master.cancelled:
                rows = [self._row(calendar, instance, master, instance)
                        for instance in self._live_instances(calendar, master.resource, window)]
            for stored in calendar.events.values():
                resource = stored.resource
                if resource.get("recurringEventId") != event_id:
                    continue
                if stored.cancelled and not show_deleted:
                    continue
                item = (self._cancelled_stub(resource) if stored.cancelled
                        else copy.deepcopy(resource))
                row = self._row(calendar, item, stored)
                if row[2] > window[0] and row[1] < window[1]:
                    rows.append(row)
            if "originalStart" in params:
                wanted = params["originalStart"]
                rows = [row for row in rows if same_start(row[0]["originalStartTime"], wanted)]
            rows = self._ordered(rows, "startTime")
            size = min(self._max_results(params), len(rows) - offset)
            response = {"kind": "calendar#events", "etag": f'"{self._last_change:016d}"',
                        "summary": calendar.summary, "description": "",
                        "updated": format_rfc3339(self.clock.now()),
                        "timeZone": calendar.time_zone,
                        "accessRole": self._role(caller.email, calendar),
                        "defaultReminders": [],
                        "items": [row[0] for row in rows[offset:offset + size]]}
            if offset + size < len(rows):
                response["nextPageToken"] = encode_token({
                    "kind": "instances", "event": [calendar.id, event_id], "query": args,
                    "offset": offset + size, "generation": self._generation})
            return response

    def patch_event(self, caller, calendar_id, event_id, body, if_match=None):
        with self.lock:
            calendar = self._accessible(caller, calendar_id, "writer")
            stored = self._existing(calendar, event_id, if_match)
            merged = deep_merge(self._client_fields(stored.resource), body)
            return self._edit(caller, calendar, stored, merged)

    def update_event(self, caller, calendar_id, event_id, body, if_match=None):
        with self.lock:
            calendar = self._accessible(caller, calendar_id, "writer")
            stored = self._existing(calendar, event_id, if_match)
            return self._edit(caller, calendar, stored, body)

    def delete_event(self, caller, calendar_id, event_id, if_match=None):
        with self.lock:
            calendar = self._accessible(caller, calendar_id, "writer")
            self._delete(calendar, event_id, if_match)

    def _existing(self, calendar, event_id, if_match):
        """The stored event, or for an instance id its exception (a new one, not yet stored:
        ``_modify`` stores it, so a refused change leaves no trace)."""
        stored = calendar.events.get(event_id)
        if stored is None:
            found = self._find_instance(calendar, event_id)
            if found is None:
                raise errors.not_found()
            master, instance = found
            stored = StoredEvent(instance, master.change)
        if if_match and if_match != "*" and if_match != stored.resource["etag"]:
            raise errors.precondition_failed()
        return stored

    def _edit(self, caller, calendar, stored, fields):
        """patch/update: an organizer's copy changes freely, an attendee's copy only its own."""
        self._check_invitations(caller, fields, stored)
        if not is_attendee_copy(stored.resource, calendar.id):
            return copy.deepcopy(self._modify(calendar, stored, fields).resource)
        if shared_view(fields, calendar.id) != shared_view(stored.resource, calendar.id):
            raise errors.forbidden_for_non_organizer()
        before = own_answer(stored.resource, calendar.id)
        self._modify(calendar, stored, fields)
        after = own_answer(stored.resource, calendar.id)
        if after != before:
            self._spread_answer(calendar, stored.resource, after)
        return copy.deepcopy(stored.resource)

    def _spread_answer(self, calendar, resource, answer):
        """An attendee's answer reaches every other copy of the event, the organizer's first.

        So a room that declines on its own copy shows as declined on the organizer's event;
        no copy is deleted.
        """
        holders = [resource["organizer"]["email"]] + [a["email"] for a in resource["attendees"]]
        for holder in dict.fromkeys(holders):
            other = self.calendars.get(holder)
            if other is None or other is calendar:
                continue
            try:  # an answer on one instance becomes an exception on the other copies too
                target = self._existing(other, resource["id"], None)
            except ApiError:
                continue
            if target.cancelled:
                continue
            fields = self._client_fields(target.resource)
            for attendee in fields.get("attendees", []):
                if attendee["email"] == calendar.id:
                    attendee["responseStatus"] = answer
            other.events.setdefault(resource["id"], target)
            self._write(other, target, self._server_fields(target.resource),
                        self._validated(other, fields))

    def _check_invitations(self, caller, body, stored):
        if caller.may_invite:
            return
        before = {a.get("email") for a in stored.resource.get("attendees", [])}
        after = {a.get("email") for a in body.get("attendees") or []}
        if after - before:
            raise errors.forbidden_for_service_accounts()

    def _delete(self, calendar, event_id, if_match=None):
        stored = self._existing(calendar, event_id, if_match)
        if stored.cancelled:
            raise errors.already_deleted()
        self._modify(calendar, stored, dict(self._client_fields(stored.resource),
                                            status="cancelled"))

    # -- event storage ----------------------------------------------------------------------

    @staticmethod
    def _server_fields(resource):
        """The fields a new version keeps from the previous one (the server owns them)."""
        return {k: copy.deepcopy(resource[k]) for k in STORED_SERVER_FIELDS if k in resource}

    @staticmethod
    def _client_fields(resource):
        return {k: copy.deepcopy(v) for k, v in resource.items() if k not in SERVER_FIELDS}

    def _validated(self, calendar, body):
        """A client body checked and trimmed as Google would, without server fields."""
        resource = {k: copy.deepcopy(v) for k, v in body.items() if k not in SERVER_FIELDS}
        start, _ = event_span(resource, calendar.time_zone)
        if resource.get("recurrence"):
            validate_recurrence(resource["recurrence"])
            # Google expands a series in its own zone, so a timed one must name it.
            for side in ("start", "end"):
                if not start.all_day and not resource[side].get("timeZone"):
                    raise errors.required(f"Missing time zone definition for {side} time.",
                                          side)
        else:
            resource.pop("recurrence", None)
        status = resource.setdefault("status", "confirmed")
        if status not in ("confirmed", "tentative", "cancelled"):
            raise invalid(f"Invalid value for: {status}", "status")
        attendees = resource.get("attendees")
        if attendees is not None:
            if not isinstance(attendees, list) or not all(
                    isinstance(a, dict) and a.get("email") for a in attendees):
                raise errors.required("Missing attendee email.", "attendees")
            for attendee in attendees:
                if attendee.get("responseStatus", "needsAction") not in RESPONSE_STATUSES:
                    raise invalid(f"Invalid value for: {attendee['responseStatus']}",
                                  "attendees.responseStatus")
            if not attendees:
                resource.pop("attendees")
        properties = resource.get("extendedProperties")
        if properties is not None:
            resource["extendedProperties"] = {
                scope: {str(k): str(v)[:EXTENDED_VALUE_MAX]
                        for k, v in (properties.get(scope) or {}).items()
                        if len(str(k)) <= EXTENDED_KEY_MAX}
                for scope in ("private", "shared") if scope in properties}
        return resource

    def _insert(self, calendar, creator_email, body):
        event_id = body.get("id")
        if event_id is None:
            event_id = "".join(random.choices(BASE32HEX_ALPHABET, k=26))
        elif not isinstance(event_id, str) or not EVENT_ID.match(event_id):
            raise invalid("Invalid resource id value.")
        elif event_id in calendar.events:
            raise errors.duplicate()
        resource = self._validated(calendar, body)
        now = self.clock.now()
        if calendar.kind == "room" or creator_email != calendar.id:
            organizer = {"email": calendar.id, "displayName": calendar.summary}
        else:
            organizer = {"email": calendar.id, "displayName": self._display_name(calendar.id)}
        server = {
            "id": event_id,
            "created": format_rfc3339(now),
            "creator": {"email": creator_email},
            "organizer": organizer,
            "iCalUID": body.get("iCalUID") or f"{event_id}@google.com",
            "sequence": 0,
        }
        if calendar.kind == "user":
            self._answer_for_rooms(calendar, event_id, resource, None)
        stored = StoredEvent({}, 0)
        calendar.events[event_id] = stored
        self._write(calendar, stored, server, resource)
        if calendar.kind == "user":
            self._copy_to_rooms(calendar, stored, None)
        return stored

    def _modify(self, calendar, stored, body):
        previous = copy.deepcopy(stored.resource)
        resource = self._validated(calendar, body)
        if previous.get("recurringEventId"):
            resource.pop("recurrence", None)  # an exception is one occurrence
            calendar.events.setdefault(previous["id"], stored)
        server = self._server_fields(previous)
        timing = ("start", "end", "recurrence")
        moved = any(resource.get(k) != previous.get(k) for k in timing)
        server["sequence"] = previous["sequence"] + (1 if moved else 0)
        if calendar.kind == "user":
            self._answer_for_rooms(calendar, previous["id"], resource, previous)
        self._write(calendar, stored, server, resource)
        if calendar.kind == "user":
            self._copy_to_rooms(calendar, stored, previous)
        if previous.get("recurrence") and not stored.cancelled:
            self._carry_to_exceptions(calendar, previous, stored.resource)
        return stored

    def _carry_to_exceptions(self, calendar, before, after):
        """A series change reaches each exception that had not overridden that field."""
        changed = {k for k in set(before) | set(after)
                   if k not in SERVER_FIELDS and k not in INSTANCE_OWN_FIELDS
                   and before.get(k) != after.get(k)}
        if not changed:
            return
        for exception in list(calendar.events.values()):
            if (exception.resource.get("recurringEventId") != after["id"]
                    or exception.cancelled):
                continue
            fields = self._client_fields(exception.resource)
            inherited = [k for k in changed if fields.get(k) == before.get(k)]
            for key in inherited:
                if key in after:
                    fields[key] = copy.deepcopy(after[key])
                else:
                    fields.pop(key, None)
            if inherited:
                self._modify(calendar, exception, fields)

    def _write(self, calendar, stored, server, resource):
        """Store a version and remember which instances of a series it removed."""
        before = self._instance_ids(calendar, stored.resource) if stored.resource else {}
        self._store(calendar, stored, server, resource)
        after = self._instance_ids(calendar, stored.resource)
        for instance_id, stub in before.items():
            if instance_id not in after:
                stored.removed_instances[instance_id] = (stored.change, stub)
                self._cancel_exception(calendar, instance_id)
        for instance_id in after:
            stored.removed_instances.pop(instance_id, None)

    def _cancel_exception(self, calendar, instance_id):
        """An exception goes with its instance (series deleted, or its rule no longer has it)."""
        exception = calendar.events.get(instance_id)
        if exception is None or exception.cancelled:
            return
        fields = dict(self._client_fields(exception.resource), status="cancelled")
        self._write(calendar, exception, self._server_fields(exception.resource),
                    self._validated(calendar, fields))

    def _store(self, calendar, stored, server, resource):
        """Write a new version: fresh change number, etag and updated; then notify."""
        change = self._next_change()
        now = self.clock.now()
        event_id = server["id"]
        link_id = base64.urlsafe_b64encode(f"{event_id} {calendar.id}".encode()).decode()
        stored.resource = {
            "kind": "calendar#event",
            "etag": f'"{millis(now)}{change:06d}"',
            "id": event_id,
            "status": resource.pop("status"),
            "htmlLink": "https://www.google.com/calendar/event?eid=" + link_id.rstrip("="),
            "created": server["created"],
            "updated": format_rfc3339(now),
            **resource,
            "creator": server["creator"],
            "organizer": server["organizer"],
            "iCalUID": server["iCalUID"],
            "sequence": server["sequence"],
            **{k: server[k] for k in ("recurringEventId", "originalStartTime") if k in server},
        }
        stored.resource.setdefault("reminders", {"useDefault": True})
        stored.resource.setdefault("eventType", "default")
        self._mark_self(stored.resource, calendar.id)
        stored.change = change
        self._notify(calendar)

    @staticmethod
    def _mark_self(resource, calendar_id):
        """``self`` says whether a person or organizer is the calendar holding this copy."""
        for person in [resource["creator"], resource["organizer"],
                       *resource.get("attendees", [])]:
            if person.get("email") == calendar_id:
                person["self"] = True
            else:
                person.pop("self", None)

    def _display_name(self, email):
        user = self.users.get(email)
        return user["name"] if user else email

    # -- rooms as attendees -----------------------------------------------------------------

    def _answer_for_rooms(self, calendar, event_id, resource, previous):
        """Each room attendee accepts when free, else declines (Google's auto-accept)."""
        cancelled = resource.get("status") == "cancelled"
        for attendee in resource.get("attendees", []):
            room = self.calendars.get(attendee["email"])
            if room is None or room.kind != "room":
                continue
            attendee["resource"] = True
            attendee.setdefault("displayName", room.summary)
            if cancelled:
                continue
            unchanged = previous is not None and all(
                resource.get(k) == previous.get(k) for k in ("start", "end", "recurrence"))
            prior = {a["email"]: a.get("responseStatus")
                     for a in (previous or {}).get("attendees", [])}
            if unchanged and prior.get(room.id) in ("accepted", "declined"):
                attendee["responseStatus"] = prior[room.id]
            else:
                free = self._room_is_free(room, calendar, resource, event_id)
                attendee["responseStatus"] = "accepted" if free else "declined"

    def _copy_to_rooms(self, calendar, stored, previous):
        """Mirror a person's event onto every room it invites, as Google does for resources."""
        resource = stored.resource
        rooms_now = {a["email"] for a in resource.get("attendees", []) if a.get("resource")}
        rooms_before = {a["email"] for a in (previous or {}).get("attendees", [])
                        if a.get("resource")}
        for room_id in rooms_now | rooms_before:
            room = self.calendars.get(room_id)
            if room is None or room.kind != "room":
                continue
            fields = self._client_fields(resource)
            if room_id not in rooms_now:
                fields["status"] = "cancelled"
            server = self._server_fields(resource)
            copy_event = room.events.get(resource["id"])
            if copy_event is None:
                copy_event = StoredEvent({}, 0)
                room.events[resource["id"]] = copy_event
            elif copy_event.cancelled and fields["status"] == "cancelled":
                continue
            self._write(room, copy_event, server, fields)

    def _room_is_free(self, room, calendar, resource, event_id):
        wanted = self._intervals(resource, calendar.time_zone, None)
        if not wanted:
            return True
        window = (min(s for s, _ in wanted), max(e for _, e in wanted))
        for other in room.events.values():
            if other.cancelled or other.resource["id"] == event_id:
                continue
            if other.resource.get("transparency") == "transparent":
                continue
            mine = [a for a in other.resource.get("attendees", []) if a.get("email") == room.id]
            if mine and mine[0].get("responseStatus") == "declined":
                continue
            for busy_id, start, end in self._busy_spans(room, other.resource, window):
                if busy_id == event_id:
                    continue  # the series instance this exception replaces
                if any(start < w_end and w_start < end for w_start, w_end in wanted):
                    return False
        return True

    def _busy_spans(self, calendar, resource, window):
        """(id, UTC start, UTC end) of an event, or of each instance no exception replaces."""
        if not resource.get("recurrence"):
            return [(resource["id"], *self._intervals(resource, calendar.time_zone, None)[0])]
        start, _ = event_span(resource, calendar.time_zone)
        spans = []
        for begins, ends, local_start, _ in self._occurrences(resource, calendar.time_zone,
                                                              window):
            instance_id = f"{resource['id']}_{instance_suffix(local_start, start.all_day)}"
            if instance_id not in calendar.events:
                spans.append((instance_id, begins, ends))
        return spans

    # -- recurrence -------------------------------------------------------------------------

    def _intervals(self, resource, calendar_tz, window):
        """UTC (start, end) of an event or each instance of a series, within ``window``."""
        start, end = event_span(resource, calendar_tz)
        if not resource.get("recurrence"):
            return [(start.utc(), end.utc())]
        return [(s, e) for s, e, _, _ in self._occurrences(resource, calendar_tz, window)]

    def _occurrences(self, resource, calendar_tz, window):
        start, end = event_span(resource, calendar_tz)
        series_zone = zone(start.tz_name or calendar_tz)
        first = start.moment.astimezone(series_zone)
        # Open-ended listings stop a year past the series start (or now, if later).
        open_ended = not window or window[1] == FAR_FUTURE
        until = max(self.clock.now(), first) + EXPANSION_HORIZON if open_ended else window[1]
        found = []
        for moment in occurrences(resource["recurrence"], first, until, start.all_day):
            moment_utc = moment.astimezone(UTC)
            if start.all_day:
                # Whole days in local time: a DST day is 23 or 25 hours long.
                days = (end.moment.date() - start.moment.date()).days
                finish = datetime.combine(moment.date() + timedelta(days=days), moment.timetz())
            else:
                # Absolute duration, added in UTC (aware arithmetic would add wall-clock time).
                finish = (moment_utc + (end.moment - start.moment)).astimezone(series_zone)
            finish_utc = finish.astimezone(UTC)
            if window and (finish_utc <= window[0] or moment_utc >= window[1]):
                continue
            found.append((moment_utc, finish_utc, moment, finish))
        return found

    def _instances(self, calendar, master, window=None):
        """Instance resources of a series, shaped like Google's singleEvents expansion."""
        start, _ = event_span(master, calendar.time_zone)
        result = []
        for _, _, local_start, local_end in self._occurrences(master, calendar.time_zone,
                                                              window):
            instance = {k: copy.deepcopy(v) for k, v in master.items() if k != "recurrence"}
            instance["id"] = f"{master['id']}_{instance_suffix(local_start, start.all_day)}"
            instance["recurringEventId"] = master["id"]
            instance["originalStartTime"] = time_field(local_start, start.all_day, start.tz_name)
            instance["start"] = time_field(local_start, start.all_day, start.tz_name)
            instance["end"] = time_field(local_end, start.all_day, start.tz_name)
            result.append(instance)
        return result

    def _live_instances(self, calendar, master, window=None):
        """A series' instances that no exception replaces (exceptions are listed on their own)."""
        return [i for i in self._instances(calendar, master, window)
                if i["id"] not in calendar.events]

    def _instance_ids(self, calendar, resource):
        if not resource.get("recurrence") or resource.get("status") == "cancelled":
            return {}
        return {i["id"]: self._cancelled_stub(i) for i in self._instances(calendar, resource)}

    def _find_instance(self, calendar, event_id):
        master_id, sep, _ = event_id.rpartition("_")
        master = calendar.events.get(master_id) if sep else None
        if master is None or master.cancelled or not master.resource.get("recurrence"):
            return None
        for instance in self._instances(calendar, master.resource):
            if instance["id"] == event_id:
                return master, instance
        return None

    @staticmethod
    def _cancelled_stub(resource):
        stub = {"kind": "calendar#event", "etag": resource["etag"], "id": resource["id"],
                "status": "cancelled"}
        for key in ("recurringEventId", "originalStartTime"):
            if key in resource:
                stub[key] = copy.deepcopy(resource[key])
        return stub

    # -- events.list ------------------------------------------------------------------------

    def list_events(self, caller, calendar_id, args):
        """events.list; ``args`` maps each query parameter to its list of values."""
        with self.lock:
            calendar = self._accessible(caller, calendar_id, "reader")
            page_token = (args.get("pageToken") or [None])[0]
            if page_token:
                page = decode_token(page_token)
                if (not page or page.get("kind") != "page" or page.get("calendar") != calendar.id
                        or page.get("generation") != self._generation):
                    raise invalid("Invalid page token value.", "pageToken")
                query, snapshot = page["query"], page["snapshot"]
                offset, page_number = page["offset"], page["page"]
            else:
                query = {k: v for k, v in args.items() if k != "pageToken"}
                snapshot, offset, page_number = self._last_change, 0, 0
            params = {k: v[0] for k, v in query.items() if v}
            max_results = self._max_results(params)
            single = params.get("singleEvents", "false").lower() == "true"
            if params.get("orderBy") not in (None, "startTime", "updated"):
                raise invalid(f"Invalid value for: {params['orderBy']}", "orderBy")
            if params.get("orderBy") == "startTime" and not single:
                raise ApiError(400, "badRequest",
                               "The requested ordering is not available for the particular "
                               "query.", location="orderBy")
            if params.get("syncToken"):
                for name in SYNC_TOKEN_FORBIDDEN:
                    if name in params:
                        raise invalid(f"{name} is not compatible with syncToken.", name)
                rows = self._changed_since(calendar, params["syncToken"], snapshot, single)
            else:
                rows = self._matching(calendar, query, params, snapshot, single)
            rows = self._ordered(rows, params.get("orderBy"))
            size = self._page_size(max_results, page_number)
            chunk = [row[0] for row in rows[offset:offset + size]]
            response = {
                "kind": "calendar#events",
                "etag": f'"{snapshot:016d}"',
                "summary": calendar.summary,
                "description": "",
                "updated": format_rfc3339(self.clock.now()),
                "timeZone": calendar.time_zone,
                "accessRole": self._role(caller.email, calendar),
                "defaultReminders": [],
                "items": chunk,
            }
            if offset + len(chunk) < len(rows):
                response["nextPageToken"] = encode_token({
                    "kind": "page", "calendar": calendar.id, "query": query,
                    "generation": self._generation,
                    "snapshot": snapshot, "offset": offset + len(chunk),
                    "page": page_number + 1})
            else:
                response["nextSyncToken"] = encode_token({
                    "kind": "sync", "calendar": calendar.id, "change": snapshot,
                    "epoch": calendar.sync_epoch, "generation": self._generation})
            return response

    @staticmethod
    def _max_results(params):
        raw = params.get("maxResults")
        if raw is None:
            return DEFAULT_MAX_RESULTS
        try:
            value = int(raw)
        except ValueError:
            raise invalid(f"Invalid value for: {raw}", "maxResults") from None
        if value < 1:
            raise invalid(f"Invalid value for: {raw}", "maxResults")
        return min(value, MAX_MAX_RESULTS)

    def _page_size(self, max_results, page_number):
        cap = self.settings.page_size_cap
        if cap is None:
            return max_results
        if cap > 0:
            return min(cap, max_results)
        # Zero: every other page is empty, the rest hold one item, so listings still end.
        return 0 if page_number % 2 == 0 else 1

    def _changed_since(self, calendar, token, snapshot, single):
        payload = decode_token(token)
        if (not payload or payload.get("kind") != "sync" or payload.get("calendar") != calendar.id
                or payload.get("epoch") != calendar.sync_epoch
                or payload.get("generation") != self._generation
                or payload.get("change", 0) > self._last_change):
            raise errors.sync_token_gone()
        since = payload["change"]
        rows = []
        for stored in calendar.events.values():
            if single:
                for change, stub in stored.removed_instances.values():
                    # An instance with an exception is reported through the exception.
                    if since < change <= snapshot and stub["id"] not in calendar.events:
                        rows.append(self._row(calendar, stub, stored))
            if not since < stored.change <= snapshot:
                continue
            resource = stored.resource
            if single and resource.get("recurrence"):
                # A cancelled series reads as its removed instances, listed above.
                if not stored.cancelled:
                    for instance in self._live_instances(calendar, resource):
                        rows.append(self._row(calendar, instance, stored, instance))
            elif stored.cancelled:
                rows.append(self._row(calendar, self._cancelled_stub(resource), stored))
            else:
                rows.append(self._row(calendar, copy.deepcopy(resource), stored))
        return rows

    def _matching(self, calendar, query, params, snapshot, single):
        time_min = parse_rfc3339(params["timeMin"], "timeMin") if "timeMin" in params else None
        time_max = parse_rfc3339(params["timeMax"], "timeMax") if "timeMax" in params else None
        if time_min and time_max and time_max <= time_min:
            raise ApiError(400, "timeRangeEmpty", "The specified time range is empty.",
                           "calendar", location="timeMax")
        updated_min = (parse_rfc3339(params["updatedMin"], "updatedMin")
                       if "updatedMin" in params else None)
        # Google: with updatedMin, deleted entries are included whatever showDeleted says.
        show_deleted = params.get("showDeleted", "false").lower() == "true" or bool(updated_min)
        window = (time_min or FAR_PAST, time_max or FAR_FUTURE)
        rows = []
        for stored in calendar.events.values():
            resource = stored.resource
            if stored.change > snapshot or (stored.cancelled and not show_deleted):
                continue
            if updated_min and parse_rfc3339(resource["updated"]) < updated_min:
                continue
            if not self._filters_match(resource, query, params):
                continue
            if single and resource.get("recurrence"):
                for instance in self._live_instances(calendar, resource, window):
                    rows.append(self._row(calendar, instance, stored, instance))
                continue
            # Google lists a cancelled exception as its stub only.
            item = (self._cancelled_stub(resource)
                    if stored.cancelled and resource.get("recurringEventId")
                    else copy.deepcopy(resource))
            row = self._row(calendar, item, stored)
            if row[2] > window[0] and row[1] < window[1]:
                rows.append(row)
        return rows

    @staticmethod
    def _filters_match(resource, query, params):
        if "iCalUID" in params and resource.get("iCalUID") != params["iCalUID"]:
            return False
        properties = resource.get("extendedProperties", {})
        for scope, name in (("private", "privateExtendedProperty"),
                            ("shared", "sharedExtendedProperty")):
            for condition in query.get(name, []):
                key, _, value = condition.partition("=")
                if properties.get(scope, {}).get(key) != value:
                    return False
        if "q" in params:
            people = [*resource.get("attendees", []), resource.get("organizer", {})]
            haystack = " ".join([resource.get("summary", ""), resource.get("description", ""),
                                 resource.get("location", "")]
                                + [p.get("email", "") + " " + p.get("displayName", "")
                                   for p in people]).lower()
            if not all(word in haystack for word in params["q"].lower().split()):
                return False
        return True

    def _row(self, calendar, item, stored, timing=None):
        """(item, start, end, updated, change) so rows can be filtered and ordered."""
        source = timing or stored.resource
        try:
            start, end = event_span(source, calendar.time_zone)
            begins, ends = start.utc(), end.utc()
        except ApiError:
            begins, ends = FAR_PAST, FAR_PAST
        if timing is None and source.get("recurrence"):
            spans = self._intervals(source, calendar.time_zone, None)
            bounded = any(("COUNT=" in r or "UNTIL=" in r) for r in source["recurrence"])
            ends = (spans[-1][1] if spans else ends) if bounded else FAR_FUTURE
        return item, begins, ends, stored.resource.get("updated", ""), stored.change

    @staticmethod
    def _ordered(rows, order_by):
        if order_by == "startTime":
            return sorted(rows, key=lambda r: (r[1], r[0]["id"]))
        if order_by == "updated":
            return sorted(rows, key=lambda r: (r[3], r[0]["id"]))
        return sorted(rows, key=lambda r: (r[4], r[1], r[0]["id"]))

    # -- channels ---------------------------------------------------------------------------

    def watch(self, caller, calendar_id, body):
        with self.lock:
            calendar = self._accessible(caller, calendar_id, "reader")
            channel_id, address = body.get("id"), body.get("address")
            if not channel_id:
                raise errors.required("Required", "id")
            if len(channel_id) > CHANNEL_ID_MAX:
                raise invalid(f"Invalid value for: {channel_id}", "id")
            if body.get("type") not in ("web_hook", "webhook"):
                raise ApiError(400, "push.channelTypeNotSupported",
                               f"Channel type '{body.get('type')}' is not supported.", "push")
            if not address:
                raise errors.required("Required", "address")
            # Google requires HTTPS; the emulator lets plain http through on loopback only.
            if not (address.startswith("https://") or
                    (address.startswith("http://") and is_loopback(address))):
                raise ApiError(400, "push.webhookUrlNotHttps",
                               f"WebHook callback must be HTTPS: {address}", "push")
            token = body.get("token")
            if token is not None and len(token) > CHANNEL_TOKEN_MAX:
                raise invalid("Invalid value for: token", "token")
            if channel_id in self.channels:
                raise ApiError(400, "channelIdNotUnique", "Channel id not unique")
            ttl = (body.get("params") or {}).get("ttl", DEFAULT_CHANNEL_TTL)
            try:
                ttl = int(ttl)
            except (TypeError, ValueError):
                raise invalid(f"Invalid value for: ttl={ttl}", "params.ttl") from None
            now = self.clock.now()
            expiration = now + timedelta(seconds=min(ttl, self.settings.max_channel_ttl))
            if body.get("expiration"):
                try:
                    requested_ms = int(body["expiration"])
                except (TypeError, ValueError):
                    raise invalid(f"Invalid value for: {body['expiration']}",
                                  "expiration") from None
                requested = datetime.fromtimestamp(requested_ms / 1000, UTC)
                expiration = min(expiration, max(requested, now))
            channel = Channel(
                channel_id, calendar.id, calendar.resource_id,
                f"{self.calendar_api_url}calendars/{quote(calendar.id, safe='')}/events?alt=json",
                address, token, expiration, caller.email, created=now)
            self.channels[channel_id] = channel
            self._send(channel, "sync")
            answer = {"kind": "api#channel", "id": channel.id, "resourceId": channel.resource_id,
                      "resourceUri": channel.resource_uri,
                      "expiration": str(millis(channel.expiration))}
            if token is not None:
                answer["token"] = token
            return answer

    def stop_channel(self, caller, body):
        with self.lock:
            channel = self.channels.get(body.get("id"))
            if channel is None or channel.resource_id != body.get("resourceId"):
                raise ApiError(404, "notFound",
                               f"Channel '{body.get('id')}' not found for project "
                               f"'{caller.service_account or caller.email}'")
            if not channel.stopped:
                channel.stopped, channel.stopped_at = True, self.clock.now()
            if self.settings.stopped_channel_delivers_once:
                channel.stopped_deliveries_left = 1

    def channels_info(self):
        with self.lock:
            return [channel.info() for channel in self.channels.values()]

    def _notify(self, calendar):
        now = self.clock.now()
        for channel in self.channels.values():
            if channel.calendar_id != calendar.id or channel.expiration <= now:
                continue
            if channel.stopped:
                if channel.stopped_deliveries_left <= 0:
                    continue
                channel.stopped_deliveries_left -= 1
            self._send(channel, "exists", allow_stopped=channel.stopped)

    def _send(self, channel, resource_state, allow_stopped=False):
        # Google numbers messages per channel in increasing, not consecutive, steps.
        step = 1 if channel.last_message_number == 0 else random.randint(2, 6)
        channel.last_message_number += step
        headers = {
            "User-Agent": "APIs-Google; (+https://developers.google.com/webmasters/"
                          "APIs-Google.html)",
            "X-Goog-Channel-ID": channel.id,
            "X-Goog-Channel-Expiration": format_http_date(channel.expiration),
            "X-Goog-Resource-ID": channel.resource_id,
            "X-Goog-Resource-URI": channel.resource_uri,
            "X-Goog-Resource-State": resource_state,
            "X-Goog-Message-Number": str(channel.last_message_number),
        }
        if channel.token is not None:
            headers["X-Goog-Channel-Token"] = channel.token
        delivery = Delivery(channel.id, channel.address, headers, resource_state,
                            channel.last_message_number, channel.calendar_id, allow_stopped)
        if resource_state == "exists" and random.random() < self.settings.push_drop_ratio:
            self.push_log.append(push_log_entry(delivery, "dropped", None, None,
                                                self.clock.now()))
            return
        if self.dispatcher is not None:
            self.dispatcher.schedule(delivery, self.settings.push_delay)

    def delivery_blocker(self, delivery):
        """Why a due delivery must not go out now (None when it may)."""
        with self.lock:
            channel = self.channels.get(delivery.channel_id)
            if channel is None:
                return "skipped_unknown_channel"
            if channel.expiration <= self.clock.now():
                return "skipped_expired"
            if channel.stopped and not delivery.allow_stopped:
                return "skipped_stopped"
            return None

    def record_push(self, delivery, outcome, status=None, error=None):
        with self.lock:
            self.push_log.append(push_log_entry(delivery, outcome, status, error,
                                                self.clock.now()))

    def pushes(self, channel_id=None):
        with self.lock:
            return [dict(p) for p in self.push_log
                    if channel_id is None or p["channel_id"] == channel_id]

    # -- acting as people and as an administrator -----------------------------------------

    def book(self, person, room, summary, start, end, attendees=None, recurrence=None,
             time_zone=None, description=None):
        """A person books ``room`` from their own calendar, as in Google Calendar's UI."""
        with self.lock:
            room_calendar = self._calendar(room)
            if room_calendar.kind != "room":
                raise ValueError(f"{room} is not a room calendar")
            if person not in self.calendars:
                self.add_user(person)
            guests = [{"email": person, "organizer": True, "responseStatus": "accepted"},
                      {"email": room, "resource": True}]
            guests += [{"email": e, "responseStatus": "needsAction"} for e in attendees or []]
            if recurrence and not time_zone:
                time_zone = self.calendars[person].time_zone  # as Google Calendar's UI does
            body = {"summary": summary, "start": time_input(start, time_zone),
                    "end": time_input(end, time_zone), "attendees": guests}
            if description:
                body["description"] = description
            if recurrence:
                body["recurrence"] = list(recurrence)
            stored = self._insert(self.calendars[person], person, body)
            return copy.deepcopy(stored.resource)

    def person_event(self, person, event_id):
        """A person's own copy of an event (or instance), as they see it in Google Calendar."""
        with self.lock:
            stored = self._stored_or_instance(self._calendar(person), event_id)
            return copy.deepcopy(stored.resource)

    def _stored_or_instance(self, calendar, event_id):
        """Control-API lookup: an event, an exception or a series instance; else KeyError."""
        try:
            return self._existing(calendar, event_id, None)
        except ApiError:
            raise KeyError(event_id) from None

    def patch_person_event(self, person, event_id, changes):
        """A person edits their event; the rooms it invites answer again."""
        return self.admin_patch_event(person, event_id, changes)

    def delete_person_event(self, person, event_id):
        self.admin_delete_event(person, event_id)

    def insert_as(self, calendar_id, email, body):
        """Write straight to a calendar as ``email`` (no sharing check, no attendee flow)."""
        with self.lock:
            calendar = self._calendar(calendar_id)
            zone_name = body.get("timeZone") or (calendar.time_zone if body.get("recurrence")
                                                 else None)
            body = dict(body, start=time_input(body.get("start"), zone_name),
                        end=time_input(body.get("end"), zone_name))
            body.pop("timeZone", None)
            return copy.deepcopy(self._insert(calendar, email, body).resource)

    def admin_patch_event(self, calendar_id, event_id, changes):
        """Someone with full access edits an event (e.g. moves one of the app's bookings)."""
        with self.lock:
            calendar = self._calendar(calendar_id)
            stored = self._stored_or_instance(calendar, event_id)
            changes = dict(changes)
            zone_name = changes.pop("timeZone", None)
            if not zone_name and (changes.get("recurrence") or stored.resource.get("recurrence")):
                zone_name = calendar.time_zone
            for side in ("start", "end"):
                if side in changes:
                    changes[side] = time_input(changes[side], zone_name)
            merged = deep_merge(self._client_fields(stored.resource), changes)
            return copy.deepcopy(self._modify(calendar, stored, merged).resource)

    def admin_delete_event(self, calendar_id, event_id):
        with self.lock:
            calendar = self._calendar(calendar_id)
            if event_id not in calendar.events and not self._find_instance(calendar, event_id):
                raise KeyError(event_id)
            self._delete(calendar, event_id)

    def raw_events(self, calendar_id):
        """Every stored event of a calendar, cancelled ones included, oldest change first."""
        with self.lock:
            stored = sorted(self._calendar(calendar_id).events.values(), key=lambda s: s.change)
            return [copy.deepcopy(s.resource) for s in stored]

    def expire_sync_tokens(self, calendar_id):
        with self.lock:
            self._calendar(calendar_id).sync_epoch += 1

    # -- faults and the request log -------------------------------------------------------

    def add_fault(self, status, times=1, method=None, path_regex=None, calendar=None,
                  reason=None, message=None):
        fault = {"status": int(status), "times": int(times), "method": method,
                 "path_regex": path_regex, "calendar": calendar, "reason": reason,
                 "message": message}
        if path_regex:
            re.compile(path_regex)
        with self.lock:
            self.faults.append(fault)
        return dict(fault)

    def clear_faults(self):
        with self.lock:
            self.faults.clear()

    def take_fault(self, method, path, calendar_id):
        """The error of the first fault matching this call, counting it down; else None."""
        with self.lock:
            for fault in self.faults:
                if fault["method"] and fault["method"].upper() != method.upper():
                    continue
                if fault["path_regex"] and not re.search(fault["path_regex"], path):
                    continue
                if fault["calendar"] and fault["calendar"] != calendar_id:
                    continue
                fault["times"] -= 1
                if fault["times"] <= 0:
                    self.faults.remove(fault)
                return errors.fault_error(fault["status"], fault["reason"], fault["message"])
            return None

    def admit(self, caller, method, calendar_id):
        """Count a Calendar API call against Google's quotas (``emulator.quota``).

        None when admitted; else ``(limit, error)``: which limit refused it (``user``,
        ``project`` or ``calendar_writes``) and Google's answer.
        """
        with self.lock:
            project = project_of(caller.service_account or caller.email)
            return self.quota.admit(self.settings, self.clock.now(), caller.email, project,
                                    method.upper(), calendar_id)

    def quota_usage(self):
        """Calls admitted in the current sliding minute, per principal and per project."""
        with self.lock:
            return self.quota.usage(self.settings, self.clock.now())

    def log_request(self, entry):
        with self.lock:
            self.request_log.append(dict(entry, time=format_rfc3339(self.clock.now())))

    def requests(self, calendar=None, method=None):
        with self.lock:
            return [dict(r) for r in self.request_log
                    if (calendar is None or r["calendar"] == calendar)
                    and (method is None or r["method"] == method.upper())]

    def clear_requests(self):
        with self.lock:
            self.request_log.clear()
