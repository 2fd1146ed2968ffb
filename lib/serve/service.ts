/**
 * The running service: configuration, metrics, the device queue, admission control, the model registry and
 * the fine-tuning sessions, wired together; routes/ puts HTTP in front of it. Its parts report refusals as
 * `ApiError`s that carry the HTTP status routes/ answers with. `start()` loads the models; until it has
 * finished `/readyz` answers 503, so a load balancer sends traffic only to a replica that can serve it.
 *
 * @module
 */
import { type BackendInfo, describeBackend, initBackend } from "../backend/backend.ts";
import { readManifest } from "../weights/load.ts";
import { Admission } from "./admission.ts";
import { DeviceQueue } from "./device_queue.ts";
import type { FineTuner } from "./finetune.ts";
import { workerFineTuner } from "./finetune_host.ts";
import { removeOrphans, UPLOAD_NAME } from "./state/liveness.ts";
import { ServeMetrics } from "./metrics.ts";
import type { ServeOptions } from "./options.ts";
import { RegistrationStore } from "./state/registrations.ts";
import { checkModelId, defaultModelId, ModelRegistry } from "./registry.ts";
import { SessionManager } from "./sessions.ts";

/** Where the service stands. */
export type ServiceState = "starting" | "ready" | "failed";

/** The service's parts. */
export class Service {
  readonly metrics: ServeMetrics = new ServeMetrics();
  readonly queue: DeviceQueue;
  readonly admission: Admission;
  readonly registry: ModelRegistry;
  readonly sessions: SessionManager;
  readonly startedAt: Date = new Date();
  state: ServiceState = "starting";
  startError: string | undefined;
  backend: BackendInfo | undefined;
  #starting: Promise<void> | undefined;
  #plan: Promise<Array<{ id: string; location: string }>> | undefined;

  /**
   * @param deps For tests: the fine-tuner (a worker per session by default) and whether training shares the
   * inference device (by default, when the engine is webgpu).
   */
  constructor(
    readonly options: ServeOptions,
    deps: { tuner?: FineTuner; sharesDevice?: () => boolean } = {},
  ) {
    this.queue = new DeviceQueue({
      onJob: (kind, seconds) => this.metrics.deviceSeconds.inc({ kind }, seconds),
    });
    this.admission = new Admission(options.limits.maxQueue);
    this.registry = new ModelRegistry(
      this.queue,
      this.admission,
      { maxBatch: options.maxBatch, maxWaitMs: options.maxWaitMs },
      `${options.stateDir}/models`,
      this.metrics,
      new RegistrationStore(`${options.stateDir}/registered`),
    );
    this.sessions = new SessionManager(
      {
        dir: `${options.stateDir}/sessions`,
        maxActive: options.limits.maxSessions,
        // Training and inference share a device only on a GPU engine; on a CPU the worker trains beside it.
        sharesDevice: deps.sharesDevice ?? (() => this.backend?.engine === "webgpu"),
      },
      this.registry,
      this.queue,
      deps.tuner ?? workerFineTuner(),
      this.metrics,
    );
    this.registry.reservedBySession = (id) => this.sessions.reserves(id);
    this.metrics.gauge("vit_queue_images", "Images admitted and not yet classified.", () => [[
      {},
      this.admission.pending,
    ]]);
    this.metrics.gauge("vit_queue_limit_images", "Limit on admitted images (503 beyond it).", () => [[
      {},
      this.admission.limit,
    ]]);
    this.metrics.gauge("vit_device_queue_jobs", "Device jobs waiting, by kind.", () => {
      const d = this.queue.depth;
      return [[{ kind: "infer" }, d.infer], [{ kind: "train" }, d.train]];
    });
    this.metrics.gauge(
      "vit_finetune_sessions",
      "Fine-tuning sessions by state.",
      () => Object.entries(this.sessions.countByState()).map(([state, n]) => [{ state }, n]),
    );
    this.metrics.gauge("vit_models_loaded", "Models served.", () => [[{}, this.registry.list().length]]);
    this.metrics.gauge(
      "vit_models_unavailable",
      "Registered models whose URL failed to load (listed under `unavailable` in /v1/models and /readyz).",
      () => [[{}, this.registry.unavailable().length]],
    );
    this.metrics.gauge("vit_ready", "1 when every model is loaded and the backend is ready.", () => [[
      {},
      this.state === "ready" ? 1 : 0,
    ]]);
  }

  /**
   * Loads the backend, the base models, persisted fine-tuned and registered models and sessions (once). A
   * persisted model that fails to load is logged and does not stop the start.
   */
  start(): Promise<void> {
    this.#starting ??= this.#start().then(() => {
      this.state = "ready";
    }, (e) => {
      this.state = "failed";
      this.startError = (e as Error).message;
      throw e;
    });
    return this.#starting;
  }

  /**
   * Reads every base model's manifest and settles the ids they are served as (once), so that a missing or
   * broken model is reported before the server starts listening.
   */
  checkModels(): Promise<Array<{ id: string; location: string }>> {
    this.#plan ??= this.#readPlan();
    return this.#plan;
  }

  async #readPlan(): Promise<Array<{ id: string; location: string }>> {
    const seen = new Set<string>();
    const plan: Array<{ id: string; location: string }> = [];
    for (const spec of this.options.models) {
      let manifest;
      try {
        manifest = await readManifest(spec.location);
      } catch (e) {
        const local = !/^https?:\/\//i.test(spec.location);
        throw new Error(
          `cannot serve model ${JSON.stringify(spec.location)}: ${(e as Error).message}` +
            (local && spec.location.replace(/\/+$/, "") === "weights"
              ? ". The shipped model lives in weights/ (model.json + shards); create it with `deno task train` " +
                "or pass --model <folder|url>"
              : ""),
        );
      }
      const id = spec.id ?? defaultModelId(spec.location, manifest);
      if (spec.id !== undefined) checkModelId(spec.id, `--model ${spec.id}=${spec.location}: the id`);
      if (seen.has(id)) {
        throw new Error(`two models would be served as "${id}"; name them with --model id=path`);
      }
      seen.add(id);
      plan.push({ id, location: spec.location });
    }
    return plan;
  }

  async #start(): Promise<void> {
    const o = this.options;
    const plan = await this.checkModels();
    this.backend = await initBackend();
    for (const p of plan) await this.registry.load(p.id, p.location, "base");
    await Deno.mkdir(`${o.stateDir}/models`, { recursive: true });
    const persisted = await this.registry.loadPersisted();
    for (const f of persisted.failed) {
      console.error(`serve: fine-tuned model "${f.id}" not loaded: ${f.error}`);
    }
    const registered = await this.registry.loadRegistered();
    for (const f of registered.failed) {
      console.error(
        `serve: registered model "${f.id}" (${f.location || "unreadable record"}) not loaded: ${f.error}` +
          (f.unavailable
            ? `; listed as unavailable in /v1/models and /readyz, tried again on use; ` +
              `DELETE /v1/models/${f.id} removes the registration`
            : ""),
      );
    }
    await removeOrphans(`${o.stateDir}/uploads`, UPLOAD_NAME);
    const { interrupted } = await this.sessions.init();
    if (interrupted.length) {
      console.error(
        `serve: ${interrupted.length} session(s) were interrupted by a restart: ${interrupted.join(", ")}`,
      );
    }
  }

  /** A one-line description of the backend, once started. */
  get backendName(): string | undefined {
    return this.backend ? describeBackend(this.backend) : undefined;
  }

  /** Cancels sessions and frees the models. */
  async close(): Promise<void> {
    await this.sessions.shutdown();
    this.registry.dispose();
  }
}
