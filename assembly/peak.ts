// Not a kernel: the benchmarks' measure of a build's f32 arithmetic peak on this CPU. Twelve independent
// chains of f32x4 multiply-adds (madd: fused in the relaxed build, multiply then add in the portable
// one) on registers only; 12 × 4 lanes × 2 flops per iteration.
import { madd } from "./simd";

/** Runs n iterations; returns a lane of the result so the work is kept. */
export function peakF32(n: i32): f32 {
  let a0 = f32x4.splat(1), a1 = f32x4.splat(1.1), a2 = f32x4.splat(1.2), a3 = f32x4.splat(1.3);
  let a4 = f32x4.splat(1.4), a5 = f32x4.splat(1.5), a6 = f32x4.splat(1.6), a7 = f32x4.splat(1.7);
  let a8 = f32x4.splat(1.8), a9 = f32x4.splat(1.9), a10 = f32x4.splat(2), a11 = f32x4.splat(2.1);
  const m = f32x4.splat(0.999999), c = f32x4.splat(1e-7);
  for (let i = 0; i < n; i++) {
    a0 = madd(a0, m, c); a1 = madd(a1, m, c); a2 = madd(a2, m, c); a3 = madd(a3, m, c);
    a4 = madd(a4, m, c); a5 = madd(a5, m, c); a6 = madd(a6, m, c); a7 = madd(a7, m, c);
    a8 = madd(a8, m, c); a9 = madd(a9, m, c); a10 = madd(a10, m, c); a11 = madd(a11, m, c);
  }
  const s = f32x4.add(f32x4.add(f32x4.add(a0, a1), f32x4.add(a2, a3)), f32x4.add(f32x4.add(a4, a5), f32x4.add(a6, a7)));
  return f32x4.extract_lane(f32x4.add(s, f32x4.add(f32x4.add(a8, a9), f32x4.add(a10, a11))), 0);
}

/**
 * The 8-bit product peak: twelve independent chains of the build's widest integer dot product on registers.
 * Relaxed build: i32x4.relaxed_dot_i8x16_i7x16_add_s (16 byte products and their sums per instruction);
 * portable build: i32x4.dot_i16x8_s then an add (8 products of bytes already widened to i16, as the q8_0
 * kernels use it). peakI8Products gives the products per iteration.
 */
export function peakI8(n: i32): i32 {
  let a0 = i32x4.splat(0), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
  let a8 = a0, a9 = a0, a10 = a0, a11 = a0;
  let x = i8x16.splat(3);
  const y = i8x16.splat(5);
  for (let i = 0; i < n; i++) {
    a0 = dotAdd(a0, x, y); a1 = dotAdd(a1, x, y); a2 = dotAdd(a2, x, y); a3 = dotAdd(a3, x, y);
    a4 = dotAdd(a4, x, y); a5 = dotAdd(a5, x, y); a6 = dotAdd(a6, x, y); a7 = dotAdd(a7, x, y);
    a8 = dotAdd(a8, x, y); a9 = dotAdd(a9, x, y); a10 = dotAdd(a10, x, y); a11 = dotAdd(a11, x, y);
    x = i8x16.add(x, y);
  }
  const s = i32x4.add(i32x4.add(i32x4.add(a0, a1), i32x4.add(a2, a3)), i32x4.add(i32x4.add(a4, a5), i32x4.add(a6, a7)));
  return i32x4.extract_lane(i32x4.add(s, i32x4.add(i32x4.add(a8, a9), i32x4.add(a10, a11))), 0);
}

/** acc plus the build's widest integer dot product of x and y (peakI8's step). */
// @ts-ignore: decorator
@inline function dotAdd(acc: v128, x: v128, y: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) return i32x4.relaxed_dot_i8x16_i7x16_add_s(x, y, acc);
  return i32x4.add(acc, i32x4.dot_i16x8_s(x, y));
}

/** The byte products peakI8 computes per iteration: 12 chains × 16 (relaxed) or × 8 (portable). */
export function peakI8Products(): i32 {
  return ASC_FEATURE_RELAXED_SIMD ? 12 * 16 : 12 * 8;
}
