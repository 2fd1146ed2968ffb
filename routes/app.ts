/**
 * The HTTP app: every route of the service on one Hono instance, with request metrics and the JSON error
 * contract (`{error: {code, message}}` with the right status) applied everywhere, unknown paths included.
 *
 * @module
 */
import { Hono } from "hono";
import { routePath } from "hono/route";
import { ApiError, errorBody } from "../lib/serve/errors.ts";
import type { Service } from "../lib/serve/service.ts";
import { docsRoutes } from "./docs.ts";
import { finetuneRoutes } from "./finetune.ts";
import { healthRoutes } from "./health.ts";
import { modelRoutes } from "./models.ts";

/** Builds the app for a service (which may still be starting: `/readyz` says when it is ready). */
export function createApp(service: Service): Hono {
  const app = new Hono();
  app.use("*", async (c, next) => {
    const t0 = performance.now();
    await next();
    // Only this middleware matched ("/*"): an unknown path, counted under one label, not per path.
    const path = routePath(c, -1);
    const labels = {
      route: !path || path === "*" || path === "/*" ? "unmatched" : path,
      method: c.req.method,
    };
    const seconds = (performance.now() - t0) / 1000;
    service.metrics.requests.inc({ ...labels, status: String(c.res.status) });
    service.metrics.latency.observe(labels, seconds);
    if (service.options.accessLog) {
      console.log(JSON.stringify({
        time: new Date().toISOString(),
        method: c.req.method,
        path: new URL(c.req.url).pathname,
        route: labels.route,
        status: c.res.status,
        ms: Math.round(seconds * 1e5) / 100,
      }));
    }
    if (c.res.status === 503 || c.res.status === 429 || c.res.status === 413) {
      service.metrics.rejected.inc({ status: String(c.res.status) });
    }
  });
  app.route("/", healthRoutes(service));
  app.route("/", modelRoutes(service));
  app.route("/", finetuneRoutes(service));
  app.route("/", docsRoutes(service));
  app.notFound((c) =>
    c.json(
      errorBody(
        "route_not_found",
        `no route ${c.req.method} ${new URL(c.req.url).pathname}; see /openapi.json`,
      ),
      404,
    )
  );
  app.onError((err, c) => {
    if (err instanceof ApiError) {
      for (const [k, v] of Object.entries(err.headers)) c.header(k, v);
      return c.json(errorBody(err.code, err.message), err.status as 400);
    }
    console.error(`serve: ${c.req.method} ${new URL(c.req.url).pathname}: ${(err as Error).stack ?? err}`);
    return c.json(errorBody("internal", `internal error: ${(err as Error).message}`), 500);
  });
  return app;
}
