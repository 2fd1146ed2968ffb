/**
 * The images of a classification request, from any of the three accepted encodings: `multipart/form-data`
 * (every file field is an image), a raw `image/*` body (one image), or JSON
 * (`{"image": "<base64>"}` or `{"images": ["<base64>" | {"name", "data"}]}`, data URLs accepted), plus
 * `top_k` from the query string or the body.
 *
 * @module
 */
import type { InputImage } from "../classify.ts";
import { LongJsonString, readBody, readJson, readMultipart } from "./body.ts";
import { badRequest, ServiceError } from "../errors.ts";

export type { InputImage };

/** A parsed classification request. */
export interface ClassifyInput {
  images: InputImage[];
  /** As given; validated against the model later. */
  topK?: unknown;
}

/** Base64 characters decoded per turn of the event loop. */
const B64_SLICE = 256 * 1024;

/**
 * The pieces of a base64 value as text of at most `B64_SLICE` characters: a string sliced, or a long JSON
 * literal decoded slice by slice from the body's bytes (never one large string).
 */
function* textPieces(value: string | LongJsonString): Generator<string> {
  if (typeof value === "string") {
    for (let i = 0; i < value.length; i += B64_SLICE) yield value.slice(i, i + B64_SLICE);
    return;
  }
  const d = new TextDecoder();
  for (const p of value.pieces) {
    for (let i = 0; i < p.length; i += B64_SLICE) {
      yield d.decode(p.subarray(i, i + B64_SLICE), { stream: true });
    }
  }
  yield d.decode();
}

/**
 * Decodes base64 (standard or URL-safe, whitespace and a data-URL prefix allowed) in linear time, a slice
 * per turn of the event loop, so a large image never holds the loop for long.
 */
async function decodeBase64(value: string | LongJsonString, what: string): Promise<Uint8Array> {
  const invalid = () => new ServiceError("invalid", "invalid_base64", `${what} is not valid base64`);
  // Base64 in JSON may escape "/" as `\/` and hold `\n` line breaks; any other escape is not base64.
  const escaped = value instanceof LongJsonString && value.escaped;
  const size = typeof value === "string" ? value.length : value.byteLength;
  const out = new Uint8Array(Math.ceil(size * 3 / 4));
  let at = 0, carry = "", first = true, padded = false, turns = 0;
  for (let piece of textPieces(value)) {
    if (turns++ > 0) await new Promise((r) => setTimeout(r, 0));
    if (first) {
      const m = /^\s*data:[^;,]*(;base64)?,/.exec(piece.slice(0, 512));
      if (m) piece = piece.slice(m[0].length);
      first = false;
    }
    let text = carry + piece;
    if (escaped) {
      // An escape split between two pieces waits for the next one.
      const cut = text.endsWith("\\") ? text.length - 1 : text.length;
      carry = text.slice(cut);
      text = text.slice(0, cut).replace(/\\[nrt]/g, "").replaceAll("\\/", "/");
    } else carry = "";
    text = text.replace(/\s+/g, "");
    if (!/^[A-Za-z0-9+/_-]*=*$/.test(text) || (padded && text.length > 0)) throw invalid();
    if (text.includes("=")) padded = true;
    const whole = padded ? text.length : text.length - (text.length % 4);
    carry = text.slice(whole) + carry;
    if (whole === 0) continue;
    try {
      const chunk = text.slice(0, whole).replaceAll("-", "+").replaceAll("_", "/");
      at += out.subarray(at).setFromBase64(chunk).written;
    } catch {
      throw invalid();
    }
  }
  if (carry) {
    try {
      at += out.subarray(at).setFromBase64(carry.replaceAll("-", "+").replaceAll("_", "/")).written;
    } catch {
      throw invalid();
    }
  }
  return out.subarray(0, at);
}

/** A base64 value of a JSON body: a string, or a long literal left as bytes. */
function isBase64Value(v: unknown): v is string | LongJsonString {
  return typeof v === "string" || v instanceof LongJsonString;
}

async function fromJson(json: unknown, maxImages: number): Promise<ClassifyInput> {
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw badRequest(
      'the JSON body must be an object: {"image": "<base64>"} or {"images": [...]}',
      "invalid_request",
    );
  }
  const o = json as Record<string, unknown>;
  const images: InputImage[] = [];
  if (o.image !== undefined) {
    if (!isBase64Value(o.image)) throw badRequest('"image" must be a base64 string', "invalid_request");
    images.push({ name: "image", bytes: await decodeBase64(o.image, '"image"') });
  }
  if (o.images !== undefined) {
    if (!Array.isArray(o.images)) throw badRequest('"images" must be an array', "invalid_request");
    if (o.images.length > maxImages) throw tooManyImages(maxImages, o.images.length);
    for (const [i, item] of o.images.entries()) {
      if (isBase64Value(item)) {
        images.push({ name: `images[${i}]`, bytes: await decodeBase64(item, `images[${i}]`) });
      } else if (
        typeof item === "object" && item !== null && isBase64Value((item as { data?: unknown }).data)
      ) {
        const it = item as { name?: unknown; data: string | LongJsonString };
        const name = typeof it.name === "string" && it.name ? it.name.slice(0, 200) : `images[${i}]`;
        images.push({ name, bytes: await decodeBase64(it.data, `images[${i}].data`) });
      } else {
        throw badRequest(
          `images[${i}] must be a base64 string or {"name", "data": "<base64>"}`,
          "invalid_request",
        );
      }
    }
  }
  if (o.image === undefined && o.images === undefined) {
    throw badRequest('the JSON body has no "image" or "images" field', "no_images");
  }
  return { images, topK: o.top_k };
}

/** 413 `too_many_images`. */
export function tooManyImages(max: number, count?: number): ServiceError {
  return new ServiceError(
    "too_large",
    "too_many_images",
    `the request holds ${count ?? "more than " + max} images; at most ${max} per request`,
  );
}

/**
 * Reads and parses a classification request's body: at most `maxBytes`, at most `maxImages` images (both
 * enforced while the body is read).
 */
export async function parseClassifyRequest(
  req: Request,
  maxBytes: number,
  maxImages: number,
): Promise<ClassifyInput> {
  const type = (req.headers.get("content-type") ?? "").split(";")[0].trim().toLowerCase();
  const query = new URL(req.url).searchParams.get("top_k") ?? undefined;
  let input: ClassifyInput;
  if (type === "multipart/form-data") {
    const form = await readMultipart(req, {
      maxBytes,
      maxFiles: maxImages,
      maxFileBytes: maxBytes,
      maxFields: 4,
      tooManyFiles: () => tooManyImages(maxImages),
    });
    input = { images: form.files.map((f) => ({ name: f.name, bytes: f.bytes })), topK: form.fields.top_k };
  } else if (type.startsWith("image/")) {
    input = { images: [{ name: "body", bytes: await readBody(req, maxBytes) }] };
  } else if (type === "application/json" || type.endsWith("+json")) {
    input = await fromJson(await readJson(req, maxBytes, { longStrings: "raw" }), maxImages);
  } else {
    throw new ServiceError(
      "unsupported",
      "unsupported_media_type",
      `content type ${JSON.stringify(type || "(none)")} is not accepted; send multipart/form-data, ` +
        `an image/* body, or application/json with base64 images`,
    );
  }
  if (input.images.length > maxImages) throw tooManyImages(maxImages, input.images.length);
  if (input.images.length === 0) {
    throw badRequest("the request holds no image; send at least one file or base64 image", "no_images");
  }
  return { images: input.images, topK: query ?? input.topK };
}

/** Validates `top_k` (default 5) against the class count; values above it are capped. */
export function parseTopK(value: unknown, classes: number): number {
  if (value === undefined || value === null || value === "") return Math.min(5, classes);
  const n = typeof value === "string" ? Number(value) : value;
  if (typeof n !== "number" || !Number.isInteger(n) || n < 1) {
    throw badRequest(`top_k must be a positive integer, got ${JSON.stringify(value)}`, "invalid_top_k");
  }
  return Math.min(n, classes);
}
