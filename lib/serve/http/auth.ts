/**
 * Bearer-token auth for the routes that start work or register models. The token comes from
 * `VIT_API_TOKEN`; when it is unset those routes are disabled (403) rather than open, so a server put behind
 * a load balancer without configuration cannot be made to train or register anything.
 *
 * @module
 */
import { ServiceError } from "../errors.ts";

/** Compares in time independent of where the strings differ. */
function sameSecret(a: string, b: string): boolean {
  const x = new TextEncoder().encode(a), y = new TextEncoder().encode(b);
  let diff = x.length ^ y.length;
  for (let i = 0; i < Math.max(x.length, y.length); i++) diff |= (x[i] ?? 0) ^ (y[i] ?? 0);
  return diff === 0;
}

/** Throws 401/403 unless `authorization` carries the configured token. */
export function requireToken(authorization: string | undefined | null, token: string | undefined): void {
  if (!token) {
    throw new ServiceError(
      "forbidden",
      "auth_disabled",
      "this route needs a bearer token, and the server has none configured (set VIT_API_TOKEN)",
    );
  }
  const m = /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? "");
  if (!m) {
    throw new ServiceError(
      "unauthenticated",
      "missing_token",
      'this route needs "Authorization: Bearer <VIT_API_TOKEN>"',
    );
  }
  if (!sameSecret(m[1], token)) {
    throw new ServiceError("unauthenticated", "invalid_token", "the bearer token is not valid");
  }
}

/** Whether `authorization` carries the configured token (never throws). */
export function hasToken(authorization: string | undefined | null, token: string | undefined): boolean {
  const m = /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? "");
  return !!token && !!m && sameSecret(m[1], token);
}
