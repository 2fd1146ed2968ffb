/**
 * The service's error type: every failure a client can cause or observe becomes an `ApiError` with an HTTP
 * status, a stable machine-readable `code` and a message saying what was wrong and what was expected. Routes
 * turn it into `{error: {code, message}}`.
 *
 * @module
 */

/** An error with the HTTP status and code it is reported with. */
export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  /** Extra response headers (e.g. `Retry-After`). */
  readonly headers: Record<string, string>;

  constructor(status: number, code: string, message: string, headers: Record<string, string> = {}) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.headers = headers;
  }
}

/** The JSON body of an error response. */
export interface ErrorBody {
  error: { code: string; message: string; request_id?: string };
}

/** The body for an error (its message redacted: see `redactPaths`). */
export function errorBody(code: string, message: string, requestId?: string): ErrorBody {
  return { error: { code, message: redactPaths(message), ...(requestId ? { request_id: requestId } : {}) } };
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
    return value.replace(serverPathPattern(), "<server path>").replace(/\s*\(os error \d+\)/g, "") as T;
  }
  if (Array.isArray(value)) return value.map(redactPaths) as T;
  if (typeof value === "object" && value !== null) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, redactPaths(v)])) as T;
  }
  return value;
}

/** 400 `bad_request`. */
export function badRequest(message: string, code = "bad_request"): ApiError {
  return new ApiError(400, code, message);
}

/** 404 for an unknown thing of kind `what`. */
export function notFound(what: string, id: string, code = "not_found"): ApiError {
  return new ApiError(404, code, `${what} "${id}" does not exist`);
}
