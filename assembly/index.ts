// The kernel module: every method of the Kernels interface (src/kernels/kernels.ts), exported
// under the interface's names, over byte offsets into the imported shared memory.
// One idea per file; this file only gathers them.
export { matvecF32, matvecF16, matvecBf16 } from "./matvec";
export { matmulF32, matmulF16, matmulBf16 } from "./matmul";
export { matvecQ8_0, matmulQ8_0, quantizeQ8_0, getRowQ8_0 } from "./q8_0";
export { quantizeQ8_1, quantizeQ8_K, matvecQ4_0, matvecQ4_1, matvecQ5_0, matvecQ5_1, matvecQ4_K, matvecQ5_K, matvecQ6_K, matmulQ4_0, matmulQ4_1, matmulQ5_0, matmulQ5_1, matmulQ4_K, matmulQ5_K, matmulQ6_K, getRowQ4_0, getRowQ4_1, getRowQ5_0, getRowQ5_1, getRowQ4_K, getRowQ5_K, getRowQ6_K } from "./quants";
export { roundF16, roundBf16, getRowF32, getRowF16, getRowBf16, rmsnorm, ropeInterleaved, ropeHalves, swiglu, add } from "./elementwise";
export { packBf16, storeColumnF32, storeColumnBf16 } from "./elementwise";
export { attendF32, softmaxF32, expSumF32, attentionF32, attentionBf16, attendRowsF32, attendRowsBf16 } from "./attention";
export { attentionCausalF32, attentionCausalBf16 } from "./attention-causal";
export { sparqScoresF32, sparqScoresBf16, sparqScoresStridedF32, sparqScoresStridedBf16, sparqAlpha } from "./sparq";
export { topK } from "./topk";
// The KV cache in q8_0 / q4_0 blocks: the q4_0 quantiser, dense attention, SparQ's scores.
export { quantizeQ4_0, attentionQ8_0, attentionQ4_0, attendRowsQ8_0, attendRowsQ4_0, attentionCausalQ8_0, attentionCausalQ4_0 } from "./kv-quant";
export { sparqScoresQ8_0T, sparqScoresQ4_0T, sparqScoresStridedQ8_0, sparqScoresStridedQ4_0 } from "./kv-quant-sparq";
// Training (f32): the backward kernels, the forwards that save what they need, the loss, the optimizer.
export { matmulBackwardInput, matmulBackwardWeight } from "./train-matmul";
export { rmsnormForward, rmsnormBackward } from "./train-rmsnorm";
export { ropeInterleavedBackward, ropeHalvesBackward, swigluBackward, embeddingBackward } from "./train-elementwise";
export { attentionForward, attentionBackwardPV, attentionBackwardQK } from "./train-attention";
export { crossEntropy } from "./train-loss";
export { adamw, sumSquares, scale } from "./train-optimizer";
// Not kernels: the SIMD exps, exported so the tests can measure their accuracy directly, and the
// benchmarks' measure of a build's arithmetic peak.
export { expF32, expApproxF32 } from "./exp";
export { peakF32, peakI8, peakI8Products } from "./peak";

/**
 * The first byte past the module's static data. The loader checks it is below the arena's
 * RESERVED prefix, the only part of memory the module may use for itself.
 */
export function staticDataEnd(): usize {
  return __heap_base;
}
