/**
 * Models registered at runtime by URL (`POST /v1/models`), persisted one file per model as
 * `<state-dir>/registered/<id>.json` (`{id, location, registered_at}`), so that a restarted server, and
 * every worker of `deno serve --parallel` sharing the state dir, serves them too. A record is created
 * atomically and only if none exists (two processes registering one id at once: exactly one wins);
 * `DELETE /v1/models/:id` removes it. Each record's file identity (inode, mtime, size) is its version: a
 * process serving a registered model compares it to tell that another process removed or replaced the
 * registration.
 *
 * @module
 */
import { createFileAtomic } from "../../util/fs.ts";
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

const FILE_RE = /^([A-Za-z0-9][A-Za-z0-9._-]{0,63})\.json$/;

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
    const record: Registration = { id: reg.id, location: reg.location, registered_at: reg.registered_at };
    await createFileAtomic(this.path(reg.id), JSON.stringify(record, null, 1) + "\n");
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

  /** Removes the registration of `id`; false when there was none. */
  async remove(id: string): Promise<boolean> {
    try {
      await Deno.remove(this.path(id));
      return true;
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return false;
      throw e;
    }
  }

  /**
   * Every registration, by id, and the records that cannot be used. Temporary files left by a process that
   * died while registering are removed.
   */
  async list(): Promise<Array<StoredRegistration | BrokenRegistration>> {
    let names: string[];
    try {
      names = [...Deno.readDirSync(this.dir)].filter((e) => e.isFile).map((e) => e.name);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return [];
      throw e;
    }
    await removeOrphans(this.dir, TEMP_SIBLING);
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
