/**
 * Fine-tuning sessions through the routes: a named dataset and an uploaded archive each produce a new
 * served model (saved atomically under the state dir) while the base model stays unchanged; progress is
 * streamed as server-sent events; cancellation and the concurrent-session limit work.
 */
import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import { paramSpecs } from "../lib/vit/params.ts";
import { initBackend } from "../lib/backend/backend.ts";
import { resolveConfig } from "../lib/vit/config.ts";
import { runFineTuneSpec } from "../lib/serve/finetune.ts";
import {
  MICRO,
  startTestService,
  tarArchive,
  testImage,
  writeImageFolder,
  writeMicroModel,
} from "./_serve.ts";
import type { Hono } from "hono";

Deno.env.set("VIT_QUIET", "1");

async function readEvents(
  app: Hono,
  id: string,
): Promise<Array<{ event: string; data: Record<string, unknown> }>> {
  const res = await app.request(`/v1/finetune/${id}/events`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type")!, /text\/event-stream/);
  const text = await res.text();
  const events = [];
  for (const block of text.split("\n\n")) {
    const event = /^event: (.+)$/m.exec(block)?.[1];
    const data = /^data: (.+)$/m.exec(block)?.[1];
    if (event && data) events.push({ event, data: JSON.parse(data) });
  }
  return events;
}

async function waitFor(app: Hono, id: string, states: string[], timeoutMs = 60_000) {
  const t0 = Date.now();
  for (;;) {
    const rec = await (await app.request(`/v1/finetune/${id}`)).json();
    if (states.includes(rec.state)) return rec;
    if (Date.now() - t0 > timeoutMs) {
      throw new Error(`session ${id} still ${rec.state} after ${timeoutMs} ms`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

Deno.test("serve: fine-tuning sessions", { sanitizeOps: false, sanitizeResources: false }, async (t) => {
  const s = await startTestService({ limits: { maxSessions: 1 } as never });
  const { app, token } = s;
  const auth = { authorization: `Bearer ${token}` };
  const png = await testImage("png");
  const classify = async (model: string) => {
    const res = await app.request(`/v1/models/${model}/classify?top_k=10`, {
      method: "POST",
      headers: { "content-type": "image/png" },
      body: png,
    });
    const out = await res.json();
    assert.equal(res.status, 200, JSON.stringify(out));
    return out.results[0].predictions as Array<{ label: string; probability: number }>;
  };
  const baseBefore = await classify("micro");
  const baseManifest = await Deno.readTextFile(`${s.modelDir}/model.json`);
  await writeImageFolder(`${s.dataRoot}/shapes`, ["circle", "square"], 6);
  /** Posts a JSON session on the shapes dataset (batch 4, lr 0.05) with `fields` added. */
  const postSession = async (fields: Record<string, unknown>) => {
    const res = await app.request("/v1/finetune", {
      method: "POST",
      headers: { "content-type": "application/json", ...auth },
      body: JSON.stringify({ base_model: "micro", dataset: "shapes", batch_size: 4, lr: 0.05, ...fields }),
    });
    return { res, body: await res.json() };
  };

  await t.step("named dataset: 202, SSE progress, new model registered, base unchanged", async () => {
    const tensors = tf.memory().numTensors;
    const { res, body: rec } = await postSession({ steps: 5, model_id: "shapes-ft" });
    assert.equal(res.status, 202, JSON.stringify(rec));
    assert.equal(res.headers.get("location"), `/v1/finetune/${rec.id}`);
    assert.equal(rec.state, "queued");
    assert.equal(rec.request.steps, 5);
    assert.equal(rec.request.model_id, "shapes-ft");
    const events = await readEvents(app, rec.id);
    assert.equal(events[0].event, "state");
    const last = events.at(-1)!;
    assert.equal(last.event, "state");
    assert.equal(last.data.state, "succeeded", JSON.stringify(last.data));
    const progress = events.filter((e) => e.event === "progress");
    assert.ok(progress.length >= 1, "at least one progress event");
    const done = await (await app.request(`/v1/finetune/${rec.id}`)).json();
    assert.equal(done.state, "succeeded");
    assert.equal(done.progress.step, 5);
    assert.equal(done.losses.length, 5);
    assert.ok(done.losses.every(Number.isFinite));
    assert.equal(done.model_id, "shapes-ft");
    assert.deepEqual(done.dataset_info, { images: 12, classes: ["circle", "square"] });
    // The new model is served, with the dataset's classes.
    const m = await (await app.request("/v1/models/shapes-ft")).json();
    assert.equal(m.kind, "finetuned");
    assert.deepEqual(m.labels, ["circle", "square"]);
    assert.equal(m.num_classes, 2);
    assert.equal(m.source.head_reinitialized.num_classes, 2);
    // The only tensors added are the new model's parameters (none on onnx: it serves from ONNX Runtime).
    const params = paramSpecs(resolveConfig({ ...MICRO, num_classes: 2 })).length;
    const onnx = (await initBackend()).engine === "onnx";
    assert.equal(tf.memory().numTensors, tensors + (onnx ? 0 : params));
    const preds = await classify("shapes-ft");
    assert.deepEqual(preds.map((p) => p.label).sort(), ["circle", "square"]);
    await Deno.stat(`${s.stateDir}/models/shapes-ft/model.json`);
    // The base model is untouched, in memory and on disk.
    assert.deepEqual(await classify("micro"), baseBefore);
    assert.equal(await Deno.readTextFile(`${s.modelDir}/model.json`), baseManifest);
    const metrics = await (await app.request("/metrics")).text();
    assert.match(metrics, /vit_finetune_sessions\{state="succeeded"\} 1/);
    assert.match(metrics, /vit_finetune_steps_total 5/);
    // The worker's training time is reported too, though it does not use the inference device queue.
    assert.ok(
      Number(/vit_device_busy_seconds_total\{kind="train"\} ([0-9.e+-]+)/.exec(metrics)?.[1]) > 0,
      metrics,
    );
  });

  await t.step(
    "timm's augmentation and regularisation keys: trained with, recorded, bad ones named",
    async () => {
      const post = async (extra: Record<string, unknown>) => {
        const { res, body } = await postSession({ steps: 2, ...extra });
        return { status: res.status, body };
      };
      const recipe = {
        smoothing: 0.3,
        mixup: 0.8,
        cutmix: 1,
        drop_path: 0.1,
        aa: "rand-m9-mstd0.5",
        reprob: 0.25,
      };
      const plain = await post({ model_id: "shapes-plain" });
      assert.equal(plain.status, 202, JSON.stringify(plain.body));
      assert.equal((await waitFor(app, plain.body.id, ["succeeded", "failed"])).state, "succeeded");
      const reg = await post({ model_id: "shapes-reg", ...recipe });
      assert.equal(reg.status, 202, JSON.stringify(reg.body));
      assert.deepEqual(reg.body.request.recipe, recipe);
      const done = await waitFor(app, reg.body.id, ["succeeded", "failed"]);
      assert.equal(done.state, "succeeded", JSON.stringify(done.error));
      // Same seed, weights and images: only the recipe differs, so the second step's loss does (the first
      // is ln 2 for both: the new head starts at zero).
      const plainDone = await (await app.request(`/v1/finetune/${plain.body.id}`)).json();
      assert.equal(done.losses[0], plainDone.losses[0]);
      assert.notEqual(done.losses[1], plainDone.losses[1]);
      const manifest = JSON.parse(await Deno.readTextFile(`${s.stateDir}/models/shapes-reg/model.json`));
      assert.deepEqual(manifest.extra.finetune.recipe, recipe);
      for (
        const [extra, field] of [
          [{ mixup: -1 }, '"mixup"'],
          [{ mixup: 0.8, batch_size: 3 }, '"batch_size"'],
          [{ aa: "rand-x9" }, '"aa"'],
          [{ model_ema: true }, '"model_ema"'],
        ] as const
      ) {
        const bad = await post(extra);
        assert.equal(bad.status, 400, JSON.stringify(bad.body));
        assert.ok(
          bad.body.error.message.includes(field),
          `${JSON.stringify(extra)}: ${bad.body.error.message}`,
        );
      }
      // An even batch asked for, made odd by a small dataset: refused before the session is accepted.
      await writeImageFolder(`${s.dataRoot}/odd`, ["a", "b", "c"], 3);
      const odd = await post({ dataset: "odd", mixup: 0.8, batch_size: 16 });
      assert.equal(odd.status, 400, JSON.stringify(odd.body));
      assert.match(odd.body.error.message, /"batch_size".*9 images make the batch 9/);
    },
  );

  await t.step("uploaded tar.gz archive of class folders (wrapped in a folder)", async () => {
    const files: Record<string, Uint8Array> = {};
    for (const [k, c] of ["cat", "dog", "eel"].entries()) {
      for (let i = 0; i < 3; i++) files[`pets/${c}/${i}.png`] = await testImage("png", 24, 24, k * 5 + i);
    }
    const form = new FormData();
    form.append("base_model", "micro");
    form.append("epochs", "2");
    form.append("batch_size", "3");
    form.append("freeze", "blocks:1");
    form.append("archive", new File([await tarArchive(files, true)], "pets.tar.gz"));
    const res = await app.request("/v1/finetune", { method: "POST", headers: auth, body: form });
    const rec = await res.json();
    assert.equal(res.status, 202, JSON.stringify(rec));
    assert.equal(rec.request.steps, 6); // 2 epochs × 9 images / batch 3
    assert.equal(rec.request.dataset, "upload:pets.tar.gz");
    assert.match(rec.request.model_id, /^micro-ft-/);
    const done = await waitFor(app, rec.id, ["succeeded", "failed"]);
    assert.equal(done.state, "succeeded", JSON.stringify(done.error));
    const m = await (await app.request(`/v1/models/${done.model_id}`)).json();
    assert.deepEqual(m.labels, ["cat", "dog", "eel"]);
    // The extracted upload is removed once the session ends.
    const left = [...Deno.readDirSync(`${s.stateDir}/uploads`)];
    assert.deepEqual(left, []);
  });

  await t.step("session limit (429), duplicate model id (409), cancel (DELETE)", async () => {
    let res = await app.request("/v1/finetune", {
      method: "POST",
      headers: { "content-type": "application/json", ...auth },
      body: JSON.stringify({ base_model: "micro", dataset: "shapes", model_id: "shapes-ft" }),
    });
    assert.equal(res.status, 409);
    assert.equal((await res.json()).error.code, "model_exists");
    const tensors = tf.memory().numTensors;
    res = await app.request("/v1/finetune", {
      method: "POST",
      headers: { "content-type": "application/json", ...auth },
      body: JSON.stringify({ base_model: "micro", dataset: "shapes", steps: 100000, batch_size: 2 }),
    });
    const rec = await res.json();
    assert.equal(res.status, 202);
    await waitFor(app, rec.id, ["running"]);
    res = await app.request("/v1/finetune", {
      method: "POST",
      headers: { "content-type": "application/json", ...auth },
      body: JSON.stringify({ base_model: "micro", dataset: "shapes", steps: 1 }),
    });
    assert.equal(res.status, 429);
    assert.equal((await res.json()).error.code, "too_many_sessions");
    assert.ok(res.headers.get("retry-after"));
    // Classification keeps working while the session trains.
    assert.equal((await classify("micro")).length, 10);
    res = await app.request(`/v1/finetune/${rec.id}`, { method: "DELETE" });
    assert.equal(res.status, 401);
    res = await app.request(`/v1/finetune/${rec.id}`, { method: "DELETE", headers: auth });
    assert.equal(res.status, 202);
    const done = await waitFor(app, rec.id, ["cancelled", "failed", "succeeded"]);
    assert.equal(done.state, "cancelled");
    assert.equal(done.error.code, "cancelled");
    assert.ok(!done.model_id);
    assert.equal(tf.memory().numTensors, tensors, "a cancelled session leaves no tensor behind");
    assert.ok(
      !(await (await app.request("/v1/models")).json()).models.some((m: { id: string }) =>
        m.id === done.request.model_id
      ),
    );
    res = await app.request(`/v1/finetune/${rec.id}`, { method: "DELETE", headers: auth });
    assert.equal(res.status, 409);
    // The persisted record says the same.
    const disk = JSON.parse(await Deno.readTextFile(`${s.stateDir}/sessions/${rec.id}.json`));
    assert.equal(disk.state, "cancelled");
  });

  await t.step("sessions list", async () => {
    const list = await (await app.request("/v1/finetune")).json();
    assert.equal(list.sessions.length, 5);
  });
  await s.close();
});

Deno.test("a session's memory share reaches its model (an invalid one is refused there)", async () => {
  await initBackend("wasm");
  const root = await Deno.makeTempDir({ prefix: "vit-ft-share-" });
  try {
    await writeMicroModel(`${root}/micro`);
    await writeImageFolder(`${root}/data`, ["a", "b"], 2);
    const spec = {
      base: `${root}/micro`,
      data: { root: `${root}/data`, maxPixels: 1 << 20 },
      labels: ["a", "b"],
      steps: 1,
      lr: 0.01,
      freeze: "head-only" as const,
      batchSize: 2,
      seed: 1,
      memoryShare: 0,
      out: { dir: `${root}/out`, file: "test", extra: {} },
    };
    await assert.rejects(
      runFineTuneSpec(spec, () => Promise.resolve(), new AbortController().signal),
      /memoryShare: 0, expected a number in \(0, 1\]/,
    );
    await assert.rejects(Deno.stat(`${root}/out`), Deno.errors.NotFound, "nothing written");
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
