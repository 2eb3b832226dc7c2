/**
 * `kvslim generate`: stream a completion to stdout, then one stats line (prompt tokens/s, generated
 * tokens/s, KV bytes in use) to stderr.
 */
import fs from "node:fs";
import type { Command } from "commander";
import { FormatError, UsageError, formatBytes } from "../errors.js";
import { loadModel } from "../model/model.js";
import { renderChat, type ChatMessage } from "../tokenizer/chat.js";
import { addAttentionOptions, attentionSpecFrom, kvDtypeFrom, type AttentionFlags } from "./attention-options.js";
import { collect, floatOption, intOption, threadsOption } from "./options.js";

interface GenerateFlags extends AttentionFlags {
  model: string;
  prompt?: string;
  file?: string;
  tokens: number;
  temperature: number;
  topK: number;
  topP: number;
  seed?: number;
  context?: number;
  stop: string[];
  chat?: boolean;
  system?: string;
  kernels: "wasm" | "reference";
  threads?: number;
}

export function registerGenerate(program: Command): void {
  const command = program
    .command("generate")
    .description("generate text from a prompt")
    .requiredOption("-m, --model <path>", "a .gguf file or a model directory (config.json + model.safetensors + tokenizer.json)")
    .option("-p, --prompt <text>", "the prompt")
    .option("-f, --file <path>", "read the prompt from a file")
    .option("-n, --tokens <n>", "most tokens to generate", intOption("--tokens", 0), 128)
    .option("--temperature <t>", "0 = greedy", floatOption("--temperature", 0, 100), 0.8)
    .option("--top-k <k>", "sample from the k most likely tokens (0 = all)", intOption("--top-k", 0), 40)
    .option("--top-p <p>", "nucleus sampling mass", floatOption("--top-p", 0, 1), 0.95)
    .option("--seed <n>", "random seed", intOption("--seed", 0))
    .option("-c, --context <n>", "context size (default: the model's, at most 4096)", intOption("--context", 1))
    .option("--stop <text>", "stop when this text is generated (repeatable)", collect, [])
    .option("--chat", "wrap the prompt in the model's chat template")
    .option("--system <text>", "system message for --chat")
    .option("--kernels <which>", "wasm (default) or reference (slow, for checking)", "wasm")
    .option(...threadsOption);
  addAttentionOptions(command).action(async (flags: GenerateFlags) => {
      const attention = attentionSpecFrom(flags);
      const kvDtype = kvDtypeFrom(flags);
      const prompt = readPrompt(flags);
      if (flags.kernels !== "wasm" && flags.kernels !== "reference") {
        throw new UsageError(`--kernels expects wasm or reference, got "${flags.kernels}"`);
      }
      const model = await loadModel(flags.model, { contextSize: flags.context, kernels: flags.kernels, kvDtype, attention, threads: flags.threads });
      for (const note of model.source.notes) process.stderr.write(`note: ${note}\n`);
      if (model.contextSize > model.config.contextLength) {
        // As llama.cpp does: allowed (RoPE runs at any position), but the model never saw these positions.
        process.stderr.write(`note: --context ${model.contextSize} is longer than the ${model.config.contextLength} positions the model was trained on; text past them is unlikely to be useful\n`);
      }
      if ((attention.method === "h2o" || attention.method === "streaming") && attention.budget !== undefined && attention.budget >= model.contextSize) {
        process.stderr.write(`note: --kv-budget ${attention.budget} is at least the ${model.contextSize}-token context: ${attention.method} never evicts, attention is dense\n`);
      }
      const session = model.createSession();
      try {
        const tok = model.tokenizer;
        let text = prompt;
        let addBos: boolean | undefined;
        let parseSpecial = false;
        if (flags.chat) {
          if (!tok.chatTemplate) throw new FormatError(`${flags.model} has no chat template; run without --chat`);
          const messages: ChatMessage[] = flags.system ? [{ role: "system", content: flags.system }] : [];
          messages.push({ role: "user", content: prompt });
          const piece = (id: number | null) => (id === null ? "" : tok.decode([id], { skipSpecial: false }));
          text = renderChat(tok.chatTemplate, messages, { bosToken: piece(tok.bos), eosToken: piece(tok.eos), addGenerationPrompt: true });
          addBos = false; // templates write BOS themselves
          parseSpecial = true; // the template's control tokens are tokens, not text
        }
        const iterator = session.generate(text, {
          maxTokens: flags.tokens,
          temperature: flags.temperature,
          topK: flags.topK,
          topP: flags.topP,
          seed: flags.seed,
          stop: flags.stop,
          addBos,
          parseSpecial,
        });
        let result = await iterator.next();
        while (!result.done) {
          process.stdout.write(result.value.text);
          result = await iterator.next();
        }
        const s = result.value;
        process.stdout.write("\n");
        process.stderr.write(
          `prompt ${s.promptTokens} tokens at ${s.promptTokensPerSecond.toFixed(1)} tok/s · generated ${s.generatedTokens} tokens at ` +
            `${s.generatedTokensPerSecond.toFixed(1)} tok/s · KV ${formatBytes(s.kvBytesInUse)} stored (${formatBytes(s.kvBytesAllocated)} allocated, ${kvDtype}) · stop: ${s.stopReason}\n`,
        );
        const t = s.kvTraffic;
        if (t.steps > 0) {
          process.stderr.write(
            `attention ${s.attention}: KV read+written ${formatBytes(t.bytesPerStep)}/token vs dense ${formatBytes(t.denseBytesPerStep)}/token ` +
              `(${t.ratio.toFixed(3)}×, 1/${(1 / t.ratio).toFixed(1)}) over ${t.steps} decode steps\n`,
          );
        }
      } finally {
        session.dispose();
        model.dispose();
      }
  });
}

function readPrompt(flags: GenerateFlags): string {
  if (flags.prompt !== undefined && flags.file !== undefined) throw new UsageError("give the prompt with -p or -f, not both");
  if (flags.file !== undefined) {
    try {
      return fs.readFileSync(flags.file, "utf8");
    } catch (e) {
      throw new UsageError(`cannot read prompt file ${flags.file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
  }
  if (flags.prompt === undefined) throw new UsageError("no prompt: give one with -p TEXT or -f FILE");
  return flags.prompt;
}
