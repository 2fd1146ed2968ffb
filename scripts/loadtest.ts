/**
 * `deno task loadtest [--clients 24] [--duration 30] [--max-duration 120] [--finetune-steps 40]
 * [--freeze none] [--model dir | --formula arch] [--backend name] [--max-queue 16] [--max-batch 16]
 * [--json out.json]`: a bounded load test on loopback.
 *
 * Starts `deno task serve` as a child process on 127.0.0.1 (temporary state dir, a generated class-folder
 * dataset), starts a fine-tuning session (unless `--finetune-steps 0`), and runs many concurrent clients
 * classifying images until the session has ended and `--duration` seconds have passed (never past
 * `--max-duration`; a session still running then is cancelled, and reported so). Reports throughput, latency
 * percentiles, status counts, the session's progress and the share of the load during which it ran. A 503
 * with `Retry-After` (queue full) is an intended refusal (the client waits and retries); any other failure,
 * or a failed session, makes the exit status 1.
 *
 * @module
 */
import { fileURLToPath } from "node:url";
import { formulaModelFolder, freePort, waitReady } from "../lib/bench/child.ts";
import { parseEngine } from "../lib/backend/backend.ts";
import { encodeImage } from "../lib/data/decode.ts";
import { archConfig, MICRO_ARCH } from "../lib/vit/archs.ts";
import type { Schema } from "../lib/util/options.ts";
import { commandLine, runTask } from "./_cli.ts";

const USAGE = `Usage: deno task loadtest [options]

A bounded load test on loopback: starts deno task serve, one fine-tuning session and many classifying
clients; reports throughput, latency percentiles and status counts.`;

/** The options of `deno task loadtest`. */
export const LOADTEST_OPTIONS = {
  clients: { type: "integer", default: 24, range: [1, Infinity], help: "concurrent classifying clients" },
  duration: { type: "number", default: 30, range: [0, Infinity], help: "seconds of load at least" },
  "max-duration": { type: "number", default: 120, range: [0, Infinity], help: "seconds of load at most" },
  "finetune-steps": {
    type: "integer",
    default: 40,
    range: [0, Infinity],
    help: "steps of the fine-tuning session (0: no session, inference only)",
  },
  freeze: {
    type: "string",
    default: "none",
    help: "the session's freeze: none, head-only or blocks:N",
  },
  model: {
    type: "string",
    metavar: "dir",
    defaultText: "weights, else formula micro weights",
    help: "model to serve",
  },
  formula: {
    type: "string",
    metavar: "arch",
    help: "serve formula weights of this architecture instead (e.g. vit_base_patch16_224)",
  },
  backend: {
    type: "string",
    metavar: "name",
    defaultText: "the automatic choice",
    help: "the server's engine (its VIT_BACKEND): webgpu, onnx, wasm or cpu",
  },
  "max-queue": { type: "integer", default: 16, range: [1, Infinity], help: "the server's --max-queue" },
  "max-batch": { type: "integer", default: 16, range: [1, Infinity], help: "the server's --max-batch" },
  json: { type: "string", metavar: "file", help: "also write the results as JSON" },
} satisfies Schema;

interface Options {
  clients: number;
  duration: number;
  maxDuration: number;
  finetuneSteps: number;
  freeze: string;
  model?: string;
  formula?: string;
  backend?: string;
  maxQueue: number;
  maxBatch: number;
  json?: string;
}

function parse(args: readonly string[]): Options {
  const { values: v } = commandLine("loadtest", USAGE, LOADTEST_OPTIONS, args);
  return {
    clients: v.clients as number,
    duration: v.duration as number,
    maxDuration: v["max-duration"] as number,
    finetuneSteps: v["finetune-steps"] as number,
    freeze: v.freeze as string,
    model: v.model as string | undefined,
    formula: v.formula as string | undefined,
    backend: v.backend as string | undefined,
    maxQueue: v["max-queue"] as number,
    maxBatch: v["max-batch"] as number,
    json: v.json as string | undefined,
  };
}

function pattern(width: number, height: number, seed: number): Uint8Array {
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = (y * width + x) * 3;
      data[i] = (x * (3 + seed) + seed * 50) & 255;
      data[i + 1] = (y * (5 + seed) + seed * 20) & 255;
      data[i + 2] = (((x >> 3) ^ (y >> 3)) & 1) * 200;
    }
  }
  return data;
}

async function png(width: number, height: number, seed: number): Promise<Uint8Array<ArrayBuffer>> {
  return new Uint8Array(await encodeImage({ width, height, data: pattern(width, height, seed) }, "png"));
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

/** What the load test reads of a session's record (`GET /v1/finetune/:id`). */
interface SessionView {
  id: string;
  state: string;
  progress?: { step: number; loss: number };
  request?: { steps: number };
  model_id?: string;
}

function metric(text: string, name: string): number {
  const m = new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.eE+-]+)$`, "m").exec(text);
  return m ? Number(m[1]) : NaN;
}

async function main(): Promise<number> {
  const o = parse(Deno.args);
  if (o.model && o.formula) throw new Error("give --model or --formula, not both");
  if (o.formula && !archConfig(o.formula)) throw new Error(`--formula: unknown architecture "${o.formula}"`);
  const backend = parseEngine(o.backend, "--backend");
  const root = await Deno.makeTempDir({ prefix: "vit-loadtest-" });
  const repo = fileURLToPath(new URL("..", import.meta.url));
  let modelDir = o.model;
  // Formula weights of a big architecture are written once, beside the bench's (deno task bench --cache).
  if (o.formula) modelDir = await formulaModelFolder(`${repo}.cache/bench`, o.formula);
  if (!modelDir) {
    try {
      await Deno.stat(`${repo}weights/model.json`);
      modelDir = `${repo}weights`;
    } catch {
      modelDir = await formulaModelFolder(root, MICRO_ARCH);
    }
  }
  // A small class-folder dataset for the fine-tuning session.
  for (const [k, c] of ["stripes", "checks", "waves"].entries()) {
    await Deno.mkdir(`${root}/data/tiny/${c}`, { recursive: true });
    for (let i = 0; i < 8; i++) {
      await Deno.writeFile(`${root}/data/tiny/${c}/${i}.png`, await png(32, 32, k * 4 + i));
    }
  }
  const token = crypto.randomUUID();
  const port = freePort();
  const url = `http://127.0.0.1:${port}`;
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      `${repo}scripts/serve.ts`,
      "--model",
      `base=${modelDir}`,
      "--host",
      "127.0.0.1",
      "--port",
      String(port),
      "--state-dir",
      `${root}/state`,
      "--data-root",
      `${root}/data`,
      "--max-queue",
      String(o.maxQueue),
      "--max-batch",
      String(o.maxBatch),
    ],
    env: { VIT_API_TOKEN: token, ...(backend ? { VIT_BACKEND: backend } : {}) },
    stdout: "inherit",
    stderr: "inherit",
  }).spawn();
  let result = 1;
  try {
    await waitReady(url, 180_000);
    const info = await (await fetch(`${url}/v1/models/base`)).json();
    console.error(
      `loadtest: server ready (${info.backend}, model ${info.id}: ${info.config.embed_dim}d × ${info.config.depth}, ${info.img_size}px)`,
    );
    const images = await Promise.all([0, 1, 2, 3].map((s) => png(48 + 16 * s, 40 + 8 * s, s)));

    // The fine-tuning session runs throughout the load.
    let session: SessionView | undefined;
    if (o.finetuneSteps > 0) {
      const start = await fetch(`${url}/v1/finetune`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
        body: JSON.stringify({
          base_model: "base",
          dataset: "tiny",
          steps: o.finetuneSteps,
          batch_size: 8,
          lr: 0.01,
          freeze: o.freeze,
        }),
      });
      session = await start.json();
      if (start.status !== 202) throw new Error(`starting the session failed: ${JSON.stringify(session)}`);
    }
    console.error(
      `loadtest: ${
        session
          ? `session ${session.id} started (${o.finetuneSteps} steps, freeze ${o.freeze})`
          : "no fine-tuning session"
      }; ${o.clients} clients classifying`,
    );

    const latencies: number[] = [];
    const statuses = new Map<string, number>();
    const failures: string[] = [];
    let intended503 = 0, missingRetryAfter = 0, images200 = 0;
    let stop = false;
    const loadStart = performance.now();
    const client = async (c: number) => {
      for (let i = 0; !stop; i++) {
        const body = images[(c + i) % images.length];
        const t = performance.now();
        try {
          const res = await fetch(`${url}/v1/models/base/classify?top_k=3`, {
            method: "POST",
            headers: { "content-type": "image/png" },
            body,
          });
          const text = await res.text();
          statuses.set(String(res.status), (statuses.get(String(res.status)) ?? 0) + 1);
          if (res.status === 200) {
            const out = JSON.parse(text);
            if (out.results?.[0]?.predictions?.length !== 3) {
              failures.push(`malformed 200: ${text.slice(0, 200)}`);
            }
            latencies.push(performance.now() - t);
            images200++;
          } else if (res.status === 503 && JSON.parse(text).error?.code === "queue_full") {
            intended503++;
            const wait = Number(res.headers.get("retry-after"));
            if (!(wait > 0)) missingRetryAfter++;
            // Honour Retry-After, capped so the test stays busy.
            await new Promise((r) => setTimeout(r, Math.min(1000, (wait || 1) * 1000) * Math.random()));
          } else {
            failures.push(`HTTP ${res.status}: ${text.slice(0, 200)}`);
          }
        } catch (e) {
          failures.push(`network: ${(e as Error).message}`);
        }
      }
    };
    const clients = Array.from({ length: o.clients }, (_, c) => client(c));
    const ENDED = ["succeeded", "failed", "cancelled"];
    let rec: SessionView = session ?? { id: "", state: "none" };
    // The share of the load's polls at which the session was still queued or running.
    let polls = 0, pollsActive = 0;
    for (;;) {
      await new Promise((r) => setTimeout(r, 500));
      if (session) rec = await (await fetch(`${url}/v1/finetune/${session.id}`)).json();
      const elapsed = (performance.now() - loadStart) / 1000;
      const ended = !session || ENDED.includes(rec.state);
      polls++;
      if (!ended) pollsActive++;
      if ((ended && elapsed >= o.duration) || elapsed >= o.maxDuration) break;
    }
    stop = true;
    await Promise.all(clients);
    const seconds = (performance.now() - loadStart) / 1000;
    const cutShort = session !== undefined && !ENDED.includes(rec.state);
    if (session && cutShort) {
      await fetch(`${url}/v1/finetune/${session.id}`, {
        method: "DELETE",
        headers: { authorization: `Bearer ${token}` },
      });
    }
    const metricsText = await (await fetch(`${url}/metrics`)).text();
    const healthy = (await fetch(`${url}/healthz`)).ok;
    latencies.sort((a, b) => a - b);
    const report = {
      command: `deno task loadtest ${Deno.args.join(" ")}`.trim(),
      backend: info.backend,
      model: {
        id: info.id,
        embed_dim: info.config.embed_dim,
        depth: info.config.depth,
        img_size: info.img_size,
      },
      clients: o.clients,
      seconds: Math.round(seconds * 10) / 10,
      requests_ok: images200,
      throughput_img_per_s: Math.round((images200 / seconds) * 10) / 10,
      latency_ms: {
        p50: Math.round(percentile(latencies, 50)),
        p90: Math.round(percentile(latencies, 90)),
        p99: Math.round(percentile(latencies, 99)),
        max: Math.round(latencies.at(-1) ?? NaN),
      },
      statuses: Object.fromEntries(statuses),
      intended_503: intended503,
      failures: failures.length,
      failure_samples: failures.slice(0, 5),
      mean_batch_size: Math.round(
        (metric(metricsText, "vit_inference_batch_size_sum") /
          metric(metricsText, "vit_inference_batch_size_count")) * 100,
      ) / 100,
      finetune: !session ? null : {
        state: rec.state,
        freeze: o.freeze,
        // Share of the load during which the session was queued or running.
        active_share: Math.round((pollsActive / Math.max(1, polls)) * 100) / 100,
        // Still running when the load ended (then cancelled).
        cancelled_after_load: cutShort,
        steps_done: rec.progress?.step ?? 0,
        steps: rec.request?.steps,
        final_loss: rec.progress?.loss,
        model_id: rec.model_id,
      },
      server_healthy_after: healthy,
    };
    console.log(JSON.stringify(report, null, 2));
    if (o.json) await Deno.writeTextFile(o.json, JSON.stringify(report, null, 2) + "\n");
    const ok = failures.length === 0 && missingRetryAfter === 0 && healthy && images200 > 0 &&
      (!session || rec.state === "succeeded" || cutShort);
    console.error(
      ok
        ? `loadtest: OK — ${report.throughput_img_per_s} img/s, p50 ${report.latency_ms.p50} ms, p99 ${report.latency_ms.p99} ms, ` +
          `${intended503} intended 503s, no other failure; ` +
          (report.finetune
            ? `session ${rec.state} (${report.finetune.steps_done} steps, active ` +
              `${Math.round(report.finetune.active_share * 100)}% of the load${
                cutShort ? ", cancelled after it" : ""
              })`
            : "no session")
        : `loadtest: FAILED — ${failures.length} failures, ${missingRetryAfter} 503s without Retry-After, ` +
          `session ${rec.state}, healthy ${healthy}`,
    );
    result = ok ? 0 : 1;
  } finally {
    try {
      child.kill("SIGTERM");
    } catch { /* gone */ }
    await child.status;
    await Deno.remove(root, { recursive: true }).catch(() => {});
  }
  return result;
}

if (import.meta.main) await runTask("loadtest", main);
