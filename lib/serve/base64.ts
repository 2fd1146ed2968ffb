/**
 * Base64 encoding of bytes (for JSON image uploads, tests and the load test), in chunks so large images do
 * not overflow the argument limit of `String.fromCharCode`.
 *
 * @module
 */

/** Standard base64 of `bytes`. */
export function encodeBase64(bytes: Uint8Array): string {
  let bin = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    bin += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(bin);
}
