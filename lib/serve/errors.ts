/**
 * The service's errors, in its own terms: every failure a client can cause or observe is a `ServiceError`
 * with a `kind` (what sort of failure: invalid input, not found, conflict, over a limit, busy…), a stable
 * machine-readable `code` and a message saying what was wrong and what was expected. The core knows no HTTP:
 * one place in the HTTP layer (`lib/serve/http/errors.ts`) maps each kind to a status and answers
 * `{error: {code, message, request_id}}`.
 *
 * @module
 */

/** What sort of failure an error is; the HTTP layer gives each its status. */
export type ErrorKind =
  | "invalid"
  | "unauthenticated"
  | "forbidden"
  | "not_found"
  | "conflict"
  | "too_large"
  | "unsupported"
  | "unprocessable"
  | "busy"
  | "client_gone"
  | "internal"
  | "unavailable";

/** An error a client is told about, by kind and code. */
export class ServiceError extends Error {
  readonly kind: ErrorKind;
  readonly code: string;
  /** When trying again may succeed (busy, unavailable), in seconds. */
  readonly retryAfterS?: number;

  constructor(kind: ErrorKind, code: string, message: string, options: { retryAfterS?: number } = {}) {
    super(message);
    this.name = "ServiceError";
    this.kind = kind;
    this.code = code;
    if (options.retryAfterS !== undefined) this.retryAfterS = options.retryAfterS;
  }
}

/** The top folders of this machine's file system (an absolute path a message names starts with one). */
let topFolders: RegExp | undefined;

function serverPathPattern(): RegExp {
  if (!topFolders) {
    let names: string[] = [];
    try {
      names = [...Deno.readDirSync("/")].map((e) => e.name.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
    } catch { /* no access to the root: the fixed list below still applies */ }
    names.push("tmp", "home", "root", "work", "var", "usr", "opt", "etc", "proc", "srv", "mnt", "Users");
    // An absolute path whose first segment is a folder of this machine: `/v1/models` is left alone.
    topFolders = new RegExp(
      String.raw`(?<![\w.:/-])/(?:${[...new Set(names)].join("|")})(?![\w.-])(?:/[^\s"'\x60,;()<>]*)?`,
      "g",
    );
  }
  return topFolders;
}

/**
 * `value` with every server path (an absolute path into this machine's file system) replaced by
 * `<server path>` and OS error numbers dropped, in strings at any depth: what the service answers never
 * shows where it keeps its files (the log keeps the detail).
 */
export function redactPaths<T>(value: T): T {
  if (typeof value === "string") {
    return value
      .replace(/\bfile:\/\/[^\s"'\x60,;()<>]*/g, "<server path>")
      .replace(serverPathPattern(), "<server path>")
      .replace(/\s*\(os error \d+\)/g, "") as T;
  }
  if (Array.isArray(value)) return value.map(redactPaths) as T;
  if (typeof value === "object" && value !== null) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, redactPaths(v)])) as T;
  }
  return value;
}

/** The error a cancelled fine-tuning session's work ends with (its `name` is `AbortError`). */
export function abortError(): DOMException {
  return new DOMException("the fine-tuning session was cancelled", "AbortError");
}

/** Invalid input, `bad_request` unless named. */
export function badRequest(message: string, code = "bad_request"): ServiceError {
  return new ServiceError("invalid", code, message);
}

/** An unknown thing of kind `what`. */
export function notFound(what: string, id: string, code = "not_found"): ServiceError {
  return new ServiceError("not_found", code, `${what} "${id}" does not exist`);
}
