/**
 * Validating a `POST /v1/finetune` request (JSON, or multipart with the dataset archive as the `archive`
 * file field): every field is checked with a 400 naming it and what was expected. Besides the session's own
 * fields, a request may carry timm's augmentation and regularisation keys (`SESSION_RECIPE_KEYS`), checked
 * as a training YAML's are.
 *
 * @module
 */
import { type Freeze, SESSION_RECIPE_KEYS, sessionConfig } from "../../train/config.ts";
import type { Multipart } from "./body.ts";
import { badRequest, ServiceError } from "../errors.ts";
import { checkDatasetName } from "../datasets.ts";
import { checkModelId } from "../registry.ts";

import type { FineTuneFields } from "../session_data.ts";

export type { FineTuneFields };

const KNOWN = new Set([
  "base_model",
  "dataset",
  "epochs",
  "steps",
  "lr",
  "freeze",
  "batch_size",
  "seed",
  "model_id",
]);

function int(o: Record<string, unknown>, key: string, min: number, max: number): number | undefined {
  const v = o[key];
  if (v === undefined || v === null || v === "") return undefined;
  const n = typeof v === "string" ? Number(v) : v;
  if (typeof n !== "number" || !Number.isInteger(n) || n < min || n > max) {
    throw badRequest(
      `"${key}" must be an integer in [${min}, ${max}], got ${JSON.stringify(v)}`,
      "invalid_field",
    );
  }
  return n;
}

function parseFreeze(v: unknown): Freeze {
  if (v === undefined || v === null || v === "" || v === "none") return "none";
  if (v === "head-only" || v === "head_only") return "head-only";
  const m = typeof v === "string" ? /^blocks:(\d{1,3})$/.exec(v) : null;
  if (m) return Number(m[1]) === 0 ? "none" : { blocks: Number(m[1]) };
  throw badRequest(
    `"freeze" must be "none", "head-only" or "blocks:N", got ${JSON.stringify(v)}`,
    "invalid_field",
  );
}

/** Validates the fields of a fine-tuning request. */
export function parseFineTuneFields(
  o: Record<string, unknown>,
  archive: FineTuneFields["archive"],
  maxSteps: number,
): FineTuneFields {
  const recipe: Record<string, unknown> = {};
  for (const k of Object.keys(o)) {
    if (SESSION_RECIPE_KEYS.includes(k)) recipe[k] = o[k];
    else if (!KNOWN.has(k)) {
      throw badRequest(
        `unknown field "${k}"; expected some of ${[...KNOWN, ...SESSION_RECIPE_KEYS].join(", ")}`,
        "invalid_field",
      );
    }
  }
  if (typeof o.base_model !== "string" || !o.base_model) {
    throw badRequest('"base_model" must name a served model (see GET /v1/models)', "invalid_field");
  }
  if (archive && o.dataset !== undefined && o.dataset !== "") {
    throw badRequest(
      'give either "dataset" (a name under the data root) or an "archive" upload, not both',
      "invalid_field",
    );
  }
  if (!archive && (o.dataset === undefined || o.dataset === "")) {
    throw badRequest(
      'no dataset: give "dataset" (a name under the data root) or upload a tar archive of class folders as "archive"',
      "invalid_field",
    );
  }
  const epochs = int(o, "epochs", 1, 1000);
  const steps = int(o, "steps", 1, maxSteps);
  if (epochs !== undefined && steps !== undefined) {
    throw badRequest('give either "epochs" or "steps", not both', "invalid_field");
  }
  const lrRaw = o.lr ?? 0.01;
  const lr = typeof lrRaw === "string" ? Number(lrRaw) : lrRaw;
  if (typeof lr !== "number" || !Number.isFinite(lr) || lr <= 0 || lr > 10) {
    throw badRequest(`"lr" must be a number in (0, 10], got ${JSON.stringify(o.lr)}`, "invalid_field");
  }
  const batchSize = int(o, "batch_size", 1, 512) ?? 16;
  try {
    // The class count is the dataset's, not known yet; it changes no check.
    sessionConfig(recipe, { batch_size: batchSize, num_classes: 2, hflip: 0 }, "request");
  } catch (e) {
    throw badRequest((e as Error).message, "invalid_field");
  }
  const modelId = o.model_id === undefined || o.model_id === ""
    ? undefined
    : checkModelId(String(o.model_id), '"model_id"');
  return {
    base_model: o.base_model,
    dataset: archive ? undefined : checkDatasetName(o.dataset),
    archive,
    epochs: epochs ?? (steps === undefined ? 1 : undefined),
    steps,
    lr,
    freeze: parseFreeze(o.freeze),
    batch_size: batchSize,
    seed: int(o, "seed", 0, 2 ** 31 - 1) ?? 0,
    model_id: modelId,
    ...(Object.keys(recipe).length ? { recipe } : {}),
  };
}

/**
 * The fields and the archive of a multipart fine-tuning request whose `archive` file part was written to
 * `archivePath`.
 */
export function fieldsFromForm(
  form: Multipart,
  archivePath: string,
): { fields: Record<string, unknown>; archive?: FineTuneFields["archive"] } {
  let archive: FineTuneFields["archive"];
  for (const f of form.files) {
    if (f.field !== "archive") {
      throw new ServiceError(
        "invalid",
        "invalid_field",
        `unexpected file field "${f.field.slice(0, 100)}"; upload the dataset as "archive"`,
      );
    }
    archive = { name: f.name || "archive", path: archivePath };
  }
  return { fields: { ...form.fields }, archive };
}
