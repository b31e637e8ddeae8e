// A kiosk page goes back to its first screen after the idle time set on <body data-idle>, forgetting what
// was typed: nothing of an unfinished request is kept anywhere but in the page itself.
(function () {
  var idle = Number(document.body.getAttribute("data-idle") || 0);
  var home = document.body.getAttribute("data-home") || "/";
  if (!idle) { return; }
  var timer;
  function restart() {
    clearTimeout(timer);
    timer = setTimeout(function () {
      document.querySelectorAll("form").forEach(function (form) { form.reset(); });
      window.location.replace(home);
    }, idle * 1000);
  }
  ["pointerdown", "keydown", "input", "touchstart"].forEach(function (kind) {
    document.addEventListener(kind, restart, { passive: true });
  });
  restart();
})();
