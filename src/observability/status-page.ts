/**
 * The live status page (`GET /` on the admin listener): one self-contained HTML document
 * (inline CSS and JS, nothing loaded from elsewhere) that polls `/status` every 2 s and
 * shows every upstream's servers: state, weight, active connections, requests per second
 * with a sparkline of the last minute, error rate, and the sticky hit ratio; then, when
 * `/status` lists any, the TLS certificates in use with their expiry (rows expiring within
 * 14 days or expired are highlighted).
 *
 * Rates are computed in the browser from the counters in /status (`requests`, `failures`
 * per server; `sticky.lookups` / `sticky.hits` per upstream when sessions are on), so the
 * balancer keeps no per-page state. With an admin token, open the page as `/#token=...`
 * (the fragment never leaves the browser) or type it when asked.
 */
export const STATUS_PAGE_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>sessionlb status</title>
<style>
  :root { --bg:#f6f7f9; --card:#fff; --ink:#1d2330; --muted:#6b7280; --line:#e5e7eb;
          --up:#15803d; --drain:#b45309; --bad:#b91c1c; --maint:#6d28d9; --down:#4b5563; --spark:#2563eb; }
  * { box-sizing: border-box; }
  body { margin:0; font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif; background:var(--bg); color:var(--ink); }
  header { display:flex; flex-wrap:wrap; align-items:baseline; gap:4px 18px; padding:14px 22px; background:#111827; color:#f9fafb; }
  header h1 { margin:0; font-size:18px; letter-spacing:.3px; }
  header .meta { color:#cbd5e1; font-size:12.5px; }
  #conn { margin-left:auto; font-size:12.5px; }
  #conn.ok::before, #conn.err::before { content:""; display:inline-block; width:8px; height:8px; border-radius:50%; margin-right:6px; }
  #conn.ok::before { background:#22c55e; } #conn.err::before { background:#ef4444; }
  main { padding:18px 22px; display:grid; gap:18px; }
  section.upstream { background:var(--card); border:1px solid var(--line); border-radius:8px; overflow:hidden; }
  section.upstream > h2 { margin:0; padding:10px 14px; font-size:15px; display:flex; flex-wrap:wrap; gap:6px 18px; align-items:baseline; border-bottom:1px solid var(--line); }
  h2 .sub { font-weight:400; color:var(--muted); font-size:12.5px; }
  table { width:100%; border-collapse:collapse; }
  th, td { padding:7px 14px; text-align:left; white-space:nowrap; border-bottom:1px solid var(--line); }
  th { font-size:11.5px; text-transform:uppercase; letter-spacing:.4px; color:var(--muted); font-weight:600; background:#fafafa; }
  td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; }
  tr:last-child td { border-bottom:0; }
  .badge { display:inline-block; min-width:74px; text-align:center; padding:2px 8px; border-radius:999px; font-size:12px; font-weight:600; color:#fff; }
  .s-up { background:var(--up); } .s-drain { background:var(--drain); } .s-unhealthy, .s-failed { background:var(--bad); }
  .s-maint { background:var(--maint); } .s-down { background:var(--down); }
  .backup { font-size:11px; color:var(--muted); margin-left:6px; }
  .err { color:var(--bad); font-weight:600; }
  svg.spark { vertical-align:middle; margin-left:8px; }
  .muted { color:var(--muted); }
  #tokenbox { display:none; padding:16px 22px; }
  #tokenbox input { font:inherit; padding:5px 8px; width:320px; }
  #empty { color:var(--muted); }
  .s-ok { background:var(--up); } .s-expiring { background:var(--drain); } .s-expired { background:var(--bad); }
  tr.c-expiring td { background:#fef3c7; } tr.c-expired td { background:#fee2e2; }
</style>
</head>
<body>
<header>
  <h1>sessionlb</h1>
  <span class="meta" id="meta">loading…</span>
  <span id="conn">connecting</span>
</header>
<form id="tokenbox">
  <label>Admin token: <input id="token" type="password" autocomplete="off"></label>
  <button type="submit">Use</button>
</form>
<main id="main"><p id="empty">Waiting for /status…</p></main>
<script>
(function () {
  "use strict";
  var INTERVAL = 2000, WINDOW = 60000;
  var history = {};      // "upstream|server" -> [{t, requests, failures}]
  var stickyHist = {};   // upstream -> [{t, lookups, hits}]
  var token = "";
  var m = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (m) token = decodeURIComponent(m[1]);
  else { try { token = sessionStorage.getItem("sessionlb-token") || ""; } catch (e) {} }

  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    if (attrs) for (var k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function fmtRate(x) { return x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2); }
  function pct(x) { return x === 0 ? "0%" : x === 1 ? "100%" : (x * 100).toFixed(x < 0.001 ? 3 : 1) + "%"; }

  function push(list, point) {
    list.push(point);
    while (list.length > 2 && point.t - list[0].t > WINDOW + INTERVAL) list.shift();
  }
  // Requests per second between consecutive samples.
  function rates(list, key) {
    var out = [];
    for (var i = 1; i < list.length; i++) {
      var dt = (list[i].t - list[i - 1].t) / 1000;
      var d = list[i][key] - list[i - 1][key];
      out.push(dt > 0 && d >= 0 ? d / dt : 0);
    }
    return out;
  }
  // Change of two counters over the whole window (oldest sample to newest).
  function windowDelta(list, a, b) {
    if (list.length < 2) return null;
    var first = list[0], last = list[list.length - 1];
    return [last[a] - first[a], last[b] - first[b]];
  }

  var SVGNS = "http://www.w3.org/2000/svg";
  function sparkline(values) {
    var w = 120, h = 24, n = 30;
    var svg = document.createElementNS(SVGNS, "svg");
    svg.setAttribute("class", "spark"); svg.setAttribute("width", w); svg.setAttribute("height", h);
    svg.setAttribute("viewBox", "0 0 " + w + " " + h);
    svg.setAttribute("aria-label", "requests per second, last minute");
    var v = values.slice(-n), max = 0;
    for (var i = 0; i < v.length; i++) if (v[i] > max) max = v[i];
    var pts = [];
    for (var j = 0; j < v.length; j++) {
      var x = w - (v.length - 1 - j) * (w / (n - 1));
      var y = h - 2 - (max > 0 ? (v[j] / max) * (h - 4) : 0);
      pts.push(x.toFixed(1) + "," + y.toFixed(1));
    }
    var base = document.createElementNS(SVGNS, "line");
    base.setAttribute("x1", 0); base.setAttribute("x2", w); base.setAttribute("y1", h - 1.5); base.setAttribute("y2", h - 1.5);
    base.setAttribute("stroke", "#e5e7eb"); svg.appendChild(base);
    if (pts.length > 1) {
      var area = document.createElementNS(SVGNS, "polygon");
      area.setAttribute("points", pts[0].split(",")[0] + "," + (h - 1.5) + " " + pts.join(" ") + " " + pts[pts.length - 1].split(",")[0] + "," + (h - 1.5));
      area.setAttribute("fill", "rgba(37,99,235,.12)"); area.setAttribute("stroke", "none");
      svg.appendChild(area);
      var line = document.createElementNS(SVGNS, "polyline");
      line.setAttribute("points", pts.join(" ")); line.setAttribute("fill", "none");
      line.setAttribute("stroke", "var(--spark)"); line.setAttribute("stroke-width", "1.5");
      svg.appendChild(line);
    }
    return svg;
  }

  function render(doc) {
    var now = Date.now();
    var meta = "pid " + doc.pid;
    if (doc.startedAt) meta += " · up since " + new Date(doc.startedAt).toLocaleString();
    if (doc.config) meta += " · " + doc.config;
    if (doc.reloads) meta += " · reloads " + doc.reloads.success + " ok / " + doc.reloads.failure + " failed";
    document.getElementById("meta").textContent = meta;
    var main = document.getElementById("main");
    main.textContent = "";
    var names = Object.keys(doc.upstreams || {});
    if (names.length === 0) main.appendChild(el("p", { id: "empty" }, "No upstreams configured."));
    names.forEach(function (name) {
      var up = doc.upstreams[name];
      var sec = el("section", { "class": "upstream", "data-upstream": name });
      var h2 = el("h2", null, name);
      var totalRate = 0;
      var tbody = el("tbody");
      (up.servers || []).forEach(function (s) {
        var key = name + "|" + s.address;
        var list = history[key] || (history[key] = []);
        push(list, { t: now, requests: s.requests || 0, failures: s.failures || 0 });
        var r = rates(list, "requests");
        var rate = r.length ? r[r.length - 1] : 0;
        totalRate += rate;
        var d = windowDelta(list, "requests", "failures");
        var tr = el("tr", { "data-server": s.address, "data-state": s.state });
        var td = el("td"); td.appendChild(document.createTextNode(s.address));
        if (s.backup) td.appendChild(el("span", { "class": "backup" }, "backup"));
        tr.appendChild(td);
        td = el("td"); td.appendChild(el("span", { "class": "badge s-" + s.state }, s.state)); tr.appendChild(td);
        // In use (effective / in use while failures or slow start lower it), and the config's weight when the admin API changed it.
        var w = s.effectiveWeight !== undefined && s.effectiveWeight !== s.weight ? s.effectiveWeight + " / " + s.weight : String(s.weight);
        if (s.configWeight !== undefined && s.configWeight !== s.weight) w += " (config " + s.configWeight + ")";
        tr.appendChild(el("td", { "class": "num" }, w));
        tr.appendChild(el("td", { "class": "num" }, String(s.active)));
        td = el("td", { "class": "num rps" }); td.appendChild(document.createTextNode(fmtRate(rate))); td.appendChild(sparkline(r)); tr.appendChild(td);
        var errText = "–", errClass = "num";
        if (d && d[0] > 0) { var er = Math.max(0, d[1]) / d[0]; errText = pct(er); if (er > 0) errClass += " err"; }
        else if (d) errText = "0%";
        tr.appendChild(el("td", { "class": errClass }, errText));
        tr.appendChild(el("td", { "class": "num" }, s.sessions === null || s.sessions === undefined ? "–" : String(s.sessions)));
        var probe = s.lastProbe ? (s.lastProbe.ok ? "ok" : "fail") + " · " + s.lastProbe.detail : "–";
        tr.appendChild(el("td", { "class": s.lastProbe && !s.lastProbe.ok ? "err" : "muted" }, probe));
        tbody.appendChild(tr);
      });
      h2.appendChild(el("span", { "class": "sub" }, fmtRate(totalRate) + " req/s"));
      var hit = "–";
      if (up.sticky && typeof up.sticky.lookups === "number") {
        var sl = stickyHist[name] || (stickyHist[name] = []);
        push(sl, { t: now, lookups: up.sticky.lookups, hits: up.sticky.hits });
        var sd = windowDelta(sl, "lookups", "hits");
        if (sd && sd[0] > 0) hit = pct(sd[1] / sd[0]);
        else if (up.sticky.lookups > 0) hit = pct(up.sticky.hits / up.sticky.lookups);
      }
      h2.appendChild(el("span", { "class": "sub sticky" }, "sticky hit ratio " + hit));
      if (up.balance) h2.appendChild(el("span", { "class": "sub" }, up.balance));
      sec.appendChild(h2);
      var table = el("table"), thead = el("thead"), hr = el("tr");
      [["server", ""], ["state", ""], ["weight", "num"], ["active", "num"], ["req/s (1 min)", "num"], ["errors (1 min)", "num"], ["sessions", "num"], ["last probe", ""]]
        .forEach(function (c) { hr.appendChild(el("th", c[1] ? { "class": c[1] } : null, c[0])); });
      thead.appendChild(hr); table.appendChild(thead); table.appendChild(tbody);
      sec.appendChild(table);
      main.appendChild(sec);
    });
    renderCertificates(main, doc.certificates);
  }

  // The TLS certificates in use (nothing when there are none: no ssl server).
  function renderCertificates(main, certs) {
    if (!certs || certs.length === 0) return;
    var sec = el("section", { "class": "upstream certificates" });
    var h2 = el("h2", null, "Certificates");
    var bad = certs.filter(function (c) { return c.state !== "ok"; }).length;
    h2.appendChild(el("span", { "class": "sub" }, certs.length + " in use" + (bad ? " · " + bad + " expiring or expired" : "")));
    sec.appendChild(h2);
    var table = el("table"), thead = el("thead"), hr = el("tr"), tbody = el("tbody");
    [["server", ""], ["listen", ""], ["certificate", ""], ["names", ""], ["expires", ""], ["days left", "num"], ["state", ""]]
      .forEach(function (c) { hr.appendChild(el("th", c[1] ? { "class": c[1] } : null, c[0])); });
    certs.forEach(function (c) {
      var tr = el("tr", { "data-certificate": c.file, "data-state": c.state, "class": "c-" + c.state });
      tr.appendChild(el("td", null, c.server));
      tr.appendChild(el("td", null, c.address));
      tr.appendChild(el("td", null, c.file));
      var names = (c.names || []).slice();
      if (c.commonName && names.indexOf(c.commonName.toLowerCase()) < 0) names.unshift("CN=" + c.commonName);
      tr.appendChild(el("td", null, names.join(", ") || "–"));
      tr.appendChild(el("td", { title: c.notAfter }, c.notAfter.replace("T", " ").replace(/\\.\\d+Z$/, " UTC")));
      tr.appendChild(el("td", { "class": "num" }, String(c.daysLeft)));
      var td = el("td"); td.appendChild(el("span", { "class": "badge s-" + c.state }, c.state)); tr.appendChild(td);
      tbody.appendChild(tr);
    });
    thead.appendChild(hr); table.appendChild(thead); table.appendChild(tbody);
    sec.appendChild(table);
    main.appendChild(sec);
  }

  function setConn(ok, text) {
    var c = document.getElementById("conn");
    c.className = ok ? "ok" : "err";
    c.textContent = text;
  }

  function poll() {
    var headers = { "Accept": "application/json" };
    if (token) headers["Authorization"] = "Bearer " + token;
    fetch("status", { headers: headers, cache: "no-store" }).then(function (res) {
      if (res.status === 401) {
        document.getElementById("tokenbox").style.display = "block";
        throw new Error("admin token needed");
      }
      if (!res.ok) throw new Error("/status answered " + res.status);
      return res.json();
    }).then(function (doc) {
      render(doc);
      setConn(true, "live · " + new Date().toLocaleTimeString());
    }).catch(function (err) {
      setConn(false, String(err.message || err));
    }).then(function () { setTimeout(poll, INTERVAL); });
  }

  document.getElementById("tokenbox").addEventListener("submit", function (e) {
    e.preventDefault();
    token = document.getElementById("token").value;
    try { sessionStorage.setItem("sessionlb-token", token); } catch (err) {}
    document.getElementById("tokenbox").style.display = "none";
  });
  poll();
})();
</script>
</body>
</html>
`;
