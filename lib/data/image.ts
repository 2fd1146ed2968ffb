/**
 * The one in-memory image type of the data layer: 8-bit RGB, row-major, channels last (HWC), as decoded
 * from a file and before any resizing or normalisation.
 *
 * @module
 */

/** An 8-bit RGB image: `data[(y * width + x) * 3 + c]`, c = 0 (R), 1 (G), 2 (B). */
export interface RgbImage {
  width: number;
  height: number;
  data: Uint8Array;
}

/** Throws unless `img` is a consistent RgbImage (positive integer size, `data` of width·height·3 bytes). */
export function checkRgbImage(img: RgbImage, what = "image"): void {
  const { width, height, data } = img;
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw new Error(`${what}: size ${width}x${height} is not a positive integer size`);
  }
  if (!(data instanceof Uint8Array) || data.length !== width * height * 3) {
    throw new Error(
      `${what}: expected ${width * height * 3} bytes of RGB data for ${width}x${height}, got ${
        data instanceof Uint8Array ? data.length : typeof data
      }`,
    );
  }
}

/** Image `index` of an NHWC uint8 batch (`[n, h, w, 3]`, e.g. the fixtures' `raw_u8_nhwc`), copied. */
export function imageFromNhwc(batch: ArrayLike<number>, shape: readonly number[], index: number): RgbImage {
  const [n, height, width, c] = shape;
  if (shape.length !== 4 || c !== 3) throw new Error(`expected an NHWC batch [n, h, w, 3], got [${shape}]`);
  if (index < 0 || index >= n) throw new Error(`image ${index} is outside the batch of ${n}`);
  const size = height * width * 3;
  const data = new Uint8Array(size);
  for (let i = 0; i < size; i++) data[i] = batch[index * size + i];
  return { width, height, data };
}
