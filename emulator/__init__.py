"""A local Google Calendar that the real google-api-python-client talks to over real HTTP.

Run it
======
``python -m emulator --port 8085 [--host 127.0.0.1] [--seed demo] [--max-channel-ttl S]
[--push-delay S] [--key-out PATH] [--quotas] [--quota-per-user N] [--quota-per-project N]
[--calendar-write-interval S]`` (``EMULATOR_QUOTAS=1`` also turns quotas on), or
in-process::

    emu = EmulatorServer(port=0, max_channel_ttl=604800, push_delay=0.0, push_retry_base=0.05)
    emu.start()                      # background thread; emu.url, emu.calendar_api_url
    key = emu.create_service_account("roombridge@demo-project.iam.gserviceaccount.com")
    credentials = service_account.Credentials.from_service_account_info(
        key, scopes=["https://www.googleapis.com/auth/calendar.events"])
    service = googleapiclient.discovery.build(
        "calendar", "v3", credentials=credentials, static_discovery=True,
        cache_discovery=False, client_options={"api_endpoint": emu.calendar_api_url})
    emu.stop()

The key's ``token_uri`` is ``<emu.url>/token``; google-auth honours it. ``seed_demo(emu)``
loads ``DEMO_ROOMS`` (list of dicts: email, name, capacity, building, floor, features,
time_zone), ``DEMO_USERS`` and the service account ``DEMO_SERVICE_ACCOUNT``, shares every
room with it as ``writer`` and returns its key. Every control operation below is also a
method of ``emu.state`` (``EmulatorState``).

Google endpoints
================
``POST /token``  OAuth 2.0 JWT-bearer grant for service accounts (see ``emulator.auth``).
``/calendar/v3/``  Bearer token required (401 ``authError`` otherwise; 403
``insufficientPermissions`` without the ``calendar`` or ``calendar.events`` scope):

- ``GET calendars/{calendarId}``
- ``GET|POST calendars/{calendarId}/events`` (list with timeMin, timeMax, singleEvents,
  orderBy, showDeleted, maxResults, pageToken, syncToken, privateExtendedProperty,
  sharedExtendedProperty, iCalUID, q, updatedMin; insert with ``sendUpdates``)
- ``GET|PATCH|PUT|DELETE calendars/{calendarId}/events/{eventId}`` (``If-Match`` honoured;
  an instance id ``<eventId>_<YYYYMMDDTHHMMSSZ>`` (all-day ``<eventId>_<YYYYMMDD>``) can be
  read, and patching or deleting it stores an exception of the series)
- ``GET calendars/{calendarId}/events/{eventId}/instances`` (timeMin, timeMax, showDeleted,
  originalStart, maxResults, pageToken): a series' instances by start, exceptions in place
- ``POST calendars/{calendarId}/events/watch``, ``POST channels/stop``

Which Google behaviours are emulated, and where the emulator departs from Google, is written
in the docstrings of ``emulator.state`` (access, events, sync, rooms), ``emulator.push``
(notifications), ``emulator.auth`` (tokens), ``emulator.timeutil`` (times, recurrence) and
``emulator.errors`` (error bodies). Google Sign-In (OpenID Connect) for the emulator's
people, with its own control calls, is documented in ``emulator.oidc``.

Control API (JSON, under ``/_emulator/``, never logged)
=======================================================
Errors: 400 ``{"error": text}`` for bad input, 404 ``{"error": ...}`` for unknown ids.

- ``POST reset`` -> ``{"ok": true}``. Forget everything (accounts, calendars, tokens,
  channels, queued pushes, logs, faults, settings, clock offset).
- ``POST service-accounts`` ``{email, delegation?: bool}`` -> 201 the JSON key file
  (type, project_id, private_key_id, private_key, client_email, client_id, token_uri, ...).
  Calling it again for the same email adds another key.
- ``POST service-accounts/<email>/delegation`` ``{enabled: bool}`` -> ``{email, delegation}``.
  With delegation a token may carry ``sub`` (act as that user, who may then invite
  attendees); without it such a grant is 401 ``unauthorized_client``.
- ``POST users`` ``{email, name?, timeZone?}`` -> 201 ``{email, name}``; also creates the
  user's primary calendar (id = email).
- ``POST calendars`` ``{id, summary, kind: "room"|"user", timeZone?, capacity?, building?,
  floor?, features?}`` -> 201 calendar info.
- ``GET calendars`` -> ``[{id, summary, kind, timeZone, capacity, building, floor, features,
  resourceId, acl: {email: role}}]``.
- ``POST calendars/<id>/acl`` ``{email, role}`` (freeBusyReader|reader|writer|owner) and
  ``DELETE calendars/<id>/acl/<email>`` -> 204: share and unshare.
- ``GET calendars/<id>/events`` -> every stored event resource, cancelled ones too, in change
  order (series are not expanded).
- ``POST calendars/<id>/events-as/<email>`` event body (``start``/``end`` may be RFC 3339 or
  yyyy-mm-dd strings, optional ``timeZone``) -> 201 the event, written straight to the
  calendar as that person: no sharing check, no attendee flow.
- ``PATCH calendars/<id>/events/<eventId>`` ``{start?, end?, summary?, timeZone?, ...}`` and
  ``DELETE calendars/<id>/events/<eventId>`` -> the event / 204: someone with full access
  edits or cancels an event, e.g. moves one of the app's bookings in Google.
- ``POST people/<email>/book`` ``{room, summary?, start, end, attendees?: [email],
  recurrence?: ["RRULE:..."], timeZone?, description?}`` -> 201 the person's event (a series
  without ``timeZone`` gets the person's calendar zone, as Google Calendar's UI does). It is
  created on the person's calendar (organizer the person) with the room as a resource
  attendee, and copied to the room calendar with the same id and iCalUID (organizer the
  person, the room attendee ``self: true``). The room answers ``accepted`` when none of its
  busy events overlaps (any instance, for a series) and ``declined`` otherwise; declined
  copies still appear on the room calendar, as in Google.
- ``GET people/<email>/events/<eventId>`` -> the person's own copy (what the organizer
  sees, e.g. a room's ``declined`` after the app declined on the room's copy); an instance
  id gives that occurrence.
- ``PATCH people/<email>/events/<eventId>`` (same fields as above) re-evaluates the room's
  answer; ``DELETE people/<email>/events/<eventId>`` cancels it and the room copy. With an
  instance id both make an exception, copied to the room like the series.
- ``PATCH``/``DELETE calendars/<id>/events/<eventId>`` accept instance ids the same way.

A room's copy of a person's booking is an attendee's copy: through the Calendar API a
writer on the room calendar (the app) may change only the room's own attendee entry
(``responseStatus``, ``comment``), private extended properties, reminders, ``colorId`` and
``transparency``; other changes are 403 ``forbiddenForNonOrganizer``. A changed
``responseStatus`` (e.g. ``declined``) is copied to the organizer's event and every other
copy; nothing is deleted.
- ``POST calendars/<id>/expire-sync-tokens``: every sync token of the calendar now gets 410
  ``fullSyncRequired``.
- ``POST settings`` with any of ``page_size_cap`` (null = none; N caps each page; 0 makes
  every other page empty and the rest one item long), ``push_delay``, ``push_drop_ratio``
  (0..1 of ``exists`` messages silently dropped), ``access_token_ttl``, ``max_channel_ttl``,
  ``latency`` (seconds added to every Calendar call), ``push_retry_base``,
  ``push_retry_cap``, ``push_max_attempts``, ``stopped_channel_delivers_once`` (a channel
  stopped while this is on still delivers its next message), and Google's quotas (see
  ``emulator.quota``): ``quota_enabled`` (default false), ``quota_per_user`` (600 calls in
  any sliding minute per principal: past it 403 ``userRateLimitExceeded``, or 429
  ``rateLimitExceeded`` with ``quota_user_status: 429``), ``quota_per_project`` (10,000:
  403 ``rateLimitExceeded``), ``calendar_write_interval`` (seconds; a write to a calendar
  sooner than this after the previous one is 403 ``rateLimitExceeded``; 0 = off) -> all
  settings. ``GET settings`` -> all settings.
- ``GET quota`` -> ``{enabled, window_seconds, per_user_limit, per_project_limit,
  calendar_write_interval, users: {principal: calls}, projects: {project: calls}}``: calls
  admitted in the current sliding minute (refused calls are not counted).
- ``POST clock/advance`` ``{seconds}`` and ``GET clock`` -> ``{now, offset_seconds}``. The
  clock drives ``updated``, access-token expiry and channel expiry.
- ``POST faults`` ``{status, times?: 1, method?, path_regex?, calendar?, reason?, message?}``
  -> 201: the next ``times`` matching Calendar API calls (after authentication) fail with
  Google's error body; reason defaults per status (403/429 ``rateLimitExceeded``, 500/503
  ``backendError``, ...). ``DELETE faults`` -> 204.
- ``GET requests?calendar=&method=`` -> ``[{time, method, path, calendar, status, query,
  send_updates, principal, service_account, subject, refused_by_quota}]`` for Calendar API
  and token calls; ``principal`` is who the quota counts (the delegated user, else the
  service account), ``refused_by_quota`` is null or the limit that refused the call
  (``user``, ``project``, ``calendar_writes``);
  ``DELETE requests`` -> 204.
- ``GET channels`` -> ``[{id, calendar, resourceId, resourceUri, address, token,
  expiration, principal, stopped, created, stoppedAt}]`` (times in epoch milliseconds;
  ``created`` and ``stoppedAt``, the emulator's clock at the watch and the stop, are the
  emulator's own, for tests that measure how long a calendar was watched).
- ``GET pushes?channel=`` -> delivery log, one entry per attempt: ``{channel_id, calendar,
  address, state, message_number, attempt, status, error, outcome, time}`` where outcome is
  delivered, retrying, failed, dropped, skipped_expired, skipped_stopped or
  skipped_unknown_channel.
"""

from .demo import DEMO_ROOMS, DEMO_SERVICE_ACCOUNT, DEMO_USERS, seed_demo
from .server import EmulatorServer
from .state import EmulatorState

__all__ = ["DEMO_ROOMS", "DEMO_SERVICE_ACCOUNT", "DEMO_USERS", "EmulatorServer",
           "EmulatorState", "seed_demo"]
