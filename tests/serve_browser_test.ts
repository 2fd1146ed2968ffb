/**
 * The web page in real headless Chromium (Debian's `chromium` package, driven by playwright-core): upload an
 * image and see the predictions, then start a fine-tuning session and watch it finish. Screenshots go to a
 * temp dir, or to `docs/` with `VIT_UPDATE_SCREENSHOTS=1`. Skipped when /usr/bin/chromium is absent.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { drawnAirplane, spawnServer, writeImageFolder, writeMicroModel } from "./_serve.ts";

const CHROMIUM = "/usr/bin/chromium";
const FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
];

function haveChromium(): boolean {
  try {
    Deno.statSync(CHROMIUM);
    return true;
  } catch {
    console.warn(
      `SKIP web page browser test: ${CHROMIUM} is absent (install Debian's chromium: apt-get install chromium)`,
    );
    return false;
  }
}

function shippedModel(): string | undefined {
  // VIT_SCREENSHOT_MODEL: another model folder to show (e.g. a training checkpoint).
  const dir = Deno.env.get("VIT_SCREENSHOT_MODEL") ?? new URL("../weights", import.meta.url).pathname;
  try {
    Deno.statSync(`${dir}/model.json`);
    return dir;
  } catch {
    return undefined;
  }
}

Deno.test({
  name: "serve: web page in headless Chromium (classify, fine-tune)",
  ignore: !haveChromium(),
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const { chromium } = await import("playwright-core");
    const root = await Deno.makeTempDir({ prefix: "vit-serve-web-" });
    const shots = Deno.env.get("VIT_UPDATE_SCREENSHOTS") === "1"
      ? new URL("../docs", import.meta.url).pathname
      : root;
    await writeMicroModel(`${root}/micro`);
    await writeImageFolder(`${root}/data/shapes`, ["circle", "square"], 4);
    const shipped = shippedModel();
    const models = shipped
      ? ["--model", shipped, "--model", `micro=${root}/micro`]
      : ["--model", `micro=${root}/micro`];
    const server = await spawnServer(
      [...models, "--state-dir", `${root}/state`, "--data-root", `${root}/data`],
      { VIT_API_TOKEN: "page-token" },
    );
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: FLAGS });
    try {
      const page = await browser.newPage({ viewport: { width: 1120, height: 760 } });
      const errors: string[] = [];
      page.on("pageerror", (e) => errors.push(e.message));
      await page.goto(`${server.url}/`);
      await page.waitForSelector("body[data-ready='1']");
      assert.match(await page.textContent("#status") ?? "", /ready/);

      // Upload an image and see five predictions.
      const image = await drawnAirplane(128);
      await page.setInputFiles("#file", {
        name: "airplane.png",
        mimeType: "image/png",
        buffer: Buffer.from(image),
      });
      await page.waitForSelector("#predictions .pred:nth-child(5)", { timeout: 60_000 });
      const labels = await page.$$eval("#predictions .pred .label", (els) => els.map((e) => e.textContent));
      assert.equal(labels.length, 5);
      const model = await page.inputValue("#model");
      const info = await (await fetch(`${server.url}/v1/models/${model}`)).json();
      for (const l of labels) assert.ok(info.labels.includes(l), `unknown label ${l}`);
      const percents = await page.$$eval(
        "#predictions .pred .num",
        (els) => els.map((e) => parseFloat(e.textContent!)),
      );
      assert.deepEqual(percents, [...percents].sort((a, b) => b - a));
      assert.match(await page.textContent("#classify-meta") ?? "", /airplane\.png: 128×128/);
      await page.screenshot({ path: `${shots}/screenshot.png`, fullPage: true });

      // Start a fine-tuning session from the page and watch it finish.
      await page.fill("#token", "page-token");
      await page.selectOption("#base", "micro");
      await page.fill("#dataset", "shapes");
      await page.fill("#steps", "6");
      await page.fill("#batch", "4");
      await page.fill("#newid", "shapes-web");
      await page.click("#start");
      await page.waitForSelector("#session:has-text('succeeded')", { timeout: 120_000 });
      await page.screenshot({ path: `${shots}/screenshot-finetune.png`, fullPage: true });
      // A bad upload shows the server's message instead of predictions.
      await page.setInputFiles("#file", {
        name: "notes.png",
        mimeType: "image/png",
        buffer: Buffer.from("this is a text file, not a png image"),
      });
      await page.waitForSelector("#classify-error:not(:empty)");
      assert.match(await page.textContent("#classify-error") ?? "", /415 unsupported_image_format/);
      assert.equal(await page.isVisible("#preview"), false);

      assert.deepEqual(errors, []);
    } finally {
      await browser.close();
      await server.kill("SIGTERM");
    }
    await Deno.remove(root, { recursive: true });
  },
});
