/**
 * Liveness, readiness and metrics: `GET /healthz` (the process answers), `GET /readyz` (backend up and every
 * model loaded; 503 until then or after a failed start; 200 even when a registered model's URL failed to
 * load, which it names under `unavailable`) and `GET /metrics` (Prometheus text).
 *
 * @module
 */
import { Hono } from "hono";
import { errorBody } from "../lib/serve/http/errors.ts";
import type { Service } from "../lib/serve/service.ts";

/** The health routes. */
export function healthRoutes(service: Service): Hono {
  const app = new Hono();
  app.get(
    "/healthz",
    (c) => c.json({ status: "ok", uptime_s: Math.round((Date.now() - service.startedAt.getTime()) / 1000) }),
  );
  app.get("/readyz", (c) => {
    if (service.state !== "ready") {
      c.header("Retry-After", "5");
      return c.json(
        errorBody(
          service.state === "failed" ? "start_failed" : "starting",
          service.state === "failed"
            ? `the server failed to start: ${service.startError}`
            : "the server is still loading its models",
        ),
        503,
      );
    }
    // Still 200: the other models serve, so a registration whose URL failed to load must not take the
    // replica out of a load balancer. It is named here (and counted in vit_models_unavailable) instead.
    return c.json({
      status: "ready",
      backend: service.backendName,
      models: service.registry.list().map((m) => m.id),
      unavailable: service.registry.unavailable().map((u) => service.registry.describeUnavailable(u)),
    });
  });
  app.get(
    "/metrics",
    (c) =>
      c.text(service.metrics.render(), 200, { "Content-Type": "text/plain; version=0.0.4; charset=utf-8" }),
  );
  return app;
}
