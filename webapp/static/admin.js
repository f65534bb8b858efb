// The admin console's room page follows the job a button enqueued (a channel renewal or a
// sync) by polling the room's status.json until what it waits for has changed, then shows the
// new values. The "pending" paragraph is a polite live region. Pages with a form error move
// the focus to the error summary, as the booking form does.
(function () {
  "use strict";
  var summary = document.getElementById("error-summary");
  if (summary) { summary.focus(); }

  var box = document.getElementById("room-status");
  if (!box || !box.dataset.awaiting) { return; }
  var awaiting = box.dataset.awaiting;
  var initial = JSON.parse(box.dataset.initial);
  var pending = document.getElementById("room-pending");
  var delay = 1000;
  var deadline = Date.now() + 90 * 1000;

  function marker(state) {
    if (awaiting === "channel") { return state.channel ? state.channel.id : ""; }
    return state.sync.count + "|" + (state.sync.last_error_at || "");
  }

  function text(id, value) {
    var el = document.getElementById(id);
    if (el) { el.textContent = value; }
  }

  function show(state) {
    text("channel-id", state.channel ? state.channel.id : "none live");
    text("channel-expiry", state.channel ? state.channel.expiration_text : "none");
    text("last-push", state.last_push_text);
    text("last-sync", state.sync.last_sync_text);
    text("last-full-sync", state.sync.last_full_sync_text);
    text("sync-count", String(state.sync.count));
    text("sync-error", state.sync.last_error || "none");
    var list = document.getElementById("problem-list");
    if (list) {
      list.textContent = "";
      (state.problems.length ? state.problems : ["No known problem."]).forEach(function (problem) {
        var item = document.createElement("li");
        item.textContent = problem;
        if (state.problems.length) { item.className = "problem"; }
        list.appendChild(item);
      });
    }
  }

  function poll() {
    fetch(box.dataset.statusUrl, { headers: { "Accept": "application/json" }, credentials: "same-origin", cache: "no-store" })
      .then(function (response) { if (!response.ok) { throw new Error(response.status); } return response.json(); })
      .then(function (state) {
        if (marker(state) !== marker(initial)) {
          show(state);
          pending.textContent = awaiting === "channel"
            ? (state.channel ? "New channel open." : "No channel could be opened; see Health.")
            : (state.sync.last_error ? "The sync failed; see Last error." : "Sync done.");
          return;
        }
        if (Date.now() < deadline) { setTimeout(poll, delay); }
        else { pending.textContent = "Still waiting; the job may be queued behind others. Reload the page later."; }
      })
      .catch(function () {
        delay = Math.min(delay * 2, 15000);
        if (Date.now() < deadline) { setTimeout(poll, delay); }
      });
  }
  setTimeout(poll, 500);
})();
