// Cross-entropy of the next-token logits, forward and backward in one pass over each row:
//   loss_i = logsumexp(logits_i) − logits_i[target_i] = log Σ_j e^(x_j − max) − (x_target − max)
//   dLogits_i = (softmax(logits_i) − onehot(target_i)) · scale
// The max is subtracted before the exps (numerically stable for any finite logits), the f32 exps are
// summed in f64 and the probabilities scaled by f32(1 / Σ), as softmaxF32. A row whose target is
// negative (−1: padding, a prompt token) is ignored: loss 0, dLogits row 0. scale is the caller's:
// 1 / (number of counted rows), or that over a whole batch of micro-batches.
import { rowMax, expSum } from "./attention";
import { expF32 } from "./exp";

/**
 * losses (t) f32 and dLogits (t, V) from logits (t, V) and targets (t, i32, −1 = ignore the row).
 * dLogits may equal logits (a row is read before it is written).
 */
export function crossEntropy(losses: usize, dLogits: usize, logits: usize, targets: usize, V: i32, t: i32, scale: f32): void {
  const row = <usize>V << 2;
  const scale4 = f32x4.splat(scale);
  for (let i: usize = 0; i < <usize>t; i++) {
    const x = logits + i * row, d = dLogits + i * row;
    const target = load<i32>(targets + (i << 2));
    if (target < 0) {
      store<f32>(losses + (i << 2), 0);
      memory.fill(d, 0, row);
      continue;
    }
    const xTarget = load<f32>(x + (<usize>target << 2));

    // Step 1: the max. Step 2: e_j = e^(x_j − max) into dLogits, Σ e_j in f64 (as softmaxF32).
    const maxX = rowMax(x, row);
    const sum = expSum(d, x, row, maxX, true);

    // Step 3: the loss, in f64 from the f64 sum.
    store<f32>(losses + (i << 2), <f32>(Math.log(sum) - (<f64>xTarget - <f64>maxX)));

    // Step 4: dLogits = e · f32(1 / Σ) · scale, and at the target (e · f32(1 / Σ) − 1) · scale.
    const inv = <f32>(1 / sum), inv4 = f32x4.splat(inv);
    let o: usize = 0;
    for (; o + 16 <= row; o += 16) v128.store(d + o, f32x4.mul(f32x4.mul(v128.load(d + o), inv4), scale4));
    for (; o < row; o += 4) store<f32>(d + o, load<f32>(d + o) * inv * scale);
    const pTarget = expF32(xTarget - maxX) * inv;
    store<f32>(d + (<usize>target << 2), (pTarget - 1) * scale);
  }
}
