/**
 * `kvslim generate`: stream a completion to stdout, then one stats line (prompt tokens/s, generated
 * tokens/s, KV bytes in use) to stderr.
 */
import fs from "node:fs";
import type { Command } from "commander";
import { FormatError, UsageError, formatBytes } from "../errors.js";
import { KERNEL_CHOICES, type KernelChoice, loadModel } from "../model/model.js";
import { openModelSource } from "../model/source.js";
import { chatPrompt, type ChatMessage } from "../tokenizer/chat.js";
import {
  addAttentionOptions,
  attentionSpecFrom,
  checkAttentionForModel,
  kvDtypeFrom,
  kvRotationFrom,
  checkKvFlags,
  type AttentionFlags,
} from "./attention-options.js";
import { choiceOption, collect, floatOption, intOption, pathOption, seedOption, threadsOption } from "./options.js";

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
  kernels: KernelChoice;
  threads?: number;
}

export function registerGenerate(program: Command): void {
  const command = program
    .command("generate")
    .description("generate text from a prompt")
    .requiredOption(
      "-m, --model <path>",
      "a .gguf file or a model directory (config.json + model.safetensors + tokenizer.json)",
      pathOption("--model"),
    )
    .option("-p, --prompt <text>", "the prompt")
    .option("-f, --file <path>", "read the prompt from a file", pathOption("--file"))
    .option("-n, --tokens <n>", "most tokens to generate", intOption("--tokens", 0), 128)
    .option("--temperature <t>", "0 = greedy", floatOption("--temperature", { min: 0, max: 100 }), 0.8)
    .option("--top-k <k>", "sample from the k most likely tokens (0 = all)", intOption("--top-k", 0), 40)
    .option("--top-p <p>", "nucleus sampling mass", floatOption("--top-p", { min: 0, max: 1, minOpen: true }), 0.95)
    .option(...seedOption("random seed"))
    .option("-c, --context <n>", "context size (default: the model's, at most 4096)", intOption("--context", 1))
    .option("--stop <text>", "stop when this text is generated (repeatable)", stopOption, [])
    .option("--chat", "wrap the prompt in the model's chat template")
    .option("--system <text>", "system message for --chat")
    .option(
      "--kernels <which>",
      "wasm (default: relaxed SIMD where the runtime has it, else portable), portable, relaxed, or reference (slow, for checking)",
      choiceOption("--kernels", KERNEL_CHOICES),
      "wasm",
    )
    .option(...threadsOption);
  addAttentionOptions(command).action(async (flags: GenerateFlags) => {
    const attention = attentionSpecFrom(flags);
    const kvDtype = kvDtypeFrom(flags);
    const kvRotation = kvRotationFrom(flags);
    // Without --chat there is no template for a system message to go into: dropping it silently would hide a typo.
    if (flags.system !== undefined && !flags.chat)
      throw new UsageError("--system applies only with --chat (the system message goes into the chat template)");
    const prompt = readPrompt(flags);
    if (!fs.existsSync(flags.model))
      throw new UsageError(`--model expects a .gguf file or a model directory; ${flags.model} does not exist`);
    checkKvFlags(kvDtype, kvRotation, openModelSource(flags.model).config.headDim);
    const model = await loadModel(flags.model, {
      contextSize: flags.context,
      kernels: flags.kernels,
      kvDtype,
      kvRotation,
      attention,
      threads: flags.threads,
    });
    try {
      checkAttentionForModel(attention, model.config.headDim);
    } catch (e) {
      model.dispose();
      throw e;
    }
    for (const note of model.source.notes) process.stderr.write(`note: ${note}\n`);
    if (model.contextSize > model.config.contextLength) {
      // As llama.cpp does: allowed (RoPE runs at any position), but the model never saw these positions.
      process.stderr.write(
        `note: --context ${model.contextSize} is longer than the ${model.config.contextLength} positions the model was trained on; text past them is unlikely to be useful\n`,
      );
    }
    if (
      (attention.method === "h2o" || attention.method === "streaming") &&
      attention.budget !== undefined &&
      attention.budget >= model.contextSize
    ) {
      process.stderr.write(
        `note: --kv-budget ${attention.budget} is at least the ${model.contextSize}-token context: ${attention.method} never evicts, attention is dense\n`,
      );
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
        text = chatPrompt(tok, messages);
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

/** --stop TEXT (repeatable): an empty stop text would match before the first token and generate nothing. */
function stopOption(value: string, previous: string[]): string[] {
  if (value === "") throw new UsageError('--stop expects a non-empty text, got ""');
  return collect(value, previous);
}

function readPrompt(flags: GenerateFlags): string {
  if (flags.prompt !== undefined && flags.file !== undefined)
    throw new UsageError("give the prompt with -p/--prompt or -f/--file, not both");
  if (flags.file !== undefined) {
    try {
      return fs.readFileSync(flags.file, "utf8");
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      const found =
        code === "ENOENT"
          ? "found no file"
          : code === "EISDIR"
            ? "found a directory"
            : `cannot read it (${code ?? (e as Error).message})`;
      throw new UsageError(`--file expects a text file holding the prompt, ${found} at ${flags.file}`);
    }
  }
  if (flags.prompt === undefined) throw new UsageError("no prompt: give one with -p/--prompt TEXT or -f/--file FILE");
  return flags.prompt;
}
