// Causal dense attention of a prefill chunk: T query rows (each with the g query heads of one KV head),
// row t over the first S0 + t + 1 rows of K, V (S0 rows held before the chunk, then the chunk's own).
//
// Calling attention* once per row streams K and V from memory T times; at long context that stream is
// most of the cost. Here K is taken a tile of rows (TILE_BYTES) at a time, and every query that sees
// part of the tile passes over it while it is in L1; then V the same way: K and V are read once per call.
//
// Bit for bit attention* with S = S0 + t + 1 for each row t. attend<T> (attention.ts) splits a
// query's S positions into blocks of 4 from position 0 (dotRows4, accumulateRows4) and a scalar tail
// of S mod 4 (dotRow, accumulateRow). Tiles start at multiples of 4, so within a tile a query runs
// exactly attend's loop over its rows there: blocks of 4, then, in the tile where its S positions end,
// its scalar tail. Each query's softmax is softmaxF32 over its own S0 + t + 1 scores, and its V sum
// runs over the same blocks and tail in the same order as in attend.
import { softmaxF32, dotRows4, dotRow, accumulateRows4, accumulateRow } from "./attention";

/**
 * Causal attention of T rows of g query heads over K, V (S0 + T, Hd) f32: query (t, h) is
 * q (T, qStride) at float t·qStride + h·Hd, out the same layout; it sees K, V rows 0 … S0 + t.
 * scores (T, g, S0 + T) scratch: row (t, h) holds that query's p in its first S0 + t + 1 floats
 * afterwards; the rest is not written.
 */
export function attentionCausalF32(
  out: usize, scores: usize, q: usize, k: usize, v: usize, S0: i32, T: i32, Hd: i32, g: i32, qStride: i32, scale: f32,
): void {
  attendCausal<f32>(out, scores, q, k, v, S0, T, Hd, g, qStride, scale);
}

/** attentionCausalF32 with K, V (S0 + T, Hd) in bf16; equal to it on the decoded values. */
export function attentionCausalBf16(
  out: usize, scores: usize, q: usize, k: usize, v: usize, S0: i32, T: i32, Hd: i32, g: i32, qStride: i32, scale: f32,
): void {
  attendCausal<u16>(out, scores, q, k, v, S0, T, Hd, g, qStride, scale);
}

/** Bytes of K (or V) rows per tile: the tile stays in L1 while every query that sees it passes over it. */
const TILE_BYTES: usize = 16384;

/** The body of attentionCausal*, K, V elements E (f32, or u16 holding bf16). */
// @ts-ignore: decorator
@inline function attendCausal<E>(
  out: usize, scores: usize, q: usize, k: usize, v: usize, S0: i32, T: i32, Hd: i32, g: i32, qStride: i32, scale: f32,
): void {
  const nS0 = <usize>S0, nT = <usize>T, nHd = <usize>Hd, nHeads = <usize>g;
  const nRows = nS0 + nT; // rows the last query sees
  const rowBytes = nHd * sizeof<E>(), headBytes = nHd << 2, strideBytes = <usize>qStride << 2;
  const scoreRowBytes = nRows << 2; // one (t, h) row of scores
  const tileRows = max<usize>(4, (TILE_BYTES / rowBytes) & ~3);

  // Step 1: scores (T, g, S0 + t + 1) = K q * scale, one tile of K rows at a time, passed over by every
  // query that sees part of it. Query t sees rows 0 … S0 + t, so part of tile [s0, s1) iff t ≥ s0 − S0.
  const scale4 = f32x4.splat(scale);
  for (let s0: usize = 0; s0 < nRows; s0 += tileRows) {
    const s1 = min(s0 + tileRows, nRows);
    for (let t = s0 > nS0 ? s0 - nS0 : 0; t < nT; t++) {
      const end = min(nS0 + t + 1, s1); // the query's rows in this tile: s0 … end − 1
      for (let h: usize = 0; h < nHeads; h++) {
        const qh = q + t * strideBytes + h * headBytes, p = scores + (t * nHeads + h) * scoreRowBytes;
        let s = s0;
        for (; s + 4 <= end; s += 4) {
          const k0 = k + s * rowBytes, k1 = k0 + rowBytes, k2 = k1 + rowBytes, k3 = k2 + rowBytes;
          v128.store(p + (s << 2), f32x4.mul(dotRows4<E>(qh, k0, k1, k2, k3, nHd), scale4));
        }
        for (; s < end; s++) store<f32>(p + (s << 2), dotRow<E>(qh, k + s * rowBytes, nHd) * scale);
      }
    }
  }

  // Step 2: softmax of each query's own S0 + t + 1 scores.
  for (let t: usize = 0; t < nT; t++) {
    for (let h: usize = 0; h < nHeads; h++) softmaxF32(scores + (t * nHeads + h) * scoreRowBytes, S0 + <i32>t + 1);
  }

  // Step 3: out (t, h) = Σ p_s V[s], one tile of V rows at a time, as in step 1.
  for (let t: usize = 0; t < nT; t++) memory.fill(out + t * strideBytes, 0, nHeads * headBytes);
  for (let s0: usize = 0; s0 < nRows; s0 += tileRows) {
    const s1 = min(s0 + tileRows, nRows);
    for (let t = s0 > nS0 ? s0 - nS0 : 0; t < nT; t++) {
      const end = min(nS0 + t + 1, s1);
      for (let h: usize = 0; h < nHeads; h++) {
        const oh = out + t * strideBytes + h * headBytes, p = scores + (t * nHeads + h) * scoreRowBytes;
        let s = s0;
        for (; s + 4 <= end; s += 4) {
          const v0 = v + s * rowBytes, v1 = v0 + rowBytes, v2 = v1 + rowBytes, v3 = v2 + rowBytes;
          accumulateRows4<E>(oh, v0, v1, v2, v3, p + (s << 2), nHd);
        }
        for (; s < end; s++) accumulateRow<E>(oh, v + s * rowBytes, load<f32>(p + (s << 2)), nHd);
      }
    }
  }
}
