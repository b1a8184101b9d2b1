// Fetches the page again every data-refresh seconds and swaps in its content; without
// this script the page is the same, only not refreshed.
(function () {
  "use strict";
  var seconds = Number(document.body.getAttribute("data-refresh")) || 30;
  function refresh() {
    fetch(location.href, { headers: { Accept: "text/html" }, cache: "no-cache" })
      .then(function (answer) { return answer.ok ? answer.text() : null; })
      .then(function (text) {
        if (!text) { return; }
        var fresh = new DOMParser().parseFromString(text, "text/html").querySelector("main");
        var shown = document.querySelector("main");
        if (fresh && shown && fresh.innerHTML !== shown.innerHTML) { shown.innerHTML = fresh.innerHTML; }
      })
      .catch(function () {})
      .then(function () { setTimeout(refresh, Math.max(seconds, 5) * 1000); });
  }
  setTimeout(refresh, Math.max(seconds, 5) * 1000);
})();
