/**
 * Models registered at runtime by URL (`POST /v1/models`), persisted one file per model as
 * `<state-dir>/registered/<id>.json` (`{id, location, registered_at}`), so that a restarted server, and
 * every worker of `deno serve --parallel` sharing the state dir, serves them too. A record is created
 * atomically and only if none exists (two processes registering one id at once: exactly one wins);
 * `DELETE /v1/models/:id` removes it. Each record's file identity (inode, mtime, size) is its version: a
 * process serving a registered model compares it to tell that another process removed or replaced the
 * registration.
 *
 * Beside each record, `<id>.files/` keeps a copy of the model's files as they were fetched (`model/`) with
 * the registration they belong to (`registration.json`), so that a restart serves the model without its URL
 * (and, on the onnx engine, from the engine cache entry of a local folder). A copy is written (as soon as the
 * files are fetched, possibly before its record exists) into a temporary folder of its process, and put in
 * place whole only while its registration is the current record; it is used only while it belongs to the
 * current record, and removed with it. The suffix keeps copies and records apart (the copy of id `a.json` is
 * `a.json.files/`, never the record of id `a`).
 *
 * @module
 */
import { createFileAtomic, stageDir } from "../../util/fs.ts";
import { type ModelFiles, writeModelFiles } from "../../weights/load.ts";
import { MODEL_ID_PATTERN } from "../model_id.ts";
import { removeOrphans, TEMP_SIBLING } from "./liveness.ts";

/** One persisted registration. */
export interface Registration {
  id: string;
  /** The http(s) URL of the converted model folder. */
  location: string;
  /** When it was registered (ISO 8601). */
  registered_at: string;
}

/** A registration as read from disk, with the version of its file. */
export interface StoredRegistration {
  registration: Registration;
  version: string;
}

/** A record that exists but cannot be used (not JSON, wrong fields). */
export interface BrokenRegistration {
  id: string;
  error: string;
}

/** A copy of a registered model's files, written but not in place until its record exists. */
export interface StagedCopy {
  /**
   * Puts the copy in place, replacing the id's copy, if its registration is the current record (else drops
   * it); then removes it again if the registration was removed or replaced meanwhile (a `DELETE`, in any
   * process, racing the registration).
   */
  keep(): Promise<void>;
  /** Drops the copy (a no-op after `keep`). */
  discard(): Promise<void>;
}

const FILE_RE = new RegExp(`^(${MODEL_ID_PATTERN})\\.json$`);
const COPY_RE = new RegExp(`^(${MODEL_ID_PATTERN})\\.files$`);

/** The file in a copy's folder that says which registration it belongs to. */
const COPY_RECORD = "registration.json";

function sameRegistration(a: Registration, b: Partial<Registration>): boolean {
  return a.id === b.id && a.location === b.location && a.registered_at === b.registered_at;
}

/** A registration as its record (and a copy's `registration.json`) holds it: these three fields only. */
function recordText(r: Registration): string {
  return JSON.stringify({ id: r.id, location: r.location, registered_at: r.registered_at }, null, 1) + "\n";
}

function versionOf(info: Deno.FileInfo): string {
  return `${info.ino ?? ""}:${info.mtime?.getTime() ?? ""}:${info.size}`;
}

/** The registration records of one state dir. */
export class RegistrationStore {
  /** @param dir `<state-dir>/registered` (created on the first write). */
  constructor(readonly dir: string) {}

  /** The record's path for model `id` (a valid model id). */
  path(id: string): string {
    return `${this.dir}/${id}.json`;
  }

  /**
   * Persists a new registration; returns its version. Throws `Deno.errors.AlreadyExists` when `id` is
   * registered already (by this or another process).
   */
  async create(reg: Registration): Promise<string> {
    await Deno.mkdir(this.dir, { recursive: true });
    await createFileAtomic(this.path(reg.id), recordText(reg));
    return versionOf(await Deno.stat(this.path(reg.id)));
  }

  /** The record's version, or undefined when `id` is not registered. */
  async version(id: string): Promise<string | undefined> {
    try {
      return versionOf(await Deno.stat(this.path(id)));
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return undefined;
      throw e;
    }
  }

  /**
   * The registration of `id`, or undefined when there is none. Throws, naming the file and what was
   * expected, when the record cannot be used.
   */
  async read(id: string): Promise<StoredRegistration | undefined> {
    const path = this.path(id);
    let version: string, text: string;
    try {
      version = versionOf(await Deno.stat(path));
      text = await Deno.readTextFile(path);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return undefined;
      throw e;
    }
    let json: Partial<Registration>;
    try {
      json = JSON.parse(text);
    } catch (e) {
      throw new Error(`${path}: not valid JSON (${(e as Error).message})`);
    }
    if (
      typeof json !== "object" || json === null || json.id !== id || typeof json.location !== "string" ||
      !/^https?:\/\//i.test(json.location) || typeof json.registered_at !== "string"
    ) {
      throw new Error(
        `${path}: expected {"id": "${id}", "location": "<http(s) URL>", "registered_at": "<ISO time>"}`,
      );
    }
    return {
      registration: { id, location: json.location, registered_at: json.registered_at },
      version,
    };
  }

  /** Removes the registration of `id`, then its copy; false when there was no registration. */
  async remove(id: string): Promise<boolean> {
    let removed = true;
    try {
      await Deno.remove(this.path(id));
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
      removed = false;
    }
    await this.#removeCopy(id);
    return removed;
  }

  #copyPath(id: string): string {
    return `${this.dir}/${id}.files`;
  }

  /**
   * The model folder of the copy kept for registration `r`, or undefined when there is none or it belongs to
   * another registration of the id (an earlier one, or a newer one than `r`).
   */
  async copyOf(r: Registration): Promise<string | undefined> {
    try {
      const kept = JSON.parse(await Deno.readTextFile(`${this.#copyPath(r.id)}/${COPY_RECORD}`));
      return sameRegistration(r, kept ?? {}) ? `${this.#copyPath(r.id)}/model` : undefined;
    } catch {
      // Missing, being replaced by another process, or unreadable: the model is fetched from its URL again.
      return undefined;
    }
  }

  /**
   * Writes `files` (read from `r.location`) as the copy of registration `r`, to be put in place by `keep`
   * once `r`'s record exists (replacing any other copy of the id whole), or dropped by `discard`.
   */
  async stageCopy(r: Registration, files: ModelFiles): Promise<StagedCopy> {
    await Deno.mkdir(this.dir, { recursive: true });
    const staged = await stageDir(this.#copyPath(r.id), async (tmp) => {
      await writeModelFiles(`${tmp}/model`, files);
      await Deno.writeTextFile(`${tmp}/${COPY_RECORD}`, recordText(r));
    });
    return {
      keep: async () => {
        if (!(await this.#isCurrent(r))) return await staged.discard();
        await staged.commit();
        if (!(await this.#isCurrent(r)) && await this.copyOf(r)) await this.#removeCopy(r.id);
      },
      discard: () => staged.discard(),
    };
  }

  /** Whether `r` is the id's current record. */
  async #isCurrent(r: Registration): Promise<boolean> {
    const stored = await this.read(r.id).catch(() => undefined);
    return stored !== undefined && sameRegistration(r, stored.registration);
  }

  /** Removes `id`'s copy; a failure is only logged (the copy is removed again at the next start). */
  async #removeCopy(id: string): Promise<void> {
    try {
      await Deno.remove(this.#copyPath(id), { recursive: true });
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return;
      console.error(`serve: the copy of registered model "${id}" was not removed: ${(e as Error).message}`);
    }
  }

  /**
   * Every registration, by id, and the records that cannot be used. Temporary files left by a process that
   * died while registering are removed, and so are copies whose registration is gone (a process that died
   * between removing a record and its copy, or wrote a copy after another removed the record).
   */
  async list(): Promise<Array<StoredRegistration | BrokenRegistration>> {
    let entries: Deno.DirEntry[];
    try {
      entries = [...Deno.readDirSync(this.dir)];
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return [];
      throw e;
    }
    await removeOrphans(this.dir, TEMP_SIBLING);
    const names = entries.filter((e) => e.isFile).map((e) => e.name);
    for (const e of entries) {
      const id = e.isDirectory ? COPY_RE.exec(e.name)?.[1] : undefined;
      // A record that cannot be read is kept, and so is its copy. (A worker that registers the id between the
      // check and the removal loses its fresh copy: that costs one fetch at a later start.)
      if (id && !(await this.version(id).then((v) => v !== undefined, () => true))) {
        await this.#removeCopy(id);
      }
    }
    const out: Array<StoredRegistration | BrokenRegistration> = [];
    for (const name of names.sort()) {
      const id = FILE_RE.exec(name)?.[1];
      if (!id) continue;
      try {
        const stored = await this.read(id);
        if (stored) out.push(stored);
      } catch (e) {
        out.push({ id, error: (e as Error).message });
      }
    }
    return out;
  }
}
