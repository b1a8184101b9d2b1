// Drives Debian's Chromium (playwright-core, no bundled browser) against a running
// `fleetmon dashboard`. Usage: node dashboard.mjs URL OUT_DIR AGENT CHECK, URL being the
// address the dashboard printed (with its ?token=).
// Prints one JSON object of what the page showed; tests/dashboard.rs compares it with
// what the collector and Postgres hold. Screenshots go to OUT_DIR.
import { chromium } from "playwright-core";
import http from "node:http";

const [url, out, agent, check] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.FLEETMON_CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
});
const seen = {};
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  await page.goto(url);
  // The token left the address bar for a session cookie.
  seen.address_after_login = page.url();
  const row = page.locator(`#fleet tr[data-agent="${agent}"]`);
  await row.waitFor({ timeout: 30000 });
  await page.locator("#live[data-state=live]").waitFor({ timeout: 30000 });
  const cell = (field) => row.locator(`td[data-field="${field}"]`).textContent();
  seen.state = await cell("state");
  seen.cpu = await cell("cpu");
  seen.memory = await cell("memory");
  seen.labels = await cell("labels");
  // A new sample arrives without a reload: the CPU / last-sample cells change.
  const before = await row.getAttribute("data-updated") ?? (await cell("last"));
  const firstCpu = seen.cpu;
  const deadline = Date.now() + 20000;
  seen.live_update = false;
  const sample = await page.evaluate(() => new Promise((resolve) => {
    const events = new EventSource("/api/events");
    events.addEventListener("host", (e) => { events.close(); resolve(JSON.parse(e.data)); });
  }));
  while (Date.now() < deadline) {
    const cpu = await cell("cpu");
    if (cpu === `${sample.cpu_percent.toFixed(1)} %`) { seen.live_update = true; seen.cpu_after = cpu; break; }
    await page.waitForTimeout(100);
  }
  seen.first_cpu = firstCpu;
  seen.before = before;
  await page.screenshot({ path: `${out}/fleet.png`, fullPage: true });

  // Charts of the agent's history.
  await row.click();
  await page.locator("#charts .chart canvas").first().waitFor({ timeout: 20000 });
  seen.charts = await page.locator("#charts .chart").count();
  seen.chart_points = Number(await page.locator("#charts").getAttribute("data-points"));
  // The busiest processes, from the next sample.
  await page.locator("#processes tbody tr[data-pid]").first().waitFor({ timeout: 20000 });
  seen.processes = await page.locator("#processes tbody tr[data-pid]").count();
  seen.process_cells = await page.locator("#processes tbody tr[data-pid]").first()
    .locator("td").allTextContents();
  await page.screenshot({ path: `${out}/agent.png`, fullPage: true });
  // A year's chart reads day rollups.
  await page.locator('[data-range="1y"]').click();
  await page.locator('#charts[data-resolution="day"]').waitFor({ timeout: 20000 });
  seen.year_points = Number(await page.locator("#charts").getAttribute("data-points"));
  await page.locator('[data-range="1h"]').click();
  await page.locator('#charts[data-resolution="raw"]').waitFor({ timeout: 20000 });

  // The attack: a page on another local origin (same site: 127.0.0.1, another port)
  // posts a plain form to pause the check, in the browser that holds the session.
  const origin = new URL(url).origin;
  const evil = http.createServer((_, res) => {
    res.setHeader("content-type", "text/html");
    res.end(`<form method="POST" action="${origin}/api/checks/${encodeURIComponent(check)}/pause"></form>
             <script>document.forms[0].submit()</script>`);
  });
  await new Promise((resolve) => evil.listen(0, "127.0.0.1", resolve));
  const attack = await context.newPage();
  const answered = attack.waitForResponse((r) => r.url().includes("/api/checks/"));
  await attack.goto(`http://127.0.0.1:${evil.address().port}/`);
  const answer = await answered;
  seen.attack_status = answer.status();
  seen.attack_answer = (await answer.text()).trim();
  await attack.close();
  evil.close();
  seen.paused_after_attack = (await page.evaluate(async (id) => {
    const checks = await (await fetch("/api/checks")).json();
    return checks.find((c) => c.id === id).paused;
  }, check));

  // The check, its location result, then paused from the page.
  const checkRow = page.locator(`#checks tr[data-check-row="${check}"]`);
  await checkRow.waitFor({ timeout: 20000 });
  await checkRow.locator(`[data-location="${agent}"].state-ok`).waitFor({ timeout: 20000 });
  seen.check_location = await checkRow.locator(`[data-location="${agent}"]`).textContent();
  // The summary line counts what the sections show.
  await page.locator('[data-summary="checks"]:has-text("1 up")').waitFor({ timeout: 20000 });
  seen.summary_checks = await page.locator('[data-summary="checks"]').textContent();
  seen.check_state = await checkRow.locator('td[data-field="check-state"]').textContent();
  await checkRow.locator("button").click();
  await page.locator(`#checks tr[data-check-row="${check}"] td[data-field="check-state"]:has-text("paused")`).waitFor({ timeout: 20000 });
  seen.check_state_after = await page.locator(`#checks tr[data-check-row="${check}"] td[data-field="check-state"]`).textContent();
  // The pause is in the changes panel, with who made it.
  const change = page.locator(`#audit tr[data-action="checks.pause"][data-subject="${check}"]`);
  await change.waitFor({ timeout: 20000 });
  seen.audit_actor = await change.locator("td").nth(1).textContent();

  // Availability and alerts.
  await page.locator(`#sites tr[data-site]`).first().waitFor({ timeout: 40000 });
  seen.site_uptime = await page.locator(`#sites tr[data-site] td[data-field="uptime-24h"]`).first().textContent();
  seen.alerts = await page.locator("#alerts").textContent();
  seen.summary_agents = await page.locator('[data-summary="agents"]').textContent();
  seen.summary_alerts = await page.locator('[data-summary="alerts"]').textContent();
  seen.summary_checks_after = await page.locator('[data-summary="checks"]').textContent();
  seen.summary_links = await page.locator("#summary a").evaluateAll((links) => links.map((a) => a.getAttribute("href")));
  await page.screenshot({ path: `${out}/checks.png`, fullPage: true });

  // The availability report over the default period (the last 30 days), then one
  // check's, asked from the form.
  const reported = page.locator(`#report tr[data-report="${check}"]`);
  await reported.waitFor({ timeout: 20000 });
  await page.fill('#report-form input[name="check"]', check);
  await page.click('#report-form button[type="submit"]');
  await page.locator("#report tbody tr").first().waitFor({ timeout: 20000 });
  await page.waitForFunction(() => document.querySelectorAll("#report tbody tr").length === 1);
  seen.report_rows = await page.locator("#report tbody tr").evaluateAll((rows) => rows.map((r) => r.dataset.report));
  seen.report_availability = await reported.locator('td[data-field="availability"]').textContent();
  seen.report_outages = await reported.locator('td[data-field="outages"]').textContent();
  seen.report_csv = await page.evaluate(async () => {
    const r = await fetch(document.querySelector("#report-csv").href, { credentials: "same-origin" });
    return `${r.status} ${(await r.text()).split("\n")[0]}`;
  });
  seen.report_bad = await page.evaluate(async () => {
    const r = await fetch("/api/report?from=yesterday&to=2026-12-01", { credentials: "same-origin" });
    return `${r.status} ${await r.text()}`;
  });

  // Phone width: the fleet table scrolls inside its box, the page does not.
  await page.setViewportSize({ width: 390, height: 844 });
  await page.waitForTimeout(300);
  seen.page_scrolls_sideways = await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth + 1);
  await page.screenshot({ path: `${out}/phone.png`, fullPage: true });
} finally {
  await browser.close();
}
console.log(JSON.stringify(seen));
