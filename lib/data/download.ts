/**
 * Downloading a file with an MD5 check, streamed to disk and moved into place only when complete and
 * verified (a temporary sibling is written first), so an interrupted or corrupted download never looks
 * finished.
 *
 * @module
 */
import { createHash } from "node:crypto";

/** A failed download: HTTP error, network error or checksum mismatch. */
export class DownloadError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "DownloadError";
  }
}

/** MD5 of a file, hex, streamed. */
export async function md5File(path: string): Promise<string> {
  const h = createHash("md5");
  const f = await Deno.open(path, { read: true });
  for await (const chunk of f.readable) h.update(chunk);
  return h.digest("hex");
}

/**
 * Fetches `url` to `dest`. When `md5` is given the content must match it (else `DownloadError`, nothing
 * left at `dest`). `onProgress` gets the bytes so far and the announced total (0 when unknown).
 * Returns the size and MD5 of what was written.
 */
export async function downloadFile(
  url: string,
  dest: string,
  options: { md5?: string; onProgress?: (bytes: number, total: number) => void } = {},
): Promise<{ bytes: number; md5: string }> {
  let res: Response;
  try {
    res = await fetch(url);
  } catch (e) {
    throw new DownloadError(`${url}: ${(e as Error).message}`, { cause: e });
  }
  if (!res.ok || !res.body) {
    await res.body?.cancel();
    throw new DownloadError(`${url}: HTTP ${res.status} ${res.statusText}`);
  }
  const total = Number(res.headers.get("content-length") ?? 0);
  const tmp = `${dest}.part-${Deno.pid}-${crypto.randomUUID().slice(0, 8)}`;
  const h = createHash("md5");
  let bytes = 0;
  const file = await Deno.open(tmp, { write: true, create: true, truncate: true });
  try {
    try {
      for await (const chunk of res.body) {
        h.update(chunk);
        bytes += chunk.length;
        let off = 0;
        while (off < chunk.length) off += await file.write(chunk.subarray(off));
        options.onProgress?.(bytes, total);
      }
    } finally {
      file.close();
    }
    if (total && bytes !== total) throw new DownloadError(`${url}: got ${bytes} of ${total} bytes`);
    const md5 = h.digest("hex");
    if (options.md5 && md5 !== options.md5.toLowerCase()) {
      throw new DownloadError(`${url}: MD5 ${md5} does not match the expected ${options.md5}`);
    }
    await Deno.rename(tmp, dest);
    return { bytes, md5 };
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    if (e instanceof DownloadError) throw e;
    throw new DownloadError(`${url}: ${(e as Error).message}`, { cause: e });
  }
}
