"""Google's error bodies, so clients see exactly what they would see from Google.

The shape and the texts follow the Calendar API guide "Handle API errors"
(developers.google.com/workspace/calendar/api/guides/errors):

    {"error": {"errors": [{"domain", "reason", "message", "locationType"?, "location"?}],
               "code", "message", "status"}}

``status`` is the canonical gRPC-style status Google's JSON errors also carry.
"""

CANONICAL_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    410: "FAILED_PRECONDITION",
    412: "FAILED_PRECONDITION",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

# Default (domain, reason, message) per status for injected faults, as listed in the guide.
FAULT_DEFAULTS = {
    400: ("global", "badRequest", "Bad Request"),
    401: ("global", "authError", "Invalid Credentials"),
    403: ("usageLimits", "rateLimitExceeded", "Rate Limit Exceeded"),
    404: ("global", "notFound", "Not Found"),
    409: ("global", "conflict", "Conflict"),
    410: ("calendar", "fullSyncRequired",
          "Sync token is no longer valid, a full sync is required."),
    412: ("global", "conditionNotMet", "Precondition Failed"),
    429: ("usageLimits", "rateLimitExceeded", "Rate Limit Exceeded"),
    500: ("global", "backendError", "Backend Error"),
    502: ("global", "backendError", "Backend Error"),
    503: ("global", "backendError", "Backend Error"),
    504: ("global", "backendError", "Backend Error"),
}

# Messages Google pairs with well-known reasons, so a fault naming only a reason reads right.
REASON_DEFAULTS = {
    "rateLimitExceeded": ("usageLimits", "Rate Limit Exceeded"),
    "userRateLimitExceeded": ("usageLimits", "User Rate Limit Exceeded"),
    "quotaExceeded": ("usageLimits", "Calendar usage limits exceeded."),
    "backendError": ("global", "Backend Error"),
    "forbiddenForServiceAccounts": (
        "calendar",
        "Service accounts cannot invite attendees without Domain-Wide Delegation of Authority.",
    ),
    "fullSyncRequired": ("calendar", "Sync token is no longer valid, a full sync is required."),
    "notFound": ("global", "Not Found"),
    "duplicate": ("global", "The requested identifier already exists."),
}


class ApiError(Exception):
    """A Calendar API error answered with Google's JSON error body."""

    def __init__(self, code, reason, message, domain="global", location=None,
                 location_type=None, headers=None, details=None, item_message=None):
        super().__init__(message)
        self.details = details
        # Google sometimes words the item differently from the top-level message.
        self.item_message = item_message or message
        self.code = code
        self.reason = reason
        self.message = message
        self.domain = domain
        self.location = location
        self.location_type = location_type
        self.headers = headers or {}

    def body(self):
        item = {"domain": self.domain, "reason": self.reason, "message": self.item_message}
        if self.location:
            item["locationType"] = self.location_type or "parameter"
            item["location"] = self.location
        error = {"errors": [item], "code": self.code, "message": self.message}
        if self.code in CANONICAL_STATUS:
            error["status"] = CANONICAL_STATUS[self.code]
        if self.details:
            error["details"] = self.details
        return {"error": error}


class OAuthError(Exception):
    """An error of the OAuth 2.0 token endpoint (RFC 6749 section 5.2 body)."""

    def __init__(self, code, error, description):
        super().__init__(description)
        self.code = code
        self.error = error
        self.description = description

    def body(self):
        return {"error": self.error, "error_description": self.description}


def fault_error(status, reason=None, message=None):
    """The error an injected fault answers with."""
    domain, default_reason, default_message = FAULT_DEFAULTS.get(
        status, ("global", "backendError", "Backend Error"))
    if reason and reason in REASON_DEFAULTS:
        domain, default_message = REASON_DEFAULTS[reason]
    return ApiError(status, reason or default_reason, message or default_message, domain)


def not_found():
    return ApiError(404, "notFound", "Not Found")


def invalid(message, location=None):
    return ApiError(400, "invalid", message, location=location)


def required(message, location=None):
    return ApiError(400, "required", message, location=location)


def access_level(level):
    return ApiError(403, "requiredAccessLevel",
                    f"You need to have {level} access to this calendar.", "calendar")


def invalid_credentials():
    return ApiError(401, "authError", "Invalid Credentials", location="Authorization",
                    location_type="header",
                    headers={"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'})


def insufficient_scopes():
    return ApiError(403, "insufficientPermissions",
                    "Request had insufficient authentication scopes.",
                    item_message="Insufficient Permission",
                    details=[{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                              "reason": "ACCESS_TOKEN_SCOPE_INSUFFICIENT",
                              "domain": "googleapis.com",
                              "metadata": {"service": "calendar-json.googleapis.com"}}],
                    headers={"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/", '
                             'error="insufficient_scope"'})


def sync_token_gone():
    return ApiError(410, "fullSyncRequired",
                    "Sync token is no longer valid, a full sync is required.", "calendar",
                    location="syncToken")


def already_deleted():
    return ApiError(410, "deleted", "Resource has been deleted")


def duplicate():
    return ApiError(409, "duplicate", "The requested identifier already exists.")


def precondition_failed():
    return ApiError(412, "conditionNotMet", "Precondition Failed", location="If-Match",
                    location_type="header")


def forbidden_for_service_accounts():
    return ApiError(403, "forbiddenForServiceAccounts",
                    "Service accounts cannot invite attendees without Domain-Wide Delegation "
                    "of Authority.", "calendar")


def forbidden_for_non_organizer():
    return ApiError(403, "forbiddenForNonOrganizer",
                    "Shared properties can only be changed by the organizer of the event.",
                    "calendar")
