/**
 * Which dtype each tensor gets in the GGUF file types kvslim writes: llama-quantize's choices (without an
 * importance matrix) for dense llama/qwen2 models, checked on hand-worked cases.
 */
import { describe, expect, test } from "vitest";
import { UnsupportedError } from "../src/errors.js";
import { FILE_TYPES, tensorDTypes, usesMoreBits } from "../src/model/file-types.js";
import { llamaConfig } from "../src/model/synthetic.js";
import { expectedTensors } from "../src/model/tensor-names.js";

const range = (n: number) => Array.from({ length: n }, (_, i) => i);

describe("GGUF file types", () => {
  test("general.file_type values are llama.h's llama_ftype numbers", () => {
    expect(FILE_TYPES).toEqual({
      f32: 0,
      f16: 1,
      q4_0: 2,
      q4_1: 3,
      q8_0: 7,
      q5_0: 8,
      q5_1: 9,
      q4_k_s: 14,
      q4_k_m: 15,
      q5_k_s: 16,
      q5_k_m: 17,
      q6_k: 18,
      bf16: 32,
    });
  });

  test("use_more_bits picks llama-quantize's layers for 16, 28 and 32 layers", () => {
    const picked = (n: number) => range(n).filter((i) => usesMoreBits(i, n));
    expect(picked(16)).toEqual([0, 1, 4, 7, 10, 13, 14, 15]);
    expect(picked(28)).toEqual([0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 24, 25, 26, 27]);
    expect(picked(32)).toEqual([0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]);
  });

  const k256 = llamaConfig({ dModel: 256, nLayers: 16, nHeads: 4, nKvHeads: 2, ffnDim: 512, vocabSize: 512 });
  const mix = (type: keyof typeof FILE_TYPES, config = k256) =>
    tensorDTypes(type, expectedTensors(config), config.tiedEmbeddings);

  test("q4_k_m: output q6_k, attn_v and ffn_down q6_k in the use_more_bits layers, the other matrices q4_k, vectors f32", () => {
    const m = mix("q4_k_m");
    const more = [0, 1, 4, 7, 10, 13, 14, 15];
    expect(m.get("output.weight")).toBe("q6_k");
    expect(m.get("token_embd.weight")).toBe("q4_k");
    expect(m.get("output_norm.weight")).toBe("f32");
    for (let l = 0; l < 16; l++) {
      const up = more.includes(l) ? "q6_k" : "q4_k";
      expect(m.get(`blk.${l}.attn_v.weight`), `layer ${l} attn_v`).toBe(up);
      expect(m.get(`blk.${l}.ffn_down.weight`), `layer ${l} ffn_down`).toBe(up);
      for (const t of ["attn_q", "attn_k", "attn_output", "ffn_gate", "ffn_up"]) {
        expect(m.get(`blk.${l}.${t}.weight`), `layer ${l} ${t}`).toBe("q4_k");
      }
      expect(m.get(`blk.${l}.attn_norm.weight`)).toBe("f32");
    }
  });

  test("q5_k_m, q4_k_s, q5_k_s, q6_k and the legacy types", () => {
    const m5 = mix("q5_k_m");
    expect([m5.get("blk.0.attn_v.weight"), m5.get("blk.2.attn_v.weight"), m5.get("blk.2.attn_q.weight")]).toEqual([
      "q6_k",
      "q5_k",
      "q5_k",
    ]);
    const s4 = mix("q4_k_s");
    // attn_v q5_k in layers 0-3; ffn_down q5_k for i < n/8 = 2.
    expect(range(6).map((l) => s4.get(`blk.${l}.attn_v.weight`))).toEqual([
      "q5_k",
      "q5_k",
      "q5_k",
      "q5_k",
      "q4_k",
      "q4_k",
    ]);
    expect(range(3).map((l) => s4.get(`blk.${l}.ffn_down.weight`))).toEqual(["q5_k", "q5_k", "q4_k"]);
    expect(s4.get("output.weight")).toBe("q6_k");
    const s5 = mix("q5_k_s");
    expect([s5.get("output.weight"), s5.get("blk.0.attn_v.weight"), s5.get("blk.0.ffn_down.weight")]).toEqual([
      "q6_k",
      "q5_k",
      "q5_k",
    ]);
    expect(
      new Set([...mix("q6_k")].filter(([n]) => n.endsWith("weight") && !n.includes("norm")).map(([, d]) => d)),
    ).toEqual(new Set(["q6_k"]));
    for (const legacy of ["q4_0", "q4_1", "q5_0", "q5_1"] as const) {
      const m = mix(legacy);
      expect(m.get("output.weight"), legacy).toBe("q6_k");
      expect(m.get("blk.3.attn_v.weight"), legacy).toBe(legacy);
      expect(m.get("token_embd.weight"), legacy).toBe(legacy);
    }
    expect(mix("q8_0").get("output.weight")).toBe("q8_0");
    expect(mix("f16").get("output.weight")).toBe("f16");
    expect(mix("bf16").get("blk.0.attn_v.weight")).toBe("bf16");
  });

  test("tied embeddings: token_embd.weight is the output matrix (q6_k in q4_k_m and q4_0 files)", () => {
    const tied = llamaConfig({ dModel: 256, nLayers: 2, nHeads: 4, ffnDim: 512, vocabSize: 512, tiedEmbeddings: true });
    expect(mix("q4_k_m", tied).get("token_embd.weight")).toBe("q6_k");
    expect(mix("q4_0", tied).get("token_embd.weight")).toBe("q6_k");
    expect(mix("q4_k_m", tied).has("output.weight")).toBe(false);
  });

  test("rows that are not whole k-quant blocks fall back: q4_k → q5_0, q5_k → q5_1, q6_k → q8_0, else f16", () => {
    // d_model 96: rows of 96 (not 256) for most matrices, 192 for ffn_down.
    const small = llamaConfig({ dModel: 96, nLayers: 2, nHeads: 4, ffnDim: 192, vocabSize: 512 });
    const m4 = mix("q4_k_m", small);
    expect(m4.get("blk.0.attn_q.weight")).toBe("q5_0");
    expect(m4.get("blk.1.attn_v.weight")).toBe("q8_0"); // q6_k (use_more_bits: layer 1 of 2) → q8_0
    expect(m4.get("output.weight")).toBe("q8_0"); // output rule: rows not whole q4_k blocks → q8_0 directly
    expect(mix("q5_k_s", small).get("blk.0.attn_q.weight")).toBe("q5_1");
    expect(mix("q6_k", small).get("blk.0.attn_q.weight")).toBe("q8_0");
    // ffn_down rows of 72: not whole 32-blocks either, so f16.
    const odd = llamaConfig({ dModel: 256, nLayers: 1, nHeads: 2, ffnDim: 72, vocabSize: 512 });
    expect(mix("q4_k_m", odd).get("blk.0.ffn_down.weight")).toBe("f16");
    expect(() => mix("q4_0", odd)).toThrow(UnsupportedError);
    expect(() => mix("q4_0", odd)).toThrow(
      /ffn_down.weight has rows of 72 elements, not a multiple of the q4_0 block size 32/,
    );
    // The output matrix has no f16 fallback (llama-quantize stops too).
    const narrow = llamaConfig({ dModel: 40, nLayers: 1, nHeads: 2, ffnDim: 64, vocabSize: 512 });
    expect(() => mix("q4_k_m", narrow)).toThrow(/output.weight has rows of 40 elements, not a multiple of the q8_0/);
  });
});
