/**
 * The tensor-name table: which tensors a model has, under their GGUF and Hugging Face names, with the
 * shape the config implies. kvslim's canonical names are GGUF's.
 *
 * Shapes are outermost first: a projection from n to d features is (d, n).
 * CLA: consumer layers (kvSource[l] !== l) have no attn_k / attn_v (and no kv norm); a file carrying them
 * is rejected, as is a producer lacking them (docs/cla.md).
 */
import type { ModelConfig } from "./config.js";
import { derive } from "./config.js";

export interface TensorSpec {
  name: string; // GGUF name
  hfName: string; // Hugging Face safetensors name
  shape: number[];
  /** Small vectors (norms, biases) are converted to f32 at load; matrices stay in their file dtype. */
  vector: boolean;
  /** Q and K rows of HF llama checkpoints pair RoPE dims as halves; GGUF llama files interleave them. */
  ropeRows?: "q" | "k";
}

/** Every tensor the config requires, in load order. */
export function expectedTensors(c: ModelConfig): TensorSpec[] {
  const { qDim, kvDim, isProducer } = derive(c);
  const D = c.dModel;
  const specs: TensorSpec[] = [
    { name: "token_embd.weight", hfName: "model.embed_tokens.weight", shape: [c.vocabSize, D], vector: false },
  ];
  for (let l = 0; l < c.nLayers; l++) {
    const g = `blk.${l}.`;
    const h = `model.layers.${l}.`;
    const add = (name: string, hfName: string, shape: number[], extra: Partial<TensorSpec> = {}) =>
      specs.push({ name: g + name, hfName: h + hfName, shape, vector: shape.length === 1, ...extra });
    add("attn_norm.weight", "input_layernorm.weight", [D]);
    add("attn_q.weight", "self_attn.q_proj.weight", [qDim, D], { ropeRows: "q" });
    if (c.qkvBias) add("attn_q.bias", "self_attn.q_proj.bias", [qDim], { ropeRows: "q" });
    if (isProducer[l]) {
      if (c.kvNorm) add("attn_kv_norm.weight", "self_attn.kv_norm.weight", [D]);
      add("attn_k.weight", "self_attn.k_proj.weight", [kvDim, D], { ropeRows: "k" });
      if (c.qkvBias) add("attn_k.bias", "self_attn.k_proj.bias", [kvDim], { ropeRows: "k" });
      add("attn_v.weight", "self_attn.v_proj.weight", [kvDim, D]);
      if (c.qkvBias) add("attn_v.bias", "self_attn.v_proj.bias", [kvDim]);
    }
    add("attn_output.weight", "self_attn.o_proj.weight", [D, qDim]);
    add("ffn_norm.weight", "post_attention_layernorm.weight", [D]);
    add("ffn_gate.weight", "mlp.gate_proj.weight", [c.ffnDim, D]);
    add("ffn_up.weight", "mlp.up_proj.weight", [c.ffnDim, D]);
    add("ffn_down.weight", "mlp.down_proj.weight", [D, c.ffnDim]);
  }
  specs.push({ name: "output_norm.weight", hfName: "model.norm.weight", shape: [D], vector: true });
  if (!c.tiedEmbeddings) {
    specs.push({ name: "output.weight", hfName: "lm_head.weight", shape: [c.vocabSize, D], vector: false });
  }
  return specs;
}

/** Tensors a file may carry that kvslim reads no values from (precomputed RoPE tables and the like). */
export function isIgnorableTensor(name: string): boolean {
  return name === "rope_freqs.weight" || /\.rotary_emb\.inv_freq$/.test(name) || /^blk\.\d+\.attn_rot_embd$/.test(name);
}

/**
 * Row order of a Q or K projection in HF llama checkpoints vs GGUF: within each head, HF row
 * half*(Hd/2) + i is GGUF row 2i + half. Returns, for each GGUF row, the HF row it comes from.
 */
export function interleaveRowOrder(nHeads: number, Hd: number): Int32Array {
  const order = new Int32Array(nHeads * Hd);
  for (let h = 0; h < nHeads; h++) {
    for (let i = 0; i < Hd / 2; i++) {
      for (let half = 0; half < 2; half++) order[h * Hd + 2 * i + half] = h * Hd + half * (Hd / 2) + i;
    }
  }
  return order;
}
