// Keeps the reservation's state current without a full reload: polls its status.json while
// the booking waits for Google, then stops. The status paragraph is a polite live region.
(function () {
  "use strict";
  var card = document.getElementById("reservation-status");
  if (!card || card.dataset.final === "true") { return; }
  var url = card.dataset.statusUrl;
  var label = document.getElementById("status-label");
  var explanation = document.getElementById("status-explanation");
  var delay = 1000;
  var deadline = Date.now() + 10 * 60 * 1000;

  function show(state) {
    label.textContent = state.label;
    label.className = "badge status-" + state.status;
    card.className = "card status-card status-" + state.status;
    explanation.textContent = state.explanation;
    card.dataset.final = state.final ? "true" : "false";
  }

  function poll() {
    fetch(url, { headers: { "Accept": "application/json" }, credentials: "same-origin", cache: "no-store" })
      .then(function (response) { if (!response.ok) { throw new Error(response.status); } return response.json(); })
      .then(function (state) {
        show(state);
        if (!state.final && Date.now() < deadline) { setTimeout(poll, delay); }
      })
      .catch(function () {
        // A network blip: back off, keep trying until the deadline.
        delay = Math.min(delay * 2, 15000);
        if (Date.now() < deadline) { setTimeout(poll, delay); }
      });
  }
  setTimeout(poll, delay);
})();
