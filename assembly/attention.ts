// Dense attention over the cached positions of one KV head (decode): for one query head (attendF32),
// for the g query heads that share the KV head (attention*), and over selected rows (attendRows*).
//
// The same steps as llama.cpp's CPU graph (mul_mat K q, soft_max_ext with scale, mul_mat V p):
//   Step 1: scores (S) = K (S, Hd) @ q (Hd) * scale
//   Step 2: p = e^(scores - max) * (1 / Σ e^(scores - max))  (in place, as ggml: scores holds p)
//   Step 3: out (Hd) = Σ_s p_s V[s]
// attention* computes every head with exactly attendF32's arithmetic (so g heads equal g attendF32
// calls bit for bit) but reads K and V once for all g heads: at long context they come from DRAM
// and the kernel is bandwidth bound, so each block of 4 rows serves every head while it is in L1.
// attention-causal.ts does the same for the T query rows of a prefill chunk, with these helpers.
import { dotRows4F32, dotF32 } from "./matvec";
import { expF32x4, expF32 } from "./exp";
import { hsum, hsum4, loadAsF32, load4AsF32 } from "./convert";
import { dot8Acc } from "./simd";

/**
 * Dense attention: scores (S) = K (S, Hd) @ q (Hd) * scale; p = softmax(scores);
 * out (Hd) = p @ V (S, Hd). K, V f32 rows of Hd. `scores` is scratch of S floats (holds p after).
 */
export function attendF32(out: usize, scores: usize, q: usize, k: usize, v: usize, S: i32, Hd: i32, scale: f32): void {
  const nS = <usize>S, nHd = <usize>Hd, rowBytes = nHd << 2;

  // Step 1: scores, 4 cached positions at a time (K is read like a matvec's weights).
  const scale4 = f32x4.splat(scale);
  let s: usize = 0;
  for (; s + 4 <= nS; s += 4) {
    v128.store(scores + (s << 2), f32x4.mul(dotRows4F32(q, k + s * rowBytes, rowBytes, nHd), scale4));
  }
  for (; s < nS; s++) store<f32>(scores + (s << 2), dotF32(q, k + s * rowBytes, nHd) * scale);

  // Step 2: softmax in place.
  softmaxF32(scores, S);

  // Step 3: out = Σ p_s V[s], 4 positions per pass over out (out stays in L1: Hd floats).
  memory.fill(out, 0, rowBytes);
  s = 0;
  for (; s + 4 <= nS; s += 4) {
    const v0 = v + s * rowBytes, v1 = v0 + rowBytes, v2 = v1 + rowBytes, v3 = v2 + rowBytes;
    const p0 = load<f32>(scores + (s << 2)), p1 = load<f32>(scores + (s << 2), 4);
    const p2 = load<f32>(scores + (s << 2), 8), p3 = load<f32>(scores + (s << 2), 12);
    const q0 = f32x4.splat(p0), q1 = f32x4.splat(p1), q2 = f32x4.splat(p2), q3 = f32x4.splat(p3);
    let j: usize = 0;
    for (; j + 16 <= rowBytes; j += 16) {
      const pair01 = f32x4.add(f32x4.mul(v128.load(v0 + j), q0), f32x4.mul(v128.load(v1 + j), q1));
      const pair23 = f32x4.add(f32x4.mul(v128.load(v2 + j), q2), f32x4.mul(v128.load(v3 + j), q3));
      v128.store(out + j, f32x4.add(v128.load(out + j), f32x4.add(pair01, pair23)));
    }
    for (; j < rowBytes; j += 4) {
      const pair01 = load<f32>(v0 + j) * p0 + load<f32>(v1 + j) * p1;
      const pair23 = load<f32>(v2 + j) * p2 + load<f32>(v3 + j) * p3;
      store<f32>(out + j, load<f32>(out + j) + (pair01 + pair23));
    }
  }
  for (; s < nS; s++) {
    const vs = v + s * rowBytes, p = load<f32>(scores + (s << 2)), p4 = f32x4.splat(p);
    let j: usize = 0;
    for (; j + 16 <= rowBytes; j += 16) v128.store(out + j, f32x4.add(v128.load(out + j), f32x4.mul(v128.load(vs + j), p4)));
    for (; j < rowBytes; j += 4) store<f32>(out + j, load<f32>(out + j) + load<f32>(vs + j) * p);
  }
}

/**
 * The softmax normaliser without the probabilities: out[0] = max x, out[1] = Σ e^(x − max) (f32 exps
 * summed in f64, as softmaxF32 sums them, then rounded to f32). x (n) is only read, once.
 * SparQ needs Σ over all S of its approximate scores but the probabilities of only k + 1 of them.
 */
export function expSumF32(out: usize, x: usize, n: i32): void {
  const end = <usize>n << 2;
  const maxScore = rowMax(x, end);
  store<f32>(out, maxScore);
  store<f32>(out, <f32>expSum(0, x, end, maxScore, false), 4);
}

/**
 * x (n) = softmax(x), in place. As ggml's soft_max: e^(x - max) in f32, summed in f64, then scaled
 * by f32(1 / Σ). -Infinity entries become 0 (masking); all -Infinity or any +Infinity is unsupported.
 */
export function softmaxF32(x: usize, n: i32): void {
  const end = <usize>n << 2;
  const sum = expSum(x, x, end, rowMax(x, end), true);
  const inv = <f32>(1 / sum);
  const inv4 = f32x4.splat(inv);
  let o: usize = 0;
  for (; o + 16 <= end; o += 16) v128.store(x + o, f32x4.mul(v128.load(x + o), inv4));
  for (; o < end; o += 4) store<f32>(x + o, load<f32>(x + o) * inv);
}

/**
 * Dense attention of g query heads over S positions of one KV head: for each head h,
 * scores[h] (S) = K (S, Hd) @ q[h] (Hd) * scale; p[h] = softmax(scores[h]); out[h] (Hd) = p[h] @ V.
 * q, out (g, Hd); K, V (S, Hd) f32; scores (g, S) scratch, holds p after.
 */
export function attentionF32(out: usize, scores: usize, q: usize, k: usize, v: usize, S: i32, Hd: i32, g: i32, scale: f32): void {
  attend<f32>(out, scores, q, k, v, 0, false, S, Hd, g, scale);
}

/** attentionF32 with K, V (S, Hd) in bf16, decoded in registers; equal to attentionF32 on the decoded values. */
export function attentionBf16(out: usize, scores: usize, q: usize, k: usize, v: usize, S: i32, Hd: i32, g: i32, scale: f32): void {
  attend<u16>(out, scores, q, k, v, 0, false, S, Hd, g, scale);
}

/**
 * attentionF32 over the rows idx (n) (i32 positions, any order) of K, V (S, Hd) f32: equal to
 * attentionF32 on those rows gathered in idx order. scores (g, n) holds p after.
 */
export function attendRowsF32(out: usize, scores: usize, q: usize, k: usize, v: usize, idx: usize, n: i32, Hd: i32, g: i32, scale: f32): void {
  attend<f32>(out, scores, q, k, v, idx, true, n, Hd, g, scale);
}

/** attendRowsF32 with K, V in bf16. */
export function attendRowsBf16(out: usize, scores: usize, q: usize, k: usize, v: usize, idx: usize, n: i32, Hd: i32, g: i32, scale: f32): void {
  attend<u16>(out, scores, q, k, v, idx, true, n, Hd, g, scale);
}

/**
 * The body of attention* and attendRows*: g heads over n rows of K, V (elements T: f32, or u16
 * holding bf16). Row s is idx[s] when `gathered` (a constant at every call), else s.
 */
// @ts-ignore: decorator
@inline function attend<T>(
  out: usize, scores: usize, q: usize, k: usize, v: usize, idx: usize, gathered: bool, n: i32, Hd: i32, g: i32, scale: f32,
): void {
  const nRows = <usize>n, nHd = <usize>Hd, nHeads = <usize>g;
  const rowBytes = nHd * sizeof<T>(), headBytes = nHd << 2, scoreRowBytes = nRows << 2;

  // Step 1: scores (g, n), each block of 4 K rows dotted with every head's q before the next block.
  const scale4 = f32x4.splat(scale);
  let s: usize = 0;
  if (gathered) {
    // Rows picked from all over the cache defeat the hardware prefetcher, and a computation that waits
    // for each block's rows keeps only a few misses in flight. So first touch every line of the rows
    // (K and V) in a loop of independent loads, which keeps many in flight; the steps below then find
    // them in cache (k + 1 rows of K and V: at most a few hundred KiB per head).
    let touched: u64 = 0;
    for (let j: usize = 0; j < nRows; j++) {
      const offset = <usize>load<i32>(idx + (j << 2)) * rowBytes;
      for (let o: usize = 0; o < rowBytes; o += 64) touched ^= load<u64>(k + offset + o) ^ load<u64>(v + offset + o);
    }
    touchSink ^= touched;
  }
  for (; s + 4 <= nRows; s += 4) {
    const k0 = k + rowOf(idx, s, gathered) * rowBytes, k1 = k + rowOf(idx, s + 1, gathered) * rowBytes;
    const k2 = k + rowOf(idx, s + 2, gathered) * rowBytes, k3 = k + rowOf(idx, s + 3, gathered) * rowBytes;
    for (let h: usize = 0; h < nHeads; h++) {
      const dots = dotRows4<T>(q + h * headBytes, k0, k1, k2, k3, nHd);
      v128.store(scores + h * scoreRowBytes + (s << 2), f32x4.mul(dots, scale4));
    }
  }
  for (; s < nRows; s++) {
    const ks = k + rowOf(idx, s, gathered) * rowBytes;
    for (let h: usize = 0; h < nHeads; h++) {
      store<f32>(scores + h * scoreRowBytes + (s << 2), dotRow<T>(q + h * headBytes, ks, nHd) * scale);
    }
  }

  // Step 2: softmax of each head's row.
  for (let h: usize = 0; h < nHeads; h++) softmaxF32(scores + h * scoreRowBytes, n);

  // Step 3: out[h] = Σ p[h]_s V[s], each block of 4 V rows added into every head's out.
  memory.fill(out, 0, nHeads * headBytes);
  s = 0;
  for (; s + 4 <= nRows; s += 4) {
    const v0 = v + rowOf(idx, s, gathered) * rowBytes, v1 = v + rowOf(idx, s + 1, gathered) * rowBytes;
    const v2 = v + rowOf(idx, s + 2, gathered) * rowBytes, v3 = v + rowOf(idx, s + 3, gathered) * rowBytes;
    for (let h: usize = 0; h < nHeads; h++) {
      accumulateRows4<T>(out + h * headBytes, v0, v1, v2, v3, scores + h * scoreRowBytes + (s << 2), nHd);
    }
  }
  for (; s < nRows; s++) {
    const vs = v + rowOf(idx, s, gathered) * rowBytes;
    for (let h: usize = 0; h < nHeads; h++) {
      accumulateRow<T>(out + h * headBytes, vs, load<f32>(scores + h * scoreRowBytes + (s << 2)), nHd);
    }
  }
}

/** Where attend's touches go, so the loads are kept (per instance: each thread has its own). */
let touchSink: u64 = 0;

/** The cache row of the s-th row attended: idx[s] (i32) when gathered, else s. */
// @ts-ignore: decorator
@inline function rowOf(idx: usize, s: usize, gathered: bool): usize {
  return gathered ? <usize>load<i32>(idx + (s << 2)) : s;
}

/**
 * The 4 dots of rows w0..w3 (n elements T) with x (n f32), as one f32x4: the order of matvec.ts's
 * dotRows4F32 (8 elements per step into one accumulator with simd.ts's dot8Acc, hsum4, scalar tail),
 * so for T = f32 it is dotRows4F32 bit for bit and for bf16 it equals it on the decoded values.
 */
// @ts-ignore: decorator
@inline export function dotRows4<T>(x: usize, w0: usize, w1: usize, w2: usize, w3: usize, n: usize): v128 {
  const size = sizeof<T>();
  let a0 = f32x4.splat(0), a1 = a0, a2 = a0, a3 = a0;
  let i: usize = 0;
  for (; i + 8 <= n; i += 8) {
    const xl = v128.load(x + (i << 2)), xh = v128.load(x + (i << 2), 16);
    const o = i * size, oh = o + 4 * size;
    a0 = dot8Acc(a0, load4AsF32<T>(w0 + o), xl, load4AsF32<T>(w0 + oh), xh);
    a1 = dot8Acc(a1, load4AsF32<T>(w1 + o), xl, load4AsF32<T>(w1 + oh), xh);
    a2 = dot8Acc(a2, load4AsF32<T>(w2 + o), xl, load4AsF32<T>(w2 + oh), xh);
    a3 = dot8Acc(a3, load4AsF32<T>(w3 + o), xl, load4AsF32<T>(w3 + oh), xh);
  }
  let sums = hsum4(a0, a1, a2, a3);
  if (i < n) {
    let t0: f32 = 0, t1: f32 = 0, t2: f32 = 0, t3: f32 = 0;
    for (; i < n; i++) {
      const xi = load<f32>(x + (i << 2));
      const o = i * size;
      t0 += loadAsF32<T>(w0 + o) * xi;
      t1 += loadAsF32<T>(w1 + o) * xi;
      t2 += loadAsF32<T>(w2 + o) * xi;
      t3 += loadAsF32<T>(w3 + o) * xi;
    }
    sums = f32x4.add(sums, f32x4(t0, t1, t2, t3));
  }
  return sums;
}

/** The dot of one row w (n elements T) with x (n f32), in the order of dotF32 (= one lane of dotRows4). */
// @ts-ignore: decorator
@inline export function dotRow<T>(x: usize, w: usize, n: usize): f32 {
  const size = sizeof<T>();
  let a = f32x4.splat(0);
  let i: usize = 0;
  for (; i + 8 <= n; i += 8) {
    a = dot8Acc(a, load4AsF32<T>(w + i * size), v128.load(x + (i << 2)), load4AsF32<T>(w + (i + 4) * size), v128.load(x + (i << 2), 16));
  }
  let sum = hsum(a);
  if (i < n) {
    let t: f32 = 0;
    for (; i < n; i++) t += loadAsF32<T>(w + i * size) * load<f32>(x + (i << 2));
    sum += t;
  }
  return sum;
}

/** out (n) += (p0 v0 + p1 v1) + (p2 v2 + p3 v3) for rows v0..v3 (n elements T), p0..p3 the 4 f32 at p. */
// @ts-ignore: decorator
@inline export function accumulateRows4<T>(out: usize, v0: usize, v1: usize, v2: usize, v3: usize, p: usize, n: usize): void {
  const size = sizeof<T>();
  const p0 = load<f32>(p), p1 = load<f32>(p, 4), p2 = load<f32>(p, 8), p3 = load<f32>(p, 12);
  const q0 = f32x4.splat(p0), q1 = f32x4.splat(p1), q2 = f32x4.splat(p2), q3 = f32x4.splat(p3);
  let j: usize = 0;
  for (; j + 4 <= n; j += 4) {
    const o = j * size;
    const pair01 = f32x4.add(f32x4.mul(load4AsF32<T>(v0 + o), q0), f32x4.mul(load4AsF32<T>(v1 + o), q1));
    const pair23 = f32x4.add(f32x4.mul(load4AsF32<T>(v2 + o), q2), f32x4.mul(load4AsF32<T>(v3 + o), q3));
    v128.store(out + (j << 2), f32x4.add(v128.load(out + (j << 2)), f32x4.add(pair01, pair23)));
  }
  for (; j < n; j++) {
    const o = j * size;
    const pair01 = loadAsF32<T>(v0 + o) * p0 + loadAsF32<T>(v1 + o) * p1;
    const pair23 = loadAsF32<T>(v2 + o) * p2 + loadAsF32<T>(v3 + o) * p3;
    store<f32>(out + (j << 2), load<f32>(out + (j << 2)) + (pair01 + pair23));
  }
}

/** out (n) += p v for one row v (n elements T). */
// @ts-ignore: decorator
@inline export function accumulateRow<T>(out: usize, v: usize, p: f32, n: usize): void {
  const size = sizeof<T>();
  const p4 = f32x4.splat(p);
  let j: usize = 0;
  for (; j + 4 <= n; j += 4) v128.store(out + (j << 2), f32x4.add(v128.load(out + (j << 2)), f32x4.mul(load4AsF32<T>(v + j * size), p4)));
  for (; j < n; j++) store<f32>(out + (j << 2), load<f32>(out + (j << 2)) + loadAsF32<T>(v + j * size) * p);
}

/** The max of the f32 values in [x, x + end). */
// @ts-ignore: decorator
@inline export function rowMax(x: usize, end: usize): f32 {
  // Four running maxima: f32x4.max is several instructions in V8, and one chain of them would wait on itself.
  // max is exact and order-free (a NaN anywhere gives NaN, +0 beats −0 either way), so the result is the same.
  let m4 = f32x4.splat(-Infinity), m5 = m4, m6 = m4, m7 = m4;
  let o: usize = 0;
  for (; o + 64 <= end; o += 64) {
    m4 = f32x4.max(m4, v128.load(x + o));
    m5 = f32x4.max(m5, v128.load(x + o, 16));
    m6 = f32x4.max(m6, v128.load(x + o, 32));
    m7 = f32x4.max(m7, v128.load(x + o, 48));
  }
  m4 = f32x4.max(f32x4.max(m4, m5), f32x4.max(m6, m7));
  for (; o + 16 <= end; o += 16) m4 = f32x4.max(m4, v128.load(x + o));
  let m = max(max(f32x4.extract_lane(m4, 0), f32x4.extract_lane(m4, 1)), max(f32x4.extract_lane(m4, 2), f32x4.extract_lane(m4, 3)));
  for (; o < end; o += 4) m = max(m, load<f32>(x + o));
  return m;
}

/**
 * Σ e^(x − maxX) over the f32 values in [x, x + end): f32 exps summed in f64 (lanes 0, 1 and lanes 2, 3
 * apart, then the tail in order), the order softmaxF32, expSumF32 and crossEntropy share. With `keep`
 * (a constant at every call) the exps are also stored at out (out may equal x).
 */
// @ts-ignore: decorator
@inline export function expSum(out: usize, x: usize, end: usize, maxX: f32, keep: bool): f64 {
  const max4 = f32x4.splat(maxX);
  let lo = f64x2.splat(0), hi = lo; // exps of lanes 0, 1 and of lanes 2, 3
  let o: usize = 0;
  for (; o + 16 <= end; o += 16) {
    const e = expF32x4(f32x4.sub(v128.load(x + o), max4));
    if (keep) v128.store(out + o, e);
    lo = f64x2.add(lo, f64x2.promote_low_f32x4(e));
    hi = f64x2.add(hi, f64x2.promote_low_f32x4(i32x4.shuffle(e, e, 2, 3, 2, 3)));
  }
  const lanes = f64x2.add(lo, hi);
  let sum = f64x2.extract_lane(lanes, 0) + f64x2.extract_lane(lanes, 1);
  for (; o < end; o += 4) {
    const e = expF32(load<f32>(x + o) - maxX);
    if (keep) store<f32>(out + o, e);
    sum += <f64>e;
  }
  return sum;
}
