/**
 * The reference twin of the training kernels (assembly/train-*.ts): plain TypeScript, same signatures,
 * same semantics; merged into createReferenceKernels.
 *
 * Where the WASM result is defined bit for bit (the backward products, RoPE backward, embeddingBackward,
 * adamw, scale) this file computes the same f32 operations in the same order, with Math.fround after
 * each one. Elsewhere sums accumulate in float64 in index order, and tests compare with a tolerance.
 * Pointers are byte offsets into `memory`; views are created once (the memory never grows).
 */
import type { TrainKernels } from "./kernels.js";

const f = Math.fround;

export function createReferenceTrainKernels(memory: WebAssembly.Memory): TrainKernels {
  const f32 = new Float32Array(memory.buffer);
  const i32 = new Int32Array(memory.buffer);

  /**
   * C (m, n) (+)= A (m, K) @ B (K, n), A's element (i, k) at float a/4 + i·aRow + k·aCol, B and C rows
   * of n floats: each element one f32 sum in k order from C or 0, as the kernel's every path.
   */
  function gemm(
    c: number,
    a: number,
    aRow: number,
    aCol: number,
    b: number,
    m: number,
    n: number,
    K: number,
    accumulate: boolean,
  ): void {
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) {
        let acc = accumulate ? f32[c / 4 + i * n + j] : 0;
        for (let k = 0; k < K; k++) acc = f(acc + f(f32[a / 4 + i * aRow + k * aCol] * f32[b / 4 + k * n + j]));
        f32[c / 4 + i * n + j] = acc;
      }
    }
  }

  /** RoPE backward of pair (i0, i1) by (c, s): the rotation by −angle, in f32 as the kernel. */
  function rotateBack(i0: number, i1: number, c: number, s: number): void {
    const d0 = f32[i0],
      d1 = f32[i1];
    f32[i0] = f(f(d0 * c) + f(d1 * s));
    f32[i1] = f(f(d1 * c) - f(d0 * s));
  }

  /** Σ_j x[j] y[j] over n floats at float indices x, y, in float64. */
  function dot(x: number, y: number, n: number): number {
    let sum = 0;
    for (let j = 0; j < n; j++) sum += f32[x + j] * f32[y + j];
    return sum;
  }

  return {
    matmulBackwardInput(dX, dY, w, n, d, t, ldy, accumulate) {
      gemm(dX, dY, ldy, 1, w, t, n, d, accumulate !== 0);
    },
    matmulBackwardWeight(dW, dY, x, n, d, t, ldy) {
      gemm(dW, dY, 1, ldy, x, d, n, t, true);
    },

    rmsnormForward(out, rstd, x, w, n, t, eps) {
      for (let i = 0; i < t; i++) {
        const xi = x / 4 + i * n;
        // As rmsnorm: f32 squares summed in float64, mean and scale in f32.
        let sum = 0;
        for (let j = 0; j < n; j++) sum += f(f32[xi + j] * f32[xi + j]);
        const r = f(1 / f(Math.sqrt(f(f(sum / n) + f(eps)))));
        f32[rstd / 4 + i] = r;
        for (let j = 0; j < n; j++) f32[out / 4 + i * n + j] = f(f32[xi + j] * r) * f32[w / 4 + j];
      }
    },
    rmsnormBackward(dX, dW, dOut, x, w, rstd, n, t, accumulate) {
      for (let i = 0; i < t; i++) {
        const xi = x / 4 + i * n,
          gi = dOut / 4 + i * n,
          di = dX / 4 + i * n;
        const r = f32[rstd / 4 + i];
        // Step 1: mean(dx̂ · x̂) = rstd · Σ (dOut · w) · x / n.
        let sum = 0;
        for (let j = 0; j < n; j++) sum += f32[gi + j] * f32[w / 4 + j] * f32[xi + j];
        const mean = f((sum * r) / n);
        // Step 2: dX = rstd · (dx̂ − x̂ · mean), dW += dOut · x̂.
        for (let j = 0; j < n; j++) {
          const g = f32[gi + j],
            xHat = f(f32[xi + j] * r);
          const dx = f(r * f(f(g * f32[w / 4 + j]) - f(xHat * mean)));
          f32[di + j] = accumulate !== 0 ? f32[di + j] + dx : dx;
          f32[dW / 4 + j] += f(g * xHat);
        }
      }
    },

    ropeInterleavedBackward(dx, cos, sin, nHeads, Hd, nRot) {
      for (let h = 0; h < nHeads; h++) {
        const head = dx / 4 + h * Hd;
        for (let i = 0; i < nRot / 2; i++)
          rotateBack(head + 2 * i, head + 2 * i + 1, f32[cos / 4 + i], f32[sin / 4 + i]);
      }
    },
    ropeHalvesBackward(dx, cos, sin, nHeads, Hd, nRot) {
      for (let h = 0; h < nHeads; h++) {
        const head = dx / 4 + h * Hd;
        for (let i = 0; i < nRot / 2; i++)
          rotateBack(head + i, head + i + nRot / 2, f32[cos / 4 + i], f32[sin / 4 + i]);
      }
    },
    swigluBackward(dGate, dUp, dOut, gate, up, n) {
      for (let j = 0; j < n; j++) {
        const g = f32[gate / 4 + j],
          u = f32[up / 4 + j],
          dy = f32[dOut / 4 + j];
        // e^-g in f32 as the forward's reference computes it.
        const den = 1 + f(Math.exp(-g));
        const sigma = 1 / den;
        f32[dUp / 4 + j] = dy * (g / den);
        f32[dGate / 4 + j] = dy * u * sigma * (1 + g * (1 - sigma));
      }
    },
    embeddingBackward(dTable, dOut, tokens, n, t) {
      for (let i = 0; i < t; i++) {
        const row = dTable / 4 + i32[tokens / 4 + i] * n;
        for (let j = 0; j < n; j++) f32[row + j] = f(f32[row + j] + f32[dOut / 4 + i * n + j]);
      }
    },

    attentionForward(out, p, q, k, v, T, Hd, g, qStride, kvStride, scale) {
      for (let h = 0; h < g; h++) {
        for (let t = 0; t < T; t++) {
          const qt = q / 4 + t * qStride + h * Hd,
            row = p / 4 + (h * T + t) * T;
          // Step 1: scores; step 2: softmax as ggml (f32 exps summed in float64, times f32(1 / Σ)).
          let max = -Infinity;
          for (let u = 0; u <= t; u++) {
            f32[row + u] = dot(qt, k / 4 + u * kvStride, Hd) * scale;
            max = Math.max(max, f32[row + u]);
          }
          let sum = 0;
          for (let u = 0; u <= t; u++) {
            f32[row + u] = f(Math.exp(f32[row + u] - max));
            sum += f32[row + u];
          }
          for (let u = 0; u <= t; u++) f32[row + u] *= f(1 / sum);
          // Step 3: out = Σ_u P_tu v_u.
          for (let j = 0; j < Hd; j++) {
            let acc = 0;
            for (let u = 0; u <= t; u++) acc += f32[row + u] * f32[v / 4 + u * kvStride + j];
            f32[out / 4 + t * qStride + h * Hd + j] = acc;
          }
        }
      }
    },
    attentionBackwardPV(dS, dV, dOut, out, v, p, T, Hd, g, qStride, kvStride) {
      for (let t = 0; t < T; t++) {
        for (let h = 0; h < g; h++) {
          const dy = dOut / 4 + t * qStride + h * Hd,
            row = (h * T + t) * T;
          const D = dot(dy, out / 4 + t * qStride + h * Hd, Hd);
          for (let u = 0; u <= t; u++) {
            const pu = f32[p / 4 + row + u];
            for (let j = 0; j < Hd; j++) f32[dV / 4 + u * kvStride + j] += pu * f32[dy + j];
            f32[dS / 4 + row + u] = pu * (dot(dy, v / 4 + u * kvStride, Hd) - D);
          }
        }
      }
    },
    attentionBackwardQK(dQ, dK, dS, q, k, T, Hd, g, qStride, kvStride, scale) {
      for (let t = 0; t < T; t++) {
        for (let h = 0; h < g; h++) {
          const qt = q / 4 + t * qStride + h * Hd,
            row = dS / 4 + (h * T + t) * T;
          for (let j = 0; j < Hd; j++) {
            let acc = 0;
            for (let u = 0; u <= t; u++) acc += f32[row + u] * f32[k / 4 + u * kvStride + j];
            f32[dQ / 4 + t * qStride + h * Hd + j] = acc * scale;
          }
          for (let u = 0; u <= t; u++) {
            const ds = f32[row + u] * scale;
            for (let j = 0; j < Hd; j++) f32[dK / 4 + u * kvStride + j] += ds * f32[qt + j];
          }
        }
      }
    },

    crossEntropy(losses, dLogits, logits, targets, V, t, scale) {
      for (let i = 0; i < t; i++) {
        const x = logits / 4 + i * V,
          d = dLogits / 4 + i * V;
        const target = i32[targets / 4 + i];
        if (target < 0) {
          f32[losses / 4 + i] = 0;
          f32.fill(0, d, d + V);
          continue;
        }
        const xTarget = f32[x + target];
        let max = -Infinity;
        for (let j = 0; j < V; j++) max = Math.max(max, f32[x + j]);
        let sum = 0;
        for (let j = 0; j < V; j++) {
          f32[d + j] = f(Math.exp(f32[x + j] - max));
          sum += f32[d + j];
        }
        f32[losses / 4 + i] = Math.log(sum) - (xTarget - max);
        for (let j = 0; j < V; j++) f32[d + j] = (f32[d + j] / sum - (j === target ? 1 : 0)) * scale;
      }
    },

    adamw(p, m, v, grad, n, lr, beta1, beta2, eps, weightDecay, bc1, bc2) {
      // The kernel receives every scalar as f32.
      const b1 = f(beta1),
        b2 = f(beta2),
        c1 = f(1 - b1),
        c2 = f(1 - b2);
      const lr32 = f(lr),
        eps32 = f(eps),
        wd32 = f(weightDecay),
        bc1f = f(bc1),
        bc2f = f(bc2);
      for (let j = 0; j < n; j++) {
        const g = f32[grad / 4 + j],
          w = f32[p / 4 + j];
        const mo = f(f(b1 * f32[m / 4 + j]) + f(c1 * g));
        const vo = f(f(b2 * f32[v / 4 + j]) + f(c2 * f(g * g)));
        const mHat = f(mo / bc1f),
          vHat = f(vo / bc2f);
        const step = f(f(mHat / f(f(Math.sqrt(vHat)) + eps32)) + f(wd32 * w));
        f32[m / 4 + j] = mo;
        f32[v / 4 + j] = vo;
        f32[p / 4 + j] = f(w - f(lr32 * step));
      }
    },
    sumSquares(out, x, n) {
      let sum = 0;
      for (let j = 0; j < n; j++) sum += f32[x / 4 + j] * f32[x / 4 + j];
      f32[out / 4] = sum;
    },
    scale(x, n, alpha) {
      const a = f(alpha);
      for (let j = 0; j < n; j++) f32[x / 4 + j] = f(f32[x / 4 + j] * a);
    },
  };
}
