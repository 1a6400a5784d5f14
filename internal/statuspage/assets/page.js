// fleetgate status page: refresh the server-rendered page every 3 s
// (fetch it, swap <main>), filter table rows by the search box, and run
// operator actions (when the daemon enables them and the token is given).
(function () {
  "use strict";
  var search = document.getElementById("search");

  function filter() {
    var q = (search.value || "").trim().toLowerCase();
    var rows = document.querySelectorAll("table.filter tbody tr");
    for (var i = 0; i < rows.length; i++) {
      var r = rows[i];
      var hide = q !== "" && !r.classList.contains("none") && r.textContent.toLowerCase().indexOf(q) < 0;
      r.classList.toggle("hidden", hide);
    }
  }

  function refresh() {
    fetch(location.pathname, { credentials: "same-origin", cache: "no-store" })
      .then(function (resp) {
        if (!resp.ok) { throw new Error(resp.status); }
        return resp.text();
      })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.getElementById("main");
        if (!fresh) { return; }
        document.getElementById("main").innerHTML = fresh.innerHTML;
        var up = document.getElementById("updated");
        if (up) { up.textContent = fresh.getAttribute("data-now"); }
        document.body.setAttribute("data-refreshes", String(Number(document.body.getAttribute("data-refreshes") || 0) + 1));
        filter();
      })
      .catch(function () { /* keep the last page; the next tick retries */ });
  }

  document.addEventListener("click", function (ev) {
    var b = ev.target.closest("button.act");
    if (!b) { return; }
    if (!window.confirm(b.getAttribute("data-action") + " " + b.getAttribute("data-what") + "?")) { return; }
    fetch("/api/actions/" + encodeURIComponent(b.getAttribute("data-action")) + "?target=" + encodeURIComponent(b.getAttribute("data-target")),
      { method: "POST", credentials: "same-origin", headers: { "X-Fleetgate-Action": "1" } })
      .then(function (resp) { return resp.text().then(function (t) { window.alert(t); refresh(); }); });
  });

  search.addEventListener("input", filter);
  setInterval(refresh, 3000);
})();
