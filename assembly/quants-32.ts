// ggml's legacy 32-element weight blocks (Q4_0, Q4_1, Q5_0, Q5_1): matvec / matmul against quantized
// activations (q8_0 for Q4_0, Q5_0; q8_1 for Q4_1, Q5_1), getRow, and the q8_1 quantizer.
// Dot products and their f32 order: quants.ts. Byte layouts (little-endian, f16 unless said):
//   Q4_0  18 B: d, qs[16]                 code c_e: e < 16 low nibble of qs[e], else high nibble of qs[e-16]
//   Q4_1  20 B: d, m, qs[16]
//   Q5_0  22 B: d, qh (u32), qs[16]       c_e = nibble | (bit e of qh) << 4
//   Q5_1  24 B: d, m, qh (u32), qs[16]
//   q8_0  34 B: d, x[32] (int8)           q8_1  36 B: d, s = f16(d_f32 · Σ x), x[32]
// One generic implementation, instantiated with a marker type T: i8 = Q4_0, u8 = Q4_1, i16 = Q5_0,
// u16 = Q5_1 (sizeof<T>() == 2: a fifth bit; unsigned: the offset types with m and q8_1 activations).
// matvec takes 4 weight rows at a time: each activation block is loaded (and, for Q4_0 / Q5_0, its
// bias·Σ x formed) once for the 4 rows, their integer sums meet in one i32x4, and the f32 steps run in
// its lanes; leftover rows run the same steps in scalar f32. matmul tiles 4 weight rows x 2 activation
// rows, unpacking each weight block once for both.
import { f16ToF32, f32ToF16, hsum4i, TWO_POW_112 } from "./convert";
import { f16x4Scaled, pack2, lanesSum, store16 } from "./quants";
import { touchLines } from "./simd";

// ---- block geometry (compile-time constants per T) ----

// @ts-ignore: decorator
@inline function five<T>(): bool { return sizeof<T>() == 2; }
// @ts-ignore: decorator
@inline function offset<T>(): bool { return !isSigned<T>(); }
/** Bytes of a weight block. */
// @ts-ignore: decorator
@inline function wBytes<T>(): usize { return 18 + (offset<T>() ? 2 : 0) + (five<T>() ? 4 : 0); }
/** Offset of the fifth bits (qh) and of the nibbles (qs) in a weight block. */
// @ts-ignore: decorator
@inline function qhAt<T>(): usize { return offset<T>() ? 4 : 2; }
// @ts-ignore: decorator
@inline function qsAt<T>(): usize { return qhAt<T>() + (five<T>() ? 4 : 0); }
/** Bytes of an activation block (q8_0 or q8_1) and the offset of its 32 int8. */
// @ts-ignore: decorator
@inline function xBytes<T>(): usize { return offset<T>() ? 36 : 34; }
// @ts-ignore: decorator
@inline function xAt<T>(): usize { return offset<T>() ? 4 : 2; }
/** The signed types' code offset (8 or 16). */
// @ts-ignore: decorator
@inline function bias<T>(): i32 { return five<T>() ? 16 : 8; }

// ---- integer part ----
// The constants the loops use are made once per call and passed down (V8 would otherwise build each
// v128 constant anew wherever it is used).

/** The masks and constants: 15 and 16 in every byte, the bit of each byte's lane (1, 2, .., 128), 1 in every i16. */
// @ts-ignore: decorator
@inline function lowNibble(): v128 { return i8x16.splat(15); }
// @ts-ignore: decorator
@inline function sixteen(): v128 { return i8x16.splat(16); }
// @ts-ignore: decorator
@inline function bitOfLane(): v128 { return i8x16(1, 2, 4, 8, 16, 32, 64, -128, 1, 2, 4, 8, 16, 32, 64, -128); }
// @ts-ignore: decorator
@inline function ones16(): v128 { return i16x8.splat(1); }

/**
 * The 4 bytes of qh at p spread: [b0 x4, b1 x4, b2 x4, b3 x4] (interleaving shuffles, which need no
 * constant); lanes [b0 x8, b1 x8] and [b2 x8, b3 x8] follow with one more each (spread0, spread1).
 */
// @ts-ignore: decorator
@inline function spread(p: usize): v128 {
  const q = v128.load32_zero(p);
  const q2 = i8x16.shuffle(q, q, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
  return i8x16.shuffle(q2, q2, 0, 1, 0, 1, 2, 3, 2, 3, 4, 5, 4, 5, 6, 7, 6, 7);
}
// @ts-ignore: decorator
@inline function spread0(s: v128): v128 { return i32x4.shuffle(s, s, 0, 0, 1, 1); }
// @ts-ignore: decorator
@inline function spread1(s: v128): v128 { return i32x4.shuffle(s, s, 2, 2, 3, 3); }

/** 16 · (the bit of each byte's lane): bytes [b x8, b' x8] to 16 · bit (e mod 8) of b, b'. */
// @ts-ignore: decorator
@inline function fifth(b: v128, bits: v128, b16: v128): v128 {
  return v128.and(i8x16.eq(v128.and(b, bits), bits), b16);
}

/** The codes of elements 0..15 (c0) and 16..31 (c1) of the weight block at wb, as u8 lanes. */
// @ts-ignore: decorator
@inline function codes0<T>(wb: usize, f: v128, bits: v128, b16: v128): v128 {
  let c = v128.and(v128.load(wb + qsAt<T>()), f);
  if (five<T>()) c = v128.or(c, fifth(spread0(spread(wb + qhAt<T>())), bits, b16));
  return c;
}
// @ts-ignore: decorator
@inline function codes1<T>(wb: usize, f: v128, bits: v128, b16: v128): v128 {
  let c = v128.and(i16x8.shr_u(v128.load(wb + qsAt<T>()), 4), f);
  if (five<T>()) c = v128.or(c, fifth(spread1(spread(wb + qhAt<T>())), bits, b16));
  return c;
}
/** For getRow: codes0 (h = 0) or codes1. */
// @ts-ignore: decorator
@inline function codes<T>(wb: usize, h: i32): v128 {
  return h == 0 ? codes0<T>(wb, lowNibble(), bitOfLane(), sixteen()) : codes1<T>(wb, lowNibble(), bitOfLane(), sixteen());
}

/**
 * The activation block's 32 int8 at x as the dot's operands: relaxed, a0 = elements 0..15 and
 * a1 = 16..31 (int8); portable, a0..a3 = elements 0..7, .., 24..31 widened to i16.
 */
// @ts-ignore: decorator
@inline function act0(x: usize): v128 { return ASC_FEATURE_RELAXED_SIMD ? v128.load(x) : v128.load8x8_s(x); }
// @ts-ignore: decorator
@inline function act1(x: usize): v128 { return ASC_FEATURE_RELAXED_SIMD ? v128.load(x, 16) : v128.load8x8_s(x, 8); }
// @ts-ignore: decorator
@inline function act2(x: usize): v128 { return ASC_FEATURE_RELAXED_SIMD ? i16x8.splat(0) : v128.load8x8_s(x, 16); }
// @ts-ignore: decorator
@inline function act3(x: usize): v128 { return ASC_FEATURE_RELAXED_SIMD ? i16x8.splat(0) : v128.load8x8_s(x, 24); }

/** Σ c·x over the block, codes c0, c1 and activations a0..a3, as i16 lanes (|.| <= 4·128·31). */
// @ts-ignore: decorator
@inline function dot32(c0: v128, c1: v128, a0: v128, a1: v128, a2: v128, a3: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) return i16x8.add(i16x8.relaxed_dot_i8x16_i7x16_s(a0, c0), i16x8.relaxed_dot_i8x16_i7x16_s(a1, c1));
  return i16x8.add(
    i16x8.add(i16x8.mul(a0, i16x8.extend_low_i8x16_u(c0)), i16x8.mul(a1, i16x8.extend_high_i8x16_u(c0))),
    i16x8.add(i16x8.mul(a2, i16x8.extend_low_i8x16_u(c1)), i16x8.mul(a3, i16x8.extend_high_i8x16_u(c1))),
  );
}

/** For the signed types: bias · Σ x of the activations a0..a3, as i16 lanes (|.| <= 4·128·16); else 0. */
// @ts-ignore: decorator
@inline function offsetSums<T>(a0: v128, a1: v128, a2: v128, a3: v128): v128 {
  if (offset<T>()) return i16x8.splat(0);
  if (ASC_FEATURE_RELAXED_SIMD) {
    const b = i8x16.splat(<i8>bias<T>());
    return i16x8.add(i16x8.relaxed_dot_i8x16_i7x16_s(a0, b), i16x8.relaxed_dot_i8x16_i7x16_s(a1, b));
  }
  return i16x8.shl(i16x8.add(i16x8.add(a0, a1), i16x8.add(a2, a3)), five<T>() ? 4 : 3);
}

/** Σ c·x (- bias·Σ x) as i32x4 lanes from the i16 lanes of dot32 and offsetSums (|difference| < 2^15). */
// @ts-ignore: decorator
@inline function widen<T>(p: v128, off: v128, one: v128): v128 {
  return i32x4.dot_i16x8_s(offset<T>() ? p : i16x8.sub(p, off), one);
}

// ---- f32 part ----

/** A block's f32 term for 4 weight rows (their blocks at w0..w3) and the activation block xb. */
// @ts-ignore: decorator
@inline function term4<T>(sumi: v128, w0: usize, w1: usize, w2: usize, w3: usize, xb: usize): v128 {
  // Weight scales times 2^-112 (f16x4Scaled), activation scales times 2^112 (exact: |dx| < 2^16): the
  // product of the two is the f32 product of the unscaled values (see q8_0.ts). For Q4_0's
  // (sumi * d) * dx the same holds: sumi * d·2^-112 rounds like sumi * d scaled, except below the
  // normal f32 range, which only an f16-subnormal d with |sumi·d| < 2^-14 reaches, and there the
  // product (an integer times 2^-136) is exact.
  const s = f32x4.convert_i32x4_s(sumi);
  const dw = f16x4Scaled(w0, w1, w2, w3), dx = f32x4.splat(f16ToF32(load<u16>(xb)) * TWO_POW_112);
  if (!offset<T>() && !five<T>()) return f32x4.mul(f32x4.mul(s, dw), dx);
  const t = f32x4.mul(f32x4.mul(dw, dx), s);
  if (!offset<T>()) return t;
  const sx = f32x4.splat(f16ToF32(load<u16>(xb, 2)) * TWO_POW_112);
  return f32x4.add(t, f32x4.mul(f16x4Scaled(w0 + 2, w1 + 2, w2 + 2, w3 + 2), sx));
}

/** The same term for one weight row, in scalar f32 (the same operations as each lane of term4). */
// @ts-ignore: decorator
@inline function term1<T>(sumi: i32, wb: usize, xb: usize): f32 {
  const dw = f16ToF32(load<u16>(wb)), dx = f16ToF32(load<u16>(xb));
  if (!offset<T>() && !five<T>()) return (<f32>sumi * dw) * dx;
  const t = (dw * dx) * <f32>sumi;
  if (!offset<T>()) return t;
  return t + f16ToF32(load<u16>(wb, 2)) * f16ToF32(load<u16>(xb, 2));
}

// ---- rows ----

/** From pack2(a_r, b_r) of rows r and r + 1: [Σ a_r, Σ a_r+1, Σ b_r, Σ b_r+1]. */
// @ts-ignore: decorator
@inline function pairSums(p0: v128, p1: v128): v128 {
  return i32x4.add(i32x4.shuffle(p0, p1, 0, 4, 2, 6), i32x4.shuffle(p0, p1, 1, 5, 3, 7));
}
/** From pairSums of rows (0, 1) and (2, 3): the four a sums (lanes 0, 1 of each) ... */
// @ts-ignore: decorator
@inline function firstSums(u01: v128, u23: v128): v128 { return i32x4.shuffle(u01, u23, 0, 1, 4, 5); }
/** ... and the four b sums (lanes 2, 3 of each). */
// @ts-ignore: decorator
@inline function secondSums(u01: v128, u23: v128): v128 { return i32x4.shuffle(u01, u23, 2, 3, 6, 7); }


/** The dot of one weight row w with the activation row xq (nb blocks); equal to each lane of dotRows4. */
export function dotRow<T>(xq: usize, w: usize, nb: usize): f32 {
  const f = lowNibble(), bits = bitOfLane(), b16 = sixteen(), one = ones16();
  let sum: f32 = 0;
  const xEnd = xq + nb * xBytes<T>();
  for (let xb = xq, wb = w; xb < xEnd; xb += xBytes<T>(), wb += wBytes<T>()) {
    const x = xb + xAt<T>();
    const a0 = act0(x), a1 = act1(x), a2 = act2(x), a3 = act3(x);
    const p = dot32(codes0<T>(wb, f, bits, b16), codes1<T>(wb, f, bits, b16), a0, a1, a2, a3);
    sum += term1<T>(lanesSum(widen<T>(p, offsetSums<T>(a0, a1, a2, a3), one)), wb, xb);
  }
  return sum;
}

/**
 * The dots of the 4 weight rows at w0..w3 (a matrix's consecutive rows, or KV rows anywhere) with xq
 * (nb blocks), as one f32x4.
 */
export function dotRows4<T>(xq: usize, w0: usize, w1: usize, w2: usize, w3: usize, nb: usize): v128 {
  return dotRows4Ahead<T>(xq, w0, w1, w2, w3, nb, false, 0);
}

/**
 * dotRows4; with `touch` (a constant in each copy) it also loads a byte of each 64-byte line of the next 4
 * rows at `ahead` (nb · 4 blocks) as it goes, so their cache misses are in flight during this group's arithmetic.
 */
// @ts-ignore: decorator
@inline function dotRows4Ahead<T>(
  xq: usize, w0: usize, w1: usize, w2: usize, w3: usize, nb: usize, touch: bool, ahead: usize,
): v128 {
  const f = lowNibble(), bits = bitOfLane(), b16 = sixteen(), one = ones16();
  let acc = f32x4.splat(0);
  let touched: u32 = 0;
  const xEnd = xq + nb * xBytes<T>();
  for (let xb = xq, o: usize = 0; xb < xEnd; xb += xBytes<T>(), o += wBytes<T>()) {
    if (touch) touched ^= touchLines(ahead + (o << 2), wBytes<T>() << 2);
    const x = xb + xAt<T>();
    const a0 = act0(x), a1 = act1(x), a2 = act2(x), a3 = act3(x);
    const off = offsetSums<T>(a0, a1, a2, a3);
    const b0 = w0 + o, b1 = w1 + o, b2 = w2 + o, b3 = w3 + o;
    const s0 = widen<T>(dot32(codes0<T>(b0, f, bits, b16), codes1<T>(b0, f, bits, b16), a0, a1, a2, a3), off, one);
    const s1 = widen<T>(dot32(codes0<T>(b1, f, bits, b16), codes1<T>(b1, f, bits, b16), a0, a1, a2, a3), off, one);
    const s2 = widen<T>(dot32(codes0<T>(b2, f, bits, b16), codes1<T>(b2, f, bits, b16), a0, a1, a2, a3), off, one);
    const s3 = widen<T>(dot32(codes0<T>(b3, f, bits, b16), codes1<T>(b3, f, bits, b16), a0, a1, a2, a3), off, one);
    acc = f32x4.add(acc, term4<T>(hsum4i(s0, s1, s2, s3), b0, b1, b2, b3, xb));
  }
  if (touch) touchSink ^= touched;
  return acc;
}

/**
 * pack2 of the integer sums of the weight block at wb with two activation blocks (a*, offA and b*,
 * offB), its codes unpacked once.
 */
// @ts-ignore: decorator
@inline function rowInts2<T>(
  wb: usize, f: v128, bits: v128, b16: v128, one: v128,
  a0: v128, a1: v128, a2: v128, a3: v128, offA: v128,
  b0: v128, b1: v128, b2: v128, b3: v128, offB: v128,
): v128 {
  const c0 = codes0<T>(wb, f, bits, b16), c1 = codes1<T>(wb, f, bits, b16);
  return pack2(widen<T>(dot32(c0, c1, a0, a1, a2, a3), offA, one), widen<T>(dot32(c0, c1, b0, b1, b2, b3), offB, one));
}

// @ts-ignore: decorator
@inline function matvec<T>(out: usize, xq: usize, w: usize, n: i32, d: i32): void {
  const nb = <usize>n / 32, rowBytes = nb * wBytes<T>();
  let r = 0;
  // Each group of 4 rows loads a byte of each line of the next group as it goes (see dotRows4Ahead).
  for (; r + 8 <= d; r += 4) {
    const w0 = w + <usize>r * rowBytes;
    const dots = dotRows4Ahead<T>(xq, w0, w0 + rowBytes, w0 + 2 * rowBytes, w0 + 3 * rowBytes, nb, true, w0 + 4 * rowBytes);
    v128.store(out + (<usize>r << 2), dots);
  }
  for (; r + 4 <= d; r += 4) {
    const w0 = w + <usize>r * rowBytes;
    v128.store(out + (<usize>r << 2), dotRows4<T>(xq, w0, w0 + rowBytes, w0 + 2 * rowBytes, w0 + 3 * rowBytes, nb));
  }
  for (; r < d; r++) store<f32>(out + (<usize>r << 2), dotRow<T>(xq, w + <usize>r * rowBytes, nb));
}

/** Tiles of 4 weight rows x 2 activation rows (each weight block unpacked once for both); leftovers as matvec. */
// @ts-ignore: decorator
@inline function matmul<T>(out: usize, xq: usize, w: usize, n: i32, d: i32, t: i32, ldo: i32): void {
  const nb = <usize>n / 32, rowBytes = nb * wBytes<T>(), xRow = nb * xBytes<T>(), outRow = <usize>ldo << 2;
  const f = lowNibble(), bits = bitOfLane(), b16 = sixteen(), one = ones16();
  let r = 0;
  for (; r + 4 <= d; r += 4) {
    const w0 = w + <usize>r * rowBytes;
    let i = 0;
    for (; i + 2 <= t; i += 2) {
      const xa0 = xq + <usize>i * xRow;
      let accA = f32x4.splat(0), accB = accA;
      const xEnd = xa0 + xRow;
      for (let xa = xa0, wb = w0; xa < xEnd; xa += xBytes<T>(), wb += wBytes<T>()) {
        const xb = xa + xRow, x = xa + xAt<T>(), y = xb + xAt<T>();
        const a0 = act0(x), a1 = act1(x), a2 = act2(x), a3 = act3(x);
        const b0 = act0(y), b1 = act1(y), b2 = act2(y), b3 = act3(y);
        const offA = offsetSums<T>(a0, a1, a2, a3), offB = offsetSums<T>(b0, b1, b2, b3);
        const w1 = wb + rowBytes, w2 = w1 + rowBytes, w3 = w2 + rowBytes;
        const u01 = pairSums(
          rowInts2<T>(wb, f, bits, b16, one, a0, a1, a2, a3, offA, b0, b1, b2, b3, offB),
          rowInts2<T>(w1, f, bits, b16, one, a0, a1, a2, a3, offA, b0, b1, b2, b3, offB),
        );
        const u23 = pairSums(
          rowInts2<T>(w2, f, bits, b16, one, a0, a1, a2, a3, offA, b0, b1, b2, b3, offB),
          rowInts2<T>(w3, f, bits, b16, one, a0, a1, a2, a3, offA, b0, b1, b2, b3, offB),
        );
        accA = f32x4.add(accA, term4<T>(firstSums(u01, u23), wb, w1, w2, w3, xa));
        accB = f32x4.add(accB, term4<T>(secondSums(u01, u23), wb, w1, w2, w3, xb));
      }
      v128.store(out + <usize>i * outRow + (<usize>r << 2), accA);
      v128.store(out + <usize>(i + 1) * outRow + (<usize>r << 2), accB);
    }
    if (i < t) {
      const dots = dotRows4<T>(xq + <usize>i * xRow, w0, w0 + rowBytes, w0 + 2 * rowBytes, w0 + 3 * rowBytes, nb);
      v128.store(out + <usize>i * outRow + (<usize>r << 2), dots);
    }
  }
  for (; r < d; r++) {
    const wr = w + <usize>r * rowBytes;
    for (let i = 0; i < t; i++) store<f32>(out + <usize>i * outRow + (<usize>r << 2), dotRow<T>(xq + <usize>i * xRow, wr, nb));
  }
}

/** out (n) = row `row` of table (rows, n), dequantized as ggml: (c - bias) * d, or c * d + m. */
// @ts-ignore: decorator
@inline function getRow<T>(out: usize, table: usize, row: i32, n: i32): void {
  const nb = <usize>n / 32;
  const src = table + <usize>row * nb * wBytes<T>();
  const b = i16x8.splat(offset<T>() ? 0 : <i16>bias<T>());
  for (let k: usize = 0; k < nb; k++) {
    const wb = src + k * wBytes<T>(), ob = out + k * 128;
    const d = f32x4.splat(f16ToF32(load<u16>(wb)));
    const m = f32x4.splat(offset<T>() ? f16ToF32(load<u16>(wb, 2)) : 0);
    store16(ob, codes<T>(wb, 0), b, d, m, offset<T>());
    store16(ob + 64, codes<T>(wb, 1), b, d, m, offset<T>());
  }
}

// ---- exports ----

/** out (d) = W (d, n) @ x (n), W Q4_0 (d rows of n/32 blocks), xq = x as q8_0 blocks (n/32). */
export function matvecQ4_0(out: usize, xq: usize, w: usize, n: i32, d: i32): void { matvec<i8>(out, xq, w, n, d); }
/** out (d) = W (d, n) @ x (n), W Q4_1, xq = x as q8_1 blocks. */
export function matvecQ4_1(out: usize, xq: usize, w: usize, n: i32, d: i32): void { matvec<u8>(out, xq, w, n, d); }
/** out (d) = W (d, n) @ x (n), W Q5_0, xq = x as q8_0 blocks. */
export function matvecQ5_0(out: usize, xq: usize, w: usize, n: i32, d: i32): void { matvec<i16>(out, xq, w, n, d); }
/** out (d) = W (d, n) @ x (n), W Q5_1, xq = x as q8_1 blocks. */
export function matvecQ5_1(out: usize, xq: usize, w: usize, n: i32, d: i32): void { matvec<u16>(out, xq, w, n, d); }

/** out (t, d) = X (t, n) @ W (d, n)^T, W Q4_0, xq = t rows of n/32 q8_0 blocks; row stride ldo. */
export function matmulQ4_0(out: usize, xq: usize, w: usize, n: i32, d: i32, t: i32, ldo: i32): void { matmul<i8>(out, xq, w, n, d, t, ldo); }
export function matmulQ4_1(out: usize, xq: usize, w: usize, n: i32, d: i32, t: i32, ldo: i32): void { matmul<u8>(out, xq, w, n, d, t, ldo); }
export function matmulQ5_0(out: usize, xq: usize, w: usize, n: i32, d: i32, t: i32, ldo: i32): void { matmul<i16>(out, xq, w, n, d, t, ldo); }
export function matmulQ5_1(out: usize, xq: usize, w: usize, n: i32, d: i32, t: i32, ldo: i32): void { matmul<u16>(out, xq, w, n, d, t, ldo); }

export function getRowQ4_0(out: usize, table: usize, row: i32, n: i32): void { getRow<i8>(out, table, row, n); }
export function getRowQ4_1(out: usize, table: usize, row: i32, n: i32): void { getRow<u8>(out, table, row, n); }
export function getRowQ5_0(out: usize, table: usize, row: i32, n: i32): void { getRow<i16>(out, table, row, n); }
export function getRowQ5_1(out: usize, table: usize, row: i32, n: i32): void { getRow<u16>(out, table, row, n); }

/**
 * out (n/32 blocks of 36 bytes) = q8_1(x (n)): d and the int8 exactly as quantizeQ8_0 (d = max|x|/127
 * as f16, x = nearest-even(x · (127 / max|x|))), then s = f16(f32(Σ x) · d) with the unrounded f32 d
 * (ggml's quantize_row_q8_1 on x86).
 */
export function quantizeQ8_1(out: usize, x: usize, n: i32): void {
  const nb = <usize>n / 32;
  for (let b: usize = 0; b < nb; b++) {
    const xb = x + b * 128, ob = out + b * 36;
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
    const lo = i8x16.narrow_i16x8_s(
      i16x8.narrow_i32x4_s(quantize4(v0, id), quantize4(v1, id)),
      i16x8.narrow_i32x4_s(quantize4(v2, id), quantize4(v3, id)),
    );
    const hi = i8x16.narrow_i16x8_s(
      i16x8.narrow_i32x4_s(quantize4(v4, id), quantize4(v5, id)),
      i16x8.narrow_i32x4_s(quantize4(v6, id), quantize4(v7, id)),
    );
    // Σ of the stored int8 (saturated as stored, e.g. when 127 / max|x| overflows to inf).
    const sum = lanesSum(i32x4.extadd_pairwise_i16x8_s(i16x8.add(i16x8.extadd_pairwise_i8x16_s(lo), i16x8.extadd_pairwise_i8x16_s(hi))));
    store<u16>(ob, <u16>f32ToF16(dx));
    store<u16>(ob, <u16>f32ToF16(<f32>sum * dx), 2);
    v128.store(ob, lo, 4);
    v128.store(ob, hi, 20);
  }
}

/** nearest-even(v * id) as i32x4 (|v * id| <= 127 by construction). */
// @ts-ignore: decorator
@inline function quantize4(v: v128, id: v128): v128 {
  return i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(v, id)));
}

/** Where the matvecs' loads ahead go, so they are kept (per instance: each thread has its own). */
let touchSink: u32 = 0;
