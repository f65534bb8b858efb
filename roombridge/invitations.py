"""Meeting invitations by e-mail in room mode: iCalendar over e-mail (iMIP, RFC 6047; RFC 5546).

In room mode the event on the room calendar has no Google attendees (Google refuses them
from a service account without delegation), so the app itself tells people. The UID is the
Google event's iCalUID (``<eventId>@google.com``) so calendar clients file the invitation and
its updates as one meeting; the room is the ORGANIZER, since it holds the event, with
SENT-BY naming the address the mail comes from, so clients that check the organiser against
the sender accept it.

What people were last sent is kept per UID (`SentInvitation`), and the mail job sends what
makes their calendars match the reservation as stored now (`due_mails`):

- a REQUEST when the booking is new, or when its time, room or attendees changed since the
  last REQUEST (not for a new title or description alone, as the issue asks and Google's
  own "send updates" prompt does: a title change rides along with the next real update);
- a CANCEL to attendees who were removed, listing them (RFC 5546 section 3.2.5); the others
  get the REQUEST;
- a CANCEL of every UID people hold that the reservation no longer has (a move to another
  room makes a new event), built from what they were sent: its organiser, location, time
  and UID, never the reservation's new ones;
- nothing for a UID that never had a REQUEST, and nothing while a Google write is pending.

A series booked here is one recurring event, so one UID (`series_due_mails`): the whole
series is kept as above (its REQUEST carries the RRULE and, as Google's event, an EXDATE for
every occurrence left out: `ReservationSeries.left_out`), and each occurrence
apart under the same UID and its RECURRENCE-ID: an update when it alone differs from the
series for people, a CANCEL when it alone is cancelled or moved to another room.

SEQUENCE counts per UID and grows with every mail about it, as RFC 5546 requires for an
update to supersede. In a room that needs a check-in, the REQUEST carries the signed
one-click check-in link (roombridge/checkin.py). The organiser's check-in notices
(released, flagged, a series warned or ended) are plain mails, also sent from here.
"""

from __future__ import annotations

import email.policy
import logging
import smtplib
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from email.message import EmailMessage
from email.utils import formataddr, formatdate, make_msgid, parseaddr
from urllib.parse import unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from icalendar import Calendar, Event, vCalAddress, vRecur, vText
from sqlalchemy.orm import Session

from roombridge import checkin
from roombridge.booking.recurrence import occurrences_of
from roombridge.booking.rules import one_line
from roombridge.config import Config
from roombridge.models import Reservation, ReservationSeries, ReservationSource, ReservationStatus, SentInvitation
from roombridge.unit_of_work import unit_of_work

log = logging.getLogger(__name__)

PRODID = "-//Roombridge//Room reservations//EN"
METHODS = ("REQUEST", "CANCEL")
# Every body 7-bit on the wire: non-ASCII text goes quoted-printable or base64, so no relay
# needs 8BITMIME (smtplib never announces it for a plain address); headers become RFC 2047 words.
MAIL_POLICY = email.policy.default.clone(cte_type="7bit")


def ical_uid(event_id: str) -> str:
    """The iCalUID Google gives an event created under `event_id`."""
    return f"{event_id}@google.com"


@dataclass(frozen=True)
class Meeting:
    """One meeting as an invitation describes it: everything a VEVENT is built from."""

    uid: str
    organiser: str  # the room calendar's address: the room holds the event
    organiser_name: str
    location: str
    summary: str
    start_at: datetime
    end_at: datetime
    time_zone: str
    booker: str
    attendees: tuple[str, ...]  # everyone invited, the booker first, once each
    description: str = ""
    # A series: its RRULE line (repeating in the room's wall time) and the occurrences it leaves out.
    rrule: str | None = None
    exdates: tuple[datetime, ...] = ()
    # One occurrence of a series (the series' UID): its start in the rule.
    recurrence_id: datetime | None = None

    @property
    def key(self) -> tuple[str, str]:
        """How people's calendars file it: the UID, and which occurrence ("" for a whole event or series)."""
        return self.uid, recurrence_key(self.recurrence_id)

    @property
    def zone(self) -> ZoneInfo:
        try:
            return ZoneInfo(self.time_zone or "UTC")
        except (ZoneInfoNotFoundError, ValueError):
            return ZoneInfo("UTC")

    def changed_for_people(self, other: Meeting) -> bool:
        """True when `other` has another time (or rule), room or set of attendees: what people get an update for.

        RFC 5546 would let a new SUMMARY or DESCRIPTION be an update too; issue 17 asks for
        updates only when the time, room or attendees change, as Google's own "send updates?"
        prompt suggests, so a new title rides along with the next real update instead.
        """
        return ((self.start_at, self.end_at, self.rrule, set(self.exdates), self.organiser, self.location,
                 set(self.attendees))
                != (other.start_at, other.end_at, other.rrule, set(other.exdates), other.organiser, other.location,
                    set(other.attendees)))


def recurrence_key(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ") if moment is not None else ""


def recipients_of(reservation: Reservation) -> list[str]:
    """The booker first, then every attendee, once each."""
    people = [reservation.organiser_email]
    for address in reservation.attendees or []:
        if address not in people:
            people.append(address)
    return people


def meeting_of(reservation: Reservation, event_id: str | None = None) -> Meeting:
    """The meeting the reservation is now, under its Google event's UID (or `event_id`'s)."""
    event_id = event_id or reservation.google_event_id
    if not event_id:
        raise ValueError(f"reservation {reservation.id} has no Google event yet; its UID is unknown")
    room = reservation.room
    return Meeting(
        uid=ical_uid(event_id), organiser=room.calendar_id, organiser_name=room.name, location=room.name,
        summary=reservation.title, description=reservation.description or "", start_at=reservation.start_at,
        end_at=reservation.end_at, time_zone=room.time_zone or "UTC", booker=reservation.organiser_email,
        attendees=tuple(recipients_of(reservation)),
    )


def meeting_sent(record: SentInvitation) -> Meeting:
    """The meeting as people were last sent it."""
    return Meeting(
        uid=record.uid, organiser=record.organiser, organiser_name=record.organiser_name, location=record.location,
        summary=record.summary, start_at=record.start_at, end_at=record.end_at, time_zone=record.time_zone,
        booker=record.booker, attendees=tuple(record.attendees or ()), rrule=record.rrule,
        exdates=tuple(datetime.fromisoformat(moment) for moment in record.exdates or ()),
        recurrence_id=(datetime.strptime(record.recurrence_id, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
                       if record.recurrence_id else None),
    )


# --- the iCalendar object --------------------------------------------------------------------------


def build_vevent(meeting: Meeting, method: str, sequence: int, *, attendees: tuple[str, ...] | None = None,
                 sent_by: str | None = None, now: datetime | None = None) -> Event:
    """The VEVENT of `meeting` for a `method` mail; ATTENDEE lists `attendees` (default: everyone invited).

    A series carries its RRULE and EXDATEs, one occurrence of it its RECURRENCE-ID; a caller may
    add more before `build_calendar`.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, not {method!r}")
    zone = meeting.zone
    event = Event()
    event.add("uid", meeting.uid)
    event.add("dtstamp", (now or datetime.now(UTC)).astimezone(UTC))
    # In the room's zone (with its VTIMEZONE): a client shows the room's wall time, and a rule
    # added by a series repeats in that wall time across daylight-saving changes.
    event.add("dtstart", meeting.start_at.astimezone(zone))
    event.add("dtend", meeting.end_at.astimezone(zone))
    event.add("summary", meeting.summary)
    if meeting.description and method == "REQUEST":
        event.add("description", meeting.description)
    event.add("location", meeting.location)
    if meeting.rrule:
        event.add("rrule", vRecur.from_ical(meeting.rrule.removeprefix("RRULE:")))
    for moment in meeting.exdates:
        event.add("exdate", moment.astimezone(zone))
    if meeting.recurrence_id is not None:
        event.add("recurrence-id", meeting.recurrence_id.astimezone(zone))
    event.add("sequence", sequence)
    event.add("status", "CANCELLED" if method == "CANCEL" else "CONFIRMED")
    organizer = vCalAddress(f"mailto:{meeting.organiser}")
    organizer.params["cn"] = vText(meeting.organiser_name)
    if sent_by and sent_by.lower() != meeting.organiser.lower():
        organizer.params["sent-by"] = vText(f"mailto:{sent_by}")
    event.add("organizer", organizer)
    for address in meeting.attendees if attendees is None else attendees:
        attendee = vCalAddress(f"mailto:{address}")
        attendee.params["role"] = vText("CHAIR" if address == meeting.booker else "REQ-PARTICIPANT")
        attendee.params["partstat"] = vText("ACCEPTED" if address == meeting.booker else "NEEDS-ACTION")
        # Replies would go to the room calendar, which nobody reads: ask for none.
        attendee.params["rsvp"] = vText("FALSE")
        event.add("attendee", attendee, encode=True)
    return event


def build_calendar(method: str, *events: Event) -> Calendar:
    """A VCALENDAR for an iMIP `method` mail holding `events`, with the VTIMEZONE of every zone they use."""
    calendar = Calendar()
    calendar.add("prodid", PRODID)
    calendar.add("version", "2.0")
    calendar.add("method", method)
    years = []
    for event in events:
        calendar.add_component(event)
        years += [event.decoded("dtstart").year, event.decoded("dtend").year]
    # The zone's rules from the year before the first start on: a rule a series adds may reach
    # further, and the caller widens the span then (Calendar.add_missing_timezones).
    calendar.add_missing_timezones(first_date=date(min(years) - 1, 1, 1), last_date=date(max(years) + 2, 1, 1))
    return calendar


# --- the mail ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Invitation:
    method: str
    uid: str
    sequence: int
    recipients: list[str]
    organiser_name: str
    subject: str
    text: str
    ics: bytes


def compose(meeting: Meeting, method: str, sequence: int, *, recipients: tuple[str, ...] | list[str],
            sent_by: str | None = None, checkin_url: str | None = None, now: datetime | None = None) -> Invitation:
    """The invitation mail's parts: the iCalendar object (ATTENDEE: the recipients) and the words around it."""
    recipients = tuple(recipients)
    calendar = build_calendar(method, build_vevent(meeting, method, sequence, attendees=recipients,
                                                   sent_by=sent_by, now=now))
    zone = meeting.zone
    local_start, local_end = meeting.start_at.astimezone(zone), meeting.end_at.astimezone(zone)
    when = f"{local_start:%a %d %b %Y, %H:%M}-{local_end:%H:%M} ({meeting.time_zone})"
    # Titles made in Google are not ours to check: a line break in one would make the Subject
    # header refuse to be built, and the mail job fail forever.
    about = f"{one_line(meeting.summary)} @ {local_start:%d %b %H:%M} in {one_line(meeting.location)}"
    head = f"{meeting.summary}\n{when}\n{meeting.location}\n\n"
    if method == "CANCEL" and set(recipients) < set(meeting.attendees):
        subject = f"Removed: {about}"
        text = head + f"You are no longer invited to this meeting (booked by {meeting.booker}).\n"
    elif method == "CANCEL":
        subject = f"Cancelled: {about}"
        text = head + "This booking was cancelled.\n"
    else:
        subject = f"{'Invitation' if sequence == 0 else 'Updated invitation'}: {about}"
        text = (
            head + f"Booked by {meeting.booker}.\n"
            + (f"\n{meeting.description}\n" if meeting.description else "")
            + (f"\nThis room needs a check-in when the meeting starts. Check in with one click:\n{checkin_url}\n"
               if checkin_url else "")
        )
    return Invitation(method=method, uid=meeting.uid, sequence=sequence, recipients=list(recipients),
                      organiser_name=meeting.organiser_name, subject=subject, text=text, ics=calendar.to_ical())


def build_invitation(
    reservation: Reservation,
    method: str,
    *,
    sequence: int = 0,
    event_id: str | None = None,
    recipients: list[str] | None = None,
    sent_by: str | None = None,
    now: datetime | None = None,
    checkin_url: str | None = None,
) -> Invitation:
    """The `method` invitation of the reservation as it stands now (to `recipients`, or everyone invited)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, not {method!r}")
    meeting = meeting_of(reservation, event_id)
    return compose(meeting, method, sequence, recipients=meeting.attendees if recipients is None else recipients,
                   sent_by=sent_by, checkin_url=checkin_url, now=now)


def sender_address(config: Config) -> str:
    """The bare address mail comes from (MAIL_FROM may carry a display name)."""
    return parseaddr(config.MAIL_FROM)[1] or config.MAIL_FROM


def to_email(invitation: Invitation, sender: str) -> EmailMessage:
    """multipart/alternative: text/plain for people, text/calendar; method=... for their calendars.

    From shows the room's name with the sending address, which the ORGANIZER's SENT-BY names.
    """
    address = parseaddr(sender)[1] or sender
    message = EmailMessage(policy=MAIL_POLICY)
    message["From"] = formataddr((one_line(invitation.organiser_name), address))
    message["To"] = ", ".join(invitation.recipients)
    message["Subject"] = invitation.subject
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain=address.rpartition("@")[2] or "localhost")
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


# --- what people must be sent now -------------------------------------------------------------------


@dataclass(frozen=True)
class Mail:
    """One iMIP mail: `method` of `meeting` at `sequence`, to `recipients` (its ATTENDEEs too)."""

    method: str
    meeting: Meeting
    sequence: int
    recipients: tuple[str, ...]


@dataclass(frozen=True)
class Step:
    """The mails about one UID (and occurrence), and what people hold for it once they are sent."""

    mails: tuple[Mail, ...]
    method: str
    meeting: Meeting
    sequence: int
    # Whose check-in link a REQUEST carries (a room that needs check-ins): one booking or occurrence.
    checkin_for: int | None = None


def held_key(reservation: Reservation) -> tuple[str, str] | None:
    """The key (`Meeting.key`) of the event Google holds for the reservation, if the reservation still stands."""
    if reservation.status in (ReservationStatus.CANCELLED, ReservationStatus.RELEASED):
        return None
    if not (reservation.google_calendar_id and reservation.google_event_id):
        return None  # never written, or its old room's event was deleted on a move
    return ical_uid(reservation.google_event_id), ""


def _cancel_held(record: SentInvitation) -> Step:
    """People hold an event (or occurrence) the reservation no longer has: cancel it as they know it."""
    old = meeting_sent(record)
    sequence = record.sequence + 1
    return Step((Mail("CANCEL", old, sequence, old.attendees),), "CANCEL", old, sequence)


def _updates(last: Meeting | None, current: Meeting, sequence: int) -> tuple[Mail, ...]:
    """The mails that make people's `last` (None: they hold nothing) into `current`, at `sequence`.

    Nothing when only its title or description changed (`Meeting.changed_for_people` says why);
    attendees who were removed get a CANCEL that lists them, everyone else the REQUEST.
    """
    if last is None:
        return (Mail("REQUEST", current, sequence, current.attendees),)
    if not last.changed_for_people(current):
        return ()
    removed = tuple(a for a in last.attendees if a not in current.attendees)
    cancel = (Mail("CANCEL", last, sequence, removed),) if removed else ()
    return (*cancel, Mail("REQUEST", current, sequence, current.attendees))


def due_mails(reservation: Reservation, sent: list[SentInvitation], *, instance: bool = False) -> list[Step]:
    """What people must be sent so their calendars match the reservation, given what they were sent.

    `instance`: the reservation is an instance of a series booked here (`ReservationSeries.holds`);
    its event is the series', which `series_due_mails` keeps, so it holds no event of its own.
    """
    if reservation.source == ReservationSource.GOOGLE:
        return []  # made in Google: Google invited its people
    held = None if instance else held_key(reservation)
    steps = [_cancel_held(record) for record in sent
             if record.method == "REQUEST" and (record.uid, record.recurrence_id) != held]
    if held is None or reservation.status != ReservationStatus.CONFIRMED:
        return steps  # pending: the Google write announces again once it is done; failed: Google kept the old
    current = meeting_of(reservation)
    record = next((r for r in sent if (r.uid, r.recurrence_id) == held), None)
    if record is None or record.method != "REQUEST":
        last, sequence = None, record.sequence + 1 if record else 0
    else:
        last, sequence = meeting_sent(record), record.sequence + 1
    mails = _updates(last, current, sequence)
    return [*steps, Step(mails, "REQUEST", current, sequence, reservation.id)] if mails else steps


def series_meeting(series: ReservationSeries, occurrences: list[Reservation]) -> Meeting:
    """A series booked here as its recurring event stands: the rule, the dates it leaves out (as Google's
    event does: `ReservationSeries.left_out`), the "all" values."""
    room = series.room
    people = [series.organiser_email]
    people += [a for a in series.attendees or [] if a not in people]
    return Meeting(
        uid=ical_uid(series.google_event_id or ""), organiser=room.calendar_id, organiser_name=room.name,
        location=room.name, summary=series.title, description=series.description or "", start_at=series.start_at,
        end_at=series.end_at, time_zone=room.time_zone or "UTC", booker=series.organiser_email,
        attendees=tuple(people), rrule=series.rule,
        exdates=tuple(series.left_out(occurrences)),
    )


def series_due_mails(series: ReservationSeries, occurrences: list[Reservation],
                     sent: list[SentInvitation]) -> list[Step]:
    """What people must be sent so their calendars match a series booked here, given what they were sent.

    One REQUEST of the whole series (RRULE, EXDATE) under its recurring event's UID, kept as a
    single event's (`_updates`: an all/following edit that drops attendees CANCELs the series
    for them; a new title alone sends nothing). Each occurrence is filed under the same UID with
    its RECURRENCE-ID: one that differs from the series for people (its time, or who is invited)
    gets a REQUEST of its own; one cancelled, released or moved alone to another room while the
    rule still has it gets a CANCEL. The SEQUENCE of an occurrence's mail is above the series'
    last, so it supersedes it. A series UID people hold that the series no longer has (moved to
    another room, deleted) is cancelled as they know it; its occurrences go with it.
    `sent`: the series' records (filed under its first reservation, `mail_invitations`).
    """
    held = (ical_uid(series.google_event_id), "") if series.google_event_id and series.google_calendar_id else None
    steps = [_cancel_held(record) for record in sent
             if record.method == "REQUEST" and not record.recurrence_id and (record.uid, "") != held]
    if held is None or series.write_due:
        return steps  # gone, or its Google write pending: that write announces again once it is done
    records = {(record.uid, record.recurrence_id): record for record in sent}
    current = series_meeting(series, occurrences)
    record = records.get(held)
    if record is None or record.method != "REQUEST":
        last, sequence = None, record.sequence + 1 if record else 0
    else:
        last, sequence = meeting_sent(record), record.sequence + 1
    # An occurrence newly left out of the rule gets its own RECURRENCE-ID CANCEL (below): no reason
    # alone to send the whole series again; the next REQUEST of it lists it with the other EXDATEs.
    seen = replace(last, exdates=current.exdates) if last and set(last.exdates) <= set(current.exdates) else last
    mails = _updates(seen, current, sequence)
    if mails:
        steps.append(Step(mails, "REQUEST", current, sequence))
        master, master_sequence = current, sequence
    else:
        master, master_sequence = last, record.sequence
    in_rule = set(occurrences_of(series.rule, series.start_at, series.room.zone, MAX_RULE_OCCURRENCES))
    in_rule -= set(master.exdates)
    duration = master.end_at - master.start_at
    for occurrence in sorted(occurrences, key=lambda r: r.occurrence_start_at or r.start_at):
        start = occurrence.occurrence_start_at
        if start is None or occurrence.source == ReservationSource.GOOGLE:
            continue
        record = records.get((master.uid, recurrence_key(start)))
        # What people hold of it: its own last mail, or the series' occurrence at that start.
        held_occurrence = (meeting_sent(record) if record is not None and record.method == "REQUEST" else
                           replace(master, start_at=start, end_at=start + duration, rrule=None, exdates=(),
                                   recurrence_id=start))
        sequence = max(record.sequence if record is not None else -1, master_sequence) + 1
        if not series.holds(occurrence) or occurrence.status in (ReservationStatus.CANCELLED,
                                                                   ReservationStatus.RELEASED):
            if start in in_rule and (record is None or record.method == "REQUEST"):
                steps.append(Step((Mail("CANCEL", held_occurrence, sequence, held_occurrence.attendees),),
                                  "CANCEL", held_occurrence, sequence))
            continue
        if occurrence.status != ReservationStatus.CONFIRMED:
            continue  # its Google write pending (announces again when done), failed or in conflict
        now = replace(meeting_of(occurrence, series.google_event_id), recurrence_id=start)
        mails = _updates(held_occurrence, now, sequence)
        if mails:
            steps.append(Step(mails, "REQUEST", now, sequence, occurrence.id))
    return steps


# How far the mail job expands a series' rule to tell its occurrences (COUNT or UNTIL ends every rule here).
MAX_RULE_OCCURRENCES = 5000


def mail_lock_name(session: Session, reservation_id: int) -> str:
    """What the mail job locks: the reservation, or its series (one record of the series for all occurrences)."""
    with unit_of_work(session, write=False):
        series_id = session.scalar(sa.select(Reservation.series_id).where(Reservation.id == reservation_id))
        if series_id and session.get(ReservationSeries, series_id) is not None:
            return f"series:{series_id}"
    return str(reservation_id)


def mail_invitations(session: Session, config: Config, reservation_id: int, now: datetime | None = None) -> str:
    """Mail people what makes their calendars match the reservation as stored now; returns what was done.

    For an occurrence of a series booked here, the series too (`series_due_mails`): its records
    are filed under its first reservation, whichever occurrence's change brought the job.
    Reads in a read unit of work, mails with none open, and records each UID's mails once
    they were handed to SMTP, in a short write unit. SMTP errors propagate for the mail job
    to retry: UIDs done before are recorded and not mailed again; a mail of the UID that
    failed may go again, with the same SEQUENCE, which clients file as the same update. The
    caller makes sure only one runs per reservation (or series) at a time (`mail_lock_name`,
    jobs/reservations.py).
    """
    sender = sender_address(config)
    with unit_of_work(session, write=False):
        reservation = session.get(Reservation, reservation_id, populate_existing=True)
        if reservation is None:
            return "gone"
        series = (session.get(ReservationSeries, reservation.series_id, populate_existing=True)
                  if reservation.series_id else None)
        sent = list(session.scalars(sa.select(SentInvitation).where(SentInvitation.reservation_id == reservation_id)
                                    .order_by(SentInvitation.sent_at)))
        own = [r for r in sent if r.rrule is None and not r.recurrence_id]
        instance = series is not None and series.holds(reservation)
        steps = [(reservation_id, step) for step in due_mails(reservation, own, instance=instance)]
        people: dict[int, Reservation] = {reservation.id: reservation}
        if series is not None:
            occurrences = list(session.scalars(sa.select(Reservation).where(Reservation.series_id == series.id)
                                               .order_by(Reservation.id).execution_options(populate_existing=True)))
            first = occurrences[0].id
            series_sent = session.scalars(sa.select(SentInvitation).where(
                SentInvitation.reservation_id == first,
                sa.or_(SentInvitation.rrule.is_not(None), SentInvitation.recurrence_id != "")))
            # The series' CANCELs first: an occurrence moved to another room is cancelled before its own invitation.
            steps = [(first, step) for step in series_due_mails(series, occurrences, list(series_sent))] + steps
            people.update((r.id, r) for r in occurrences)
        links = {}
        for _, step in steps:
            holder = people.get(step.checkin_for) if step.checkin_for is not None else None
            if (holder is not None and any(mail.method == "REQUEST" for mail in step.mails)
                    and checkin.CheckinPolicy.for_room(holder.room, config).required):
                links[holder.id] = checkin.link_url(config, holder)
    if not steps:
        return "nothing to send"
    done = []
    for owner, step in steps:
        for mail in step.mails:
            link = links.get(step.checkin_for) if mail.method == "REQUEST" else None
            invitation = compose(mail.meeting, mail.method, mail.sequence, recipients=mail.recipients,
                                 sent_by=sender, checkin_url=link, now=now)
            if not send(to_email(invitation, config.MAIL_FROM), config.SMTP_URL):
                return "skipped (no SMTP_URL)"  # nothing recorded: nobody holds what was not sent
            done.append(f"{mail.method} {mail.sequence} to {len(mail.recipients)}")
        _remember(session, owner, step)
    return ", ".join(done)


def _remember(session: Session, reservation_id: int, step: Step) -> None:
    meeting = step.meeting
    with unit_of_work(session):
        uid, recurrence_id = meeting.key
        record = session.get(SentInvitation, (uid, recurrence_id), populate_existing=True)
        if record is None:
            record = SentInvitation(uid=uid, recurrence_id=recurrence_id, reservation_id=reservation_id)
            session.add(record)
        elif record.sequence > step.sequence:
            return  # a later mail about it was recorded meanwhile
        record.method, record.sequence, record.sent_at = step.method, step.sequence, datetime.now(UTC)
        record.organiser, record.organiser_name, record.location = (meeting.organiser, meeting.organiser_name,
                                                                    meeting.location)
        record.summary, record.start_at, record.end_at = meeting.summary, meeting.start_at, meeting.end_at
        record.time_zone, record.booker, record.attendees = meeting.time_zone, meeting.booker, list(meeting.attendees)
        record.rrule, record.exdates = meeting.rrule, [moment.astimezone(UTC).isoformat() for moment in meeting.exdates]


# --- check-in notices (roombridge/checkin.py) -------------------------------------------------------

_NOTICES = {
    "released": ("Released: {title}", "Nobody checked in to {title} ({when}) in {room} by {deadline}, so the room "
                 "was released for others."),
    "flagged": ("No check-in: {title}", "Nobody checked in to {title} ({when}) in {room} by {deadline}. The room "
                "is still booked; please cancel bookings you do not need."),
    "series_warning": ("Your series may end: {title}", "Nobody checked in to {title} in {room} several times in a "
                       "row (last: {when}). If nobody checks in next time, the room is given up for the rest of "
                       "the series."),
    "series_ended": ("Series ended: {title}", "Nobody checked in to {title} in {room} {limit} times in a row (last: "
                     "{when}), so the room is given up for the later occurrences: cancelled if booked here, "
                     "declined by the room if booked in Google Calendar."),
}


def notice_message(reservation: Reservation, kind: str, config: Config) -> EmailMessage:
    room = reservation.room
    zone = room.zone
    start = reservation.start_at.astimezone(zone)
    deadline = checkin.CheckinPolicy.for_room(room, config).window(reservation)[1].astimezone(zone)
    words = {"title": reservation.title, "room": room.name, "when": f"{start:%a %d %b %H:%M}",
             "deadline": f"{deadline:%H:%M}", "limit": config.CHECKIN_SERIES_END_AFTER}
    subject, text = _NOTICES[kind]
    message = EmailMessage(policy=MAIL_POLICY)
    message["From"] = config.MAIL_FROM
    message["To"] = reservation.organiser_email
    message["Subject"] = one_line(subject.format(**words))  # a title made in Google may hold a line break
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
