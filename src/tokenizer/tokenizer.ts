/**
 * The tokenizer kvslim's model, CLI and evaluation code talk to, and the two ways to get one:
 * from the metadata of a GGUF file (tokenizerFromGguf) or from a Hugging Face model directory
 * (loadHfTokenizer).
 *
 * GGUF vocabularies are tokenized by a TypeScript port of llama.cpp's own tokenizers (spm.ts, bpe.ts,
 * gguf-tokenizer.ts), because "the same ids as llama.cpp" is the contract there and the port is shorter
 * than bending @huggingface/tokenizers into it (see gguf-tokenizer.ts for why). tokenizer.json files go
 * through @huggingface/tokenizers (hf-tokenizer.ts). Both share the detokenizer in detokenize.ts.
 */
import type { GgufValue } from "../io/gguf.js";
import { ggufTokenizer } from "./gguf-tokenizer.js";
import { hfTokenizer } from "./hf-tokenizer.js";
import type { GgufVocabOptions } from "./vocab.js";

export interface EncodeOptions {
  /** Prepend BOS. Default: the file's choice (`addBos`). */
  addBos?: boolean;
  /**
   * Turn the text of control tokens ("<|eot_id|>", "<s>") into those tokens. Default false: such text is
   * tokenized like any other text, as llama.cpp does without parse_special. User-defined tokens are
   * always matched. Rendered chat templates need true.
   */
  parseSpecial?: boolean;
}

export interface DecodeOptions {
  /**
   * Leave control tokens (BOS, EOS, <|eot_id|> ...) out of the text. Default true, as llama.cpp's
   * detokenizer without unparse_special; false writes their text.
   */
  skipSpecial?: boolean;
}

/** Incremental detokenization for streaming generation. */
export interface StreamDecoder {
  /** The text that `id` completes; "" while a UTF-8 character or a clean-up decision is still open. */
  push(id: number): string;
  /** Whatever is still held back. push(a) + push(b) + ... + flush() === decode([a, b, ...]). */
  flush(): string;
}

export interface TextTokenizer {
  readonly vocabSize: number;
  readonly bos: number | null;
  readonly eos: number | null;
  /** Every id that ends generation: EOS, EOT (<|eot_id|>, <|im_end|> ...), EOM and the ids from generation_config.json. */
  readonly stopIds: ReadonlySet<number>;
  /** Whether encode() prepends BOS by default (tokenizer.ggml.add_bos_token, tokenizer_config.json, post-processor). */
  readonly addBos: boolean;
  /** The Jinja chat template shipped with the model, if any (render it with chat.ts). */
  readonly chatTemplate: string | null;
  encode(text: string, options?: EncodeOptions): number[];
  decode(ids: readonly number[], options?: DecodeOptions): string;
  createStreamDecoder(options?: DecodeOptions): StreamDecoder;
}

/**
 * The tokenizer described by GGUF metadata: tokenizer.ggml.model "llama" (SentencePiece with byte
 * fallback) or "gpt2" (byte-level BPE, pre-tokenizer chosen by tokenizer.ggml.pre). Tokenization
 * equals llama.cpp's. The options name the file in errors, collect notes on what was accepted but is
 * worth telling the user, and give the stored value types to check.
 */
export function tokenizerFromGguf(metadata: Map<string, GgufValue>, options?: GgufVocabOptions): TextTokenizer {
  return ggufTokenizer(metadata, options);
}

/**
 * The tokenizer of a Hugging Face model directory: tokenizer.json, plus tokenizer_config.json (BOS, EOS,
 * add_bos_token, chat template), chat_template.jinja and generation_config.json (EOS ids) when present.
 */
export function loadHfTokenizer(dir: string): TextTokenizer {
  return hfTokenizer(dir);
}
