// Kernels for a KV cache held in ggml's 32-value blocks (the q8_0 / q4_0 cache types of llama.cpp's
// --cache-type-k / --cache-type-v). A K or V row of Hd values (Hd a multiple of 32) is Hd/32 blocks:
//   q8_0  34 B: f16 d, 32 int8 q                                                      x_e = d·q_e
//   q4_0  18 B: f16 d, 16 B of codes c (e < 16: low nibble of byte e, else high nibble of byte e − 16)
//                                                                                     x_e = (c_e − 8)·d
// Rows follow one another (row s at k + s·rowBytes; q4_0 rows are not 4-byte aligned). Each value d·q
// is exact in f32, so "the dequantised cache" is well defined, and every kernel here and in
// kv-quant-sparq.ts is one of attention.ts / attention-causal.ts / sparq.ts on it, bit for bit, except
// the attention scores q·K, which are integer block dots as in llama.cpp's CPU flash attention: q is
// quantised to q8_0 (the vec-dot type of both formats) and row s's score is matvecQ8_0 / matvecQ4_0 of
// it (dotRows4Q8_0, quants-32.ts's dotRows4).
//
// attention*, attendRows*, attentionCausal* keep attention.ts's steps and loop structure:
//   Step 0: qq = q8_0(q), per head (into the caller's scratch)
//   Step 1: scores (g, S) = K qq * scale, 4 rows per call for every head, each row's dot the matvec's
//   Step 2: p = softmaxF32(scores), in place
//   Step 3: out (g, Hd) = Σ_s p_s V[s], 4 rows at a time, then 1: accumulateRows4 / accumulateRow's f32
//           operations on V dequantised in registers, each 8 dequantised values serving every head.
// SparQ's scores over such a cache are in kv-quant-sparq.ts.
import { quantizeQ8_0, dotQ8_0, dotRows4Q8_0 } from "./q8_0";
import { dotRow as dotRowQ4, dotRows4 as dotRows4Q4 } from "./quants-32";
import { softmaxF32 } from "./attention";
import { f16ToF32, f32ToF16 } from "./convert";

/** Bytes of a q4_0 / q8_0 block, and of the q8_0 query blocks. */
// @ts-ignore: decorator
@inline export function blockBytes(q4: bool): usize { return q4 ? 18 : 34; }
const QQ_BLOCK_BYTES: usize = 34;

// ---- quantiser ----

/**
 * out (n/32 blocks of 18 bytes) = q4_0(x (n)), ggml's quantize_row_q4_0_ref: m = the first x of largest
 * |x| (NaN never), d = m / −8 (stored as f16), id = d ≠ 0 ? f32(1/d) : 0, code = min(15, trunc(x·id + 8.5))
 * with x·id + 8.5 rounded once (as ggml built with FMA contraction; src/memory/quants.ts does the same):
 * computed in f64, where x·id is exact, so the one rounding is that of the sum.
 */
export function quantizeQ4_0(out: usize, x: usize, n: i32): void {
  const nb = <usize>n >> 5;
  for (let b: usize = 0; b < nb; b++) {
    const xb = x + (b << 7), ob = out + b * 18;
    let amax: f32 = 0, m: f32 = 0;
    for (let o: usize = 0; o < 128; o += 4) {
      const v = load<f32>(xb + o);
      if (amax < abs(v)) {
        amax = abs(v);
        m = v;
      }
    }
    const d: f32 = m / -8;
    const id = f64x2.splat(d != 0 ? <f64>(<f32>1 / d) : 0), half = f64x2.splat(8.5);
    store<u16>(ob, <u16>f32ToF16(d));
    // Byte e: code of x_e in the low nibble, of x_(e+16) in the high one.
    const p0 = v128.or(codes4(v128.load(xb), id, half), i32x4.shl(codes4(v128.load(xb, 64), id, half), 4));
    const p1 = v128.or(codes4(v128.load(xb, 16), id, half), i32x4.shl(codes4(v128.load(xb, 80), id, half), 4));
    const p2 = v128.or(codes4(v128.load(xb, 32), id, half), i32x4.shl(codes4(v128.load(xb, 96), id, half), 4));
    const p3 = v128.or(codes4(v128.load(xb, 48), id, half), i32x4.shl(codes4(v128.load(xb, 112), id, half), 4));
    v128.store(ob + 2, i8x16.narrow_i16x8_u(i16x8.narrow_i32x4_s(p0, p1), i16x8.narrow_i32x4_s(p2, p3)));
  }
}

/** min(15, trunc(x·id + half)) & 15 for 4 f32 x, in f64 (NaN → 0, ±inf saturate: 15 and 0, as quants.ts). */
// @ts-ignore: decorator
@inline function codes4(x: v128, id: v128, half: v128): v128 {
  const lo = f64x2.add(f64x2.mul(f64x2.promote_low_f32x4(x), id), half);
  const hi = f64x2.add(f64x2.mul(f64x2.promote_low_f32x4(i32x4.shuffle(x, x, 2, 3, 2, 3)), id), half);
  const c = i32x4.shuffle(i32x4.trunc_sat_f64x2_s_zero(lo), i32x4.trunc_sat_f64x2_s_zero(hi), 0, 1, 4, 5);
  return v128.and(i32x4.min_s(c, i32x4.splat(15)), i32x4.splat(15));
}

// ---- attention ----

/**
 * Dense attention of g query heads over S rows of K, V q8_0: q, out (g, Hd) f32; scores (g, S) holds p
 * afterwards; qq scratch of g·(Hd/32)·34 bytes (holds q8_0(q) afterwards).
 */
export function attentionQ8_0(
  out: usize, scores: usize, q: usize, k: usize, v: usize, S: i32, Hd: i32, g: i32, scale: f32, qq: usize,
): void {
  attend(out, scores, q, k, v, 0, false, S, Hd, g, scale, qq, false);
}

/** attentionQ8_0 with K, V q4_0. */
export function attentionQ4_0(
  out: usize, scores: usize, q: usize, k: usize, v: usize, S: i32, Hd: i32, g: i32, scale: f32, qq: usize,
): void {
  attend(out, scores, q, k, v, 0, false, S, Hd, g, scale, qq, true);
}

/** attentionQ8_0 over the rows idx (n) (i32, any order) of K, V: equal to it on those rows gathered in idx order. */
export function attendRowsQ8_0(
  out: usize, scores: usize, q: usize, k: usize, v: usize, idx: usize, n: i32, Hd: i32, g: i32, scale: f32, qq: usize,
): void {
  attend(out, scores, q, k, v, idx, true, n, Hd, g, scale, qq, false);
}

/** attendRowsQ8_0 with K, V q4_0. */
export function attendRowsQ4_0(
  out: usize, scores: usize, q: usize, k: usize, v: usize, idx: usize, n: i32, Hd: i32, g: i32, scale: f32, qq: usize,
): void {
  attend(out, scores, q, k, v, idx, true, n, Hd, g, scale, qq, true);
}

/**
 * The body of attention* and attendRows*: row s is idx[s] when `gathered`, else s; q4 picks the format
 * (both constants at every call).
 */
// @ts-ignore: decorator
@inline function attend(
  out: usize, scores: usize, q: usize, k: usize, v: usize, idx: usize, gathered: bool, n: i32, Hd: i32, g: i32,
  scale: f32, qq: usize, q4: bool,
): void {
  const nRows = <usize>n, nHeads = <usize>g, nb = <usize>Hd >> 5;
  const rowBytes = nb * blockBytes(q4), qqBytes = nb * QQ_BLOCK_BYTES;
  const headBytes = <usize>Hd << 2, scoreRowBytes = nRows << 2;

  // Step 0: qq (g, Hd/32 blocks) = q8_0(q); a head's Hd values are whole blocks.
  quantizeQ8_0(qq, q, Hd * g);
  if (gathered) touchRows(k, v, idx, nRows, rowBytes);

  // Step 1: scores (g, n), each block of 4 K rows dotted with every head's qq before the next block.
  const scale4 = f32x4.splat(scale);
  let s: usize = 0;
  for (; s + 4 <= nRows; s += 4) {
    const k0 = k + rowOf(idx, s, gathered) * rowBytes, k1 = k + rowOf(idx, s + 1, gathered) * rowBytes;
    const k2 = k + rowOf(idx, s + 2, gathered) * rowBytes, k3 = k + rowOf(idx, s + 3, gathered) * rowBytes;
    scoreRows4(scores + (s << 2), scoreRowBytes, qq, qqBytes, k0, k1, k2, k3, nb, nHeads, scale4, q4);
  }
  for (; s < nRows; s++) {
    scoreRow(scores + (s << 2), scoreRowBytes, qq, qqBytes, k + rowOf(idx, s, gathered) * rowBytes, nb, nHeads, scale, q4);
  }

  // Step 2: softmax of each head's row.
  for (let h: usize = 0; h < nHeads; h++) softmaxF32(scores + h * scoreRowBytes, n);

  // Step 3: out[h] = Σ p[h]_s V[s], each block of 4 V rows added into every head's out.
  memory.fill(out, 0, nHeads * headBytes);
  s = 0;
  for (; s + 4 <= nRows; s += 4) {
    const v0 = v + rowOf(idx, s, gathered) * rowBytes, v1 = v + rowOf(idx, s + 1, gathered) * rowBytes;
    const v2 = v + rowOf(idx, s + 2, gathered) * rowBytes, v3 = v + rowOf(idx, s + 3, gathered) * rowBytes;
    accumulateRows4(out, headBytes, scores + (s << 2), scoreRowBytes, v0, v1, v2, v3, nb, nHeads, q4);
  }
  for (; s < nRows; s++) {
    accumulateRow(out, headBytes, scores + (s << 2), scoreRowBytes, v + rowOf(idx, s, gathered) * rowBytes, nb, nHeads, q4);
  }
}

/**
 * Causal attention of a prefill chunk over K, V (S0 + T rows) q8_0, layouts as attentionCausalF32:
 * query (t, h) at float t·qStride + h·Hd of q and out; scores (T, g, S0 + T), row (t, h) holding its p
 * in its first S0 + t + 1 floats. qq scratch of T·g·(Hd/32)·34 bytes (every query's q8_0 blocks).
 */
export function attentionCausalQ8_0(
  out: usize, scores: usize, q: usize, k: usize, v: usize, S0: i32, T: i32, Hd: i32, g: i32, qStride: i32, scale: f32,
  qq: usize,
): void {
  attendCausal(out, scores, q, k, v, S0, T, Hd, g, qStride, scale, qq, false);
}

/** attentionCausalQ8_0 with K, V q4_0. */
export function attentionCausalQ4_0(
  out: usize, scores: usize, q: usize, k: usize, v: usize, S0: i32, T: i32, Hd: i32, g: i32, qStride: i32, scale: f32,
  qq: usize,
): void {
  attendCausal(out, scores, q, k, v, S0, T, Hd, g, qStride, scale, qq, true);
}

/** Bytes of K (or V) rows per tile, as attention-causal.ts: a tile stays in L1 while every query that sees it passes. */
const TILE_BYTES: usize = 16384;

/**
 * The body of attentionCausal*: attention-causal.ts's tiling (see there why it equals attend once per
 * row): tiles start at multiples of 4 rows, so within a tile a query runs attend's blocks of 4 and,
 * where its rows end, its scalar tail.
 */
// @ts-ignore: decorator
@inline function attendCausal(
  out: usize, scores: usize, q: usize, k: usize, v: usize, S0: i32, T: i32, Hd: i32, g: i32, qStride: i32, scale: f32,
  qq: usize, q4: bool,
): void {
  const nS0 = <usize>S0, nT = <usize>T, nHeads = <usize>g, nb = <usize>Hd >> 5;
  const nRows = nS0 + nT; // rows the last query sees
  const rowBytes = nb * blockBytes(q4), qqBytes = nb * QQ_BLOCK_BYTES, qqRowBytes = nHeads * qqBytes;
  const headBytes = <usize>Hd << 2, strideBytes = <usize>qStride << 2, scoreRowBytes = nRows << 2;
  const tileRows = max<usize>(4, (TILE_BYTES / rowBytes) & ~3);

  // Step 0: qq (T, g, Hd/32 blocks) = q8_0 of every query.
  for (let t: usize = 0; t < nT; t++) quantizeQ8_0(qq + t * qqRowBytes, q + t * strideBytes, Hd * g);

  // Step 1: scores = K qq * scale, a tile of K rows at a time, passed over by every query that sees part
  // of it (query t sees rows 0 … S0 + t).
  const scale4 = f32x4.splat(scale);
  for (let s0: usize = 0; s0 < nRows; s0 += tileRows) {
    const s1 = min(s0 + tileRows, nRows);
    for (let t = s0 > nS0 ? s0 - nS0 : 0; t < nT; t++) {
      const end = min(nS0 + t + 1, s1); // the query's rows in this tile: s0 … end − 1
      const p = scores + t * nHeads * scoreRowBytes, qqt = qq + t * qqRowBytes;
      let s = s0;
      for (; s + 4 <= end; s += 4) {
        const k0 = k + s * rowBytes, k1 = k0 + rowBytes, k2 = k1 + rowBytes, k3 = k2 + rowBytes;
        scoreRows4(p + (s << 2), scoreRowBytes, qqt, qqBytes, k0, k1, k2, k3, nb, nHeads, scale4, q4);
      }
      for (; s < end; s++) scoreRow(p + (s << 2), scoreRowBytes, qqt, qqBytes, k + s * rowBytes, nb, nHeads, scale, q4);
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
      const o = out + t * strideBytes, p = scores + t * nHeads * scoreRowBytes;
      let s = s0;
      for (; s + 4 <= end; s += 4) {
        const v0 = v + s * rowBytes, v1 = v0 + rowBytes, v2 = v1 + rowBytes, v3 = v2 + rowBytes;
        accumulateRows4(o, headBytes, p + (s << 2), scoreRowBytes, v0, v1, v2, v3, nb, nHeads, q4);
      }
      for (; s < end; s++) accumulateRow(o, headBytes, p + (s << 2), scoreRowBytes, v + s * rowBytes, nb, nHeads, q4);
    }
  }
}

/** Where touchRows' loads go, so they are kept (per instance: each thread has its own). */
let touchSink: u32 = 0;

/**
 * Touches every cache line of K and V rows idx (n) with independent loads, as attend<T> (attention.ts)
 * does before attending gathered rows: many misses in flight instead of a few per block of rows.
 * Rows are not line-aligned, so the last byte of each is touched too.
 */
// @ts-ignore: decorator
@inline function touchRows(k: usize, v: usize, idx: usize, n: usize, rowBytes: usize): void {
  let touched: u32 = 0;
  for (let j: usize = 0; j < n; j++) {
    const kr = k + <usize>load<i32>(idx + (j << 2)) * rowBytes, vr = v + (kr - k);
    for (let o: usize = 0; o < rowBytes; o += 64) touched ^= <u32>load<u8>(kr + o) ^ <u32>load<u8>(vr + o);
    touched ^= <u32>load<u8>(kr + rowBytes - 1) ^ <u32>load<u8>(vr + rowBytes - 1);
  }
  touchSink ^= touched;
}

/** The cache row of the s-th row attended: idx[s] (i32) when gathered, else s. */
// @ts-ignore: decorator
@inline function rowOf(idx: usize, s: usize, gathered: bool): usize {
  return gathered ? <usize>load<i32>(idx + (s << 2)) : s;
}

/**
 * For each head h < g: the 4 scores of rows k0..k3 (nb blocks) for qq + h·qqStride (q8_0 blocks), times
 * scale, stored at p + h·pStride. Each is matvecQ8_0's / matvecQ4_0's dot of that row.
 */
// @ts-ignore: decorator
@inline function scoreRows4(
  p: usize, pStride: usize, qq: usize, qqStride: usize, k0: usize, k1: usize, k2: usize, k3: usize, nb: usize,
  g: usize, scale4: v128, q4: bool,
): void {
  for (let h: usize = 0; h < g; h++) {
    const qh = qq + h * qqStride;
    const dots = q4 ? dotRows4Q4<i8>(qh, k0, k1, k2, k3, nb) : dotRows4Q8_0(qh, k0, k1, k2, k3, nb);
    v128.store(p + h * pStride, f32x4.mul(dots, scale4));
  }
}

/** scoreRows4 for one row ks. */
// @ts-ignore: decorator
@inline function scoreRow(p: usize, pStride: usize, qq: usize, qqStride: usize, ks: usize, nb: usize, g: usize, scale: f32, q4: bool): void {
  for (let h: usize = 0; h < g; h++) {
    const qh = qq + h * qqStride;
    store<f32>(p + h * pStride, (q4 ? dotRowQ4<i8>(qh, ks, nb) : dotQ8_0(qh, ks, nb)) * scale);
  }
}

/** The scale d of the block at vb, in all 4 lanes. */
// @ts-ignore: decorator
@inline export function scaleOf(vb: usize): v128 {
  return f32x4.splat(f16ToF32(load<u16>(vb)));
}

/** Values 8c … 8c + 7 of the block at vb as i16x8: q (q8_0) or c − 8 (q4_0). */
// @ts-ignore: decorator
@inline function values8(vb: usize, c: usize, q4: bool): v128 {
  if (!q4) return v128.load8x8_s(vb + 2 + (c << 3));
  // c = 0, 1: low nibbles of bytes 0 … 7, 8 … 15; c = 2, 3: their high nibbles.
  const bytes = v128.load64_zero(vb + 2 + ((c & 1) << 3));
  const codes = v128.and(i16x8.shr_u(bytes, <i32>(c >> 1) << 2), i8x16.splat(15));
  return i16x8.sub(i16x8.extend_low_i8x16_u(codes), i16x8.splat(8));
}

/** The 4 low / high i16 lanes of x as f32, times d (exact: |x| ≤ 128, d an f16). */
// @ts-ignore: decorator
@inline export function lowTimes(x: v128, d: v128): v128 { return f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(x)), d); }
// @ts-ignore: decorator
@inline export function highTimes(x: v128, d: v128): v128 { return f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(x)), d); }

/** (p0 v0 + p1 v1) + (p2 v2 + p3 v3): accumulateRows4's sum, lane-wise. */
// @ts-ignore: decorator
@inline function weighted4(v0: v128, v1: v128, v2: v128, v3: v128, p0: v128, p1: v128, p2: v128, p3: v128): v128 {
  return f32x4.add(f32x4.add(f32x4.mul(v0, p0), f32x4.mul(v1, p1)), f32x4.add(f32x4.mul(v2, p2), f32x4.mul(v3, p3)));
}

/**
 * For each head h < g: out + h·outStride (Hd) += (p0 V0 + p1 V1) + (p2 V2 + p3 V3), rows V0..V3 at v0..v3
 * (nb blocks) dequantised in registers, p0..p3 the 4 f32 at p + h·pStride. Per element accumulateRows4's
 * operations, so attentionF32's step 3 on the dequantised rows, bit for bit.
 */
// @ts-ignore: decorator
@inline function accumulateRows4(
  out: usize, outStride: usize, p: usize, pStride: usize, v0: usize, v1: usize, v2: usize, v3: usize, nb: usize,
  g: usize, q4: bool,
): void {
  const bytes = blockBytes(q4);
  for (let b: usize = 0; b < nb; b++) {
    const o = b * bytes;
    const d0 = scaleOf(v0 + o), d1 = scaleOf(v1 + o), d2 = scaleOf(v2 + o), d3 = scaleOf(v3 + o);
    for (let c: usize = 0; c < 4; c++) {
      const x0 = values8(v0 + o, c, q4), x1 = values8(v1 + o, c, q4), x2 = values8(v2 + o, c, q4), x3 = values8(v3 + o, c, q4);
      const a0 = lowTimes(x0, d0), a1 = lowTimes(x1, d1), a2 = lowTimes(x2, d2), a3 = lowTimes(x3, d3);
      const b0 = highTimes(x0, d0), b1 = highTimes(x1, d1), b2 = highTimes(x2, d2), b3 = highTimes(x3, d3);
      const at = (b << 7) + (c << 5); // float 32b + 8c of a head's out
      for (let h: usize = 0; h < g; h++) {
        const ph = p + h * pStride, oh = out + h * outStride + at;
        const p0 = v128.load32_splat(ph), p1 = v128.load32_splat(ph, 4);
        const p2 = v128.load32_splat(ph, 8), p3 = v128.load32_splat(ph, 12);
        v128.store(oh, f32x4.add(v128.load(oh), weighted4(a0, a1, a2, a3, p0, p1, p2, p3)));
        v128.store(oh, f32x4.add(v128.load(oh, 16), weighted4(b0, b1, b2, b3, p0, p1, p2, p3)), 16);
      }
    }
  }
}

/** accumulateRows4 for one row vs: out + h·outStride += p_h V, p_h the f32 at p + h·pStride (accumulateRow's operations). */
// @ts-ignore: decorator
@inline function accumulateRow(out: usize, outStride: usize, p: usize, pStride: usize, vs: usize, nb: usize, g: usize, q4: bool): void {
  const bytes = blockBytes(q4);
  for (let b: usize = 0; b < nb; b++) {
    const o = b * bytes, d = scaleOf(vs + o);
    for (let c: usize = 0; c < 4; c++) {
      const x = values8(vs + o, c, q4);
      const a = lowTimes(x, d), bb = highTimes(x, d);
      const at = (b << 7) + (c << 5);
      for (let h: usize = 0; h < g; h++) {
        const ph = v128.load32_splat(p + h * pStride), oh = out + h * outStride + at;
        v128.store(oh, f32x4.add(v128.load(oh), f32x4.mul(a, ph)));
        v128.store(oh, f32x4.add(v128.load(oh, 16), f32x4.mul(bb, ph)), 16);
      }
    }
  }
}
