// Element-wise kernels: rounding to 16-bit floats, embedding rows, rmsnorm, RoPE, swiglu, add, and
// the KV-cache writes (packing to bf16, a key as one column of the d-major copy).
//
// Each has a 4-lane SIMD body and a scalar leftover loop. Where the body is not plain f32
// arithmetic (rounding, exp), the leftovers run the same SIMD function on one lane, so a result
// never depends on an element's position.
import { f16ToF32, f16x4Exact, bf16ToF32, roundF16x4, roundBf16x4 } from "./convert";
import { expF32x4 } from "./exp";

/** out (n) = f16(x (n)) as f32 (round to nearest even). out may equal x. */
export function roundF16(out: usize, x: usize, n: i32): void {
  const end = <usize>n << 2;
  let o: usize = 0;
  for (; o + 16 <= end; o += 16) v128.store(out + o, roundF16x4(v128.load(x + o)));
  for (; o < end; o += 4) store<f32>(out + o, f32x4.extract_lane(roundF16x4(f32x4.splat(load<f32>(x + o))), 0));
}

/** out (n) = bf16(x (n)) as f32 (round to nearest even). out may equal x. */
export function roundBf16(out: usize, x: usize, n: i32): void {
  const end = <usize>n << 2;
  let o: usize = 0;
  for (; o + 16 <= end; o += 16) v128.store(out + o, roundBf16x4(v128.load(x + o)));
  for (; o < end; o += 4) store<f32>(out + o, f32x4.extract_lane(roundBf16x4(f32x4.splat(load<f32>(x + o))), 0));
}

/**
 * out (n) u16 = bf16(x (n) f32), round to nearest even; NaN stays a quiet NaN (as dtype.ts f32ToBf16).
 * roundBf16x4 leaves the bf16 bits in the high half of each lane: a shuffle packs 8 of them.
 */
export function packBf16(out: usize, x: usize, n: i32): void {
  const nx = <usize>n;
  let i: usize = 0;
  for (; i + 8 <= nx; i += 8) {
    const lo = roundBf16x4(v128.load(x + (i << 2))), hi = roundBf16x4(v128.load(x + (i << 2), 16));
    v128.store(out + (i << 1), i16x8.shuffle(lo, hi, 1, 3, 5, 7, 9, 11, 13, 15));
  }
  for (; i < nx; i++) store<u16>(out + (i << 1), i16x8.extract_lane_u(roundBf16x4(f32x4.splat(load<f32>(x + (i << 2)))), 1));
}

/** Column 0 of kT (n, ldk) f32 = x (n): kT[i * ldk] = x[i] (kT points at the position's column). */
export function storeColumnF32(kT: usize, x: usize, n: i32, ldk: i32): void {
  const rowBytes = <usize>ldk << 2;
  for (let i: usize = 0; i < <usize>n; i++) store<f32>(kT + i * rowBytes, load<f32>(x + (i << 2)));
}

/** Column 0 of kT (n, ldk) bf16 = bf16(x (n)), rounded as packBf16. */
export function storeColumnBf16(kT: usize, x: usize, n: i32, ldk: i32): void {
  const nx = <usize>n, rowBytes = <usize>ldk << 1;
  let i: usize = 0;
  for (; i + 4 <= nx; i += 4) {
    const b = roundBf16x4(v128.load(x + (i << 2)));
    const p = kT + i * rowBytes;
    v128.store16_lane(p, b, 1);
    v128.store16_lane(p + rowBytes, b, 3);
    v128.store16_lane(p + 2 * rowBytes, b, 5);
    v128.store16_lane(p + 3 * rowBytes, b, 7);
  }
  for (; i < nx; i++) {
    const b = roundBf16x4(f32x4.splat(load<f32>(x + (i << 2))));
    v128.store16_lane(kT + i * rowBytes, b, 1);
  }
}

/** out (n) = row `row` of table (rows, n), f32. */
export function getRowF32(out: usize, table: usize, row: i32, n: i32): void {
  const rowBytes = <usize>n << 2;
  memory.copy(out, table + <usize>row * rowBytes, rowBytes);
}

/** out (n) = row `row` of table (rows, n), f16 converted exactly to f32. */
export function getRowF16(out: usize, table: usize, row: i32, n: i32): void {
  const src = table + <usize>row * (<usize>n << 1);
  let i: usize = 0;
  for (; i + 4 <= <usize>n; i += 4) v128.store(out + (i << 2), f16x4Exact(v128.load16x4_u(src + (i << 1))));
  for (; i < <usize>n; i++) store<f32>(out + (i << 2), f16ToF32(load<u16>(src + (i << 1))));
}

/** out (n) = row `row` of table (rows, n), bf16 converted exactly to f32. */
export function getRowBf16(out: usize, table: usize, row: i32, n: i32): void {
  const src = table + <usize>row * (<usize>n << 1);
  let i: usize = 0;
  for (; i + 4 <= <usize>n; i += 4) v128.store(out + (i << 2), i32x4.shl(v128.load16x4_u(src + (i << 1)), 16));
  for (; i < <usize>n; i++) store<f32>(out + (i << 2), bf16ToF32(load<u16>(src + (i << 1))));
}

/**
 * out (n) = x / sqrt(mean(x^2) + eps) * w (n). out may equal x.
 * As ggml's rms_norm then mul: the f32 squares x*x summed in f64, mean = f32(Σ / n),
 * scale = 1 / sqrt(mean + eps) in f32, then (x * scale) * w.
 */
export function rmsnorm(out: usize, x: usize, w: usize, n: i32, eps: f32): void {
  normalizeRow(out, x, w, n, rmsScale(x, n, eps));
}

/** 1 / sqrt(mean(x^2) + eps) of x (n): the f32 squares summed in f64 (lanes 0, 1 and 2, 3 apart), the rest in f32. */
// @ts-ignore: decorator
@inline export function rmsScale(x: usize, n: i32, eps: f32): f32 {
  const end = <usize>n << 2;
  let lo = f64x2.splat(0), hi = lo; // squares of lanes 0, 1 and of lanes 2, 3
  let o: usize = 0;
  for (; o + 16 <= end; o += 16) {
    const v = v128.load(x + o);
    const squares = f32x4.mul(v, v);
    lo = f64x2.add(lo, f64x2.promote_low_f32x4(squares));
    hi = f64x2.add(hi, f64x2.promote_low_f32x4(i32x4.shuffle(squares, squares, 2, 3, 2, 3)));
  }
  const lanes = f64x2.add(lo, hi);
  let sum = f64x2.extract_lane(lanes, 0) + f64x2.extract_lane(lanes, 1);
  for (; o < end; o += 4) {
    const v = load<f32>(x + o);
    sum += <f64>(v * v);
  }
  const mean = <f32>(sum / <f64>n);
  return <f32>1 / Mathf.sqrt(mean + eps);
}

/** out (n) = (x · scale) · w (n). */
// @ts-ignore: decorator
@inline export function normalizeRow(out: usize, x: usize, w: usize, n: i32, scale: f32): void {
  const end = <usize>n << 2;
  const scale4 = f32x4.splat(scale);
  let o: usize = 0;
  for (; o + 16 <= end; o += 16) v128.store(out + o, f32x4.mul(f32x4.mul(v128.load(x + o), scale4), v128.load(w + o)));
  for (; o < end; o += 4) store<f32>(out + o, load<f32>(x + o) * scale * load<f32>(w + o));
}

/**
 * RoPE in place on x (nHeads, Hd), interleaved pairs (2i, 2i+1) for i < nRot/2:
 *   x[2i] = x0 cos_i - x1 sin_i,  x[2i+1] = x0 sin_i + x1 cos_i      (cos, sin: (nRot/2))
 * Two pairs per f32x4: [x0, x1, x0', x1'] * [c, c, c', c'] + [x1, x0, x1', x0'] * [-s, s, -s', s'].
 */
export function ropeInterleaved(x: usize, cos: usize, sin: usize, nHeads: i32, Hd: i32, nRot: i32): void {
  rotateInterleaved(x, cos, sin, nHeads, Hd, nRot, false);
}

/**
 * RoPE in place on x (nHeads, Hd), pairs (i, i + nRot/2) for i < nRot/2 (NeoX / rotate_half):
 *   x[i] = x0 cos_i - x1 sin_i,  x[i + nRot/2] = x0 sin_i + x1 cos_i
 */
export function ropeHalves(x: usize, cos: usize, sin: usize, nHeads: i32, Hd: i32, nRot: i32): void {
  rotateHalves(x, cos, sin, nHeads, Hd, nRot, false);
}

/**
 * The body of ropeInterleaved; `inverse` (a constant at every call) rotates by −angle (sin negated, which
 * is exact), the RoPE backward.
 */
// @ts-ignore: decorator
@inline export function rotateInterleaved(x: usize, cos: usize, sin: usize, nHeads: i32, Hd: i32, nRot: i32, inverse: bool): void {
  const pairs = <usize>nRot >> 1;
  const signs = inverse ? i32x4(0, 0x80000000, 0, 0x80000000) : i32x4(0x80000000, 0, 0x80000000, 0);
  for (let h: usize = 0; h < <usize>nHeads; h++) {
    const head = x + h * (<usize>Hd << 2);
    let i: usize = 0;
    for (; i + 2 <= pairs; i += 2) {
      const v = v128.load(head + (i << 3));
      const c2 = v128.load64_zero(cos + (i << 2)), s2 = v128.load64_zero(sin + (i << 2));
      const c = i32x4.shuffle(c2, c2, 0, 0, 1, 1);
      const s = v128.xor(i32x4.shuffle(s2, s2, 0, 0, 1, 1), signs);
      const swapped = i32x4.shuffle(v, v, 1, 0, 3, 2);
      v128.store(head + (i << 3), f32x4.add(f32x4.mul(v, c), f32x4.mul(swapped, s)));
    }
    for (; i < pairs; i++) {
      const p = head + (i << 3);
      const x0 = load<f32>(p), x1 = load<f32>(p, 4);
      const c = load<f32>(cos + (i << 2));
      const s = inverse ? -load<f32>(sin + (i << 2)) : load<f32>(sin + (i << 2));
      store<f32>(p, x0 * c - x1 * s);
      store<f32>(p, x0 * s + x1 * c, 4);
    }
  }
}

/** The body of ropeHalves; `inverse` as in rotateInterleaved. */
// @ts-ignore: decorator
@inline export function rotateHalves(x: usize, cos: usize, sin: usize, nHeads: i32, Hd: i32, nRot: i32, inverse: bool): void {
  const halfBytes = (<usize>nRot >> 1) << 2;
  for (let h: usize = 0; h < <usize>nHeads; h++) {
    const head = x + h * (<usize>Hd << 2);
    let o: usize = 0;
    for (; o + 16 <= halfBytes; o += 16) {
      const x0 = v128.load(head + o), x1 = v128.load(head + halfBytes + o);
      const c = v128.load(cos + o);
      const s = inverse ? f32x4.neg(v128.load(sin + o)) : v128.load(sin + o);
      v128.store(head + o, f32x4.sub(f32x4.mul(x0, c), f32x4.mul(x1, s)));
      v128.store(head + halfBytes + o, f32x4.add(f32x4.mul(x0, s), f32x4.mul(x1, c)));
    }
    for (; o < halfBytes; o += 4) {
      const x0 = load<f32>(head + o), x1 = load<f32>(head + halfBytes + o);
      const c = load<f32>(cos + o);
      const s = inverse ? -load<f32>(sin + o) : load<f32>(sin + o);
      store<f32>(head + o, x0 * c - x1 * s);
      store<f32>(head + halfBytes + o, x0 * s + x1 * c);
    }
  }
}

/** silu(g) * u for 4 lanes: g / (1 + e^-g) * u, as ggml_vec_swiglu_f32. */
// @ts-ignore: decorator
@inline function swiglu4(g: v128, u: v128): v128 {
  const silu = f32x4.div(g, f32x4.add(f32x4.splat(1), expF32x4(f32x4.neg(g))));
  return f32x4.mul(silu, u);
}

/** out (n) = silu(gate (n)) * up (n), silu(x) = x / (1 + exp(-x)). out may equal gate or up. */
export function swiglu(out: usize, gate: usize, up: usize, n: i32): void {
  const end = <usize>n << 2;
  let o: usize = 0;
  for (; o + 16 <= end; o += 16) v128.store(out + o, swiglu4(v128.load(gate + o), v128.load(up + o)));
  for (; o < end; o += 4) {
    const r = swiglu4(f32x4.splat(load<f32>(gate + o)), f32x4.splat(load<f32>(up + o)));
    store<f32>(out + o, f32x4.extract_lane(r, 0));
  }
}

/** out (n) = a (n) + b (n). out may equal a or b. */
export function add(out: usize, a: usize, b: usize, n: i32): void {
  const end = <usize>n << 2;
  let o: usize = 0;
  for (; o + 16 <= end; o += 16) v128.store(out + o, f32x4.add(v128.load(a + o), v128.load(b + o)));
  for (; o < end; o += 4) store<f32>(out + o, load<f32>(a + o) + load<f32>(b + o));
}
