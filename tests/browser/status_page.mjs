// Drives Debian's Chromium (playwright-core) against a running `fleetmon status-page`.
// Usage: node status_page.mjs URL OUT_DIR. Loads the page with JavaScript off and on (and
// on a phone's screen), and prints one JSON object of what each showed; with JavaScript
// on it then says `loaded` on stderr and waits until the banner changes without a
// reload (the test changes the state when it reads that line).
// tests/status_page.rs compares it with what PostgreSQL holds.
import { chromium } from "playwright-core";

const [url, out] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.FLEETMON_CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
});

// What a page shows: the banner, each check's state and bars, incidents, maintenance.
async function read(page) {
  const checks = {};
  for (const article of await page.locator("article.check").all()) {
    const id = (await article.getAttribute("id")).replace(/^check-/, "");
    const bars = article.locator("ol.days li");
    checks[id] = {
      name: await article.locator("h3").textContent(),
      state: await article.getAttribute("data-state"),
      state_text: await article.locator(".state").textContent(),
      target: await article.locator(".target").count() ? await article.locator(".target").textContent() : null,
      bars: await bars.count(),
      visible_bars: await article.locator("ol.days li:visible").count(),
      bar_classes: await bars.evaluateAll((items) => items.map((li) => li.className)),
      bar_titles: await bars.evaluateAll((items) => items.map((li) => li.title)),
      uptime: await article.locator(".uptime").textContent(),
    };
  }
  return {
    title: await page.title(),
    banner: await page.locator("#banner").textContent(),
    banner_class: await page.locator("#banner").getAttribute("class"),
    checks,
    incidents: await Promise.all((await page.locator("#incidents article").all()).map(async (article) => ({
      title: await article.locator("h3").textContent(),
      status: await article.locator(".status").textContent(),
      affects: await article.locator(".affects").textContent(),
      updates: await article.locator(".timeline li").allTextContents(),
    }))),
    maintenance: await page.locator("#maintenance li").allTextContents(),
    text: await page.locator("body").innerText(),
    html: await page.content(),
  };
}

const seen = {};
try {
  const still = await browser.newContext({ javaScriptEnabled: false, viewport: { width: 1280, height: 900 } });
  const plain = await still.newPage();
  await plain.goto(url);
  seen.without_js = await read(plain);
  await plain.screenshot({ path: `${out}/status-page.png`, fullPage: true });

  const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true });
  const small = await phone.newPage();
  await small.goto(url);
  seen.phone = await read(small);
  seen.phone.scroll_width = await small.evaluate(() => document.documentElement.scrollWidth);
  await small.screenshot({ path: `${out}/status-page-phone.png`, fullPage: true });

  const live = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await live.newPage();
  await page.goto(url);
  seen.with_js = await read(page);
  const before = seen.with_js.banner;
  // Tell the test the page is loaded; it changes the state and the page must follow.
  process.stderr.write("loaded\n");
  await page.waitForFunction((text) => document.querySelector("#banner").textContent !== text, before, { timeout: 60000 });
  seen.after_change = await read(page);
  seen.reloaded = await page.evaluate(() => performance.getEntriesByType("navigation").length);
} finally {
  await browser.close();
}
console.log(JSON.stringify(seen));
