/**
 * Chat prompts: a model's Jinja chat template (tokenizer.chat_template in GGUF, chat_template in
 * tokenizer_config.json) rendered with @huggingface/jinja, the same variables transformers passes.
 * Encode the result with `parseSpecial: true` and `addBos: false` when the template writes BOS itself.
 */
import { Template } from "@huggingface/jinja";
import { FormatError, isInternalSlip } from "../errors.js";
import type { TextTokenizer } from "./tokenizer.js";

export interface ChatMessage {
  role: "system" | "user" | "assistant";
  content: string;
}

export interface ChatOptions {
  bosToken: string;
  eosToken: string;
  /** End with the header of an assistant turn, so the model writes the reply. */
  addGenerationPrompt: boolean;
}

export function renderChat(template: string, messages: ChatMessage[], options: ChatOptions): string {
  let parsed: Template;
  try {
    parsed = new Template(template);
  } catch (e) {
    // The parser's own syntax errors say where; its internal slips (a TypeError on an unclosed block) do not.
    const why = isInternalSlip(e) ? "a tag or block is unclosed or malformed" : (e as Error).message;
    throw new FormatError(`the model's chat template does not parse as Jinja: ${why}`);
  }
  try {
    return parsed.render({
      messages,
      bos_token: options.bosToken,
      eos_token: options.eosToken,
      add_generation_prompt: options.addGenerationPrompt,
    });
  } catch (e) {
    throw new FormatError(
      `the model's chat template failed to render: ${isInternalSlip(e) ? "it uses a value or filter in a way the renderer cannot follow" : (e as Error).message}`,
    );
  }
}

/**
 * A conversation as the prompt text the model expects: its own chat template rendered with its BOS and EOS
 * text, ending with the assistant's turn header. Encode it with `addBos: false` (the template writes BOS) and
 * `parseSpecial: true` (its control tokens are tokens). The tokenizer must have a template.
 */
export function chatPrompt(tok: TextTokenizer, messages: ChatMessage[]): string {
  if (tok.chatTemplate === null) throw new FormatError("the model has no chat template");
  const piece = (id: number | null) => (id === null ? "" : tok.decode([id], { skipSpecial: false }));
  return renderChat(tok.chatTemplate, messages, {
    bosToken: piece(tok.bos),
    eosToken: piece(tok.eos),
    addGenerationPrompt: true,
  });
}
