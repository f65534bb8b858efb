"""Meeting invitations by e-mail in room mode: iCalendar over e-mail (iMIP, RFC 6047).

In room mode the event on the room calendar has no Google attendees (Google refuses them
from a service account without delegation), so the app itself tells people: a METHOD
REQUEST when a booking is made or changed, a METHOD CANCEL when it goes away. The UID is
the Google event's iCalUID (``<eventId>@google.com``) so calendar clients file the
invitation and its updates as one meeting; the room is the ORGANIZER, since it holds the
event; SEQUENCE grows with every change, as RFC 5546 requires for updates to supersede.
In a room that needs a check-in, the REQUEST carries the signed one-click check-in link
(roombridge/checkin.py). The organiser's check-in notices (released, flagged, a series
warned or ended) are plain mails, also sent from here.
"""

from __future__ import annotations

import logging
import smtplib
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from urllib.parse import unquote, urlsplit

from icalendar import Calendar, Event, vCalAddress, vRecur, vText
from sqlalchemy.orm import Session

from roombridge import checkin
from roombridge.booking.rules import one_line
from roombridge.config import Config
from roombridge.models import Reservation, ReservationSeries, ReservationStatus
from roombridge.unit_of_work import unit_of_work

log = logging.getLogger(__name__)

PRODID = "-//Roombridge//Room reservations//EN"
METHODS = ("REQUEST", "CANCEL")


def ical_uid(event_id: str) -> str:
    """The iCalUID Google gives an event created under `event_id`."""
    return f"{event_id}@google.com"


@dataclass(frozen=True)
class Invitation:
    method: str
    uid: str
    recipients: list[str]
    subject: str
    text: str
    ics: bytes


def recipients_of(reservation: Reservation) -> list[str]:
    """The booker first, then every attendee, once each."""
    people = [reservation.organiser_email]
    for address in reservation.attendees or []:
        if address not in people:
            people.append(address)
    return people


def build_invitation(
    reservation: Reservation,
    method: str,
    *,
    event_id: str | None = None,
    recipients: list[str] | None = None,
    now: datetime | None = None,
    checkin_url: str | None = None,
    rrule: str | None = None,
    exdates: list[datetime] | None = None,
    recurrence_id: datetime | None = None,
    sequence: int | None = None,
) -> Invitation:
    """The iCalendar object and the words around it, for `method` REQUEST or CANCEL.

    A whole series (`reservation` is then its `ReservationSeries`) carries its RRULE and EXDATEs;
    one occurrence of it carries the series' UID and its RECURRENCE-ID (its start in the rule).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, not {method!r}")
    event_id = event_id or reservation.google_event_id
    if not event_id:
        raise ValueError(f"reservation {reservation.id} has no Google event yet; its UID is unknown")
    room = reservation.room
    uid = ical_uid(event_id)
    now = now or datetime.now(UTC)

    calendar = Calendar()
    calendar.add("prodid", PRODID)
    calendar.add("version", "2.0")
    calendar.add("method", method)
    event = Event()
    event.add("uid", uid)
    event.add("dtstamp", now.astimezone(UTC))
    event.add("dtstart", reservation.start_at.astimezone(UTC))
    event.add("dtend", reservation.end_at.astimezone(UTC))
    event.add("summary", reservation.title)
    if reservation.description:
        event.add("description", reservation.description)
    event.add("location", room.name)
    if rrule:
        event.add("rrule", vRecur.from_ical(rrule.removeprefix("RRULE:")))
        for moment in exdates or []:
            event.add("exdate", moment.astimezone(UTC))
    if recurrence_id is not None:
        event.add("recurrence-id", recurrence_id.astimezone(UTC))
    # The row version grows on every change to the reservation, so it serves as SEQUENCE.
    event.add("sequence", reservation.version if sequence is None else sequence)
    event.add("status", "CANCELLED" if method == "CANCEL" else "CONFIRMED")
    organizer = vCalAddress(f"mailto:{room.calendar_id}")
    organizer.params["cn"] = vText(room.name)
    event.add("organizer", organizer)
    for address in recipients_of(reservation):
        attendee = vCalAddress(f"mailto:{address}")
        attendee.params["role"] = vText("CHAIR" if address == reservation.organiser_email else "REQ-PARTICIPANT")
        attendee.params["partstat"] = vText("ACCEPTED" if address == reservation.organiser_email else "NEEDS-ACTION")
        # Replies would go to the room calendar, which nobody reads: ask for none.
        attendee.params["rsvp"] = vText("FALSE")
        event.add("attendee", attendee, encode=True)
    calendar.add_component(event)

    zone = room.zone
    local_start, local_end = reservation.start_at.astimezone(zone), reservation.end_at.astimezone(zone)
    when = f"{local_start:%a %d %b %Y, %H:%M}-{local_end:%H:%M} ({room.time_zone})"
    # Titles made in Google are not ours to check: a line break in one would make the Subject
    # header refuse to be built, and the mail job fail forever.
    title = one_line(reservation.title)
    if method == "CANCEL":
        subject = f"Cancelled: {title} @ {local_start:%d %b %H:%M} in {one_line(room.name)}"
        text = f"{reservation.title}\n{when}\n{room.name}\n\nThis booking was cancelled.\n"
    else:
        subject = f"Invitation: {title} @ {local_start:%d %b %H:%M} in {one_line(room.name)}"
        text = (
            f"{reservation.title}\n{when}\n{room.name}\n\nBooked by {reservation.organiser_email}.\n"
            + (f"\n{reservation.description}\n" if reservation.description else "")
            + (f"\nThis room needs a check-in when the meeting starts. Check in with one click:\n{checkin_url}\n"
               if checkin_url else "")
        )
    return Invitation(
        method=method,
        uid=uid,
        recipients=list(recipients) if recipients is not None else recipients_of(reservation),
        subject=subject,
        text=text,
        ics=calendar.to_ical(),
    )


def to_email(invitation: Invitation, sender: str) -> EmailMessage:
    """multipart/alternative: text/plain for people, text/calendar; method=... for their calendars."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(invitation.recipients)
    message["Subject"] = invitation.subject
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or "localhost")
    message.set_content(invitation.text)
    message.add_alternative(
        invitation.ics.decode("utf-8"),
        subtype="calendar",
        params={"method": invitation.method},
    )
    return message


def send(message: EmailMessage, smtp_url: str, timeout: float = 10.0) -> bool:
    """Send through SMTP_URL (smtp://[user:password@]host[:port], or smtps://). False if none is set.

    Connection and protocol errors propagate (OSError, smtplib.SMTPException), so the
    mail job can retry them.
    """
    if not smtp_url:
        log.info("SMTP_URL is not set; not sending %r to %s", message["Subject"], message["To"])
        return False
    parts = urlsplit(smtp_url)
    if parts.scheme not in ("smtp", "smtps"):
        raise ValueError(f"SMTP_URL must start with smtp:// or smtps://, not {parts.scheme!r}")
    host = parts.hostname or "localhost"
    if parts.scheme == "smtps":
        client: smtplib.SMTP = smtplib.SMTP_SSL(host, parts.port or 465, timeout=timeout)
    else:
        client = smtplib.SMTP(host, parts.port or 25, timeout=timeout)
    with client:
        if parts.username:
            if parts.scheme == "smtp" and client.has_extn("starttls"):
                client.starttls()
            client.login(unquote(parts.username), unquote(parts.password or ""))
        client.send_message(message)
    return True


def mail_invitation(session: Session, config: Config, reservation_id: int, method: str,
                    recipients: list[str] | None = None, event_id: str | None = None) -> str:
    """Mail an iMIP REQUEST or CANCEL of the reservation as stored now; returns what was done.

    Reads in a read unit of work and mails with none open. SMTP errors propagate for the
    mail job to retry.
    """
    with unit_of_work(session, write=False):
        reservation = session.get(Reservation, reservation_id)
        if reservation is None:
            return "gone"
        series = session.get(ReservationSeries, reservation.series_id) if reservation.series_id else None
        if series is not None and event_id and "_" not in event_id:
            # The whole series (our event ids are base32hex: an underscore only joins an instance's start).
            if method == "REQUEST" and series.write_due:
                return "superseded"
            invitation = build_invitation(series, method, event_id=event_id, recipients=recipients,  # type: ignore[arg-type]
                                          rrule=series.rule, sequence=series.version,
                                          exdates=[datetime.fromisoformat(t) for t in series.exdates or []])
        else:
            if method == "REQUEST" and reservation.status != ReservationStatus.CONFIRMED:
                return "superseded"  # changed again since; the next publish sends the invitation
            policy = checkin.CheckinPolicy.for_room(reservation.room, config)
            link = checkin.link_url(config, reservation) if method == "REQUEST" and policy.required else None
            occurrence = {}
            master = (event_id or reservation.google_event_id or "").rpartition("_")[0]
            if series is not None and master and reservation.occurrence_start_at is not None:
                # One occurrence of a series: the series' UID, and which occurrence it is.
                occurrence = {"event_id": master, "recurrence_id": reservation.occurrence_start_at,
                              "sequence": series.version + reservation.version}
            invitation = build_invitation(reservation, method, **{"event_id": event_id, **occurrence},
                                          recipients=recipients, checkin_url=link)
    sent = send(to_email(invitation, config.MAIL_FROM), config.SMTP_URL)
    return f"sent to {len(invitation.recipients)}" if sent else "skipped (no SMTP_URL)"


# --- check-in notices (roombridge/checkin.py) -------------------------------------------------------

_NOTICES = {
    "released": ("Released: {title}", "Nobody checked in to {title} ({when}) in {room} by {deadline}, so the room "
                 "was released for others."),
    "flagged": ("No check-in: {title}", "Nobody checked in to {title} ({when}) in {room} by {deadline}. The room "
                "is still booked; please cancel bookings you do not need."),
    "series_warning": ("Your series may end: {title}", "Nobody checked in to {title} in {room} several times in a "
                       "row (last: {when}). If nobody checks in next time, the rest of the series is cancelled."),
    "series_ended": ("Series ended: {title}", "Nobody checked in to {title} in {room} {limit} times in a row (last: "
                     "{when}), so the later occurrences were cancelled and the room released."),
}


def notice_message(reservation: Reservation, kind: str, config: Config) -> EmailMessage:
    room = reservation.room
    zone = room.zone
    start = reservation.start_at.astimezone(zone)
    deadline = checkin.CheckinPolicy.for_room(room, config).window(reservation)[1].astimezone(zone)
    words = {"title": reservation.title, "room": room.name, "when": f"{start:%a %d %b %H:%M}",
             "deadline": f"{deadline:%H:%M}", "limit": config.CHECKIN_SERIES_END_AFTER}
    subject, text = _NOTICES[kind]
    message = EmailMessage()
    message["From"] = config.MAIL_FROM
    message["To"] = reservation.organiser_email
    message["Subject"] = subject.format(**words)
    message.set_content(text.format(**words) + "\n")
    return message


def mail_checkin_notice(session: Session, config: Config, reservation_id: int, kind: str) -> str:
    """Mail the organiser a check-in notice; SMTP errors propagate for the mail job to retry."""
    with unit_of_work(session, write=False):
        reservation = session.get(Reservation, reservation_id)
        if reservation is None:
            return "gone"
        message = notice_message(reservation, kind, config)
    return "sent" if send(message, config.SMTP_URL) else "skipped (no SMTP_URL)"
