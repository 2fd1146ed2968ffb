/**
 * `deno task eval --model <dir|url> --data <dir>`: top-1/top-5, per-class accuracy and the confusion matrix
 * of a converted or trained model on CIFAR-10 (or any class-folder split), printed and written as a Markdown
 * report with an SVG confusion matrix beside it.
 *
 * `--data` may be a folder holding `cifar-10-batches-bin/` (canonical) or `cifar10-jpeg/<split>/` (as
 * `deno task data` prepares), a folder with `<split>/<class>/*`, or a class folder itself.
 *
 * @module
 */
import { describeBackend, initBackend, parseEngine } from "../lib/backend/backend.ts";
import { writeFileAtomic } from "../lib/util/fs.ts";
import { loadModel } from "../lib/weights/load.ts";
import { datasetImageSet, openSplit } from "../lib/data/image_set.ts";
import { classBalancedSubset } from "../lib/data/dataset.ts";
import { evaluate } from "../lib/train/evaluate.ts";
import { confusionSvg } from "../lib/train/plot.ts";
import { formatDuration } from "../lib/train/progress.ts";
import { confusionText, evalReport } from "../lib/train/report.ts";
import type { Schema } from "../lib/util/options.ts";
import { commandLine } from "./_cli.ts";

const USAGE = `Usage: deno task eval --model <dir|url> --data <dir> [options]

Top-1/top-5, per-class accuracy and the confusion matrix of a model on a dataset split, printed and written as
a Markdown report with an SVG confusion matrix beside it.`;

/** The options of `deno task eval`. */
export const EVAL_OPTIONS = {
  model: { type: "string", metavar: "dir|url", required: true, help: "converted or trained model" },
  data: {
    type: "string",
    metavar: "dir",
    required: true,
    help: "dataset: holding cifar-10-batches-bin/ or cifar10-jpeg/<split>/, or <split>/<class>/*",
  },
  split: {
    type: "string",
    default: "test",
    help: "split to evaluate; holdout:<n> = the validation images training's val_split carves out of train",
  },
  subset: {
    type: "integer",
    default: 0,
    range: [0, Infinity],
    help: "only a fixed class-balanced subset of n images (the first n/k of each class); 0 = all",
  },
  batch: { type: "integer", default: 250, range: [1, Infinity], help: "images per forward pass" },
  backend: {
    type: "string",
    range: ["webgpu", "onnx", "wasm", "cpu"],
    defaultText: "automatic",
    help: "inference engine (onnx: onnxruntime-node)",
  },
  report: {
    type: "string",
    metavar: "file.md",
    defaultText: "docs/cifar10_eval.md",
    help: 'Markdown report to write ("-" for none; another split than test: docs/cifar10_eval_<split>.md)',
  },
  record: {
    type: "string",
    metavar: "file",
    help:
      "also record the images right on this backend into an accuracy JSON file (as weights/accuracy.json)",
  },
  floor: {
    type: "number",
    range: [0, 1],
    help: "the record's accuracy floor [the last record's, else top-1 − 2%]",
  },
} satisfies Schema;

/** How many images of each class a class-balanced subset of `n` takes: "100", or "2–3" when uneven. */
function perClassText(n: number, k: number): string {
  return n % k ? `${Math.floor(n / k)}–${Math.ceil(n / k)}` : String(n / k);
}

if (import.meta.main) {
  const args = [...Deno.args];
  const { values: o } = commandLine("eval", USAGE, EVAL_OPTIONS, args);
  try {
    const t0 = performance.now();
    const modelAt = o.model as string, data = o.data as string;
    const split = o.split as string;
    const subset = o.subset as number;
    const batch = o.batch as number;
    // Another split's report never replaces the test set's.
    const reportPath = (o.report as string | undefined) ??
      (split === "test"
        ? "docs/cifar10_eval.md"
        : `docs/cifar10_eval_${split.replace(/[^A-Za-z0-9_-]+/g, "_")}.md`);
    const backend = await initBackend(parseEngine(o.backend as string | undefined, "--backend"));
    const { model, manifest } = await loadModel(modelAt, { trainable: false });
    const { dataset, name } = await openSplit(data, split);
    if (dataset.classes.join() !== manifest.labels.join()) {
      throw new Error(
        `the data's classes (${dataset.classes.join(", ")}) are not the model's labels (${
          manifest.labels.join(", ")
        })`,
      );
    }
    const set = datasetImageSet(dataset, manifest.preprocessing);
    const indices = classBalancedSubset(dataset.labels, subset);
    const tty = Deno.stderr.isTerminal();
    const result = await evaluate(model, set, {
      indices,
      batchSize: batch,
      onProgress: (done, total) => {
        const line = `eval ${done}/${total} (${formatDuration((performance.now() - t0) / 1000)})`;
        if (tty) Deno.stderr.writeSync(new TextEncoder().encode(`\r${line}`));
        else if (done === total || done % 2000 < batch) console.error(line);
      },
    });
    if (tty) console.error("");
    model.dispose();
    const seconds = (performance.now() - t0) / 1000;
    console.log(`${name}, ${split}: ${result.n} images on ${describeBackend(backend)}`);
    console.log(
      `top-1 ${(100 * result.top1).toFixed(2)}%  top-5 ${(100 * result.top5).toFixed(2)}%  loss ${
        result.loss.toFixed(4)
      }`,
    );
    console.log(
      "per class: " +
        manifest.labels.map((l, i) => `${l} ${(100 * result.perClass[i]).toFixed(1)}%`).join(", "),
    );
    console.log(confusionText(result.confusion, manifest.labels));
    // int8 weights on onnx are another model's numbers: recorded apart (VIT_ONNX_WEIGHTS=int8).
    const recordKey = backend.engine === "onnx" && model.onnxWeights === "int8"
      ? "onnx-int8"
      : backend.engine;
    const recordPath = o.record as string | undefined;
    if (recordPath) {
      let record: Record<string, unknown> = {};
      try {
        record = JSON.parse(await Deno.readTextFile(recordPath));
      } catch (e) {
        if (!(e instanceof Deno.errors.NotFound)) throw new Error(`${recordPath}: ${(e as Error).message}`);
      }
      const correct = {
        ...(record.correct as Record<string, number> ?? {}),
        [recordKey]: Math.round(result.top1 * result.n),
      };
      const floor = o.floor as number | undefined;
      record = {
        subset: subset
          ? `${name}, ${split} split, the first ${perClassText(subset, manifest.labels.length)} images of ` +
            `each class by file name (${result.n} images)`
          : `${name}, ${split} split, all ${result.n} images`,
        n: result.n,
        correct,
        floor: floor !== undefined ? floor : record.floor ?? Math.floor(100 * result.top1 - 2) / 100,
        ...Object.fromEntries(
          Object.entries(record).filter(([k]) => !["subset", "n", "correct", "floor"].includes(k)),
        ),
      };
      await writeFileAtomic(recordPath, JSON.stringify(record, null, 1) + "\n");
      console.log(`recorded ${recordKey}: ${correct[recordKey]}/${result.n} in ${recordPath}`);
    }
    if (reportPath !== "-") {
      const svgPath = reportPath.replace(/\.md$/, "") + "_confusion.svg";
      const svgName = svgPath.split("/").pop()!;
      await Deno.mkdir(reportPath.split("/").slice(0, -1).join("/") || ".", { recursive: true });
      await writeFileAtomic(
        svgPath,
        confusionSvg(
          result.confusion,
          manifest.labels,
          `${name}, ${result.n} images: top-1 ${(100 * result.top1).toFixed(2)}%`,
        ),
      );
      const command = `deno task eval ${args.join(" ")}`;
      await writeFileAtomic(
        reportPath,
        evalReport(result, {
          model: modelAt,
          manifest,
          dataName: name,
          split,
          backend: describeBackend(backend),
          command,
          confusionSvg: svgName,
          seconds,
          date: new Date().toISOString().slice(0, 16).replace("T", " ") + " UTC",
        }),
      );
      console.log(`report: ${reportPath} (confusion matrix ${svgPath})`);
    }
  } catch (e) {
    console.error(`eval: ${(e as Error).message}`);
    if (Deno.env.get("VIT_DEBUG")) console.error(e);
    Deno.exit(1);
  }
}
