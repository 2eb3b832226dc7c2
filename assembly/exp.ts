// A SIMD f32 exp for softmax and silu.
//
// Cephes' expf: n = round(x log2 e), r = x - n ln 2 (ln 2 split in two so r is exact enough),
// e^r = 1 + r + r^2 P(r) with P of degree 5 on |r| <= ln2/2, times 2^n. The 2^n is applied as two factors
// 2^(n>>1) * 2^(n - (n>>1)), each a normal f32, so overflow gives +inf and underflow rounds
// gradually through the subnormals to 0, without a select. Measured against float64 Math.exp over
// [-104, 89] (test/kernels.test.ts): under 1 ulp (max 0.99 over 2M points). NaN in gives NaN out.

const LOG2E: f32 = 1.44269504088896341;
const LN2_HI: f32 = 0.693359375;
const LN2_LO: f32 = -2.12194440e-4;
const P0: f32 = 1.9875691500e-4;
const P1: f32 = 1.3981999507e-3;
const P2: f32 = 8.3334519073e-3;
const P3: f32 = 4.1665795894e-2;
const P4: f32 = 1.6666665459e-1;
const P5: f32 = 5.0000001201e-1;

/** e^x for 4 f32 lanes. */
// @ts-ignore: decorator
@inline export function expF32x4(x: v128): v128 {
  // Beyond these, e^x is +inf or rounds to 0 anyway; clamping keeps n in i32 and 2^n factors normal.
  x = f32x4.max(f32x4.min(x, f32x4.splat(89)), f32x4.splat(-104));
  const fn = f32x4.nearest(f32x4.mul(x, f32x4.splat(LOG2E)));
  const r = f32x4.sub(f32x4.sub(x, f32x4.mul(fn, f32x4.splat(LN2_HI))), f32x4.mul(fn, f32x4.splat(LN2_LO)));
  let p = f32x4.add(f32x4.mul(f32x4.splat(P0), r), f32x4.splat(P1));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(P2));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(P3));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(P4));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(P5));
  const er = f32x4.add(f32x4.add(f32x4.mul(p, f32x4.mul(r, r)), r), f32x4.splat(1));
  const n = i32x4.trunc_sat_f32x4_s(fn);
  const n1 = i32x4.shr_s(n, 1);
  const scale1 = i32x4.shl(i32x4.add(n1, i32x4.splat(127)), 23);
  const scale2 = i32x4.shl(i32x4.add(i32x4.sub(n, n1), i32x4.splat(127)), 23);
  return f32x4.mul(f32x4.mul(er, scale1), scale2);
}

/** e^x for one f32, by the same arithmetic as expF32x4 (so tails match the vector body). */
export function expF32(x: f32): f32 {
  return f32x4.extract_lane(expF32x4(f32x4.splat(x)), 0);
}
