"""Demo data: rooms, people and a service account the rooms are shared with."""

import json

DEMO_SERVICE_ACCOUNT = "roombridge@demo-project.iam.gserviceaccount.com"
DEMO_TIME_ZONE = "Europe/London"

DEMO_ROOMS = [
    {"email": "room-atlas@resource.calendar.google.com", "name": "Atlas", "capacity": 12,
     "building": "HQ", "floor": "1", "features": ["display", "video-conference"],
     "time_zone": DEMO_TIME_ZONE},
    {"email": "room-borealis@resource.calendar.google.com", "name": "Borealis",
     "capacity": 6, "building": "HQ", "floor": "1", "features": ["whiteboard"],
     "time_zone": DEMO_TIME_ZONE},
    {"email": "room-cygnus@resource.calendar.google.com", "name": "Cygnus", "capacity": 4,
     "building": "HQ", "floor": "2", "features": ["display"], "time_zone": DEMO_TIME_ZONE},
    {"email": "room-draco@resource.calendar.google.com", "name": "Draco", "capacity": 20,
     "building": "HQ", "floor": "2",
     "features": ["display", "video-conference", "whiteboard"], "time_zone": DEMO_TIME_ZONE},
    {"email": "room-eridanus@resource.calendar.google.com", "name": "Eridanus", "capacity": 2,
     "building": "Annex", "floor": "G", "features": ["phone"], "time_zone": DEMO_TIME_ZONE},
]

DEMO_USERS = [
    {"email": "alice@example.com", "name": "Alice Archer"},
    {"email": "bob@example.com", "name": "Bob Baker"},
    {"email": "carol@example.com", "name": "Carol Carter"},
    {"email": "admin@example.com", "name": "Ada Admin"},
]


def seed_demo(target, service_account=DEMO_SERVICE_ACCOUNT, key_out=None):
    """Create the demo rooms, people and service account; share every room as writer.

    ``target`` is an EmulatorServer or its state. Returns the service account's JSON key
    (dict) and, with ``key_out``, also writes it to that path.
    """
    state = getattr(target, "state", target)
    for user in DEMO_USERS:
        state.add_user(user["email"], user["name"], DEMO_TIME_ZONE)
    key = state.create_service_account(service_account)
    for room in DEMO_ROOMS:
        state.add_calendar(room["email"], room["name"], "room", room["time_zone"],
                           room["capacity"], room["building"], room["floor"], room["features"])
        state.share(room["email"], service_account, "writer")
    from .oidc import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, provider_for

    provider_for(state).register_client(DEMO_CLIENT_ID, DEMO_CLIENT_SECRET)  # the app's sign-in
    if key_out:
        with open(key_out, "w", encoding="utf-8") as handle:
            json.dump(key, handle, indent=2)
    return key
