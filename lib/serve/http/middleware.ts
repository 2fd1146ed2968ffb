/**
 * The HTTP layer's middleware: what every request goes through (request id, security headers, metrics,
 * access log, CORS) and what guards routes (the bearer token, readiness), so handlers hold only their work.
 *
 * @module
 */
import type { Context, MiddlewareHandler, Next } from "hono";
import { cors } from "hono/cors";
import { routePath } from "hono/route";
import { ServiceError } from "../errors.ts";
import type { Service } from "../service.ts";
import { requireToken } from "./auth.ts";
import { assignRequestId } from "./errors.ts";

/** Methods counted under their own name in metrics; any other is counted as `other`. */
const METHODS = new Set(["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]);

/** The content security policy of every answer but the web page (which sets its own). */
const API_CSP = "default-src 'none'; frame-ancestors 'none'";

/**
 * The outermost middleware: gives the request its id, and sets on every answer `X-Request-Id`, `nosniff`,
 * `no-referrer` and a content security policy (unless the route set its own); counts it in metrics by route
 * pattern and method (unknown methods as `other`, unknown paths as `unmatched`: bounded labels) and writes
 * the access log line.
 */
export function requestContext(service: Service): MiddlewareHandler {
  return async (c: Context, next: Next) => {
    const t0 = performance.now();
    const id = assignRequestId(c);
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
  };
}

/** CORS for `--cors-origin` (none when no origin is configured). */
export function corsFor(service: Service): MiddlewareHandler | undefined {
  const origins = service.options.corsOrigins ?? [];
  if (!origins.length) return undefined;
  return cors({
    origin: origins.includes("*") ? "*" : origins,
    allowHeaders: ["Authorization", "Content-Type", "X-Request-Id"],
    exposeHeaders: ["X-Request-Id", "Location", "Retry-After"],
    maxAge: 600,
  });
}

/** 401/403 unless the request carries the bearer token (`VIT_API_TOKEN`). */
export function needsToken(service: Service): MiddlewareHandler {
  return (c: Context, next: Next) => {
    requireToken(c.req.header("authorization"), service.options.token);
    return next();
  };
}

/** `needsToken` when the server runs with `--auth-classify`, else nothing. */
export function needsTokenToRead(service: Service): MiddlewareHandler {
  const auth = needsToken(service);
  return (c: Context, next: Next) => service.options.authClassify ? auth(c, next) : next();
}

/** 503 `not_ready` (with `Retry-After`) until every model is loaded. */
export function whenReady(service: Service): MiddlewareHandler {
  return (_c: Context, next: Next) => {
    if (service.state !== "ready") {
      throw new ServiceError("unavailable", "not_ready", "the server is still loading its models", {
        retryAfterS: 5,
      });
    }
    return next();
  };
}
