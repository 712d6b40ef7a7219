// The operator console's page (flask_impulse/console.py): polls BASE/console/snapshot,
// draws the rates, subscribes with an EventSource and pushes through BASE/console/push.
// No framework and no build step; no inline code, so the page runs under a CSP of 'self'.
"use strict";

(function () {
  const POLL_MS = 1000;
  const MAX_RECEIVED = 200;
  const RECENT = 10;
  const body = document.body;
  const base = body.dataset.base;
  const consoleUrl = body.dataset.console;
  const $ = (id) => document.getElementById(id);
  let source = null;

  function setText(id, text, state) {
    const element = $(id);
    element.textContent = text;
    if (state !== undefined) {
      element.classList.toggle("bad", state === "bad");
      element.classList.toggle("good", state === "good");
    }
  }

  function formatRate(value) {
    if (value === undefined) return "-";
    return value >= 100 ? value.toFixed(0) : value.toFixed(1);
  }

  // -- the snapshot ----------------------------------------------------------------------
  async function poll() {
    try {
      const response = await fetch(consoleUrl + "/snapshot", { credentials: "same-origin", cache: "no-store" });
      if (response.status === 401 || response.status === 403) {
        setText("status", "session expired: open this page with ?token= again", "bad");
        return;
      }
      if (!response.ok) throw new Error("HTTP " + response.status);
      show(await response.json());
      const time = new Date().toLocaleTimeString();
      setText("status", "live, updated " + time, "good");
    } catch (error) {
      setText("status", "no answer: " + error.message, "bad");
    }
    setTimeout(poll, POLL_MS);
  }

  function show(snapshot) {
    const instance = snapshot.instance;
    setText("connections", String(instance.connections));
    setText("connections-note", instance.workers + " worker(s); " + snapshot.worker.connections + " on pid " + snapshot.worker.pid);
    const samples = snapshot.rates.samples;
    // The figures are the mean of the last RECENT samples: steadier than one second's.
    const recent = samples.slice(-RECENT);
    const mean = (name) => (recent.length ? recent.reduce((sum, sample) => sum + sample[name], 0) / recent.length : undefined);
    setText("push-rate", formatRate(mean("pushes")));
    setText("delivery-rate", formatRate(mean("deliveries")));
    setText("push-total", snapshot.totals.pushes + " in all");
    setText("delivery-total", snapshot.totals.deliveries + " in all");
    setText("drops", String(snapshot.totals.drops), snapshot.totals.drops ? "bad" : "");
    setText("drops-note", "streams closed: queue full");
    const backplane = snapshot.backplane;
    setText("backplane", backplane.kind + " " + backplane.status, backplane.status === "ok" ? "good" : "bad");
    setText("backplane-note", backplane.latencyMs !== undefined ? "ping " + backplane.latencyMs + " ms" : backplane.details || "");
    setText("drain", instance.draining ? "draining" : "serving", instance.draining ? "bad" : "good");
    setText("uptime", "worker up " + Math.round(snapshot.uptime) + " s");
    showChannels(snapshot);
    drawChart($("chart"), samples, snapshot.rates.interval);
  }

  function showChannels(snapshot) {
    const rows = $("channels").tBodies[0];
    rows.replaceChildren();
    for (const channel of snapshot.channels) {
      const row = rows.insertRow();
      row.insertCell().textContent = channel.channel;
      row.insertCell().textContent = String(channel.connections);
      const members = channel.members;
      row.insertCell().textContent = members === undefined ? "" : members === null ? "?" : String(members);
    }
    if (!snapshot.channels.length) {
      const cell = rows.insertRow().insertCell();
      cell.colSpan = 3;
      cell.textContent = "No open streams.";
    }
    const presence = snapshot.presence;
    setText("presence", presence ? "Presence on " + presence.patterns.join(", ") + " (members: distinct identities)" : "Presence is off (IMPULSE_PRESENCE_CHANNELS).");
  }

  // -- the chart: a canvas, axes in messages per second against seconds ago -----------------
  function niceCeiling(value) {
    if (value <= 1) return 1;
    const power = Math.pow(10, Math.floor(Math.log10(value)));
    for (const step of [1, 2, 5, 10]) {
      if (value <= step * power) return step * power;
    }
    return 10 * power;
  }

  function drawChart(canvas, samples, interval) {
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth;
    const height = canvas.clientHeight;
    if (canvas.width !== Math.round(width * ratio)) canvas.width = Math.round(width * ratio);
    if (canvas.height !== Math.round(height * ratio)) canvas.height = Math.round(height * ratio);
    const context = canvas.getContext("2d");
    context.setTransform(ratio, 0, 0, ratio, 0, 0);
    context.clearRect(0, 0, width, height);
    const left = 56, right = 12, top = 30, bottom = 34;
    const plotWidth = width - left - right;
    const plotHeight = height - top - bottom;
    const windowSeconds = 300;
    const now = samples.length ? samples[samples.length - 1].time : Date.now() / 1000;
    let peak = 0;
    for (const sample of samples) peak = Math.max(peak, sample.pushes, sample.deliveries);
    const yMax = niceCeiling(peak);
    const x = (time) => left + plotWidth * (1 - (now - time) / windowSeconds);
    const y = (value) => top + plotHeight * (1 - value / yMax);

    context.font = "12px system-ui, sans-serif";
    context.fillStyle = "#1d2430";
    context.textBaseline = "alphabetic";
    context.fillText("Messages per second, whole instance, last 5 minutes (1 s samples)", left, 16);
    // The axes, their ticks and units.
    context.strokeStyle = "#d8dde5";
    context.fillStyle = "#5b6575";
    context.lineWidth = 1;
    context.textAlign = "right";
    context.textBaseline = "middle";
    for (let tick = 0; tick <= 4; tick += 1) {
      const value = (yMax * tick) / 4;
      const position = Math.round(y(value)) + 0.5;
      context.beginPath();
      context.moveTo(left, position);
      context.lineTo(left + plotWidth, position);
      context.stroke();
      context.fillText(value % 1 ? value.toFixed(1) : String(value), left - 6, position);
    }
    context.save();
    context.translate(14, top + plotHeight / 2);
    context.rotate(-Math.PI / 2);
    context.textAlign = "center";
    context.fillText("messages / s", 0, 0);
    context.restore();
    context.textAlign = "center";
    context.textBaseline = "top";
    for (let minutes = 5; minutes >= 0; minutes -= 1) {
      const position = left + plotWidth * (1 - (minutes * 60) / windowSeconds);
      context.fillText(minutes ? "-" + minutes + " min" : "now", position, top + plotHeight + 6);
    }
    context.strokeStyle = "#5b6575";
    context.beginPath();
    context.moveTo(left + 0.5, top);
    context.lineTo(left + 0.5, top + plotHeight + 0.5);
    context.lineTo(left + plotWidth, top + plotHeight + 0.5);
    context.stroke();
    // The series, and their legend.
    const series = [["pushes", "#2563eb"], ["deliveries", "#d97706"]];
    series.forEach(([name, colour], index) => {
      context.strokeStyle = colour;
      context.lineWidth = 2;
      context.beginPath();
      samples.forEach((sample, position) => {
        const method = position ? "lineTo" : "moveTo";
        context[method](x(sample.time), y(sample[name]));
      });
      context.stroke();
      const legendX = left + plotWidth - 190 + index * 100;
      context.fillStyle = colour;
      context.fillRect(legendX, 8, 12, 3);
      context.fillStyle = "#1d2430";
      context.textAlign = "left";
      context.textBaseline = "middle";
      context.fillText(name + " / s", legendX + 16, 10);
    });
  }

  // -- subscribe -----------------------------------------------------------------------------
  function received(text, kind) {
    const list = $("received");
    const item = document.createElement("li");
    item.textContent = text;
    if (kind) item.className = kind;
    list.appendChild(item);
    while (list.children.length > MAX_RECEIVED) list.removeChild(list.firstChild);
    list.scrollTop = list.scrollHeight;
  }

  function unsubscribe() {
    if (source) source.close();
    source = null;
    $("unsubscribe-button").disabled = true;
    setText("subscribe-state", "Not subscribed.");
  }

  $("subscribe-form").addEventListener("submit", (event) => {
    event.preventDefault();
    unsubscribe();
    const channel = $("subscribe-channel").value.trim();
    const query = new URLSearchParams({ channel });
    const token = $("subscribe-token").value.trim();
    if (token) query.set("token", token);
    if ($("subscribe-presence").checked) query.set("presence", "1");
    source = new EventSource(base + "?" + query.toString());
    setText("subscribe-state", "Connecting to " + channel + "...");
    $("unsubscribe-button").disabled = false;
    source.onopen = () => setText("subscribe-state", "Subscribed to " + channel + ".");
    source.onerror = () => {
      // EventSource retries by itself unless the answer was not a stream.
      const closed = source && source.readyState === EventSource.CLOSED;
      setText("subscribe-state", closed ? "Refused or closed by the server." : "Reconnecting...");
    };
    source.onmessage = (message) => received(message.data);
    source.addEventListener("presence", (message) => received("presence " + message.data, "presence"));
    source.addEventListener("gap", (message) => received("gap " + message.data, "presence"));
  });
  $("unsubscribe-button").addEventListener("click", unsubscribe);

  // -- push ------------------------------------------------------------------------------------
  $("push-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const answer = $("push-answer");
    // The payload goes as typed: text that is not JSON gets the push endpoint's own 400.
    const payload = $("push-payload").value.trim() || "null";
    const text = '{"channel":' + JSON.stringify($("push-channel").value.trim()) + ',"payload":' + payload + "}";
    const headers = { "Content-Type": "application/json" };
    const key = $("push-key").value.trim();
    if (key) headers["Idempotency-Key"] = key;
    try {
      const response = await fetch(consoleUrl + "/push", { method: "POST", credentials: "same-origin", headers, body: text });
      answer.textContent = response.status + " " + (await response.text());
      answer.classList.toggle("bad", !response.ok);
    } catch (error) {
      answer.textContent = "no answer: " + error.message;
      answer.classList.add("bad");
    }
  });

  poll();
})();
