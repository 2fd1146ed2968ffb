/**
 * The one place errors become HTTP answers: each kind of `ServiceError` has its status, every answer's
 * request id is set here, and anything that is not a `ServiceError` is a 500 that names only that id (the
 * log line with the id keeps the detail). Messages are redacted of server paths (`redactPaths`).
 *
 * @module
 */
import type { Context } from "hono";
import { type ErrorKind, redactPaths, ServiceError } from "../errors.ts";

/** The JSON body of an error response. */
export interface ErrorBody {
  error: { code: string; message: string; request_id?: string };
}

/** The body for an error (its message redacted: see `redactPaths`). */
export function errorBody(code: string, message: string, requestId?: string): ErrorBody {
  return { error: { code, message: redactPaths(message), ...(requestId ? { request_id: requestId } : {}) } };
}

/** The status of each kind of error. */
export const HTTP_STATUS: Record<ErrorKind, number> = {
  invalid: 400,
  unauthenticated: 401,
  forbidden: 403,
  not_found: 404,
  conflict: 409,
  too_large: 413,
  unsupported: 415,
  unprocessable: 422,
  busy: 429,
  // nginx's "client closed request": never seen by the client, kept apart from server errors in metrics.
  client_gone: 499,
  internal: 500,
  unavailable: 503,
};

/** The id of each request being answered (set first, by the outermost middleware). */
const requestIds = new WeakMap<Request, string>();

/** The request ids a client may choose (anything else gets a fresh one). */
const REQUEST_ID = /^[A-Za-z0-9._-]{1,64}$/;

/** Gives the request its id: the client's `X-Request-Id` when well-formed, else a fresh UUID. */
export function assignRequestId(c: Context): string {
  const given = c.req.header("x-request-id");
  const id = given && REQUEST_ID.test(given) ? given : crypto.randomUUID();
  requestIds.set(c.req.raw, id);
  return id;
}

/** The request's id (see `assignRequestId`). */
export function requestIdOf(c: Context): string {
  return requestIds.get(c.req.raw) ?? "unknown";
}

/** The answer to an error thrown while handling `c` (Hono's `onError`). */
export function errorResponse(err: Error, c: Context): Response {
  const id = requestIdOf(c);
  const where = `${c.req.method.slice(0, 16)} ${new URL(c.req.url).pathname.slice(0, 200)}`;
  if (err instanceof ServiceError) {
    const status = HTTP_STATUS[err.kind];
    if (err.kind === "client_gone") {
      console.error(`serve: ${where}: client disconnected before sending the whole body (request ${id})`);
    } else if (status >= 500) {
      console.error(`serve: ${where}: ${err.code}: ${err.message} (request ${id})`);
    }
    if (err.retryAfterS !== undefined) c.header("Retry-After", String(err.retryAfterS));
    if (err.kind === "unauthenticated") {
      c.header(
        "WWW-Authenticate",
        err.code === "invalid_token"
          ? 'Bearer realm="vit-deno", error="invalid_token"'
          : 'Bearer realm="vit-deno"',
      );
    }
    return c.json(errorBody(err.code, err.message, id), status as 400);
  }
  console.error(`serve: ${where}: request ${id}: ${err.stack ?? err}`);
  return c.json(
    errorBody("internal", `internal error; the server log has the detail under request id ${id}`, id),
    500,
  );
}

/** The 404 of a path no route serves. */
export function notFoundResponse(c: Context): Response {
  return c.json(
    errorBody(
      "route_not_found",
      `no route ${c.req.method.slice(0, 16)} ${new URL(c.req.url).pathname.slice(0, 200)}; see /openapi.json`,
      requestIdOf(c),
    ),
    404,
  );
}
