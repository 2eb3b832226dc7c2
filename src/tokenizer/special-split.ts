/**
 * Splitting raw text on the texts of special tokens before tokenization, as llama.cpp's
 * tokenizer_st_partition: for each special token in turn (longest first), every still-raw fragment is
 * cut at each occurrence. lstrip / rstrip drop the whitespace before / after an occurrence (Hugging Face
 * added-token flags; llama.cpp sets them for a few models only).
 */

export type Fragment = { text: string } | { id: number };

export interface SpecialToken {
  id: number;
  text: string;
  lstrip?: boolean;
  rstrip?: boolean;
}

export function splitOnSpecialTokens(text: string, specials: readonly SpecialToken[]): Fragment[] {
  let fragments: Fragment[] = text === "" ? [] : [{ text }];
  for (const special of specials) {
    const next: Fragment[] = [];
    for (const fragment of fragments) {
      if (!("text" in fragment) || !fragment.text.includes(special.text)) {
        next.push(fragment);
        continue;
      }
      let rest = fragment.text;
      for (let at = rest.indexOf(special.text); at >= 0; at = rest.indexOf(special.text)) {
        let left = rest.slice(0, at);
        if (special.lstrip) left = left.replace(/[ \t\n\v\f\r]+$/, "");
        if (left !== "") next.push({ text: left });
        next.push({ id: special.id });
        rest = rest.slice(at + special.text.length);
        if (special.rstrip) rest = rest.replace(/^[ \t\n\v\f\r]+/, "");
      }
      if (rest !== "") next.push({ text: rest });
    }
    fragments = next;
  }
  return fragments;
}
