"""The emulator's HTTP face: Google's token endpoint, Calendar v3 routes and the control API.

Calendar routes mirror ``https://www.googleapis.com/calendar/v3/`` so the real
google-api-python-client works against ``<emulator>/calendar/v3/``. Each API call is
authenticated like Google (Bearer token, scopes), may be slowed by the ``latency`` setting
and failed by an injected fault, and is written to the request log. Control routes under
``/_emulator/`` are documented in the package docstring and are never logged.
"""

import time

import jwt
from flask import Flask, Response, jsonify, request

from .errors import ApiError, OAuthError, invalid
from .oidc import register as register_oidc
from .state import SEND_UPDATES, Caller

API = "/calendar/v3"
EVENTS = API + "/calendars/<calendar_id>/events"


def create_app(state):
    app = Flask("emulator")
    app.config["JSON_SORT_KEYS"] = False
    app.json.sort_keys = False

    @app.errorhandler(ApiError)
    def api_error(error):
        response = jsonify(error.body())
        response.status_code = error.code
        response.headers.update(error.headers)
        return response

    @app.errorhandler(OAuthError)
    def oauth_error(error):
        response = jsonify(error.body())
        response.status_code = error.code
        return response

    @app.errorhandler(404)
    def unknown_route(error):
        if request.path.startswith(API + "/"):
            return api_error(ApiError(404, "notFound", "Not Found"))
        return jsonify({"error": "no such route"}), 404

    @app.errorhandler(KeyError)
    def control_not_found(error):
        return jsonify({"error": f"not found: {error.args[0]}"}), 404

    @app.errorhandler(ValueError)
    def control_bad_request(error):
        return jsonify({"error": str(error)}), 400

    @app.before_request
    def authenticate_api_calls():
        if not request.path.startswith(API + "/"):
            return None
        latency = state.settings.latency
        if latency:
            time.sleep(latency)
        request.environ["emulator.caller"] = None
        caller = state.authenticate(request.headers.get("Authorization"))
        request.environ["emulator.caller"] = caller
        calendar_id = (request.view_args or {}).get("calendar_id")
        refused = state.admit(caller, request.method, calendar_id)
        if refused is not None:
            request.environ["emulator.quota"], error = refused
            raise error
        fault = state.take_fault(request.method, request.path, calendar_id)
        if fault is not None:
            raise fault
        return None

    @app.after_request
    def log_api_calls(response):
        if request.path.startswith(API + "/") or request.path == "/token":
            caller = request.environ.get("emulator.caller")
            claims = request.environ.get("emulator.token_claims")
            if claims:
                caller = Caller(claims.get("sub") or claims.get("iss"), claims.get("iss"),
                                claims.get("sub"))
            state.log_request({
                "method": request.method,
                "path": request.path,
                "calendar": (request.view_args or {}).get("calendar_id"),
                "status": response.status_code,
                "query": request.args.to_dict(flat=False),
                "send_updates": request.args.get("sendUpdates"),
                "principal": caller.email if caller else None,
                "service_account": caller.service_account if caller else None,
                "subject": caller.subject if caller else None,
                "refused_by_quota": request.environ.get("emulator.quota"),
            })
        return response

    def caller():
        return request.environ["emulator.caller"]

    def json_body():
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise ApiError(400, "parseError", "Parse Error")
        return body

    def check_send_updates():
        value = request.args.get("sendUpdates")
        if value is not None and value not in SEND_UPDATES:
            raise invalid(f"Invalid value for: {value}", "sendUpdates")

    # -- Google --------------------------------------------------------------------------

    @app.post("/token")
    def token():
        form = request.form.to_dict()
        try:
            # Unverified read, only so the request log can say who asked; issue_token verifies.
            claims = jwt.decode(form.get("assertion", ""), options={"verify_signature": False})
        except jwt.PyJWTError:
            claims = {}
        request.environ["emulator.token_claims"] = claims
        return jsonify(state.issue_token(form))

    @app.get(API + "/calendars/<calendar_id>")
    def get_calendar(calendar_id):
        return jsonify(state.get_calendar(caller(), calendar_id))

    @app.get(EVENTS)
    def list_events(calendar_id):
        return jsonify(state.list_events(caller(), calendar_id,
                                         request.args.to_dict(flat=False)))

    @app.post(EVENTS)
    def insert_event(calendar_id):
        check_send_updates()
        return jsonify(state.insert_event(caller(), calendar_id, json_body()))

    @app.post(EVENTS + "/watch")
    def watch(calendar_id):
        return jsonify(state.watch(caller(), calendar_id, json_body()))

    @app.get(EVENTS + "/<event_id>")
    def get_event(calendar_id, event_id):
        return jsonify(state.get_event(caller(), calendar_id, event_id))

    @app.get(EVENTS + "/<event_id>/instances")
    def list_instances(calendar_id, event_id):
        return jsonify(state.list_instances(caller(), calendar_id, event_id,
                                            request.args.to_dict(flat=False)))

    @app.patch(EVENTS + "/<event_id>")
    def patch_event(calendar_id, event_id):
        check_send_updates()
        return jsonify(state.patch_event(caller(), calendar_id, event_id, json_body(),
                                         request.headers.get("If-Match")))

    @app.put(EVENTS + "/<event_id>")
    def update_event(calendar_id, event_id):
        check_send_updates()
        return jsonify(state.update_event(caller(), calendar_id, event_id, json_body(),
                                          request.headers.get("If-Match")))

    @app.delete(EVENTS + "/<event_id>")
    def delete_event(calendar_id, event_id):
        check_send_updates()
        state.delete_event(caller(), calendar_id, event_id, request.headers.get("If-Match"))
        return Response(status=204)

    @app.post(API + "/channels/stop")
    def stop_channel():
        state.stop_channel(caller(), json_body())
        return Response(status=204)

    # -- control API ---------------------------------------------------------------------

    def control_body():
        return request.get_json(silent=True) or {}

    @app.post("/_emulator/reset")
    def reset():
        state.reset()
        return jsonify({"ok": True})

    @app.post("/_emulator/service-accounts")
    def create_service_account():
        body = control_body()
        if not body.get("email"):
            raise ValueError("email is required")
        return jsonify(state.create_service_account(body["email"],
                                                    bool(body.get("delegation")))), 201

    @app.post("/_emulator/service-accounts/<email>/delegation")
    def set_delegation(email):
        state.set_delegation(email, bool(control_body().get("enabled")))
        return jsonify({"email": email, "delegation": bool(control_body().get("enabled"))})

    @app.post("/_emulator/users")
    def add_user():
        body = control_body()
        if not body.get("email"):
            raise ValueError("email is required")
        return jsonify(state.add_user(body["email"], body.get("name"),
                                      body.get("timeZone", "Europe/London"))), 201

    @app.get("/_emulator/calendars")
    def list_calendars():
        return jsonify(state.list_calendars())

    @app.post("/_emulator/calendars")
    def add_calendar():
        body = control_body()
        if not body.get("id"):
            raise ValueError("id is required")
        return jsonify(state.add_calendar(
            body["id"], body.get("summary") or body["id"], body.get("kind", "room"),
            body.get("timeZone", "Europe/London"), body.get("capacity"), body.get("building"),
            body.get("floor"), body.get("features"))), 201

    @app.post("/_emulator/calendars/<calendar_id>/acl")
    def share(calendar_id):
        body = control_body()
        state.share(calendar_id, body.get("email"), body.get("role"))
        return jsonify({"calendar": calendar_id, "email": body.get("email"),
                        "role": body.get("role")})

    @app.delete("/_emulator/calendars/<calendar_id>/acl/<email>")
    def unshare(calendar_id, email):
        state.unshare(calendar_id, email)
        return Response(status=204)

    @app.get("/_emulator/calendars/<calendar_id>/events")
    def raw_events(calendar_id):
        return jsonify(state.raw_events(calendar_id))

    @app.post("/_emulator/calendars/<calendar_id>/events-as/<email>")
    def insert_as(calendar_id, email):
        return jsonify(state.insert_as(calendar_id, email, control_body())), 201

    @app.patch("/_emulator/calendars/<calendar_id>/events/<event_id>")
    def admin_patch_event(calendar_id, event_id):
        return jsonify(state.admin_patch_event(calendar_id, event_id, control_body()))

    @app.delete("/_emulator/calendars/<calendar_id>/events/<event_id>")
    def admin_delete_event(calendar_id, event_id):
        state.admin_delete_event(calendar_id, event_id)
        return Response(status=204)

    @app.post("/_emulator/calendars/<calendar_id>/expire-sync-tokens")
    def expire_sync_tokens(calendar_id):
        state.expire_sync_tokens(calendar_id)
        return jsonify({"calendar": calendar_id, "expired": True})

    @app.post("/_emulator/people/<email>/book")
    def book(email):
        body = control_body()
        missing = [k for k in ("room", "start", "end") if not body.get(k)]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
        return jsonify(state.book(email, body["room"], body.get("summary", "Meeting"),
                                  body["start"], body["end"], body.get("attendees"),
                                  body.get("recurrence"), body.get("timeZone"),
                                  body.get("description"))), 201

    @app.get("/_emulator/people/<email>/events/<event_id>")
    def person_event(email, event_id):
        return jsonify(state.person_event(email, event_id))

    @app.patch("/_emulator/people/<email>/events/<event_id>")
    def patch_person_event(email, event_id):
        return jsonify(state.patch_person_event(email, event_id, control_body()))

    @app.delete("/_emulator/people/<email>/events/<event_id>")
    def delete_person_event(email, event_id):
        state.delete_person_event(email, event_id)
        return Response(status=204)

    @app.post("/_emulator/settings")
    def update_settings():
        return jsonify(state.update_settings(**control_body()))

    @app.get("/_emulator/settings")
    def get_settings():
        return jsonify(state.update_settings())

    @app.post("/_emulator/clock/advance")
    def advance_clock():
        return jsonify(state.advance_clock(float(control_body().get("seconds", 0))))

    @app.get("/_emulator/clock")
    def clock():
        return jsonify(state.clock_info())

    @app.post("/_emulator/faults")
    def add_fault():
        body = control_body()
        if "status" not in body:
            raise ValueError("status is required")
        return jsonify(state.add_fault(
            body["status"], body.get("times", 1), body.get("method"), body.get("path_regex"),
            body.get("calendar"), body.get("reason"), body.get("message"))), 201

    @app.delete("/_emulator/faults")
    def clear_faults():
        state.clear_faults()
        return Response(status=204)

    @app.get("/_emulator/requests")
    def requests_log():
        return jsonify(state.requests(request.args.get("calendar"),
                                      request.args.get("method")))

    @app.delete("/_emulator/requests")
    def clear_requests():
        state.clear_requests()
        return Response(status=204)

    @app.get("/_emulator/quota")
    def quota():
        return jsonify(state.quota_usage())

    @app.get("/_emulator/channels")
    def channels():
        return jsonify(state.channels_info())

    @app.get("/_emulator/pushes")
    def pushes():
        return jsonify(state.pushes(request.args.get("channel")))

    register_oidc(app, state)  # Google Sign-In for the people of this emulator
    return app
