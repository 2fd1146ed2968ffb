/**
 * The command-line tools of the service: `deno task classify` agrees with the server's answer for the same
 * image and reports undecodable files by name; `deno task loadtest` runs a short bounded load with a
 * fine-tuning session and reports no failure.
 */
import assert from "node:assert/strict";
import { startTestService, testImage, writeMicroModel } from "./_serve.ts";

Deno.env.set("VIT_QUIET", "1");
const ROOT = new URL("..", import.meta.url).pathname;

async function run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args,
    cwd: ROOT,
    env: { VIT_BACKEND: "wasm", VIT_QUIET: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

Deno.test("deno task classify: top-k per file, same as the server, bad files named", {
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  const s = await startTestService();
  try {
    const png = await testImage("png");
    await Deno.writeFile(`${s.root}/a.png`, png);
    await Deno.writeTextFile(`${s.root}/bad.jpg`, "definitely not a jpeg file");
    const r = await run([
      "run",
      "-A",
      "scripts/classify.ts",
      "--model",
      s.modelDir,
      "--top-k",
      "4",
      "--json",
      `${s.root}/a.png`,
      `${s.root}/bad.jpg`,
    ]);
    assert.equal(r.code, 1, r.stderr);
    const out = JSON.parse(r.stdout);
    assert.equal(out.results.length, 1);
    assert.equal(out.results[0].predictions.length, 4);
    assert.equal(out.errors.length, 1);
    assert.match(out.errors[0].error, /bad\.jpg: not a JPEG, PNG or WebP/);
    const res = await s.app.request("/v1/models/micro/classify?top_k=4", {
      method: "POST",
      headers: { "content-type": "image/png" },
      body: png,
    });
    const server = (await res.json()).results[0].predictions;
    out.results[0].predictions.forEach((p: { label: string; probability: number }, i: number) => {
      assert.equal(p.label, server[i].label);
      assert.ok(Math.abs(p.probability - server[i].probability) < 1e-5);
    });
    const text = await run(["run", "-A", "scripts/classify.ts", "--model", s.modelDir, `${s.root}/a.png`]);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /a\.png \(40×30\)\n(\s+\d+\.\d+%\s+\w+\n){5}/);
    const missing = await run([
      "run",
      "-A",
      "scripts/classify.ts",
      "--model",
      `${s.root}/nope`,
      `${s.root}/a.png`,
    ]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /cannot load model .*nope.*does not exist/);
  } finally {
    await s.close();
  }
});

Deno.test("deno task loadtest: short bounded run, no failures", async () => {
  const root = await Deno.makeTempDir({ prefix: "vit-loadtest-test-" });
  await writeMicroModel(`${root}/micro`);
  const r = await run([
    "run",
    "-A",
    "scripts/loadtest.ts",
    "--model",
    `${root}/micro`,
    "--clients",
    "8",
    "--duration",
    "3",
    "--max-duration",
    "60",
    "--finetune-steps",
    "6",
    "--max-queue",
    "4",
    "--json",
    `${root}/report.json`,
  ]);
  assert.equal(r.code, 0, r.stderr.slice(-2000));
  const report = JSON.parse(await Deno.readTextFile(`${root}/report.json`));
  assert.equal(report.failures, 0);
  assert.ok(report.requests_ok > 0);
  assert.equal(report.finetune.state, "succeeded");
  assert.equal(report.server_healthy_after, true);
  assert.ok(report.latency_ms.p99 >= report.latency_ms.p50);
  // Inference only, the reference for the figures with a session.
  const alone = await run([
    "run",
    "-A",
    "scripts/loadtest.ts",
    "--model",
    `${root}/micro`,
    "--clients",
    "4",
    "--duration",
    "2",
    "--finetune-steps",
    "0",
    "--json",
    `${root}/alone.json`,
  ]);
  assert.equal(alone.code, 0, alone.stderr.slice(-2000));
  const reference = JSON.parse(await Deno.readTextFile(`${root}/alone.json`));
  assert.equal(reference.finetune, null);
  assert.equal(reference.failures, 0);
  assert.ok(reference.requests_ok > 0);
  await Deno.remove(root, { recursive: true });
});
