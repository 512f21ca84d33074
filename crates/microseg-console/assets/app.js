// microseg console: one module, no build step. Every page asks the server for its data in
// one request (/v1/console/...); charts come drawn as SVG by the server (the same code
// draws the HTML report). Text from the data is always set with textContent: traits are
// written by anyone holding a write key.

const page = document.getElementById("page");
const loginSection = document.getElementById("login");
const logout = document.getElementById("logout");
let stopFeed = null;
let refreshTimer = null;

// ---- small helpers -------------------------------------------------------------------

/** An element with attributes (`on*` are listeners) and children (strings become text). */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** A chart drawn by the server (escaped there) inside a figure. */
function chart(svg, caption) {
  const f = h("figure", { class: "card" });
  const holder = h("div");
  holder.innerHTML = svg || "";
  f.append(holder);
  if (caption) f.append(h("figcaption", { class: "muted" }, caption));
  return f;
}

const nf = new Intl.NumberFormat("en", { maximumFractionDigits: 0 });
const nf2 = new Intl.NumberFormat("en", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
const count = (x) => (x === null || x === undefined ? "–" : nf.format(x));
const money = (x) => (x === null || x === undefined || Number.isNaN(x) ? "–" : nf2.format(x));
const pct = (x) => (x === null || x === undefined ? "–" : `${(x * 100).toFixed(1)}%`);
const show = (v) => (v === null || v === undefined ? "" : typeof v === "object" ? JSON.stringify(v) : String(v));

function kpi(label, value) {
  return h("div", { class: "kpi" }, h("span", {}, label), h("b", {}, value));
}

/** A table: header cells and rows of cells (strings or nodes); `numeric` right-aligns. */
function table(header, rows, numeric = []) {
  return h("div", { class: "scroll" }, h("table", {},
    h("thead", {}, h("tr", {}, header.map((c, i) => h("th", { class: numeric[i] ? "n" : null, scope: "col" }, c)))),
    h("tbody", {}, rows.map((r) => h("tr", {}, r.map((c, i) => h("td", { class: numeric[i] ? "n" : null }, c)))))));
}

function debounce(f, ms) {
  let t = null;
  return (...a) => { clearTimeout(t); t = setTimeout(() => f(...a), ms); };
}

// ---- the server ----------------------------------------------------------------------

class Unauthorized extends Error {}

async function api(path, options = {}) {
  const token = sessionStorage.getItem("microseg-token");
  if (!token) throw new Unauthorized("log in");
  const headers = { Authorization: `Bearer ${token}` };
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(path, {
    method: options.method || (options.body !== undefined ? "POST" : "GET"),
    headers,
    body: options.body !== undefined ? JSON.stringify(options.body) : undefined,
  });
  if (res.status === 401) {
    await res.text(); // read to the end: an unread answer counts as a failed request
    sessionStorage.removeItem("microseg-token");
    throw new Unauthorized("the token was refused");
  }
  const text = await res.text();
  const data = text ? JSON.parse(text) : null;
  if (!res.ok) throw new Error(data && data.message ? data.message : `HTTP ${res.status}`);
  return data;
}

function showLogin(message) {
  page.replaceChildren();
  loginSection.hidden = false;
  logout.hidden = true;
  document.getElementById("login-error").textContent = message || "";
  document.getElementById("token").focus();
}

document.getElementById("login-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const token = document.getElementById("token").value.trim();
  sessionStorage.setItem("microseg-token", token);
  try {
    await api("/v1/segments");
    loginSection.hidden = true;
    document.getElementById("token").value = "";
    if (!location.hash || location.hash === "#/") location.hash = "#/overview";
    else route();
  } catch (err) {
    showLogin(err instanceof Unauthorized ? "That token was refused." : String(err.message || err));
  }
});

logout.addEventListener("click", () => {
  sessionStorage.removeItem("microseg-token");
  showLogin("Logged out.");
});

// ---- pages ---------------------------------------------------------------------------

async function overview() {
  const d = await api("/v1/console/overview");
  const rate = h("b", {}, `${(d.ingest.per_second || 0).toFixed(1)} / s`);
  const root = h("div", {},
    h("h1", {}, "Overview"),
    h("p", { class: "muted" }, `Data as of ${d.as_of}`),
    h("div", { class: "kpis" },
      kpi("Profiles", count(d.profiles)), kpi("Customers", count(d.customers)),
      kpi("Events", count(d.events)), kpi("Orders", count(d.orders)),
      kpi("Revenue", money(d.revenue)), kpi("Average order value", money(d.aov)),
      h("div", { class: "kpi", id: "ingest-rate" }, h("span", {}, "Ingest rate now"), rate)),
    h("h2", {}, "Recency × frequency"),
    chart(d.charts.rfm, "Customers by RFM recency and frequency scores (5 = best)."),
    h("h2", {}, "Distributions"),
    h("div", { class: "grid" }, d.distributions.map((x) => chart(d.charts[`distribution_${x.metric}`], `${x.metric}: ${count(x.profiles)} profiles, mean ${money(x.mean)}`))));
  page.replaceChildren(root);
  // The rate from the server's counter (/metrics), not by recomputing the page: on a
  // large shop the overview is a second of work, the counter a few bytes.
  let last = { at: performance.now(), total: d.ingest.since_start };
  refreshTimer = setInterval(async () => {
    try {
      const token = sessionStorage.getItem("microseg-token");
      const res = await fetch("/metrics", { headers: { Authorization: `Bearer ${token}` } });
      const text = await res.text();
      const m = text.match(/^microseg_ingested_messages_total (\d+)/m);
      if (!m) return;
      const now = { at: performance.now(), total: Number(m[1]) };
      rate.textContent = `${((now.total - last.total) / ((now.at - last.at) / 1000)).toFixed(1)} / s`;
      last = now;
    } catch (_) { /* the next tick tries again */ }
  }, 5000);
}

function caretLines(text, line, column) {
  const src = text.split("\n")[line - 1] ?? "";
  return `${src}\n${" ".repeat(Math.max(0, column - 1))}^`;
}

async function segments() {
  const d = await api("/v1/console/segments");
  const list = table(["Segment", "Size", "Share", `Last ${d.weeks} weeks`, "Streams", "Description"],
    d.segments.map((s) => {
      const spark = h("span");
      spark.innerHTML = s.sparkline;
      return [s.name, count(s.live_size ?? s.size), pct(s.share), spark, s.streaming ? "yes" : "batch", s.description || ""];
    }), [false, true, true]);
  const name = h("input", { id: "seg-name", name: "name", required: true, pattern: "[A-Za-z_][A-Za-z0-9_]*", placeholder: "winter_riders" });
  const description = h("input", { id: "seg-description", name: "description", placeholder: "what it is for" });
  const condition = h("textarea", { id: "seg-condition", name: "condition", spellcheck: "false", placeholder: 'discipline = "mountain" and count(order_completed, last 90 days) >= 2' });
  const status = h("div", { id: "seg-status", role: "status" });
  const save = h("button", { type: "submit", id: "seg-save" }, "Save segment");
  const check = debounce(async () => {
    const text = condition.value;
    if (!text.trim()) { status.replaceChildren(); return; }
    try {
      const r = await api("/v1/console/size", { body: { condition: text } });
      if (condition.value !== text) return;
      if (r.error) {
        const where = r.error.line ? `line ${r.error.line}, column ${r.error.column}` : "";
        status.replaceChildren(h("p", { class: "error", id: "seg-error" }, r.error.message),
          r.error.line ? h("pre", { class: "caret", "aria-label": where }, caretLines(text, r.error.line, r.error.column)) : "");
      } else {
        status.replaceChildren(h("p", { class: "ok", id: "seg-size" }, `${count(r.size)} profiles (${pct(r.share)} of ${count(r.profiles)})`));
      }
    } catch (err) { status.replaceChildren(h("p", { class: "error" }, String(err.message || err))); }
  }, 250);
  condition.addEventListener("input", check);
  const saved = h("p", { role: "status", id: "seg-saved" });
  const form = h("form", { class: "card", id: "seg-form", onsubmit: async (e) => {
    e.preventDefault();
    save.disabled = true;
    try {
      const r = await api("/v1/segments", { body: { name: name.value, condition: condition.value, description: description.value || null } });
      saved.className = "ok";
      saved.textContent = `Saved ${r.name} (version ${r.version}): ${count(r.size)} profiles.`;
    } catch (err) { saved.className = "error"; saved.textContent = String(err.message || err); }
    save.disabled = false;
  } },
    h("h2", {}, "New segment"),
    h("div", { class: "two" }, h("div", {}, h("label", { for: "seg-name" }, "Name"), name), h("div", {}, h("label", { for: "seg-description" }, "Description"), description)),
    h("label", { for: "seg-condition" }, "Condition (docs/conditions.md); its size updates as you type"),
    condition, status, save, saved);
  const feed = h("ul", { class: "feed", id: "changes" });
  page.replaceChildren(h("div", {}, h("h1", {}, "Segments"), list, form,
    h("h2", {}, "Entered and exited, as they happen"), h("div", { class: "card" }, feed)));
  follow(feed);
}

/** Reads the server-sent membership changes (fetch: EventSource cannot send a token). */
function follow(feed) {
  const controller = new AbortController();
  stopFeed = () => controller.abort();
  const token = sessionStorage.getItem("microseg-token");
  fetch("/v1/changes", { headers: { Authorization: `Bearer ${token}` }, signal: controller.signal }).then(async (res) => {
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5)).join("\n");
        if (!data) continue;
        try {
          const c = JSON.parse(data);
          feed.prepend(h("li", {}, `${c.at} · ${c.profile} ${c.kind} ${c.segment}${c.event ? ` (${c.event})` : ""}`));
          while (feed.children.length > 100) feed.lastChild.remove();
        } catch (_) { /* a keep-alive */ }
      }
    }
  }).catch(() => {});
}

async function saveSegment(condition, suggested, description) {
  const name = prompt("Name of the new segment", suggested);
  if (!name) return null;
  const r = await api("/v1/segments", { body: { name, condition, description } });
  alert(`Saved ${r.name}: ${count(r.size)} profiles.`);
  return r.name;
}

function treeNode(n, within) {
  const button = n.condition ? h("button", { type: "button", class: "secondary", onclick: async () => {
    const condition = within ? `in_segment(${JSON.stringify(within)}) and ${n.condition}` : n.condition;
    try { await saveSegment(condition, n.label.replace(/[^A-Za-z0-9]+/g, "_").toLowerCase(), `drill-down node: ${n.label}`); } catch (err) { alert(String(err.message || err)); }
  } }, "Make segment") : null;
  const bar = h("span", { class: "share-bar" });
  bar.style.width = `${Math.max(1, Math.round(n.share_of_all * 120))}px`;
  return h("li", {}, h("span", { class: `node${n.under_floor ? " under" : ""}` },
    h("b", {}, n.label), `${count(n.size)} · ${pct(n.share_of_parent)} of parent`, bar,
    n.under_floor ? h("span", { class: "badge", title: "Fewer than the statistical floor: too few people for the share to mean much" }, "under floor") : null,
    button),
  n.children.length ? h("ul", { class: "tree" }, n.children.map((c) => treeNode(c, within)),
    n.more ? h("li", { class: "muted" }, `and ${count(n.more)} smaller`) : null) : null);
}

async function explore() {
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const by = h("input", { id: "by", value: params.get("by") ?? "discipline,skill,gender" });
  const q = new URLSearchParams({ segments: params.get("segments") || "", by: by.value, within: params.get("within") || "" });
  const d = await api(`/v1/console/explore?${q}`);
  const all = d.all_segments;
  const chosen = new Set(d.overlap.segments.map((s) => s.name));
  const within = h("select", { id: "within" }, h("option", { value: "" }, "everyone"), all.map((n) => h("option", { value: n, selected: params.get("within") === n }, n)));
  const boxes = all.map((n) => h("label", { class: "chip" }, h("input", { type: "checkbox", value: n, checked: chosen.has(n) }), ` ${n}`));
  const out = h("div", { id: "explore-out" });
  const form = h("form", { class: "card", onsubmit: (e) => {
    e.preventDefault();
    const segs = boxes.map((b) => b.querySelector("input")).filter((i) => i.checked).map((i) => i.value);
    location.hash = `#/explore?${new URLSearchParams({ segments: segs.join(","), by: by.value, within: within.value })}`;
  } },
    h("fieldset", {}, h("legend", {}, "Segments to overlap"), boxes),
    h("div", { class: "two" }, h("div", {}, h("label", { for: "by" }, "Drill down by (comma separated)"), by), h("div", {}, h("label", { for: "within" }, "Within"), within)),
    h("p", {}, h("button", { type: "submit", id: "explore-go" }, "Show")));
  page.replaceChildren(h("div", {}, h("h1", {}, "Explore"), form, out));
  out.replaceChildren(
    h("h2", {}, "Overlaps"),
    d.charts.overlap ? chart(d.charts.overlap, "Share of the row's segment that is also in the column's.") : h("p", { class: "muted" }, "Choose two segments or more."),
    h("h2", {}, "Drill-down tree"),
    d.tree ? h("div", { class: "card", id: "tree" }, h("p", { class: "muted" }, `Nodes under ${d.floor} people are marked: too few for their share to be real.`), h("ul", { class: "tree" }, treeNode(d.tree, d.within))) : h("p", { class: "muted" }, "Name dimensions to drill down by."),
    h("h2", {}, "How the metrics move together"),
    chart(d.charts.correlation, `Spearman correlations over ${count(d.profiles)} profiles.`));
}

function explanation(e) {
  return h("li", {}, h("span", { class: e.matched ? "yes" : "no" }, e.condition),
    e.saw ? h("span", { class: "muted" }, ` — saw ${show(e.saw)}`) : null,
    e.children && e.children.length ? h("ul", {}, e.children.map(explanation)) : null);
}

async function profile() {
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const id = h("input", { id: "profile-id", value: params.get("id") || "", placeholder: "c0000001", required: true });
  const form = h("form", { class: "card inline", onsubmit: (e) => { e.preventDefault(); location.hash = `#/profile?id=${encodeURIComponent(id.value.trim())}`; } },
    h("div", {}, h("label", { for: "profile-id" }, "Profile (external id)"), id), h("button", { type: "submit" }, "Open"));
  page.replaceChildren(h("div", {}, h("h1", {}, "Profile"), form));
  if (!params.get("id")) { id.focus(); return; }
  const d = await api(`/v1/console/profiles/${encodeURIComponent(params.get("id"))}`);
  const metricRows = Object.entries(d.metrics).map(([k, v]) => [k, show(v)]);
  const segSelect = h("select", { id: "explain-segment" }, d.all_segments.map((n) => h("option", { value: n }, n)));
  const explainOut = h("div", { class: "explain", id: "explain-out" });
  const decisions = Object.entries(d.decisions).map(([channel, dec]) => h("div", { class: "card" },
    h("h3", {}, channel),
    dec.winner ? h("p", {}, h("b", {}, `${dec.winner.campaign} / ${dec.winner.variant}`), ": ", Object.values(dec.winner.content).join(" — ")) : h("p", { class: "muted" }, "Nothing now."),
    table(["Campaign", "Outcome", "Why"], dec.candidates.map((c) => [c.campaign, c.outcome, c.reason || ""]))));
  page.append(h("div", { id: "profile-out" },
    h("h2", {}, d.id),
    h("div", { class: "two" },
      h("div", {}, h("h3", {}, "Identities"), table(["Kind", "Value"], d.identities.map((i) => [i.kind, i.value])),
        h("h3", {}, "Traits"), table(["Trait", "Value"], Object.entries(d.traits).map(([k, v]) => [k, show(v)]))),
      h("div", {}, h("h3", {}, "Metrics"), table(["Metric", "Value"], metricRows),
        h("p", {}, h("b", {}, "Predicted 12-month value: "), d.metrics.clv_12m === null || d.metrics.clv_12m === undefined ? "no CLV model fitted (microseg clv fit)" : money(d.metrics.clv_12m)),
        h("h3", {}, "Segments"), h("p", {}, d.segments.length ? d.segments.map((s) => h("span", { class: "chip" }, s)) : "none"))),
    h("h3", {}, "Why in a segment, or not"),
    h("form", { class: "card inline", onsubmit: async (e) => {
      e.preventDefault();
      try {
        const x = await api(`/v1/segments/${encodeURIComponent(segSelect.value)}/explain?profile=${encodeURIComponent(d.id)}`);
        explainOut.replaceChildren(h("p", { id: "explain-verdict" }, `${x.member ? "In" : "Not in"} ${segSelect.value}`), h("ul", {}, explanation(x.explanation)));
      } catch (err) { explainOut.replaceChildren(h("p", { class: "error" }, String(err.message || err))); }
    } }, h("div", {}, h("label", { for: "explain-segment" }, "Segment"), segSelect), h("button", { type: "submit", id: "explain-go" }, "Explain")),
    explainOut,
    h("h3", {}, "What it would get now"), decisions.length ? decisions : h("p", { class: "muted" }, "No campaigns."),
    h("h3", {}, "Recent events"),
    table(["Time", "Event", "Revenue", "Properties"], d.recent_events.map((e) => [e.time, e.event, e.revenue === null ? "" : money(e.revenue), show(e.properties)]))));
}

async function discover() {
  const field = (id, label, attrs = {}) => h("div", {}, h("label", { for: id }, label), h("input", { id, ...attrs }));
  const out = h("div", { id: "discover-out" });
  const form = h("form", { class: "card", onsubmit: async (e) => {
    e.preventDefault();
    const v = (id) => document.getElementById(id).value.trim();
    const body = { target: v("d-target"), within: v("d-within") || null, dims: v("d-dims") ? v("d-dims").split(",").map((s) => s.trim()) : [],
      min_support: Number(v("d-support")) || null, max_depth: Number(v("d-depth")) || null, experiment: v("d-experiment") || null, arm: v("d-arm") || null, outcome: v("d-outcome") || null };
    out.replaceChildren(h("p", { class: "muted" }, "Running…"));
    try { showDiscovery(out, await api("/v1/console/discover", { body })); } catch (err) { out.replaceChildren(h("p", { class: "error", role: "alert" }, String(err.message || err))); }
  } },
    h("div", { class: "grid" },
      field("d-target", "Target: a condition, a segment, or a numeric metric", { value: "orders >= 2" }),
      field("d-within", "Within (segment or condition)"),
      field("d-dims", "Dimensions (default: every trait)", { value: "discipline,skill,gender,income_band,country" }),
      field("d-support", "Fewest people", { type: "number", min: 1, value: 100 }),
      field("d-depth", "Most conditions", { type: "number", min: 1, max: 3, value: 2 })),
    h("details", {}, h("summary", {}, "Uplift discovery (who a treatment moves)"),
      h("div", { class: "grid" }, field("d-experiment", "Experiment"), field("d-arm", "Treatment arm"), field("d-outcome", "Outcome"))),
    h("p", {}, h("button", { type: "submit", id: "discover-go" }, "Discover")));
  const personasOut = h("div", { id: "personas-out" });
  const k = h("input", { id: "p-k", type: "number", min: 2, max: 8, value: 4 });
  const pform = h("form", { class: "card inline", onsubmit: async (e) => {
    e.preventDefault();
    personasOut.replaceChildren(h("p", { class: "muted" }, "Clustering…"));
    try {
      const p = await api(`/v1/console/personas?k=${encodeURIComponent(k.value)}`);
      personasOut.replaceChildren(chart(p.charts.sizes, `k-means on ${p.features.join(", ")}`),
        table(["Persona", "People", "Share", ...p.features, "Over-indexes on"], p.personas.map((c) => [String(c.persona), count(c.size), pct(c.share), ...p.features.map((f) => money(c.centre[f])), c.over_indexes.map((o) => `${o.trait} = ${o.value} (${o.lift.toFixed(1)}×)`).join(", ")]), [false, true, true, ...p.features.map(() => true)]));
    } catch (err) { personasOut.replaceChildren(h("p", { class: "error" }, String(err.message || err))); }
  } }, h("div", {}, h("label", { for: "p-k" }, "Personas"), k), h("button", { type: "submit", id: "personas-go" }, "Make personas"));
  page.replaceChildren(h("div", {}, h("h1", {}, "Discover and personas"), form, out, h("h2", {}, "Personas"), pform, personasOut));
}

function showDiscovery(out, d) {
  const fmt = d.kind === "rate" ? pct : money;
  const summary = d.uplift
    ? `Overall effect ${fmt(d.base)} over ${count(d.base_size)} people; ${count(d.tested)} candidates tested, ${count(d.found)} kept.`
    : `Base ${fmt(d.base)} over ${count(d.base_size)} profiles; ${count(d.tested)} candidates tested, ${count(d.found)} kept at FDR ${d.fdr} (${d.seconds.toFixed(2)} s).`;
  const rows = d.segments.map((s) => [String(s.rank), s.condition, count(s.support), fmt(s.value), `${fmt(s.ci_low)} – ${fmt(s.ci_high)}`, s.verdict,
    h("span", {}, h("button", { type: "button", class: "secondary", onclick: () => saveSegment(s.condition, "", `discovered: ${s.condition}`).catch((err) => alert(err.message)) }, "Save as segment"), " ",
      h("button", { type: "button", class: "secondary", onclick: () => exclude(s.condition).catch((err) => alert(err.message)) }, "Exclude from campaign"))]);
  out.replaceChildren(h("p", {}, summary), chart(d.charts.segments), table(["#", "Segment", "People", d.uplift ? "Treated" : "Value", "95% interval", "Verdict", ""], rows, [true, false, true, true, true]));
}

/** Saves a discovered segment and adds it to a campaign's exclusions. */
async function exclude(condition) {
  const campaign = prompt("Exclude these people from which campaign?");
  if (!campaign) return;
  const name = await saveSegment(condition, `excluded_from_${campaign}`, `excluded from ${campaign}: ${condition}`);
  if (!name) return;
  const c = await api(`/v1/campaigns/${encodeURIComponent(campaign)}`);
  const file = c.campaign;
  file.exclude = [...new Set([...(file.exclude || []), name])];
  await api(`/v1/campaigns/${encodeURIComponent(campaign)}`, { method: "PUT", body: file });
  alert(`${campaign} now excludes ${name}.`);
}

async function campaigns() {
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const d = await api("/v1/console/campaigns");
  const rows = d.campaigns.map((c) => [h("a", { href: `#/campaigns?name=${encodeURIComponent(c.name)}` }, c.name), c.status, c.channel || "", c.segment || "", String(c.priority ?? ""),
    Object.entries(c.outbox).map(([s, n]) => `${s} ${count(n)}`).join(", ") || "none"]);
  page.replaceChildren(h("div", {}, h("h1", {}, "Campaigns"), table(["Campaign", "Status", "Channel", "Segment", "Priority", "Messages"], rows)));
  const name = params.get("name");
  if (!name) return;
  const c = await api(`/v1/console/campaigns/${encodeURIComponent(name)}`);
  const r = c.results;
  const arms = r.arms.map((a) => {
    const cv = a.outcomes.conversion || {};
    const rv = a.outcomes.revenue || {};
    return [a.arm, count(a.n), pct(cv.value), cv.abs_lift === null || cv.abs_lift === undefined ? "control" : `${(cv.abs_lift * 100).toFixed(2)} pts (${(cv.ci_low * 100).toFixed(2)} – ${(cv.ci_high * 100).toFixed(2)})`, money(rv.value), cv.p_value === null || cv.p_value === undefined ? "" : cv.p_value.toFixed(4)];
  });
  page.append(h("section", { id: "campaign-detail" },
    h("h2", {}, `${c.name} (version ${c.version}, ${c.status})`),
    h("h3", {}, "Results"),
    chart(c.charts.lift, `Orders within ${r.window_days} days of each person's message.`),
    table(["Arm", "People", "Conversion", "Lift, 95% interval", "Revenue per person", "p"], arms, [false, true, true, true, true, true]),
    h("div", { class: "kpis", id: "money" },
      kpi("Sent", count(r.money.sent)), kpi("Cost", money(r.money.cost)), kpi("Incremental revenue", money(r.money.incremental_revenue)),
      kpi("ROI", pct(r.money.roi)), kpi("CAC", money(r.acquisition.cac)), kpi("LTV 12m (predicted)", money(r.acquisition.ltv_12m)), kpi("LTV / CAC", money(r.acquisition.ltv_to_cac))),
    h("h3", {}, "A run now would"),
    c.dry_run ? table(["People", "Count"], Object.entries(c.dry_run).map(([k, v]) => [k.replace(/_/g, " "), count(v)]), [false, true]) : h("p", { class: "muted" }, `Not active (${c.status}).`),
    h("h3", {}, "Outbox"),
    h("p", {}, Object.entries(c.outbox).map(([s, n]) => h("span", { class: "chip" }, `${s}: ${count(n)}`))),
    h("h3", {}, "Delivery log (last 50 attempts)"),
    table(["At", "Message", "Channel", "Variant", "Outcome", "Error"], c.deliveries.map((x) => [x.at, x.key, x.channel, x.variant, x.outcome, x.error || ""]))));
}

// ---- routing -------------------------------------------------------------------------

const pages = { overview, segments, explore, profile, discover, campaigns };

async function route() {
  if (stopFeed) { stopFeed(); stopFeed = null; }
  if (refreshTimer) { clearInterval(refreshTimer); refreshTimer = null; }
  if (!sessionStorage.getItem("microseg-token")) { showLogin(); return; }
  loginSection.hidden = true;
  logout.hidden = false;
  const name = (location.hash.replace(/^#\//, "").split("?")[0]) || "overview";
  for (const a of document.querySelectorAll("header nav a")) {
    if (a.getAttribute("href") === `#/${name}`) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const render = pages[name] || overview;
  page.replaceChildren(h("p", { class: "muted" }, "Loading…"));
  try {
    await render();
    document.title = `${name} · microseg`;
  } catch (err) {
    if (err instanceof Unauthorized) showLogin(err.message === "log in" ? "" : "The token was refused; log in again.");
    else page.replaceChildren(h("p", { class: "error", role: "alert" }, String(err.message || err)));
  }
}

window.addEventListener("hashchange", route);
route();
