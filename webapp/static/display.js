// The room display keeps itself current: it polls state.json with If-None-Match a few times a
// minute and reloads the page only when what it shows has changed. While the server cannot be
// reached (a restart, a network fault) it says so and keeps trying with a growing pause; once the
// server answers again it hides the notice (and reloads if anything changed meanwhile).
(function () {
  "use strict";
  var body = document.body;
  var url = body.dataset.stateUrl;
  var etag = body.dataset.etag;
  var every = (parseInt(body.dataset.pollSeconds, 10) || 20) * 1000;
  var offline = document.getElementById("offline");
  var clock = document.getElementById("clock");
  var delay = every;

  function showTime() {
    try {
      clock.textContent = new Intl.DateTimeFormat("en-GB", {
        hour: "2-digit", minute: "2-digit", timeZone: body.dataset.zone || undefined
      }).format(new Date());
    } catch (e) {
      clock.textContent = "";
    }
  }

  function poll() {
    fetch(url, { headers: { "If-None-Match": "\"" + etag + "\"", "Accept": "application/json" },
                 cache: "no-store", credentials: "omit" })
      .then(function (response) {
        if (response.status === 304) {
          offline.hidden = true;
          delay = every;
          return;
        }
        if (response.ok || response.status === 404) {
          window.location.replace(window.location.pathname);  // changed, or the link was revoked
          return;
        }
        throw new Error("HTTP " + response.status);
      })
      .catch(function () {
        offline.hidden = false;
        delay = Math.min(delay * 2, 60000);
      })
      .then(function () { setTimeout(poll, delay); });
  }

  showTime();
  setInterval(showTime, 10000);
  setTimeout(poll, every);
})();
