// The console end to end in headless Chromium (playwright-core), against a running
// `microseg serve` on the demo shop. Driven by crates/microseg/tests/cli/console.rs, which
// starts the server and passes what to expect (computed from the demo's CSV files):
//
//   MICROSEG_PLAYWRIGHT  a directory whose node_modules holds playwright-core
//   BASE                 the server, http://127.0.0.1:PORT
//   TOKEN, WRITE_KEY     an admin token and a write key
//   OUT                  where screenshots go (kept as artefacts)
//   PROFILES             profiles in the workspace
//   MTB_SIZE             people with discipline mountain and skill amateur
//   PROFILE              a profile to open; PROFILE_EMAIL its e-mail; PROFILE_IN_FEMALE_MTB 1/0
//   CAMPAIGN             a campaign with results
//
// Exit 0 when every check passes; otherwise the first failure is printed and it exits 1.
import { createRequire } from "node:module";
import path from "node:path";

const require = createRequire(path.join(process.env.MICROSEG_PLAYWRIGHT, "package.json"));
const { chromium } = require("playwright-core");

const env = (k) => {
  const v = process.env[k];
  if (v === undefined) throw new Error(`${k} is not set`);
  return v;
};
const BASE = env("BASE");
const OUT = env("OUT");
const TOKEN = env("TOKEN");

const steps = [];
const HOSTILE = "<img src=x onerror=alert('xss')><script>alert('xss')</script>";
function check(ok, what) {
  if (!ok) throw new Error(`check failed: ${what}`);
  steps.push(what);
  console.log(`ok - ${what}`);
}

const problems = [];
/** Error answers a step provokes on purpose: "STATUS /path". */
const allowed = new Set();
function watch(page, label) {
  page.on("console", (m) => {
    // The browser logs an error answer it was asked to provoke; nothing else may log one.
    if (m.type() === "error" && allowed.size && m.text().startsWith("Failed to load resource: the server responded with a status of 400")) return;
    if (m.type() === "error") problems.push(`${label}: console error: ${m.text()}`);
  });
  page.on("pageerror", (e) => problems.push(`${label}: page error: ${e.message}`));
  page.on("requestfailed", (r) => {
    // Leaving the segments page ends its change stream on purpose.
    if (r.url().endsWith("/v1/changes") && /ABORTED/.test(r.failure()?.errorText || "")) return;
    problems.push(`${label}: request failed: ${r.method()} ${r.url()} ${r.failure()?.errorText} (after: ${steps.at(-1)})`);
  });
  page.on("response", (r) => {
    if (r.status() >= 400 && !allowed.has(`${r.status()} ${new URL(r.url()).pathname}`)) problems.push(`${label}: HTTP ${r.status()} for ${r.url()}`);
  });
}

/** The data requests (`/v1/...`) a step makes, to check each page asks once. */
function requests(page) {
  const seen = [];
  const on = (r) => { if (new URL(r.url()).pathname.startsWith("/v1/") && !r.url().endsWith("/v1/changes")) seen.push(new URL(r.url()).pathname); };
  page.on("request", on);
  return () => { page.off("request", on); return seen; };
}

async function login(page) {
  await page.goto(`${BASE}/`);
  await page.waitForSelector("#login:not([hidden])");
  // The token field has the focus: typing and Enter log in, no mouse needed.
  check(await page.evaluate(() => document.activeElement?.id) === "token", "the login form has the focus");
  await page.keyboard.type(TOKEN);
  await page.keyboard.press("Enter");
  await page.waitForSelector("#page h1:text('Overview')");
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
});
let failed = false;
let current = null;
try {
  // ---- desktop, 1280 × 800 -------------------------------------------------------------
  const desktop = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await desktop.newPage();
  current = page;
  watch(page, "desktop");
  // Prompts are answered from this queue, in order; alerts are read and closed.
  const answers = [];
  const alerts = [];
  page.on("dialog", async (d) => {
    if (d.type() === "prompt") await d.accept(answers.shift() ?? "");
    else { alerts.push(d.message()); await d.accept(); }
  });

  // A wrong token is refused and says so.
  await page.goto(`${BASE}/`);
  await page.waitForSelector("#login:not([hidden])");
  await page.fill("#token", "msa_not_a_token");
  await page.press("#token", "Enter");
  await page.waitForSelector("#login-error:text('refused')");
  check(true, "a wrong token is refused with a message");
  problems.length = 0; // the 401 of that attempt was expected

  let done = requests(page);
  await login(page);
  const profilesText = await page.textContent(".kpi:has(span:text('Profiles')) b");
  check(profilesText.replace(/,/g, "") === env("PROFILES"), `overview shows ${env("PROFILES")} profiles (got ${profilesText})`);
  check(await page.locator("#page svg.chart").count() >= 7, "overview draws the RFM heatmap and the distributions");
  check(await page.locator("#page svg.chart title:text-matches('recency score')").count() === 1, "the recency × frequency heatmap is there");
  check(await page.locator("#ingest-rate b").textContent() !== "", "the ingest rate is shown");
  let seen = done();
  check(seen.filter((p) => p.startsWith("/v1/console/")).length === 1 && seen.includes("/v1/console/overview"), `the overview's data is one request (${seen.join(", ")})`);
  await page.screenshot({ path: path.join(OUT, "overview.png"), fullPage: true });

  // Events sent now show as the ingest rate within a refresh (every 5 s).
  const batch = Array.from({ length: 200 }, (_, i) => ({ type: "track", userId: `c${String(1 + (i % 50)).padStart(7, "0")}`, event: "page_viewed", properties: { path: "/console-test" } }));
  const sent = await fetch(`${BASE}/v1/batch`, {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: `Basic ${Buffer.from(`${env("WRITE_KEY")}:`).toString("base64")}` },
    body: JSON.stringify({ batch }),
  });
  check(sent.status === 200, "a batch of 200 events is accepted");
  await page.waitForFunction(() => !/^0\.0 /.test(document.querySelector("#ingest-rate b").textContent), null, { timeout: 15000 });
  check(true, `the ingest rate shows them (${await page.textContent("#ingest-rate b")})`);

  // ---- keyboard: skip link, then the nav ------------------------------------------------
  await page.evaluate(() => document.activeElement?.blur());
  await page.keyboard.press("Tab");
  check(await page.evaluate(() => document.activeElement?.className) === "skip", "Tab first reaches the skip link");
  await page.keyboard.press("Tab");
  await page.keyboard.press("Tab");
  check(await page.evaluate(() => document.activeElement?.textContent) === "Segments", "Tab reaches the Segments link");
  done = requests(page);
  await page.keyboard.press("Enter");
  await page.waitForSelector("#page h1:text('Segments')");
  await page.waitForSelector("#seg-condition");
  seen = done();
  check(seen.length === 1 && seen[0] === "/v1/console/segments", `the segments page's data is one request (${seen.join(", ")})`);
  check(await page.locator("#page table tbody tr").count() >= 3, "the segments are listed");
  check(await page.locator("#page table svg.spark").count() >= 3, "each segment has its trend");

  // ---- the editor: live size and a syntax error at its place ----------------------------
  await page.fill("#seg-condition", 'discipline = "mountain" and skill = "amateur"');
  await page.waitForSelector("#seg-size");
  const sizeText = await page.textContent("#seg-size");
  check(sizeText.startsWith(`${Number(env("MTB_SIZE")).toLocaleString("en")} profiles`), `the live size is ${env("MTB_SIZE")} (got "${sizeText}")`);
  await page.fill("#seg-condition", 'discipline = "mountain" and\nskill = ');
  await page.waitForSelector("#seg-error");
  const error = await page.textContent("#seg-error");
  check(error.includes("line 2, column 9"), `the syntax error is at line 2, column 9 (got "${error}")`);
  const caret = await page.textContent("#seg-status pre.caret");
  check(caret === "skill = \n        ^", `the caret points under the end of line 2 (got ${JSON.stringify(caret)})`);
  await page.screenshot({ path: path.join(OUT, "segment-error.png"), fullPage: true });
  await page.fill("#seg-condition", 'discipline = "mountain" and skill = "amateur"');
  await page.waitForSelector("#seg-size");
  await page.fill("#seg-name", "mtb_amateurs");
  await page.fill("#seg-description", "amateur mountain bikers");
  await page.click("#seg-save");
  await page.waitForSelector("#seg-saved.ok");
  const saved = await page.textContent("#seg-saved");
  check(saved.startsWith("Saved mtb_amateurs (version 1)") && saved.includes(`${Number(env("MTB_SIZE")).toLocaleString("en")} profiles`), `saved with its size (got "${saved}")`);

  // A person who becomes an amateur mountain biker streams in.
  const identify = await fetch(`${BASE}/v1/identify`, {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: `Basic ${Buffer.from(`${env("WRITE_KEY")}:`).toString("base64")}` },
    // A hostile trait value (anyone with a write key can send one): shown as text later.
    body: JSON.stringify({ userId: "console_newcomer", traits: { discipline: "mountain", skill: "amateur", first_name: HOSTILE } }),
  });
  check(identify.status === 200, "the identify call is accepted");
  await page.waitForSelector("#changes li:text('console_newcomer entered mtb_amateurs')", { timeout: 15000 });
  check(true, "the entry streams into the page");
  await page.screenshot({ path: path.join(OUT, "segments.png"), fullPage: true });

  // ---- explore: overlaps, the tree, a node made a segment -------------------------------
  done = requests(page);
  await page.goto(`${BASE}/#/explore?segments=mtb_amateurs,female_amateur_mtb,persona_1&by=discipline,skill,gender`);
  await page.waitForSelector("#tree");
  seen = done();
  check(seen.length === 1 && seen[0] === "/v1/console/explore", `the explore page's data is one request (${seen.join(", ")})`);
  check(await page.locator("#explore-out svg.chart title:text('Share of the row\\'s segment also in the column\\'s')").count() === 1, "the overlap heatmap is drawn");
  // female_amateur_mtb is inside mtb_amateurs: its row's cell in that column is 100%.
  check(await page.locator("#explore-out svg.chart rect.cell title:text('female_amateur_mtb × mtb_amateurs: 100.0%')").count() === 1, "female amateur mountain bikers are all amateur mountain bikers");
  const rootText = await page.locator("#tree > ul > li > .node").first().textContent();
  // Everyone: the demo's customers and the newcomer.
  const everyone = (Number(env("PROFILES")) + 1).toLocaleString("en");
  check(rootText.includes(everyone), `the tree's root holds everyone, ${everyone} (got "${rootText}")`);
  check(await page.locator("#tree .badge:text('under floor')").count() >= 1, "nodes under the statistical floor are marked");
  const node = page.locator("#tree li:has(> .node b:text-is('skill = amateur'))").first();
  const nodeText = await node.locator("> .node").textContent();
  const nodeSize = Number(nodeText.match(/skill = amateur([\d,]+)/)[1].replace(/,/g, ""));
  answers.push("tree_node_segment");
  await node.locator("> .node button").click();
  await page.waitForTimeout(300);
  const made = await (await fetch(`${BASE}/v1/segments/tree_node_segment`, { headers: { Authorization: `Bearer ${TOKEN}` } })).json();
  check(made.size === nodeSize, `the node became a segment of its ${nodeSize} people (got ${made.size}: ${made.condition})`);
  check(await page.locator("#explore-out svg.chart title:text-matches('Spearman')").count() === 1, "the correlation heatmap is drawn");
  await page.screenshot({ path: path.join(OUT, "explore.png"), fullPage: true });

  // ---- a profile and its explain ---------------------------------------------------------
  await page.click("header nav a:text('Profile')");
  await page.waitForSelector("#profile-id");
  await page.fill("#profile-id", env("PROFILE"));
  done = requests(page);
  await page.press("#profile-id", "Enter");
  await page.waitForSelector("#profile-out");
  seen = done();
  check(seen.length === 1 && seen[0] === `/v1/console/profiles/${env("PROFILE")}`, `the profile's data is one request (${seen.join(", ")})`);
  check((await page.textContent("#profile-out")).includes(env("PROFILE_EMAIL")), "the profile shows its e-mail identity");
  check(await page.locator("#profile-out h3:text('What it would get now')").count() === 1, "the profile shows its decision");
  await page.selectOption("#explain-segment", "female_amateur_mtb");
  await page.click("#explain-go");
  await page.waitForSelector("#explain-verdict");
  const verdict = await page.textContent("#explain-verdict");
  const expected = env("PROFILE_IN_FEMALE_MTB") === "1" ? "In female_amateur_mtb" : "Not in female_amateur_mtb";
  check(verdict === expected, `explain says "${expected}" (got "${verdict}")`);
  check(await page.locator("#explain-out li").count() >= 4, "explain shows every node of the condition");
  await page.screenshot({ path: path.join(OUT, "profile.png"), fullPage: true });

  // The newcomer's hostile first name reads as text: no markup made of it, no alert.
  await page.goto(`${BASE}/#/profile?id=console_newcomer`);
  await page.waitForSelector("#profile-out");
  check((await page.textContent("#profile-out")).includes(HOSTILE), "a hostile trait value shows as the text it is");
  check(await page.locator("#profile-out img, #profile-out script").count() === 0, "no markup is made of it");
  check(!alerts.some((a) => a.includes("xss")), "and nothing it holds runs");

  // ---- discovery and personas ----------------------------------------------------------
  await page.click("header nav a:text('Discover')");
  await page.waitForSelector("#discover-go");
  await page.fill("#d-target", "orders >= 2");
  await page.fill("#d-dims", "discipline,skill,gender,income_band");
  await page.click("#discover-go");
  await page.waitForSelector("#discover-out table");
  const rows = await page.locator("#discover-out table tbody tr").count();
  check(rows >= 1, `the discovery ranks segments (${rows})`);
  check(await page.locator("#discover-out svg.chart path.whisker").count() >= 1, "the bar chart has interval whiskers");
  allowed.add("400 /v1/console/discover");
  await page.fill("#d-target", "orders >= ");
  await page.click("#discover-go");
  await page.waitForSelector("#discover-out .error");
  allowed.delete("400 /v1/console/discover");
  const targetError = await page.textContent("#discover-out .error");
  check(targetError.includes("line 1, column 10"), `a target that does not parse says where (got "${targetError}")`);
  await page.fill("#d-target", "orders >= 2");
  await page.click("#discover-go");
  await page.waitForSelector("#discover-out table");
  // The first row, saved and excluded from a campaign.
  const first = (await page.locator("#discover-out table tbody tr").first().locator("td").nth(1).textContent());
  answers.push("mtb_mailing", "repeat_buyers_found");
  await page.locator("#discover-out table tbody tr").first().locator("button:text('Exclude from campaign')").click();
  await page.waitForFunction(() => true);
  for (let i = 0; i < 50 && !alerts.some((a) => a.includes("now excludes")); i++) await page.waitForTimeout(100);
  const mailing = await (await fetch(`${BASE}/v1/campaigns/mtb_mailing`, { headers: { Authorization: `Bearer ${TOKEN}` } })).json();
  const found = await (await fetch(`${BASE}/v1/segments/repeat_buyers_found`, { headers: { Authorization: `Bearer ${TOKEN}` } })).json();
  check(mailing.campaign.exclude.includes("repeat_buyers_found") && found.condition === first, `a discovered row became a segment (${found.condition}) excluded from mtb_mailing (${JSON.stringify(mailing.campaign.exclude)})`);
  // An uplift discovery over the demo's e-mail test.
  await page.click("details summary");
  await page.fill("#d-experiment", "email_test");
  await page.fill("#d-arm", "discount_email");
  await page.fill("#d-outcome", "conversion");
  await page.fill("#d-dims", "skill,discipline,income_band");
  await page.fill("#d-support", "300");
  await page.click("#discover-go");
  await page.waitForSelector("#discover-out p:text('Overall effect')");
  const verdicts = await page.locator("#discover-out table tbody tr td:nth-child(6)").allTextContents();
  check(verdicts.length >= 1 && verdicts.every((v) => ["works", "no_effect", "backfires"].includes(v)), `the uplift discovery gives verdicts (${[...new Set(verdicts)].join(", ")})`);
  await page.screenshot({ path: path.join(OUT, "uplift.png"), fullPage: true });
  await page.fill("#d-experiment", "");
  await page.click("#personas-go");
  await page.waitForSelector("#personas-out table");
  check(await page.locator("#personas-out table tbody tr").count() === 4, "four personas");
  await page.screenshot({ path: path.join(OUT, "discover.png"), fullPage: true });

  // ---- a campaign's results --------------------------------------------------------------
  await page.click("header nav a:text('Campaigns')");
  await page.waitForSelector(`#page table a:text('${env("CAMPAIGN")}')`);
  done = requests(page);
  await page.click(`#page table a:text('${env("CAMPAIGN")}')`);
  await page.waitForSelector("#campaign-detail");
  seen = done();
  check(seen.length === 2 && seen.includes(`/v1/console/campaigns/${env("CAMPAIGN")}`), `the campaign page asks for the list and the campaign (${seen.join(", ")})`);
  const detail = await page.textContent("#campaign-detail");
  check(await page.locator("#campaign-detail svg.chart path.whisker").count() === 3, "treated, holdout and the lift each have their interval");
  check(detail.includes("treated") && detail.includes("holdout"), "treated and holdout are compared");
  check(await page.locator("#money .kpi:has(span:text('ROI'))").count() === 1 && await page.locator("#money .kpi:has(span:text('LTV / CAC'))").count() === 1, "ROI and CAC vs LTV are shown");
  await page.screenshot({ path: path.join(OUT, "campaign.png"), fullPage: true });

  // ---- a phone's width ---------------------------------------------------------------------
  const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true });
  const small = await phone.newPage();
  current = small;
  watch(small, "phone");
  await login(small);
  for (const route of ["overview", "segments", `campaigns?name=${env("CAMPAIGN")}`]) {
    await small.goto(`${BASE}/#/${route}`);
    await small.waitForSelector("#page h1");
    await small.waitForTimeout(300);
    const width = await small.evaluate(() => document.documentElement.scrollWidth);
    check(width <= 390, `${route} fits a phone's width (${width} px)`);
  }
  await small.screenshot({ path: path.join(OUT, "phone-campaign.png"), fullPage: true });

  check(problems.length === 0, `no console errors, page errors or failed requests${problems.length ? `:\n  ${problems.join("\n  ")}` : ""}`);
} catch (e) {
  failed = true;
  console.error(`FAILED: ${e.message}`);
  if (current) {
    await current.screenshot({ path: path.join(OUT, "failure.png"), fullPage: true }).catch(() => {});
    console.error(`screenshot of the failure: ${path.join(OUT, "failure.png")}; page text: ${(await current.textContent("#page").catch(() => "")).slice(0, 500)}`);
  }
  if (problems.length) console.error(problems.join("\n"));
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
