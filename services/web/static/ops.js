// The console's live queue: the server says which request changed (server-sent events from /ops/events), and
// the page asks again for its lists. The lists come from intake, which learns of the matcher's news a moment
// after this page does, so each burst of news is followed by a second look a little later.
(function () {
  var status = document.querySelector("[data-live]");
  if (!status || !window.EventSource) { return; }
  var regions = document.querySelectorAll("[data-refresh]");
  var soon = null, later = null;
  function refresh() {
    regions.forEach(function (region) {
      fetch(region.getAttribute("data-refresh"), { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (answer) { return answer.ok ? answer.text() : null; })
        .then(function (html) { if (html !== null) { region.innerHTML = html; } })
        .catch(function () { /* the next event or the reconnect looks again */ });
    });
  }
  var source = new EventSource(status.getAttribute("data-live"));
  source.addEventListener("open", function () {
    status.textContent = status.getAttribute("data-on");
    document.body.setAttribute("data-live-state", "on");
  });
  source.addEventListener("error", function () {
    status.textContent = status.getAttribute("data-off");
    document.body.setAttribute("data-live-state", "off");
  });
  source.addEventListener("changed", function () {
    clearTimeout(soon);
    clearTimeout(later);
    soon = setTimeout(refresh, 200);
    later = setTimeout(refresh, 1500);
  });
})();
