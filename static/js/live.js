/* Switchyard live pages: no framework, no build.
 *
 * A workspace page carries data-ws, data-seq (the last event its content reflects) and data-now
 * (the server's clock) on <body>. Regions marked data-live="name" data-on="type.prefix ..." are
 * re-fetched from the same URL with ?fragment=name when a matching event arrives, so all markup
 * comes from the server, escaped there. Events come from the workspace's WebSocket, replayed
 * from data-seq; a gap in seq is refilled from GET /api/v1/workspaces/{ws}/events?after=.
 * <time data-countdown datetime="..."> elements count down once a second.
 */
(function () {
  "use strict";

  var body = document.body;
  var ws = body.dataset.ws;
  var last = parseInt(body.dataset.seq || "0", 10) || 0;
  var serverNow = Date.parse(body.dataset.now || "");
  var skew = isNaN(serverNow) ? 0 : serverNow - Date.now();
  var regions = [];
  var pending = new Map();
  var queue = Promise.resolve();
  var socket = null;
  var retries = 0;
  var stopped = false;

  // -- countdowns ---------------------------------------------------------------------------------
  function pad(n) { return n < 10 ? "0" + n : String(n); }

  function duration(seconds) {
    seconds = Math.max(0, Math.floor(seconds));
    if (seconds < 60) return seconds + " s";
    var minutes = Math.floor(seconds / 60);
    if (minutes < 60) return minutes + " min " + pad(seconds % 60) + " s";
    var hours = Math.floor(minutes / 60);
    if (hours < 48) return hours + " h " + pad(minutes % 60) + " min";
    return Math.floor(hours / 24) + " days";
  }

  function tick() {
    var now = Date.now() + skew;
    var clocks = document.querySelectorAll("time[data-countdown]");
    for (var i = 0; i < clocks.length; i++) {
      var until = Date.parse(clocks[i].getAttribute("datetime"));
      if (isNaN(until)) continue;
      var left = (until - now) / 1000;
      var text = left <= 0 ? "expired" : duration(left) + " left";
      if (clocks[i].textContent !== text) clocks[i].textContent = text;
    }
  }

  // -- status ---------------------------------------------------------------------------------------
  function setStatus(state, text) {
    body.dataset.live = state;
    var el = document.getElementById("live-status");
    if (el) el.textContent = text;
  }

  // -- regions ----------------------------------------------------------------------------------------
  function matches(region, ev) {
    var on = (region.dataset.on || "").split(/\s+/);
    var hit = false;
    for (var i = 0; i < on.length && !hit; i++) {
      hit = on[i] !== "" && (on[i] === "*" || ev.type === on[i] || ev.type.indexOf(on[i]) === 0);
    }
    if (!hit) return false;
    var path = region.dataset.path;
    if (path === undefined) return true;
    var data = ev.data || {};
    var targets = [ev.target, data.path, data.from, data.to];
    for (var j = 0; j < targets.length; j++) {
      var t = targets[j];
      if (typeof t !== "string") continue;
      if (t === path || (t.charAt(t.length - 1) === "/" && path.indexOf(t) === 0)) return true;
    }
    return false;
  }

  function schedule(region) {
    if (region.hasAttribute("data-frozen")) return;
    var st = pending.get(region);
    if (!st) { st = { timer: null, busy: false, again: false }; pending.set(region, st); }
    if (st.busy) { st.again = true; return; }
    if (st.timer === null) st.timer = setTimeout(function () { refresh(region, st); }, 120);
  }

  function refresh(region, st) {
    st.timer = null;
    st.busy = true;
    var url = new URL(window.location.href);
    url.hash = "";
    url.searchParams.set("fragment", region.dataset.live);
    fetch(url.toString(), { credentials: "same-origin", redirect: "manual", headers: { "X-Requested-With": "fetch" } })
      .then(function (response) {
        if (response.type === "opaqueredirect") {
          stop("Signed out: reload the page to sign in again.");
          return null;
        }
        if (response.status === 403 || response.status === 404) {
          stop("You no longer have access to this workspace.");
          return null;
        }
        return response.ok ? response.text() : null;
      })
      .then(function (html) { if (html !== null) swap(region, html); })
      .catch(function () { /* offline: the next event or reconnect refreshes again */ })
      .then(function () {
        st.busy = false;
        if (st.again) { st.again = false; schedule(region); }
      });
  }

  // Replace a region's markup, keeping what the person was doing in it: text typed into a field,
  // the field that had focus, and which <details> they opened or closed.
  function swap(region, html) {
    var typed = {};
    var fields = region.querySelectorAll("input[id], textarea[id], select[id]");
    for (var i = 0; i < fields.length; i++) {
      var f = fields[i];
      if (f.type === "hidden") continue;
      if (f.tagName === "SELECT") {
        var changed = false;
        for (var k = 0; k < f.options.length; k++) changed = changed || f.options[k].selected !== f.options[k].defaultSelected;
        if (changed) typed[f.id] = f.value;
      } else if (f.type === "checkbox" || f.type === "radio") {
        if (f.checked !== f.defaultChecked) typed[f.id] = f.checked;
      } else if (f.value !== f.defaultValue) {
        typed[f.id] = f.value;
      }
    }
    var active = document.activeElement;
    var focusId = active && active.id && region.contains(active) ? active.id : null;
    var selection = null;
    if (focusId && typeof active.selectionStart === "number") selection = [active.selectionStart, active.selectionEnd];
    var opened = {};
    var details = region.querySelectorAll("details[data-key]");
    for (var d = 0; d < details.length; d++) opened[details[d].dataset.key] = details[d].open;

    region.innerHTML = html;

    Object.keys(typed).forEach(function (id) {
      var el = document.getElementById(id);
      if (!el || !region.contains(el)) return;
      if (el.type === "checkbox" || el.type === "radio") el.checked = typed[id]; else el.value = typed[id];
    });
    var fresh = region.querySelectorAll("details[data-key]");
    for (var e = 0; e < fresh.length; e++) {
      var key = fresh[e].dataset.key;
      if (Object.prototype.hasOwnProperty.call(opened, key)) fresh[e].open = opened[key];
    }
    if (focusId) {
      var target = document.getElementById(focusId);
      if (target && region.contains(target)) {
        target.focus({ preventScroll: true });
        if (selection && typeof target.setSelectionRange === "function") {
          try { target.setSelectionRange(selection[0], selection[1]); } catch (err) { /* not a text field */ }
        }
      }
    }
    tick();
  }

  // -- events -------------------------------------------------------------------------------------------
  function apply(ev) {
    last = ev.seq;
    body.dataset.lastSeq = String(last);
    for (var i = 0; i < regions.length; i++) if (matches(regions[i], ev)) schedule(regions[i]);
  }

  // Fetch the events between `last` and `upTo` (exclusive) that the stream skipped.
  function refill(upTo) {
    var url = "/api/v1/workspaces/" + encodeURIComponent(ws) + "/events?limit=500&after=" + last;
    return fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (page) {
        if (!page || !page.results || !page.results.length) return;
        var advanced = false;
        page.results.forEach(function (ev) {
          if (ev.seq > last && ev.seq < upTo) { apply(ev); advanced = true; }
        });
        if (advanced && page.next && last < upTo - 1) return refill(upTo);
      })
      .catch(function () { /* the event itself still triggers a refresh of the full state */ });
  }

  function handle(ev) {
    if (ev.seq <= last) return null;
    var gap = ev.seq > last + 1 ? refill(ev.seq) : Promise.resolve();
    return gap.then(function () { if (ev.seq > last) apply(ev); });
  }

  function connect() {
    if (stopped) return;
    var scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
    var url = scheme + "//" + window.location.host + "/ws/workspaces/" + encodeURIComponent(ws) + "/events/?after=" + last;
    setStatus("connecting", retries ? "Reconnecting…" : "Connecting…");
    socket = new WebSocket(url);
    socket.onopen = function () { retries = 0; setStatus("live", "Live"); };
    socket.onmessage = function (message) {
      var ev;
      try { ev = JSON.parse(message.data); } catch (err) { return; }
      if (!ev || typeof ev.seq !== "number" || typeof ev.type !== "string" || ev.type === "pong") return;
      queue = queue.then(function () { return handle(ev); });
    };
    socket.onclose = function () {
      socket = null;
      if (stopped) return;
      retries += 1;
      setStatus("connecting", "Reconnecting…");
      setTimeout(connect, Math.min(30000, 500 * Math.pow(2, Math.min(retries, 6))) * (0.5 + Math.random() / 2));
    };
  }

  function stop(reason) {
    stopped = true;
    if (socket) socket.close();
    setStatus("offline", reason);
  }

  // A region whose contents grow with time alone (a running step's bar) while nothing happens asks to
  // be re-fetched every data-every seconds, for as long as it holds a [data-running] element.
  function poll() {
    var now = Date.now();
    regions.forEach(function (region) {
      var every = parseFloat(region.dataset.every || "0") * 1000;
      if (!every || !region.querySelector("[data-running]")) return;
      var due = parseFloat(region.dataset.polled || "0") + every;
      if (now >= due) { region.dataset.polled = String(now); schedule(region); }
    });
  }

  // -- start ----------------------------------------------------------------------------------------------
  tick();
  setInterval(function () { tick(); poll(); }, 1000);
  if (ws) {
    regions = Array.prototype.slice.call(document.querySelectorAll("[data-live]"));
    regions.forEach(function (region) { if (region.hasAttribute("data-lazy")) schedule(region); });
    if ("WebSocket" in window) {
      connect();
      setInterval(function () { if (socket && socket.readyState === 1) socket.send("ping"); }, 25000);
    }
  }
})();
