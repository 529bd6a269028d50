// The search page of vmkit's course website: the words of ?q= looked up in the prebuilt
// index (search-index.js sets window.VMKIT_SEARCH_INDEX: one {title, url, text} per page).
// A page matches when it holds every word; pages with the words in their title come first.
(function () {
  "use strict";
  var params = new URLSearchParams(window.location.search);
  var query = (params.get("q") || "").trim();
  var box = document.getElementById("vmkit-search-query");
  var out = document.getElementById("vmkit-search-results");
  if (box) box.value = query;
  if (!out) return;
  function escape(text) {
    return text.replace(/[&<>"']/g, function (c) {
      return {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c];
    });
  }
  function snippet(text, word) {
    var at = text.toLowerCase().indexOf(word);
    var start = Math.max(0, at - 80);
    var piece = (start > 0 ? "…" : "") + text.slice(start, at + 160) + "…";
    var safe = escape(piece);
    var re = new RegExp("(" + word.replace(/[.*+?^${}()|[\]\\]/g, "\\$&") + ")", "ig");
    return safe.replace(re, "<mark>$1</mark>");
  }
  var words = query.toLowerCase().split(/\s+/).filter(Boolean);
  if (!words.length) {
    out.innerHTML = "<p>Type words to look for in the lectures, exercises and docs.</p>";
    return;
  }
  var hits = [];
  (window.VMKIT_SEARCH_INDEX || []).forEach(function (page) {
    var text = page.text.toLowerCase(), title = page.title.toLowerCase();
    if (!words.every(function (w) { return text.indexOf(w) >= 0 || title.indexOf(w) >= 0; }))
      return;
    var score = 0;
    words.forEach(function (w) {
      if (title.indexOf(w) >= 0) score += 100;
      score += Math.min(50, text.split(w).length - 1);
    });
    hits.push({page: page, score: score});
  });
  hits.sort(function (a, b) { return b.score - a.score || a.page.url.localeCompare(b.page.url); });
  var html = "<p>" + hits.length + " page" + (hits.length === 1 ? "" : "s") + " with “"
    + escape(query) + "”.</p><ol class=\"vmkit-search-results\">";
  hits.forEach(function (hit) {
    html += "<li><a href=\"" + escape(hit.page.url) + "\">" + escape(hit.page.title) + "</a>"
      + "<div class=\"vmkit-search-snippet\">" + snippet(hit.page.text, words[0]) + "</div></li>";
  });
  out.innerHTML = html + "</ol>";
})();
