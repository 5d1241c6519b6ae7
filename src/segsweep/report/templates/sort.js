// Sortable tables: click a column header to sort by it (again to reverse). Cells may carry data-sort with
// a number; empty keys (statuses such as "diverged") always sort last. No network, no dependencies.
(function () {
  "use strict";
  function key(cell) {
    if (!cell) { return null; }
    var raw = cell.hasAttribute("data-sort") ? cell.getAttribute("data-sort") : cell.textContent.trim();
    if (raw === "" || raw === "None") { return null; }
    var num = Number(raw);
    return isNaN(num) ? raw.toLowerCase() : num;
  }
  function sortBy(table, col, th) {
    var body = table.tBodies[0];
    if (!body) { return; }
    var dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a.cells[col]), y = key(b.cells[col]);
      if (x === null && y === null) { return 0; }
      if (x === null) { return 1; }
      if (y === null) { return -1; }
      if (typeof x !== typeof y) { x = String(x); y = String(y); }
      return x < y ? -dir : x > y ? dir : 0;
    });
    rows.forEach(function (r) { body.appendChild(r); });
    Array.prototype.forEach.call(table.querySelectorAll("thead th"), function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", dir === 1 ? "ascending" : "descending");
  }
  function columnIndex(th) {
    // the header row nearest the body holds one header per body column
    var idx = 0, el = th.previousElementSibling;
    while (el) { idx += el.colSpan || 1; el = el.previousElementSibling; }
    return idx;
  }
  document.addEventListener("DOMContentLoaded", function () {
    Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
      var head = table.tHead;
      if (!head || !head.rows.length) { return; }
      var last = head.rows[head.rows.length - 1];
      var offset = 0;
      if (head.rows.length > 1) {  // leading row headers spanning both header rows
        Array.prototype.forEach.call(head.rows[0].cells, function (c) { if (c.rowSpan > 1) { offset += 1; } });
      }
      var targets = Array.prototype.slice.call(last.cells).map(function (th) {
        return { th: th, col: columnIndex(th) + offset };
      });
      if (head.rows.length > 1) {
        Array.prototype.forEach.call(head.rows[0].cells, function (c, i) {
          if (c.rowSpan > 1) { targets.push({ th: c, col: i }); }
        });
      }
      targets.forEach(function (t) {
        t.th.setAttribute("tabindex", "0");
        t.th.setAttribute("title", "sort by this column");
        t.th.addEventListener("click", function () { sortBy(table, t.col, t.th); });
        t.th.addEventListener("keydown", function (e) {
          if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortBy(table, t.col, t.th); }
        });
      });
    });
  });
})();
