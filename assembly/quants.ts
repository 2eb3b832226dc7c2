// Kernels for ggml's quantized weight types: the legacy 32-element blocks Q4_0, Q4_1, Q5_0, Q5_1
// (quants-32.ts) and the 256-element K-quants Q4_K, Q5_K, Q6_K (quants-k.ts), plus the activation
// quantizers they pair with (q8_0 in q8_0.ts, q8_1 in quants-32.ts, q8_K in quants-k.ts). This file
// holds what both share and gathers their exports. Layouts: dev/notes/ggml-quant-formats.md §2, §3.
//
// The dot of a weight row with an activation row is ggml's generic vec_dot for the pair (notes §6):
// exact integer sums per (sub-)block, then a fixed sequence of f32 operations per block, the blocks
// of a row added one after another into one f32 sum that starts at 0. Weight codes are used unsigned
// (0..15, 0..31, 0..63); the signed offsets (-8, -16, -32), the K-quant mins and Q4_1/Q5_1's m are
// applied to exact integers or as ggml applies them:
//   Q4_0 · q8_0   sumi = Σ c·x - 8·Σ x                      sum += (f32(sumi) * d) * dx
//   Q5_0 · q8_0   sumi = Σ c·x - 16·Σ x                     sum += (d * dx) * f32(sumi)
//   Q4_1 · q8_1   sumi = Σ c·x                              sum += ((d * dx) * f32(sumi) + m * sx)
//   Q5_1 · q8_1   (as Q4_1)
//   Q4_K · q8_K   isum = Σ_j sc_j·Σ_{e in j} c·x, summs = Σ_j m_j·(bsums[2j] + bsums[2j+1])
//                                            sum += ((d * dy) * f32(isum) - (dmin * dy) * f32(summs))
//   Q5_K · q8_K   (as Q4_K)
//   Q6_K · q8_K   isum = Σ_j sc_j·(Σ_{e in j} c·x - 32·bsums[j])   sum += (d * dy) * f32(isum)
// (c the weight codes, x the activation's int8; d, m, dmin the weight block's f16 fields as f32; dx,
// sx the q8_0 / q8_1 block's f16 d and s; dy the q8_K block's f32 d; every operation one f32
// rounding, in the order the parentheses show.) The legacy lines are ggml's generic code operation for
// operation. The K-quant lines differ from ggml's generic code only in the f32 order: ggml splits the
// integer sums into 8 lanes (element index mod 8) and keeps 8 f32 partial sums per row; here each
// super-block's integer sums are whole (exact: |isum| < 2^31, see the bounds at the operations).
//
// No fused multiply-add anywhere on these f32 steps, and the relaxed build uses relaxed instructions
// only for integer dot products whose result is exact and the same on every engine; so the portable
// and the relaxed build give the same bits, and src/kernels/reference-quants.ts reproduces them with
// Math.fround. A row's f32 steps are the same IEEE operations whichever loop computes them (a lane of
// an f32x4 holding 4 rows, or scalar code), so a row's result does not depend on the rows around it,
// and a matvec row equals the same row of a matmul.
//
// Integer products: the relaxed build multiplies 16 int8 activations by 16 unsigned weight codes with
// i16x8.relaxed_dot_i8x16_i7x16_s (the codes, <= 63, are the 7-bit operand, where every engine
// agrees exactly; a lane holds two products, |.| <= 2·128·63 < 2^15); the portable build widens both
// to i16 and multiplies lane-wise (one product per lane and half-vector, the same bounds). Either way
// a vector of i16 partial sums, then i32x4.dot_i16x8_s by a sub-block scale (or by 1) gives i32 lanes
// that add up to the exact sum.
//
// Loop structure (measured, x86-64, V8): the legacy kernels take 4 weight rows at a time, sharing each
// activation block's loads and the per-block f32 work between them; the K-quant kernels take one row at
// a time (a row's super-block already has plenty of work, and with weights streaming from DRAM four
// interleaved K-quant rows read 2-3x slower than one). matmul unpacks each weight block once for 2
// activation rows. In the legacy kernels the weight scales d, m must be finite (as in q8_0.ts, an f16
// scale is moved into an f32 lane by a shift; inf / NaN would read as a large finite value);
// f16-subnormal scales are exact everywhere.

export { quantizeQ8_1, matvecQ4_0, matvecQ4_1, matvecQ5_0, matvecQ5_1, matmulQ4_0, matmulQ4_1, matmulQ5_0, matmulQ5_1, getRowQ4_0, getRowQ4_1, getRowQ5_0, getRowQ5_1 } from "./quants-32";
export { quantizeQ8_K, matvecQ4_K, matvecQ5_K, matvecQ6_K, matmulQ4_K, matmulQ5_K, matmulQ6_K, getRowQ4_K, getRowQ5_K, getRowQ6_K } from "./quants-k";

/**
 * Σ x_e·u_e over 16 elements, as an i16x8 whose lanes add up to it: x the 16 int8 activations at
 * address x, u 16 unsigned weight codes (u8 lanes, at most 63; lane bound 2·128·63 < 2^15).
 */
// @ts-ignore: decorator
@inline export function dot16(x: usize, u: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) return i16x8.relaxed_dot_i8x16_i7x16_s(v128.load(x), u);
  return i16x8.add(
    i16x8.mul(v128.load8x8_s(x), i16x8.extend_low_i8x16_u(u)),
    i16x8.mul(v128.load8x8_s(x, 8), i16x8.extend_high_i8x16_u(u)),
  );
}

/** The f16 values at p0, p1, p2, p3 as f32x4, times 2^-112 (exact; see q8_0.ts scales4). */
// @ts-ignore: decorator
@inline export function f16x4Scaled(p0: usize, p1: usize, p2: usize, p3: usize): v128 {
  let h = v128.load16_lane(p0, i32x4.splat(0), 1);
  h = v128.load16_lane(p1, h, 3);
  h = v128.load16_lane(p2, h, 5);
  h = v128.load16_lane(p3, h, 7);
  return v128.and(i32x4.shr_s(h, 3), i32x4.splat(0x8fffffff));
}

/** [a0 + a2, a1 + a3, b0 + b2, b1 + b3]: two i32x4 half-reduced into one. */
// @ts-ignore: decorator
@inline export function pack2(a: v128, b: v128): v128 {
  return i32x4.add(i32x4.shuffle(a, b, 0, 1, 4, 5), i32x4.shuffle(a, b, 2, 3, 6, 7));
}

/** Lane sum of an i32x4 (exact). */
// @ts-ignore: decorator
@inline export function lanesSum(v: v128): i32 {
  return i32x4.extract_lane(v, 0) + i32x4.extract_lane(v, 1) + i32x4.extract_lane(v, 2) + i32x4.extract_lane(v, 3);
}

/** Stores 16 codes q (u8 lanes) as f32 (q - bias) * d (+ m when offset), to out (16 floats). */
// @ts-ignore: decorator
@inline export function store16(out: usize, q: v128, bias: v128, d: v128, m: v128, offset: bool): void {
  const lo = i16x8.sub(i16x8.extend_low_i8x16_u(q), bias), hi = i16x8.sub(i16x8.extend_high_i8x16_u(q), bias);
  let y0 = f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(lo)), d);
  let y1 = f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(lo)), d);
  let y2 = f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(hi)), d);
  let y3 = f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(hi)), d);
  if (offset) {
    y0 = f32x4.add(y0, m); y1 = f32x4.add(y1, m); y2 = f32x4.add(y2, m); y3 = f32x4.add(y3, m);
  }
  v128.store(out, y0);
  v128.store(out, y1, 16);
  v128.store(out, y2, 32);
  v128.store(out, y3, 48);
}
