/**
 * Token streams and batches for training: documents tokenized once into one stream (each document
 * followed by EOS), batches of B windows of T + 1 tokens (inputs = the first T, targets = the last T), and a
 * fixed set of validation windows. A window starts at a random offset, or, for a chosen share of them, ends
 * at a random retrieval document's EOS: a window at a random offset holds a document of L tokens whole with
 * probability about (T - L) / T, so documents nearly as long as the window (the long-range questions) would
 * almost never be seen with their facts in view.
 *
 * The sampler's only state is its generator's (Rng, four u32), saved in checkpoints, so a resumed run
 * draws exactly the windows the uninterrupted run would have drawn.
 */
import { Rng } from "../../model/sampler.js";
import type { TextTokenizer } from "../../tokenizer/tokenizer.js";
import type { StreamDocument } from "./retrieval.js";
import { fnv1a32 } from "./wordnet.js";

/** The documents as one token stream, each followed by EOS (the tokenizer must have one). */
export function tokenizeStream(documents: Iterable<string>, tokenizer: TextTokenizer): Int32Array {
  return tokenizeDocuments(marked(documents), tokenizer).tokens;
}

/** tokenizeStream, and the stream positions of the EOS after each retrieval document. */
export function tokenizeDocuments(
  documents: Iterable<StreamDocument>,
  tokenizer: TextTokenizer,
): { tokens: Int32Array; retrievalEnds: Int32Array } {
  const eos = tokenizer.eos;
  if (eos === null) throw new Error("the tokenizer has no EOS token to separate documents");
  const chunks: number[][] = [];
  const ends: number[] = [];
  let n = 0;
  for (const doc of documents) {
    const ids = tokenizer.encode(doc.text, { addBos: false });
    ids.push(eos);
    chunks.push(ids);
    n += ids.length;
    if (doc.retrieval) ends.push(n - 1);
  }
  const tokens = new Int32Array(n);
  let at = 0;
  for (const ids of chunks) {
    tokens.set(ids, at);
    at += ids.length;
  }
  return { tokens, retrievalEnds: Int32Array.from(ends) };
}

function* marked(documents: Iterable<string>): Generator<StreamDocument> {
  for (const text of documents) yield { text, retrieval: false };
}

/** Windows that end at a retrieval document's EOS: the share of all windows, and where those EOS are. */
export interface AnswerWindows {
  share: number;
  ends: Int32Array;
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
    private readonly answers: AnswerWindows = { share: 0, ends: new Int32Array(0) },
  ) {
    if (stream.length < seqLen + 2) {
      throw new Error(`the training stream has ${stream.length} tokens, fewer than one window of ${seqLen + 1}`);
    }
    if (!(answers.share >= 0 && answers.share <= 1) || (answers.share > 0 && answers.ends.length === 0)) {
      throw new Error(
        `answer windows: expected a share in [0, 1] and retrieval documents to end at, got share ${answers.share} and ${answers.ends.length} documents`,
      );
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
    const { share, ends } = this.answers;
    for (let b = 0; b < B; b++) {
      // With no answer windows, one draw per window: the windows of runs made before they existed.
      let o: number;
      if (share > 0 && this.rng.next() < share) {
        const end = ends[Math.floor(this.rng.next() * ends.length)];
        o = Math.min(Math.max(0, end - T), span - 1); // the last target is the document's EOS
      } else o = Math.floor(this.rng.next() * span);
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
