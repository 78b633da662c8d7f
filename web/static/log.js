// Follows a running attempt's log: the page holds the log so far, and
// server-sent events from the same URL bring the rest until the attempt
// ends. No inline script: the page's policy is default-src 'self'.
(function () {
  "use strict";
  var pre = document.getElementById("log");
  var live = document.getElementById("live");
  if (!pre || !pre.dataset.stream || !window.EventSource) { return; }
  var src = new EventSource(pre.dataset.stream);
  var atEnd = function () {
    return window.innerHeight + window.scrollY >= document.body.offsetHeight - 40;
  };
  src.addEventListener("log", function (e) {
    var follow = atEnd();
    pre.appendChild(document.createTextNode(JSON.parse(e.data)));
    if (follow) { window.scrollTo(0, document.body.scrollHeight); }
  });
  src.addEventListener("end", function () {
    src.close();
    if (live) { live.textContent = "the attempt has ended; reload for its outcome"; live.className = "ended"; }
  });
})();
