// The live page (docs/dashboard.md, "Live"): polls the analytics function's /api/live/<stream_id>
// every few seconds and updates the tiles, the per-minute charts, the slot on stage, trending and
// sold-out items in place. No library, no inline script (the CSP allows only this file), every value
// written with textContent. When Bigtable is down (available: false) or a poll fails, the page says
// so, keeps the last numbers and polls on with a growing delay (at most 30 s), never in a tight loop.
(function () {
  "use strict";
  var root = document.getElementById("live");
  if (!root) return;
  var api = root.dataset.api;
  var tz = root.dataset.tz || "UTC";
  var every = Math.max(1000, parseFloat(root.dataset.poll || "3") * 1000);
  var MAX_DELAY = 30000;
  var SVG = "http://www.w3.org/2000/svg";
  var num = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
  var money = new Intl.NumberFormat("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
  var hms = new Intl.DateTimeFormat("en-GB", { timeZone: tz, hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
  var hm = new Intl.DateTimeFormat("en-GB", { timeZone: tz, hour: "2-digit", minute: "2-digit", hour12: false });
  var ymdhm = new Intl.DateTimeFormat("sv-SE", { timeZone: tz, year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", hour12: false });

  function set(id, value) {
    var el = document.getElementById(id);
    if (el && el.textContent !== value) el.textContent = value;
  }
  function n(v) { return v === null || v === undefined ? "–" : num.format(v); }
  function pct(v) { return v === null || v === undefined ? "–" : (v * 100).toFixed(1) + "%"; }
  function time(fmt, iso) { return iso ? fmt.format(new Date(iso)) : ""; }
  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined) e.textContent = text;
    if (cls) e.className = cls;
    return e;
  }
  function replace(id, children) {
    var box = document.getElementById(id);
    if (!box) return;
    box.replaceChildren.apply(box, children);
  }

  // one bar per minute; the y axis from 0 to the series' maximum; first/last minute on the x axis
  function bars(figId, minutes, key, cls, label) {
    var fig = document.getElementById(figId);
    if (!fig) return;
    var W = 600, H = 170, L = 48, B = 22, T = 8;
    var svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", "0 0 " + W + " " + H);
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", label);
    var max = 0;
    minutes.forEach(function (m) { max = Math.max(max, m[key] || 0); });
    var g = document.createElementNS(SVG, "g");
    g.setAttribute("class", "marks");
    var w = (W - L) / Math.max(minutes.length, 1);
    minutes.forEach(function (m, i) {
      var v = m[key] || 0;
      var h = max > 0 ? (v / max) * (H - B - T) : 0;
      var r = document.createElementNS(SVG, "rect");
      r.setAttribute("class", "bar " + cls);
      r.setAttribute("x", (L + i * w + w * 0.1).toFixed(1));
      r.setAttribute("width", Math.max(w * 0.8, 0.5).toFixed(1));
      r.setAttribute("y", (H - B - h).toFixed(1));
      r.setAttribute("height", h.toFixed(1));
      var tip = document.createElementNS(SVG, "title");
      tip.textContent = time(hm, m.minute) + " " + (key === "gmv" ? "¥" + money.format(v) : n(v));
      r.appendChild(tip);
      g.appendChild(r);
    });
    svg.appendChild(g);
    function text(x, y, s, anchor) {
      var t = document.createElementNS(SVG, "text");
      t.setAttribute("class", "axis");
      t.setAttribute("x", x);
      t.setAttribute("y", y);
      t.setAttribute("text-anchor", anchor);
      t.textContent = s;
      svg.appendChild(t);
    }
    text(L - 4, T + 10, key === "gmv" ? "¥" + num.format(max) : n(max), "end");
    text(L - 4, H - B, "0", "end");
    if (minutes.length) {
      text(L, H - 6, time(hm, minutes[0].minute), "start");
      text(W, H - 6, time(hm, minutes[minutes.length - 1].minute) + " " + tz, "end");
    }
    fig.replaceChildren(svg);
    fig.dataset.count = String(minutes.length);
  }

  function apply(doc) {
    var t = doc.tiles || {};
    var info = doc.info || {};
    set("tile-viewers_now", n(t.viewers_now));
    set("tile-entries", n(t.entries));
    set("tile-gmv", t.gmv === null || t.gmv === undefined ? "–" : "¥" + money.format(t.gmv));
    set("tile-orders", n(t.orders));
    set("tile-units", n(t.units));
    set("tile-conversion", pct(t.conversion));
    set("live-title", info.title || doc.stream_id);
    set("live-host", info.host_name || info.host_id || "–");
    set("live-started", time(ymdhm, info.started_at));
    set("live-asof", time(hms, doc.as_of));
    var onair = document.getElementById("live-onair");
    if (onair) {
      var kids = doc.on_air ? [el("span", undefined, "live-dot"), document.createTextNode("直播中 on air")] : [document.createTextNode("已结束 ended")];
      onair.replaceChildren.apply(onair, kids);
    }
    var minutes = doc.minutes || [];
    bars("chart-viewers", minutes, "viewers", "v", "viewers per minute");
    bars("chart-gmv", minutes, "gmv", "", "GMV per minute");
    var o = doc.on_stage;
    if (o) {
      var head = el("p");
      var name = el("b", o.title || o.item_id);
      name.id = "stage-item";
      head.append(name, " ", el("span", o.item_id + (o.price !== null && o.price !== undefined ? " · ¥" + money.format(o.price) : "") + " · since " + time(hm, o.started_at) + (o.sold_out ? " · 售罄 sold out" : ""), "muted"));
      var sales = el("p", "本讲解 this slot: ");
      var so = el("b", n(o.sales.orders)); so.id = "stage-orders";
      var su = el("b", n(o.sales.units)); su.id = "stage-units";
      var sg = el("b", money.format(o.sales.gmv)); sg.id = "stage-gmv";
      sales.append(so, " orders · ", su, " units · ¥", sg);
      replace("on-stage", [head, sales]);
    } else {
      replace("on-stage", [el("p", "没有讲解中的商品 — no item on stage", "muted")]);
    }
    replace("trending", (doc.trending || []).map(function (x) {
      var li = el("li", (x.title || x.item_id) + " · " + n(x.orders) + " orders · ¥" + money.format(x.gmv) + " ");
      var rise = el("span", (x.rise >= 0 ? "▲ " : "▼ ") + Math.round(Math.abs(x.rise) * 100) + "%", x.rise >= 0 ? "up" : "down");
      li.appendChild(rise);
      if (x.sold_out) li.append(" · 售罄");
      return li;
    }));
    replace("sold-out", (doc.sold_out || []).map(function (x) {
      var li = el("li", (x.title || x.item_id) + " ");
      li.appendChild(el("span", x.item_id, "muted"));
      return li;
    }));
    root.dataset.asOf = doc.as_of;
  }

  function status(ok, message) {
    var box = document.getElementById("live-status");
    if (!box) return;
    box.dataset.state = ok ? "ok" : "unavailable";
    box.hidden = ok;
    if (!ok) set("live-status", message + " — showing the last numbers received; retrying.");
  }

  var delay = every;
  function poll() {
    fetch(api, { credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" } })
      .then(function (r) {
        if (r.status !== 200) throw new Error("HTTP " + r.status);
        return r.json();
      })
      .then(function (doc) {
        if (doc.available) {
          apply(doc);
          status(true, "");
          delay = every;
        } else {
          status(false, doc.message || "实时数据暂不可用 live data unavailable");
          delay = Math.min(delay * 2, MAX_DELAY);
        }
      })
      .catch(function (err) {
        status(false, "实时数据暂不可用 live data unavailable (" + err.message + ")");
        delay = Math.min(delay * 2, MAX_DELAY);
      })
      .finally(function () {
        root.dataset.polls = String((parseInt(root.dataset.polls, 10) || 0) + 1);
        setTimeout(poll, delay);
      });
  }
  poll();
})();
