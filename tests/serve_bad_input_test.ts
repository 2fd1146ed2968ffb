/**
 * The bad-input suite: every malformed, oversized or unauthorised request gets its 4xx (or 503) with a JSON
 * error naming the problem, and the server keeps classifying correctly after each one.
 */
import assert from "node:assert/strict";
import { pngBomb, startTestService, tarArchive, testImage } from "./_serve.ts";

Deno.env.set("VIT_QUIET", "1");

type Case = {
  name: string;
  path?: string;
  init: () => Promise<RequestInit> | RequestInit;
  status: number;
  code: string | RegExp;
  message?: RegExp;
  headers?: Record<string, RegExp>;
};

Deno.test("serve: bad inputs get clear 4xx and the server keeps serving", {
  sanitizeOps: false,
  sanitizeResources: false,
}, async (t) => {
  const s = await startTestService({
    limits: { maxBodyBytes: 2 * 2 ** 20, maxQueue: 4, maxImagesPerRequest: 6 } as never,
  });
  const { app, token } = s;
  const png = await testImage("png");
  const jpg = await testImage("jpeg", 64, 64, 3);
  const raw = (type: string, body: BodyInit) => ({ method: "POST", headers: { "content-type": type }, body });
  const ft = (body: unknown, auth = true) => ({
    method: "POST",
    headers: { "content-type": "application/json", ...(auth ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify(body),
  });
  // A symlink inside the data root that points outside it.
  await Deno.symlink("/etc", `${s.dataRoot}/escape`);
  const corruptPng = png.slice();
  for (let i = 45; i < corruptPng.length - 12; i++) corruptPng[i] ^= 0x5a;
  const corruptJpg = jpg.slice();
  for (let i = Math.floor(jpg.length / 3); i < jpg.length - 2; i++) corruptJpg[i] = (i * 37) & 0xff;

  const classify = "/v1/models/micro/classify";
  const cases: Case[] = [
    {
      name: "zero-byte image",
      init: () => raw("image/png", new Uint8Array(0)),
      status: 400,
      code: "empty_image",
      message: /empty/,
    },
    {
      name: "truncated PNG",
      init: () => raw("image/png", png.slice(0, Math.floor(png.length / 2))),
      status: 400,
      code: /truncated_image|corrupt_image/,
    },
    {
      name: "truncated JPEG",
      init: () => raw("image/jpeg", jpg.slice(0, Math.floor(jpg.length / 2))),
      status: 400,
      code: /truncated_image|corrupt_image/,
    },
    {
      name: "corrupt PNG",
      init: () => raw("image/png", corruptPng),
      status: 400,
      code: /corrupt_image|truncated_image/,
    },
    {
      name: "corrupt JPEG",
      init: () => raw("image/jpeg", corruptJpg),
      status: 400,
      code: /corrupt_image|truncated_image/,
    },
    {
      name: "not an image",
      init: () => raw("image/png", new TextEncoder().encode("hello, I am text")),
      status: 415,
      code: "unsupported_image_format",
    },
    {
      name: "20000x20000 PNG bomb",
      init: async () => raw("image/png", await pngBomb()),
      status: 413,
      code: "image_too_large",
      message: /20000/,
    },
    {
      name: "wrong content type",
      init: () => raw("text/plain", "hello"),
      status: 415,
      code: "unsupported_media_type",
    },
    {
      name: "no content type",
      init: () => ({ method: "POST", body: png }),
      status: 415,
      code: "unsupported_media_type",
    },
    {
      name: "invalid JSON",
      init: () => raw("application/json", "{not json"),
      status: 400,
      code: "invalid_json",
    },
    {
      name: "JSON without images",
      init: () => raw("application/json", '{"top_k": 3}'),
      status: 400,
      code: "no_images",
    },
    {
      name: "invalid base64",
      init: () => raw("application/json", '{"image": "%%%"}'),
      status: 400,
      code: "invalid_base64",
    },
    {
      name: "invalid top_k",
      path: `${classify}?top_k=-2`,
      init: () => raw("image/png", png),
      status: 400,
      code: "invalid_top_k",
    },
    {
      name: "empty multipart",
      init: () => ({ method: "POST", body: new FormData() }),
      status: 400,
      code: /no_images|invalid_multipart/,
    },
    {
      name: "malformed multipart",
      init: () => raw("multipart/form-data; boundary=xyz", "garbage"),
      status: 400,
      code: "invalid_multipart",
    },
    {
      name: "huge body (declared)",
      init: () => raw("image/png", new Uint8Array(3 * 2 ** 20)),
      status: 413,
      code: "payload_too_large",
    },
    {
      name: "huge body (streamed, no length)",
      init: () => {
        let sent = 0;
        const body = new ReadableStream<Uint8Array>({
          pull(c) {
            if (sent > 4 * 2 ** 20) return c.close();
            sent += 2 ** 16;
            c.enqueue(new Uint8Array(2 ** 16));
          },
        });
        return {
          method: "POST",
          headers: { "content-type": "image/png" },
          body,
          duplex: "half",
        } as RequestInit;
      },
      status: 413,
      code: "payload_too_large",
    },
    {
      name: "too many images",
      init: () => {
        const form = new FormData();
        for (let i = 0; i < 7; i++) form.append(`f${i}`, new File([png], `${i}.png`));
        return { method: "POST", body: form };
      },
      status: 413,
      code: "too_many_images",
    },
    {
      name: "queue full",
      init: () => {
        const form = new FormData();
        for (let i = 0; i < 5; i++) form.append(`f${i}`, new File([png], `${i}.png`));
        return { method: "POST", body: form };
      },
      status: 503,
      code: "queue_full",
      headers: { "retry-after": /^\d+$/ },
    },
    {
      name: "unknown model",
      path: "/v1/models/nope/classify",
      init: () => raw("image/png", png),
      status: 404,
      code: "model_not_found",
    },
    {
      name: "unknown model detail",
      path: "/v1/models/nope",
      init: () => ({ method: "GET" }),
      status: 404,
      code: "model_not_found",
    },
    {
      name: "missing token",
      path: "/v1/finetune",
      init: () => ft({ base_model: "micro", dataset: "x" }, false),
      status: 401,
      code: "missing_token",
    },
    {
      name: "traversal ../",
      path: "/v1/finetune",
      init: () => ft({ base_model: "micro", dataset: "../../etc" }),
      status: 400,
      code: "invalid_dataset_name",
      message: /\.\./,
    },
    {
      name: "traversal a/../../b",
      path: "/v1/finetune",
      init: () => ft({ base_model: "micro", dataset: "a/../../b" }),
      status: 400,
      code: "invalid_dataset_name",
    },
    {
      name: "absolute dataset path",
      path: "/v1/finetune",
      init: () => ft({ base_model: "micro", dataset: "/etc/passwd" }),
      status: 400,
      code: "invalid_dataset_name",
    },
    {
      name: "backslash dataset path",
      path: "/v1/finetune",
      init: () => ft({ base_model: "micro", dataset: "..\\..\\etc" }),
      status: 400,
      code: "invalid_dataset_name",
    },
    {
      name: "encoded traversal",
      path: "/v1/finetune",
      init: () => ft({ base_model: "micro", dataset: "%2e%2e/etc" }),
      status: 400,
      code: "invalid_dataset_name",
    },
    {
      name: "symlink out of the data root",
      path: "/v1/finetune",
      init: () => ft({ base_model: "micro", dataset: "escape" }),
      status: 400,
      code: "invalid_dataset_name",
      message: /outside/,
    },
    {
      name: "missing dataset",
      path: "/v1/finetune",
      init: () => ft({ base_model: "micro", dataset: "absent" }),
      status: 404,
      code: "dataset_not_found",
    },
    {
      name: "unknown base model",
      path: "/v1/finetune",
      init: () => ft({ base_model: "nope", dataset: "absent" }),
      status: 404,
      code: "model_not_found",
    },
    {
      name: "bad lr",
      path: "/v1/finetune",
      init: () => ft({ base_model: "micro", dataset: "d", lr: -1 }),
      status: 400,
      code: "invalid_field",
      message: /lr/,
    },
    {
      name: "bad freeze",
      path: "/v1/finetune",
      init: () => ft({ base_model: "micro", dataset: "d", freeze: "all" }),
      status: 400,
      code: "invalid_field",
      message: /freeze/,
    },
    {
      name: "unknown field",
      path: "/v1/finetune",
      init: () => ft({ base_model: "micro", dataset: "d", epochz: 1 }),
      status: 400,
      code: "invalid_field",
      message: /epochz/,
    },
    {
      name: "finetune invalid JSON",
      path: "/v1/finetune",
      init: () => ({ ...ft({}), body: "[1," }),
      status: 400,
      code: "invalid_json",
    },
    {
      name: "archive with path traversal",
      path: "/v1/finetune",
      init: async () => {
        const form = new FormData();
        form.append("base_model", "micro");
        form.append(
          "archive",
          new File([await tarArchive({ "a/x.png": png, "../../evil.png": png })], "evil.tar"),
        );
        return { method: "POST", headers: { authorization: `Bearer ${token}` }, body: form };
      },
      status: 400,
      code: "unsafe_archive",
    },
    {
      name: "archive that is not a tar",
      path: "/v1/finetune",
      init: () => {
        const form = new FormData();
        form.append("base_model", "micro");
        form.append("archive", new File([png], "data.tar"));
        return { method: "POST", headers: { authorization: `Bearer ${token}` }, body: form };
      },
      status: 400,
      code: /invalid_archive/,
    },
    {
      name: "unknown session",
      path: "/v1/finetune/0123abcd-0000",
      init: () => ({ method: "GET" }),
      status: 404,
      code: "session_not_found",
    },
  ];

  const healthy = async () => {
    const res = await app.request(classify, raw("image/png", png));
    const text = await res.text();
    assert.equal(res.status, 200, `the server stopped serving: ${text}`);
    const out = JSON.parse(text);
    assert.equal(out.results[0].predictions.length, 5);
  };

  for (const c of cases) {
    await t.step(c.name, async () => {
      const res = await app.request(c.path ?? classify, await c.init());
      const text = await res.text();
      assert.equal(res.status, c.status, `${c.name}: ${text}`);
      assert.match(res.headers.get("content-type") ?? "", /application\/json/);
      const body = JSON.parse(text);
      assert.equal(typeof body.error?.message, "string");
      assert.ok(body.error.message.length > 10, `message too terse: ${body.error.message}`);
      if (typeof c.code === "string") assert.equal(body.error.code, c.code);
      else assert.match(body.error.code, c.code);
      if (c.message) assert.match(body.error.message, c.message);
      for (const [h, re] of Object.entries(c.headers ?? {})) assert.match(res.headers.get(h) ?? "", re);
      await healthy();
    });
  }
  await t.step("nothing leaked: queue empty, no upload left behind", async () => {
    assert.equal(s.service.admission.pending, 0);
    const uploads = [];
    try {
      for await (const e of Deno.readDir(`${s.stateDir}/uploads`)) uploads.push(e.name);
    } catch { /* never created */ }
    assert.deepEqual(uploads, []);
    await assert.rejects(Deno.stat(`${s.root}/evil.png`));
  });
  await s.close();
});
