"""Google's Calendar API quotas: sliding one-minute windows per user and per project.

From the Calendar API guide "Manage quotas": requests are limited per minute per project
(10,000) and per minute per user per project (600), "calculated per minute using a sliding
window"; past either, Google answers 403 ``usageLimits`` or 429 ``usageLimits``. The guide
"Handle API errors" gives the bodies: 403 ``userRateLimitExceeded`` "User Rate Limit
Exceeded" (per-user), 403 ``rateLimitExceeded`` "Rate Limit Exceeded" (per-project) and 429
``rateLimitExceeded`` "Rate Limit Exceeded". Google also has operational limits, for
instance on quick successive writes to one calendar, answered as ``rateLimitExceeded``.

The "user" is the principal of the access token: the service account, or the user a
delegated token acts as. The project is the service account's Cloud project. Only calls
Google lets through are counted, so a client that stops calling is admitted again once its
oldest counted call leaves the window. Windows run on the emulator's clock, so tests move
past them with ``clock/advance`` instead of sleeping.
"""

from collections import defaultdict, deque
from datetime import timedelta

from .errors import ApiError

WINDOW = timedelta(minutes=1)
WRITE_METHODS = frozenset({"POST", "PATCH", "PUT", "DELETE"})


def user_rate_limited(status):
    if status == 429:
        return ApiError(429, "rateLimitExceeded", "Rate Limit Exceeded", "usageLimits")
    return ApiError(403, "userRateLimitExceeded", "User Rate Limit Exceeded", "usageLimits")


def project_rate_limited():
    return ApiError(403, "rateLimitExceeded", "Rate Limit Exceeded", "usageLimits")


class SlidingWindows:
    """Moments of admitted calls per key, kept for one window."""

    def __init__(self):
        self._calls = defaultdict(deque)

    def count(self, key, now):
        calls = self._calls.get(key)
        if calls is None:
            return 0
        while calls and calls[0] <= now - WINDOW:
            calls.popleft()
        if not calls:
            del self._calls[key]
            return 0
        return len(calls)

    def add(self, key, now):
        self._calls[key].append(now)

    def counts(self, now):
        return {key: n for key in list(self._calls) if (n := self.count(key, now))}

    def clear(self):
        self._calls.clear()


class QuotaMeter:
    """Admits or refuses Calendar API calls as Google's quotas would."""

    def __init__(self):
        self.users = SlidingWindows()
        self.projects = SlidingWindows()
        # Only the last write per calendar matters for pacing.
        self.last_write = {}

    def admit(self, settings, now, user, project, method, calendar_id):
        """None when the call is admitted (and counted), else which limit refused it.

        The project's limit is checked first: when both are exhausted Google names the
        project's. Returns ``(limit, error)`` for a refusal.
        """
        if not settings.quota_enabled:
            return None
        if self.projects.count(project, now) >= settings.quota_per_project:
            return "project", project_rate_limited()
        if self.users.count(user, now) >= settings.quota_per_user:
            return "user", user_rate_limited(settings.quota_user_status)
        pacing = settings.calendar_write_interval
        is_write = method in WRITE_METHODS and calendar_id is not None
        if is_write and pacing:
            last = self.last_write.get(calendar_id)
            if last is not None and now - last < timedelta(seconds=pacing):
                return "calendar_writes", project_rate_limited()
        self.projects.add(project, now)
        self.users.add(user, now)
        if is_write:
            self.last_write[calendar_id] = now
        return None

    def usage(self, settings, now):
        return {"enabled": settings.quota_enabled, "window_seconds": 60,
                "per_user_limit": settings.quota_per_user,
                "per_project_limit": settings.quota_per_project,
                "calendar_write_interval": settings.calendar_write_interval,
                "users": self.users.counts(now), "projects": self.projects.counts(now)}

    def clear(self):
        self.users.clear()
        self.projects.clear()
        self.last_write.clear()
