// Matrix-vector products for float weights (decode, one token): out (d) = W (d, n) @ x (n).
//
// Memory bound: each weight is read once, so rows go 4 at a time (x is loaded once for 4 rows)
// with independent f32x4 accumulators, and the 4 row sums are reduced into one vector store.
// Summation order of one row, the same whether it is in a group of 4 or a leftover row, and the same
// as a row of the matmul kernels (so a token's outputs do not depend on how many tokens share the
// product: batched decoding gives each sequence the bits it gets alone): 8 elements per step into one
// f32x4 accumulator, adding (lo products + hi products), then (l0 + l2) + (l1 + l3), then the scalar
// tail in index order.
import {
  TWO_POW_56, TWO_POW_M56, f16ToF32, bf16ToF32, bf16LoToF32x4, bf16HiToF32x4, f16HiHalves, f16LoHalves,
  joinLo, joinHi, allNormal, allNormal4, f16x4Exact, hsum, hsum4,
} from "./convert";
import { dot8Acc } from "./simd";

// ---- f32 ----

/** The 4 dots of rows w0, w0 + rowBytes, ... (f32, n) with x (n), as one f32x4. */
// @ts-ignore: decorator
@inline export function dotRows4F32(x: usize, w0: usize, rowBytes: usize, n: usize): v128 {
  const w1 = w0 + rowBytes, w2 = w1 + rowBytes, w3 = w2 + rowBytes;
  let a0 = f32x4.splat(0), a1 = a0, a2 = a0, a3 = a0;
  let i: usize = 0;
  for (; i + 8 <= n; i += 8) {
    const o = i << 2;
    const xl = v128.load(x + o), xh = v128.load(x + o, 16);
    a0 = dot8Acc(a0, v128.load(w0 + o), xl, v128.load(w0 + o, 16), xh);
    a1 = dot8Acc(a1, v128.load(w1 + o), xl, v128.load(w1 + o, 16), xh);
    a2 = dot8Acc(a2, v128.load(w2 + o), xl, v128.load(w2 + o, 16), xh);
    a3 = dot8Acc(a3, v128.load(w3 + o), xl, v128.load(w3 + o, 16), xh);
  }
  let sums = hsum4(a0, a1, a2, a3);
  if (i < n) {
    let t0: f32 = 0, t1: f32 = 0, t2: f32 = 0, t3: f32 = 0;
    for (; i < n; i++) {
      const o = i << 2;
      const xi = load<f32>(x + o);
      t0 += load<f32>(w0 + o) * xi;
      t1 += load<f32>(w1 + o) * xi;
      t2 += load<f32>(w2 + o) * xi;
      t3 += load<f32>(w3 + o) * xi;
    }
    sums = f32x4.add(sums, f32x4(t0, t1, t2, t3));
  }
  return sums;
}

/** The dot of one f32 row w (n) with x (n), in the same order as dotRows4F32. */
export function dotF32(x: usize, w: usize, n: usize): f32 {
  let a = f32x4.splat(0);
  let i: usize = 0;
  for (; i + 8 <= n; i += 8) {
    const o = i << 2;
    a = dot8Acc(a, v128.load(w + o), v128.load(x + o), v128.load(w + o, 16), v128.load(x + o, 16));
  }
  let sum = hsum(a);
  if (i < n) {
    let t: f32 = 0;
    for (; i < n; i++) t += load<f32>(w + (i << 2)) * load<f32>(x + (i << 2));
    sum += t;
  }
  return sum;
}

/** out (d) = W (d, n) @ x (n), W f32. */
export function matvecF32(out: usize, x: usize, w: usize, n: i32, d: i32): void {
  const rowBytes = <usize>n << 2;
  let r = 0;
  for (; r + 4 <= d; r += 4) {
    v128.store(out + (<usize>r << 2), dotRows4F32(x, w + <usize>r * rowBytes, rowBytes, n));
  }
  for (; r < d; r++) store<f32>(out + (<usize>r << 2), dotF32(x, w + <usize>r * rowBytes, n));
}

// ---- bf16 ----

/** The 4 dots of bf16 rows w0, w0 + rowBytes, ... (n) with x (n), as one f32x4. */
// @ts-ignore: decorator
@inline function dotRows4Bf16(x: usize, w0: usize, rowBytes: usize, n: usize): v128 {
  const w1 = w0 + rowBytes, w2 = w1 + rowBytes, w3 = w2 + rowBytes;
  let a0 = f32x4.splat(0), a1 = a0, a2 = a0, a3 = a0;
  let i: usize = 0;
  for (; i + 8 <= n; i += 8) {
    const xl = v128.load(x + (i << 2)), xh = v128.load(x + (i << 2), 16);
    const o = i << 1;
    let h = v128.load(w0 + o);
    a0 = dot8Acc(a0, bf16LoToF32x4(h), xl, bf16HiToF32x4(h), xh);
    h = v128.load(w1 + o);
    a1 = dot8Acc(a1, bf16LoToF32x4(h), xl, bf16HiToF32x4(h), xh);
    h = v128.load(w2 + o);
    a2 = dot8Acc(a2, bf16LoToF32x4(h), xl, bf16HiToF32x4(h), xh);
    h = v128.load(w3 + o);
    a3 = dot8Acc(a3, bf16LoToF32x4(h), xl, bf16HiToF32x4(h), xh);
  }
  let sums = hsum4(a0, a1, a2, a3);
  if (i < n) {
    let t0: f32 = 0, t1: f32 = 0, t2: f32 = 0, t3: f32 = 0;
    for (; i < n; i++) {
      const xi = load<f32>(x + (i << 2));
      const o = i << 1;
      t0 += bf16ToF32(load<u16>(w0 + o)) * xi;
      t1 += bf16ToF32(load<u16>(w1 + o)) * xi;
      t2 += bf16ToF32(load<u16>(w2 + o)) * xi;
      t3 += bf16ToF32(load<u16>(w3 + o)) * xi;
    }
    sums = f32x4.add(sums, f32x4(t0, t1, t2, t3));
  }
  return sums;
}

/** The dot of one bf16 row w (n) with x (n), in the same order as dotRows4Bf16. */
export function dotBf16(x: usize, w: usize, n: usize): f32 {
  let a = f32x4.splat(0);
  let i: usize = 0;
  for (; i + 8 <= n; i += 8) {
    const h = v128.load(w + (i << 1));
    a = dot8Acc(a, bf16LoToF32x4(h), v128.load(x + (i << 2)), bf16HiToF32x4(h), v128.load(x + (i << 2), 16));
  }
  let sum = hsum(a);
  if (i < n) {
    let t: f32 = 0;
    for (; i < n; i++) t += bf16ToF32(load<u16>(w + (i << 1))) * load<f32>(x + (i << 2));
    sum += t;
  }
  return sum;
}

/** out (d) = W (d, n) @ x (n), W bf16, x f32 holding bf16-rounded values. */
export function matvecBf16(out: usize, x: usize, w: usize, n: i32, d: i32): void {
  const rowBytes = <usize>n << 1;
  let r = 0;
  for (; r + 4 <= d; r += 4) {
    v128.store(out + (<usize>r << 2), dotRows4Bf16(x, w + <usize>r * rowBytes, rowBytes, n));
  }
  for (; r < d; r++) store<f32>(out + (<usize>r << 2), dotBf16(x, w + <usize>r * rowBytes, n));
}

// ---- f16 ----

/**
 * acc plus Σ of w (8 f16 at p, converted exactly) times x (8 f32 at x), scaled by 2^-56: the path
 * for subnormals and ±0. w * 2^-56 is exact (the smallest f16 subnormal stays an f32 normal).
 */
function dot8F16Exact(acc: v128, p: usize, x: usize): v128 {
  const unscale = f32x4.splat(TWO_POW_M56);
  const lo = f32x4.mul(f16x4Exact(v128.load16x4_u(p)), unscale), hi = f32x4.mul(f16x4Exact(v128.load16x4_u(p, 8)), unscale);
  return dot8Acc(acc, lo, v128.load(x), hi, v128.load(x, 16));
}

/**
 * acc plus Σ of w (8 f16 in h) times x * 2^112 (xl, xh): the fast path. Products are exactly w * x, the same
 * as dot8F16Exact's, so which path a block takes never changes the result.
 */
// @ts-ignore: decorator
@inline function dot8F16Fast(acc: v128, h: v128, xl: v128, xh: v128): v128 {
  const hi16 = f16HiHalves(h), lo16 = f16LoHalves(h);
  return dot8Acc(acc, joinLo(lo16, hi16), xl, joinHi(lo16, hi16), xh);
}

/** Scalar tail shared by the f16 dots: Σ_{i0 <= i < n} w[i] x[i], converting exactly. */
function dotTailF16(x: usize, w: usize, i0: usize, n: usize): f32 {
  let t: f32 = 0;
  for (let i = i0; i < n; i++) t += f16ToF32(load<u16>(w + (i << 1))) * load<f32>(x + (i << 2));
  return t;
}

/**
 * The 4 dots of f16 rows w0, w0 + rowBytes, ... (n) with x (n), as one f32x4.
 * The fast conversion yields w * 2^-112; x is scaled by 2^56 and the sums by 2^56 again, so any f32
 * activation below 2^72 stays finite (scaling by powers of two is exact: results equal w * x summed).
 */
// @ts-ignore: decorator
@inline function dotRows4F16(x: usize, w0: usize, rowBytes: usize, n: usize): v128 {
  const w1 = w0 + rowBytes, w2 = w1 + rowBytes, w3 = w2 + rowBytes;
  const scale = f32x4.splat(TWO_POW_56);
  let a0 = f32x4.splat(0), a1 = a0, a2 = a0, a3 = a0;
  let i: usize = 0;
  for (; i + 8 <= n; i += 8) {
    const xo = x + (i << 2), o = i << 1;
    const h0 = v128.load(w0 + o), h1 = v128.load(w1 + o), h2 = v128.load(w2 + o), h3 = v128.load(w3 + o);
    if (allNormal4(h0, h1, h2, h3)) {
      const xl = f32x4.mul(v128.load(xo), scale), xh = f32x4.mul(v128.load(xo, 16), scale);
      a0 = dot8F16Fast(a0, h0, xl, xh);
      a1 = dot8F16Fast(a1, h1, xl, xh);
      a2 = dot8F16Fast(a2, h2, xl, xh);
      a3 = dot8F16Fast(a3, h3, xl, xh);
    } else {
      a0 = dot8F16Exact(a0, w0 + o, xo);
      a1 = dot8F16Exact(a1, w1 + o, xo);
      a2 = dot8F16Exact(a2, w2 + o, xo);
      a3 = dot8F16Exact(a3, w3 + o, xo);
    }
  }
  let sums = f32x4.mul(hsum4(a0, a1, a2, a3), f32x4.splat(TWO_POW_56));
  if (i < n) {
    sums = f32x4.add(sums, f32x4(
      dotTailF16(x, w0, i, n), dotTailF16(x, w1, i, n), dotTailF16(x, w2, i, n), dotTailF16(x, w3, i, n),
    ));
  }
  return sums;
}

/** The dot of one f16 row w (n) with x (n), in the same order as dotRows4F16. */
export function dotF16(x: usize, w: usize, n: usize): f32 {
  const scale = f32x4.splat(TWO_POW_56);
  let a = f32x4.splat(0);
  let i: usize = 0;
  for (; i + 8 <= n; i += 8) {
    const xo = x + (i << 2), h = v128.load(w + (i << 1));
    if (allNormal(h)) {
      a = dot8F16Fast(a, h, f32x4.mul(v128.load(xo), scale), f32x4.mul(v128.load(xo, 16), scale));
    } else {
      a = dot8F16Exact(a, w + (i << 1), xo);
    }
  }
  let sum = hsum(a) * TWO_POW_56;
  if (i < n) sum += dotTailF16(x, w, i, n);
  return sum;
}

/** out (d) = W (d, n) @ x (n), W f16, x f32. */
export function matvecF16(out: usize, x: usize, w: usize, n: i32, d: i32): void {
  const rowBytes = <usize>n << 1;
  let r = 0;
  for (; r + 4 <= d; r += 4) {
    v128.store(out + (<usize>r << 2), dotRows4F16(x, w + <usize>r * rowBytes, rowBytes, n));
  }
  for (; r < d; r++) store<f32>(out + (<usize>r << 2), dotF16(x, w + <usize>r * rowBytes, n));
}
