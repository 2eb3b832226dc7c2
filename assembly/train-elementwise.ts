// Backward of the element-wise layers (forwards in elementwise.ts): RoPE, SwiGLU, the embedding lookup
// (getRowF32 per token).
//
// RoPE is a rotation of each pair by its angle, so its backward is the transpose, the rotation by
// −angle: [dx0, dx1] ← [dx0 c + dx1 s, −dx0 s + dx1 c]: the forward's own code with sin negated (exact),
// so it is defined bit for bit like the forward.
import { rotateHalves, rotateInterleaved } from "./elementwise";
import { expF32x4 } from "./exp";

/**
 * The backward of ropeInterleaved, in place on dx (nHeads, Hd): pairs (2i, 2i+1) for i < nRot/2,
 *   dx[2i] = dx0 cos_i + dx1 sin_i,  dx[2i+1] = dx1 cos_i − dx0 sin_i      (cos, sin: (nRot/2))
 */
export function ropeInterleavedBackward(dx: usize, cos: usize, sin: usize, nHeads: i32, Hd: i32, nRot: i32): void {
  rotateInterleaved(dx, cos, sin, nHeads, Hd, nRot, true);
}

/**
 * The backward of ropeHalves, in place on dx (nHeads, Hd): pairs (i, i + nRot/2) for i < nRot/2,
 *   dx[i] = dx0 cos_i + dx1 sin_i,  dx[i + nRot/2] = dx1 cos_i − dx0 sin_i
 */
export function ropeHalvesBackward(dx: usize, cos: usize, sin: usize, nHeads: i32, Hd: i32, nRot: i32): void {
  rotateHalves(dx, cos, sin, nHeads, Hd, nRot, true);
}

/** 1 + e^−g for 4 lanes, e^−g as the forward's silu computes it (expF32x4): silu = g / it, σ = 1 / it. */
// @ts-ignore: decorator
@inline function siluDenominator4(g: v128): v128 {
  return f32x4.add(f32x4.splat(1), expF32x4(f32x4.neg(g)));
}

/** dSilu/dg = σ · (1 + g · (1 − σ)) for 4 lanes, given σ = σ(g). */
// @ts-ignore: decorator
@inline function siluSlope4(g: v128, sigma: v128): v128 {
  const one = f32x4.splat(1);
  return f32x4.mul(sigma, f32x4.add(one, f32x4.mul(g, f32x4.sub(one, sigma))));
}

/**
 * dGate (n), dUp (n) from dOut (n) through out = silu(gate) · up, silu(g) = g · σ(g):
 *   dUp = dOut · silu(g),  dGate = dOut · up · σ(g) · (1 + g · (1 − σ(g)))
 * with silu(g) = g / (1 + e^−g) as swiglu computes it. gate, up (n) as the forward saw them. dGate may
 * equal gate and dUp may equal up (each element is read before it is written). Leftovers run the same
 * SIMD arithmetic on one lane, so a result does not depend on its position.
 */
export function swigluBackward(dGate: usize, dUp: usize, dOut: usize, gate: usize, up: usize, n: i32): void {
  const end = <usize>n << 2;
  let o: usize = 0;
  for (; o + 16 <= end; o += 16) {
    const g = v128.load(gate + o), u = v128.load(up + o), dy = v128.load(dOut + o);
    const den = siluDenominator4(g), sigma = f32x4.div(f32x4.splat(1), den);
    v128.store(dUp + o, f32x4.mul(dy, f32x4.div(g, den)));
    v128.store(dGate + o, f32x4.mul(f32x4.mul(dy, u), siluSlope4(g, sigma)));
  }
  for (; o < end; o += 4) {
    const g = f32x4.splat(load<f32>(gate + o)), u = f32x4.splat(load<f32>(up + o)), dy = f32x4.splat(load<f32>(dOut + o));
    const den = siluDenominator4(g), sigma = f32x4.div(f32x4.splat(1), den);
    store<f32>(dUp + o, f32x4.extract_lane(f32x4.mul(dy, f32x4.div(g, den)), 0));
    store<f32>(dGate + o, f32x4.extract_lane(f32x4.mul(f32x4.mul(dy, u), siluSlope4(g, sigma)), 0));
  }
}

/**
 * dTable (rows, n) += dOut (t, n) scattered by tokens (t, i32): row tokens[i] += dOut row i, for
 * i = 0 … t − 1 in order (a token seen twice gets its rows added in that order).
 */
export function embeddingBackward(dTable: usize, dOut: usize, tokens: usize, n: i32, t: i32): void {
  const row = <usize>n << 2;
  for (let i: usize = 0; i < <usize>t; i++) {
    const dst = dTable + <usize>load<i32>(tokens + (i << 2)) * row, src = dOut + i * row;
    let o: usize = 0;
    for (; o + 16 <= row; o += 16) v128.store(dst + o, f32x4.add(v128.load(dst + o), v128.load(src + o)));
    for (; o < row; o += 4) store<f32>(dst + o, load<f32>(dst + o) + load<f32>(src + o));
  }
}
