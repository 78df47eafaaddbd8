// The console's only script: refresh the runs list's counts by status every 10 s (no framework, no
// inline code: the page's Content-Security-Policy allows scripts from this origin only).
"use strict";
(function () {
  var counts = document.getElementById("counts");
  if (!counts || !counts.dataset.url) { return; }
  function refresh() {
    fetch(counts.dataset.url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (body) {
        if (!body) { return; }
        counts.querySelectorAll("[data-status]").forEach(function (el) {
          var n = body.counts[el.dataset.status];
          el.textContent = String(n === undefined ? 0 : n);
        });
      })
      .catch(function () { /* the next poll tries again */ });
  }
  setInterval(refresh, 10000);
})();
