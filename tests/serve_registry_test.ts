/**
 * What the service keeps in its state dir beyond one process: models registered by URL survive a restart
 * (a URL that fails then makes the model unavailable, not the start fail), are seen and removed consistently
 * by the processes sharing the state dir (as the workers of `deno serve --parallel` do), and the fine-tuning
 * session limit and cancellation hold across those processes.
 */
import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import { initBackend } from "../lib/backend/backend.ts";
import type { FineTuner } from "../lib/serve/finetune.ts";
import { SessionLeases } from "../lib/serve/state/session_leases.ts";
import { RegistrationStore } from "../lib/serve/state/registrations.ts";
import {
  parallelServeArgs,
  serveFolders,
  spawnServer,
  startTestService,
  testImage,
  type TestServer,
  writeImageFolder,
  writeMicroModel,
} from "./_serve.ts";

Deno.env.set("VIT_QUIET", "1");

const opts = { sanitizeOps: false, sanitizeResources: false };

/** Runs `fn` with console.error captured; returns what it wrote. */
async function captureErrors(fn: () => Promise<void>): Promise<string> {
  const original = console.error;
  let text = "";
  console.error = (...args: unknown[]) => text += args.map(String).join(" ") + "\n";
  try {
    await fn();
  } finally {
    console.error = original;
  }
  return text;
}

async function post(s: TestServer, path: string, body: unknown, token = s.token) {
  const res = await s.app.request(path, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
    body: JSON.stringify(body),
  });
  return { status: res.status, headers: res.headers, body: await res.json() };
}

async function classify(s: TestServer, model: string, png: Uint8Array<ArrayBuffer>) {
  const res = await s.app.request(`/v1/models/${model}/classify?top_k=10`, {
    method: "POST",
    headers: { "content-type": "image/png" },
    body: png,
  });
  return { status: res.status, headers: res.headers, body: await res.json() };
}

async function del(s: TestServer, path: string, auth = true) {
  const res = await s.app.request(path, {
    method: "DELETE",
    headers: auth ? { authorization: `Bearer ${s.token}` } : {},
  });
  return { status: res.status, body: await res.json() };
}

function listDir(dir: string): string[] {
  try {
    return [...Deno.readDirSync(dir)].map((e) => e.name).sort();
  } catch {
    return [];
  }
}

Deno.test(
  "serve: models registered by URL survive a restart; a failing URL does not stop the start",
  opts,
  async (t) => {
    const root = await Deno.makeTempDir({ prefix: "vit-serve-reg-" });
    await writeMicroModel(`${root}/micro`);
    await writeMicroModel(`${root}/flaky`, "flaky");
    const files = serveFolders({ micro: `${root}/micro`, flaky: `${root}/flaky` });
    const png = await testImage("png");
    const registered = `${root}/state/registered`;
    let s: TestServer | undefined, other: TestServer | undefined;
    try {
      s = await startTestService({ root });
      let reference: Array<{ label: string; probability: number }> = [];

      await t.step("register two models by URL: each record is persisted atomically", async () => {
        for (const id of ["remote", "flaky"]) {
          const res = await post(s!, "/v1/models", {
            id,
            location: files.url(id === "remote" ? "micro" : id),
          });
          assert.equal(res.status, 201, JSON.stringify(res.body));
          assert.equal(res.body.kind, "registered");
          assert.ok(Date.parse(res.body.registered_at) > 0);
        }
        // One record and one copy of its files per model, no temporary file left behind.
        assert.deepEqual(listDir(registered), ["flaky.files", "flaky.json", "remote.files", "remote.json"]);
        const record = JSON.parse(await Deno.readTextFile(`${registered}/remote.json`));
        assert.deepEqual(Object.keys(record).sort(), ["id", "location", "registered_at"]);
        assert.equal(record.id, "remote");
        assert.equal(record.location, files.url("micro"));
        const out = await classify(s!, "remote", png);
        assert.equal(out.status, 200);
        reference = out.body.results[0].predictions;
      });

      await t.step(
        "restart over the same state dir: served again; a failing URL is unavailable",
        async () => {
          await s!.close();
          s = undefined;
          // The flaky model's host loses it while the server is down, and so does the state dir its copy
          // (see the next test for what a copy does).
          await Deno.remove(`${root}/flaky`, { recursive: true });
          await Deno.remove(`${registered}/flaky.files`, { recursive: true });
          const log = await captureErrors(async () => {
            s = await startTestService({ root });
          });
          assert.match(
            log,
            /registered model "flaky" \(http:\/\/127\.0\.0\.1:\d+\/flaky\/\) not loaded: .*model\.json/,
          );
          assert.match(log, /DELETE \/v1\/models\/flaky/);
          const out = await classify(s!, "remote", png);
          assert.equal(out.status, 200, JSON.stringify(out.body));
          assert.deepEqual(out.body.results[0].predictions, reference);
          const ready = await (await s!.app.request("/readyz")).json();
          assert.equal(ready.status, "ready");
          assert.deepEqual(ready.models, ["micro", "remote"]);
          assert.deepEqual(ready.unavailable.map((u: { id: string }) => u.id), ["flaky"]);
          const list = await (await s!.app.request("/v1/models")).json();
          const remote = list.models.find((m: { id: string }) => m.id === "remote");
          assert.equal(remote.kind, "registered");
          assert.equal(list.unavailable.length, 1);
          const u = list.unavailable[0];
          assert.equal(u.id, "flaky");
          assert.equal(u.state, "unavailable");
          assert.equal(u.location, files.url("flaky"));
          assert.equal(u.error.code, "model_load_failed");
          assert.match(u.error.message, /404/);
          assert.ok(u.retry_after_s > 0);
          const metrics = await (await s!.app.request("/metrics")).text();
          assert.match(metrics, /vit_models_unavailable 1/);
        },
      );

      await t.step(
        "an unavailable model answers 503 with Retry-After, and is tried again later",
        async () => {
          let out = await classify(s!, "flaky", png);
          assert.equal(out.status, 503);
          assert.equal(out.body.error.code, "model_unavailable");
          assert.match(out.body.error.message, /flaky\/.*could not be loaded/);
          assert.ok(Number(out.headers.get("retry-after")) >= 1);
          // Back on its host: within the retry interval still 503, then served on the next request.
          await writeMicroModel(`${root}/flaky`, "flaky");
          assert.equal((await classify(s!, "flaky", png)).status, 503);
          s!.service.registry.retryUnavailableMs = 0;
          out = await classify(s!, "flaky", png);
          assert.equal(out.status, 200, JSON.stringify(out.body));
          assert.deepEqual((await (await s!.app.request("/v1/models")).json()).unavailable, []);
        },
      );

      await t.step("a second process on the state dir: loads on first use, sees removals", async () => {
        other = await startTestService({ root });
        // Both registrations were restored at its start.
        assert.deepEqual(other.service.registry.list().map((m) => m.id), ["micro", "flaky", "remote"]);
        // Registered in one process, served by the other on first use.
        let res = await post(s!, "/v1/models", { id: "late", location: files.url("micro") });
        assert.equal(res.status, 201);
        const out = await classify(other, "late", png);
        assert.equal(out.status, 200, JSON.stringify(out.body));
        assert.deepEqual(out.body.results[0].predictions, reference);
        // One id registered in both processes at once: exactly one wins.
        const both = await Promise.all(
          [s!, other].map((x) => post(x, "/v1/models", { id: "race", location: files.url("micro") })),
        );
        assert.deepEqual(both.map((r) => r.status).sort(), [201, 409]);
        // Removed in one process: the other stops serving it and no longer lists it.
        res = await post(s!, "/v1/models", { id: "gone-soon", location: files.url("micro") });
        assert.equal(res.status, 201);
        assert.equal((await classify(other, "gone-soon", png)).status, 200);
        const removed = await del(s!, "/v1/models/gone-soon");
        assert.equal(removed.status, 200, JSON.stringify(removed.body));
        assert.equal((await classify(other, "gone-soon", png)).status, 404);
        assert.ok(!other.service.registry.has("gone-soon"));
        // ...also when it only lists.
        assert.equal((await classify(other, "late", png)).status, 200);
        assert.equal((await del(s!, "/v1/models/late")).status, 200);
        const list = await (await other.app.request("/v1/models")).json();
        assert.ok(!list.models.some((m: { id: string }) => m.id === "late"));
        await other.close();
        other = undefined;
      });

      await t.step("DELETE /v1/models/:id removes a registration (token), frees the model", async () => {
        const tensors = tf.memory().numTensors;
        assert.equal((await del(s!, "/v1/models/remote", false)).status, 401);
        let res = await del(s!, "/v1/models/micro");
        assert.equal(res.status, 409);
        assert.equal(res.body.error.code, "model_not_removable");
        // Requests already accepted are answered before the model goes.
        const inFlight = classify(s!, "remote", png);
        res = await del(s!, "/v1/models/remote");
        assert.equal(res.status, 200);
        assert.deepEqual(res.body, {
          id: "remote",
          kind: "registered",
          location: files.url("micro"),
          registered_at: res.body.registered_at,
          removed: true,
        });
        assert.ok([200, 404].includes((await inFlight).status));
        assert.equal((await classify(s!, "remote", png)).status, 404);
        assert.equal((await del(s!, "/v1/models/remote")).status, 404);
        assert.ok(!listDir(registered).includes("remote.json"));
        // On onnx a served model holds no tensors: its weights live in its ONNX Runtime session.
        if ((await initBackend()).engine !== "onnx") {
          assert.ok(tf.memory().numTensors < tensors, "the removed model's weights are freed");
        }
        // An unavailable registration can be removed too.
        await Deno.remove(`${root}/flaky`, { recursive: true });
        await Deno.remove(`${registered}/flaky.files`, { recursive: true });
        await s!.close();
        await captureErrors(async () => {
          s = await startTestService({ root });
        });
        assert.equal(s!.service.registry.unavailable().length, 1);
        assert.equal((await del(s!, "/v1/models/flaky")).status, 200);
        assert.deepEqual(s!.service.registry.unavailable(), []);
        assert.deepEqual(listDir(registered).filter((n) => !n.startsWith("race")), []);
      });

      await t.step("after another restart the removed registrations stay removed", async () => {
        await s!.close();
        s = await startTestService({ root });
        assert.deepEqual(s.service.registry.list().map((m) => m.id), ["micro", "race"]);
        assert.deepEqual(s.service.registry.unavailable(), []);
      });
    } finally {
      await other?.close();
      await s?.close();
      await files.shutdown();
      await Deno.remove(root, { recursive: true });
    }
  },
);

Deno.test(
  "serve: a registered model's files are kept in the state dir: a restart serves it without its URL",
  opts,
  async (t) => {
    const root = await Deno.makeTempDir({ prefix: "vit-serve-copy-" });
    await writeMicroModel(`${root}/kept`, "kept");
    const files = serveFolders({ kept: `${root}/kept` });
    const png = await testImage("png");
    const registered = `${root}/state/registered`, copy = `${registered}/kept.files`;
    const sameFiles = async (dir: string) => {
      for (const name of listDir(`${root}/kept`)) {
        assert.deepEqual(
          await Deno.readFile(`${dir}/${name}`),
          await Deno.readFile(`${root}/kept/${name}`),
          name,
        );
      }
      assert.deepEqual(listDir(dir), listDir(`${root}/kept`));
    };
    let s: TestServer | undefined;
    try {
      s = await startTestService({ root });
      let reference: unknown;

      await t.step(
        "registering keeps the files as fetched, with the registration they belong to",
        async () => {
          const res = await post(s!, "/v1/models", { id: "kept", location: files.url("kept") });
          assert.equal(res.status, 201, JSON.stringify(res.body));
          assert.deepEqual(listDir(copy), ["model", "registration.json"]);
          await sameFiles(`${copy}/model`);
          assert.deepEqual(
            JSON.parse(await Deno.readTextFile(`${copy}/registration.json`)),
            JSON.parse(await Deno.readTextFile(`${registered}/kept.json`)),
          );
          const out = await classify(s!, "kept", png);
          assert.equal(out.status, 200);
          reference = out.body.results[0].predictions;
          // Ids may hold dots: the copy of "kept.json" is no record, and no record is its copy.
          const dotted = await post(s!, "/v1/models", { id: "kept.json", location: files.url("kept") });
          assert.equal(dotted.status, 201, JSON.stringify(dotted.body));
          assert.deepEqual(listDir(registered), [
            "kept.files",
            "kept.json",
            "kept.json.files",
            "kept.json.json",
          ]);
          assert.equal((await del(s!, "/v1/models/kept.json")).status, 200);
          assert.deepEqual(listDir(registered), ["kept.files", "kept.json"]);
        },
      );

      await t.step("restarted with the URL gone: served from the copy, listed with its URL", async () => {
        await s!.close();
        s = undefined;
        await Deno.remove(`${root}/kept`, { recursive: true });
        s = await startTestService({ root });
        const out = await classify(s!, "kept", png);
        assert.equal(out.status, 200, JSON.stringify(out.body));
        assert.deepEqual(out.body.results[0].predictions, reference);
        assert.deepEqual(s!.service.registry.unavailable(), []);
        const detail = await (await s!.app.request("/v1/models/kept")).json();
        assert.equal(detail.kind, "registered");
        assert.equal(detail.location, files.url("kept"));
        assert.ok(!JSON.stringify(detail).includes(root), "no server path in the answer");
      });

      await t.step("a copy that does not load is fetched again from the URL, and replaced", async () => {
        await s!.close();
        s = undefined;
        const shard = listDir(`${copy}/model`).find((n) => n.endsWith(".bin"))!;
        await Deno.writeFile(`${copy}/model/${shard}`, new Uint8Array(16));
        // URL gone too: unavailable, with the copy's failure logged.
        const log = await captureErrors(async () => {
          s = await startTestService({ root });
        });
        assert.match(log, /copy of registered model "kept" in the state dir did not load .*sha256/);
        assert.deepEqual(s!.service.registry.unavailable().map((u) => u.id), ["kept"]);
        // Back on its host: fetched, served, and the copy rewritten whole.
        await writeMicroModel(`${root}/kept`, "kept");
        s!.service.registry.retryUnavailableMs = 0;
        const out = await classify(s!, "kept", png);
        assert.equal(out.status, 200, JSON.stringify(out.body));
        await sameFiles(`${copy}/model`);
      });

      await t.step("a copy of another registration of the id is not used", async () => {
        await s!.close();
        s = undefined;
        const record = `${copy}/registration.json`;
        const kept = JSON.parse(await Deno.readTextFile(record));
        await Deno.writeTextFile(
          record,
          JSON.stringify({ ...kept, registered_at: "2020-01-01T00:00:00.000Z" }),
        );
        await Deno.remove(`${root}/kept`, { recursive: true });
        await captureErrors(async () => {
          s = await startTestService({ root });
        });
        assert.deepEqual(s!.service.registry.unavailable().map((u) => u.id), ["kept"]);
      });

      await t.step("DELETE removes the copy; a copy without its record is removed at start", async () => {
        assert.equal((await del(s!, "/v1/models/kept")).status, 200);
        assert.deepEqual(listDir(registered), []);
        await Deno.mkdir(`${registered}/ghost.files/model`, { recursive: true });
        await Deno.writeTextFile(`${registered}/ghost.files/registration.json`, "{}");
        await s!.close();
        s = await startTestService({ root });
        assert.deepEqual(listDir(registered), []);
      });
    } finally {
      await s?.close();
      await files.shutdown();
      await Deno.remove(root, { recursive: true });
    }
  },
);

Deno.test("serve: a restarted server process logs a registration whose URL fails, and starts", async () => {
  const root = await Deno.makeTempDir({ prefix: "vit-serve-regp-" });
  await writeMicroModel(`${root}/micro`);
  await writeMicroModel(`${root}/good`, "good");
  await writeMicroModel(`${root}/bad`, "bad");
  const files = serveFolders({ good: `${root}/good`, bad: `${root}/bad` });
  const args = ["--model", `${root}/micro`, "--state-dir", `${root}/state`];
  const env = { VIT_API_TOKEN: "tok" };
  const headers = { "content-type": "application/json", authorization: "Bearer tok" };
  const png = await testImage("png");
  try {
    let server = await spawnServer(args, env);
    try {
      for (const id of ["good", "bad"]) {
        const res = await fetch(`${server.url}/v1/models`, {
          method: "POST",
          headers,
          body: JSON.stringify({ id, location: files.url(id) }),
        });
        assert.equal(res.status, 201, await res.text());
      }
    } finally {
      await server.kill("SIGTERM");
    }
    await Deno.remove(`${root}/bad`, { recursive: true });
    await Deno.remove(`${root}/state/registered/bad.files`, { recursive: true });
    server = await spawnServer(args, env);
    try {
      assert.match(
        server.log(),
        /serve: registered model "bad" \(http:\/\/127\.0\.0\.1:\d+\/bad\/\) not loaded: .*404/,
      );
      const res = await fetch(`${server.url}/v1/models/good/classify`, {
        method: "POST",
        headers: { "content-type": "image/png" },
        body: png,
      });
      assert.equal(res.status, 200, await res.text());
      const ready = await (await fetch(`${server.url}/readyz`)).json();
      assert.deepEqual(ready.unavailable.map((u: { id: string }) => u.id), ["bad"]);
    } finally {
      await server.kill("SIGTERM");
    }
  } finally {
    await files.shutdown();
    await Deno.remove(root, { recursive: true });
  }
});

/** A tuner that trains until cancelled, 20 ms a step, without blocking the thread. */
const endlessTuner: FineTuner = async (job, onProgress, signal) => {
  for (let step = 1; !signal.aborted; step++) {
    await new Promise((r) => setTimeout(r, 20));
    await onProgress({ step, steps: job.steps, epoch: 0, loss: 1, lr: job.lr, imgPerSec: 1 });
  }
  throw new DOMException("cancelled", "AbortError");
};

Deno.test(
  "serve: the fine-tuning session limit holds across processes sharing the state dir",
  opts,
  async () => {
    const root = await Deno.makeTempDir({ prefix: "vit-serve-lease-" });
    const limits = { maxSessions: 1 } as never;
    const a = await startTestService({ root, tuner: endlessTuner, limits });
    const b = await startTestService({ root, tuner: endlessTuner, limits });
    const leases = `${root}/state/sessions/active`;
    const start = (s: TestServer) =>
      post(s, "/v1/finetune", { base_model: "micro", dataset: "d", steps: 1000, batch_size: 2 });
    try {
      await writeImageFolder(`${root}/data/d`, ["x", "y"], 2);
      let res = await start(a);
      assert.equal(res.status, 202, JSON.stringify(res.body));
      const first = res.body.id;
      assert.deepEqual(listDir(leases), [".lock", `${first}.json`]);
      // The other process is at the limit too.
      res = await start(b);
      assert.equal(res.status, 429, JSON.stringify(res.body));
      assert.equal(res.body.error.code, "too_many_sessions");
      assert.match(res.body.error.message, /every server process sharing the state dir/);
      // Cancelled through the other process: the one running it stops, and its lease goes with the session.
      assert.equal((await del(b, `/v1/finetune/${first}`)).status, 202);
      await a.service.sessions.settle();
      const rec = await (await b.app.request(`/v1/finetune/${first}`)).json();
      assert.equal(rec.state, "cancelled");
      assert.deepEqual(listDir(leases), [".lock"]);
      assert.ok(
        !listDir(`${root}/state/sessions`).some((n) => n.endsWith(".cancel")),
        "no cancel marker left",
      );
      // Both at once: exactly one gets the slot.
      const both = await Promise.all([start(a), start(b)]);
      assert.deepEqual(both.map((r) => r.status).sort(), [202, 429]);
      const winner = both.find((r) => r.status === 202)!;
      const owner = both[0].status === 202 ? a : b;
      assert.equal((await del(owner, `/v1/finetune/${winner.body.id}`)).status, 202);
      await owner.service.sessions.settle();
      // A lease left by a process that died is reclaimed (a pid above Linux's largest possible pid_max).
      const dead = crypto.randomUUID();
      await Deno.writeTextFile(
        `${leases}/${dead}.json`,
        JSON.stringify({
          session: dead,
          owner: { pid: 2 ** 22 + 7, start: 1 },
          created: new Date().toISOString(),
        }),
      );
      res = await start(b);
      assert.equal(res.status, 202, JSON.stringify(res.body));
      assert.ok(!listDir(leases).includes(`${dead}.json`), "the dead process's lease was removed");
      assert.equal((await del(b, `/v1/finetune/${res.body.id}`)).status, 202);
      await b.service.sessions.settle();
    } finally {
      await a.close();
      await b.close();
      await Deno.remove(root, { recursive: true });
    }
  },
);

Deno.test(
  "serve: a model id reserved by a session cannot be registered by URL, in any process, nor the reverse",
  opts,
  async () => {
    const root = await Deno.makeTempDir({ prefix: "vit-serve-resv-" });
    await writeMicroModel(`${root}/micro`);
    const files = serveFolders({ micro: `${root}/micro` });
    const limits = { maxSessions: 2 } as never;
    const a = await startTestService({ root, tuner: endlessTuner, limits });
    const b = await startTestService({ root, tuner: endlessTuner, limits });
    try {
      await writeImageFolder(`${root}/data/d`, ["x", "y"], 2);
      const res = await post(a, "/v1/finetune", {
        base_model: "micro",
        dataset: "d",
        steps: 1000,
        batch_size: 2,
        model_id: "mine",
      });
      assert.equal(res.status, 202, JSON.stringify(res.body));
      // Registering the id the running session will register would cost the session its result.
      for (const s of [a, b]) {
        const reg = await post(s, "/v1/models", { id: "mine", location: files.url("micro") });
        assert.equal(reg.status, 409, JSON.stringify(reg.body));
        assert.equal(reg.body.error.code, "model_exists");
      }
      assert.deepEqual(listDir(`${root}/state/registered`), []);
      // The reverse: a registration persisted by another process after this one's request was checked.
      await Deno.mkdir(`${root}/state/registered`, { recursive: true });
      await Deno.writeTextFile(
        `${root}/state/registered/theirs.json`,
        JSON.stringify({
          id: "theirs",
          location: files.url("micro"),
          registered_at: new Date().toISOString(),
        }),
      );
      await assert.rejects(
        b.service.sessions.start({ ...res.body.request, model_id: "theirs" }, () => Promise.reject()),
        (e: { kind?: string; code?: string }) => e.kind === "conflict" && e.code === "model_exists",
      );
      assert.deepEqual(listDir(`${root}/state/sessions/active`), [".lock", `${res.body.id}.json`]);
      assert.equal((await del(a, `/v1/finetune/${res.body.id}`)).status, 202);
      await a.service.sessions.settle();
    } finally {
      await a.close();
      await b.close();
      await files.shutdown();
      await Deno.remove(root, { recursive: true });
    }
  },
);

Deno.test(
  "serve: a removed model whose drain timed out is freed only after the batch on the device",
  opts,
  async () => {
    const root = await Deno.makeTempDir({ prefix: "vit-serve-drain-" });
    await writeMicroModel(`${root}/micro`);
    const files = serveFolders({ micro: `${root}/micro` });
    const s = await startTestService({ root });
    try {
      assert.equal((await post(s, "/v1/models", { id: "slow", location: files.url("micro") })).status, 201);
      const served = await s.service.registry.get("slow");
      // The batch blocks on the device until `open` is called.
      let open!: () => void, started!: () => void;
      const gate = new Promise<void>((r) => open = r);
      const onDevice = new Promise<void>((r) => started = r);
      const logits = served.model.logits.bind(served.model);
      served.model.logits = async (...args: Parameters<typeof logits>) => {
        started();
        await gate;
        return logits(...args);
      };
      let disposed = false;
      const dispose = served.model.dispose.bind(served.model);
      served.model.dispose = () => {
        disposed = true;
        dispose();
      };
      const inFlight = classify(s, "slow", await testImage("png"));
      await onDevice;
      s.service.registry.drainTimeoutMs = 1;
      const removed = del(s, "/v1/models/slow");
      await new Promise((r) => setTimeout(r, 100));
      assert.ok(!disposed, "the weights were freed while a batch was still using them");
      open();
      assert.equal((await removed).status, 200);
      const out = await inFlight;
      assert.equal(out.status, 200, JSON.stringify(out.body));
      assert.ok(disposed);
    } finally {
      await s.close();
      await files.shutdown();
      await Deno.remove(root, { recursive: true });
    }
  },
);

Deno.test("registration copies: staged until kept, never kept for a removed registration", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vit-reg-copies-" });
  const store = new RegistrationStore(dir);
  const files = new Map([["model.json", new TextEncoder().encode("{}")], ["a.bin", new Uint8Array(4)]]);
  const r = { id: "m", location: "http://127.0.0.1:9/m/", registered_at: "2026-12-03T00:00:00.000Z" };
  try {
    // Staged: not the record's copy yet, and a start (list) in another process leaves this live writer's
    // folder alone.
    let staged = await store.stageCopy(r, files);
    await store.create(r);
    assert.equal(await store.copyOf(r), undefined);
    assert.deepEqual((await store.list()).map((x) => "registration" in x ? x.registration.id : x.error), [
      "m",
    ]);
    assert.equal(listDir(dir).length, 2, "the record and the staged folder");
    await staged.keep();
    assert.equal(await store.copyOf(r), `${dir}/m.files/model`);
    assert.deepEqual(listDir(`${dir}/m.files/model`), ["a.bin", "model.json"]);
    await staged.discard(); // a no-op once kept
    assert.ok(await store.copyOf(r));
    // A DELETE before keep(): the copy is dropped, not put in place.
    assert.equal(await store.remove("m"), true);
    assert.deepEqual(listDir(dir), []);
    staged = await store.stageCopy(r, files);
    await staged.keep();
    assert.deepEqual(listDir(dir), []);
    // A DELETE racing keep() (the record removed as the copy is put in place): the copy does not outlive
    // the registration.
    await store.create(r);
    staged = await store.stageCopy(r, files);
    const rename = Deno.rename;
    Deno.rename = async (from, to) => {
      await rename(from, to);
      if (String(to).endsWith("/m.files")) await Deno.remove(store.path("m"));
    };
    try {
      await staged.keep();
    } finally {
      Deno.rename = rename;
    }
    assert.deepEqual(listDir(dir), []);
    // Nor does one staged for an older registration of the id replace the newer one's.
    const newer = { ...r, registered_at: "2026-12-03T00:00:01.000Z" };
    await store.create(newer);
    await (await store.stageCopy(newer, files)).keep();
    staged = await store.stageCopy(r, files);
    await staged.keep();
    assert.equal(await store.copyOf(r), undefined);
    assert.equal(await store.copyOf(newer), `${dir}/m.files/model`);
    await Deno.remove(`${dir}/m.files`, { recursive: true });
    // A discarded copy leaves nothing.
    staged = await store.stageCopy(newer, files);
    await staged.discard();
    assert.deepEqual(listDir(dir), ["m.json"]);
    // Paths that would leave the copy's folder are refused before anything is written.
    await assert.rejects(
      () => store.stageCopy(newer, new Map([["../x", new Uint8Array(1)]])),
      /model file "\.\.\/x"/,
    );
    assert.deepEqual(listDir(dir), ["m.json"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("session leases: limit under concurrency, reserved model ids, stale leases", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vit-leases-" });
  const ended = new Set<string>();
  // Two managers on one dir, as two processes have.
  const one = new SessionLeases(dir, (id) => Promise.resolve(ended.has(id)));
  const two = new SessionLeases(dir, (id) => Promise.resolve(ended.has(id)));
  try {
    const ids = Array.from({ length: 12 }, (_, i) => `s${i}`);
    const got = await Promise.all(ids.map((id, i) => (i % 2 ? one : two).acquire(id, 3)));
    assert.equal(got.filter((g) => g.ok).length, 3);
    assert.equal(await one.count(), 3);
    // A lease whose session record says it ended is stale even though its owner (this process) lives.
    const holder = ids.find((_, i) => got[i].ok)!;
    ended.add(holder);
    assert.equal((await two.acquire("late", 3)).ok, true);
    assert.ok(!listDir(dir).includes(`${holder}.json`));
    await one.release("late");
    await one.release("late"); // releasing twice is harmless
    assert.equal(await two.count(), 2);
    // A live lease reserves its model id, in every process.
    assert.deepEqual(await one.acquire("m1", 5, "model-x"), { ok: true, active: 2 });
    assert.deepEqual(await two.acquire("m2", 5, "model-x"), { ok: false, active: 3, reserved: true });
    ended.add("m1");
    assert.equal((await two.acquire("m2", 5, "model-x")).ok, true);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("serve: `deno serve --parallel` workers share registrations and the session limit", async () => {
  const root = await Deno.makeTempDir({ prefix: "vit-serve-regpar-" });
  await writeMicroModel(`${root}/micro`);
  await writeImageFolder(`${root}/data/d`, ["x", "y"], 2);
  const files = serveFolders({ micro: `${root}/micro` });
  const server = await spawnServer([], { VIT_API_TOKEN: "tok", DENO_JOBS: "2" }, {
    command: (port) =>
      parallelServeArgs(port, [
        "--model",
        `${root}/micro`,
        "--state-dir",
        `${root}/state`,
        "--data-root",
        `${root}/data`,
        "--max-sessions",
        "1",
      ]),
  });
  // A new connection per request, so that requests reach different workers.
  const client = Deno.createHttpClient({ poolMaxIdlePerHost: 0 });
  const call = async (method: string, path: string, body?: BodyInit, type = "application/json") => {
    const res = await fetch(`${server.url}${path}`, {
      method,
      client,
      headers: { "content-type": type, authorization: "Bearer tok" },
      body,
    });
    return { status: res.status, body: await res.json() };
  };
  const png = await testImage("png");
  let sessionId = "";
  const classifyMany = () =>
    Promise.all(
      Array.from({ length: 10 }, () => call("POST", "/v1/models/remote/classify", png, "image/png")),
    );
  try {
    let res = await call(
      "POST",
      "/v1/models",
      JSON.stringify({ id: "remote", location: files.url("micro") }),
    );
    assert.equal(res.status, 201, JSON.stringify(res.body));
    for (const r of await classifyMany()) assert.equal(r.status, 200, JSON.stringify(r.body));
    const session = JSON.stringify({ base_model: "micro", dataset: "d", steps: 100000, batch_size: 2 });
    res = await call("POST", "/v1/finetune", session);
    assert.equal(res.status, 202, JSON.stringify(res.body));
    sessionId = res.body.id;
    const refused = await Promise.all(Array.from({ length: 6 }, () => call("POST", "/v1/finetune", session)));
    assert.deepEqual(refused.map((r) => r.status), Array(6).fill(429));
    res = await call("DELETE", "/v1/models/remote");
    assert.equal(res.status, 200, JSON.stringify(res.body));
    for (const r of await classifyMany()) assert.equal(r.status, 404, JSON.stringify(r.body));
  } finally {
    client.close();
    // The workers end the running session on SIGTERM, so the process exits.
    const status = await server.kill("SIGTERM");
    await files.shutdown();
    assert.equal(status.code, 0, server.log());
    const disk = JSON.parse(await Deno.readTextFile(`${root}/state/sessions/${sessionId}.json`));
    assert.equal(disk.error?.code, "interrupted");
    assert.deepEqual(listDir(`${root}/state/sessions/active`), [".lock"]);
    await Deno.remove(root, { recursive: true });
  }
});
