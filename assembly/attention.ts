// Dense attention of one query head over the cached positions of one KV head (decode).
//
// The same steps as llama.cpp's CPU graph (mul_mat K q, soft_max_ext with scale, mul_mat V p):
//   Step 1: scores (S) = K (S, Hd) @ q (Hd) * scale
//   Step 2: p = e^(scores - max) * (1 / Σ e^(scores - max))  (in place, as ggml: scores holds p)
//   Step 3: out (Hd) = Σ_s p_s V[s]
import { dotRows4F32, dotF32 } from "./matvec";
import { expF32x4, expF32 } from "./exp";

/**
 * Dense attention: scores (S) = K (S, Hd) @ q (Hd) * scale; p = softmax(scores);
 * out (Hd) = p @ V (S, Hd). K, V f32 rows of Hd. `scores` is scratch of S floats (holds p after).
 */
export function attendF32(out: usize, scores: usize, q: usize, k: usize, v: usize, S: i32, Hd: i32, scale: f32): void {
  const nS = <usize>S, nHd = <usize>Hd, rowBytes = nHd << 2, sEnd = nS << 2;

  // Step 1: scores, 4 cached positions at a time (K is read like a matvec's weights).
  const scale4 = f32x4.splat(scale);
  let s: usize = 0;
  for (; s + 4 <= nS; s += 4) {
    v128.store(scores + (s << 2), f32x4.mul(dotRows4F32(q, k + s * rowBytes, rowBytes, nHd), scale4));
  }
  for (; s < nS; s++) store<f32>(scores + (s << 2), dotF32(q, k + s * rowBytes, nHd) * scale);

  // Step 2: softmax in place.
  let m4 = f32x4.splat(-Infinity);
  let o: usize = 0;
  for (; o + 16 <= sEnd; o += 16) m4 = f32x4.max(m4, v128.load(scores + o));
  let maxScore = max(max(f32x4.extract_lane(m4, 0), f32x4.extract_lane(m4, 1)), max(f32x4.extract_lane(m4, 2), f32x4.extract_lane(m4, 3)));
  for (; o < sEnd; o += 4) maxScore = max(maxScore, load<f32>(scores + o));
  const max4 = f32x4.splat(maxScore);
  // As ggml's soft_max: the f32 exps summed in f64, then scaled by f32(1 / Σ).
  let lo = f64x2.splat(0), hi = lo; // exps of lanes 0, 1 and of lanes 2, 3
  o = 0;
  for (; o + 16 <= sEnd; o += 16) {
    const e = expF32x4(f32x4.sub(v128.load(scores + o), max4));
    v128.store(scores + o, e);
    lo = f64x2.add(lo, f64x2.promote_low_f32x4(e));
    hi = f64x2.add(hi, f64x2.promote_low_f32x4(i32x4.shuffle(e, e, 2, 3, 2, 3)));
  }
  const lanes = f64x2.add(lo, hi);
  let sum = f64x2.extract_lane(lanes, 0) + f64x2.extract_lane(lanes, 1);
  for (; o < sEnd; o += 4) {
    const e = expF32(load<f32>(scores + o) - maxScore);
    store<f32>(scores + o, e);
    sum += <f64>e;
  }
  const inv = <f32>(1 / sum);
  const inv4 = f32x4.splat(inv);
  o = 0;
  for (; o + 16 <= sEnd; o += 16) v128.store(scores + o, f32x4.mul(v128.load(scores + o), inv4));
  for (; o < sEnd; o += 4) store<f32>(scores + o, load<f32>(scores + o) * inv);

  // Step 3: out = Σ p_s V[s], 4 positions per pass over out (out stays in L1: Hd floats).
  memory.fill(out, 0, rowBytes);
  s = 0;
  for (; s + 4 <= nS; s += 4) {
    const v0 = v + s * rowBytes, v1 = v0 + rowBytes, v2 = v1 + rowBytes, v3 = v2 + rowBytes;
    const p0 = load<f32>(scores + (s << 2)), p1 = load<f32>(scores + (s << 2), 4);
    const p2 = load<f32>(scores + (s << 2), 8), p3 = load<f32>(scores + (s << 2), 12);
    const q0 = f32x4.splat(p0), q1 = f32x4.splat(p1), q2 = f32x4.splat(p2), q3 = f32x4.splat(p3);
    let j: usize = 0;
    for (; j + 16 <= rowBytes; j += 16) {
      const pair01 = f32x4.add(f32x4.mul(v128.load(v0 + j), q0), f32x4.mul(v128.load(v1 + j), q1));
      const pair23 = f32x4.add(f32x4.mul(v128.load(v2 + j), q2), f32x4.mul(v128.load(v3 + j), q3));
      v128.store(out + j, f32x4.add(v128.load(out + j), f32x4.add(pair01, pair23)));
    }
    for (; j < rowBytes; j += 4) {
      const pair01 = load<f32>(v0 + j) * p0 + load<f32>(v1 + j) * p1;
      const pair23 = load<f32>(v2 + j) * p2 + load<f32>(v3 + j) * p3;
      store<f32>(out + j, load<f32>(out + j) + (pair01 + pair23));
    }
  }
  for (; s < nS; s++) {
    const vs = v + s * rowBytes, p = load<f32>(scores + (s << 2)), p4 = f32x4.splat(p);
    let j: usize = 0;
    for (; j + 16 <= rowBytes; j += 16) v128.store(out + j, f32x4.add(v128.load(out + j), f32x4.mul(v128.load(vs + j), p4)));
    for (; j < rowBytes; j += 4) store<f32>(out + j, load<f32>(out + j) + load<f32>(vs + j) * p);
  }
}
