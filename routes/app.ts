/**
 * The HTTP app: every route of the service on one Hono instance, with request metrics and the JSON error
 * contract (`{error: {code, message}}` with the right status) applied everywhere, unknown paths included.
 *
 * @module
 */
import { type Context, Hono } from "hono";
import { cors } from "hono/cors";
import { routePath } from "hono/route";
import { ApiError, errorBody } from "../lib/serve/errors.ts";
import type { Service } from "../lib/serve/service.ts";
import { docsRoutes } from "./docs.ts";
import { finetuneRoutes } from "./finetune.ts";
import { healthRoutes } from "./health.ts";
import { modelRoutes } from "./models.ts";

/** Methods counted under their own name in metrics; any other is counted as `other`. */
const METHODS = new Set(["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]);

/** The request ids a client may choose (anything else gets a fresh one). */
const REQUEST_ID = /^[A-Za-z0-9._-]{1,64}$/;

/** The content security policy of every answer but the web page (which sets its own). */
const API_CSP = "default-src 'none'; frame-ancestors 'none'";

/** The id of each request being answered (set first, by the outermost middleware). */
const requestIds = new WeakMap<Request, string>();

function requestIdOf(c: Context): string {
  return requestIds.get(c.req.raw) ?? "unknown";
}

/** Builds the app for a service (which may still be starting: `/readyz` says when it is ready). */
export function createApp(service: Service): Hono {
  const app = new Hono();
  app.use("*", async (c, next) => {
    const t0 = performance.now();
    const given = c.req.header("x-request-id");
    const id = given && REQUEST_ID.test(given) ? given : crypto.randomUUID();
    requestIds.set(c.req.raw, id);
    await next();
    c.header("X-Request-Id", id);
    c.header("X-Content-Type-Options", "nosniff");
    c.header("Referrer-Policy", "no-referrer");
    if (!c.res.headers.has("Content-Security-Policy")) c.header("Content-Security-Policy", API_CSP);
    // Only this middleware matched ("/*"): an unknown path, counted under one label, not per path.
    const path = routePath(c, -1);
    const labels = {
      route: !path || path === "*" || path === "/*" ? "unmatched" : path,
      method: METHODS.has(c.req.method) ? c.req.method : "other",
    };
    const seconds = (performance.now() - t0) / 1000;
    service.metrics.requests.inc({ ...labels, status: String(c.res.status) });
    service.metrics.latency.observe(labels, seconds);
    if (service.options.accessLog) {
      console.log(JSON.stringify({
        time: new Date().toISOString(),
        request_id: id,
        method: c.req.method.slice(0, 16),
        path: new URL(c.req.url).pathname.slice(0, 512),
        route: labels.route,
        status: c.res.status,
        ms: Math.round(seconds * 1e5) / 100,
      }));
    }
    if (c.res.status === 503 || c.res.status === 429 || c.res.status === 413) {
      service.metrics.rejected.inc({ status: String(c.res.status) });
    }
  });
  const origins = service.options.corsOrigins ?? [];
  if (origins.length) {
    app.use(
      "*",
      cors({
        origin: origins.includes("*") ? "*" : origins,
        allowHeaders: ["Authorization", "Content-Type", "X-Request-Id"],
        exposeHeaders: ["X-Request-Id", "Location", "Retry-After"],
        maxAge: 600,
      }),
    );
  }
  app.route("/", healthRoutes(service));
  app.route("/", modelRoutes(service));
  app.route("/", finetuneRoutes(service));
  app.route("/", docsRoutes(service));
  app.notFound((c) =>
    c.json(
      errorBody(
        "route_not_found",
        `no route ${c.req.method.slice(0, 16)} ${
          new URL(c.req.url).pathname.slice(0, 200)
        }; see /openapi.json`,
        requestIdOf(c),
      ),
      404,
    )
  );
  app.onError((err, c) => errorResponse(c, err));
  return app;
}

/**
 * The one mapping of errors to answers: an `ApiError` is answered with its status and code; anything else
 * is a 500 that says only that, with the request id that finds the detail in the log. Messages are
 * redacted of server paths (see `redactPaths`), and a client gone mid-body is logged as such.
 */
function errorResponse(c: Context, err: Error): Response {
  const id = requestIdOf(c);
  const where = `${c.req.method.slice(0, 16)} ${new URL(c.req.url).pathname.slice(0, 200)}`;
  if (err instanceof ApiError) {
    if (err.status === 499) {
      console.error(`serve: ${where}: client disconnected before sending the whole body (request ${id})`);
    } else if (err.status >= 500) {
      console.error(`serve: ${where}: ${err.code}: ${err.message} (request ${id})`);
    }
    for (const [k, v] of Object.entries(err.headers)) c.header(k, v);
    return c.json(errorBody(err.code, err.message, id), err.status as 400);
  }
  console.error(`serve: ${where}: request ${id}: ${err.stack ?? err}`);
  return c.json(
    errorBody("internal", `internal error; the server log has the detail under request id ${id}`, id),
    500,
  );
}
