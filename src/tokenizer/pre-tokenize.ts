/**
 * BPE pre-tokenization as llama.cpp does it (unicode_regex_split in src/unicode.cpp): the text is cut by
 * a list of regexes, each applied inside the pieces the previous one left, keeping both the matches and
 * the text between them.
 *
 * llama.cpp runs these regexes over a "collapsed" copy of the text in which every non-ASCII code point
 * is replaced by one byte naming its Unicode category (letter 0xD2, number 0xD1, ...; whitespace 0x0B),
 * and each \p{..} in a regex by that byte plus the ASCII members of the category. For the GPT-2, Llama 3
 * and Qwen2 regexes it uses hand-written matchers that test the same category flags; they agree with
 * the regex on the collapsed text. We do the same collapse, so plain JavaScript regexes (no /u) give
 * llama.cpp's pieces, including its Unicode tables:
 *   - Categories come from JavaScript's \p{..} (Node 20: Unicode 15.1+), whitespace from \p{White_Space}
 *     (the same list as llama.cpp's unicode_set_whitespace).
 *   - llama.cpp's tables are Unicode 15.1; code points assigned since (CODE_POINTS_NEWER_THAN_LLAMA_CPP)
 *     are "undefined" there, so they are here too.
 */

export interface PreTokenizer {
  /** llama.cpp's regexes for this pre-tokenizer type, verbatim (llm_tokenizer_bpe's constructor). */
  regexes: string[];
  /** Words that are whole tokens skip the merges (llama.cpp's ignore_merges). */
  ignoreMerges: boolean;
  /** llama.cpp's default for tokenizer.ggml.add_bos_token. */
  addBos: boolean;
  /** Detokenization removes spaces before punctuation and contractions (clean_up_tokenization_spaces). */
  cleanSpaces: boolean;
}

const GPT2 = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)";
const LLAMA3 =
  "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const QWEN2 =
  "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

const pre = (regexes: string[], flags: Partial<PreTokenizer> = {}): PreTokenizer => ({
  regexes,
  ignoreMerges: false,
  addBos: false,
  cleanSpaces: true,
  ...flags,
});

/** tokenizer.ggml.pre -> pre-tokenizer, the settings of llama_vocab::impl::load. */
export const PRE_TOKENIZERS: Record<string, PreTokenizer> = {
  default: pre(["[\\p{P}\\$\\+<=>\\^~\\|]+", GPT2, "\\p{N}+", "[0-9][0-9][0-9]"]),
  "gpt-2": pre([GPT2]),
  llama3: pre([LLAMA3], { ignoreMerges: true, addBos: true }),
  "llama-v3": pre([LLAMA3], { ignoreMerges: true, addBos: true }),
  "llama-bpe": pre([LLAMA3], { ignoreMerges: true, addBos: true }),
  qwen2: pre([QWEN2], { cleanSpaces: false }),
  "deepseek-r1-qwen": pre([QWEN2], { cleanSpaces: false }),
  smollm: pre(["\\p{N}", GPT2], { cleanSpaces: false }),
  starcoder: pre(["\\p{N}", GPT2]),
};

/** Code points of categories L, N and P (the ones these regexes test) that llama.cpp's Unicode 15.1 tables leave undefined. */
const CODE_POINTS_NEWER_THAN_LLAMA_CPP = (
  "88f c5c cdc 1b4e-1b4f 1b7f 1c89-1c8a a7cb-a7cf a7d2 a7d4 a7da-a7dc a7f1 105c0-105f3 10940-10959 10d40-10d65 " +
  "10d6e-10d85 10ec2-10ec7 10ed0 11380-11389 1138b 1138e 11390-113b5 113b7 113d1 113d3-113d5 113d7-113d8 " +
  "116d0-116e3 11bc0-11be1 11bf0-11bf9 11db0-11ddb 11de0-11de9 13460-143fa 16100-1611d 16130-16139 16d40-16d79 " +
  "16ea0-16eb8 16ebb-16ed3 16ff2-16ff6 187f8-187ff 18cff 18d09-18d1e 18d80-18df2 1ccf0-1ccf9 1e5d0-1e5ed " +
  "1e5f0-1e5fa 1e5ff 1e6c0-1e6de 1e6e0-1e6e2 1e6e4-1e6e5 1e6e7-1e6ed 1e6f0-1e6f4 1e6fe-1e6ff 2b73a-2b73f " +
  "2cea2-2cead 323b0-33479"
)
  .split(" ")
  .map((range) => range.split("-").map((hex) => parseInt(hex, 16)))
  .map(([first, last]) => [first, last ?? first] as const);

/** Collapsed byte of each category, and the ASCII members that stand beside it (unicode_regex_split's tables). */
const CATEGORIES = [
  { name: "N", test: /\p{N}/u, byte: "\xD1", ascii: "0-9" },
  { name: "L", test: /\p{L}/u, byte: "\xD2", ascii: "A-Za-z" },
  { name: "P", test: /\p{P}/u, byte: "\xD3", ascii: "!-#%-*,-/:-;?-@\\[-\\]_\\{\\}" },
  { name: "M", test: /\p{M}/u, byte: "\xD4", ascii: "" },
  { name: "S", test: /\p{S}/u, byte: "\xD5", ascii: "\\$\\+<->\\^`\\|~" },
];
const UNDEFINED_BYTE = "\xD0";
const WHITESPACE_BYTE = "\x0B";

const collapsedCache = new Map<number, string>();

/** The collapsed stand-in of one non-ASCII code point. */
function collapseCodePoint(cp: number): string {
  let c = collapsedCache.get(cp);
  if (c === undefined) {
    const ch = String.fromCodePoint(cp);
    const newer = CODE_POINTS_NEWER_THAN_LLAMA_CPP.some(([first, last]) => cp >= first && cp <= last);
    if (/\p{White_Space}/u.test(ch)) c = WHITESPACE_BYTE;
    else if (newer) c = UNDEFINED_BYTE;
    else c = CATEGORIES.find((k) => k.test.test(ch))?.byte ?? UNDEFINED_BYTE;
    collapsedCache.set(cp, c);
  }
  return c;
}

/** llama.cpp's rewrite of a regex for collapsed text: \p{X} -> [<byte><ascii>] (no brackets inside a class). */
export function collapseRegex(source: string): RegExp {
  let out = "";
  let inside = false;
  for (let i = 0; i < source.length; i++) {
    const c = source[i];
    if (c === "[" && (i === 0 || source[i - 1] !== "\\")) inside = true;
    else if (inside && c === "]" && source[i - 1] !== "\\") inside = false;
    const property = /^\\p\{(\w+)\}/.exec(source.slice(i));
    const category = property && CATEGORIES.find((k) => k.name === property[1]);
    if (property && category) {
      const members = category.byte + category.ascii;
      out += inside ? members : `[${members}]`;
      i += property[0].length - 1;
    } else {
      out += c;
    }
  }
  return new RegExp(out, "g");
}

const compiled = new Map<string, RegExp>();

/** Cuts `text` into the words BPE merges within (not yet byte-encoded). */
export function preTokenize(text: string, pre: PreTokenizer): string[] {
  // Step 1: one collapsed UTF-16 unit per code point.
  const codePoints = Array.from(text);
  const collapsed = codePoints
    .map((ch) => (ch.length === 1 && ch < "\x80" ? ch : collapseCodePoint(ch.codePointAt(0)!)))
    .join("");

  // Step 2: each regex splits every current piece into matches and the gaps between them.
  let lengths = [codePoints.length];
  for (const source of pre.regexes) {
    let regex = compiled.get(source);
    if (regex === undefined) compiled.set(source, (regex = collapseRegex(source)));
    const next: number[] = [];
    let start = 0;
    for (const length of lengths) {
      const piece = collapsed.slice(start, start + length);
      let end = 0; // end of the last match inside piece
      for (const match of piece.matchAll(regex)) {
        if (match[0].length === 0) continue;
        if (match.index > end) next.push(match.index - end);
        next.push(match[0].length);
        end = match.index + match[0].length;
      }
      if (end < length) next.push(length - end);
      start += length;
    }
    lengths = next;
  }

  // Step 3: the pieces of the original text.
  const words: string[] = [];
  let start = 0;
  for (const length of lengths) {
    words.push(codePoints.slice(start, start + length).join(""));
    start += length;
  }
  return words;
}
