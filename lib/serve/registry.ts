/**
 * The models the service serves, by id: base models given on the command line and models registered by
 * finished fine-tuning sessions (kept under `<state-dir>/models/<id>/` and loaded again at startup). Each has
 * its own {@linkcode Batcher} on the shared device queue.
 *
 * @module
 */
import { describeBackend } from "../backend/backend.ts";
import type { ViTModel } from "../vit/model.ts";
import { loadModel } from "../weights/load.ts";
import type { ModelManifest } from "../weights/manifest.ts";
import type { Admission } from "./admission.ts";
import { Batcher, type BatchOptions } from "./batcher.ts";
import type { DeviceQueue } from "./device_queue.ts";
import { ApiError, notFound } from "./errors.ts";
import { removeOrphans } from "./liveness.ts";
import type { ServeMetrics } from "./metrics.ts";

/** How a model came to be served. */
export type ModelKind = "base" | "finetuned";

/** One served model. */
export interface ServedModel {
  id: string;
  kind: ModelKind;
  model: ViTModel;
  manifest: ModelManifest;
  /** Folder or URL it was loaded from. */
  location: string;
  batcher: Batcher;
  loadedAt: string;
}

const ID_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** Throws 400 unless `id` is a valid model id (letters, digits, `.`, `_`, `-`; at most 64). */
export function checkModelId(id: string, field = "model id"): string {
  if (!ID_RE.test(id)) {
    throw new ApiError(
      400,
      "invalid_model_id",
      `${field} ${JSON.stringify(id).slice(0, 80)} is invalid: use 1-64 letters, digits, ".", "_" or "-", ` +
        `starting with a letter or digit`,
    );
  }
  return id;
}

/** The id a model gets when none is given: `extra.name` of its manifest, else its folder's name. */
export function defaultModelId(location: string, manifest: ModelManifest): string {
  const name = manifest.extra?.name;
  if (typeof name === "string" && ID_RE.test(name)) return name;
  const base = location.replace(/\/+$/, "").split("/").pop() ?? "model";
  const cleaned = base.replace(/[^A-Za-z0-9._-]/g, "-").replace(/^[^A-Za-z0-9]+/, "").slice(0, 64);
  return cleaned || "model";
}

/** Served models by id; `default` names the first base model unless a model is called that. */
export class ModelRegistry {
  readonly #models = new Map<string, ServedModel>();
  readonly #loading = new Map<string, Promise<ServedModel>>();
  #defaultId: string | undefined;

  constructor(
    readonly queue: DeviceQueue,
    readonly admission: Admission,
    readonly batch: BatchOptions,
    /** Where fine-tuned models live (`<state-dir>/models`); undefined when nothing persists. */
    readonly modelsDir: string | undefined,
    readonly metrics?: ServeMetrics,
  ) {}

  /** Every served model, base models first. */
  list(): ServedModel[] {
    return [...this.#models.values()].sort((a, b) =>
      a.kind === b.kind ? a.loadedAt.localeCompare(b.loadedAt) : a.kind === "base" ? -1 : 1
    );
  }

  /** The id `default` stands for. */
  get defaultId(): string | undefined {
    return this.#defaultId;
  }

  /** True when a model with this id is served. */
  has(id: string): boolean {
    return this.#models.has(id);
  }

  /**
   * The model called `id` (or `default`). A fine-tuned model another server process registered in the same
   * state dir is loaded on first use, so workers of `deno serve --parallel` serve each other's models.
   */
  async get(id: string): Promise<ServedModel> {
    const key = id === "default" && !this.#models.has("default") && this.#defaultId ? this.#defaultId : id;
    const found = this.#models.get(key);
    if (found) return found;
    if (this.modelsDir && ID_RE.test(key)) {
      try {
        await Deno.stat(`${this.modelsDir}/${key}/model.json`);
        return await this.load(key, `${this.modelsDir}/${key}`, "finetuned");
      } catch (e) {
        if (!(e instanceof Deno.errors.NotFound)) throw e;
      }
    }
    throw notFound("model", id, "model_not_found");
  }

  /** Loads a model folder or URL and serves it as `id`. Concurrent loads of one id share one load. */
  load(id: string, location: string, kind: ModelKind): Promise<ServedModel> {
    checkModelId(id);
    const pending = this.#loading.get(id);
    if (pending) return pending;
    if (this.#models.has(id)) {
      return Promise.reject(new ApiError(409, "model_exists", `a model called "${id}" is already served`));
    }
    const p = (async () => {
      const loaded = await loadModel(location, { trainable: false });
      // One forward pass before the model is served: WebGPU compiles its shaders on first use, and that
      // second or two belongs in startup (before /readyz says ready), not in the first client's latency.
      const { in_chans, img_size } = loaded.model.config;
      await this.queue.run(
        "infer",
        () =>
          loaded.model.logits(new Float32Array(in_chans * img_size * img_size), [
            1,
            in_chans,
            img_size,
            img_size,
          ]),
      ).catch((e) => {
        loaded.model.dispose();
        throw e;
      });
      const served: ServedModel = {
        id,
        kind,
        model: loaded.model,
        manifest: loaded.manifest,
        location,
        batcher: new Batcher(id, loaded.model, this.queue, this.admission, this.batch, this.metrics),
        loadedAt: new Date().toISOString(),
      };
      this.#models.set(id, served);
      if (kind === "base" && this.#defaultId === undefined) this.#defaultId = id;
      return served;
    })();
    this.#loading.set(id, p);
    return p.finally(() => this.#loading.delete(id));
  }

  /** Loads every model persisted under the models dir; returns the ids loaded and the failures. */
  async loadPersisted(): Promise<{ loaded: string[]; failed: Array<{ id: string; error: string }> }> {
    const loaded: string[] = [], failed: Array<{ id: string; error: string }> = [];
    if (!this.modelsDir) return { loaded, failed };
    let entries: Deno.DirEntry[];
    try {
      entries = [...Deno.readDirSync(this.modelsDir)];
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return { loaded, failed };
      throw e;
    }
    // Temporary siblings of an atomic write interrupted by a crash (`<id>.tmp-<pid>-<random>`) are removed.
    const orphans = await removeOrphans(this.modelsDir, /\.tmp-(\d+)-[0-9a-f]+$/);
    for (const e of entries.sort((a, b) => a.name.localeCompare(b.name))) {
      if (!e.isDirectory || !ID_RE.test(e.name) || e.name.includes(".tmp-") || orphans.includes(e.name)) {
        continue;
      }
      if (this.#models.has(e.name)) continue;
      try {
        await this.load(e.name, `${this.modelsDir}/${e.name}`, "finetuned");
        loaded.push(e.name);
      } catch (err) {
        failed.push({ id: e.name, error: (err as Error).message });
      }
    }
    return { loaded, failed };
  }

  /** A JSON description of a model for `/v1/models`. */
  describe(m: ServedModel, detail = false): Record<string, unknown> {
    const out: Record<string, unknown> = {
      id: m.id,
      kind: m.kind,
      num_classes: m.model.config.num_classes,
      img_size: m.model.config.img_size,
      dtype: m.manifest.dtype,
      backend: describeBackend(m.model.backend),
      source: m.manifest.source,
      created: m.manifest.created,
      loaded_at: m.loadedAt,
    };
    if (detail) {
      out.config = m.manifest.vit;
      out.preprocessing = m.manifest.preprocessing;
      out.labels = m.manifest.labels;
      out.location = m.location;
      if (m.manifest.extra) out.extra = m.manifest.extra;
    }
    return out;
  }

  /** Stops every batcher and frees every model. */
  dispose(): void {
    for (const m of this.#models.values()) {
      m.batcher.close();
      m.model.dispose();
    }
    this.#models.clear();
  }
}
