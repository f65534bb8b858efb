// The lobby overview refreshes itself: it polls status.json every 30 s with If-None-Match, so an
// unchanged building costs a 304; when the server cannot be reached it says so and keeps trying.
(function () {
  "use strict";
  var list = document.getElementById("lobby-rooms");
  if (!list) { return; }
  var url = list.dataset.statusUrl;
  var asOf = document.getElementById("as-of");
  var connection = document.getElementById("connection");
  var etag = null;
  var PERIOD = 30000;

  function stateText(room) {
    if (room.busy) { return "Busy until " + room.until; }
    return room.until ? "Free until " + room.until : "Free";
  }

  function render(state) {
    var items = state.rooms.map(function (room) {
      var li = document.createElement("li");
      li.className = "lobby-room " + (room.busy ? "busy" : "free");
      li.dataset.roomId = room.id;
      [["room-name", room.name], ["room-floor", room.floor ? "Floor " + room.floor : ""],
       ["room-state", stateText(room)]].forEach(function (part) {
        var span = document.createElement("span");
        span.className = part[0];
        span.textContent = part[1];
        li.appendChild(span);
      });
      return li;
    });
    list.replaceChildren.apply(list, items);
    asOf.textContent = state.as_of;
  }

  function poll() {
    var headers = { "Accept": "application/json" };
    if (etag) { headers["If-None-Match"] = etag; }
    fetch(url, { headers: headers, credentials: "same-origin", cache: "no-cache" })
      .then(function (response) {
        connection.textContent = "";
        if (response.status === 304) { return null; }
        if (!response.ok) { throw new Error(response.status); }
        etag = response.headers.get("ETag");
        return response.json();
      })
      .then(function (state) { if (state) { render(state); } })
      .catch(function () { connection.textContent = "Cannot reach the server; showing the last known state."; })
      .then(function () { setTimeout(poll, PERIOD); });
  }
  setTimeout(poll, 1000);
})();
