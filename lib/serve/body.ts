/**
 * Reading request bodies under a size limit: a declared `Content-Length` over the limit is refused before
 * anything is read, and a streamed body is cut off as soon as it passes the limit, so a huge upload costs
 * the server at most `limit` bytes of memory.
 *
 * @module
 */
import { ApiError } from "./errors.ts";

function tooLarge(limit: number, got: string): ApiError {
  return new ApiError(
    413,
    "payload_too_large",
    `the request body (${got}) exceeds the limit of ${limit} bytes (${(limit / 2 ** 20).toFixed(1)} MiB)`,
  );
}

/** The whole body of `req`, at most `limit` bytes, or 413 `payload_too_large`. */
export async function readBody(req: Request, limit: number): Promise<Uint8Array<ArrayBuffer>> {
  const declared = req.headers.get("content-length");
  if (declared !== null && Number(declared) > limit) throw tooLarge(limit, `${declared} bytes`);
  if (!req.body) return new Uint8Array(0);
  const reader = req.body.getReader();
  const parts: Uint8Array<ArrayBuffer>[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.length;
    if (size > limit) {
      await reader.cancel().catch(() => {});
      throw tooLarge(limit, `more than ${limit} bytes`);
    }
    parts.push(value);
  }
  if (parts.length === 1) return parts[0];
  const out = new Uint8Array(size);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Parses a JSON body read under `limit`; 400 `invalid_json` names the parse error. */
export async function readJson(req: Request, limit: number): Promise<unknown> {
  const bytes = await readBody(req, limit);
  if (bytes.length === 0) throw new ApiError(400, "invalid_json", "the request body is empty; expected JSON");
  try {
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch (e) {
    throw new ApiError(400, "invalid_json", `the request body is not valid JSON: ${(e as Error).message}`);
  }
}

/** Parses a multipart body read under `limit`; 400 `invalid_multipart` when it is malformed. */
export async function readMultipart(req: Request, limit: number): Promise<FormData> {
  const bytes = await readBody(req, limit);
  try {
    return await new Request("http://local/", {
      method: "POST",
      headers: { "content-type": req.headers.get("content-type") ?? "" },
      body: bytes as Uint8Array<ArrayBuffer>,
    }).formData();
  } catch (e) {
    throw new ApiError(
      400,
      "invalid_multipart",
      `the multipart/form-data body could not be parsed (${(e as Error).message}); ` +
        `send each image as a file field`,
    );
  }
}
