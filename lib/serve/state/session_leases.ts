/**
 * The fine-tuning session limit across every server process that shares a state dir (the workers of
 * `deno serve --parallel`, or several `deno task serve` on one state dir): each queued or running session
 * holds a lease, a file `<state-dir>/sessions/active/<session-id>.json` naming its owner process. A lease is
 * only taken under an exclusive lock on `active/.lock` (`flock`, which the OS releases when its holder
 * exits, so the lock itself never goes stale), after counting the live leases and removing the stale ones:
 * those whose owner process is gone (see `liveness.ts`) and those whose session record says it ended. A
 * lease also reserves the id of the model its session will register, so two processes never train two
 * models under one id.
 *
 * @module
 */
import { writeFileAtomic } from "../../util/fs.ts";
import { processAlive, removeOrphans, SELF, TEMP_SIBLING } from "./liveness.ts";

/** One lease file's content. */
export interface Lease {
  session: string;
  /** The id of the model the session registers when it succeeds. */
  model_id?: string;
  owner: { pid: number; start?: number };
  created: string;
}

/** The leases of one state dir. */
export class SessionLeases {
  /**
   * @param dir `<state-dir>/sessions/active`.
   * @param ended Whether a session's record says it ended (a lease left behind by it is stale).
   */
  constructor(readonly dir: string, readonly ended: (session: string) => Promise<boolean>) {}

  /** The live leases; stale leases are removed when `clean` (only under the lock). */
  async #live(clean: boolean): Promise<Lease[]> {
    let names: string[];
    try {
      names = [...Deno.readDirSync(this.dir)].filter((e) => e.isFile && e.name.endsWith(".json"))
        .map((e) => e.name);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return [];
      throw e;
    }
    const live: Lease[] = [];
    for (const name of names) {
      let lease: Lease | undefined;
      try {
        lease = JSON.parse(await Deno.readTextFile(`${this.dir}/${name}`));
      } catch (e) {
        if (e instanceof Deno.errors.NotFound) continue; // released meanwhile
        // Written atomically, so unreadable means edited by hand: not a lease this code can honour.
      }
      const stale = !lease || typeof lease.session !== "string" || typeof lease.owner?.pid !== "number" ||
        !processAlive(lease.owner.pid, lease.owner.start) || await this.ended(lease.session);
      if (!stale) live.push(lease!);
      else if (clean) await Deno.remove(`${this.dir}/${name}`).catch(() => {});
    }
    return live;
  }

  /**
   * Whether a live lease reserves model id `modelId` (read without the lock; see `ModelRegistry.register`).
   */
  async reserves(modelId: string): Promise<boolean> {
    return (await this.#live(false)).some((l) => l.model_id === modelId);
  }

  /** How many sessions hold a live lease now (read without the lock: an estimate for a quick refusal). */
  async count(): Promise<number> {
    return (await this.#live(false)).length;
  }

  /**
   * Takes a lease for `session` (reserving `modelId`) unless another live lease reserves `modelId`
   * (`reserved`) or `max` sessions hold one already. Returns whether it was taken and how many leases were
   * live before.
   */
  async acquire(
    session: string,
    max: number,
    modelId?: string,
  ): Promise<{ ok: boolean; active: number; reserved?: boolean }> {
    return await this.#locked(async (live) => {
      if (modelId !== undefined && live.some((l) => l.model_id === modelId)) {
        return { ok: false, active: live.length, reserved: true };
      }
      if (live.length >= max) return { ok: false, active: live.length };
      await this.#write(session, modelId);
      return { ok: true, active: live.length };
    });
  }

  /**
   * Makes `session`'s lease (taken by `acquire` before the model id was known) reserve `modelId`, unless
   * another live lease reserves it. Returns whether it does now.
   */
  async claimModel(session: string, modelId: string): Promise<boolean> {
    return await this.#locked(async (live) => {
      if (live.some((l) => l.session !== session && l.model_id === modelId)) return false;
      await this.#write(session, modelId);
      return true;
    });
  }

  async #write(session: string, modelId: string | undefined): Promise<void> {
    const lease: Lease = {
      session,
      ...(modelId !== undefined ? { model_id: modelId } : {}),
      owner: { ...SELF },
      created: new Date().toISOString(),
    };
    await writeFileAtomic(`${this.dir}/${session}.json`, JSON.stringify(lease) + "\n");
  }

  /** Runs `fn` on the live leases under the exclusive lock, stale leases removed first. */
  async #locked<T>(fn: (live: Lease[]) => Promise<T>): Promise<T> {
    await Deno.mkdir(this.dir, { recursive: true });
    const lock = await Deno.open(`${this.dir}/.lock`, { create: true, write: true });
    try {
      await lock.lock(true);
      await removeOrphans(this.dir, TEMP_SIBLING);
      return await fn(await this.#live(true));
    } finally {
      // Closing the file releases the lock.
      lock.close();
    }
  }

  /** Gives a session's lease back (no error when it holds none). */
  async release(session: string): Promise<void> {
    await Deno.remove(`${this.dir}/${session}.json`).catch((e) => {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    });
  }
}
