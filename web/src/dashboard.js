// The operator's dashboard (admin role): the loop's state, model versions with their metrics and the promotion
// gate's decision, mIoU per iteration, annotators' progress, event lag and scoring throughput, rollback.
// Everything comes from the services' status calls through the gateway (/api/dashboard), never from the bucket.
import { api, login, setMessage } from "./api.js";

const $ = (id) => document.getElementById(id);
const fmt = (x, d = 3) => (x === undefined || x === null || Number.isNaN(x) ? "–" : Number(x).toFixed(d));
const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
window.saim = { data: null, refreshes: 0 };

function cards(d) {
  const s = d.selector;
  const t = d.trainer;
  const lag = Object.entries(s.event_lag_s || {}).map(([k, v]) => `${k.replace("saim.", "")} ${fmt(v, 2)} s`);
  const items = [
    ["iteration", `${s.iteration} / ${s.max_iterations}${s.complete ? " (complete)" : ""}`],
    ["batch", `${s.batch_done.length} of ${s.batch.length} submitted`],
    ["pool", `${s.pool_size} unannotated · ${s.annotated} annotated · ${s.initial} initial`],
    ["served model", `${t.current_version || "–"} (batch chosen by ${s.model_version || "–"})`],
    ["trainer", `${t.state}${t.queued ? `, ${t.queued} queued` : ""} · ${t.runs_completed} runs`],
    ["scoring", `${fmt(s.scoring_slices_per_s, 1)} slices/s (${s.scores_version || "–"})`],
    ["event lag", lag.length ? lag.join(" · ") : "no events yet"],
  ];
  $("cards").innerHTML = items
    .map(([k, v]) => `<div class="card"><div class="muted">${k}</div><div class="v">${esc(v)}</div></div>`)
    .join("");
}

function models(d) {
  const rows = [...d.models].sort((a, b) => (a.version < b.version ? 1 : -1));
  $("models").querySelector("tbody").innerHTML = rows
    .map((m) => {
      const status = m.current ? `${m.status} · current` : m.status;
      const button = !m.current && m.status === "promoted" ? `<button data-v="${esc(m.version)}">roll back to</button>` : "";
      return `<tr data-version="${esc(m.version)}"><td>${esc(m.version)}</td><td>${m.iteration}</td>
        <td class="${esc(m.status)}">${esc(status)}</td><td>${fmt(m.metrics.val_miou)}</td>
        <td>${fmt(m.metrics.test_miou)}</td><td>${fmt(m.metrics.test_click_fidelity)}</td><td>${m.training_series}</td>
        <td>${esc((m.created_at || "").replace("T", " ").slice(0, 19))}</td><td>${button}</td></tr>`;
    })
    .join("");
  $("models").querySelectorAll("button[data-v]").forEach((b) => {
    b.onclick = async () => {
      if (!confirm(`Serve ${b.dataset.v} again? Annotators and the selector follow at once.`)) return;
      try {
        const r = await api("POST", "/api/models/rollback", { version: b.dataset.v });
        setMessage(`current model: ${r.current_version} (was ${r.previous_version || "none"})`);
        refresh();
      } catch (err) {
        setMessage(err.message, true);
      }
    };
  });
}

function chart(d) {
  // Test mIoU of each iteration's promoted version (the served model's curve); rejected versions as crosses.
  const svg = $("chart");
  const W = 640;
  const H = 240;
  const pad = 36;
  const pts = d.models.filter((m) => m.metrics.test_miou !== undefined);
  const its = pts.map((m) => m.iteration);
  const maxIt = Math.max(1, ...its);
  const x = (i) => pad + ((W - 2 * pad) * i) / maxIt;
  const y = (v) => H - pad - (H - 2 * pad) * v;
  const promoted = pts.filter((m) => m.status === "promoted").sort((a, b) => a.iteration - b.iteration);
  const line = promoted.map((m) => `${x(m.iteration)},${y(m.metrics.test_miou)}`).join(" ");
  let out = `<line x1="${pad}" y1="${H - pad}" x2="${W - pad}" y2="${H - pad}" stroke="#445"/>`;
  out += `<line x1="${pad}" y1="${pad}" x2="${pad}" y2="${H - pad}" stroke="#445"/>`;
  for (const v of [0, 0.25, 0.5, 0.75, 1]) {
    out += `<text x="4" y="${y(v) + 4}" fill="#8b95a3" font-size="11">${v.toFixed(2)}</text>`;
  }
  for (let i = 0; i <= maxIt; i++) {
    out += `<text x="${x(i) - 3}" y="${H - pad + 16}" fill="#8b95a3" font-size="11">${i}</text>`;
  }
  out += `<text x="${W / 2 - 20}" y="${H - 4}" fill="#8b95a3" font-size="11">iteration</text>`;
  out += `<polyline id="miou-line" points="${line}" fill="none" stroke="#4aa3ff" stroke-width="2"/>`;
  for (const m of pts) {
    const cx = x(m.iteration);
    const cy = y(m.metrics.test_miou);
    out +=
      m.status === "promoted"
        ? `<circle class="point" cx="${cx}" cy="${cy}" r="4" fill="#4aa3ff"><title>${esc(m.version)}: ${fmt(m.metrics.test_miou)}</title></circle>`
        : `<text class="point" x="${cx - 4}" y="${cy + 4}" fill="#ff6b6b" font-size="12">✕<title>${esc(m.version)} rejected</title></text>`;
  }
  svg.innerHTML = out;
}

function annotators(d) {
  const rows = d.selector.annotators || [];
  $("annotators").querySelector("tbody").innerHTML = rows.length
    ? rows.map((a) => `<tr><td>${esc(a.annotator_id)}</td><td>${a.leased}</td><td>${a.submitted}</td></tr>`).join("")
    : `<tr><td colspan="3" class="muted">nobody holds a case of this batch</td></tr>`;
  const s = d.selector;
  $("batch").textContent = s.batch.length
    ? `batch ${s.iteration}: ${s.batch.map((c) => (s.batch_done.includes(c) ? `${c} ✓` : c)).join(", ")}`
    : "no open batch";
}

async function refresh() {
  try {
    const d = await api("GET", "/api/dashboard");
    window.saim.data = d;
    cards(d);
    models(d);
    chart(d);
    annotators(d);
    $("updated").textContent = new Date(d.time * 1000).toLocaleTimeString();
    window.saim.refreshes += 1;
  } catch (err) {
    setMessage(err.message, true);
  }
}

login(async (me) => {
  $("who").textContent = `${me.name} (${me.role})`;
  $("app").classList.remove("hidden");
  await refresh();
  setInterval(refresh, 3000);
});
