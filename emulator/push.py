"""Delivery of push notifications for events.watch channels, as Google sends them.

Followed from the Calendar API guide "Push notifications"
(developers.google.com/workspace/calendar/api/guides/push):
- A notification is a POST with no body and the headers X-Goog-Channel-ID,
  X-Goog-Channel-Token (only if the channel has one), X-Goog-Channel-Expiration
  (RFC 1123), X-Goog-Resource-ID, X-Goog-Resource-URI, X-Goog-Resource-State and
  X-Goog-Message-Number.
- ``sync`` is sent right after the channel is created, ``exists`` on every change to the
  watched events (create, change and delete alike).
- Message numbers increase per channel but are not sequential.
- 200, 201, 202, 204 and 102 count as success; 500, 502, 503 and 504 are retried with
  exponential backoff; any other answer is a failure and is not retried.
- Google warns that a small share of notifications is dropped and that a stopped channel
  may still deliver; both can be switched on for tests (``push_drop_ratio``,
  ``stopped_channel_delivers_once``).

Deliveries run on one background thread, ordered by due time, so a channel's ``sync``
always arrives before its first ``exists`` and a retrying receiver does not hold up others
(only the HTTP call itself is sequential). The thread never holds the state lock while it
talks to a receiver.
"""

import heapq
import itertools
import threading
import time

import requests

from .timeutil import format_rfc3339

SUCCESS_CODES = frozenset({102, 200, 201, 202, 204})
RETRY_CODES = frozenset({500, 502, 503, 504})
USER_AGENT = "APIs-Google; (+https://developers.google.com/webmasters/APIs-Google.html)"
RECEIVER_TIMEOUT_SECONDS = 5


class Delivery:
    """One notification message for one channel; retried attempts reuse it."""

    def __init__(self, channel_id, address, headers, resource_state, message_number,
                 calendar_id, allow_stopped):
        self.channel_id = channel_id
        self.address = address
        self.headers = headers
        self.resource_state = resource_state
        self.message_number = message_number
        self.calendar_id = calendar_id
        # A notification on a stopped channel goes out only when the "stopped channel may
        # still deliver" quirk chose this very message.
        self.allow_stopped = allow_stopped
        self.attempts = 0


class PushDispatcher:
    """Sends queued deliveries when they are due and records every attempt in the state."""

    def __init__(self, state):
        self._state = state
        self._queue = []
        self._order = itertools.count()
        self._wakeup = threading.Condition()
        self._stopping = False
        self._thread = None

    def start(self):
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="emulator-push", daemon=True)
        self._thread.start()

    def stop(self):
        with self._wakeup:
            self._stopping = True
            self._wakeup.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=RECEIVER_TIMEOUT_SECONDS + 1)
            self._thread = None

    def schedule(self, delivery, delay):
        """Queue a delivery ``delay`` real seconds from now. Safe under the state lock."""
        with self._wakeup:
            heapq.heappush(self._queue, (time.monotonic() + delay, next(self._order), delivery))
            self._wakeup.notify_all()

    def clear(self):
        with self._wakeup:
            self._queue.clear()

    def pending(self):
        with self._wakeup:
            return len(self._queue)

    def _next_due(self):
        with self._wakeup:
            while not self._stopping:
                if self._queue:
                    due = self._queue[0][0] - time.monotonic()
                    if due <= 0:
                        return heapq.heappop(self._queue)[2]
                    self._wakeup.wait(due)
                else:
                    self._wakeup.wait()
            return None

    def _run(self):
        while True:
            delivery = self._next_due()
            if delivery is None:
                return
            self._attempt(delivery)

    def _attempt(self, delivery):
        state = self._state
        skip = state.delivery_blocker(delivery)
        if skip:
            state.record_push(delivery, outcome=skip)
            return
        delivery.attempts += 1
        status, error = None, None
        try:
            response = requests.post(delivery.address, headers=delivery.headers, data=b"",
                                     timeout=RECEIVER_TIMEOUT_SECONDS, allow_redirects=False)
            status = response.status_code
        except requests.RequestException as exc:
            error = f"{type(exc).__name__}: {exc}"
        settings = state.settings
        if status in SUCCESS_CODES:
            outcome = "delivered"
        elif (status in RETRY_CODES or error) and delivery.attempts < settings.push_max_attempts:
            outcome = "retrying"
        else:
            outcome = "failed"
        state.record_push(delivery, outcome=outcome, status=status, error=error)
        if outcome == "retrying":
            backoff = min(settings.push_retry_base * 2 ** (delivery.attempts - 1),
                          settings.push_retry_cap)
            self.schedule(delivery, backoff)


def push_log_entry(delivery, outcome, status, error, now):
    return {
        "channel_id": delivery.channel_id,
        "calendar": delivery.calendar_id,
        "address": delivery.address,
        "state": delivery.resource_state,
        "message_number": delivery.message_number,
        "attempt": delivery.attempts,
        "status": status,
        "error": error,
        "outcome": outcome,
        "time": format_rfc3339(now),
    }
