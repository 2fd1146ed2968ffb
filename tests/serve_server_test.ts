/**
 * Tests against real servers on loopback (child processes): classification and a fine-tuning session over
 * HTTP, the `deno serve --parallel` entry point (serving, and a signal while loading), and the crash test: a
 * server killed during a session comes back with its registered models intact and the interrupted session
 * reported as failed.
 */
import assert from "node:assert/strict";
import {
  freePort,
  parallelServeArgs,
  rootArgs,
  spawnServer,
  testImage,
  writeImageFolder,
  writeMicroModel,
} from "./_serve.ts";

Deno.env.set("VIT_QUIET", "1");
const TOKEN = "loopback-token";

async function json(res: Response) {
  const text = await res.text();
  try {
    return JSON.parse(text);
  } catch {
    throw new Error(`HTTP ${res.status}: not JSON: ${text.slice(0, 200)}`);
  }
}

async function waitState(url: string, id: string, states: string[], timeoutMs = 120_000) {
  const t0 = Date.now();
  for (;;) {
    const rec = await json(await fetch(`${url}/v1/finetune/${id}`));
    if (states.includes(rec.state)) return rec;
    if (Date.now() - t0 > timeoutMs) throw new Error(`session still ${rec.state}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

Deno.test("serve: real server on loopback, then killed mid-session and restarted", async () => {
  const root = await Deno.makeTempDir({ prefix: "vit-serve-loop-" });
  await writeMicroModel(`${root}/micro`);
  await writeImageFolder(`${root}/data/shapes`, ["circle", "square"], 4);
  const args = rootArgs(root);
  const env = { VIT_API_TOKEN: TOKEN };
  const png = await testImage("png");
  const auth = { authorization: `Bearer ${TOKEN}` };

  let server = await spawnServer(args, env);
  let killedSession: string;
  try {
    // Classification over real HTTP (multipart), and the page and metrics.
    const form = new FormData();
    form.append("image", new File([png], "x.png", { type: "image/png" }));
    let res = await fetch(`${server.url}/v1/models/base/classify`, { method: "POST", body: form });
    const out = await json(res);
    assert.equal(res.status, 200, JSON.stringify(out));
    assert.equal(out.results[0].predictions.length, 5);
    res = await fetch(`${server.url}/`);
    assert.match(await res.text(), /<title>vit-deno<\/title>/);
    // A body over the limit is refused over the network too (declared, and streamed without a length).
    res = await fetch(`${server.url}/v1/models/base/classify`, {
      method: "POST",
      headers: { "content-type": "image/png" },
      body: new Uint8Array(40 * 2 ** 20),
    });
    assert.equal(res.status, 413);
    assert.equal((await json(res)).error.code, "payload_too_large");
    let sent = 0;
    res = await fetch(`${server.url}/v1/models/base/classify`, {
      method: "POST",
      headers: { "content-type": "image/png" },
      body: new ReadableStream<Uint8Array>({
        pull(c) {
          if (sent > 40 * 2 ** 20) return c.close();
          sent += 2 ** 20;
          c.enqueue(new Uint8Array(2 ** 20));
        },
      }),
    });
    assert.equal(res.status, 413);
    assert.equal((await json(res)).error.code, "payload_too_large");

    // A session that finishes and registers a model.
    res = await fetch(`${server.url}/v1/finetune`, {
      method: "POST",
      headers: { "content-type": "application/json", ...auth },
      body: JSON.stringify({
        base_model: "base",
        dataset: "shapes",
        steps: 3,
        batch_size: 4,
        model_id: "kept",
      }),
    });
    const first = await json(res);
    assert.equal(res.status, 202, JSON.stringify(first));
    // Its event stream, over the network.
    res = await fetch(`${server.url}/v1/finetune/${first.id}/events`);
    const sse = await res.text();
    assert.match(sse, /event: state\ndata: .*"state":"succeeded"/);
    const before = await json(
      await fetch(`${server.url}/v1/models/kept/classify`, {
        method: "POST",
        headers: { "content-type": "image/png" },
        body: png,
      }),
    );
    assert.deepEqual(before.results[0].predictions.map((p: { label: string }) => p.label).sort(), [
      "circle",
      "square",
    ]);

    // A long session, killed while it runs.
    res = await fetch(`${server.url}/v1/finetune`, {
      method: "POST",
      headers: { "content-type": "application/json", ...auth },
      body: JSON.stringify({
        base_model: "base",
        dataset: "shapes",
        steps: 100000,
        batch_size: 2,
        model_id: "lost",
      }),
    });
    const long = await json(res);
    assert.equal(res.status, 202);
    killedSession = long.id;
    const running = await waitState(server.url, long.id, ["running"]);
    assert.equal(running.state, "running");
    // Let it persist some progress.
    await new Promise((r) => setTimeout(r, 1500));
    const status = await server.kill("SIGKILL");
    assert.equal(status.success, false);

    // Leftovers of a crash in the middle of writing: a half-written model folder and an extracted upload.
    await Deno.mkdir(`${root}/state/models/half.tmp-999999-0badc0de`, { recursive: true });
    await Deno.writeTextFile(`${root}/state/models/half.tmp-999999-0badc0de/model.json`, "{");
    await Deno.mkdir(`${root}/state/uploads/999999-0badc0de-0000`, { recursive: true });

    // Restart on the same state dir.
    server = await spawnServer(args, env);
    await assert.rejects(Deno.stat(`${root}/state/models/half.tmp-999999-0badc0de`));
    await assert.rejects(Deno.stat(`${root}/state/uploads/999999-0badc0de-0000`));
    // Without the token a failed session shows only its error code; with it, the detail.
    const anonymous = await json(await fetch(`${server.url}/v1/finetune/${killedSession}`));
    assert.deepEqual(anonymous.error, { code: "interrupted" }, JSON.stringify(anonymous));
    const rec = await json(await fetch(`${server.url}/v1/finetune/${killedSession}`, { headers: auth }));
    assert.equal(rec.state, "failed", JSON.stringify(rec));
    assert.equal(rec.error.code, "interrupted");
    assert.match(rec.error.message, /stopped at step \d+/);
    assert.ok(!/pid/.test(rec.error.message), rec.error.message);
    assert.ok(rec.finished);
    assert.match(server.log(), /interrupted by a restart/);
    // The registered model is intact and answers exactly as before; nothing half-written was registered.
    const models = await json(await fetch(`${server.url}/v1/models`));
    assert.deepEqual(models.models.map((m: { id: string }) => m.id).sort(), ["base", "kept"]);
    const after = await json(
      await fetch(`${server.url}/v1/models/kept/classify`, {
        method: "POST",
        headers: { "content-type": "image/png" },
        body: png,
      }),
    );
    assert.deepEqual(after.results[0].predictions, before.results[0].predictions);
    const sessions = await json(await fetch(`${server.url}/v1/finetune`));
    assert.equal(sessions.sessions.find((s: { id: string }) => s.id === first.id).state, "succeeded");
  } finally {
    await server.kill("SIGTERM");
  }
  await Deno.remove(root, { recursive: true });
});

Deno.test("serve: SIGTERM shuts down and records the running session as interrupted", async () => {
  const root = await Deno.makeTempDir({ prefix: "vit-serve-term-" });
  await writeMicroModel(`${root}/micro`);
  await writeImageFolder(`${root}/data/shapes`, ["a", "b"], 2);
  const args = ["--model", `${root}/micro`, "--state-dir", `${root}/state`, "--data-root", `${root}/data`];
  const server = await spawnServer(args, { VIT_API_TOKEN: TOKEN });
  const res = await fetch(`${server.url}/v1/finetune`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${TOKEN}` },
    body: JSON.stringify({ base_model: "micro", dataset: "shapes", steps: 100000, batch_size: 2 }),
  });
  const rec = await json(res);
  assert.equal(res.status, 202, JSON.stringify(rec));
  await waitState(server.url, rec.id, ["running"]);
  const status = await server.kill("SIGTERM");
  assert.equal(status.code, 0, server.log());
  const disk = JSON.parse(await Deno.readTextFile(`${root}/state/sessions/${rec.id}.json`));
  assert.equal(disk.state, "failed");
  assert.equal(disk.error.code, "interrupted");
  await Deno.remove(root, { recursive: true });
});

Deno.test("serve: `deno serve --parallel` entry point (routes/main.ts)", async () => {
  const root = await Deno.makeTempDir({ prefix: "vit-serve-par-" });
  await writeMicroModel(`${root}/micro`);
  const server = await spawnServer([], {}, {
    command: (port) => parallelServeArgs(port, ["--model", `${root}/micro`, "--state-dir", `${root}/state`]),
  });
  try {
    const png = await testImage("png");
    const results = await Promise.all(
      Array.from({ length: 6 }, () =>
        fetch(`${server.url}/v1/models/micro/classify`, {
          method: "POST",
          headers: { "content-type": "image/png" },
          body: png,
        }).then(async (res) => ({ status: res.status, body: await json(res) }))),
    );
    // Every worker listens only once its models are loaded: none answers `not_ready`.
    for (const r of results) {
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.equal(r.body.results[0].predictions.length, 5);
    }
  } finally {
    await server.kill("SIGTERM");
  }
  await Deno.remove(root, { recursive: true });
});

Deno.test("serve: a `deno serve` worker stopped while its models load exits 0", async () => {
  const root = await Deno.makeTempDir({ prefix: "vit-serve-early-" });
  await writeMicroModel(`${root}/micro`);
  // The manifest is served, the shards never: every worker stays loading until the signal.
  let shardRequests = 0;
  const hang = Promise.withResolvers<void>();
  const models = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const name = new URL(req.url).pathname.split("/").pop()!;
    if (name === "model.json") return new Response(await Deno.readFile(`${root}/micro/model.json`));
    shardRequests++;
    await hang.promise;
    return new Response("gone", { status: 503 });
  });
  const port = freePort();
  const child = new Deno.Command(Deno.execPath(), {
    args: parallelServeArgs(port, [
      "--model",
      `micro=http://127.0.0.1:${models.addr.port}/micro/`,
      "--state-dir",
      `${root}/state`,
    ]),
    cwd: new URL("..", import.meta.url).pathname,
    env: { VIT_BACKEND: "wasm", DENO_JOBS: "2" },
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(child.stderr).text();
  try {
    const deadline = Date.now() + 60_000;
    while (shardRequests < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    assert.ok(shardRequests >= 2, "both workers should be loading the model");
    // Not listening while loading: a client is refused rather than answered `not_ready`.
    await assert.rejects(fetch(`http://127.0.0.1:${port}/healthz`));
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
    const status = await child.status;
    clearTimeout(timer);
    assert.equal(status.code, 0, await stderr);
    assert.match(await stderr, /SIGTERM: shutting down/);
  } finally {
    hang.resolve();
    await models.shutdown();
  }
  await Deno.remove(root, { recursive: true });
});

Deno.test("serve: a missing model folder is a clear startup error", async () => {
  const root = await Deno.makeTempDir({ prefix: "vit-serve-miss-" });
  await assert.rejects(
    spawnServer(["--model", `${root}/nothing`, "--state-dir", `${root}/state`]),
    /cannot serve model .*nothing.*model\.json.*does not exist/s,
  );
  await Deno.remove(root, { recursive: true });
});
