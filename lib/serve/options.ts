/**
 * The server's configuration: models to serve, where to listen, where state and datasets live, and every
 * limit, from command-line flags (`deno task serve --model weights --port 8000`) with environment variables
 * as the fallback (what `deno serve --parallel` workers read), and defaults.
 *
 * @module
 */
import { OptionError, parseCommandLine, type Schema } from "../util/options.ts";
import { MODEL_ID_PATTERN } from "./model_id.ts";

/** One model to serve: a folder or URL, and optionally the id to serve it as. */
export interface ModelSpec {
  id?: string;
  location: string;
}

/** Limits that protect the server. */
export interface ServeLimits {
  /** Largest request body for classification, in bytes. */
  maxBodyBytes: number;
  /** Largest fine-tuning upload (an archive), in bytes. */
  maxUploadBytes: number;
  /** Largest decoded image, in pixels (width·height), checked on the header before decoding. */
  maxPixels: number;
  /** Images in one classification request. */
  maxImagesPerRequest: number;
  /** Images accepted and not yet classified, across all models; beyond it requests get 503. */
  maxQueue: number;
  /** Fine-tuning sessions queued or running at once. */
  maxSessions: number;
  /** Optimizer steps one session may ask for. */
  maxSteps: number;
  /** Images an uploaded or named dataset may hold. */
  maxDatasetImages: number;
}

/** Everything the server needs to start. */
export interface ServeOptions {
  models: ModelSpec[];
  port: number;
  host: string;
  /** Persisted sessions and fine-tuned models (`sessions/`, `models/`, `uploads/`). */
  stateDir: string;
  /** Datasets that `POST /v1/finetune` may name; undefined = uploads only. */
  dataRoot?: string;
  /** Bearer token of the protected routes; undefined disables them. */
  token?: string;
  maxBatch: number;
  maxWaitMs: number;
  limits: ServeLimits;
  /** Write one JSON line per request to stdout. */
  accessLog?: boolean;
  /** Origins allowed to call the API from a browser (CORS); none when empty or unset. */
  corsOrigins?: string[];
  /** Require the bearer token on classification and model reads too. */
  authClassify?: boolean;
}

/** The defaults. */
export const DEFAULT_LIMITS: ServeLimits = {
  maxBodyBytes: 32 * 2 ** 20,
  maxUploadBytes: 256 * 2 ** 20,
  maxPixels: 40_000_000,
  maxImagesPerRequest: 32,
  maxQueue: 256,
  maxSessions: 2,
  maxSteps: 100_000,
  maxDatasetImages: 200_000,
};

/** Parses `name=path` or `path`. */
export function parseModelSpec(text: string): ModelSpec {
  const m = new RegExp(`^(${MODEL_ID_PATTERN})=(.+)$`).exec(text);
  return m && !/^https?:$/i.test(m[1]) ? { id: m[1], location: m[2] } : { location: text };
}

/** Every flag of `deno task serve`, declared once: defaults, validation, environment fallbacks, `--help`. */
export const SERVE_OPTIONS = {
  model: {
    type: "string",
    multiple: true,
    aliases: ["-m"],
    metavar: "[id=]dir|url",
    env: "VIT_MODELS",
    defaultText: "weights",
    help: "a model to serve (repeatable; the environment's list is comma-separated)",
  },
  port: { type: "integer", default: 8000, range: [0, 65535], env: "VIT_PORT", help: "port to listen on" },
  host: { type: "string", default: "127.0.0.1", env: "VIT_HOST", help: "address to listen on" },
  "state-dir": {
    type: "string",
    default: "runs/serve",
    metavar: "dir",
    env: "VIT_STATE_DIR",
    help: "persisted sessions and fine-tuned models",
  },
  "data-root": {
    type: "string",
    default: "data",
    metavar: "dir",
    env: "VIT_DATA_ROOT",
    help: 'datasets POST /v1/finetune may name ("" = uploads only)',
  },
  "max-batch": { type: "integer", default: 16, range: [1, Infinity], help: "images per forward pass" },
  "max-wait-ms": {
    type: "number",
    default: 5,
    range: [0, Infinity],
    help: "how long a batch waits for more images",
  },
  "max-queue": {
    type: "integer",
    default: DEFAULT_LIMITS.maxQueue,
    range: [1, Infinity],
    help: "images accepted and not yet classified; beyond it 503",
  },
  "max-body-mb": {
    type: "number",
    default: DEFAULT_LIMITS.maxBodyBytes / 2 ** 20,
    range: [0, Infinity],
    help: "largest classification request body, MiB",
  },
  "max-upload-mb": {
    type: "number",
    default: DEFAULT_LIMITS.maxUploadBytes / 2 ** 20,
    range: [0, Infinity],
    help: "largest fine-tuning upload, MiB",
  },
  "max-pixels": {
    type: "integer",
    default: DEFAULT_LIMITS.maxPixels,
    range: [1, Infinity],
    help: "largest decoded image (width·height)",
  },
  "max-images": {
    type: "integer",
    default: DEFAULT_LIMITS.maxImagesPerRequest,
    range: [1, Infinity],
    help: "images in one classification request",
  },
  "max-sessions": {
    type: "integer",
    default: DEFAULT_LIMITS.maxSessions,
    range: [0, Infinity],
    help: "fine-tuning sessions queued or running at once",
  },
  "access-log": { type: "boolean", default: false, help: "one JSON line per request on stdout" },
  "cors-origin": {
    type: "string",
    multiple: true,
    metavar: "origin",
    env: "VIT_CORS_ORIGINS",
    help: 'an origin browsers may call the API from (repeatable; "*" for any; default: none)',
  },
  "auth-classify": {
    type: "boolean",
    default: false,
    help: "require the bearer token for classification and model listings too",
  },
} satisfies Schema;

/** The usage line of `deno task serve --help`. */
export const SERVE_USAGE = `Usage: deno task serve [--model [id=]dir|url ...] [options]

Serves the models over HTTP. Environment: VIT_API_TOKEN (bearer token of fine-tuning and model registration;
unset disables them), VIT_BACKEND (webgpu, wasm or cpu), and the variables named below.`;

/** Options from flags, then environment, then defaults. Throws an {@linkcode OptionError} on a bad flag. */
export function parseServeArgs(
  args: readonly string[],
  env: (name: string) => string | undefined,
): ServeOptions {
  const { values: v } = parseCommandLine(SERVE_OPTIONS, args, { env });
  const models = ((v.model as string[] | undefined) ?? ["weights"]).map(parseModelSpec);
  if (!v["state-dir"]) throw new OptionError(`"state-dir" must not be empty`);
  return {
    models,
    port: v.port as number,
    host: v.host as string,
    stateDir: v["state-dir"] as string,
    dataRoot: (v["data-root"] as string) || undefined,
    token: env("VIT_API_TOKEN") || undefined,
    maxBatch: v["max-batch"] as number,
    maxWaitMs: v["max-wait-ms"] as number,
    limits: {
      ...DEFAULT_LIMITS,
      maxQueue: v["max-queue"] as number,
      maxBodyBytes: Math.floor((v["max-body-mb"] as number) * 2 ** 20),
      maxUploadBytes: Math.floor((v["max-upload-mb"] as number) * 2 ** 20),
      maxPixels: v["max-pixels"] as number,
      maxImagesPerRequest: v["max-images"] as number,
      maxSessions: v["max-sessions"] as number,
    },
    ...(v["access-log"] ? { accessLog: true } : {}),
    ...((v["cors-origin"] as string[] | undefined)?.length
      ? { corsOrigins: v["cors-origin"] as string[] }
      : {}),
    ...(v["auth-classify"] ? { authClassify: true } : {}),
  };
}
