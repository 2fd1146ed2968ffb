/**
 * Test helpers for the HTTP service: a micro ViT saved as a model folder, a started service with temporary
 * state and data dirs, and small encoded test images.
 */
import { encodeImage } from "../lib/data/decode.ts";
import { DEFAULT_LIMITS, type ServeOptions } from "../lib/serve/options.ts";
import { Service } from "../lib/serve/service.ts";
import type { FineTuner } from "../lib/serve/finetune.ts";
import { defaultPreprocessing } from "../lib/weights/manifest.ts";
import { formulaStateDict } from "../lib/weights/formula.ts";
import { saveModel } from "../lib/weights/shards.ts";
import { createApp } from "../routes/app.ts";

/** The micro config of the brief: 32 px, patch 4, dim 64, depth 2, 4 heads, 10 classes. */
export const MICRO = { img_size: 32, patch_size: 4, embed_dim: 64, depth: 2, num_heads: 4, num_classes: 10 };

/** The CIFAR-10 class names. */
export const CIFAR_LABELS = [
  "airplane",
  "automobile",
  "bird",
  "cat",
  "deer",
  "dog",
  "frog",
  "horse",
  "ship",
  "truck",
];

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
  options: Partial<ServeOptions> & { tuner?: FineTuner; root?: string } = {},
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
  }, { tuner: options.tuner });
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
