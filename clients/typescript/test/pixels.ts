// Pixel comparison shared by the suites: decoder rounding allows |diff| <= 1, on fewer than 0.5% of values.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { PNG } from "pngjs";

/** Asserts a PNG decodes to the pixels of the PNG file `expectedFile`: |diff| <= 1 everywhere and > 0 on < 0.5% of values. */
export function assertSamePixels(actual: Uint8Array, expectedFile: string): void {
  const a = PNG.sync.read(Buffer.from(actual));
  const e = PNG.sync.read(readFileSync(expectedFile));
  assert.equal(a.width, e.width);
  assert.equal(a.height, e.height);
  let differing = 0;
  let maxDiff = 0;
  for (let i = 0; i < e.data.length; i++) {
    const d = Math.abs(a.data[i]! - e.data[i]!);
    if (d > 0) differing++;
    maxDiff = Math.max(maxDiff, d);
  }
  assert.ok(maxDiff <= 1, `max |diff| ${maxDiff} > 1`);
  assert.ok(differing / e.data.length < 0.005, `${differing} of ${e.data.length} values differ`);
}
