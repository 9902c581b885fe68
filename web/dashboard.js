// The /status page: polls /status.json and draws small SVG charts. With
// GATEWAY_METRICS_KEY set, open /status#key=<the key>: it is sent as a bearer token
// and never leaves the browser otherwise (a fragment is not sent to the server).

const REFRESH_MS = 5000;
const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);

function key() {
  const match = location.hash.match(/key=([^&]+)/);
  return match ? decodeURIComponent(match[1]) : null;
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

function seconds(value) {
  if (value === null || value === undefined) return "–";
  return value < 1 ? `${Math.round(value * 1000)} ms` : `${value.toFixed(2)} s`;
}

function frame(chart, maxValue, format) {
  const width = chart.clientWidth || 480;
  const height = chart.clientHeight || 180;
  chart.setAttribute("viewBox", `0 0 ${width} ${height}`);
  chart.replaceChildren();
  const box = { left: 44, right: width - 8, top: 8, bottom: height - 20 };
  for (const fraction of [0, 0.5, 1]) {
    const y = box.bottom - fraction * (box.bottom - box.top);
    chart.append(svg("line", { class: "grid", x1: box.left, x2: box.right, y1: y, y2: y }));
    chart.append(svg("text", { x: box.left - 6, y: y + 4, "text-anchor": "end" }, format(fraction * maxValue)));
  }
  chart.append(svg("text", { x: box.left, y: height - 4 }, "-30 min"));
  chart.append(svg("text", { x: box.right, y: height - 4, "text-anchor": "end" }, "now"));
  return box;
}

function drawTurns(minutes) {
  const chart = $("turns-chart");
  const top = Math.max(4, ...minutes.map((m) => m.turns));
  const box = frame(chart, top, (v) => String(Math.round(v)));
  const step = (box.right - box.left) / minutes.length;
  minutes.forEach((minute, i) => {
    const x = box.left + i * step + 1;
    const scale = (v) => (v / top) * (box.bottom - box.top);
    const bar = svg("rect", {
      class: "bar",
      x,
      width: Math.max(1, step - 2),
      y: box.bottom - scale(minute.turns),
      height: scale(minute.turns),
      "data-minute": minute.minute,
      "data-turns": minute.turns,
    });
    bar.append(svg("title", {}, `${minute.turns} turns, ${minute.failed} failed`));
    chart.append(bar);
    if (minute.failed > 0) {
      chart.append(svg("rect", { class: "bar failed", x, width: Math.max(1, step - 2), y: box.bottom - scale(minute.failed), height: scale(minute.failed) }));
    }
  });
}

function drawLatency(minutes) {
  const chart = $("latency-chart");
  const values = minutes.flatMap((m) => [m.first_chunk_p50_s, m.first_chunk_p90_s, m.first_chunk_p99_s]);
  const top = Math.max(0.5, ...values.filter((v) => v !== null));
  const box = frame(chart, top, (v) => v.toFixed(top < 2 ? 2 : 1));
  const step = (box.right - box.left) / minutes.length;
  for (const name of ["p50", "p90", "p99"]) {
    let path = "";
    let points = 0;
    minutes.forEach((minute, i) => {
      const value = minute[`first_chunk_${name}_s`];
      if (value === null) return;
      const x = box.left + (i + 0.5) * step;
      const y = box.bottom - (value / top) * (box.bottom - box.top);
      path += `${points === 0 ? "M" : "L"}${x.toFixed(1)},${y.toFixed(1)} `;
      chart.append(svg("circle", { class: name, cx: x, cy: y, r: 2.5, fill: "currentColor", "data-value": value }));
      points += 1;
    });
    if (path) chart.append(svg("path", { class: name, d: path.trim(), "data-points": points }));
  }
  for (const circle of chart.querySelectorAll("circle")) {
    circle.style.color = getComputedStyle(circle).stroke;
  }
}

function recentPercentile(minutes, count) {
  const recent = minutes.slice(-count).filter((m) => m.first_chunk_p90_s !== null);
  return recent.length ? Math.max(...recent.map((m) => m.first_chunk_p90_s)) : null;
}

function show(status) {
  $("live-sessions").textContent = status.live_sessions;
  const routes = Object.entries(status.connections).filter(([, n]) => n > 0);
  $("connections").textContent = routes.reduce((sum, [, n]) => sum + n, 0);
  $("connections-label").textContent = routes.length
    ? `open connections (${routes.map(([r, n]) => `${r} ${n}`).join(", ")})`
    : "open connections";
  const minutes = status.minutes;
  $("turns-minute").textContent = status.turns_last_minute;
  $("failed").textContent = minutes.reduce((sum, m) => sum + m.failed, 0);
  $("p90-now").textContent = seconds(recentPercentile(minutes, 5));
  drawTurns(minutes);
  drawLatency(minutes);
  $("updated").textContent = `Updated ${new Date(status.time * 1000).toLocaleTimeString()}`;
  document.body.dataset.loaded = "true";
}

async function refresh() {
  const headers = key() ? { Authorization: `Bearer ${key()}` } : {};
  try {
    const response = await fetch("/status.json", { headers, cache: "no-store" });
    if (!response.ok) throw new Error(response.status === 401 ? "a metrics key is needed: open /status#key=…" : `HTTP ${response.status}`);
    show(await response.json());
    $("problem").hidden = true;
  } catch (error) {
    $("problem").textContent = `Cannot load the figures: ${error.message}`;
    $("problem").hidden = false;
  }
}

refresh();
setInterval(refresh, REFRESH_MS);
