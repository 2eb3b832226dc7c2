/**
 * Chat prompts: a model's Jinja chat template (tokenizer.chat_template in GGUF, chat_template in
 * tokenizer_config.json) rendered with @huggingface/jinja, the same variables transformers passes.
 * Encode the result with `parseSpecial: true` and `addBos: false` when the template writes BOS itself.
 */
import { Template } from "@huggingface/jinja";
import { FormatError } from "../errors.js";

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
    throw new FormatError(`the chat template does not parse: ${(e as Error).message}`);
  }
  try {
    return parsed.render({
      messages,
      bos_token: options.bosToken,
      eos_token: options.eosToken,
      add_generation_prompt: options.addGenerationPrompt,
    });
  } catch (e) {
    throw new FormatError(`the chat template failed to render: ${(e as Error).message}`);
  }
}
