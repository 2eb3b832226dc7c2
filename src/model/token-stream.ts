/**
 * From logits to text, one step at a time: sample a token, stop at an end-of-generation token, a stop
 * string or the token limit, and hand out only text that can no longer turn into a stop string. Session
 * .generate() and the server's batched decoding both run their sequences through it.
 */
import { NumericError } from "../errors.js";
import type { StreamDecoder, TextTokenizer } from "../tokenizer/tokenizer.js";
import { Sampler, type SamplerOptions } from "./sampler.js";

export type StopReason = "eos" | "stop-string" | "max-tokens";

export interface TokenStreamOptions extends SamplerOptions {
  /** Most tokens to generate. */
  maxTokens: number;
  /** Stop when the generated text contains one of these (the stop string is not emitted). */
  stop?: string[];
}

export interface TokenStep {
  /** The token sampled. */
  token: number;
  /** Text that is now safe to emit ("" while it could still become a stop string). */
  text: string;
  /** Why generation ends after this step, or null to evaluate the token and go on. */
  stop: StopReason | null;
}

export class TokenStream {
  private readonly sampler: Sampler;
  private readonly decoder: StreamDecoder;
  private readonly stops: string[];
  /** Text held back while it could still become a stop string. */
  private pending = "";
  /** Tokens sampled so far (an end-of-generation token counts). */
  generated = 0;
  stopReason: StopReason | null = null;

  constructor(
    private readonly tokenizer: TextTokenizer,
    private readonly options: TokenStreamOptions,
  ) {
    this.sampler = new Sampler(options);
    this.decoder = tokenizer.createStreamDecoder();
    this.stops = options.stop ?? [];
  }

  /** Samples the next token from the logits after `position` tokens (the logits may be overwritten). */
  next(logits: Float32Array, position: number): TokenStep {
    // Embedding rows past the tokenizer's last token (a padded vocabulary) have no text: never sampled.
    if (this.tokenizer.vocabSize < logits.length) logits.fill(-Infinity, this.tokenizer.vocabSize);
    checkLogits(logits, position);
    const token = this.sampler.sample(logits);
    this.generated++;
    if (this.tokenizer.stopIds.has(token)) return this.end(token, "", "eos");
    this.pending += this.decoder.push(token);
    const hit = this.stops.map((s) => this.pending.indexOf(s)).filter((i) => i >= 0);
    if (hit.length > 0) {
      const text = this.pending.slice(0, Math.min(...hit));
      this.pending = "";
      return this.end(token, text, "stop-string");
    }
    const safe = this.pending.length - longestStopPrefix(this.pending, this.stops);
    const text = this.pending.slice(0, safe);
    this.pending = this.pending.slice(safe);
    return this.generated >= this.options.maxTokens ? this.end(token, text, "max-tokens") : { token, text, stop: null };
  }

  private end(token: number, text: string, reason: StopReason): TokenStep {
    this.stopReason = reason;
    // Held-back text and bytes of an unfinished character are the output's end, unless a stop string cut it.
    if (reason !== "stop-string") text += this.pending + this.decoder.flush();
    this.pending = "";
    return { token, text, stop: reason };
  }
}

/** Length of the longest suffix of `text` that is a proper prefix of a stop string. */
function longestStopPrefix(text: string, stops: string[]): number {
  let best = 0;
  for (const s of stops) {
    for (let n = Math.min(s.length - 1, text.length); n > best; n--) {
      if (text.endsWith(s.slice(0, n))) {
        best = n;
        break;
      }
    }
  }
  return best;
}

/** Sampling from NaN or +∞ logits would pick an arbitrary token: say what happened instead. */
function checkLogits(logits: Float32Array, position: number): void {
  for (let i = 0; i < logits.length; i++) {
    const x = logits[i];
    if (x !== x || x === Infinity) {
      throw new NumericError(
        `the logits after position ${position} hold ${x} (token ${i}): the model's weights contain NaN or ` +
          `infinite values, or its activations overflow f32; the model file may be corrupt`,
      );
    }
  }
}
