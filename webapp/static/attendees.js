// Attendee autocomplete on the booking form: suggestions from people the organisation already has in
// Roombridge (GET /people.json?q=...), offered through a native <datalist>, so the browser's own
// accessible suggestion list is used. "Add" (or Enter) puts the address into the attendees field.
(function () {
  "use strict";
  var picker = document.getElementById("attendee-picker");
  var field = document.getElementById("attendees");
  if (!picker || !field || !window.fetch) { return; }
  var search = document.getElementById("attendee-search");
  var list = document.getElementById("attendee-suggestions");
  var add = document.getElementById("attendee-add");
  var announce = document.getElementById("attendee-announce");
  var source = picker.dataset.source;
  var timer = null;
  var asked = "";
  picker.hidden = false;

  function current() {
    return field.value.split(/[,;\n]/).map(function (s) { return s.trim().toLowerCase(); }).filter(Boolean);
  }

  function show(people) {
    list.textContent = "";
    people.forEach(function (person) {
      var option = document.createElement("option");
      option.value = person.email;
      if (person.name) { option.label = person.name + " <" + person.email + ">"; }
      list.appendChild(option);
    });
    announce.textContent = people.length ? people.length + " suggestion" + (people.length === 1 ? "" : "s") : "";
  }

  function lookUp() {
    var typed = search.value.trim();
    if (typed.length < 2 || typed === asked) { return; }
    asked = typed;
    fetch(source + "?q=" + encodeURIComponent(typed), {credentials: "same-origin", headers: {Accept: "application/json"}})
      .then(function (response) { return response.ok ? response.json() : []; })
      .then(function (people) { if (typed === asked) { show(people); } })
      .catch(function () { /* suggestions are a help, never a requirement */ });
  }

  function addTyped() {
    var address = search.value.trim().toLowerCase();
    if (address.indexOf("@") < 1) {
      announce.textContent = "Type or choose an e-mail address first.";
      return;
    }
    var have = current();
    if (have.indexOf(address) === -1) {
      have.push(address);
      field.value = have.join(", ");
    }
    search.value = "";
    asked = "";
    announce.textContent = address + " added to the attendees.";
    search.focus();
  }

  search.addEventListener("input", function () {
    clearTimeout(timer);
    timer = setTimeout(lookUp, 150);
  });
  search.addEventListener("keydown", function (event) {
    if (event.key === "Enter") { event.preventDefault(); addTyped(); }
  });
  add.addEventListener("click", addTyped);
}());
