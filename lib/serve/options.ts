/**
 * The server's configuration: models to serve, where to listen, where state and datasets live, and every
 * limit, from command-line flags (`deno task serve --model weights --port 8000`) with environment variables
 * as the fallback (what `deno serve --parallel` workers read), and defaults.
 *
 * @module
 */

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
  const m = /^([A-Za-z0-9][A-Za-z0-9._-]{0,63})=(.+)$/.exec(text);
  return m && !/^https?:$/i.test(m[1]) ? { id: m[1], location: m[2] } : { location: text };
}

const USAGE = `usage: deno task serve [--model [id=]dir|url ...] [--port 8000] [--host 127.0.0.1]
  [--state-dir runs/serve] [--data-root data] [--max-batch 16] [--max-wait-ms 5] [--max-queue 256]
  [--max-body-mb 32] [--max-upload-mb 256] [--max-pixels 40000000] [--max-images 32] [--max-sessions 2]
  [--access-log]
environment: VIT_API_TOKEN (bearer token for fine-tuning and model registration), VIT_MODELS (comma-separated
  models, when no --model is given), VIT_PORT, VIT_HOST, VIT_STATE_DIR, VIT_DATA_ROOT, VIT_BACKEND`;

/** The usage text. */
export function usage(): string {
  return USAGE;
}

function num(flag: string, value: string | undefined, integer = true): number {
  const n = Number(value);
  if (
    value === undefined || value === "" || !Number.isFinite(n) || n < 0 || (integer && !Number.isInteger(n))
  ) {
    throw new Error(
      `${flag} must be a non-negative ${integer ? "integer" : "number"}, got ${
        JSON.stringify(value)
      }\n${USAGE}`,
    );
  }
  return n;
}

/** Options from flags, then environment, then defaults. Throws with the usage on a bad flag. */
export function parseServeArgs(
  args: readonly string[],
  env: (name: string) => string | undefined,
): ServeOptions {
  const models: ModelSpec[] = [];
  const limits = { ...DEFAULT_LIMITS };
  const o: ServeOptions = {
    models,
    port: num("VIT_PORT", env("VIT_PORT") ?? "8000"),
    host: env("VIT_HOST") ?? "127.0.0.1",
    stateDir: env("VIT_STATE_DIR") ?? "runs/serve",
    dataRoot: env("VIT_DATA_ROOT") ?? "data",
    token: env("VIT_API_TOKEN") || undefined,
    maxBatch: 16,
    maxWaitMs: 5,
    limits,
  };
  for (let i = 0; i < args.length; i++) {
    let flag = args[i];
    let value: string | undefined;
    const eq = flag.indexOf("=");
    if (flag.startsWith("--") && eq > 0) [flag, value] = [flag.slice(0, eq), flag.slice(eq + 1)];
    const next = () => value ?? args[++i];
    switch (flag) {
      case "--model":
      case "-m": {
        const v = next();
        if (!v) throw new Error(`--model needs a folder or URL\n${USAGE}`);
        models.push(parseModelSpec(v));
        break;
      }
      case "--port":
        o.port = num(flag, next());
        break;
      case "--host":
        o.host = next() ?? "";
        break;
      case "--state-dir":
        o.stateDir = next() ?? "";
        break;
      case "--data-root":
        o.dataRoot = next() || undefined;
        break;
      case "--max-batch":
        o.maxBatch = Math.max(1, num(flag, next()));
        break;
      case "--max-wait-ms":
        o.maxWaitMs = num(flag, next(), false);
        break;
      case "--max-queue":
        limits.maxQueue = Math.max(1, num(flag, next()));
        break;
      case "--max-body-mb":
        limits.maxBodyBytes = Math.floor(num(flag, next(), false) * 2 ** 20);
        break;
      case "--max-upload-mb":
        limits.maxUploadBytes = Math.floor(num(flag, next(), false) * 2 ** 20);
        break;
      case "--max-pixels":
        limits.maxPixels = num(flag, next());
        break;
      case "--max-images":
        limits.maxImagesPerRequest = Math.max(1, num(flag, next()));
        break;
      case "--max-sessions":
        limits.maxSessions = num(flag, next());
        break;
      case "--access-log":
        o.accessLog = true;
        break;
      case "--help":
      case "-h":
        throw new Error(USAGE);
      default:
        throw new Error(`unknown option ${JSON.stringify(args[i])}\n${USAGE}`);
    }
  }
  if (models.length === 0) {
    const fromEnv = (env("VIT_MODELS") ?? "").split(",").map((s) => s.trim()).filter(Boolean);
    models.push(...(fromEnv.length ? fromEnv : ["weights"]).map(parseModelSpec));
  }
  if (!o.stateDir) throw new Error(`--state-dir must not be empty\n${USAGE}`);
  return o;
}
