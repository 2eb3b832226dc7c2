// q8_0 kernels: quantize activations, dequantize a row, and the integer-dot matvec / matmul.
//
// Block layout (34 bytes per 32 elements): f16 scale d, then 32 int8 q; x[i] = d * q[i].
// Dot of a weight block with an activation block, as llama.cpp's ggml_vec_dot_q8_0_q8_0:
//   sumi = Σ q_w[i] * q_x[i]                       (exact, i32x4.dot_i16x8_s on sign-extended bytes)
//   sum += f32(sumi) * (f32(d_w) * f32(d_x))       (f32, blocks in order)
// Every step is exact or one correctly rounded f32 operation in a fixed order, so these results
// are bit-identical to the reference twin.
import { TWO_POW_112, f16ToF32, f32ToF16, hsum4i } from "./convert";
import { touchLines } from "./simd";

const BLOCK: usize = 32;
const BLOCK_BYTES: usize = 34;

/** The activation block's 32 int8 at xb + 2 as four i16x8 (q0..q3 = elements 0-7, ..., 24-31). */
// @ts-ignore: decorator
@inline function loadQ0(xb: usize): v128 { return v128.load8x8_s(xb, 2); }
// @ts-ignore: decorator
@inline function loadQ1(xb: usize): v128 { return v128.load8x8_s(xb, 10); }
// @ts-ignore: decorator
@inline function loadQ2(xb: usize): v128 { return v128.load8x8_s(xb, 18); }
// @ts-ignore: decorator
@inline function loadQ3(xb: usize): v128 { return v128.load8x8_s(xb, 26); }

/** Integer sums of the weight block at wb with the activation block q0..q3: lanes add up to sumi. */
// @ts-ignore: decorator
@inline function blockDot(wb: usize, q0: v128, q1: v128, q2: v128, q3: v128): v128 {
  const s01 = i32x4.add(i32x4.dot_i16x8_s(loadQ0(wb), q0), i32x4.dot_i16x8_s(loadQ1(wb), q1));
  const s23 = i32x4.add(i32x4.dot_i16x8_s(loadQ2(wb), q2), i32x4.dot_i16x8_s(loadQ3(wb), q3));
  return i32x4.add(s01, s23);
}

/**
 * The 4 block scales d_w at w0..w3 as f32x4, times 2^-112: each f16 goes to the high half of an
 * i32 lane, an arithmetic shift by 3 moves exponent and mantissa to their f32 places and the mask
 * clears the sign copies. Exact for every finite f16; times d_x * 2^112 (scaleX) it gives
 * f32(d_w * d_x) exactly as f32(d_w) * f32(d_x) rounds. An f16-subnormal d_w (a block with
 * max|w| < 0.0078, which trained weights do not have; all-zero blocks are fine) becomes an f32
 * subnormal: still exact, only slower on x86.
 */
// @ts-ignore: decorator
@inline function scales4(w0: usize, w1: usize, w2: usize, w3: usize): v128 {
  let h = v128.load16_lane(w0, i32x4.splat(0), 1);
  h = v128.load16_lane(w1, h, 3);
  h = v128.load16_lane(w2, h, 5);
  h = v128.load16_lane(w3, h, 7);
  return v128.and(i32x4.shr_s(h, 3), i32x4.splat(0x8fffffff));
}

/** d_x * 2^112 of the activation block at xb (finite: d_x < 2^16), in all 4 lanes. */
// @ts-ignore: decorator
@inline function scaleX(xb: usize): v128 {
  return f32x4.splat(f16ToF32(load<u16>(xb)) * TWO_POW_112);
}

/** The dot of one q8_0 row w with xq (nb blocks); equal to each lane of dotRows4Q8_0. */
export function dotQ8_0(xq: usize, w: usize, nb: usize): f32 {
  let sum: f32 = 0;
  const xEnd = xq + nb * BLOCK_BYTES;
  for (let xb = xq, wb = w; xb < xEnd; xb += BLOCK_BYTES, wb += BLOCK_BYTES) {
    const s = blockDot(wb, loadQ0(xb), loadQ1(xb), loadQ2(xb), loadQ3(xb));
    const sumi = i32x4.extract_lane(s, 0) + i32x4.extract_lane(s, 1) + i32x4.extract_lane(s, 2) + i32x4.extract_lane(s, 3);
    sum += <f32>sumi * (f16ToF32(load<u16>(wb)) * f16ToF32(load<u16>(xb)));
  }
  return sum;
}

/** The 4 dots of q8_0 rows w0..w3 (a matrix's consecutive rows, or KV rows anywhere) with xq (nb blocks), as one f32x4. */
// @ts-ignore: decorator
@inline export function dotRows4Q8_0(xq: usize, w0: usize, w1: usize, w2: usize, w3: usize, nb: usize): v128 {
  return dotRows4Q8_0Ahead(xq, w0, w1, w2, w3, nb, false, 0);
}

/**
 * dotRows4Q8_0; with `touch` (a constant in each copy) it also loads a byte of each 64-byte line of the
 * nb · 136 bytes at `ahead` (the next 4 rows of a matrix) as it goes, so their cache misses are in flight
 * during this group's arithmetic.
 */
// @ts-ignore: decorator
@inline function dotRows4Q8_0Ahead(
  xq: usize, w0: usize, w1: usize, w2: usize, w3: usize, nb: usize, touch: bool, ahead: usize,
): v128 {
  let acc = f32x4.splat(0);
  let touched: u32 = 0;
  const xEnd = xq + nb * BLOCK_BYTES;
  for (let xb = xq, o: usize = 0; xb < xEnd; xb += BLOCK_BYTES, o += BLOCK_BYTES) {
    if (touch) touched ^= touchLines(ahead + (o << 2), 4 * BLOCK_BYTES);
    const q0 = loadQ0(xb), q1 = loadQ1(xb), q2 = loadQ2(xb), q3 = loadQ3(xb);
    const sumi = hsum4i(
      blockDot(w0 + o, q0, q1, q2, q3),
      blockDot(w1 + o, q0, q1, q2, q3),
      blockDot(w2 + o, q0, q1, q2, q3),
      blockDot(w3 + o, q0, q1, q2, q3),
    );
    const d = f32x4.mul(scales4(w0 + o, w1 + o, w2 + o, w3 + o), scaleX(xb));
    acc = f32x4.add(acc, f32x4.mul(f32x4.convert_i32x4_s(sumi), d));
  }
  if (touch) touchSink ^= touched;
  return acc;
}

/** out (d) = W (d, n) @ x (n), W q8_0 (d rows of n/32 blocks), xq = x as q8_0 blocks (n/32). */
export function matvecQ8_0(out: usize, xq: usize, w: usize, n: i32, d: i32): void {
  const nb = <usize>n / BLOCK, rowBytes = nb * BLOCK_BYTES;
  let r = 0;
  // Each group of 4 rows loads a byte of each line of the next group as it goes: the rows stream from memory
  // while the integer dots of the current ones run, instead of one after the other.
  for (; r + 8 <= d; r += 4) {
    const w0 = w + <usize>r * rowBytes;
    const dots = dotRows4Q8_0Ahead(xq, w0, w0 + rowBytes, w0 + 2 * rowBytes, w0 + 3 * rowBytes, nb, true, w0 + 4 * rowBytes);
    v128.store(out + (<usize>r << 2), dots);
  }
  for (; r + 4 <= d; r += 4) {
    const w0 = w + <usize>r * rowBytes;
    v128.store(out + (<usize>r << 2), dotRows4Q8_0(xq, w0, w0 + rowBytes, w0 + 2 * rowBytes, w0 + 3 * rowBytes, nb));
  }
  for (; r < d; r++) store<f32>(out + (<usize>r << 2), dotQ8_0(xq, w + <usize>r * rowBytes, nb));
}

/**
 * out (t, d) = X (t, n) @ W (d, n)^T, W q8_0, xq = t rows of n/32 q8_0 blocks.
 * Tiles of 4 W rows x 2 X rows: each weight byte loaded is used twice; W goes once through the
 * cache per 2 X rows. Leftover rows use the matvec dots (same per-block arithmetic, same results).
 */
export function matmulQ8_0(out: usize, xq: usize, w: usize, n: i32, d: i32, t: i32, ldo: i32): void {
  const nb = <usize>n / BLOCK, rowBytes = nb * BLOCK_BYTES, outRow = <usize>ldo << 2;
  // With few X rows (a batched decode step) the first pair of X rows over a group of 4 W rows also loads a
  // byte of each cache line of the next group as it goes, so W's misses are in flight during the arithmetic.
  // Rows of more than 1,024 elements give the pair enough arithmetic to hide the misses without it (measured:
  // the loads then cost 4% at n = 2,048).
  const small = <usize>t * rowBytes <= SMALL_X_BYTES && n <= 1024;
  let r = 0;
  for (; r + 4 <= d; r += 4) {
    const w0 = w + <usize>r * rowBytes;
    const ahead: usize = small && r + 8 <= d ? w0 + 4 * rowBytes : 0;
    let i = 0;
    if (ahead != 0 && i + 2 <= t) {
      tilePairQ8_0(out, outRow, xq, rowBytes, w0, r, i, true, ahead);
      i += 2;
    }
    for (; i + 2 <= t; i += 2) tilePairQ8_0(out, outRow, xq, rowBytes, w0, r, i, false, 0);
    if (i < t) {
      const dots = dotRows4Q8_0(xq + <usize>i * rowBytes, w0, w0 + rowBytes, w0 + 2 * rowBytes, w0 + 3 * rowBytes, nb);
      v128.store(out + <usize>i * outRow + (<usize>r << 2), dots);
    }
  }
  for (; r < d; r++) {
    const wr = w + <usize>r * rowBytes;
    for (let i = 0; i < t; i++) store<f32>(out + <usize>i * outRow + (<usize>r << 2), dotQ8_0(xq + <usize>i * rowBytes, wr, nb));
  }
}

/** X rows up to this many bytes (q8_0) count as a batched decode step for matmulQ8_0's loads ahead. */
const SMALL_X_BYTES: usize = 16 * 1024;

/** Where the loads ahead go, so they are kept (per instance: each thread has its own). */
let touchSink: u32 = 0;

/**
 * X rows i, i + 1 against the 4 W rows at w0 (rows r..r+3): out[i..i+2][r..r+4]. With `touch` (a constant
 * in each copy) it also loads a byte of each 64-byte line of the next 4 W rows at `ahead`.
 */
// @ts-ignore: decorator
@inline function tilePairQ8_0(
  out: usize, outRow: usize, xq: usize, rowBytes: usize, w0: usize, r: i32, i: i32, touch: bool, ahead: usize,
): void {
  let touched: u32 = 0;
  let o4: usize = 0;
  const xa = xq + <usize>i * rowBytes, xb = xa + rowBytes;
  let accA = f32x4.splat(0), accB = accA;
  const xEnd = xa + rowBytes;
  for (let xba = xa, wb = w0; xba < xEnd; xba += BLOCK_BYTES, wb += BLOCK_BYTES) {
    if (touch) {
      // 4 rows' worth of blocks (136 bytes) per block step: the next group's lines, in order.
      touched ^= touchLines(ahead + o4, 4 * BLOCK_BYTES);
      o4 += 4 * BLOCK_BYTES;
    }
    const xbb = xba + rowBytes;
    let q0 = loadQ0(xba), q1 = loadQ1(xba), q2 = loadQ2(xba), q3 = loadQ3(xba);
    const sumiA = hsum4i(
      blockDot(wb, q0, q1, q2, q3),
      blockDot(wb + rowBytes, q0, q1, q2, q3),
      blockDot(wb + 2 * rowBytes, q0, q1, q2, q3),
      blockDot(wb + 3 * rowBytes, q0, q1, q2, q3),
    );
    q0 = loadQ0(xbb); q1 = loadQ1(xbb); q2 = loadQ2(xbb); q3 = loadQ3(xbb);
    const sumiB = hsum4i(
      blockDot(wb, q0, q1, q2, q3),
      blockDot(wb + rowBytes, q0, q1, q2, q3),
      blockDot(wb + 2 * rowBytes, q0, q1, q2, q3),
      blockDot(wb + 3 * rowBytes, q0, q1, q2, q3),
    );
    const dw = scales4(wb, wb + rowBytes, wb + 2 * rowBytes, wb + 3 * rowBytes);
    accA = f32x4.add(accA, f32x4.mul(f32x4.convert_i32x4_s(sumiA), f32x4.mul(dw, scaleX(xba))));
    accB = f32x4.add(accB, f32x4.mul(f32x4.convert_i32x4_s(sumiB), f32x4.mul(dw, scaleX(xbb))));
  }
  v128.store(out + <usize>i * outRow + (<usize>r << 2), accA);
  v128.store(out + <usize>(i + 1) * outRow + (<usize>r << 2), accB);
  if (touch) touchSink ^= touched;
}

/** out (n/32 blocks of 34 bytes) = q8_0(x (n)): d = max|x|/127 as f16, q = nearest-even(x * (1/d)). */
export function quantizeQ8_0(out: usize, x: usize, n: i32): void {
  const nb = <usize>n / BLOCK;
  for (let b: usize = 0; b < nb; b++) {
    const xb = x + b * BLOCK * 4, ob = out + b * BLOCK_BYTES;
    const v0 = v128.load(xb), v1 = v128.load(xb, 16), v2 = v128.load(xb, 32), v3 = v128.load(xb, 48);
    const v4 = v128.load(xb, 64), v5 = v128.load(xb, 80), v6 = v128.load(xb, 96), v7 = v128.load(xb, 112);
    let m = f32x4.max(
      f32x4.max(f32x4.max(f32x4.abs(v0), f32x4.abs(v1)), f32x4.max(f32x4.abs(v2), f32x4.abs(v3))),
      f32x4.max(f32x4.max(f32x4.abs(v4), f32x4.abs(v5)), f32x4.max(f32x4.abs(v6), f32x4.abs(v7))),
    );
    m = f32x4.max(m, i32x4.shuffle(m, m, 2, 3, 0, 1));
    const amax = max(f32x4.extract_lane(m, 0), f32x4.extract_lane(m, 1));
    const dx: f32 = amax / 127;
    const id = f32x4.splat(amax != 0 ? <f32>127 / amax : 0);
    store<u16>(ob, <u16>f32ToF16(dx));
    const q0 = i16x8.narrow_i32x4_s(quantize4(v0, id), quantize4(v1, id));
    const q1 = i16x8.narrow_i32x4_s(quantize4(v2, id), quantize4(v3, id));
    const q2 = i16x8.narrow_i32x4_s(quantize4(v4, id), quantize4(v5, id));
    const q3 = i16x8.narrow_i32x4_s(quantize4(v6, id), quantize4(v7, id));
    v128.store(ob + 2, i8x16.narrow_i16x8_s(q0, q1));
    v128.store(ob + 18, i8x16.narrow_i16x8_s(q2, q3));
  }
}

/** nearest-even(v * id) as i32x4 (|v * id| <= 127 by construction). */
// @ts-ignore: decorator
@inline function quantize4(v: v128, id: v128): v128 {
  return i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(v, id)));
}

/** out (n) = row `row` of table (rows, n) q8_0, dequantized: d * q (exact in f32). */
export function getRowQ8_0(out: usize, table: usize, row: i32, n: i32): void {
  const nb = <usize>n / BLOCK;
  const src = table + <usize>row * nb * BLOCK_BYTES;
  for (let b: usize = 0; b < nb; b++) {
    const sb = src + b * BLOCK_BYTES, ob = out + b * BLOCK * 4;
    const d = f32x4.splat(f16ToF32(load<u16>(sb)));
    for (let c: usize = 0; c < 4; c++) {
      const q = v128.load8x8_s(sb + 2 + c * 8);
      v128.store(ob + c * 32, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(q)), d));
      v128.store(ob + c * 32 + 16, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(q)), d));
    }
  }
}
