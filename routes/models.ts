/**
 * Model routes: list and describe the served models, register one from an http(s) URL and remove such a
 * registration (bearer token; registrations persist in the state dir), and classify images with one
 * (`POST /v1/models/:id/classify`).
 *
 * @module
 */
import { Hono } from "hono";
import { needsToken, needsTokenToRead, whenReady } from "../lib/serve/http/middleware.ts";
import { readJson } from "../lib/serve/http/body.ts";
import { classifyImages } from "../lib/serve/classify.ts";
import { badRequest } from "../lib/serve/errors.ts";
import { parseClassifyRequest, parseTopK } from "../lib/serve/http/inputs.ts";
import type { Service } from "../lib/serve/service.ts";

/** The model routes. */
export function modelRoutes(service: Service): Hono {
  const app = new Hono();
  const auth = needsToken(service), read = needsTokenToRead(service), ready = whenReady(service);
  app.get("/v1/models", read, async (c) => {
    await service.registry.sync();
    return c.json({
      default: service.registry.defaultId ?? null,
      models: service.registry.list().map((m) => service.registry.describe(m)),
      // Registered models whose URL failed to load: their error, and when a request tries again.
      unavailable: service.registry.unavailable().map((u) => service.registry.describeUnavailable(u)),
    });
  });
  app.get("/v1/models/:id", read, ready, async (c) => {
    const m = await service.registry.get(c.req.param("id"));
    return c.json(service.registry.describe(m, true));
  });
  app.post("/v1/models", auth, ready, async (c) => {
    const body = await readJson(c.req.raw, 64 * 1024) as Record<string, unknown>;
    if (typeof body !== "object" || body === null || typeof body.location !== "string") {
      throw badRequest(
        'expected {"id": "...", "location": "<http(s) URL of a converted model>"}',
        "invalid_request",
      );
    }
    if (!/^https?:\/\//i.test(body.location)) {
      throw badRequest(
        "location must be an http(s) URL; local folders are served with --model at startup",
        "invalid_location",
      );
    }
    const m = await service.registry.register(String(body.id ?? ""), body.location);
    return c.json(service.registry.describe(m, true), 201);
  });
  app.delete("/v1/models/:id", auth, ready, async (c) => {
    const r = await service.registry.unregister(c.req.param("id"));
    return c.json({
      id: r.id,
      kind: "registered",
      location: r.location || null,
      registered_at: r.registered_at || null,
      removed: true,
    });
  });
  app.post("/v1/models/:id/classify", read, ready, async (c) => {
    const t0 = performance.now();
    // Announce the request at once, so a fine-tuning step waits for it instead of running in between.
    const done = service.queue.expect();
    try {
      const served = await service.registry.get(c.req.param("id"));
      const input = await parseClassifyRequest(
        c.req.raw,
        service.options.limits.maxBodyBytes,
        service.options.limits.maxImagesPerRequest,
      );
      const k = parseTopK(input.topK, served.manifest.labels.length);
      const results = await classifyImages(served, input.images, k, service.options.limits.maxPixels);
      return c.json({
        model: served.id,
        top_k: k,
        results,
        timing_ms: { total: Math.round((performance.now() - t0) * 100) / 100 },
      });
    } finally {
      done();
    }
  });
  return app;
}
