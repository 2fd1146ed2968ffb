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
  error: { code: string; message: string };
}

/** The body for an error. */
export function errorBody(code: string, message: string): ErrorBody {
  return { error: { code, message } };
}

/** 400 `bad_request`. */
export function badRequest(message: string, code = "bad_request"): ApiError {
  return new ApiError(400, code, message);
}

/** 404 for an unknown thing of kind `what`. */
export function notFound(what: string, id: string, code = "not_found"): ApiError {
  return new ApiError(404, code, `${what} "${id}" does not exist`);
}
