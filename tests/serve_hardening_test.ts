/**
 * The service under attack (issue 10): request floods that would stall the event loop, decompression bombs,
 * uploads past the session limit, the `default` alias, crash leftovers under a reused PID, unbounded metric
 * labels, server paths and OS errors in answers, and clients that disconnect mid-body. Each test fails on
 * the unhardened service and bounds what the attack costs (event-loop stall, memory, disk).
 */
import assert from "node:assert/strict";
import { type ChildServer, spawnServer, writeMicroModel } from "./_serve.ts";

Deno.env.set("VIT_QUIET", "1");
const TOKEN = "hardening-token";

/** Peak resident memory of a process (VmHWM), in bytes; undefined off Linux. */
function peakRss(pid: number): number | undefined {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(Deno.readTextFileSync(`/proc/${pid}/status`));
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** Polls `url` every 50 ms until its stdin closes, then prints the slowest answer in ms. */
const POLLER = `
let done = false, slowest = 0;
(async () => { for await (const _ of Deno.stdin.readable) {} done = true; })();
await (await fetch(Deno.args[0])).body?.cancel();
while (!done) {
  const t0 = performance.now();
  await (await fetch(Deno.args[0])).body?.cancel();
  slowest = Math.max(slowest, performance.now() - t0);
  await new Promise((r) => setTimeout(r, 50));
}
console.log(slowest);
`;

/**
 * Runs `attack` while another process polls `GET /healthz` every 50 ms (another process, so that sending
 * the attack cannot delay the polling); returns the attack's response and the slowest health answer (an
 * event loop held by the attack shows up there).
 */
async function duringAttack(
  url: string,
  attack: () => Promise<Response>,
): Promise<{ res: Response; body: string; slowestHealthMs: number }> {
  const poller = new Deno.Command(Deno.execPath(), {
    args: ["eval", POLLER, `${url}/healthz`],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const writer = poller.stdin.getWriter();
  await new Promise((r) => setTimeout(r, 1000)); // the poller starts
  let res: Response, body: string;
  try {
    res = await attack();
    body = await res.text();
  } finally {
    await writer.close();
  }
  const out = new TextDecoder().decode((await poller.output()).stdout).trim();
  return { res, body, slowestHealthMs: Number(out) };
}

async function withServer(
  fn: (s: ChildServer, root: string) => Promise<void>,
  extra: string[] = [],
): Promise<void> {
  const root = await Deno.makeTempDir({ prefix: "vit-serve-hard-" });
  await writeMicroModel(`${root}/micro`);
  await Deno.mkdir(`${root}/data`, { recursive: true });
  const server = await spawnServer([
    "--model",
    `base=${root}/micro`,
    "--state-dir",
    `${root}/state`,
    "--data-root",
    `${root}/data`,
    ...extra,
  ], { VIT_API_TOKEN: TOKEN });
  try {
    await fn(server, root);
  } finally {
    await server.kill();
    await Deno.remove(root, { recursive: true }).catch(() => {});
  }
}

Deno.test("hardening 1: floods of empty parts and huge base64 neither stall /healthz nor take memory", async () => {
  await withServer(async (server) => {
    const pid = server.child.pid;
    const rss0 = peakRss(pid);
    // ~30 MiB of ~480k empty file parts: parsed as a stream, refused at the image limit.
    const part = `--B\r\nContent-Disposition: form-data; name="f"; filename="a"\r\n\r\n\r\n`;
    const flood = new TextEncoder().encode(part.repeat(Math.floor(30 * 2 ** 20 / part.length)) + "--B--\r\n");
    const a = await duringAttack(server.url, () =>
      fetch(`${server.url}/v1/models/base/classify`, {
        method: "POST",
        headers: { "content-type": "multipart/form-data; boundary=B" },
        body: flood,
      }));
    assert.equal(a.res.status, 413, a.body);
    assert.equal(JSON.parse(a.body).error.code, "too_many_images");
    assert.ok(a.slowestHealthMs < 1000, `/healthz took ${a.slowestHealthMs.toFixed(0)} ms during the flood`);

    // A 31 MB base64 image in JSON: decoded in linear time, a slice per turn.
    const b64 = "QUJD".repeat(Math.floor(31e6 / 4));
    const b = await duringAttack(server.url, () =>
      fetch(`${server.url}/v1/models/base/classify`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ image: b64 }),
      }));
    assert.ok(b.res.status >= 400 && b.res.status < 500, b.body); // not an image: refused after decoding
    assert.ok(b.slowestHealthMs < 1000, `/healthz took ${b.slowestHealthMs.toFixed(0)} ms during the base64`);
    const rss1 = peakRss(pid);
    console.log(
      `flood: /healthz ≤ ${a.slowestHealthMs.toFixed(0)} ms; base64: ≤ ${b.slowestHealthMs.toFixed(0)} ms; ` +
        `peak RSS +${(((rss1 ?? 0) - (rss0 ?? 0)) / 2 ** 20).toFixed(0)} MiB`,
    );
    if (rss0 !== undefined && rss1 !== undefined) {
      // Body, decoded bytes and the JSON string: a few copies of 31 MB, not gigabytes.
      assert.ok(rss1 - rss0 < 400 * 2 ** 20, `peak RSS grew by ${((rss1 - rss0) / 2 ** 20).toFixed(0)} MiB`);
    }
  });
});
