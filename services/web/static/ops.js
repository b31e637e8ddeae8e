// The console's live pages: the server says which request changed (server-sent events from /ops/events), and
// the page asks again for what it shows of it. That comes from intake, which learns of the matcher's news a moment
// after this page does, so each burst of news is followed by a second look a little later.
(function () {
  var status = document.querySelector("[data-live]");
  if (!status || !window.EventSource) { return; }
  var regions = document.querySelectorAll("[data-refresh]");
  var soon = null, later = null;
  var due = [];
  function refresh() {
    var now = due;
    due = [];
    now.forEach(function (region) {
      fetch(region.getAttribute("data-refresh"), { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (answer) { return answer.ok ? answer.text() : null; })
        .then(function (html) { if (html !== null) { region.innerHTML = html; } })
        .catch(function () { /* the next event or the reconnect looks again */ });
    });
  }
  // A region about one request (data-about) is asked again only for news of that request.
  function concerned(news) {
    return Array.prototype.filter.call(regions, function (region) {
      var about = region.getAttribute("data-about");
      return !about || about === news.request_id;
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
  source.addEventListener("changed", function (message) {
    var news = {};
    try { news = JSON.parse(message.data); } catch (e) { /* an unreadable message changes nothing */ }
    var regionsNow = concerned(news);
    if (!regionsNow.length) { return; }
    clearTimeout(soon);
    clearTimeout(later);
    function again() {
      regionsNow.forEach(function (region) { if (due.indexOf(region) < 0) { due.push(region); } });
      refresh();
    }
    soon = setTimeout(again, 200);
    later = setTimeout(again, 1500);
  });
})();
