/**
 * Test helpers for the HTTP service: a micro ViT saved as a model folder, a started service with temporary
 * state and data dirs, and small encoded test images.
 */
import { encodeImage } from "../lib/data/decode.ts";
import { archConfig, MICRO_ARCH } from "../lib/vit/archs.ts";
import { DEFAULT_LIMITS, type ServeOptions } from "../lib/serve/options.ts";
import { Service } from "../lib/serve/service.ts";
import type { FineTuner } from "../lib/serve/finetune.ts";
import { defaultPreprocessing } from "../lib/weights/manifest.ts";
import { formulaStateDict } from "../lib/weights/formula.ts";
import { saveModel } from "../lib/weights/shards.ts";
import { createApp } from "../routes/app.ts";
import { CIFAR10_CLASSES } from "../lib/data/cifar_binary.ts";

/** The registered micro test config (`vit_micro_patch4_32`): 32 px, patch 4, dim 64, depth 2, 4 heads. */
export const MICRO = archConfig(MICRO_ARCH)!;

/** The CIFAR-10 class names (the data layer's list). */
export const CIFAR_LABELS: string[] = [...CIFAR10_CLASSES];

/** Writes the micro model (formula weights) to `dir`. */
export async function writeMicroModel(dir: string, name = "micro"): Promise<void> {
  await saveModel(dir, {
    config: MICRO,
    state: formulaStateDict(MICRO),
    preprocessing: { ...defaultPreprocessing(32), interpolation: "bilinear", crop_pct: 1 },
    labels: CIFAR_LABELS,
    source: { file: "formula weights (tests)" },
    extra: { name },
  });
}

/** A solid-colour-with-gradient RGB test image, encoded. */
export function testImage(
  format: "png" | "jpeg" = "png",
  width = 40,
  height = 30,
  seed = 1,
): Promise<Uint8Array<ArrayBuffer>> {
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = (y * width + x) * 3;
      data[i] = (x * 7 + seed * 40) & 255;
      data[i + 1] = (y * 5 + seed * 90) & 255;
      data[i + 2] = ((x + y) * 3 + seed * 20) & 255;
    }
  }
  return encodeImage({ width, height, data }, format).then((b) => new Uint8Array(b));
}

/** A started test service. */
export interface TestServer {
  service: Service;
  app: ReturnType<typeof createApp>;
  root: string;
  stateDir: string;
  dataRoot: string;
  modelDir: string;
  token: string;
  close(): Promise<void>;
}

/** Starts a service on the micro model in a fresh temp dir (`options` override the defaults). */
export async function startTestService(
  options: Partial<ServeOptions> & { tuner?: FineTuner; sharesDevice?: () => boolean; root?: string } = {},
): Promise<TestServer> {
  const root = options.root ?? await Deno.makeTempDir({ prefix: "vit-serve-" });
  const modelDir = `${root}/micro`;
  try {
    await Deno.stat(`${modelDir}/model.json`);
  } catch {
    await writeMicroModel(modelDir);
  }
  const dataRoot = `${root}/data`;
  await Deno.mkdir(dataRoot, { recursive: true });
  const token = "test-token-123";
  const service = new Service({
    models: [{ location: modelDir }],
    port: 0,
    host: "127.0.0.1",
    stateDir: `${root}/state`,
    dataRoot,
    token,
    maxBatch: 8,
    maxWaitMs: 2,
    ...options,
    limits: { ...DEFAULT_LIMITS, ...options.limits },
  }, { tuner: options.tuner, sharesDevice: options.sharesDevice });
  await service.start();
  return {
    service,
    app: createApp(service),
    root,
    stateDir: `${root}/state`,
    dataRoot,
    modelDir,
    token,
    async close() {
      await service.close();
      if (!options.root) await Deno.remove(root, { recursive: true }).catch(() => {});
    },
  };
}

/** Writes `dir/<class>/<i>.png` for a small class-folder dataset. */
export async function writeImageFolder(dir: string, classes: string[], perClass: number): Promise<void> {
  for (const [k, c] of classes.entries()) {
    await Deno.mkdir(`${dir}/${c}`, { recursive: true });
    for (let i = 0; i < perClass; i++) {
      await Deno.writeFile(`${dir}/${c}/${i}.png`, await testImage("png", 32, 32, k * 3 + i));
    }
  }
}

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc32(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function pngChunk(type: string, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(12 + data.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, data.length);
  out.set(new TextEncoder().encode(type), 4);
  out.set(data, 8);
  view.setUint32(8 + data.length, crc32(out.subarray(4, 8 + data.length)));
  return out;
}

/**
 * A valid grayscale PNG of `width`×`height` black pixels whose IDAT is the real zlib stream (a 20000×20000
 * one is 400 MB of pixels in ~390 KB): a decompression bomb.
 */
export async function pngBomb(width = 20000, height = 20000): Promise<Uint8Array<ArrayBuffer>> {
  const ihdr = new Uint8Array(13);
  const v = new DataView(ihdr.buffer);
  v.setUint32(0, width);
  v.setUint32(4, height);
  ihdr.set([8, 0, 0, 0, 0], 8);
  const rowBytes = 1 + width;
  const rowsPerChunk = Math.max(1, Math.floor(4_000_000 / rowBytes));
  const zeros = new Uint8Array(rowBytes * rowsPerChunk);
  let rows = height;
  const stream = new ReadableStream<Uint8Array>({
    pull(c) {
      if (rows <= 0) return c.close();
      const n = Math.min(rows, rowsPerChunk);
      c.enqueue(zeros.subarray(0, n * rowBytes));
      rows -= n;
    },
  }).pipeThrough(new CompressionStream("deflate") as unknown as TransformStream<Uint8Array, Uint8Array>);
  const idat = new Uint8Array(await new Response(stream).arrayBuffer());
  const parts = [
    new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    pngChunk("IHDR", ihdr),
    pngChunk("IDAT", idat),
    pngChunk("IEND", new Uint8Array(0)),
  ];
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/**
 * A ustar archive of `files` (path → bytes), optionally gzipped; paths are written as given (unsafe ones
 * too).
 */
export async function tarArchive(
  files: Record<string, Uint8Array>,
  gzip = false,
): Promise<Uint8Array<ArrayBuffer>> {
  const blocks: Uint8Array[] = [];
  const enc = new TextEncoder();
  for (const [path, data] of Object.entries(files)) {
    const h = new Uint8Array(512);
    h.set(enc.encode(path).subarray(0, 100), 0);
    h.set(enc.encode("0000644\0"), 100);
    h.set(enc.encode("0000000\0"), 108);
    h.set(enc.encode("0000000\0"), 116);
    h.set(enc.encode(data.length.toString(8).padStart(11, "0") + "\0"), 124);
    h.set(enc.encode("00000000000\0"), 136);
    h.set(enc.encode("        "), 148);
    h[156] = "0".charCodeAt(0);
    h.set(enc.encode("ustar\0"), 257);
    h.set(enc.encode("00"), 263);
    const sum = h.reduce((a, b) => a + b, 0);
    h.set(enc.encode(sum.toString(8).padStart(6, "0") + "\0 "), 148);
    blocks.push(h, data, new Uint8Array((512 - (data.length % 512)) % 512));
  }
  blocks.push(new Uint8Array(1024));
  const total = blocks.reduce((a, b) => a + b.length, 0);
  const tar = new Uint8Array(total);
  let at = 0;
  for (const b of blocks) {
    tar.set(b, at);
    at += b.length;
  }
  if (!gzip) return tar;
  const gz = new Blob([tar]).stream().pipeThrough(new CompressionStream("gzip"));
  return new Uint8Array(await new Response(gz).arrayBuffer());
}

/** A static file server on loopback: `/<name>/<file>` answers `folders[name]/<file>` (404 otherwise). */
export interface FolderServer {
  /** The URL of folder `name`, with a trailing slash (what `POST /v1/models` takes as `location`). */
  url(name: string): string;
  shutdown(): Promise<void>;
}

/** Serves model folders over HTTP on loopback (for registering models by URL). */
export function serveFolders(folders: Record<string, string>): FolderServer {
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const m = /^\/([\w.-]+)\/([\w.-]+)$/.exec(new URL(req.url).pathname);
    const dir = m ? folders[m[1]] : undefined;
    if (!m || !dir) return new Response("not found", { status: 404 });
    try {
      return new Response(await Deno.readFile(`${dir}/${m[2]}`));
    } catch {
      return new Response("not found", { status: 404 });
    }
  });
  return {
    url: (name) => `http://127.0.0.1:${server.addr.port}/${name}/`,
    shutdown: () => server.shutdown(),
  };
}

/** A free loopback port (bound, then released). */
export function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** The flags of a child server on `root`: `base=<root>/micro`, state and data under `root`. */
export function rootArgs(root: string): string[] {
  return ["--model", `base=${root}/micro`, "--state-dir", `${root}/state`, "--data-root", `${root}/data`];
}

/**
 * The arguments of `deno serve --parallel routes/main.ts <args>` on loopback `port`: the multi-worker entry.
 */
export function parallelServeArgs(port: number, args: string[]): string[] {
  return [
    "serve",
    "--parallel",
    "-A",
    "--host",
    "127.0.0.1",
    "--port",
    String(port),
    "routes/main.ts",
    ...args,
  ];
}

/** A server running in a child process. */
export interface ChildServer {
  url: string;
  child: Deno.ChildProcess;
  /** Everything the server wrote to stderr so far. */
  log(): string;
  /** SIGKILL (a crash) or SIGTERM, then waits for the exit. */
  kill(signal?: Deno.Signal): Promise<Deno.CommandStatus>;
}

/**
 * Starts `deno run -A scripts/serve.ts <args>` (or `command` given in full) on a free loopback port and
 * waits until `/readyz` answers 200.
 */
export async function spawnServer(
  args: string[],
  env: Record<string, string> = {},
  options: { command?: (port: number) => string[]; timeoutMs?: number } = {},
): Promise<ChildServer> {
  const port = freePort();
  const root = new URL("..", import.meta.url).pathname;
  const argv = options.command?.(port) ??
    ["run", "-A", `${root}scripts/serve.ts`, "--host", "127.0.0.1", "--port", String(port), ...args];
  const child = new Deno.Command(Deno.execPath(), {
    args: argv,
    cwd: root,
    env: { VIT_BACKEND: Deno.env.get("VIT_BACKEND") ?? "wasm", ...env },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let log = "";
  const pump = async (s: ReadableStream<Uint8Array>) => {
    for await (const chunk of s.pipeThrough(new TextDecoderStream())) log += chunk;
  };
  const pumps = Promise.all([pump(child.stdout), pump(child.stderr)]);
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + (options.timeoutMs ?? 120_000);
  let exited = false;
  child.status.then(() => exited = true);
  for (;;) {
    if (exited) throw new Error(`the server exited before it was ready:\n${log}`);
    try {
      const res = await fetch(`${url}/readyz`);
      await res.body?.cancel();
      if (res.status === 200) break;
    } catch { /* not listening yet */ }
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`the server was not ready within the timeout:\n${log}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  return {
    url,
    child,
    log: () => log,
    async kill(signal: Deno.Signal = "SIGKILL") {
      try {
        child.kill(signal);
      } catch { /* already gone */ }
      const status = await child.status;
      await pumps;
      return status;
    },
  };
}

/**
 * A drawn picture of an airplane (white fuselage, wings and tail on a blue sky), `size`×`size` PNG: a test
 * image that a CIFAR-10 model can recognise, made without any dataset image.
 */
export function drawnAirplane(size = 128): Promise<Uint8Array<ArrayBuffer>> {
  const data = new Uint8Array(size * size * 3);
  for (let py = 0; py < size; py++) {
    for (let px = 0; px < size; px++) {
      const x = px / size, y = py / size;
      const fuselage = Math.abs(y - 0.5) < 0.05 && x > 0.15 && x < 0.85;
      const wing = Math.abs(y - 0.5) < 0.3 && Math.abs(x - 0.5 + (y - 0.5) * 0.3) < 0.07;
      const tail = x > 0.75 && x < 0.85 && y > 0.35 && y < 0.5;
      const rgb = fuselage || wing || tail ? [235, 235, 240] : [110 + 80 * y, 160 + 60 * y, 235];
      data.set(rgb.map(Math.round), (py * size + px) * 3);
    }
  }
  return encodeImage({ width: size, height: size, data }, "png").then((b) => new Uint8Array(b));
}
