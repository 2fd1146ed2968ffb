/**
 * Fine-tuning sessions run in a worker process (lib/serve/finetune_host.ts): the server keeps answering
 * while a session's training step runs, cancelling a session ends its worker even in the middle of a step
 * that never returns, and a worker that crashes fails its session with an error naming no server path and
 * gives its slot back.
 */
import assert from "node:assert/strict";
import type { FineTuner } from "../lib/serve/finetune.ts";
import { DEFAULT_LIMITS } from "../lib/serve/options.ts";
import { workerFineTuner } from "../lib/serve/finetune_host.ts";
import { processAlive } from "../lib/serve/state/liveness.ts";
import { resolveConfig } from "../lib/vit/config.ts";
import { formulaStateDict } from "../lib/weights/formula.ts";
import { saveModel } from "../lib/weights/shards.ts";
import { defaultPreprocessing } from "../lib/weights/manifest.ts";
import {
  MICRO,
  rootArgs,
  spawnServer,
  startTestService,
  type TestServer,
  writeImageFolder,
  writeMicroModel,
} from "./_serve.ts";

Deno.env.set("VIT_QUIET", "1");

const json = (token: string) => ({ "content-type": "application/json", authorization: `Bearer ${token}` });

async function startSession(s: TestServer, body: Record<string, unknown>): Promise<{ id: string }> {
  const res = await s.app.request("/v1/finetune", {
    method: "POST",
    headers: json(s.token),
    body: JSON.stringify({ base_model: "micro", dataset: "d", ...body }),
  });
  const rec = await res.json();
  assert.equal(res.status, 202, JSON.stringify(rec));
  return rec;
}

async function waitState(s: TestServer, id: string, states: string[], timeoutMs = 120_000) {
  const t0 = Date.now();
  for (;;) {
    const rec = await s.service.sessions.get(id);
    if (states.includes(rec.state)) return rec;
    if (Date.now() - t0 > timeoutMs) {
      throw new Error(`session ${id} still ${rec.state} after ${timeoutMs} ms`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

Deno.test("finetune worker: /healthz is answered over the network while a training step runs", {
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  // A base model wide enough that one training step takes a noticeable time on wasm (64 tokens, dim 192).
  const root = await Deno.makeTempDir({ prefix: "vit-ftw-" });
  const config = resolveConfig({ ...MICRO, embed_dim: 192, depth: 6, num_heads: 3 });
  await saveModel(`${root}/micro`, {
    config,
    state: formulaStateDict(config),
    preprocessing: { ...defaultPreprocessing(32), interpolation: "bilinear", crop_pct: 1 },
    labels: Array.from({ length: config.num_classes }, (_, i) => `c${i}`),
    source: { file: "formula weights (tests)" },
  });
  const s = await startTestService({ root });
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, s.app.fetch);
  try {
    await writeImageFolder(`${s.dataRoot}/d`, ["a", "b"], 8);
    const rec = await startSession(s, { steps: 4, batch_size: 16, freeze: "none" });
    // Health checks over a real socket, one every 20 ms, each noting the step the session had reached.
    const answered = new Map<number, number>();
    let session = await s.service.sessions.get(rec.id);
    while (session.state === "queued" || session.state === "running") {
      const res = await fetch(`http://127.0.0.1:${server.addr.port}/healthz`);
      assert.equal(res.status, 200);
      await res.body?.cancel();
      session = await s.service.sessions.get(rec.id);
      await new Promise((r) => setTimeout(r, 20));
      if (session.state === "running") {
        answered.set(session.progress.step, (answered.get(session.progress.step) ?? 0) + 1);
      }
    }
    assert.equal(session.state, "succeeded", JSON.stringify(session.error));
    // Between the end of step 1 and the end of step 3, only training steps run (no loading, no saving): on
    // the server's own thread a step holds the event loop, and at most a request or two would be answered
    // between two steps; in a worker, many are answered during each step.
    const during = [1, 2].map((k) => answered.get(k) ?? 0);
    console.log(`health answers during steps 2 and 3: ${during.join(", ")}; by step: ${[...answered]}`);
    assert.ok(Math.max(...during) >= 5, `health answers during training steps 2 and 3: ${during}`);
  } finally {
    await server.shutdown();
    await s.close();
    await Deno.remove(root, { recursive: true }).catch(() => {});
  }
});

const testWorker = new URL("./_tuner_worker.ts", import.meta.url).pathname;

Deno.test("finetune worker: cancelling ends a worker stuck in a step; its slot is free again", {
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  const pidFile = await Deno.makeTempFile();
  const s = await startTestService({
    tuner: workerFineTuner({ script: { path: testWorker, args: ["spin", pidFile] } }),
    limits: { maxSessions: 1 } as never,
  });
  try {
    await writeImageFolder(`${s.dataRoot}/d`, ["a", "b"], 2);
    const rec = await startSession(s, { steps: 10 });
    const t0 = Date.now();
    while ((await s.service.sessions.get(rec.id)).progress.step < 1) {
      assert.ok(Date.now() - t0 < 60_000, "the worker never reported its first step");
      await new Promise((r) => setTimeout(r, 20));
    }
    // The worker now spins in its second step: only killing it can end the session.
    while (!(await Deno.readTextFile(pidFile))) await new Promise((r) => setTimeout(r, 20));
    const pid = Number(await Deno.readTextFile(pidFile));
    assert.ok(processAlive(pid));
    const res = await s.app.request(`/v1/finetune/${rec.id}`, { method: "DELETE", headers: json(s.token) });
    assert.equal(res.status, 202);
    await res.body?.cancel();
    const done = await waitState(s, rec.id, ["cancelled", "failed", "succeeded"], 30_000);
    assert.equal(done.state, "cancelled");
    assert.ok(!processAlive(pid), "the worker process is gone");
    // The slot is free: the next session is accepted (and cancelled in turn).
    const next = await startSession(s, { steps: 10 });
    await s.service.sessions.cancel(next.id);
    assert.equal(
      (await waitState(s, next.id, ["cancelled", "failed", "succeeded"], 30_000)).state,
      "cancelled",
    );
  } finally {
    await s.close();
    await Deno.remove(pidFile);
  }
});

Deno.test("finetune worker: a crashing worker fails its session, names no server path, frees the slot", {
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  const s = await startTestService({
    tuner: workerFineTuner({ script: { path: testWorker, args: ["crash"] } }),
    limits: { maxSessions: 1 } as never,
  });
  try {
    await writeImageFolder(`${s.dataRoot}/d`, ["a", "b"], 2);
    const rec = await startSession(s, { steps: 10 });
    await waitState(s, rec.id, ["failed", "cancelled", "succeeded"], 60_000);
    await s.service.sessions.settle();
    const res = await s.app.request(`/v1/finetune/${rec.id}`, { headers: json(s.token) });
    const text = await res.text();
    const view = JSON.parse(text);
    assert.equal(view.state, "failed");
    assert.equal(view.error.code, "finetune_failed");
    assert.match(
      view.error.message,
      /training worker stopped unexpectedly \(exit code 1\): .*memory access out of bounds/,
    );
    assert.ok(!text.includes(Deno.cwd()) && !text.includes(s.root), text);
    assert.equal(view.progress.step, 1);
    // The server lives on, and the slot is free for the next session.
    const health = await s.app.request("/healthz");
    assert.equal(health.status, 200);
    await health.body?.cancel();
    const next = await startSession(s, { steps: 10 });
    assert.equal((await waitState(s, next.id, ["failed", "cancelled", "succeeded"], 60_000)).state, "failed");
  } finally {
    await s.close();
  }
});

Deno.test("sessions that run at once each count on a part of the free memory", {
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  // Records each session's memory share; the first session holds until the second has started.
  const shares: Array<number | undefined> = [];
  let release!: () => void;
  const held = new Promise<void>((r) => release = r);
  const tuner: FineTuner = async (spec) => {
    shares.push(spec.memoryShare);
    if (shares.length === 1) await held;
    throw new Error("recorded");
  };
  const s = await startTestService({ tuner, limits: { ...DEFAULT_LIMITS, maxSessions: 3 } });
  try {
    await writeImageFolder(`${s.dataRoot}/d`, ["a", "b"], 2);
    const first = await startSession(s, { steps: 1 });
    for (const deadline = Date.now() + 60_000; shares.length < 1;) {
      assert.ok(Date.now() < deadline, "the first session never reached its tuner");
      await new Promise((r) => setTimeout(r, 10));
    }
    const second = await startSession(s, { steps: 1 });
    await waitState(s, second.id, ["failed"]);
    release();
    await waitState(s, first.id, ["failed"]);
    const third = await startSession(s, { steps: 1 });
    await waitState(s, third.id, ["failed"]);
    assert.deepEqual(shares, [1, 0.5, 1], "alone, then one of two, then alone again");
  } finally {
    await s.close();
  }
});

/** The pids of `pid`'s child processes (Linux). */
function childPids(pid: number): number[] {
  const out: number[] = [];
  for (const t of Deno.readDirSync(`/proc/${pid}/task`)) {
    const text = Deno.readTextFileSync(`/proc/${pid}/task/${t.name}/children`).trim();
    if (text) out.push(...text.split(/\s+/).map(Number));
  }
  return out;
}

Deno.test({
  name: "finetune worker: a worker whose server was killed stops on its own",
  // Reads a process's children from /proc.
  ignore: Deno.build.os !== "linux",
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  const root = await Deno.makeTempDir({ prefix: "vit-ftw-kill-" });
  try {
    await writeMicroModel(`${root}/micro`);
    await writeImageFolder(`${root}/data/d`, ["a", "b"], 4);
    const token = "kill-test-token";
    const server = await spawnServer(rootArgs(root), { VIT_API_TOKEN: token });
    let workers: number[] = [];
    try {
      const res = await fetch(`${server.url}/v1/finetune`, {
        method: "POST",
        headers: json(token),
        body: JSON.stringify({ base_model: "base", dataset: "d", steps: 100000, batch_size: 4 }),
      });
      const rec = await res.json();
      assert.equal(res.status, 202, JSON.stringify(rec));
      const t0 = Date.now();
      for (;;) {
        const now = await (await fetch(`${server.url}/v1/finetune/${rec.id}`)).json();
        if (now.progress.step >= 2) break;
        assert.ok(Date.now() - t0 < 120_000, `the session did not train: ${JSON.stringify(now)}`);
        await new Promise((r) => setTimeout(r, 100));
      }
      workers = childPids(server.child.pid);
      assert.equal(workers.length, 1, `one worker process: ${workers}`);
    } finally {
      await server.kill("SIGKILL");
    }
    // Its stdin closed with the server: it stops instead of training on for nobody.
    const t0 = Date.now();
    while (processAlive(workers[0])) {
      assert.ok(Date.now() - t0 < 60_000, "the worker outlived its server by a minute");
      await new Promise((r) => setTimeout(r, 100));
    }
  } finally {
    await Deno.remove(root, { recursive: true }).catch(() => {});
  }
});
