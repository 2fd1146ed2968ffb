/**
 * Naming datasets for fine-tuning: a name is a relative path of plain segments under the configured data
 * root. Anything that could leave the root (`..`, absolute paths, backslashes, NUL, or a symlink pointing
 * outside) is refused before the file system is touched for reading.
 *
 * @module
 */
import { ServiceError } from "./errors.ts";

const SEGMENT = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/** Throws 400 `invalid_dataset_name` unless `name` is a safe relative name. */
export function checkDatasetName(name: unknown): string {
  const bad = (why: string) =>
    new ServiceError(
      "invalid",
      "invalid_dataset_name",
      `dataset name ${JSON.stringify(name)?.slice(0, 100)} is invalid: ${why}`,
    );
  if (typeof name !== "string" || name.length === 0) throw bad("expected a non-empty string");
  if (name.length > 512) throw bad("longer than 512 characters");
  if (name.startsWith("/") || name.includes("\\") || name.includes("\0")) {
    throw bad("it must be a relative name under the data root");
  }
  for (const seg of name.split("/")) {
    if (seg === "..") throw bad('".." would leave the data root');
    if (!SEGMENT.test(seg)) throw bad(`segment "${seg.slice(0, 40)}" must be letters, digits, ".", "_", "-"`);
  }
  return name;
}

/**
 * The real path of dataset `name` under `root`; 404 when it does not exist, 400 when (through a symlink)
 * it resolves outside the root.
 */
export async function resolveDataset(root: string | undefined, name: unknown): Promise<string> {
  const checked = checkDatasetName(name);
  if (!root) {
    throw new ServiceError(
      "invalid",
      "no_data_root",
      "the server has no data root configured (--data-root); upload an archive",
    );
  }
  const realRoot = await Deno.realPath(root).catch(() => {
    throw new ServiceError("internal", "data_root_missing", `the configured data root is not readable`);
  });
  let real: string;
  try {
    real = await Deno.realPath(`${realRoot}/${checked}`);
  } catch {
    throw new ServiceError(
      "not_found",
      "dataset_not_found",
      `dataset "${checked}" does not exist under the data root`,
    );
  }
  if (real !== realRoot && !real.startsWith(`${realRoot}/`)) {
    throw new ServiceError(
      "invalid",
      "invalid_dataset_name",
      `dataset "${checked}" resolves outside the data root`,
    );
  }
  if (!(await Deno.stat(real).catch(() => undefined))?.isDirectory) {
    throw new ServiceError(
      "invalid",
      "invalid_dataset",
      `dataset "${checked}" is not a folder; a dataset is a folder of class folders of images`,
    );
  }
  return real;
}
