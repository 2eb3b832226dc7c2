/**
 * Token streams and batches for training: documents tokenized once into one stream (each document
 * followed by EOS), batches of B windows of T + 1 tokens at random offsets (inputs = the first T, targets =
 * the last T), and a fixed set of validation windows.
 *
 * The sampler's only state is its generator's (Rng, four u32), saved in checkpoints, so a resumed run
 * draws exactly the windows the uninterrupted run would have drawn.
 */
import { Rng } from "../../model/sampler.js";
import type { TextTokenizer } from "../../tokenizer/tokenizer.js";
import { fnv1a32 } from "./wordnet.js";

/** The documents as one token stream, each followed by EOS (the tokenizer must have one). */
export function tokenizeStream(documents: Iterable<string>, tokenizer: TextTokenizer): Int32Array {
  const eos = tokenizer.eos;
  if (eos === null) throw new Error("the tokenizer has no EOS token to separate documents");
  const chunks: number[][] = [];
  let n = 0;
  for (const doc of documents) {
    const ids = tokenizer.encode(doc, { addBos: false });
    ids.push(eos);
    chunks.push(ids);
    n += ids.length;
  }
  const out = new Int32Array(n);
  let at = 0;
  for (const ids of chunks) {
    out.set(ids, at);
    at += ids.length;
  }
  return out;
}

/** FNV-1a over the tokens' bytes (little-endian int32), as 8 hex digits: identifies a training stream in a checkpoint. */
export function streamDigest(stream: Int32Array): string {
  return fnv1a32(new Uint8Array(stream.buffer, stream.byteOffset, stream.byteLength))
    .toString(16)
    .padStart(8, "0");
}

export class BatchSampler {
  private rng: Rng;

  constructor(
    private readonly stream: Int32Array,
    readonly batch: number, // B
    readonly seqLen: number, // T
    seedOrState: number | readonly number[],
  ) {
    if (stream.length < seqLen + 2) {
      throw new Error(`the training stream has ${stream.length} tokens, fewer than one window of ${seqLen + 1}`);
    }
    this.rng = typeof seedOrState === "number" ? new Rng(seedOrState) : Rng.fromState(seedOrState);
  }

  /** The generator state to save; `new BatchSampler(stream, B, T, state)` continues from it. */
  get state(): number[] {
    return this.rng.state;
  }

  /** Fills tokens and targets (B·T each) with the next batch's windows. */
  next(tokens: Int32Array, targets: Int32Array): void {
    const { stream, batch: B, seqLen: T } = this;
    const span = stream.length - T;
    for (let b = 0; b < B; b++) {
      const o = Math.floor(this.rng.next() * span);
      tokens.set(stream.subarray(o, o + T), b * T);
      targets.set(stream.subarray(o + 1, o + T + 1), b * T);
    }
  }
}

/** n windows of T + 1 tokens evenly spaced through `stream` (the validation set), as batches of B. */
export function validationBatches(
  stream: Int32Array,
  batch: number,
  seqLen: number,
  batches: number,
): { tokens: Int32Array; targets: Int32Array }[] {
  const n = batch * batches;
  const stride = Math.max(1, Math.floor((stream.length - seqLen - 1) / n));
  const out: { tokens: Int32Array; targets: Int32Array }[] = [];
  for (let i = 0; i < batches; i++) {
    const tokens = new Int32Array(batch * seqLen);
    const targets = new Int32Array(batch * seqLen);
    for (let b = 0; b < batch; b++) {
      const o = Math.min((i * batch + b) * stride, stream.length - seqLen - 1);
      tokens.set(stream.subarray(o, o + seqLen), b * seqLen);
      targets.set(stream.subarray(o + 1, o + seqLen + 1), b * seqLen);
    }
    out.push({ tokens, targets });
  }
  return out;
}
