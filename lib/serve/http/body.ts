/**
 * Reading request bodies under limits, as streams: a declared `Content-Length` over the limit is refused
 * before anything is read, and every limit (total bytes, parts, files, bytes per file) is enforced chunk by
 * chunk while the body arrives, so a hostile body costs at most its limits in memory and a chunk's worth of
 * parsing between two turns of the event loop. Multipart bodies go through `@fastify/busboy` (the streaming
 * parser undici's `formData()` was built on), which reports its limits as events as it parses.
 *
 * @module
 */
import { Busboy } from "@fastify/busboy";
import { concatBytes } from "../../util/bytes.ts";
import { ServiceError } from "../errors.ts";

function tooLarge(limit: number, got: string): ServiceError {
  return new ServiceError(
    "too_large",
    "payload_too_large",
    `the request body (${got}) exceeds the limit of ${limit} bytes (${(limit / 2 ** 20).toFixed(1)} MiB)`,
  );
}

/**
 * 499 `client_closed_request`: the body could not be read to its end (the client closed the connection or
 * broke the framing). Answered to nobody; logged as a disconnect, not as a server error.
 */
function clientDisconnected(cause: unknown): ServiceError {
  const e = new ServiceError(
    "client_gone",
    "client_closed_request",
    "the client closed the connection before the whole request body was read",
  );
  e.cause = cause;
  return e;
}

/**
 * The chunks of `req`'s body, at most `limit` bytes in all (413 `payload_too_large` as soon as it passes),
 * the body cancelled when the consumer stops early.
 */
async function* bodyChunks(req: Request, limit: number): AsyncGenerator<Uint8Array<ArrayBuffer>> {
  const declared = req.headers.get("content-length");
  if (declared !== null && Number(declared) > limit) throw tooLarge(limit, `${declared} bytes`);
  if (!req.body) return;
  const reader = req.body.getReader();
  let size = 0, finished = false;
  try {
    for (;;) {
      let chunk;
      try {
        chunk = await reader.read();
      } catch (e) {
        throw clientDisconnected(e);
      }
      const { done, value } = chunk;
      if (done) {
        finished = true;
        return;
      }
      size += value.length;
      if (size > limit) throw tooLarge(limit, `more than ${limit} bytes`);
      yield value;
    }
  } finally {
    if (!finished) await reader.cancel().catch(() => {});
  }
}

/** The whole body of `req`, at most `limit` bytes, or 413 `payload_too_large`. */
export async function readBody(req: Request, limit: number): Promise<Uint8Array<ArrayBuffer>> {
  const parts: Uint8Array<ArrayBuffer>[] = [];
  for await (const value of bodyChunks(req, limit)) parts.push(value);
  return concatBytes(parts);
}

/** String literals longer than this are kept out of `JSON.parse` (see {@linkcode JsonSplitter}). */
const LONG_STRING = 64 * 1024;

/**
 * A long JSON string literal (a base64 image) kept as the body's bytes, between the quotes and with its
 * escapes, instead of a JavaScript string: see `readJson`'s `longStrings`.
 */
export class LongJsonString {
  constructor(readonly pieces: readonly Uint8Array[], readonly escaped: boolean) {}

  /** Its length in bytes, as written in the body. */
  get byteLength(): number {
    return this.pieces.reduce((a, p) => a + p.length, 0);
  }

  /** The string's value (materialised: as large as the literal). */
  toString(): string {
    const d = new TextDecoder();
    const text = this.pieces.map((p) => d.decode(p, { stream: true })).join("") + d.decode();
    return this.escaped ? JSON.parse(`"${text}"`) : text;
  }
}

const QUOTE = 34, BACKSLASH = 92;

/**
 * Splits a JSON body, as it streams in, into a skeleton and its long string literals (base64 images), so
 * that `JSON.parse` sees only the skeleton: a 30 MB string literal would be copied into the JavaScript heap
 * and parsed in one turn, holding the event loop (and the garbage collector) for up to seconds, while
 * scanning bytes chunk by chunk as they arrive costs well under a millisecond per chunk. UTF-8 never puts
 * a quote or backslash byte inside a multi-byte character, so the scan is over bytes.
 */
class JsonSplitter {
  readonly #skeleton: Uint8Array[] = [];
  readonly #long: LongJsonString[] = [];
  readonly #nonce = `\\u0000${crypto.randomUUID()}:`;
  #inString = false;
  #escape = false;
  #escaped = false;
  #pieces: Uint8Array[] = [];
  #length = 0;

  /** Scans the next chunk of the body (kept by reference: the caller must not reuse it). */
  push(bytes: Uint8Array): void {
    let seg = 0;
    for (let i = 0; i < bytes.length; i++) {
      const c = bytes[i];
      if (!this.#inString) {
        if (c === QUOTE) {
          if (i > seg) this.#skeleton.push(bytes.subarray(seg, i));
          seg = i;
          this.#inString = true;
          this.#escaped = false;
          this.#pieces = [];
          this.#length = 0;
        }
      } else if (this.#escape) this.#escape = false;
      else if (c === BACKSLASH) this.#escape = this.#escaped = true;
      else if (c === QUOTE) {
        this.#pieces.push(bytes.subarray(seg, i + 1));
        this.#length += i + 1 - seg;
        seg = i + 1;
        this.#inString = false;
        this.#endString();
      }
    }
    if (seg < bytes.length) {
      const rest = bytes.subarray(seg);
      if (this.#inString) {
        this.#pieces.push(rest);
        this.#length += rest.length;
      } else this.#skeleton.push(rest);
    }
  }

  #endString(): void {
    if (this.#length <= LONG_STRING) {
      this.#skeleton.push(...this.#pieces);
    } else {
      const p = this.#pieces;
      // Without the quotes: the first byte of the first piece and the last byte of the last one.
      p[0] = p[0].subarray(1);
      p[p.length - 1] = p[p.length - 1].subarray(0, -1);
      this.#skeleton.push(new TextEncoder().encode(`"${this.#nonce}${this.#long.length}"`));
      this.#long.push(new LongJsonString(p.filter((x) => x.length > 0), this.#escaped));
    }
    this.#pieces = [];
  }

  /** Whether nothing but whitespace was pushed. */
  get empty(): boolean {
    return !this.#inString && this.#long.length === 0 &&
      this.#skeleton.every((b) => b.every((c) => c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09));
  }

  /**
   * Parses the skeleton and puts the long literals back: as `LongJsonString`s when `raw`, else as strings
   * (throws `SyntaxError` on invalid JSON).
   */
  parse(raw: boolean): unknown {
    if (this.#inString) this.#skeleton.push(...this.#pieces); // unterminated: JSON.parse reports it
    const d = new TextDecoder();
    const text = this.#skeleton.map((b) => d.decode(b, { stream: true })).join("") + d.decode();
    const value = JSON.parse(text);
    if (this.#long.length === 0) return value;
    const marker = JSON.parse(`"${this.#nonce}"`) as string;
    const restore = (v: unknown): unknown => {
      if (typeof v === "string" && v.startsWith(marker)) {
        const long = this.#long[Number(v.slice(marker.length))];
        return raw ? long : long.toString();
      }
      if (Array.isArray(v)) return v.map(restore);
      if (typeof v === "object" && v !== null) {
        for (const [k, x] of Object.entries(v)) (v as Record<string, unknown>)[k] = restore(x);
      }
      return v;
    };
    return restore(value);
  }
}

/** Bytes scanned per turn of the event loop when a body arrives in larger chunks. */
const SCAN_SLICE = 1 << 20;

/**
 * Parses a JSON body read under `limit`; 400 `invalid_json` names the parse error. With
 * `longStrings: "raw"`, string literals over 64 KiB come back as {@linkcode LongJsonString}s (bytes, never
 * a JavaScript string), for callers that decode them piece by piece (base64 images).
 */
export async function readJson(
  req: Request,
  limit: number,
  options: { longStrings?: "string" | "raw" } = {},
): Promise<unknown> {
  const json = new JsonSplitter();
  for await (const value of bodyChunks(req, limit)) {
    for (let at = 0; at < value.length; at += SCAN_SLICE) {
      if (at > 0) await new Promise((r) => setTimeout(r, 0));
      json.push(value.subarray(at, at + SCAN_SLICE));
    }
  }
  if (json.empty) {
    throw new ServiceError("invalid", "invalid_json", "the request body is empty; expected JSON");
  }
  try {
    return json.parse(options.longStrings === "raw");
  } catch (e) {
    throw new ServiceError(
      "invalid",
      "invalid_json",
      `the request body is not valid JSON: ${(e as Error).message}`,
    );
  }
}

/** Limits of a multipart body, enforced while it is read. */
export interface MultipartLimits {
  /** The whole body, in bytes. */
  maxBytes: number;
  /** File parts (413 `too_many_files`, or `tooManyFiles`'s error, past it). */
  maxFiles: number;
  /** One file, in bytes. */
  maxFileBytes: number;
  /** Non-file fields, and the bytes of each. */
  maxFields: number;
  maxFieldBytes?: number;
  /** The error for one file too many (e.g. the image limit of classification). */
  tooManyFiles?: () => ServiceError;
}

/** A file part: its field, file name and content (unless a `sink` took it). */
export interface MultipartFile {
  field: string;
  name: string;
  bytes: Uint8Array;
  size: number;
}

/** Where a file part's bytes go instead of memory (e.g. a file on disk), chunk by chunk. */
export type FileSink = (field: string, name: string) => ((chunk: Uint8Array) => void) | undefined;

/** A parsed multipart body: the fields (last value wins) and the files in order. */
export interface Multipart {
  fields: Record<string, string>;
  files: MultipartFile[];
}

/**
 * Parses a `multipart/form-data` body as it streams in, under `limits`: 413 as soon as a limit is passed
 * (the rest is never read), 400 `invalid_multipart` when it is malformed. File bytes are kept in memory
 * unless `sink` returns a writer for that part.
 */
export async function readMultipart(
  req: Request,
  limits: MultipartLimits,
  sink?: FileSink,
): Promise<Multipart> {
  let bb;
  try {
    bb = Busboy({
      headers: { "content-type": req.headers.get("content-type") ?? "" },
      // A part is a file when it has a file name (as `Request.formData()` decides).
      isPartAFile: (_field, _type, fileName) => fileName !== undefined,
      limits: {
        files: limits.maxFiles,
        fileSize: limits.maxFileBytes,
        fields: limits.maxFields,
        fieldSize: limits.maxFieldBytes ?? 64 * 1024,
        parts: limits.maxFiles + limits.maxFields,
        headerPairs: 32,
        headerSize: 16 * 1024,
      },
    });
  } catch (e) {
    throw invalidMultipart(e);
  }
  const out: Multipart = { fields: {}, files: [] };
  let failure: ServiceError | undefined;
  const fail = (e: ServiceError) => failure ??= e;
  // Settles on 'finish' (every part complete) or on the parser's first error.
  let finished = false;
  const settled = new Promise<void>((resolve) => {
    bb.on("finish", () => {
      finished = true;
      resolve();
    });
    bb.on("error", (e: unknown) => {
      fail(invalidMultipart(e));
      resolve();
    });
  });
  bb.on("filesLimit", () =>
    fail(
      limits.tooManyFiles?.() ??
        new ServiceError("too_large", "too_many_files", `the body holds more than ${limits.maxFiles} files`),
    ));
  bb.on(
    "fieldsLimit",
    () =>
      fail(
        new ServiceError(
          "too_large",
          "too_many_fields",
          `the body holds more than ${limits.maxFields} fields`,
        ),
      ),
  );
  bb.on("partsLimit", () =>
    fail(
      limits.tooManyFiles?.() ??
        new ServiceError(
          "too_large",
          "too_many_parts",
          `the body holds more than ${limits.maxFiles + limits.maxFields} parts`,
        ),
    ));
  bb.on("field", (field: string, value: string, _nameTruncated: boolean, valueTruncated: boolean) => {
    if (valueTruncated) {
      fail(
        new ServiceError("too_large", "field_too_large", `form field "${field.slice(0, 100)}" is too long`),
      );
    }
    out.fields[field] = value;
  });
  bb.on(
    "file",
    (field: string, stream: NodeJS.ReadableStream & { truncated?: boolean }, fileName: string) => {
      const name = fileName || field;
      const write = sink?.(field, name);
      const chunks: Uint8Array[] = [];
      const file: MultipartFile = { field, name, bytes: new Uint8Array(0), size: 0 };
      out.files.push(file);
      stream.on("limit", () =>
        fail(
          new ServiceError(
            "too_large",
            "payload_too_large",
            `file "${name.slice(0, 100)}" exceeds the limit of ${limits.maxFileBytes} bytes`,
          ),
        ));
      stream.on("data", (chunk: Uint8Array) => {
        if (failure) return;
        file.size += chunk.length;
        try {
          if (write) write(chunk);
          else chunks.push(chunk);
        } catch (e) {
          fail(
            e instanceof ServiceError
              ? e
              : new ServiceError("internal", "upload_write_failed", (e as Error).message),
          );
        }
      });
      stream.on("end", () => {
        if (!write) file.bytes = concatBytes(chunks);
      });
    },
  );
  const drained = () => new Promise<void>((r) => bb.once("drain", () => r()));
  try {
    read: for await (const chunk of bodyChunks(req, limits.maxBytes)) {
      // In slices, so a limit passed early in a large chunk stops the parsing there.
      for (let at = 0; at < chunk.length; at += SLICE) {
        if (failure) break read;
        if (!bb.write(chunk.subarray(at, at + SLICE))) await drained();
      }
      if (failure) break;
    }
    if (failure) throw failure;
    bb.end();
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([settled, new Promise((r) => timer = setTimeout(r, 5000))]);
    clearTimeout(timer);
    if (failure) throw failure;
    if (!finished) throw invalidMultipart(new Error("the body ends inside a part"));
    return out;
  } finally {
    bb.removeAllListeners("file");
    bb.destroy();
  }
}

/** Bytes handed to the parser at a time. */
const SLICE = 16 * 1024;

function invalidMultipart(e: unknown): ServiceError {
  return new ServiceError(
    "invalid",
    "invalid_multipart",
    `the multipart/form-data body could not be parsed (${
      (e as Error).message
    }); send each image as a file field`,
  );
}
