/**
 * Whether a path exists, for the places that choose between reading and creating. Only "not found" means no:
 * any other failure (permissions, I/O) is thrown, so it is not mistaken for an absent file.
 *
 * @module
 */

/** True when something exists at `path`; false when it does not; throws on any other error. */
export async function pathExists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}
