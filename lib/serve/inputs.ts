/**
 * The images of a classification request, from any of the three accepted encodings: `multipart/form-data`
 * (every file field is an image), a raw `image/*` body (one image), or JSON
 * (`{"image": "<base64>"}` or `{"images": ["<base64>" | {"name", "data"}]}`, data URLs accepted), plus
 * `top_k` from the query string or the body.
 *
 * @module
 */
import { readBody, readJson, readMultipart } from "./body.ts";
import { ApiError, badRequest } from "./errors.ts";

/** One uploaded image, still encoded. */
export interface InputImage {
  name: string;
  bytes: Uint8Array;
}

/** A parsed classification request. */
export interface ClassifyInput {
  images: InputImage[];
  /** As given; validated against the model later. */
  topK?: unknown;
}

function decodeBase64(text: string, what: string): Uint8Array {
  const m = /^data:[^;,]*(;base64)?,/.exec(text);
  const body = (m ? text.slice(m[0].length) : text).replace(/\s+/g, "");
  if (!/^[A-Za-z0-9+/_-]*={0,2}$/.test(body)) {
    throw new ApiError(400, "invalid_base64", `${what} is not valid base64`);
  }
  try {
    const bin = atob(body.replaceAll("-", "+").replaceAll("_", "/"));
    return Uint8Array.from(bin, (c) => c.charCodeAt(0));
  } catch {
    throw new ApiError(400, "invalid_base64", `${what} is not valid base64`);
  }
}

function fromJson(json: unknown): ClassifyInput {
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw badRequest(
      'the JSON body must be an object: {"image": "<base64>"} or {"images": [...]}',
      "invalid_request",
    );
  }
  const o = json as Record<string, unknown>;
  const images: InputImage[] = [];
  if (o.image !== undefined) {
    if (typeof o.image !== "string") throw badRequest('"image" must be a base64 string', "invalid_request");
    images.push({ name: "image", bytes: decodeBase64(o.image, '"image"') });
  }
  if (o.images !== undefined) {
    if (!Array.isArray(o.images)) throw badRequest('"images" must be an array', "invalid_request");
    o.images.forEach((item, i) => {
      if (typeof item === "string") {
        images.push({ name: `images[${i}]`, bytes: decodeBase64(item, `images[${i}]`) });
      } else if (
        typeof item === "object" && item !== null && typeof (item as { data?: unknown }).data === "string"
      ) {
        const it = item as { name?: unknown; data: string };
        const name = typeof it.name === "string" && it.name ? it.name.slice(0, 200) : `images[${i}]`;
        images.push({ name, bytes: decodeBase64(it.data, `images[${i}].data`) });
      } else {
        throw badRequest(
          `images[${i}] must be a base64 string or {"name", "data": "<base64>"}`,
          "invalid_request",
        );
      }
    });
  }
  if (o.image === undefined && o.images === undefined) {
    throw badRequest('the JSON body has no "image" or "images" field', "no_images");
  }
  return { images, topK: o.top_k };
}

/** Reads and parses a classification request's body (at most `maxBytes`). */
export async function parseClassifyRequest(req: Request, maxBytes: number): Promise<ClassifyInput> {
  const type = (req.headers.get("content-type") ?? "").split(";")[0].trim().toLowerCase();
  const query = new URL(req.url).searchParams.get("top_k") ?? undefined;
  let input: ClassifyInput;
  if (type === "multipart/form-data") {
    const form = await readMultipart(req, maxBytes);
    const images: InputImage[] = [];
    let topK: unknown;
    for (const [field, value] of form.entries()) {
      if (typeof value === "string") {
        if (field === "top_k") topK = value;
        continue;
      }
      images.push({ name: value.name || field, bytes: new Uint8Array(await value.arrayBuffer()) });
    }
    input = { images, topK };
  } else if (type.startsWith("image/")) {
    input = { images: [{ name: "body", bytes: await readBody(req, maxBytes) }] };
  } else if (type === "application/json" || type.endsWith("+json")) {
    input = fromJson(await readJson(req, maxBytes));
  } else {
    throw new ApiError(
      415,
      "unsupported_media_type",
      `content type ${JSON.stringify(type || "(none)")} is not accepted; send multipart/form-data, ` +
        `an image/* body, or application/json with base64 images`,
    );
  }
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
