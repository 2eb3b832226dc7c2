// A SIMD f32 exp for softmax and silu.
//
// Cephes' expf: n = round(x log2 e), r = x - n ln 2 (ln 2 split in two so r is exact enough),
// e^r = 1 + r + r^2 P(r) with P of degree 5 on |r| <= ln2/2, times 2^n. The 2^n is applied as two factors
// 2^(n>>1) * 2^(n - (n>>1)), each a normal f32, so overflow gives +inf and underflow rounds
// gradually through the subnormals to 0, without a select. Measured against float64 Math.exp over
// [-104, 89] (test/kernels.test.ts): under 1 ulp (max 0.99 over 2M points). NaN in gives NaN out.

import { madd } from "./simd";

const LOG2E: f32 = 1.44269504088896341;
const LN2_HI: f32 = 0.693359375;
const LN2_LO: f32 = -2.12194440e-4;
const P0: f32 = 1.9875691500e-4;
const P1: f32 = 1.3981999507e-3;
const P2: f32 = 8.3334519073e-3;
const P3: f32 = 4.1665795894e-2;
const P4: f32 = 1.6666665459e-1;
const P5: f32 = 5.0000001201e-1;
const ROUNDER: f32 = 12582912; // 1.5 · 2^23
const ROUNDER_BITS: i32 = 0x4b400000;

/** e^x for 4 f32 lanes. */
// @ts-ignore: decorator
@inline export function expF32x4(x: v128): v128 {
  // Beyond these, e^x is +inf or rounds to 0 anyway; clamping keeps n in i32 and 2^n factors normal.
  // pmin/pmax are one instruction where min/max are several; with x first, a NaN x stays NaN.
  x = f32x4.pmax(f32x4.pmin(x, splatOf(EXP_MAX)), splatOf(EXP_MIN));
  // x log2 e + 1.5·2^23 rounds to an integer n held in the low mantissa bits (ties to even, as nearest).
  const shifted = f32x4.add(f32x4.mul(x, splatOf(EXP_LOG2E)), splatOf(EXP_ROUNDER));
  const fn = f32x4.sub(shifted, splatOf(EXP_ROUNDER));
  const r = f32x4.sub(f32x4.sub(x, f32x4.mul(fn, splatOf(EXP_LN2_HI))), f32x4.mul(fn, splatOf(EXP_LN2_LO)));
  let p = f32x4.add(f32x4.mul(splatOf(EXP_P0), r), splatOf(EXP_P1));
  p = f32x4.add(f32x4.mul(p, r), splatOf(EXP_P2));
  p = f32x4.add(f32x4.mul(p, r), splatOf(EXP_P3));
  p = f32x4.add(f32x4.mul(p, r), splatOf(EXP_P4));
  p = f32x4.add(f32x4.mul(p, r), splatOf(EXP_P5));
  const er = f32x4.add(f32x4.add(f32x4.mul(p, f32x4.mul(r, r)), r), splatOf(EXP_ONE));
  const n = i32x4.sub(shifted, intSplatOf(I32_ROUNDER_BITS));
  const n1 = i32x4.shr_s(n, 1);
  const scale1 = i32x4.shl(i32x4.add(n1, intSplatOf(I32_127)), 23);
  const scale2 = i32x4.shl(i32x4.add(i32x4.sub(n, n1), intSplatOf(I32_127)), 23);
  return f32x4.mul(f32x4.mul(er, scale1), scale2);
}

/** e^x for one f32, by the same arithmetic as expF32x4 (so tails match the vector body). */
export function expF32(x: f32): f32 {
  return f32x4.extract_lane(expF32x4(f32x4.splat(x)), 0);
}

// A cheaper e^x for sums that need ~1e-6, not 1 ulp (SparQ's α): 2^t with t = x log2 e rounded once,
// n = t rounded to the nearest integer and f = t − n ∈ [−0.5, 0.5], 2^f from a degree-5 polynomial
// fitted for relative error on that interval (max 2.2e-7 in f32 Horner), 2^n added to the exponent
// bits. The roundings of t and of log2 e add a relative error of up to about |x|·2^-23, which matters
// only for terms far below the largest one in a sum. x is clamped to [-87, 0]: for x < -87 the result
// is about 1.6e-38 instead of smaller (nothing, next to a term of 1); x > 0 is not supported.
const A0: f32 = 0.0013266975292935967;
const A1: f32 = 0.00967546459287405;
const A2: f32 = 0.05550742521882057;
const A3: f32 = 0.24022121727466583;
const A4: f32 = 0.6931469440460205;
const A5: f32 = 1.0000001192092896;

// The constants above in static memory, each broadcast to 4 lanes by v128.load32_splat where it is used.
// V8 builds a v128 constant with several instructions at each use inside a loop (it does not keep it in a
// register), which made the exps cost half again as much as a load from L1 (measured: 0.66 → 0.41 ns per
// value of an approximate exp in a loop).
const F32_CONSTANTS: usize = memory.data<f32>([89, -104, LOG2E, ROUNDER, LN2_HI, LN2_LO, P0, P1, P2, P3, P4, P5, 1, -87, A0, A1, A2, A3, A4, A5]);
const EXP_MAX = 0;
const EXP_MIN = 1;
const EXP_LOG2E = 2;
const EXP_ROUNDER = 3;
const EXP_LN2_HI = 4;
const EXP_LN2_LO = 5;
const EXP_P0 = 6;
const EXP_P1 = 7;
const EXP_P2 = 8;
const EXP_P3 = 9;
const EXP_P4 = 10;
const EXP_P5 = 11;
const EXP_ONE = 12;
const APPROX_MIN = 13;
const APPROX_A0 = 14;
const APPROX_A1 = 15;
const APPROX_A2 = 16;
const APPROX_A3 = 17;
const APPROX_A4 = 18;
const APPROX_A5 = 19;
/** The exponent bias 127 and 1.5·2^23's bits. */
const I32_CONSTANTS: usize = memory.data<i32>([127, ROUNDER_BITS]);
const I32_127 = 0;
const I32_ROUNDER_BITS = 1;

/** Constant i of F32_CONSTANTS in all 4 lanes. */
// @ts-ignore: decorator
@inline function splatOf(i: usize): v128 {
  return v128.load32_splat(F32_CONSTANTS + (i << 2));
}

/** Constant i of I32_CONSTANTS in all 4 lanes. */
// @ts-ignore: decorator
@inline function intSplatOf(i: usize): v128 {
  return v128.load32_splat(I32_CONSTANTS + (i << 2));
}

/** ≈ e^x for 4 f32 lanes, x ≤ 0 (see above). */
// @ts-ignore: decorator
@inline export function expApproxF32x4(x: v128): v128 {
  const t = f32x4.mul(f32x4.pmax(x, splatOf(APPROX_MIN)), splatOf(EXP_LOG2E));
  // t + 1.5·2^23 rounds t to an integer n held in the low mantissa bits (|n| < 2^22).
  const shifted = f32x4.add(t, splatOf(EXP_ROUNDER));
  const n = f32x4.sub(shifted, splatOf(EXP_ROUNDER));
  const f = f32x4.sub(t, n);
  let p = madd(splatOf(APPROX_A0), f, splatOf(APPROX_A1));
  p = madd(p, f, splatOf(APPROX_A2));
  p = madd(p, f, splatOf(APPROX_A3));
  p = madd(p, f, splatOf(APPROX_A4));
  p = madd(p, f, splatOf(APPROX_A5));
  return i32x4.add(p, i32x4.shl(i32x4.sub(shifted, intSplatOf(I32_ROUNDER_BITS)), 23));
}

/** expApproxF32x4 for one f32 (not a kernel: exported so the tests can measure its accuracy). */
export function expApproxF32(x: f32): f32 {
  return f32x4.extract_lane(expApproxF32x4(f32x4.splat(x)), 0);
}
