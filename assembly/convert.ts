// Conversions between f32 and the 16-bit float types (f16, bf16), scalar and SIMD, plus the small
// vector helpers every kernel file shares (horizontal sums).
//
// f16 -> f32 on the hot paths (matvecF16, matmulF16) works on 8 halves at once in the i16 lanes:
//   hi16 = sign | exponent | top 7 mantissa bits   = (h >>s 3) & 0x8fff
//   lo16 = low 3 mantissa bits                     = h << 13
// Interleaved into i32 lanes these are the f32 bits (sign, e, m << 13): the f16 value times 2^-112,
// exactly, for every finite f16 (a subnormal f16 becomes a subnormal f32, ±0 stays ±0).
//   matvecF16 folds 2^56 into x and 2^56 into the sums (so any |x| < 2^72 stays finite), so
//     each product is exactly w * x * 2^-56 and the result exactly the sum of w * x.
//   matmulF16 adds 112 to the exponent field instead (f16HiHalvesBiased), right for normal f16 only.
// In both, 8 weights with a zero exponent field (subnormal or ±0) take the general conversion
// f16x4Exact: in matmul for correctness, in matvec for speed (x86 multiplies f32 subnormals
// ~100x slower). inf/NaN weights are not supported on these paths (they read as finite values
// >= 2^16); f16x4Exact, getRowF16 and the scalar f16ToF32 handle them.

/** 2^112 and 2^-14 (the smallest normal f16). */
export const TWO_POW_112: f32 = 5.192296858534828e33;
export const TWO_POW_56: f32 = 72057594037927936.0;
export const TWO_POW_M56: f32 = 1.3877787807814457e-17;
const TWO_POW_M14: f32 = 6.103515625e-5;

// ---- scalar ----

/** binary16 bits -> f32, exact for every input (subnormals, ±0, inf, NaN). */
export function f16ToF32(h: u32): f32 {
  const sign = (h & 0x8000) << 16;
  const mag = h & 0x7fff;
  if (mag >= 0x7c00) return reinterpret<f32>(sign | 0x7f800000 | ((mag & 0x3ff) << 13));
  if (mag >= 0x400) return reinterpret<f32>(sign | ((mag << 13) + (112 << 23)));
  // Subnormal or zero: mag * 2^-24 is exact in f32.
  return reinterpret<f32>(sign | reinterpret<u32>(<f32>mag * 5.9604644775390625e-8));
}

/** f32 -> binary16 bits, round to nearest even (overflow -> inf, NaN stays NaN). As dtype.ts f32ToF16. */
export function f32ToF16(value: f32): u32 {
  const x = reinterpret<u32>(value);
  const sign = (x >>> 16) & 0x8000;
  const exp = <i32>((x >>> 23) & 0xff);
  let mant = x & 0x7fffff;
  if (exp == 0xff) return sign | 0x7c00 | (mant != 0 ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    // Subnormal half (or zero): shift the implicit 1 in and round.
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = <u32>(14 - e);
    const half = <u32>1 << (shift - 1);
    const rest = mant & ((<u32>1 << shift) - 1);
    let h = mant >>> shift;
    if (rest > half || (rest == half && (h & 1) != 0)) h++;
    return sign | h;
  }
  let h = (<u32>e << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest == 0x1000 && (h & 1) != 0)) h++; // may carry into the exponent: still correct
  return sign | h;
}

/** bfloat16 bits -> f32 (exact). */
// @ts-ignore: decorator
@inline export function bf16ToF32(b: u32): f32 {
  return reinterpret<f32>(b << 16);
}

// ---- K / V elements: f32, or bf16 decoded in registers ----
// The attention kernels are generic over the cache's element type T: f32, or u16 holding bf16 bits.
// sizeof<T>() is a compile-time constant, so each instantiation keeps only its own branch.

/** The element at p as f32 (bf16 decoded exactly: it is the upper half of an f32). */
// @ts-ignore: decorator
@inline export function loadAsF32<T>(p: usize): f32 {
  if (sizeof<T>() == 2) return reinterpret<f32>(<u32>load<u16>(p) << 16);
  return load<f32>(p);
}

/**
 * The 4 consecutive elements at p as f32x4 (bf16 decoded exactly: each half moved to the top of a
 * zeroed lane; measured ~15% faster in attentionBf16 than a widening load and a shift).
 */
// @ts-ignore: decorator
@inline export function load4AsF32<T>(p: usize): v128 {
  if (sizeof<T>() == 2) return bf16LoToF32x4(v128.load64_zero(p));
  return v128.load(p);
}

// ---- SIMD: 16-bit floats -> f32x4 ----

/** Lanes 0..3 (lo) / 4..7 (hi) of an i16x8 of bf16 bits as f32x4 (bf16 is the upper half of an f32). */
// @ts-ignore: decorator
@inline export function bf16LoToF32x4(h: v128): v128 {
  return i16x8.shuffle(i16x8.splat(0), h, 0, 8, 1, 9, 2, 10, 3, 11);
}
// @ts-ignore: decorator
@inline export function bf16HiToF32x4(h: v128): v128 {
  return i16x8.shuffle(i16x8.splat(0), h, 4, 12, 5, 13, 6, 14, 7, 15);
}

/** The 16-bit high halves of (f16 value * 2^-112) as f32, for 8 f16 lanes; see the file comment. */
// @ts-ignore: decorator
@inline export function f16HiHalves(h: v128): v128 {
  return v128.and(i16x8.shr_s(h, 3), i16x8.splat(<i16>0x8fff));
}
/** The same plus 112 in the exponent field: the high halves of the f16 value itself (normal f16 only). */
// @ts-ignore: decorator
@inline export function f16HiHalvesBiased(h: v128): v128 {
  return i16x8.add(f16HiHalves(h), i16x8.splat(112 << 7));
}
/** The 16-bit low halves of the same f32s. */
// @ts-ignore: decorator
@inline export function f16LoHalves(h: v128): v128 {
  return i16x8.shl(h, 13);
}
/** Interleaves low and high halves into lanes 0..3 / 4..7 as f32x4. */
// @ts-ignore: decorator
@inline export function joinLo(lo16: v128, hi16: v128): v128 {
  return i16x8.shuffle(lo16, hi16, 0, 8, 1, 9, 2, 10, 3, 11);
}
// @ts-ignore: decorator
@inline export function joinHi(lo16: v128, hi16: v128): v128 {
  return i16x8.shuffle(lo16, hi16, 4, 12, 5, 13, 6, 14, 7, 15);
}

/**
 * Whether no lane of the four i16x8 of f16 bits has a zero exponent field (subnormal or ±0), so the
 * fast path may take them. ±0 would be fine there but is rare enough in trained weights to share
 * the one cheap test: the unsigned minimum of the exponent fields is nonzero.
 */
// @ts-ignore: decorator
@inline export function allNormal4(h0: v128, h1: v128, h2: v128, h3: v128): bool {
  const e = i16x8.splat(0x7c00);
  const min01 = i16x8.min_u(v128.and(h0, e), v128.and(h1, e));
  const min23 = i16x8.min_u(v128.and(h2, e), v128.and(h3, e));
  return i16x8.all_true(i16x8.min_u(min01, min23));
}
/** The same test for one vector. */
// @ts-ignore: decorator
@inline export function allNormal(h: v128): bool {
  return i16x8.all_true(v128.and(h, i16x8.splat(0x7c00)));
}
/** The same test for two vectors. */
// @ts-ignore: decorator
@inline export function allNormal2(h0: v128, h1: v128): bool {
  const e = i16x8.splat(0x7c00);
  return i16x8.all_true(i16x8.min_u(v128.and(h0, e), v128.and(h1, e)));
}

/**
 * Exact f16 -> f32 for 4 lanes given as u32 (zero-extended): normals by an exponent rebias,
 * subnormals as (2^-14 + m 2^-24) - 2^-14, inf/NaN by forcing the exponent to all ones.
 */
// @ts-ignore: decorator
@inline export function f16x4Exact(h: v128): v128 {
  const sign = i32x4.shl(v128.and(h, i32x4.splat(0x8000)), 16);
  const mag13 = i32x4.shl(v128.and(h, i32x4.splat(0x7fff)), 13);
  const normal = i32x4.add(mag13, i32x4.splat(112 << 23));
  const subnormal = f32x4.sub(v128.or(mag13, i32x4.splat(113 << 23)), f32x4.splat(TWO_POW_M14));
  const isSubnormal = i32x4.lt_s(mag13, i32x4.splat(1 << 23));
  const infNan = v128.and(i32x4.gt_s(mag13, i32x4.splat(0x0f7fffff)), i32x4.splat(0x7f800000));
  return v128.or(v128.or(v128.bitselect(subnormal, normal, isSubnormal), infNan), sign);
}

// ---- SIMD: f32x4 -> rounded to 16-bit floats, kept as f32 ----

/** Rounds 4 f32 lanes to the nearest f16 value (ties to even), as f32. As dtype.ts roundF16. */
// @ts-ignore: decorator
@inline export function roundF16x4(x: v128): v128 {
  const sign = v128.and(x, i32x4.splat(0x80000000));
  const a = v128.andnot(x, i32x4.splat(0x80000000));
  // Normal range: round the mantissa to 10 bits (a carry into the exponent is still correct).
  const odd = v128.and(i32x4.shr_u(a, 13), i32x4.splat(1));
  let normal = v128.and(i32x4.add(i32x4.add(a, i32x4.splat(0xfff)), odd), i32x4.splat(0xffffe000));
  // Above 65504 after rounding (this includes inf) becomes inf.
  normal = v128.bitselect(i32x4.splat(0x7f800000), normal, i32x4.gt_s(normal, i32x4.splat(0x477fe000)));
  // Subnormal range (|x| < 2^-14): 0.5 has an ulp of 2^-24, so adding it rounds to that grid.
  const subnormal = f32x4.sub(f32x4.add(a, f32x4.splat(0.5)), f32x4.splat(0.5));
  const rounded = v128.bitselect(subnormal, normal, f32x4.lt(a, f32x4.splat(TWO_POW_M14)));
  // NaN stays NaN (its bits are kept).
  return v128.bitselect(x, v128.or(rounded, sign), f32x4.ne(x, x));
}

/** Rounds 4 f32 lanes to the nearest bf16 (ties to even), as f32; NaN becomes a quiet NaN. */
// @ts-ignore: decorator
@inline export function roundBf16x4(x: v128): v128 {
  const odd = v128.and(i32x4.shr_u(x, 16), i32x4.splat(1));
  const rounded = v128.and(i32x4.add(i32x4.add(x, i32x4.splat(0x7fff)), odd), i32x4.splat(0xffff0000));
  const quietNan = v128.and(v128.or(x, i32x4.splat(0x00400000)), i32x4.splat(0xffff0000));
  return v128.bitselect(quietNan, rounded, f32x4.ne(x, x));
}

// ---- horizontal sums ----

/** Sum of the 4 lanes of an f32x4, as (l0 + l2) + (l1 + l3). */
// @ts-ignore: decorator
@inline export function hsum(a: v128): f32 {
  const pairs = f32x4.add(a, i32x4.shuffle(a, a, 2, 3, 0, 1));
  return f32x4.extract_lane(pairs, 0) + f32x4.extract_lane(pairs, 1);
}

/** [hsum(a0), hsum(a1), hsum(a2), hsum(a3)] with the same summation order as hsum. */
// @ts-ignore: decorator
@inline export function hsum4(a0: v128, a1: v128, a2: v128, a3: v128): v128 {
  const u01 = f32x4.add(i32x4.shuffle(a0, a1, 0, 4, 1, 5), i32x4.shuffle(a0, a1, 2, 6, 3, 7));
  const u23 = f32x4.add(i32x4.shuffle(a2, a3, 0, 4, 1, 5), i32x4.shuffle(a2, a3, 2, 6, 3, 7));
  return f32x4.add(i32x4.shuffle(u01, u23, 0, 1, 4, 5), i32x4.shuffle(u01, u23, 2, 3, 6, 7));
}

/** [sum(s0), sum(s1), sum(s2), sum(s3)] of four i32x4 (integer: order does not matter). */
// @ts-ignore: decorator
@inline export function hsum4i(s0: v128, s1: v128, s2: v128, s3: v128): v128 {
  const u01 = i32x4.add(i32x4.shuffle(s0, s1, 0, 4, 1, 5), i32x4.shuffle(s0, s1, 2, 6, 3, 7));
  const u23 = i32x4.add(i32x4.shuffle(s2, s3, 0, 4, 1, 5), i32x4.shuffle(s2, s3, 2, 6, 3, 7));
  return i32x4.add(i32x4.shuffle(u01, u23, 0, 1, 4, 5), i32x4.shuffle(u01, u23, 2, 3, 6, 7));
}
