/**
 * Preparing a fine-tuning session's data before it is accepted: the dataset (a folder of class folders
 * under the data root, or an uploaded tar/tar.gz extracted into `<state-dir>/uploads/`) is opened with
 * `lib/data`'s image-folder reader and checked (classes, size); the session's training worker reopens the
 * same folder (finetune.ts).
 * Problems with the data are answered 4xx here instead of failing the session later.
 *
 * @module
 */
import { openImageFolder } from "../data/image_folder.ts";
import { extractTar, fileStream, TarError } from "../data/tar.ts";
import { splitFolder } from "../data/image_set.ts";
import { resolveDataset } from "./datasets.ts";
import { ServiceError } from "./errors.ts";
import { PROCESS_TAG } from "./state/liveness.ts";
import { type Freeze, sessionConfig } from "../train/config.ts";
import type { ServedModel } from "./registry.ts";
import type { Service } from "./service.ts";
import type { SessionDataset, SessionRequest } from "./sessions.ts";

/** The validated fields; `steps` may still depend on the dataset's size when `epochs` was given. */
export interface FineTuneFields {
  base_model: string;
  /** A dataset name under the data root, when no archive was uploaded. */
  dataset?: string;
  /** The uploaded archive (tar or tar.gz of class folders), as written to disk. */
  archive?: { name: string; path: string };
  epochs?: number;
  steps?: number;
  lr: number;
  freeze: Freeze;
  batch_size: number;
  seed: number;
  model_id?: string;
  /** timm's augmentation and regularisation keys given (lib/train/config.ts `SESSION_RECIPE_KEYS`). */
  recipe?: Record<string, unknown>;
}

/**
 * An uploaded archive on its way to disk (`<state-dir>/uploads/<process tag>-<uuid>.upload`), written chunk
 * by chunk as the request body is parsed, so an upload never sits in memory whole. Named by the writing
 * process, so a restarted server removes what a crashed one left (see `liveness.ts`).
 */
export class UploadFile {
  readonly path: string;
  #file: Deno.FsFile | undefined;

  private constructor(path: string, file: Deno.FsFile) {
    this.path = path;
    this.#file = file;
  }

  /** Creates the file under `<stateDir>/uploads`. */
  static async create(stateDir: string): Promise<UploadFile> {
    const dir = `${stateDir}/uploads`;
    await Deno.mkdir(dir, { recursive: true });
    const path = `${dir}/${PROCESS_TAG}-${crypto.randomUUID()}.upload`;
    return new UploadFile(path, await Deno.open(path, { write: true, createNew: true }));
  }

  /** Appends a chunk (synchronously: a parser callback; the page cache makes it cheap). */
  write(chunk: Uint8Array): void {
    if (!this.#file) throw new Error("the upload file is closed");
    for (let at = 0; at < chunk.length;) at += this.#file.writeSync(chunk.subarray(at));
  }

  /** Closes the file (it stays until `remove`). */
  close(): void {
    this.#file?.close();
    this.#file = undefined;
  }

  /** Closes and deletes the file. */
  async remove(): Promise<void> {
    this.close();
    await Deno.remove(this.path).catch(() => {});
  }
}

/** Largest inflated/compressed ratio of an uploaded tar.gz (image datasets compress far less). */
const MAX_UPLOAD_RATIO = 50;

/**
 * Extracts an uploaded archive into `dest`, streamed in small chunks under limits on members, content,
 * inflated size and inflation ratio; malformed or unsafe archives are 400, oversized ones 413.
 */
async function extractUpload(archive: { name: string; path: string }, dest: string, service: Service) {
  const limits = service.options.limits;
  try {
    await extractTar(await fileStream(archive.path), dest, {
      source: `upload "${archive.name}"`,
      maxTotalBytes: 4 * limits.maxUploadBytes,
      maxEntryBytes: limits.maxUploadBytes,
      maxEntries: limits.maxDatasetImages + 10_000,
      maxInflatedBytes: 4 * limits.maxUploadBytes,
      maxRatio: MAX_UPLOAD_RATIO,
    });
  } catch (e) {
    await Deno.remove(dest, { recursive: true }).catch(() => {});
    if (e instanceof TarError) {
      throw new ServiceError(
        e.code === "too_large" ? "too_large" : "invalid",
        e.code === "unsafe_path" ? "unsafe_archive" : "invalid_archive",
        e.message,
      );
    }
    console.error(`serve: extracting upload "${archive.name}": ${(e as Error).stack ?? e}`);
    throw new ServiceError(
      "invalid",
      "invalid_archive",
      `upload "${archive.name}" is not a readable tar or tar.gz archive`,
    );
  }
}

/** Validates the dataset and the request against it; returns what the session will run. */
export async function prepareSession(
  service: Service,
  base: ServedModel,
  f: FineTuneFields,
): Promise<{ request: SessionRequest; dataset: SessionDataset }> {
  const limits = service.options.limits;
  const modelId = f.model_id ?? `${base.id.slice(0, 40)}-ft-${crypto.randomUUID().slice(0, 8)}`;
  const reserved = service.sessions.list().some((s) =>
    s.request.model_id === modelId && (s.state === "queued" || s.state === "running")
  );
  // Taken also when served, registered or fine-tuned by another process sharing the state dir.
  if (reserved || await service.registry.exists(modelId)) {
    throw new ServiceError(
      "conflict",
      "model_exists",
      `a model called "${modelId}" already exists; choose another model_id`,
    );
  }
  let dir: string, cleanup: (() => Promise<void>) | undefined, datasetName: string;
  if (f.archive) {
    // Named by the process so a restarted server can remove what a crashed one extracted.
    const dest = `${service.options.stateDir}/uploads/${PROCESS_TAG}-${crypto.randomUUID()}`;
    await extractUpload(f.archive, dest, service);
    cleanup = () => Deno.remove(dest, { recursive: true });
    dir = dest;
    datasetName = `upload:${f.archive.name}`;
  } else {
    dir = await resolveDataset(service.options.dataRoot, f.dataset);
    datasetName = f.dataset!;
  }
  try {
    const root = await splitFolder(dir, "train");
    let ds;
    try {
      ds = await openImageFolder(root, { maxPixels: limits.maxPixels });
    } catch (e) {
      throw new ServiceError(
        "invalid",
        "invalid_dataset",
        `dataset ${JSON.stringify(datasetName)}: ${(e as Error).message.replaceAll(dir, "<dataset>")}`,
      );
    }
    if (ds.classes.length < 2) {
      throw new ServiceError(
        "invalid",
        "invalid_dataset",
        `dataset ${
          JSON.stringify(datasetName)
        } has ${ds.classes.length} class folder; fine-tuning needs at least 2`,
      );
    }
    if (ds.length > limits.maxDatasetImages) {
      throw new ServiceError(
        "too_large",
        "dataset_too_large",
        `dataset ${
          JSON.stringify(datasetName)
        } holds ${ds.length} images; the limit is ${limits.maxDatasetImages}`,
      );
    }
    const bs = Math.min(f.batch_size, ds.length);
    if (bs !== f.batch_size && f.recipe) {
      // The recipe was checked against the requested batch; a smaller dataset made it smaller (mixup needs
      // an even batch), and a session must not be accepted only to fail in its worker.
      try {
        sessionConfig(f.recipe, { batch_size: bs, num_classes: ds.classes.length, hflip: 0 }, "request");
      } catch (e) {
        throw new ServiceError(
          "invalid",
          "invalid_field",
          `${(e as Error).message} (the dataset's ${ds.length} images make the batch ${bs})`,
        );
      }
    }
    const steps = f.steps ?? f.epochs! * Math.max(1, Math.floor(ds.length / bs));
    if (steps > limits.maxSteps) {
      throw new ServiceError(
        "invalid",
        "invalid_field",
        `${f.epochs} epochs are ${steps} steps; at most ${limits.maxSteps} per session`,
      );
    }
    const depth = base.model.config.depth;
    if (typeof f.freeze === "object" && f.freeze.blocks > depth) {
      throw new ServiceError(
        "invalid",
        "invalid_field",
        `"freeze": blocks:${f.freeze.blocks} but model "${base.id}" has ${depth} blocks`,
      );
    }
    const request: SessionRequest = {
      base_model: base.id,
      dataset: datasetName,
      steps,
      ...(f.epochs !== undefined ? { epochs: f.epochs } : {}),
      lr: f.lr,
      freeze: f.freeze,
      batch_size: bs,
      seed: f.seed,
      model_id: modelId,
      ...(f.recipe ? { recipe: f.recipe } : {}),
    };
    return {
      request,
      dataset: { root, images: ds.length, labels: [...ds.classes], maxPixels: limits.maxPixels, cleanup },
    };
  } catch (e) {
    await cleanup?.().catch(() => {});
    throw e;
  }
}
