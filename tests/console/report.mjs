// The HTML report in headless Chromium with the network off: no request leaves the file,
// no console error, at least five charts, the RFM and lift sections, and it prints.
//   MICROSEG_PLAYWRIGHT=DIR node report.mjs REPORT.html OUT_DIR     exit 0 = pass
import { createRequire } from "node:module";
import path from "node:path";
import fs from "node:fs";

const require = createRequire(path.join(process.env.MICROSEG_PLAYWRIGHT, "package.json"));
const { chromium } = require("playwright-core");
const [file, out] = process.argv.slice(2);

function check(ok, what) {
  if (!ok) throw new Error(`check failed: ${what}`);
  console.log(`ok - ${what}`);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
});
let failed = false;
try {
  const context = await browser.newContext({ offline: true, viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  const problems = [];
  const requested = [];
  page.on("console", (m) => { if (m.type() === "error") problems.push(`console error: ${m.text()}`); });
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("requestfailed", (r) => problems.push(`request failed: ${r.url()}`));
  page.on("request", (r) => requested.push(r.url()));
  await page.goto(`file://${path.resolve(file)}`);
  await page.waitForLoadState("load");
  check(requested.length === 1 && requested[0].startsWith("file://"), `the file asks for nothing else (${requested.join(", ")})`);
  check(problems.length === 0, `no console errors or failed requests ${problems.join("; ")}`);
  const charts = await page.locator("svg.chart").count();
  check(charts >= 5, `at least five charts (${charts})`);
  check(await page.locator("#rfm svg.chart rect.cell").count() === 25, "the RFM section has its 5 × 5 heatmap");
  check(await page.locator("#campaigns svg.chart path.whisker").count() >= 1, "the campaign section has a lift chart with its interval");
  for (const id of ["overview", "segments", "discovery", "personas", "clv"]) {
    check(await page.locator(`section#${id} h2`).count() === 1, `the ${id} section is there`);
  }
  check(await page.locator("script").count() === 0, "no script in the report");
  await page.screenshot({ path: path.join(out, "report.png"), fullPage: true });
  await page.emulateMedia({ media: "print" });
  const pdf = path.join(out, "report.pdf");
  await page.pdf({ path: pdf, format: "A4", printBackground: true });
  check(fs.statSync(pdf).size > 20000, `it prints (${fs.statSync(pdf).size} bytes of PDF)`);
} catch (e) {
  failed = true;
  console.error(`FAILED: ${e.message}`);
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
