/**
 * The Markdown evaluation report of `deno task eval`: the measured top-1/top-5 beside the published ViT-B/16
 * CIFAR-10 figures, per-class accuracy, the confusion matrix (as a table and as an SVG image), and what was
 * measured on what (model, data, backend, command).
 *
 * @module
 */
import type { ModelManifest } from "../weights/manifest.ts";
import type { TrainingRecord } from "./checkpoint.ts";
import type { EvalResult } from "./evaluate.ts";

/** Published CIFAR-10 top-1 figures the report compares against. */
export const REFERENCES = [
  {
    what: "ViT-B/16, ImageNet-21k pre-trained, fine-tuned (the ViT paper, Dosovitskiy et al., ICLR 2021)",
    top1: 0.9813,
  },
  { what: "ViT-B/16 fine-tuned at 224 px, the PyTorch re-run of the original write-up", top1: 0.969 },
] as const;

/** Everything the report states besides the metrics. */
export interface ReportContext {
  /** Model folder or URL. */
  model: string;
  manifest: ModelManifest;
  /** e.g. "CIFAR-10 (JPEG copy)" or "CIFAR-10 (canonical binary)". */
  dataName: string;
  split: string;
  /** e.g. "wasm" or "webgpu (llvmpipe …)". */
  backend: string;
  /** The exact command that produced the report. */
  command: string;
  /** File name of the confusion-matrix SVG, relative to the report. */
  confusionSvg?: string;
  /** Seconds the whole evaluation took. */
  seconds: number;
  date: string;
}

const pct = (x: number, digits = 2) => `${(100 * x).toFixed(digits)}%`;

function params(m: ModelManifest): number {
  return m.weightsManifest.flatMap((g) => g.weights).reduce(
    (a, w) => a + w.shape.reduce((x, y) => x * y, 1),
    0,
  );
}

/** The report as Markdown. */
export function evalReport(r: EvalResult, ctx: ReportContext): string {
  const m = ctx.manifest, v = m.vit;
  const labels = m.labels;
  const k = labels.length;
  // Read from disk, so any field may be missing (models trained before a field existed).
  const training = m.extra?.training as Partial<TrainingRecord> | undefined;
  const lines: string[] = [
    `# ${ctx.dataName}: evaluation of \`${ctx.model}\``,
    "",
    `Measured ${ctx.date} with \`${ctx.command}\`.`,
    "",
    "| | |",
    "|---|---|",
    `| data | ${ctx.dataName}, \`${ctx.split}\` split, ${r.n.toLocaleString("en-US")} images |`,
    `| model | ViT, ${v.img_size} px, patch ${v.patch_size}, dim ${v.embed_dim}, depth ${v.depth}, ${v.num_heads} heads, ` +
    `${(params(m) / 1e6).toFixed(2)} M parameters, ${m.dtype} weights |`,
    `| source | ${m.source.file}${m.source.arch ? ` (${m.source.arch})` : ""} |`,
    `| preprocessing | resize ${m.preprocessing.interpolation}, crop_pct ${m.preprocessing.crop_pct}, ` +
    `mean [${m.preprocessing.mean}], std [${m.preprocessing.std}] |`,
    `| backend | ${ctx.backend} |`,
    `| time | ${ctx.seconds.toFixed(1)} s (${r.imgPerSec.toFixed(1)} img/s in forward passes) |`,
    "",
    "## Result",
    "",
    "| | top-1 | top-5 | mean loss |",
    "|---|---|---|---|",
    `| **this model** on ${ctx.dataName} | **${pct(r.top1)}** | ${pct(r.top5)} | ${r.loss.toFixed(4)} |`,
    ...REFERENCES.map((ref) => `| ${ref.what} | ${pct(ref.top1)} | | |`),
    "",
  ];
  if (ctx.dataName.includes("JPEG")) {
    lines.push(
      "The JPEG copy is a lossy re-encoding of CIFAR-10, so figures on it run slightly below those on the",
      "canonical (lossless) archives that the published numbers use.",
      "",
    );
  }
  if (training) {
    lines.push(
      "## Training",
      "",
      trainingSummary(training),
      "",
      "```json",
      JSON.stringify(training.config),
      "```",
      "",
    );
  }
  lines.push("## Per-class accuracy", "", "| class | accuracy | images |", "|---|---|---|");
  for (let t = 0; t < k; t++) {
    let row = 0;
    for (let p = 0; p < k; p++) row += r.confusion[t * k + p];
    lines.push(`| ${labels[t]} | ${pct(r.perClass[t], 1)} | ${row} |`);
  }
  lines.push("", "## Confusion matrix", "", "Rows: true class; columns: predicted class.", "");
  if (ctx.confusionSvg) lines.push(`![confusion matrix](${ctx.confusionSvg})`, "");
  lines.push(
    `| true \\ predicted | ${labels.join(" | ")} |`,
    `|---|${labels.map(() => "---:").join("|")}|`,
  );
  for (let t = 0; t < k; t++) {
    const cells = Array.from({ length: k }, (_, p) => {
      const c = r.confusion[t * k + p];
      return t === p ? `**${c}**` : String(c);
    });
    lines.push(`| ${labels[t]} | ${cells.join(" | ")} |`);
  }
  lines.push("");
  return lines.join("\n");
}

/** The confusion matrix as aligned plain text (for the terminal). */
export function confusionText(confusion: ArrayLike<number>, labels: readonly string[]): string {
  const k = labels.length;
  const w = Math.max(5, ...Array.from(confusion, (c) => String(c).length + 1));
  const name = Math.max(...labels.map((l) => l.length)) + 1;
  const head = " ".repeat(name) + labels.map((l) => l.slice(0, w - 1).padStart(w)).join("");
  const rows = labels.map((l, t) =>
    l.padEnd(name) + Array.from({ length: k }, (_, p) => String(confusion[t * k + p]).padStart(w)).join("")
  );
  return [head, ...rows].join("\n");
}

/**
 * One sentence on how the weights were trained: a finished run, one placed by `start_epoch`, or a stopped
 * one.
 */
function trainingSummary(t: Partial<TrainingRecord>): string {
  const minutes = (s = 0) => `${(s / 60).toFixed(1)} min`;
  const epochs = t.epochs ?? t.config?.epochs;
  const start = t.config?.start_epoch;
  const from = typeof start === "number" && start > 0
    ? ` (this run from epoch ${start + 1}, start_epoch)`
    : "";
  const weights = t.weights ? ` Weights: ${t.weights}.` : "";
  if (t.stopped_at) {
    const at = t.stopped_at;
    return `Trained by \`deno task train\`, stopped by \`max_updates\` at optimizer update ${at.update}, ` +
      `${at.epoch} of ${epochs} epochs done${from}: ${minutes(at.seconds)} of training in its run folder.` +
      weights;
  }
  return `Trained by \`deno task train\`: ${epochs} epochs, ${t.updates} optimizer updates${from}, ` +
    `${minutes(t.seconds)} of training in its run folder.${weights}`;
}
