/**
 * The models the service serves, by id: base models given on the command line, models registered at runtime
 * from a URL (`POST /v1/models`, persisted in `<state-dir>/registered/` with a copy of the model's files, see
 * {@linkcode RegistrationStore}) and models registered by finished fine-tuning sessions (kept under
 * `<state-dir>/models/<id>/`). Persisted models are loaded again at startup (a registered one from its copy),
 * and a model another process added to the same state dir is loaded on first use. A registered model without
 * a usable copy whose URL fails to load is kept as *unavailable* (listed with its error,
 * answered with 503 and tried again on use at most every {@linkcode RETRY_UNAVAILABLE_MS}) instead of
 * stopping the server. Each served model has its own {@linkcode Batcher} on the shared device queue.
 *
 * @module
 */
import { describeBackend } from "../backend/backend.ts";
import type { ViTModel } from "../vit/model.ts";
import { type LoadedModel, loadModel, type ModelFiles, readModelFiles } from "../weights/load.ts";
import type { ModelManifest } from "../weights/manifest.ts";
import type { Admission } from "./admission.ts";
import { Batcher, type BatchOptions } from "./batcher.ts";
import type { DeviceQueue } from "./device_queue.ts";
import { redactPaths } from "./errors.ts";
import { notFound, ServiceError } from "./errors.ts";
import { removeOrphans, TEMP_SIBLING } from "./state/liveness.ts";
import type { ServeMetrics } from "./metrics.ts";
import type {
  Registration,
  RegistrationStore,
  StagedCopy,
  StoredRegistration,
} from "./state/registrations.ts";
import { pathExists } from "../util/fs.ts";
import { MODEL_ID_RE } from "./model_id.ts";

/** How a model came to be served: `--model` at startup, `POST /v1/models`, or a fine-tuning session. */
export type ModelKind = "base" | "registered" | "finetuned";

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
  /** When a `registered` model was registered. */
  registeredAt?: string;
  /** The version of a `registered` model's record it was loaded from (see `registrations.ts`). */
  version?: string;
}

/** A registered model that could not be loaded. */
export interface UnavailableModel {
  id: string;
  location: string;
  registeredAt?: string;
  /** Why it is unavailable. */
  error: string;
  /** When the last load failed (ms since the epoch). */
  failedAt: number;
  /** The record version the failure belongs to (a new registration is tried at once). */
  version: string;
}

/** A persisted registration that was not loaded at startup. */
export interface RegistrationFailure {
  id: string;
  /** Its URL ("" when the record is unreadable). */
  location: string;
  error: string;
  /** Whether it is kept as unavailable (false: its id is taken by a base or fine-tuned model). */
  unavailable: boolean;
}

/** How long an unavailable registered model is answered with 503 before a request tries to load it again. */
export const RETRY_UNAVAILABLE_MS = 30_000;

/** Longest wait for one file (model.json or a shard) of a model loaded from a URL. */
export const FETCH_TIMEOUT_MS = 120_000;

/** Longest wait for a removed model's accepted images before its batcher is closed anyway. */
export const DRAIN_TIMEOUT_MS = 30_000;

const KIND_ORDER: Record<ModelKind, number> = { base: 0, registered: 1, finetuned: 2 };

/** `fetch` with a deadline per file, so that a URL that accepts the connection and then hangs fails. */
const timedFetch: typeof fetch = (input, init) =>
  fetch(input, { ...init, signal: init?.signal ?? AbortSignal.timeout(FETCH_TIMEOUT_MS) });

/**
 * Fetches a model's files from `url`, hands them to `stage` (for the state dir's copy, written before the
 * model is built so that the files need not outlive the load) and loads them.
 */
async function loadFetched(url: string, stage: (files: ModelFiles) => Promise<void>): Promise<LoadedModel> {
  const { files } = await readModelFiles(url, { fetch: timedFetch });
  await stage(files);
  return await loadModel(url, { trainable: false, files });
}

/**
 * Ids that routes give a meaning of their own (`/v1/models/default/...` is the default model), so no model
 * may be called that: a model taking `default` would shadow the real default for classification while
 * `/v1/models` still reported the old one.
 */
export const RESERVED_MODEL_IDS: ReadonlySet<string> = new Set(["default"]);

/**
 * Throws 400 unless `id` is a valid model id (letters, digits, `.`, `_`, `-`; at most 64) and not reserved
 * (see `RESERVED_MODEL_IDS`).
 */
export function checkModelId(id: string, field = "model id"): string {
  if (RESERVED_MODEL_IDS.has(id.toLowerCase())) {
    throw new ServiceError(
      "invalid",
      "reserved_model_id",
      `${field} "${id}" is reserved (/v1/models/${id} names the default model); choose another id`,
    );
  }
  if (!MODEL_ID_RE.test(id)) {
    throw new ServiceError(
      "invalid",
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
  const usable = (id: string) => MODEL_ID_RE.test(id) && !RESERVED_MODEL_IDS.has(id.toLowerCase());
  if (typeof name === "string" && usable(name)) return name;
  const base = location.replace(/\/+$/, "").split("/").pop() ?? "model";
  const cleaned = base.replace(/[^A-Za-z0-9._-]/g, "-").replace(/^[^A-Za-z0-9]+/, "").slice(0, 64);
  return cleaned && usable(cleaned) ? cleaned : cleaned ? `${cleaned.slice(0, 58)}-model` : "model";
}

function modelExists(id: string): ServiceError {
  return new ServiceError(
    "conflict",
    "model_exists",
    `a model called "${id}" already exists (served, unavailable or kept in the state dir); ` +
      `choose another id`,
  );
}

/** Served models by id; `default` names the first base model (no model may be called that). */
export class ModelRegistry {
  readonly #models = new Map<string, ServedModel>();
  readonly #loading = new Map<string, Promise<ServedModel>>();
  readonly #unavailable = new Map<string, UnavailableModel>();
  /** Removed models whose accepted images are still being classified. */
  readonly #retiring = new Set<ServedModel>();
  #defaultId: string | undefined;
  /** How long an unavailable registered model is answered with 503 before a request tries it again. */
  retryUnavailableMs: number = RETRY_UNAVAILABLE_MS;
  /** How long a removed model's accepted images may wait for the device before they are failed (503). */
  drainTimeoutMs: number = DRAIN_TIMEOUT_MS;
  /**
   * Whether a queued or running fine-tuning session (of any process sharing the state dir) will register
   * `id`: `register` must not take that id, or the session's result could not be served when it ends.
   */
  reservedBySession?: (id: string) => Promise<boolean>;

  constructor(
    readonly queue: DeviceQueue,
    readonly admission: Admission,
    readonly batch: BatchOptions,
    /** Where fine-tuned models live (`<state-dir>/models`); undefined when nothing persists. */
    readonly modelsDir: string | undefined,
    readonly metrics?: ServeMetrics,
    /** Where runtime registrations persist (`<state-dir>/registered`); undefined when nothing persists. */
    readonly registrations?: RegistrationStore,
  ) {}

  /** Every served model: base models first, then registered, then fine-tuned ones, each by load time. */
  list(): ServedModel[] {
    return [...this.#models.values()].sort((a, b) =>
      KIND_ORDER[a.kind] - KIND_ORDER[b.kind] || a.loadedAt.localeCompare(b.loadedAt)
    );
  }

  /** Registered models that could not be loaded, by id. */
  unavailable(): UnavailableModel[] {
    return [...this.#unavailable.values()].sort((a, b) => a.id.localeCompare(b.id));
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
   * Whether `id` is taken: served, loading or unavailable here, or in the state dir as a fine-tuned model's
   * folder or a registration (possibly by another process).
   */
  async exists(id: string): Promise<boolean> {
    if (this.#models.has(id) || this.#loading.has(id) || this.#unavailable.has(id)) return true;
    if (!MODEL_ID_RE.test(id)) return false;
    if (this.modelsDir && await pathExists(`${this.modelsDir}/${id}`)) return true;
    return (await this.registrations?.version(id)) !== undefined;
  }

  #resolve(id: string): string {
    return id === "default" && this.#defaultId ? this.#defaultId : id;
  }

  /**
   * The model called `id` (or `default`). A fine-tuned or registered model that another server process
   * added to the same state dir is loaded on first use, so workers of `deno serve --parallel` serve each
   * other's models; a registered model that another process removed (or registered anew) is dropped (or
   * reloaded). Throws 404 for an unknown id and 503 `model_unavailable` for a registration that fails to
   * load.
   */
  async get(id: string): Promise<ServedModel> {
    const key = this.#resolve(id);
    const found = this.#models.get(key);
    if (found) {
      // Without a version the registration is still being written by this process.
      if (found.kind !== "registered" || !this.registrations || found.version === undefined) return found;
      const version = await this.registrations.version(key);
      if (version === found.version) return found;
      this.#detach(found);
      if (version === undefined) throw notFound("model", id, "model_not_found");
    }
    if (this.modelsDir && MODEL_ID_RE.test(key)) {
      try {
        await Deno.stat(`${this.modelsDir}/${key}/model.json`);
        return await this.load(key, `${this.modelsDir}/${key}`, "finetuned");
      } catch (e) {
        if (!(e instanceof Deno.errors.NotFound)) throw e;
      }
    }
    if (this.registrations && MODEL_ID_RE.test(key)) {
      let stored: StoredRegistration | undefined;
      try {
        stored = await this.registrations.read(key);
      } catch (e) {
        throw this.#unavailableError(await this.#brokenRecord(key, (e as Error).message));
      }
      if (stored) return await this.#loadRegistered(stored);
      this.#unavailable.delete(key);
    }
    throw notFound("model", id, "model_not_found");
  }

  async #brokenRecord(id: string, error: string): Promise<UnavailableModel> {
    const u: UnavailableModel = {
      id,
      location: "",
      error,
      failedAt: Date.now(),
      version: (await this.registrations?.version(id)) ?? "",
    };
    this.#unavailable.set(id, u);
    return u;
  }

  #retryIn(u: UnavailableModel): number {
    return Math.max(0, Math.ceil((u.failedAt + this.retryUnavailableMs - Date.now()) / 1000));
  }

  #unavailableError(u: UnavailableModel): ServiceError {
    const wait = Math.max(1, this.#retryIn(u));
    return new ServiceError(
      "unavailable",
      "model_unavailable",
      `model "${u.id}" is registered${u.location ? ` from ${u.location}` : ""} but could not be loaded: ` +
        `${u.error}; a request after ${wait} s tries again ` +
        `(DELETE /v1/models/${u.id} removes the registration)`,
      { retryAfterS: wait },
    );
  }

  /** Loads a persisted registration, or throws 503 (and records it as unavailable) when that fails. */
  async #loadRegistered({ registration: r, version }: StoredRegistration): Promise<ServedModel> {
    const failed = this.#unavailable.get(r.id);
    if (failed && failed.version === version && Date.now() - failed.failedAt < this.retryUnavailableMs) {
      throw this.#unavailableError(failed);
    }
    const served = this.#models.get(r.id);
    if (served) return served;
    const copy: { staged?: StagedCopy } = {};
    try {
      const m = await this.load(
        r.id,
        r.location,
        "registered",
        { registeredAt: r.registered_at, version },
        () =>
          this.#readRegistered(r, async (files) => {
            copy.staged = await this.#stageCopy(r, files);
          }),
      );
      this.#unavailable.delete(r.id);
      await this.#keepCopy(r, copy.staged);
      return m;
    } catch (e) {
      await copy.staged?.discard();
      const u: UnavailableModel = {
        id: r.id,
        location: r.location,
        registeredAt: r.registered_at,
        error: (e as Error).message,
        failedAt: Date.now(),
        version,
      };
      this.#unavailable.set(r.id, u);
      throw this.#unavailableError(u);
    }
  }

  /**
   * Loads registration `r` from its copy in the state dir, else from its URL (handing the files to `stage`).
   */
  async #readRegistered(r: Registration, stage: (files: ModelFiles) => Promise<void>): Promise<LoadedModel> {
    const store = this.registrations!;
    const copy = await store.copyOf(r);
    if (copy) {
      try {
        const loaded = await loadModel(copy, { trainable: false });
        // Replaced meanwhile by the copy of a newer registration of the id: what was read may be that one's.
        if (await store.copyOf(r)) return loaded;
        loaded.model.dispose();
      } catch (e) {
        console.error(
          `serve: the copy of registered model "${r.id}" in the state dir did not load ` +
            `(${(e as Error).message}); fetching ${r.location} again`,
        );
      }
    }
    return await loadFetched(r.location, stage);
  }

  /**
   * Loads a model folder or URL and serves it as `id` (files of a URL time out after
   * {@linkcode FETCH_TIMEOUT_MS} each), or what `read` loads for it (a registered model's copy, say).
   * Concurrent loads of one id share one load.
   */
  load(
    id: string,
    location: string,
    kind: ModelKind,
    extra: { registeredAt?: string; version?: string } = {},
    read: () => Promise<LoadedModel> = () => loadModel(location, { trainable: false, fetch: timedFetch }),
  ): Promise<ServedModel> {
    checkModelId(id);
    const pending = this.#loading.get(id);
    if (pending) return pending;
    if (this.#models.has(id)) return Promise.reject(modelExists(id));
    const p = (async () => {
      const loaded = await read();
      // One forward pass before the model is served: WebGPU compiles its shaders on first use, and that
      // second or two belongs in startup (before /readyz says ready), not in the first client's latency; so
      // does the onnx engine cache's switch to full speed (ViTModel.fullSpeed).
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
      ).then(() => loaded.model.fullSpeed()).catch((e) => {
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
        ...extra,
      };
      this.#models.set(id, served);
      if (kind === "base" && this.#defaultId === undefined) this.#defaultId = id;
      return served;
    })();
    this.#loading.set(id, p);
    return p.finally(() => this.#loading.delete(id));
  }

  /**
   * Registers the model at `location` (an http(s) URL) as `id`: loads it (422 `model_load_failed` when that
   * fails), then persists the registration, so that a restart and the other processes sharing the state dir
   * serve it too (409 `model_exists` when the id is taken, here or by another process).
   */
  async register(id: string, location: string): Promise<ServedModel> {
    checkModelId(id, "id");
    if (!this.registrations) throw new Error("no state dir is configured to keep registrations");
    if (await this.exists(id) || await this.reservedBySession?.(id)) throw modelExists(id);
    // Checked again with no await before load(): a concurrent registration of this id must not share it.
    if (this.#models.has(id) || this.#loading.has(id)) throw modelExists(id);
    const registeredAt = new Date().toISOString();
    const record: Registration = { id, location, registered_at: registeredAt };
    const copy: { staged?: StagedCopy } = {};
    try {
      let m: ServedModel;
      try {
        m = await this.load(
          id,
          location,
          "registered",
          { registeredAt },
          () =>
            loadFetched(location, async (files) => {
              copy.staged = await this.#stageCopy(record, files);
            }),
        );
      } catch (e) {
        if (e instanceof ServiceError) throw e;
        throw new ServiceError(
          "unprocessable",
          "model_load_failed",
          `loading ${location} failed: ${(e as Error).message}`,
        );
      }
      try {
        m.version = await this.registrations.create(record);
      } catch (e) {
        await this.#retire(m);
        if (e instanceof Deno.errors.AlreadyExists) throw modelExists(id);
        throw e;
      }
      if (this.#models.get(id) !== m) {
        // Removed (DELETE) while its record was being written.
        await this.registrations.remove(id);
        throw new ServiceError(
          "conflict",
          "model_removed",
          `model "${id}" was removed while it was being registered`,
        );
      }
      // A session that reserved the id while the model loaded: checked after the record exists (the session
      // checks the records after taking its lease), so of the two at most one keeps the id.
      if (await this.reservedBySession?.(id)) {
        await this.registrations.remove(id);
        await this.#retire(m);
        throw modelExists(id);
      }
      await this.#keepCopy(record, copy.staged);
      return m;
    } finally {
      // A registration that did not stand drops its copy (a no-op once kept).
      await copy.staged?.discard();
    }
  }

  /**
   * Writes the copy of a registered model's files, not yet in place; a failure (a full disk, say) is logged
   * and only costs a fetch at the next start.
   */
  async #stageCopy(r: Registration, files: ModelFiles): Promise<StagedCopy | undefined> {
    try {
      return await this.registrations!.stageCopy(r, files);
    } catch (e) {
      this.#copyNotKept(r, e as Error);
    }
  }

  /** Puts a staged copy in place, once its registration's record exists. */
  async #keepCopy(r: Registration, staged: StagedCopy | undefined): Promise<void> {
    try {
      await staged?.keep();
    } catch (e) {
      this.#copyNotKept(r, e as Error);
    }
  }

  #copyNotKept(r: Registration, e: Error): void {
    console.error(
      `serve: registered model "${r.id}" is served, but its copy was not kept in the state dir ` +
        `(${e.message}); a restart fetches ${r.location} again`,
    );
  }

  /**
   * Removes a registered model: its record first (so neither a restart nor another process serves it again),
   * then the model here, once the images already accepted for it are classified. Models given with `--model`
   * and fine-tuned models are not removed (409 `model_not_removable`).
   */
  async unregister(id: string): Promise<Registration> {
    const key = this.#resolve(id);
    const m = this.#models.get(key);
    const finetuned = m?.kind === "finetuned" ||
      (!m && this.modelsDir !== undefined && MODEL_ID_RE.test(key) &&
        await pathExists(`${this.modelsDir}/${key}`));
    if (m?.kind === "base" || finetuned) {
      throw new ServiceError(
        "conflict",
        "model_not_removable",
        m?.kind === "base"
          ? `model "${key}" is served from a --model of the server's command line; only models registered ` +
            `with POST /v1/models can be removed (restart the server without it)`
          : `model "${key}" was made by a fine-tuning session and is kept in the state dir (models/${key}/); ` +
            `only models registered with POST /v1/models can be removed (delete that folder and restart ` +
            `the server)`,
      );
    }
    let stored: StoredRegistration | undefined, removed = false;
    if (this.registrations && MODEL_ID_RE.test(key)) {
      stored = await this.registrations.read(key).catch(() => undefined);
      removed = await this.registrations.remove(key);
    }
    const u = this.#unavailable.get(key);
    this.#unavailable.delete(key);
    if (!m && !removed && !u) throw notFound("model", id, "model_not_found");
    if (m) await this.#retire(m);
    const r = stored?.registration;
    return {
      id: key,
      location: m?.location ?? r?.location ?? u?.location ?? "",
      registered_at: m?.registeredAt ?? r?.registered_at ?? u?.registeredAt ?? "",
    };
  }

  /** Drops registered models whose record another process removed, so a listing does not show them. */
  async sync(): Promise<void> {
    if (!this.registrations) return;
    for (const m of [...this.#models.values()]) {
      if (m.kind !== "registered" || m.version === undefined) continue;
      if ((await this.registrations.version(m.id)) === undefined) this.#detach(m);
    }
    for (const u of [...this.#unavailable.values()]) {
      if ((await this.registrations.version(u.id)) === undefined) this.#unavailable.delete(u.id);
    }
  }

  /** Stops serving `m` now; it is freed in the background once its accepted images are classified. */
  #detach(m: ServedModel): void {
    this.#retire(m).catch((e) => console.error(`serve: freeing model "${m.id}": ${(e as Error).message}`));
  }

  async #retire(m: ServedModel): Promise<void> {
    if (this.#models.get(m.id) === m) this.#models.delete(m.id);
    if (this.#retiring.has(m)) return;
    this.#retiring.add(m);
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      await Promise.race([
        m.batcher.drain(),
        new Promise<void>((resolve) => timer = setTimeout(resolve, this.drainTimeoutMs)),
      ]);
    } finally {
      clearTimeout(timer);
      m.batcher.close();
    }
    // A batch already on the device still uses the weights: free them only once it is done.
    await m.batcher.drain();
    m.model.dispose();
    this.#retiring.delete(m);
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
    const orphans = await removeOrphans(this.modelsDir, TEMP_SIBLING);
    for (const e of entries.sort((a, b) => a.name.localeCompare(b.name))) {
      if (
        !e.isDirectory || !MODEL_ID_RE.test(e.name) || e.name.includes(".tmp-") || orphans.includes(e.name)
      ) {
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

  /**
   * Loads every persisted registration. One that fails to load (or whose record is unreadable) does not stop
   * the others: it is kept as unavailable (see {@linkcode unavailable}) and returned among the failures,
   * as is (with `unavailable: false`) one whose id a base or fine-tuned model already has.
   */
  async loadRegistered(): Promise<{ loaded: string[]; failed: RegistrationFailure[] }> {
    const loaded: string[] = [], failed: RegistrationFailure[] = [];
    if (!this.registrations) return { loaded, failed };
    for (const entry of await this.registrations.list()) {
      if ("error" in entry) {
        await this.#brokenRecord(entry.id, entry.error);
        failed.push({ id: entry.id, location: "", error: entry.error, unavailable: true });
        continue;
      }
      const r = entry.registration;
      const other = this.#models.get(r.id);
      if (other) {
        failed.push({
          id: r.id,
          location: r.location,
          error: `the id is taken by ${
            other.kind === "base" ? `the model given with --model ${other.location}` : `a ${other.kind} model`
          }; remove ${this.registrations.path(r.id)} to drop the registration`,
          unavailable: false,
        });
        continue;
      }
      try {
        await this.#loadRegistered(entry);
        loaded.push(r.id);
      } catch (e) {
        const error = this.#unavailable.get(r.id)?.error ?? (e as Error).message;
        failed.push({ id: r.id, location: r.location, error, unavailable: true });
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
      source: redactPaths(m.manifest.source),
      created: m.manifest.created,
      loaded_at: m.loadedAt,
    };
    if (m.registeredAt) out.registered_at = m.registeredAt;
    if (detail) {
      out.config = m.manifest.vit;
      out.preprocessing = m.manifest.preprocessing;
      out.labels = m.manifest.labels;
      // A URL is the client's to know; a folder on the server is not.
      if (/^https?:\/\//i.test(m.location)) out.location = m.location;
      if (m.manifest.extra) out.extra = m.manifest.extra;
    }
    return out;
  }

  /** A JSON description of an unavailable registered model for `/v1/models` and `/readyz`. */
  describeUnavailable(u: UnavailableModel): Record<string, unknown> {
    return {
      id: u.id,
      kind: "registered",
      state: "unavailable",
      location: u.location || null,
      registered_at: u.registeredAt ?? null,
      error: { code: "model_load_failed", message: redactPaths(u.error) },
      failed_at: new Date(u.failedAt).toISOString(),
      retry_after_s: this.#retryIn(u),
    };
  }

  /** Stops every batcher and frees every model. */
  dispose(): void {
    for (const m of this.#models.values()) {
      m.batcher.close();
      m.model.dispose();
    }
    // Closing fails their waiting images; each is freed once its batch on the device (if any) is done.
    for (const m of this.#retiring) m.batcher.close();
    this.#models.clear();
    this.#unavailable.clear();
  }
}
