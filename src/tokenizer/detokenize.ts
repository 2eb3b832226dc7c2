/**
 * Detokenization shared by the GGUF and Hugging Face tokenizers: token ids -> bytes per token ->
 * UTF-8 text -> optional clean-up of spaces, once for a whole sequence (decode) or incrementally
 * (StreamDecoder), with the guarantee that the pushes plus the flush give exactly decode's text.
 *
 * The stream holds back (1) bytes of an incomplete UTF-8 character, which TextDecoder's stream mode
 * does for us, and (2) when a clean-up is active, the text after the last character that no clean-up
 * pattern can continue from. Every pattern (" ?", " ' ", " 're", " n't" ...) has only ' ', '\'', 'n',
 * 'r' or 'v' in front of its last character, and clean-ups only delete spaces, so text before a
 * position whose previous character is none of those cleans the same alone as in the whole sequence.
 */
import type { DecodeOptions, StreamDecoder } from "./tokenizer.js";

export type Cleanup = (text: string) => string;

/** llama.cpp's clean_spaces passes (llama_vocab::impl::detokenize), written as regexes. */
export const llamaCppCleanup: Cleanup = (text) =>
  text
    .replace(/ (?=[?!.,])/g, "") // " ?", " !", " .", " ,"
    .replace(/ ' /g, "'") // a lone apostrophe between spaces
    .replace(/ (?='(?:[sm]|re|ve))/g, ""); // " 's", " 'm", " 're", " 've"

/** Hugging Face's clean_up_tokenization (transformers and tokenizers.js). */
export const hfCleanup: Cleanup = (text) =>
  text
    .replace(/ \./g, ".")
    .replace(/ \?/g, "?")
    .replace(/ !/g, "!")
    .replace(/ ,/g, ",")
    .replace(/ ' /g, "'")
    .replace(/ n't/g, "n't")
    .replace(/ 'm/g, "'m")
    .replace(/ 's/g, "'s")
    .replace(/ 've/g, "'ve")
    .replace(/ 're/g, "'re");

/** Characters a clean-up pattern can continue from (see the top of the file). */
const OPEN_PATTERN_CHARS = new Set([" ", "'", "n", "r", "v"]);

export interface PieceSource {
  /** The bytes of one token; null when the token is dropped before detokenization (and so does not count as first). */
  piece(id: number, skipSpecial: boolean): Uint8Array | null;
  /** Drop one leading space from the first token's bytes (SentencePiece's added prefix space). */
  stripFirstSpace: boolean;
  cleanup: Cleanup | null;
}

/** The whole sequence at once: all bytes, one UTF-8 decode, one clean-up. */
export function detokenize(source: PieceSource, ids: readonly number[], options: DecodeOptions = {}): string {
  const skipSpecial = options.skipSpecial ?? true;
  const pieces: Uint8Array[] = [];
  for (const id of ids) {
    let bytes = source.piece(id, skipSpecial);
    if (bytes === null) continue;
    if (pieces.length === 0 && source.stripFirstSpace && bytes[0] === 0x20) bytes = bytes.subarray(1);
    pieces.push(bytes);
  }
  const all = new Uint8Array(pieces.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of pieces) {
    all.set(p, at);
    at += p.length;
  }
  const text = new TextDecoder("utf-8", { ignoreBOM: true }).decode(all);
  return source.cleanup === null ? text : source.cleanup(text);
}

/** Token by token; see the top of the file for what is held back and why the result equals detokenize's. */
export class Detokenizer implements StreamDecoder {
  private readonly utf8 = new TextDecoder("utf-8", { ignoreBOM: true }); // a leading U+FEFF is text, not a mark
  private readonly skipSpecial: boolean;
  private first = true;
  private held = ""; // decoded text not yet cleaned and returned

  constructor(
    private readonly source: PieceSource,
    options: DecodeOptions = {},
  ) {
    this.skipSpecial = options.skipSpecial ?? true;
  }

  push(id: number): string {
    let bytes = this.source.piece(id, this.skipSpecial);
    if (bytes === null) return "";
    if (this.first && this.source.stripFirstSpace && bytes[0] === 0x20) bytes = bytes.subarray(1);
    this.first = false;
    this.held += this.utf8.decode(bytes, { stream: true });
    const cleanup = this.source.cleanup;
    if (cleanup === null) return this.release(this.held.length, (t) => t);
    let safe = this.held.length;
    while (safe > 0 && OPEN_PATTERN_CHARS.has(this.held[safe - 1])) safe--;
    return this.release(safe, cleanup);
  }

  flush(): string {
    this.held += this.utf8.decode();
    return this.release(this.held.length, this.source.cleanup ?? ((t) => t));
  }

  private release(length: number, cleanup: Cleanup): string {
    const text = this.held.slice(0, length);
    this.held = this.held.slice(length);
    return cleanup(text);
  }
}

const encoder = new TextEncoder();

export function utf8Bytes(text: string): Uint8Array {
  return encoder.encode(text);
}
