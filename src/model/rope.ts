/**
 * RoPE angles for one position, computed the way llama.cpp computes them (so logits agree bit-closely):
 * in f32, theta_0 = pos, theta_{i+1} = theta_i * base^(-2/ropeDim), each divided by a per-frequency
 * factor when the model has Llama-3 scaling (rope_freqs in GGUF, rope_scaling in config.json).
 */
import type { ModelConfig } from "./config.js";

/** (ropeDim/2) divisors of the base frequencies for Llama-3 scaling, as llama.cpp's converter writes them. */
export function llama3FreqFactors(c: ModelConfig): Float32Array | null {
  const s = c.ropeScaling;
  if (!s) return null;
  const half = c.ropeDim / 2;
  const factors = new Float32Array(half);
  const lowWavelen = s.originalContext / s.lowFreqFactor;
  const highWavelen = s.originalContext / s.highFreqFactor;
  for (let i = 0; i < half; i++) {
    const invFreq = 1 / c.ropeTheta ** ((2 * i) / c.ropeDim);
    const wavelen = (2 * Math.PI) / invFreq;
    if (wavelen < highWavelen) factors[i] = 1;
    else if (wavelen > lowWavelen) factors[i] = s.factor;
    else {
      const smooth = (s.originalContext / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
      factors[i] = 1 / ((1 - smooth) / s.factor + smooth);
    }
  }
  return factors;
}

export class RopeTable {
  private readonly thetaScale: number;

  constructor(
    private readonly ropeDim: number,
    base: number,
    private readonly freqFactors: Float32Array | null,
  ) {
    this.thetaScale = Math.fround(Math.pow(Math.fround(base), Math.fround(-2 / ropeDim)));
  }

  /** Writes cos and sin (ropeDim/2 each) of position `pos` into f32 at indices cosAt and sinAt. */
  fill(f32: Float32Array, cosAt: number, sinAt: number, pos: number): void {
    let theta = Math.fround(pos);
    for (let i = 0; i < this.ropeDim / 2; i++) {
      const t = this.freqFactors ? Math.fround(theta / this.freqFactors[i]) : theta;
      f32[cosAt + i] = Math.cos(t);
      f32[sinAt + i] = Math.sin(t);
      theta = Math.fround(theta * this.thetaScale);
    }
  }
}
