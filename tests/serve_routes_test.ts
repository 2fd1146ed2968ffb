/**
 * Route tests through `app.request`: health, readiness, metrics, models, classification in all three
 * encodings with top_k, dynamic batching of concurrent requests, the OpenAPI document covering every route,
 * the web page, and auth on the protected routes.
 */
import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import { encodeBase64 } from "../lib/serve/base64.ts";
import { openApiDocument } from "../lib/serve/http/openapi.ts";
import { Service } from "../lib/serve/service.ts";
import { createApp } from "../routes/app.ts";
import { DEFAULT_LIMITS } from "../lib/serve/options.ts";
import { CIFAR_LABELS, serveFolders, startTestService, testImage } from "./_serve.ts";

Deno.env.set("VIT_QUIET", "1");

Deno.test("serve routes (app.request)", { sanitizeOps: false, sanitizeResources: false }, async (t) => {
  const s = await startTestService();
  const { app } = s;
  try {
    await t.step("healthz, readyz", async () => {
      let res = await app.request("/healthz");
      assert.equal(res.status, 200);
      assert.equal((await res.json()).status, "ok");
      res = await app.request("/readyz");
      assert.equal(res.status, 200);
      const ready = await res.json();
      assert.equal(ready.status, "ready");
      assert.deepEqual(ready.models, ["micro"]);
      assert.match(ready.backend, /webgpu|wasm|cpu/);
    });

    await t.step("models list and detail", async () => {
      let res = await app.request("/v1/models");
      assert.equal(res.status, 200);
      const list = await res.json();
      assert.equal(list.default, "micro");
      assert.equal(list.models.length, 1);
      assert.equal(list.models[0].num_classes, 10);
      res = await app.request("/v1/models/micro");
      const m = await res.json();
      assert.deepEqual(m.labels, CIFAR_LABELS);
      assert.equal(m.config.embed_dim, 64);
      assert.equal(m.dtype, "float32");
      assert.equal(m.preprocessing.img_size, 32);
      assert.equal(m.source.file, "formula weights (tests)");
      res = await app.request("/v1/models/default");
      assert.equal((await res.json()).id, "micro");
      res = await app.request("/v1/models/nope");
      assert.equal(res.status, 404);
      assert.equal((await res.json()).error.code, "model_not_found");
    });

    const png = await testImage("png");
    const jpg = await testImage("jpeg", 50, 50, 2);
    let reference: number[] = [];

    await t.step("classify a raw image/png body", async () => {
      const res = await app.request("/v1/models/micro/classify?top_k=3", {
        method: "POST",
        headers: { "content-type": "image/png" },
        body: png,
      });
      assert.equal(res.status, 200);
      const out = await res.json();
      assert.equal(out.model, "micro");
      assert.equal(out.results.length, 1);
      const r = out.results[0];
      assert.equal(r.predictions.length, 3);
      assert.equal(r.width, 40);
      assert.equal(r.height, 30);
      for (const p of r.predictions) {
        assert.ok(CIFAR_LABELS.includes(p.label));
        assert.ok(p.probability > 0 && p.probability < 1);
      }
      const probs = r.predictions.map((p: { probability: number }) => p.probability);
      assert.deepEqual(probs, [...probs].sort((a, b) => b - a));
      assert.ok(r.timing_ms.total >= r.timing_ms.decode);
      reference = probs;
    });

    await t.step("classify multipart with two images and top_k field", async () => {
      const form = new FormData();
      form.append("a", new File([png], "a.png", { type: "image/png" }));
      form.append("b", new File([jpg], "b.jpg", { type: "image/jpeg" }));
      form.append("top_k", "10");
      const res = await app.request("/v1/models/micro/classify", { method: "POST", body: form });
      assert.equal(res.status, 200);
      const out = await res.json();
      assert.equal(out.results.length, 2);
      assert.equal(out.results[0].name, "a.png");
      assert.equal(out.results[1].name, "b.jpg");
      assert.equal(out.results[0].predictions.length, 10);
      const sum = out.results[0].predictions.reduce(
        (a: number, p: { probability: number }) => a + p.probability,
        0,
      );
      assert.ok(Math.abs(sum - 1) < 1e-5, `probabilities sum to ${sum}`);
      // The same image gives the same answer whichever encoding and batch it came in.
      const first3 = out.results[0].predictions.slice(0, 3).map((p: { probability: number }) =>
        p.probability
      );
      first3.forEach((p: number, i: number) => assert.ok(Math.abs(p - reference[i]) < 1e-5));
    });

    await t.step("classify JSON base64 (image, images, data URL)", async () => {
      const b64 = encodeBase64(png);
      let res = await app.request("/v1/models/micro/classify", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ image: b64, top_k: 2 }),
      });
      assert.equal(res.status, 200);
      let out = await res.json();
      assert.equal(out.results[0].predictions.length, 2);
      res = await app.request("/v1/models/default/classify", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({
          images: [`data:image/png;base64,${b64}`, { name: "j", data: encodeBase64(jpg) }],
        }),
      });
      out = await res.json();
      assert.equal(res.status, 200, JSON.stringify(out));
      assert.equal(out.results.length, 2);
      assert.equal(out.results[1].name, "j");
      assert.equal(out.top_k, 5);
    });

    await t.step("concurrent requests are batched", async () => {
      const tensors = tf.memory().numTensors;
      const before = s.service.metrics.batchSize.count({ model: "micro" });
      const imagesBefore = s.service.metrics.images.get({ model: "micro" });
      const all = await Promise.all(
        Array.from({ length: 12 }, () =>
          app.request("/v1/models/micro/classify", {
            method: "POST",
            headers: { "content-type": "image/png" },
            body: png,
          })),
      );
      for (const r of all) assert.equal(r.status, 200);
      const batches = s.service.metrics.batchSize.count({ model: "micro" }) - before;
      assert.equal(s.service.metrics.images.get({ model: "micro" }) - imagesBefore, 12);
      assert.ok(batches < 12, `12 concurrent images ran in ${batches} batches`);
      assert.equal(tf.memory().numTensors, tensors, "no tensor left behind by classification");
    });

    await t.step("metrics", async () => {
      const res = await app.request("/metrics");
      assert.equal(res.status, 200);
      assert.match(res.headers.get("content-type")!, /text\/plain/);
      const text = await res.text();
      assert.match(
        text,
        /vit_http_requests_total\{method="POST",route="\/v1\/models\/:id\/classify",status="200"\} \d+/,
      );
      assert.match(text, /vit_http_request_duration_seconds_bucket\{.*le="\+Inf"\}/);
      assert.match(text, /vit_inference_batch_size_count\{model="micro"\} \d+/);
      assert.match(text, /vit_queue_images 0/);
      assert.match(text, /vit_finetune_sessions\{state="running"\} 0/);
      assert.match(text, /vit_ready 1/);
    });

    await t.step("openapi.json describes every route", async () => {
      const res = await app.request("/openapi.json");
      assert.equal(res.status, 200);
      const doc = await res.json();
      assert.equal(doc.openapi, "3.1.0");
      const documented = new Set<string>();
      for (const [path, ops] of Object.entries(doc.paths as Record<string, Record<string, unknown>>)) {
        for (const m of Object.keys(ops)) documented.add(`${m.toUpperCase()} ${path}`);
      }
      const routed = new Set(
        app.routes.filter((r) => r.method !== "ALL").map((r) =>
          `${r.method} ${r.path.replace(/:(\w+)/g, "{$1}")}`
        ),
      );
      assert.deepEqual([...routed].sort(), [...documented].sort());
      assert.deepEqual(openApiDocument(), doc);
    });

    await t.step("web page", async () => {
      const res = await app.request("/");
      assert.equal(res.status, 200);
      assert.match(res.headers.get("content-type")!, /text\/html/);
      const html = await res.text();
      assert.match(html, /id="drop"/);
      assert.match(html, /\/v1\/finetune/);
    });

    await t.step("protected routes need the token", async () => {
      let res = await app.request("/v1/finetune", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: "{}",
      });
      assert.equal(res.status, 401);
      assert.equal((await res.json()).error.code, "missing_token");
      assert.match(res.headers.get("www-authenticate")!, /Bearer/);
      res = await app.request("/v1/finetune", {
        method: "POST",
        headers: { "content-type": "application/json", authorization: "Bearer wrong" },
        body: "{}",
      });
      assert.equal(res.status, 401);
      assert.equal((await res.json()).error.code, "invalid_token");
      res = await app.request("/v1/models", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ id: "x", location: "http://127.0.0.1:1/x" }),
      });
      assert.equal(res.status, 401);
      res = await app.request("/v1/finetune/00000000-0000-0000-0000-000000000000", { method: "DELETE" });
      assert.equal(res.status, 401);
    });

    await t.step("register a model from a URL (token), then classify with it", async () => {
      // A static file server for the micro model's folder, on loopback.
      const files = serveFolders({ micro: s.modelDir });
      try {
        const location = files.url("micro");
        const auth = { "content-type": "application/json", authorization: `Bearer ${s.token}` };
        let res = await app.request("/v1/models", {
          method: "POST",
          headers: auth,
          body: JSON.stringify({ id: "remote", location }),
        });
        const m = await res.json();
        assert.equal(res.status, 201, JSON.stringify(m));
        assert.equal(m.id, "remote");
        assert.equal(m.kind, "registered");
        assert.equal(m.location, location);
        res = await app.request("/v1/models/remote/classify?top_k=3", {
          method: "POST",
          headers: { "content-type": "image/png" },
          body: png,
        });
        const out = await res.json();
        assert.equal(res.status, 200);
        out.results[0].predictions.forEach((p: { probability: number }, i: number) =>
          assert.ok(Math.abs(p.probability - reference[i]) < 1e-5)
        );
        res = await app.request("/v1/models", {
          method: "POST",
          headers: auth,
          body: JSON.stringify({ id: "remote", location }),
        });
        assert.equal(res.status, 409);
        res = await app.request("/v1/models", {
          method: "POST",
          headers: auth,
          body: JSON.stringify({ id: "local", location: "/etc" }),
        });
        assert.equal(res.status, 400);
        assert.equal((await res.json()).error.code, "invalid_location");
        res = await app.request("/v1/models", {
          method: "POST",
          headers: auth,
          body: JSON.stringify({ id: "gone", location: files.url("nothing") }),
        });
        assert.equal(res.status, 422);
        assert.match((await res.json()).error.message, /model\.json/);
      } finally {
        await files.shutdown();
      }
    });

    await t.step("unknown route is a JSON 404", async () => {
      const res = await app.request("/v2/whatever");
      assert.equal(res.status, 404);
      assert.equal((await res.json()).error.code, "route_not_found");
      const metrics = await (await app.request("/metrics")).text();
      assert.match(metrics, /vit_http_requests_total\{method="GET",route="unmatched",status="404"\} 1/);
    });
  } finally {
    await s.close();
  }
});

Deno.test("serve: without VIT_API_TOKEN the protected routes are disabled (403)", {
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  const s = await startTestService({ token: undefined });
  try {
    const res = await s.app.request("/v1/finetune", {
      method: "POST",
      headers: { "content-type": "application/json", authorization: "Bearer anything" },
      body: "{}",
    });
    assert.equal(res.status, 403);
    assert.equal((await res.json()).error.code, "auth_disabled");
  } finally {
    await s.close();
  }
});

Deno.test("serve: readyz is 503 while starting and after a failed start", {
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  const root = await Deno.makeTempDir({ prefix: "vit-serve-" });
  const service = new Service({
    models: [{ location: `${root}/missing` }],
    port: 0,
    host: "127.0.0.1",
    stateDir: `${root}/state`,
    maxBatch: 4,
    maxWaitMs: 1,
    limits: DEFAULT_LIMITS,
  });
  const app = createApp(service);
  let res = await app.request("/readyz");
  assert.equal(res.status, 503);
  assert.equal((await res.json()).error.code, "starting");
  await assert.rejects(service.start(), /cannot serve model .*missing.*model\.json/);
  res = await app.request("/readyz");
  assert.equal(res.status, 503);
  const body = await res.json();
  assert.equal(body.error.code, "start_failed");
  res = await app.request("/healthz");
  assert.equal(res.status, 200);
  res = await app.request("/v1/models/x/classify", { method: "POST", body: "x" });
  assert.equal(res.status, 503);
  await Deno.remove(root, { recursive: true });
});
