// ggml's K-quant weight super-blocks (Q4_K, Q5_K, Q6_K; 256 elements): matvec / matmul against q8_K
// activations, getRow, and the q8_K quantizer. Dot products and their f32 order: quants.ts.
// Byte layouts (little-endian, f16 unless said):
//   Q4_K  144 B: d, dmin, scales[12] (8 6-bit scales sc_j and mins m_j), qs[128]
//         sub-block j = elements 32j..32j+31; chunk c = j >> 1: qs[32c + l] holds element 64c + l in its
//         low nibble and 64c + 32 + l in its high nibble
//   Q5_K  176 B: d, dmin, scales[12], qh[32], qs[128]; code = nibble | (bit j of qh[e mod 32]) << 4
//   Q6_K  210 B: ql[128], qh[64], scales[16] (int8, one per 16 elements), d
//         e = 128h + 32k + l: low 4 bits from ql[64h + 32(k & 1) + l] (low nibble for k < 2, else high),
//         high 2 bits = bits 2k, 2k+1 of qh[32h + l]; value (code - 32)
//   q8_K  292 B: d (f32), x[256] (int8), bsums[16] (int16, Σ of each 16 x)
// One generic implementation, instantiated with a marker type T: u8 = Q4_K, u16 = Q5_K, i8 = Q6_K.
import { f16ToF32, hsum4i } from "./convert";
import { dot16, pack2, store16 } from "./quants";
import { touchLines } from "./simd";

const XB: usize = 292; // bytes of a q8_K block

// @ts-ignore: decorator
@inline function six<T>(): bool { return isSigned<T>(); }
// @ts-ignore: decorator
@inline function five<T>(): bool { return sizeof<T>() == 2; }
/** Bytes of a weight super-block. */
// @ts-ignore: decorator
@inline function wBytes<T>(): usize { return six<T>() ? 210 : five<T>() ? 176 : 144; }

// ---- Q4_K, Q5_K ----

/**
 * The 12 packed scale bytes of the Q4_K / Q5_K block at wb as u8 lanes [sc_0..sc_7, m_0..m_7]:
 * for j < 4 sc_j = S[j] & 63, m_j = S[j + 4] & 63; for j >= 4 the low 4 bits come from S[j + 4]
 * (low / high nibble) and the top 2 bits from bits 6, 7 of S[j - 4] / S[j].
 */
// @ts-ignore: decorator
@inline function scalesMins(wb: usize): v128 {
  const v = v128.load(wb); // d, dmin, S[0..11]
  const a = i8x16.shuffle(v, v, 4, 5, 6, 7, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15);
  const low = v128.or(
    v128.and(a, i8x16(63, 63, 63, 63, 15, 15, 15, 15, 63, 63, 63, 63, 0, 0, 0, 0)),
    v128.and(i16x8.shr_u(a, 4), i8x16(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 15, 15, 15, 15)),
  );
  const b = i8x16.shuffle(v, i8x16.splat(0), 16, 16, 16, 16, 4, 5, 6, 7, 16, 16, 16, 16, 8, 9, 10, 11);
  const top = v128.and(i16x8.shr_u(b, 2), i8x16(0, 0, 0, 0, 48, 48, 48, 48, 0, 0, 0, 0, 48, 48, 48, 48));
  return v128.or(low, top);
}

/** Lane 0 / lane 1 of an i16x8 in all 8 lanes. */
// @ts-ignore: decorator
@inline function lane0(v: v128): v128 { return i8x16.shuffle(v, v, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1); }
// @ts-ignore: decorator
@inline function lane1(v: v128): v128 { return i8x16.shuffle(v, v, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3); }
/** The i16 lanes of v moved down by 2 (lanes 2..7 to 0..5). */
// @ts-ignore: decorator
@inline function down2(v: v128): v128 { return i8x16.shuffle(v, v, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3); }

/**
 * sc_a · Σ c·x over sub-block a (codes l0, l1; q8_K codes at x) plus sc_b · Σ c·x over sub-block b
 * (codes u0, u1; at x + 32), sc_a and sc_b lanes 0 and 1 of sc, as i32x4 lanes.
 */
// @ts-ignore: decorator
@inline function chunkK(x: usize, l0: v128, l1: v128, u0: v128, u1: v128, sc: v128): v128 {
  const pl = i16x8.add(dot16(x, l0), dot16(x + 16, l1)); // |lane| <= 4·128·31
  const ph = i16x8.add(dot16(x + 32, u0), dot16(x + 48, u1));
  return i32x4.add(i32x4.dot_i16x8_s(pl, lane0(sc)), i32x4.dot_i16x8_s(ph, lane1(sc)));
}

/**
 * Σ_j sc_j Σ c·x of the Q4_K / Q5_K block at wb (scales sc = [sc_0..sc_7] as i16) with the q8_K codes
 * at xa (one activation, N = u8: the i32x4 lanes) or at xa and xb (N = u16: pack2 of both).
 * One chunk of 64 elements per iteration (sub-blocks 2c, 2c + 1: the low and high nibbles of 32 bytes
 * of qs), which keeps the loads of a chunk next to their uses.
 */
// @ts-ignore: decorator
@inline function scaledK45<T, N>(wb: usize, xa: usize, xb: usize, sc: v128): v128 {
  const f = i8x16.splat(15), b4 = i8x16.splat(16);
  let a = i32x4.splat(0), b = a;
  let h0 = five<T>() ? v128.load(wb, 16) : a, h1 = five<T>() ? v128.load(wb, 32) : a;
  let q = wb + (five<T>() ? 48 : 16);
  const qEnd = q + 128;
  for (; q < qEnd; q += 32, xa += 64, xb += 64) {
    const w0 = v128.load(q), w1 = v128.load(q, 16);
    let l0 = v128.and(w0, f), l1 = v128.and(w1, f);
    let u0 = v128.and(i16x8.shr_u(w0, 4), f), u1 = v128.and(i16x8.shr_u(w1, 4), f);
    if (five<T>()) {
      // h0, h1 shifted right by 2c: bits 0 and 1 of each byte are qh's bits 2c and 2c + 1 (16-bit
      // shifts carry bits of the next byte only to bit 8 - 2c and up), moved to bit 4.
      l0 = v128.or(l0, v128.and(i16x8.shl(h0, 4), b4));
      l1 = v128.or(l1, v128.and(i16x8.shl(h1, 4), b4));
      u0 = v128.or(u0, v128.and(i16x8.shl(h0, 3), b4));
      u1 = v128.or(u1, v128.and(i16x8.shl(h1, 3), b4));
      h0 = i16x8.shr_u(h0, 2);
      h1 = i16x8.shr_u(h1, 2);
    }
    a = i32x4.add(a, chunkK(xa, l0, l1, u0, u1, sc));
    if (sizeof<N>() == 2) b = i32x4.add(b, chunkK(xb, l0, l1, u0, u1, sc));
    sc = down2(sc);
  }
  return sizeof<N>() == 2 ? pack2(a, b) : a;
}

/** The q8_K block's bsums added in pairs: [bsums[0] + bsums[1], ..., bsums[14] + bsums[15]] as i16 lanes (|.| <= 32·128). */
// @ts-ignore: decorator
@inline function bsumPairs(xb: usize): v128 {
  return i16x8.narrow_i32x4_s(
    i32x4.extadd_pairwise_i16x8_s(v128.load(xb, 260)),
    i32x4.extadd_pairwise_i16x8_s(v128.load(xb, 276)),
  );
}

/** pack2(I, M) of the Q4_K / Q5_K block at wb and the q8_K block at xb: lanes of I add up to isum, of M to summs. */
// @ts-ignore: decorator
@inline function intsK45<T>(wb: usize, xb: usize, bs: v128): v128 {
  const sm = scalesMins(wb);
  const i = scaledK45<T, u8>(wb, xb + 4, 0, i16x8.extend_low_i8x16_u(sm));
  return pack2(i, i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_u(sm), bs));
}

/** [isum, summs] of the Q4_K / Q5_K block at wb with two q8_K blocks xa, xb, as [I_a, M_a, I_b, M_b] (codes unpacked once). */
// @ts-ignore: decorator
@inline function intsK45x2<T>(wb: usize, xa: usize, bsA: v128, xb: usize, bsB: v128): v128 {
  const sm = scalesMins(wb), mn = i16x8.extend_high_i8x16_u(sm);
  const i = scaledK45<T, u16>(wb, xa + 4, xb + 4, i16x8.extend_low_i8x16_u(sm)); // [Ia02, Ia13, Ib02, Ib13]
  const m = pack2(i32x4.dot_i16x8_s(mn, bsA), i32x4.dot_i16x8_s(mn, bsB));
  return i32x4.add(i32x4.shuffle(i, m, 0, 4, 2, 6), i32x4.shuffle(i, m, 1, 5, 3, 7));
}

// ---- Q6_K ----

/**
 * sc_j · Σ c·x over the 4 sub-blocks j0, j0 + 1 (codes c0, c1; q8_K codes at x, x + 16) and j0 + 4,
 * j0 + 5 (codes c2, c3; at x + 64, x + 80), their scales lanes 0, 1, 4, 5 of s, as i32x4 lanes.
 */
// @ts-ignore: decorator
@inline function quad6(x: usize, c0: v128, c1: v128, c2: v128, c3: v128, s: v128): v128 {
  // |lane| of each dot_i16x8_s: 2·(2·128·63)·128
  const a = i32x4.add(i32x4.dot_i16x8_s(dot16(x, c0), lane0(s)), i32x4.dot_i16x8_s(dot16(x + 16, c1), lane1(s)));
  const s4 = i8x16.shuffle(s, s, 8, 9, 10, 11, 8, 9, 10, 11, 8, 9, 10, 11, 8, 9, 10, 11); // lanes 4, 5, 4, 5, ...
  const b = i32x4.add(i32x4.dot_i16x8_s(dot16(x + 64, c2), lane0(s4)), i32x4.dot_i16x8_s(dot16(x + 80, c3), lane1(s4)));
  return i32x4.add(a, b);
}

/**
 * Σ_j sc_j Σ c·x of the Q6_K block at wb (unsigned codes; scales sc_0..7 in lo, sc_8..15 in hi as
 * i16) with the q8_K codes at xa (N = u8: the i32x4 lanes) or at xa and xb (N = u16: pack2 of both).
 * Iteration (h, k) of 4 takes the 32 bytes of ql at 64h + 32k: their low nibbles are elements
 * 128h + 32k .. + 31 (sub-blocks 8h + 2k, + 1), their high nibbles elements 128h + 64 + 32k .. + 31
 * (sub-blocks 8h + 2k + 4, + 5); the high bits are bits 2k, 2k + 1 and 2k + 4, 2k + 5 of qh[32h ..].
 */
// @ts-ignore: decorator
@inline function scaled6<N>(wb: usize, xa: usize, xb: usize, lo: v128, hi: v128): v128 {
  const f = i8x16.splat(15), m = i8x16.splat(48);
  let a = i32x4.splat(0), b = a;
  let s = lo;
  for (let h: usize = 0; h < 256; h += 128) {
    // 16-bit shifts: bits carried in from the next byte stay above bit 5 (masked off below).
    let h0 = v128.load(wb + 128 + (h >> 2)), h1 = v128.load(wb + 128 + (h >> 2), 16);
    for (let k: usize = 0; k < 64; k += 32) {
      const ql = wb + (h >> 1) + k, x = h + k;
      const l0 = v128.load(ql), l1 = v128.load(ql, 16);
      const c0 = v128.or(v128.and(l0, f), v128.and(i16x8.shl(h0, 4), m));
      const c1 = v128.or(v128.and(l1, f), v128.and(i16x8.shl(h1, 4), m));
      const c2 = v128.or(v128.and(i16x8.shr_u(l0, 4), f), v128.and(h0, m));
      const c3 = v128.or(v128.and(i16x8.shr_u(l1, 4), f), v128.and(h1, m));
      a = i32x4.add(a, quad6(xa + x, c0, c1, c2, c3, s));
      if (sizeof<N>() == 2) b = i32x4.add(b, quad6(xb + x, c0, c1, c2, c3, s));
      h0 = i16x8.shr_u(h0, 2);
      h1 = i16x8.shr_u(h1, 2);
      s = down2(s);
    }
    s = hi;
  }
  return sizeof<N>() == 2 ? pack2(a, b) : a;
}

/** 32 · Σ_j sc_j · bsums[j]: the offset of the signed Q6_K codes, as i32x4 lanes. */
// @ts-ignore: decorator
@inline function offset6(xb: usize, lo: v128, hi: v128): v128 {
  return i32x4.shl(i32x4.add(i32x4.dot_i16x8_s(lo, v128.load(xb, 260)), i32x4.dot_i16x8_s(hi, v128.load(xb, 276))), 5);
}

/** I of the Q6_K block at wb with the q8_K block at xb: lanes add up to isum. */
// @ts-ignore: decorator
@inline function ints6(wb: usize, xb: usize): v128 {
  const sc = v128.load(wb, 192), lo = i16x8.extend_low_i8x16_s(sc), hi = i16x8.extend_high_i8x16_s(sc);
  return i32x4.sub(scaled6<u8>(wb, xb + 4, 0, lo, hi), offset6(xb, lo, hi));
}

/** [Σ I_a, 0, Σ I_b, 0] of the Q6_K block at wb with two q8_K blocks xa, xb (codes unpacked once). */
// @ts-ignore: decorator
@inline function ints6x2(wb: usize, xa: usize, xb: usize): v128 {
  const sc = v128.load(wb, 192), lo = i16x8.extend_low_i8x16_s(sc), hi = i16x8.extend_high_i8x16_s(sc);
  const i = i32x4.sub(scaled6<u16>(wb, xa + 4, xb + 4, lo, hi), pack2(offset6(xa, lo, hi), offset6(xb, lo, hi)));
  return i32x4.add(i32x4.shuffle(i, i32x4.splat(0), 0, 4, 2, 4), i32x4.shuffle(i, i32x4.splat(0), 1, 4, 3, 4));
}

// ---- generic over the three types ----

/** pack2(I, M) of the block at wb with the q8_K block at xb (M = 0 for Q6_K; bs = bsumPairs(xb), unused by Q6_K). */
// @ts-ignore: decorator
@inline function ints<T>(wb: usize, xb: usize, bs: v128): v128 {
  if (six<T>()) return pack2(ints6(wb, xb), i32x4.splat(0));
  return intsK45<T>(wb, xb, bs);
}

// @ts-ignore: decorator
@inline function pairsOf<T>(xb: usize): v128 {
  return six<T>() ? i32x4.splat(0) : bsumPairs(xb);
}

/** [isum_a, summs_a, isum_b, summs_b] of the block at wb with the q8_K blocks xa, xb. */
// @ts-ignore: decorator
@inline function ints2<T>(wb: usize, xa: usize, bsA: v128, xb: usize, bsB: v128): v128 {
  if (six<T>()) return ints6x2(wb, xa, xb);
  return intsK45x2<T>(wb, xa, bsA, xb, bsB);
}

/** A super-block's f32 term for one weight row (block at wb) and the q8_K block at xb. */
// @ts-ignore: decorator
@inline function term<T>(isum: i32, summs: i32, wb: usize, xb: usize): f32 {
  const dy = load<f32>(xb);
  if (six<T>()) return (f16ToF32(load<u16>(wb, 208)) * dy) * <f32>isum;
  return (f16ToF32(load<u16>(wb)) * dy) * <f32>isum - (f16ToF32(load<u16>(wb, 2)) * dy) * <f32>summs;
}

/** The dot of one weight row w with the q8_K row xq (nb super-blocks). */
function dotRow<T>(xq: usize, w: usize, nb: usize): f32 {
  return dotRowAhead<T>(xq, w, nb, false, 0);
}

/**
 * dotRow; with `touch` (a constant in each copy) it also loads a byte of each 64-byte line of the next row at
 * `ahead` as it goes, so its cache misses are in flight during this row's arithmetic.
 */
// @ts-ignore: decorator
@inline function dotRowAhead<T>(xq: usize, w: usize, nb: usize, touch: bool, ahead: usize): f32 {
  let sum: f32 = 0;
  let touched: u32 = 0;
  const xEnd = xq + nb * XB;
  for (let xb = xq, wb = w; xb < xEnd; xb += XB, wb += wBytes<T>()) {
    if (touch) touched ^= touchLines(ahead + (wb - w), wBytes<T>());
    const p = ints<T>(wb, xb, pairsOf<T>(xb));
    const isum = i32x4.extract_lane(p, 0) + i32x4.extract_lane(p, 1);
    const summs = i32x4.extract_lane(p, 2) + i32x4.extract_lane(p, 3);
    sum += term<T>(isum, summs, wb, xb);
  }
  if (touch) touchSink ^= touched;
  return sum;
}

/** The dots of one weight row w with the q8_K rows xa and xb (its codes unpacked once for both), as lanes 0, 1. */
function dotRow2<T>(xa: usize, xb: usize, w: usize, nb: usize): v128 {
  let sumA: f32 = 0, sumB: f32 = 0;
  const xEnd = xa + nb * XB;
  for (let x = xa, y = xb, wb = w; x < xEnd; x += XB, y += XB, wb += wBytes<T>()) {
    const r = ints2<T>(wb, x, pairsOf<T>(x), y, pairsOf<T>(y)); // [I_a, M_a, I_b, M_b]
    sumA += term<T>(i32x4.extract_lane(r, 0), i32x4.extract_lane(r, 1), wb, x);
    sumB += term<T>(i32x4.extract_lane(r, 2), i32x4.extract_lane(r, 3), wb, y);
  }
  return f32x4(sumA, sumB, 0, 0);
}

// One weight row at a time: measured faster than interleaving 4 rows (the vectorized f32 steps save
// little here, and with weights streaming from DRAM four interleaved rows read 2-3x slower).
// @ts-ignore: decorator
@inline function matvec<T>(out: usize, xq: usize, w: usize, n: i32, d: i32): void {
  const nb = <usize>n / 256, rowBytes = nb * wBytes<T>();
  // Each row loads a byte of each line of the next one as it goes (see dotRowAhead).
  let r = 0;
  for (; r + 1 < d; r++) {
    const wr = w + <usize>r * rowBytes;
    store<f32>(out + (<usize>r << 2), dotRowAhead<T>(xq, wr, nb, true, wr + rowBytes));
  }
  if (r < d) store<f32>(out + (<usize>r << 2), dotRow<T>(xq, w + <usize>r * rowBytes, nb));
}

/** Each weight row against activation rows 2 at a time (its codes unpacked once per pair); an odd last row as matvec. */
// @ts-ignore: decorator
@inline function matmul<T>(out: usize, xq: usize, w: usize, n: i32, d: i32, t: i32, ldo: i32): void {
  const nb = <usize>n / 256, rowBytes = nb * wBytes<T>(), xRow = nb * XB, outRow = <usize>ldo << 2;
  for (let r = 0; r < d; r++) {
    const wr = w + <usize>r * rowBytes, o = out + (<usize>r << 2);
    let i = 0;
    for (; i + 2 <= t; i += 2) {
      const xa = xq + <usize>i * xRow;
      const v = dotRow2<T>(xa, xa + xRow, wr, nb);
      store<f32>(o + <usize>i * outRow, f32x4.extract_lane(v, 0));
      store<f32>(o + <usize>(i + 1) * outRow, f32x4.extract_lane(v, 1));
    }
    if (i < t) store<f32>(o + <usize>i * outRow, dotRow<T>(xq + <usize>i * xRow, wr, nb));
  }
}

/**
 * For getRow: codes (u8 lanes) of 16 elements of the Q4_K / Q5_K block at wb: chunk c, part k = 0, 1 the
 * low nibbles of qs[32c + 16k ..] (elements 64c + 16k ..), k = 2, 3 the high nibbles of qs[32c + 16(k - 2) ..]
 * (elements 64c + 32 + 16(k - 2) ..). Q5_K adds bit 2c + (k >> 1) of the matching qh bytes, times 16.
 */
// @ts-ignore: decorator
@inline function codesK<T>(wb: usize, c: i32, k: i32): v128 {
  const v = v128.load(wb + (five<T>() ? 48 : 16) + <usize>(32 * c + 16 * (k & 1)));
  let u = k < 2 ? v128.and(v, i8x16.splat(15)) : v128.and(i16x8.shr_u(v, 4), i8x16.splat(15));
  if (five<T>()) {
    const h = v128.load(wb + 16 + <usize>(16 * (k & 1)));
    const bit = 2 * c + (k >> 1);
    const at4 = bit <= 4 ? i16x8.shl(h, 4 - bit) : i16x8.shr_u(h, bit - 4);
    u = v128.or(u, v128.and(at4, i8x16.splat(16)));
  }
  return u;
}

/** For getRow: codes (0..63, u8 lanes) of elements 128h + 32k + 16s .. + 15 of the Q6_K block at wb. */
// @ts-ignore: decorator
@inline function codes6(wb: usize, h: i32, k: i32, s: i32): v128 {
  const ql = v128.load(wb + <usize>(64 * h + 32 * (k & 1) + 16 * s));
  const lo = k < 2 ? v128.and(ql, i8x16.splat(15)) : v128.and(i16x8.shr_u(ql, 4), i8x16.splat(15));
  const qh = i16x8.shr_u(v128.load(wb + <usize>(128 + 32 * h + 16 * s)), 2 * k);
  return v128.or(lo, v128.and(i16x8.shl(qh, 4), i8x16.splat(48)));
}

/** sc_j and m_j (0..63) of the K-quant scale bytes at s, as ggml's get_scale_min_k4. */
// @ts-ignore: decorator
@inline function scaleK(s: usize, j: usize): i32 {
  return j < 4 ? load<u8>(s + j) & 63 : (load<u8>(s + j + 4) & 15) | ((load<u8>(s + j - 4) >> 6) << 4);
}
// @ts-ignore: decorator
@inline function minK(s: usize, j: usize): i32 {
  return j < 4 ? load<u8>(s + j + 4) & 63 : (load<u8>(s + j + 4) >> 4) | ((load<u8>(s + j) >> 6) << 4);
}

/**
 * out (n) = row `row` of table (rows, n), dequantized as ggml: Q4_K / Q5_K (d·sc_j)·c - dmin·m_j,
 * Q6_K (d·sc_j)·(c - 32), every product and difference rounded to f32.
 */
// @ts-ignore: decorator
@inline function getRow<T>(out: usize, table: usize, row: i32, n: i32): void {
  const nb = <usize>n / 256;
  const src = table + <usize>row * nb * wBytes<T>();
  const zero = i16x8.splat(0);
  for (let k: usize = 0; k < nb; k++) {
    const wb = src + k * wBytes<T>(), ob = out + k * 1024;
    if (six<T>()) {
      const d = f16ToF32(load<u16>(wb, 208)), b = i16x8.splat(32);
      for (let j = 0; j < 16; j++) {
        const dsc = f32x4.splat(d * <f32>load<i8>(wb + 192 + <usize>j));
        store16(ob + <usize>(64 * j), codes6(wb, j >> 3, (j >> 1) & 3, j & 1), b, dsc, dsc, false);
      }
    } else {
      const d = f16ToF32(load<u16>(wb)), dmin = f16ToF32(load<u16>(wb, 2));
      for (let j = 0; j < 8; j++) {
        // y = (d1·c) - m1 = (d1·c) + (-m1) exactly (IEEE subtraction is addition of the negation).
        const d1 = f32x4.splat(d * <f32>scaleK(wb + 4, j)), m1 = f32x4.splat(-(dmin * <f32>minK(wb + 4, j)));
        const c = j >> 1, k0 = (j & 1) << 1;
        store16(ob + <usize>(128 * j), codesK<T>(wb, c, k0), zero, d1, m1, true);
        store16(ob + <usize>(128 * j + 64), codesK<T>(wb, c, k0 + 1), zero, d1, m1, true);
      }
    }
  }
}

// ---- exports ----

/** out (d) = W (d, n) @ x (n), W Q4_K (d rows of n/256 super-blocks), xq = x as q8_K blocks (n/256). */
export function matvecQ4_K(out: usize, xq: usize, w: usize, n: i32, d: i32): void { matvec<u8>(out, xq, w, n, d); }
export function matvecQ5_K(out: usize, xq: usize, w: usize, n: i32, d: i32): void { matvec<u16>(out, xq, w, n, d); }
export function matvecQ6_K(out: usize, xq: usize, w: usize, n: i32, d: i32): void { matvec<i8>(out, xq, w, n, d); }

/** out (t, d) = X (t, n) @ W (d, n)^T, W Q4_K / Q5_K / Q6_K, xq = t rows of n/256 q8_K blocks; row stride ldo. */
export function matmulQ4_K(out: usize, xq: usize, w: usize, n: i32, d: i32, t: i32, ldo: i32): void { matmul<u8>(out, xq, w, n, d, t, ldo); }
export function matmulQ5_K(out: usize, xq: usize, w: usize, n: i32, d: i32, t: i32, ldo: i32): void { matmul<u16>(out, xq, w, n, d, t, ldo); }
export function matmulQ6_K(out: usize, xq: usize, w: usize, n: i32, d: i32, t: i32, ldo: i32): void { matmul<i8>(out, xq, w, n, d, t, ldo); }

export function getRowQ4_K(out: usize, table: usize, row: i32, n: i32): void { getRow<u8>(out, table, row, n); }
export function getRowQ5_K(out: usize, table: usize, row: i32, n: i32): void { getRow<u16>(out, table, row, n); }
export function getRowQ6_K(out: usize, table: usize, row: i32, n: i32): void { getRow<i8>(out, table, row, n); }

/**
 * out (n/256 blocks of 292 bytes) = q8_K(x (n)) as ggml's quantize_row_q8_K: max = the x of largest
 * magnitude (the first one; NaN ignored), iscale = -127 / max, x = min(127, nearest-even(iscale · x))
 * (saturated to int8), bsums[g] = Σ of x[16g .. 16g + 15], d = 1 / iscale (f32). max = 0 gives an
 * all-zero block.
 */
export function quantizeQ8_K(out: usize, x: usize, n: i32): void {
  const nb = <usize>n / 256;
  for (let b: usize = 0; b < nb; b++) {
    const xb = x + b * 1024, ob = out + b * XB;
    // max |x| over the non-NaN x: pmax keeps the accumulator when the other operand is NaN.
    let m0 = f32x4.splat(0), m1 = m0;
    for (let i: usize = 0; i < 1024; i += 32) {
      m0 = f32x4.pmax(m0, f32x4.abs(v128.load(xb + i)));
      m1 = f32x4.pmax(m1, f32x4.abs(v128.load(xb + i, 16)));
    }
    m0 = f32x4.pmax(m0, m1);
    m0 = f32x4.pmax(m0, i32x4.shuffle(m0, m0, 2, 3, 0, 1));
    const amax = max(f32x4.extract_lane(m0, 0), f32x4.extract_lane(m0, 1));
    if (amax == 0) {
      memory.fill(ob, 0, XB);
      continue;
    }
    // The first x with |x| == amax gives the sign.
    const a = f32x4.splat(amax);
    let e: usize = 0;
    while (!v128.any_true(f32x4.eq(f32x4.abs(v128.load(xb + (e << 2))), a))) e += 4;
    while (abs(load<f32>(xb + (e << 2))) != amax) e++;
    const iscale: f32 = -127 / load<f32>(xb + (e << 2));
    const s = f32x4.splat(iscale);
    let g0 = i32x4.splat(0), g1 = g0, g2 = g0;
    for (let g: usize = 0; g < 16; g++) {
      const v = xb + g * 64;
      const q = i8x16.narrow_i16x8_s(
        i16x8.narrow_i32x4_s(quantize4(v128.load(v), s), quantize4(v128.load(v, 16), s)),
        i16x8.narrow_i32x4_s(quantize4(v128.load(v, 32), s), quantize4(v128.load(v, 48), s)),
      );
      v128.store(ob + 4 + g * 16, q);
      // Σ of the stored codes of group g, as 4 lanes; 4 groups at a time to 4 bsums.
      const gs = i32x4.extadd_pairwise_i16x8_s(i16x8.extadd_pairwise_i8x16_s(q));
      const k = g & 3;
      if (k == 0) g0 = gs;
      else if (k == 1) g1 = gs;
      else if (k == 2) g2 = gs;
      else {
        const sums = hsum4i(g0, g1, g2, gs);
        v128.store64_lane(ob + 260 + (g >> 2) * 8, i16x8.narrow_i32x4_s(sums, sums), 0);
      }
    }
    store<f32>(ob, 1 / iscale);
  }
}

/** nearest-even(v * s) as i32x4 (NaN gives 0, out-of-range values saturate). */
// @ts-ignore: decorator
@inline function quantize4(v: v128, s: v128): v128 {
  return i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(s, v)));
}

/** Where matvec's loads ahead go, so they are kept (per instance: each thread has its own). */
let touchSink: u32 = 0;
