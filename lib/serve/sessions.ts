/**
 * Fine-tuning sessions: each runs a {@linkcode FineTuner} (by default in a worker process of its own, see
 * finetune_host.ts) on a private copy of a base model's weights, which on success saves them atomically under
 * `<state-dir>/models/<id>/`; the session then registers them as a new served model. When training shares a
 * device with inference (a GPU), each step takes its turn on the device queue. Every session's record is
 * persisted (atomically) in `<state-dir>/sessions/<id>.json` on each state change and at most once a second
 * while running, so a server killed mid-session reports it as failed after a restart instead of losing it.
 * The limit on sessions queued or running holds across every process sharing the state dir (see
 * `session_leases.ts`).
 *
 * @module
 */
import { writeFileAtomic } from "../util/fs.ts";
import type { Freeze } from "../train/config.ts";
import type { DeviceQueue } from "./device_queue.ts";
import { notFound, ServiceError } from "./errors.ts";
import type { FineTuneProgress, FineTuner } from "./finetune.ts";
import { processAlive, removeOrphans, SELF, TEMP_SIBLING } from "./state/liveness.ts";
import type { ServeMetrics } from "./metrics.ts";
import type { ModelRegistry } from "./registry.ts";
import { SessionLeases } from "./state/session_leases.ts";

/** Where a session stands. */
export type SessionState = "queued" | "running" | "succeeded" | "failed" | "cancelled";

/** What a session was asked to do (as accepted by `POST /v1/finetune`, after validation). */
export interface SessionRequest {
  base_model: string;
  /** A dataset name under the data root, or `upload:<file name>` for an uploaded archive. */
  dataset: string;
  /** Optimizer steps (derived from `epochs` when that was given). */
  steps: number;
  epochs?: number;
  lr: number;
  freeze: Freeze;
  batch_size: number;
  seed: number;
  /** Id of the model the session registers. */
  model_id: string;
  /** timm's augmentation and regularisation keys given (mixup, aa, drop_path …), as validated. */
  recipe?: Record<string, unknown>;
}

/** The persisted, client-visible record of a session. */
export interface SessionRecord {
  id: string;
  state: SessionState;
  request: SessionRequest;
  created: string;
  started?: string;
  finished?: string;
  progress: FineTuneProgress | { step: 0; steps: number };
  /** Loss after each step (at most the last 500), for curves. */
  losses: number[];
  dataset_info?: { images: number; classes: string[] };
  /** The registered model, once succeeded. */
  model_id?: string;
  error?: { code: string; message: string };
  /** The process running it, to tell a live session from one whose server died. */
  owner: { pid: number; start?: number };
}

/** A prepared dataset for a session: a checked folder of class folders, which the tuner reads itself. */
export interface SessionDataset {
  /** The folder of class folders. */
  root: string;
  /** Images in it. */
  images: number;
  /** Class names, in label order. */
  labels: string[];
  /** The largest image (in pixels) to decode. */
  maxPixels: number;
  /** Called once the session ends, e.g. to delete an extracted upload. */
  cleanup?: () => Promise<void>;
}

/** A session slot taken before a request's data is read (see `SessionManager.reserve`). */
export interface SessionSlot {
  readonly id: string;
  /** Gives the slot back (once; later calls do nothing). */
  release(): Promise<void>;
}

/** An event for `GET /v1/finetune/:id/events`. */
export interface SessionEvent {
  type: "state" | "progress";
  record: SessionRecord;
}

type Listener = (e: SessionEvent) => void;

/** Whether the process that owned a session still runs (see `liveness.ts`). */
function ownerAlive(owner: SessionRecord["owner"] | undefined): boolean {
  return owner !== undefined && processAlive(owner.pid, owner.start);
}

function isTerminal(s: SessionState): boolean {
  return s === "succeeded" || s === "failed" || s === "cancelled";
}

/** Options of {@linkcode SessionManager}. */
export interface SessionOptions {
  /** `<state-dir>/sessions`. */
  dir: string;
  /** Sessions queued or running at once, across every process sharing the state dir. */
  maxActive: number;
  /**
   * Whether training runs on the device that serves inference (a GPU), so that each step takes its turn on
   * the device queue; on a CPU engine the worker's steps run beside inference. False by default.
   */
  sharesDevice?: () => boolean;
}

/** Creates, runs, persists and reports fine-tuning sessions. */
export class SessionManager {
  readonly #records = new Map<string, SessionRecord>();
  readonly #aborts = new Map<string, AbortController>();
  readonly #listeners = new Map<string, Set<Listener>>();
  readonly #lastWrite = new Map<string, number>();
  readonly #writes = new Map<string, Promise<void>>();
  readonly #running = new Set<Promise<void>>();
  readonly #leases: SessionLeases;
  #shuttingDown = false;

  constructor(
    readonly options: SessionOptions,
    readonly registry: ModelRegistry,
    readonly queue: DeviceQueue,
    readonly tuner: FineTuner,
    readonly metrics?: ServeMetrics,
  ) {
    this.#leases = new SessionLeases(`${options.dir}/active`, async (id) => {
      // This process's own sessions: the record turns terminal (on disk, then in memory) before the lease's
      // release, and a client that saw it end may start the next session at once.
      const own = this.#records.get(id);
      if (own) return isTerminal(own.state);
      try {
        const rec = JSON.parse(await Deno.readTextFile(`${options.dir}/${id}.json`)) as SessionRecord;
        return isTerminal(rec.state);
      } catch {
        // No record yet (the lease is taken first) or an unreadable one: the lease's owner decides.
        return false;
      }
    });
  }

  /**
   * Reads the persisted sessions. Those left queued or running by a process that no longer exists are
   * marked failed (`interrupted`) and persisted so.
   */
  async init(): Promise<{ interrupted: string[] }> {
    await Deno.mkdir(this.options.dir, { recursive: true });
    // Records and leases half-written by a process that died (`<name>.tmp-<tag>-<random>`).
    await removeOrphans(this.options.dir, TEMP_SIBLING);
    await removeOrphans(`${this.options.dir}/active`, TEMP_SIBLING);
    const interrupted: string[] = [];
    for (const e of Deno.readDirSync(this.options.dir)) {
      if (!e.isFile || !e.name.endsWith(".json") || e.name.includes(".tmp-")) continue;
      let rec: SessionRecord;
      try {
        rec = JSON.parse(await Deno.readTextFile(`${this.options.dir}/${e.name}`));
      } catch (err) {
        console.error(`sessions: skipping ${e.name}: ${(err as Error).message}`);
        continue;
      }
      if (!isTerminal(rec.state) && !ownerAlive(rec.owner)) {
        rec.state = "failed";
        rec.finished = new Date().toISOString();
        rec.error = {
          code: "interrupted",
          message: `the server process running this session stopped at step ` +
            `${rec.progress?.step ?? 0} of ${rec.request?.steps}; start a new session to retry`,
        };
        await this.#persist(rec, true);
        interrupted.push(rec.id);
      }
      this.#records.set(rec.id, rec);
    }
    return { interrupted };
  }

  /** Every session, newest first. */
  list(): SessionRecord[] {
    return [...this.#records.values()].sort((a, b) => b.created.localeCompare(a.created));
  }

  /** Sessions by state, for metrics. */
  countByState(): Record<SessionState, number> {
    const out: Record<SessionState, number> = {
      queued: 0,
      running: 0,
      succeeded: 0,
      failed: 0,
      cancelled: 0,
    };
    for (const r of this.#records.values()) out[r.state]++;
    return out;
  }

  /**
   * A session's record. One started by another process sharing the state dir is read from disk, so any
   * worker of `deno serve --parallel` can report it.
   */
  async get(id: string): Promise<SessionRecord> {
    const rec = this.#records.get(id);
    if (rec) return rec;
    if (/^[a-f0-9-]{8,64}$/.test(id)) {
      try {
        return JSON.parse(await Deno.readTextFile(`${this.options.dir}/${id}.json`));
      } catch (e) {
        if (!(e instanceof Deno.errors.NotFound)) throw e;
      }
    }
    throw notFound("fine-tuning session", id, "session_not_found");
  }

  /** Whether this process runs (or ran) the session, i.e. can stream its events. */
  isLocal(id: string): boolean {
    return this.#records.has(id);
  }

  #tooMany(active: number): ServiceError {
    return new ServiceError(
      "busy",
      "too_many_sessions",
      `${active} fine-tuning sessions are already queued or running (limit ${this.options.maxActive}, ` +
        `counted over every server process sharing the state dir); wait for one to finish or cancel one`,
      { retryAfterS: 30 },
    );
  }

  /**
   * Takes a session slot (a lease, counted by every process sharing the state dir) before a request's data
   * is read, or throws 429: so the limit bounds the uploads read and extracted, not only the sessions
   * run. `start` turns the slot into the session; until then the caller must `release` it on every path.
   */
  async reserve(): Promise<SessionSlot> {
    const id = crypto.randomUUID();
    const { ok, active } = await this.#leases.acquire(id, this.options.maxActive);
    if (!ok) throw this.#tooMany(active);
    let released = false;
    return {
      id,
      release: async () => {
        if (released) return;
        released = true;
        await this.#leases.release(id);
      },
    };
  }

  /**
   * Starts a session in a slot taken with `reserve` (or a new one: 429 when the limit is reached); returns
   * its record in state `queued`. Throws 409 when another session reserves its model id. On success the
   * slot belongs to the session (released when it ends); on a throw it is still the caller's.
   */
  async start(
    request: SessionRequest,
    data: () => Promise<SessionDataset>,
    slot?: SessionSlot,
  ): Promise<SessionRecord> {
    const reservedElsewhere = () =>
      new ServiceError(
        "conflict",
        "model_exists",
        `a session already running will register a model called "${request.model_id}"; ` +
          `choose another model_id`,
      );
    let id: string;
    if (slot) {
      if (!await this.#leases.claimModel(slot.id, request.model_id)) throw reservedElsewhere();
      id = slot.id;
    } else {
      id = crypto.randomUUID();
      const { ok, active, reserved } = await this.#leases.acquire(
        id,
        this.options.maxActive,
        request.model_id,
      );
      if (reserved) throw reservedElsewhere();
      if (!ok) throw this.#tooMany(active);
    }
    // Our own slot is the caller's to release when this throws; a lease taken here is released here.
    const releaseOwn = () => slot ? Promise.resolve() : this.#leases.release(id);
    // A URL registration of this id that raced prepareSession's check (`register` checks the leases after
    // persisting its record, this checks the records after taking the lease, so at most one of them wins).
    const taken = await this.registry.exists(request.model_id).catch(async (e) => {
      await releaseOwn();
      throw e;
    });
    if (taken) {
      await releaseOwn();
      throw new ServiceError(
        "conflict",
        "model_exists",
        `a model called "${request.model_id}" was registered meanwhile; choose another model_id`,
      );
    }
    const rec: SessionRecord = {
      id,
      state: "queued",
      request,
      created: new Date().toISOString(),
      progress: { step: 0, steps: request.steps },
      losses: [],
      owner: { ...SELF },
    };
    try {
      await this.#persist(rec, true);
    } catch (e) {
      await releaseOwn().catch(() => {});
      throw e;
    }
    this.#records.set(id, rec);
    const abort = new AbortController();
    this.#aborts.set(id, abort);
    const run = this.#run(rec, data, abort.signal).finally(async () => {
      this.#aborts.delete(id);
      // Only now that the final record is persisted: a session whose record says it runs has its lease.
      await this.#leases.release(id).catch((e) =>
        console.error(`sessions: releasing the lease of ${id}: ${(e as Error).message}`)
      );
      this.#running.delete(run);
    });
    // #run ends every session in a terminal state itself; nothing is left for a rejection to report.
    run.catch((e) => console.error(`sessions: ${id} ended with an unhandled error: ${(e as Error).message}`));
    this.#running.add(run);
    return rec;
  }

  /** Whether a queued or running session, of any process sharing the state dir, will register `modelId`. */
  reserves(modelId: string): Promise<boolean> {
    return this.#leases.reserves(modelId);
  }

  /** `<dir>/<id>.cancel`: asks the process running session `id` to cancel it (see `cancel`). */
  #cancelPath(id: string): string {
    return `${this.options.dir}/${id}.cancel`;
  }

  /**
   * Cancels a queued or running session (its weights are discarded). One run by another live process
   * sharing the state dir (another worker of `deno serve --parallel`) is asked to through a marker file,
   * which that process checks before every optimizer step.
   */
  async cancel(id: string): Promise<SessionRecord> {
    const rec = await this.get(id);
    if (isTerminal(rec.state)) {
      throw new ServiceError("conflict", "session_finished", `session "${id}" already ended (${rec.state})`);
    }
    const abort = this.#aborts.get(id);
    if (abort) {
      abort.abort();
      return rec;
    }
    if (!ownerAlive(rec.owner)) {
      throw new ServiceError(
        "conflict",
        "session_orphaned",
        `the server process running session "${id}" is gone; the session is ` +
          `reported failed (interrupted) once a server restarts on this state dir`,
      );
    }
    await Deno.writeTextFile(this.#cancelPath(id), "", { createNew: true }).catch((e) => {
      if (!(e instanceof Deno.errors.AlreadyExists)) throw e;
    });
    return rec;
  }

  /** Aborts session `id` when another process asked to cancel it. */
  async #checkCancelMarker(id: string): Promise<void> {
    try {
      await Deno.stat(this.#cancelPath(id));
      this.#aborts.get(id)?.abort();
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
  }

  /** Subscribes to a session's events; returns the unsubscribe function. */
  subscribe(id: string, listener: Listener): () => void {
    let set = this.#listeners.get(id);
    if (!set) this.#listeners.set(id, set = new Set());
    set.add(listener);
    return () => set!.delete(listener);
  }

  /** Waits for every running session to end (tests, shutdown). */
  async settle(): Promise<void> {
    while (this.#running.size) await Promise.allSettled([...this.#running]);
  }

  /** Stops every running session (recorded as failed: `interrupted`) and waits for them. */
  async shutdown(): Promise<void> {
    this.#shuttingDown = true;
    for (const a of this.#aborts.values()) a.abort();
    await this.settle();
  }

  #emit(rec: SessionRecord, type: SessionEvent["type"]): void {
    for (const l of this.#listeners.get(rec.id) ?? []) {
      try {
        l({ type, record: rec });
      } catch {
        // A broken listener (closed stream) must not stop the session.
      }
    }
  }

  async #persist(rec: SessionRecord, force: boolean): Promise<void> {
    const now = Date.now();
    if (!force && now - (this.#lastWrite.get(rec.id) ?? 0) < 1000) return;
    this.#lastWrite.set(rec.id, now);
    // One write at a time per session, in call order: a progress write still in flight when the session ends
    // (a cancel terminates the worker at once) must never land after the final record.
    const path = `${this.options.dir}/${rec.id}.json`;
    const write = (this.#writes.get(rec.id) ?? Promise.resolve()).catch(() => {}).then(() =>
      writeFileAtomic(path, JSON.stringify(rec, null, 1) + "\n")
    );
    this.#writes.set(rec.id, write);
    try {
      await write;
    } finally {
      if (this.#writes.get(rec.id) === write) this.#writes.delete(rec.id);
    }
  }

  async #setState(rec: SessionRecord, state: SessionState): Promise<void> {
    const at = new Date().toISOString();
    const next: SessionRecord = {
      ...rec,
      state,
      ...(state === "running" ? { started: at } : {}),
      ...(isTerminal(state) ? { finished: at } : {}),
    };
    // On disk first: a client that sees the new state finds it in the persisted record too.
    try {
      await this.#persist(next, true);
    } catch (e) {
      if (!isTerminal(state)) throw e;
      // The session has ended whatever the disk says (full, say): this process reports the end, frees the
      // slot.
      console.error(`sessions: the ${state} state of ${rec.id} was not persisted: ${(e as Error).message}`);
    }
    Object.assign(rec, next);
    this.#emit(rec, "state");
  }

  async #run(rec: SessionRecord, data: () => Promise<SessionDataset>, signal: AbortSignal): Promise<void> {
    let dataset: SessionDataset | undefined;
    let release: (() => void) | undefined;
    let poll: ReturnType<typeof setInterval> | undefined;
    // The upload is removed before the end is announced, so a client that sees it ended sees it gone.
    const finish = async (state: SessionState) => {
      await dataset?.cleanup?.().catch(() => {});
      dataset = undefined;
      await this.#setState(rec, state);
    };
    try {
      const base = await this.registry.get(rec.request.base_model);
      dataset = await data();
      rec.dataset_info = { images: dataset.images, classes: dataset.labels };
      if (!this.registry.modelsDir) throw new Error("no state dir is configured to keep fine-tuned models");
      const dir = `${this.registry.modelsDir}/${rec.request.model_id}`;
      const gated = this.options.sharesDevice?.() ?? false;
      if (gated) release = await this.queue.acquire("train");
      await this.#checkCancelMarker(rec.id);
      if (signal.aborted) throw new DOMException("cancelled", "AbortError");
      await this.#setState(rec, "running");
      // A cancel asked by another process sharing the state dir takes effect within a second, mid-step too.
      poll = setInterval(() => void this.#checkCancelMarker(rec.id).catch(() => {}), 1000);
      let stepStart = performance.now();
      // Each training process reads the free memory for itself: a session counts on 1/n of it
      // (`CreateOptions.memoryShare`), n the sessions holding a slot in every process sharing the state dir.
      // The count is an estimate: where the state dir cannot be read, the most cautious share.
      const holders = await this.#leases.count().catch((e) => {
        console.error(`serve: counting the running sessions: ${(e as Error).message}`);
        return this.options.maxActive;
      });
      await this.tuner({
        base: base.location,
        data: { root: dataset.root, maxPixels: dataset.maxPixels },
        labels: dataset.labels,
        steps: rec.request.steps,
        lr: rec.request.lr,
        freeze: rec.request.freeze,
        batchSize: rec.request.batch_size,
        seed: rec.request.seed,
        ...(rec.request.recipe ? { recipe: rec.request.recipe } : {}),
        memoryShare: 1 / Math.max(1, holders),
        out: {
          dir,
          file: `fine-tuned from model "${base.id}" by session ${rec.id}`,
          extra: {
            name: rec.request.model_id,
            finetune: {
              session: rec.id,
              base_model: base.id,
              dataset: rec.request.dataset,
              steps: rec.request.steps,
              lr: rec.request.lr,
              freeze: rec.request.freeze,
              batch_size: rec.request.batch_size,
              ...(rec.request.recipe ? { recipe: rec.request.recipe } : {}),
            },
          },
        },
      }, async (p) => {
        rec.progress = p;
        rec.losses.push(p.loss);
        if (rec.losses.length > 500) rec.losses.splice(0, rec.losses.length - 500);
        this.metrics?.trainSteps.inc();
        // Off the device queue (a CPU engine), the worker's time is still training time to report.
        if (!gated) {
          this.metrics?.deviceSeconds.inc({ kind: "train" }, (performance.now() - stepStart) / 1000);
        }
        this.#emit(rec, "progress");
        // On a shared device, waiting inference batches go between steps.
        release?.();
        release = undefined;
        await this.#persist(rec, false);
        await this.#checkCancelMarker(rec.id);
        if (signal.aborted) throw new DOMException("cancelled", "AbortError");
        if (gated) release = await this.queue.acquire("train");
        stepStart = performance.now();
      }, signal);
      clearInterval(poll);
      release?.();
      release = undefined;
      try {
        await this.registry.load(rec.request.model_id, dir, "finetuned");
      } catch (e) {
        // A model that cannot be served must not come back at the next start either.
        await Deno.remove(dir, { recursive: true }).catch(() => {});
        throw new Error(`the fine-tuned weights were saved but could not be loaded: ${(e as Error).message}`);
      }
      rec.model_id = rec.request.model_id;
      await finish("succeeded");
    } catch (e) {
      release?.();
      if (this.#shuttingDown) {
        rec.error = {
          code: "interrupted",
          message: "the server shut down during the session; no model was registered",
        };
        await finish("failed");
      } else if (signal.aborted || (e instanceof DOMException && e.name === "AbortError")) {
        rec.error = { code: "cancelled", message: "the session was cancelled; no model was registered" };
        await finish("cancelled");
      } else {
        const err = e instanceof ServiceError ? e : undefined;
        rec.error = { code: err?.code ?? "finetune_failed", message: (e as Error).message };
        await finish("failed");
      }
    } finally {
      clearInterval(poll);
      await dataset?.cleanup?.().catch(() => {});
      dataset = undefined;
      await Deno.remove(this.#cancelPath(rec.id)).catch(() => {});
    }
  }
}
