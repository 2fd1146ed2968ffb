/**
 * Fine-tuning over HTTP against classification on the same server (issue 13): `deno task serve` in a child
 * process serves ViT-B/16 (formula weights) with a 200-image dataset (20 per class from CIFAR-10's test
 * split, as JPEG files); the bench classifies each image once at batch 1, then runs a 5-epoch fine-tuning
 * session per `freeze` mode through `POST /v1/finetune`, and reports each session's time over the
 * classification time.
 *
 * Standalone: `deno run -A lib/bench/finetune_http.ts [--images 200] [--epochs 5] [--freeze
 * head-only,blocks:10]` prints the `ratio:` lines.
 *
 * @module
 */
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { formulaModelFolder, freePort, waitReady } from "./child.ts";

/** One measured session. */
export interface SessionFigure {
  freeze: string;
  seconds: number;
  /** Session time over the time to classify each image once at batch 1. */
  ratio: number;
  steps: number;
}

/** What {@linkcode finetuneHttpFigures} measured. */
export interface FinetuneHttpFigures {
  images: number;
  epochs: number;
  classifySeconds: number;
  sessions: SessionFigure[];
  /** The engine line the server logged. */
  engine: string;
  ratios: string[];
  notes: string[];
}

const TOKEN = "bench-finetune-token";

/** `perClass` JPEGs of each class of `split` copied into `<root>/<name>/<class>/`; returns their paths. */
async function dataset(source: string, root: string, name: string, perClass: number): Promise<string[]> {
  const files: string[] = [];
  const classes = [...Deno.readDirSync(source)].filter((e) => e.isDirectory).map((e) => e.name).sort();
  if (!classes.length) throw new Error(`${source}: no class folders`);
  for (const c of classes) {
    await Deno.mkdir(`${root}/${name}/${c}`, { recursive: true });
    const images = [...Deno.readDirSync(`${source}/${c}`)].map((e) => e.name).filter((n) =>
      /\.jpe?g$/i.test(n)
    )
      .sort().slice(0, perClass);
    for (const f of images) {
      await Deno.copyFile(`${source}/${c}/${f}`, `${root}/${name}/${c}/${f}`);
      files.push(`${root}/${name}/${c}/${f}`);
    }
  }
  return files;
}

/**
 * Runs the comparison. `repo` is the project root; `cache` holds the model folder; `source` is a class-folder
 * split to take images from (CIFAR-10's JPEG test split by default).
 */
export async function finetuneHttpFigures(repo: string, o: {
  cache: string;
  source?: string;
  images?: number;
  epochs?: number;
  freezes?: string[];
  batchSize?: number;
  env?: Record<string, string>;
  /** Progress lines as figures are taken (a run cut short still says what it measured). */
  log?: (line: string) => void;
}): Promise<FinetuneHttpFigures> {
  const images = o.images ?? 200, epochs = o.epochs ?? 5;
  const source = o.source ?? `${repo}/data/cifar10-jpeg/test`;
  const modelDir = await formulaModelFolder(o.cache, "vit_base_patch16_224");
  const tmp = await Deno.makeTempDir({ prefix: "vit-bench-finetune-" });
  const classCount = [...Deno.readDirSync(source)].filter((e) => e.isDirectory).length;
  const files = await dataset(source, `${tmp}/data`, "bench", Math.ceil(images / classCount));
  const port = freePort();
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      `${repo}/scripts/serve.ts`,
      "--host",
      "127.0.0.1",
      "--port",
      String(port),
      "--model",
      `base=${modelDir}`,
      "--data-root",
      `${tmp}/data`,
      "--state-dir",
      `${tmp}/state`,
    ],
    cwd: repo,
    env: { VIT_API_TOKEN: TOKEN, ...o.env },
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let log = "";
  const pump = (async () => {
    for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) log += chunk;
  })();
  const url = `http://127.0.0.1:${port}`;
  try {
    await waitReady(url, 300_000, () => log.slice(-2000));
    // Each image once, one request at a time, batch 1: what the session is compared with.
    const t0 = performance.now();
    for (const f of files) {
      const res = await fetch(`${url}/v1/models/base/classify`, {
        method: "POST",
        headers: { "content-type": "image/jpeg" },
        body: await Deno.readFile(f),
      });
      const body = await res.text();
      if (res.status !== 200) throw new Error(`classify ${f}: HTTP ${res.status} ${body.slice(0, 200)}`);
    }
    const classifySeconds = (performance.now() - t0) / 1000;
    o.log?.(`classified ${files.length} images one by one at b1 in ${classifySeconds.toFixed(1)} s`);
    const sessions: SessionFigure[] = [];
    for (const freeze of o.freezes ?? ["head-only", "blocks:10"]) {
      const start = performance.now();
      const res = await fetch(`${url}/v1/finetune`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${TOKEN}` },
        body: JSON.stringify({
          base_model: "base",
          dataset: "bench",
          epochs,
          freeze,
          batch_size: o.batchSize ?? 20,
          lr: 0.01,
        }),
      });
      const rec = await res.json();
      if (res.status !== 202) {
        throw new Error(`finetune ${freeze}: HTTP ${res.status} ${JSON.stringify(rec)}`);
      }
      let done: { state: string; error?: unknown; request: { steps: number } };
      for (;;) {
        done = await (await fetch(`${url}/v1/finetune/${rec.id}`)).json();
        if (["succeeded", "failed", "cancelled"].includes(done.state)) break;
        await new Promise((r) => setTimeout(r, 250));
      }
      const seconds = (performance.now() - start) / 1000;
      if (done.state !== "succeeded") {
        throw new Error(`finetune ${freeze}: ${done.state} ${JSON.stringify(done.error)}`);
      }
      sessions.push({ freeze, seconds, ratio: seconds / classifySeconds, steps: done.request.steps });
      o.log?.(`${freeze}: ${done.request.steps} steps in ${seconds.toFixed(1)} s`);
    }
    const engine = /vit-deno: backend ([^\n]*)/.exec(log)?.[1] ?? "unknown";
    return {
      images: files.length,
      epochs,
      classifySeconds,
      sessions,
      engine,
      ratios: sessions.map((s) =>
        `ViT-B/16 fine-tuning over HTTP, ${s.freeze}, ${files.length} images × ${epochs} epochs vs classifying ` +
        `each once at b1 on the same server: ${s.ratio.toFixed(2)}× (${s.seconds.toFixed(0)} s vs ${
          classifySeconds.toFixed(0)
        } s)`
      ),
      notes: [
        `fine-tuning over HTTP (lib/bench/finetune_http.ts): server engine ${engine}; ${files.length} CIFAR-10 ` +
        `test JPEGs classified one by one in ${classifySeconds.toFixed(1)} s; ` +
        sessions.map((s) =>
          `${s.freeze}: ${s.steps} steps in ${s.seconds.toFixed(1)} s (${s.ratio.toFixed(2)}×)`
        )
          .join("; "),
      ],
    };
  } finally {
    try {
      child.kill("SIGTERM");
    } catch { /* already gone */ }
    await child.status;
    await pump.catch(() => {});
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      images: { type: "string", default: "200" },
      epochs: { type: "string", default: "5" },
      freeze: { type: "string", default: "head-only,blocks:10" },
      cache: { type: "string", default: ".cache/bench" },
    },
    strict: true,
  });
  const repo = fileURLToPath(new URL("../..", import.meta.url)).replace(/\/$/, "");
  const r = await finetuneHttpFigures(repo, {
    cache: values.cache!,
    images: Number(values.images),
    epochs: Number(values.epochs),
    freezes: values.freeze!.split(","),
    log: (line) => console.log(line),
  });
  for (const n of r.notes) console.log(n);
  for (const line of r.ratios) console.log(`ratio: ${line}`);
}
