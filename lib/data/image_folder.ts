/**
 * Image-file datasets on disk, decoded on demand:
 * - class folders, `root/<class>/<file>` (torchvision's ImageFolder): labels are the indices of the sorted
 *   class-folder names, samples are ordered by class then file name — e.g. the CIFAR-10 JPEG copy
 *   `train/airplane/0000.jpg`;
 * - flat folders of `<label>_<n>.<ext>` files, where `<label>` is a class name or a class index.
 *
 * Names sort by code point (not locale) so every machine sees the same order. Files whose extension is not
 * .jpg/.jpeg/.png/.webp and hidden entries (".…") are ignored.
 *
 * @module
 */
import { checkIndex, type Dataset, type Sample } from "./dataset.ts";
import { decodeImage } from "./decode.ts";

/** Extensions read as images. */
export const IMAGE_EXTENSIONS = [".jpg", ".jpeg", ".png", ".webp"];

/** Options shared by the folder readers. */
export interface FolderOptions {
  /** Passed to `decodeImage`: largest accepted width·height. */
  maxPixels?: number;
}

function isImage(name: string): boolean {
  const lower = name.toLowerCase();
  return !name.startsWith(".") && IMAGE_EXTENSIONS.some((e) => lower.endsWith(e));
}

const byCodePoint = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

async function listDir(dir: string): Promise<Deno.DirEntry[]> {
  const out: Deno.DirEntry[] = [];
  try {
    for await (const e of Deno.readDir(dir)) out.push(e);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new Error(`dataset folder ${dir} does not exist`);
    throw e;
  }
  return out.sort((a, b) => byCodePoint(a.name, b.name));
}

/** A dataset of image files with known labels. */
export class ImageFileDataset implements Dataset {
  readonly length: number;
  readonly classes: readonly string[];
  readonly labels: Int32Array;
  /** Every sample's file path, in sample order. */
  readonly files: readonly string[];
  #maxPixels?: number;

  constructor(files: string[], labels: Int32Array, classes: readonly string[], options: FolderOptions = {}) {
    if (files.length !== labels.length) throw new Error(`${files.length} files but ${labels.length} labels`);
    this.files = files;
    this.labels = labels;
    this.classes = classes;
    this.length = files.length;
    this.#maxPixels = options.maxPixels;
  }

  async get(i: number): Promise<Sample> {
    checkIndex(i, this.length, "image dataset");
    const path = this.files[i];
    const bytes = await Deno.readFile(path);
    const image = await decodeImage(bytes, { source: path, maxPixels: this.#maxPixels });
    return { image, label: this.labels[i] };
  }

  describe(i: number): string {
    return this.files[i] ?? `sample ${i}`;
  }
}

/**
 * Reads `root/<class>/<image>`: one sub-folder per class (sorted names = labels 0..k-1). Throws when there
 * is no class folder or no image.
 */
export async function openImageFolder(root: string, options: FolderOptions = {}): Promise<ImageFileDataset> {
  const classes = (await listDir(root)).filter((e) => e.isDirectory && !e.name.startsWith(".")).map((e) =>
    e.name
  );
  if (classes.length === 0) {
    throw new Error(`${root}: no class sub-folders (expected ${root}/<class>/<image>)`);
  }
  const files: string[] = [];
  const labels: number[] = [];
  for (let c = 0; c < classes.length; c++) {
    for (const e of await listDir(`${root}/${classes[c]}`)) {
      if (!e.isFile || !isImage(e.name)) continue;
      files.push(`${root}/${classes[c]}/${e.name}`);
      labels.push(c);
    }
  }
  if (files.length === 0) {
    throw new Error(`${root}: the class folders hold no ${IMAGE_EXTENSIONS.join("/")} file`);
  }
  return new ImageFileDataset(files, Int32Array.from(labels), classes, options);
}

/**
 * Reads a flat folder of `<label>_<n>.<ext>` files (the label is everything before the last underscore).
 * Labels that are all integers are class indices (classes named by `classes`, else "0".."max"); otherwise
 * they are class names (sorted unique names, or looked up in `classes`). Samples are ordered by label, then
 * by `n` numerically, then by name.
 */
export async function openFlatFolder(
  dir: string,
  options: FolderOptions & { classes?: readonly string[] } = {},
): Promise<ImageFileDataset> {
  const entries: { name: string; label: string; n: number }[] = [];
  for (const e of await listDir(dir)) {
    if (!e.isFile || !isImage(e.name)) continue;
    const m = /^(.+)_(\d+)\.[^.]+$/.exec(e.name);
    if (!m) throw new Error(`${dir}/${e.name}: expected a file named <label>_<number>.<ext>`);
    entries.push({ name: e.name, label: m[1], n: Number(m[2]) });
  }
  if (entries.length === 0) throw new Error(`${dir}: no <label>_<n> image files`);
  const numeric = entries.every((e) => /^\d+$/.test(e.label));
  let classes: readonly string[];
  let labelOf: (s: string) => number;
  if (numeric) {
    const max = Math.max(...entries.map((e) => Number(e.label)));
    classes = options.classes ?? Array.from({ length: max + 1 }, (_, i) => String(i));
    labelOf = Number;
  } else {
    classes = options.classes ?? [...new Set(entries.map((e) => e.label))].sort(byCodePoint);
    const index = new Map(classes.map((c, i) => [c, i]));
    labelOf = (s) => index.get(s) ?? -1;
  }
  const rows = entries.map((e) => ({ ...e, k: labelOf(e.label) }));
  const bad = rows.find((r) => r.k < 0 || r.k >= classes.length);
  if (bad) {
    throw new Error(`${dir}/${bad.name}: label "${bad.label}" is not one of the ${classes.length} classes`);
  }
  rows.sort((a, b) => a.k - b.k || a.n - b.n || byCodePoint(a.name, b.name));
  return new ImageFileDataset(
    rows.map((r) => `${dir}/${r.name}`),
    Int32Array.from(rows.map((r) => r.k)),
    classes,
    options,
  );
}
