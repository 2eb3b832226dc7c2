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
