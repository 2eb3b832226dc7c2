/**
 * kvslim serve against the official `openai` client, unchanged but for its base URL: chat and completions,
 * streamed and not, usage, stop strings, log-probabilities, every error class as the client's own error type,
 * errors inside a stream, disconnects, concurrency (batched decoding gives each request the text it gets
 * alone), prompt-prefix reuse, health, CORS and keys. The reference for generated text is the library itself
 * (Session.generate on a fresh session), an independent path from the server's batched engine.
 */
import OpenAI, { APIError, AuthenticationError, BadRequestError, InternalServerError, NotFoundError } from "openai";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import path from "node:path";
import { loadModel, type Model } from "../src/model/model.js";
import type { AttentionSpec } from "../src/attention/method.js";
import { chatPrompt, type ChatMessage } from "../src/tokenizer/chat.js";
import { KvslimServer, type ServerOptions } from "../src/server/server.js";

const SHIPPED = path.resolve(import.meta.dirname, "..", "models", "kvslim-tiny");

const DEFAULTS: ServerOptions = {
  host: "127.0.0.1",
  port: 0,
  modelId: "kvslim-tiny",
  apiKeys: [],
  corsOrigin: null,
  maxBodyBytes: 1 << 20,
  maxTokens: 256,
  parallel: 8,
  queue: 64,
  prefixCache: true,
  attention: { method: "dense" },
  kvDtype: "f32",
};

interface Running {
  server: KvslimServer;
  model: Model;
  url: string;
  client: OpenAI;
}

const running: Running[] = [];

async function start(options: Partial<ServerOptions> = {}, cacheBytes = 64 << 20): Promise<Running> {
  const server = new KvslimServer({ ...DEFAULTS, ...options });
  const address = await server.listen();
  const model = await loadModel(SHIPPED, { threads: 1, cacheBytes });
  server.ready(model);
  const url = `http://127.0.0.1:${address.port}`;
  const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: options.apiKeys?.[0] ?? "none", maxRetries: 0 });
  const r = { server, model, url, client };
  running.push(r);
  return r;
}

afterAll(async () => {
  for (const r of running) {
    await r.server.close();
    r.model.dispose();
  }
});

/** Greedy text from the library alone: a fresh session, the prompt as the server would encode it. */
async function alone(
  model: Model,
  prompt: { chat: ChatMessage[] } | { text: string },
  maxTokens: number,
  options: { stop?: string[]; attention?: AttentionSpec; temperature?: number; seed?: number } = {},
): Promise<{ text: string; promptTokens: number; generated: number; stopReason: string }> {
  const tok = model.tokenizer;
  const ids =
    "chat" in prompt
      ? tok.encode(chatPrompt(tok, prompt.chat), { addBos: false, parseSpecial: true })
      : tok.encode(prompt.text, { addBos: tok.addBos });
  const session = model.createSession({
    attention: options.attention ?? { method: "dense" },
    contextSize: ids.length + maxTokens,
  });
  try {
    const it = session.generate(ids, {
      maxTokens,
      temperature: options.temperature ?? 0,
      topK: 0,
      topP: 1,
      seed: options.seed,
      stop: options.stop,
    });
    let text = "";
    let r = await it.next();
    while (!r.done) {
      text += r.value.text;
      r = await it.next();
    }
    return { text, promptTokens: ids.length, generated: r.value.generatedTokens, stopReason: r.value.stopReason };
  } finally {
    session.dispose();
  }
}

async function metric(url: string, name: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`));
  return line === undefined ? NaN : Number(line.split(" ").pop());
}

/**
 * A completion prompt in the shipped model's training format: it answers by restating the fact and starts the
 * next question, so it generates well past a few tokens and a newline before any end of text. Tests that need
 * that check it with the library first, so a model that behaves otherwise fails there, by name.
 */
const LONG_PROMPT =
  "The code of the red gate is 3317. Filler text about rivers and the sea. Q: What is the code of the red gate? A:";
/** A prompt the shipped model continues for at least 40 tokens without an end-of-text (tests check it). */
const RAMBLING_PROMPT = "the act of";

const QUESTION: ChatMessage[] = [
  { role: "system", content: "The code of the red gate is 3317. The code of the blue door is 5120." },
  { role: "user", content: "What is the code of the red gate?" },
];

describe("kvslim serve with the openai client", () => {
  let s: Running;
  beforeAll(async () => {
    s = await start();
  });

  test("GET /v1/models lists the one model; /v1/models/ID retrieves it, another id is NotFoundError", async () => {
    const list = await s.client.models.list();
    expect(list.data.map((m) => m.id)).toEqual(["kvslim-tiny"]);
    expect((await s.client.models.retrieve("kvslim-tiny")).owned_by).toBe("kvslim");
    await expect(s.client.models.retrieve("gpt-4")).rejects.toBeInstanceOf(NotFoundError);
  });

  test("chat, not streamed (greedy): the text, finish_reason and usage == Session.generate on the same prompt", async () => {
    const reply = await s.client.chat.completions.create({
      model: "kvslim-tiny",
      messages: QUESTION,
      max_tokens: 14,
      temperature: 0,
    });
    const ref = await alone(s.model, { chat: QUESTION }, 14);
    expect(["eos", "max-tokens"]).toContain(ref.stopReason);
    expect(reply.choices[0].message.content).toBe(ref.text);
    expect(reply.choices[0].message.role).toBe("assistant");
    expect(reply.choices[0].finish_reason).toBe(ref.stopReason === "eos" ? "stop" : "length");
    expect(reply.object).toBe("chat.completion");
    // The end-of-text token is not part of the completion (the library counts it as generated).
    const completion = ref.generated - (ref.stopReason === "eos" ? 1 : 0);
    expect(reply.usage).toMatchObject({
      prompt_tokens: ref.promptTokens,
      completion_tokens: completion,
      total_tokens: ref.promptTokens + completion,
    });
  });

  test("chat, streamed with include_usage: deltas join to the unstreamed text; a last chunk with choices [] carries usage", async () => {
    const stream = await s.client.chat.completions.create({
      model: "kvslim-tiny",
      messages: QUESTION,
      max_tokens: 14,
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = "";
    const chunks = [];
    for await (const chunk of stream) chunks.push(chunk);
    for (const c of chunks) text += c.choices[0]?.delta.content ?? "";
    const ref = await alone(s.model, { chat: QUESTION }, 14);
    expect(text).toBe(ref.text);
    expect(chunks[0].choices[0].delta.role).toBe("assistant");
    expect(chunks.at(-2)!.choices[0].finish_reason).toBe(ref.stopReason === "eos" ? "stop" : "length");
    expect(chunks.at(-1)!.choices).toEqual([]);
    expect(chunks.at(-1)!.usage).toMatchObject({
      prompt_tokens: ref.promptTokens,
      completion_tokens: ref.generated - (ref.stopReason === "eos" ? 1 : 0),
    });
  });

  test("completions with a stop string: the text ends before it, finish_reason stop; streamed == not streamed == the library", async () => {
    const prompt = RAMBLING_PROMPT;
    const ref = await alone(s.model, { text: prompt }, 40, { stop: ["\n"] });
    expect(ref.stopReason).toBe("stop-string");
    expect(ref.text.length).toBeGreaterThan(0);
    const reply = await s.client.completions.create({
      model: "kvslim-tiny",
      prompt,
      max_tokens: 40,
      temperature: 0,
      stop: ["\n"],
    });
    expect(reply.choices[0].text).toBe(ref.text);
    expect(reply.choices[0].finish_reason).toBe("stop");
    const stream = await s.client.completions.create({
      model: "kvslim-tiny",
      prompt,
      max_tokens: 40,
      temperature: 0,
      stop: "\n",
      stream: true,
    });
    let text = "";
    let finish = null;
    for await (const c of stream) {
      text += c.choices[0].text;
      finish = c.choices[0].finish_reason ?? finish;
    }
    expect(text).toBe(ref.text);
    expect(finish).toBe("stop");
  });

  test("sampling with a seed: the same seed gives the same text twice, and the library's text with that seed", async () => {
    const ask = (seed: number) =>
      s.client.completions.create({ model: "kvslim-tiny", prompt: "the act of", max_tokens: 20, temperature: 1, seed });
    const a = await ask(7);
    const b = await ask(7);
    expect(a.choices[0].text).toBe(b.choices[0].text);
    expect(a.choices[0].text).toBe(
      (await alone(s.model, { text: "the act of" }, 20, { temperature: 1, seed: 7 })).text,
    );
  });

  test("chat logprobs: each token's log p == log-softmax of the library's logits (≤ 1e-5); top_logprobs sorted, the greedy token first", async () => {
    const reply = await s.client.chat.completions.create({
      model: "kvslim-tiny",
      messages: QUESTION,
      max_tokens: 5,
      temperature: 0,
      logprobs: true,
      top_logprobs: 3,
    });
    const content = reply.choices[0].logprobs!.content!;
    expect(content).toHaveLength(5);
    const tok = s.model.tokenizer;
    const ids = tok.encode(chatPrompt(tok, QUESTION), { addBos: false, parseSpecial: true });
    const session = s.model.createSession({ attention: { method: "dense" } });
    let logits = session.evaluate(ids);
    for (const entry of content) {
      const max = Math.max(...logits);
      const lse = max + Math.log(logits.reduce((a, x) => a + Math.exp(x - max), 0));
      const best = logits.indexOf(max);
      expect(entry.token).toBe(tok.decode([best], { skipSpecial: false }));
      expect(Math.abs(entry.logprob - (max - lse))).toBeLessThanOrEqual(1e-5);
      expect(entry.top_logprobs).toHaveLength(3);
      expect(entry.top_logprobs[0].token).toBe(entry.token);
      for (let i = 1; i < 3; i++)
        expect(entry.top_logprobs[i].logprob).toBeLessThanOrEqual(entry.top_logprobs[i - 1].logprob);
      logits = session.evaluate([best]);
    }
    session.dispose();
  });

  test("completions logprobs (legacy shape): tokens join to the text, offsets count characters, each top entry holds the token", async () => {
    const reply = await s.client.completions.create({
      model: "kvslim-tiny",
      prompt: LONG_PROMPT,
      max_tokens: 6,
      temperature: 0,
      logprobs: 2,
    });
    const lp = reply.choices[0].logprobs!;
    expect(lp.tokens!.join("")).toBe(reply.choices[0].text);
    expect(lp.token_logprobs).toHaveLength(6);
    for (const [i, t] of lp.tokens!.entries()) {
      expect(lp.text_offset![i]).toBe(lp.tokens!.slice(0, i).join("").length);
      expect(lp.top_logprobs![i][t]).toBe(lp.token_logprobs![i]);
      expect(lp.token_logprobs![i]).toBeLessThanOrEqual(0);
    }
    // Whether it ends at max_tokens or at the end-of-text token (which is not part of the text), the tokens
    // are the completion's: they join to the text and there are usage.completion_tokens of them.
    // Precondition: at least one of them ends at the end-of-text token (the library says which).
    const prompts = [LONG_PROMPT, RAMBLING_PROMPT, "hello"];
    const ends = await Promise.all(prompts.map(async (p) => (await alone(s.model, { text: p }, 24)).stopReason));
    expect(ends).toContain("eos");
    for (const prompt of prompts) {
      const r = await s.client.completions.create({
        model: "kvslim-tiny",
        prompt,
        max_tokens: 24,
        temperature: 0,
        logprobs: 0,
      });
      expect(r.choices[0].logprobs!.tokens!.join("")).toBe(r.choices[0].text);
      expect(r.choices[0].logprobs!.token_logprobs).toHaveLength(r.usage!.completion_tokens);
    }
  });

  test("8 concurrent streams (dense, SparQ 1/4, H2O 1/2, bf16, q8_0 and q4_0 KV, different lengths) each get the text they get alone", async () => {
    const prompts = Array.from({ length: 8 }, (_, i) => [
      {
        role: "system" as const,
        content: `The code of the ${["red", "blue", "green", "black"][i % 4]} gate is ${4000 + 37 * i}. `.repeat(1 + i),
      },
      { role: "user" as const, content: `What is the code of the ${["red", "blue", "green", "black"][i % 4]} gate?` },
    ]);
    const methods: (AttentionSpec | undefined)[] = [
      undefined,
      { method: "sparq", compression: 4 },
      { method: "h2o", compression: 2 },
      undefined,
      { method: "sparq", compression: 4, group_ranking: "probabilities" } as unknown as AttentionSpec,
      undefined,
      { method: "streaming", budget: 40 },
      undefined,
    ];
    // Some streams keep their K/V in bf16, q8_0 or q4_0 (a session per dtype, batched with the rest).
    const KV_DTYPE_OF: Record<number, string> = { 3: "bf16", 4: "q8_0", 6: "q4_0" };
    const run = async (i: number) => {
      const stream = await s.client.chat.completions.create({
        model: "kvslim-tiny",
        messages: prompts[i],
        max_tokens: 10 + 3 * i,
        temperature: 0,
        stream: true,
        // @ts-expect-error kvslim's extension field
        kvslim: {
          ...(methods[i] ? { attention: methods[i] } : {}),
          ...(KV_DTYPE_OF[i] ? { kv_dtype: KV_DTYPE_OF[i] } : {}),
        },
      });
      let text = "";
      for await (const c of stream) text += c.choices[0]?.delta.content ?? "";
      return text;
    };
    const together = await Promise.all(prompts.map((_, i) => run(i)));
    for (let i = 0; i < 8; i++) {
      const alone1 = await run(i);
      expect(together[i], `stream ${i}`).toBe(alone1);
    }
    // And the dense ones == the library alone.
    expect(together[0]).toBe((await alone(s.model, { chat: prompts[0] }, 10)).text);
  });

  test("prompt-prefix reuse: a follow-up turn reports cached prompt tokens and gives the same text as a server without the cache", async () => {
    const first = await s.client.chat.completions.create({
      model: "kvslim-tiny",
      messages: QUESTION,
      max_tokens: 12,
      temperature: 0,
    });
    const turn: ChatMessage[] = [
      ...QUESTION,
      { role: "assistant", content: first.choices[0].message.content! },
      { role: "user", content: "What is the code of the blue door?" },
    ];
    const second = await s.client.chat.completions.create({
      model: "kvslim-tiny",
      messages: turn,
      max_tokens: 12,
      temperature: 0,
    });
    expect(second.usage!.prompt_tokens_details!.cached_tokens).toBeGreaterThan(first.usage!.prompt_tokens / 2);
    expect(second.choices[0].message.content).toBe((await alone(s.model, { chat: turn }, 12)).text);
  });

  test("a client that disconnects mid-stream stops its generation: running requests and KV bytes in use return to where they were", async () => {
    s.server["engine"]!.dropKept();
    // Precondition: alone, the prompt generates more than the 3 chunks read below without stopping.
    expect((await alone(s.model, { text: RAMBLING_PROMPT }, 40)).stopReason).toBe("max-tokens");
    const before = await metric(s.url, "kvslim_kv_bytes_in_use");
    const controller = new AbortController();
    const stream = await s.client.completions.create(
      { model: "kvslim-tiny", prompt: RAMBLING_PROMPT, max_tokens: 200, temperature: 0, stream: true },
      { signal: controller.signal },
    );
    let chunks = 0;
    try {
      for await (const _ of stream) if (++chunks === 3) controller.abort();
    } catch {
      // the client may raise its abort
    }
    expect(chunks).toBeLessThan(10);
    expect(await metric(s.url, "kvslim_running_requests")).toBeLessThanOrEqual(1);
    for (let i = 0; i < 50 && (await metric(s.url, "kvslim_running_requests")) > 0; i++)
      await new Promise((r) => setTimeout(r, 20));
    expect(await metric(s.url, "kvslim_running_requests")).toBe(0);
    expect(await metric(s.url, "kvslim_kv_bytes_in_use")).toBe(before);
    expect(
      await metric(s.url, 'kvslim_requests_total{endpoint="/v1/completions",status="499"}'),
    ).toBeGreaterThanOrEqual(1);
  });
});

describe("errors as the client's own error types (OpenAI envelope, param named)", () => {
  let s: Running;
  beforeAll(async () => {
    s = await start({ maxBodyBytes: 4096, maxTokens: 64 });
  });
  const bad = async (body: Record<string, unknown>, param: string | null, message: RegExp) => {
    const e = await s.client.chat.completions
      .create({ model: "kvslim-tiny", messages: QUESTION, ...body } as never)
      .catch((x) => x);
    expect(e, JSON.stringify(body)).toBeInstanceOf(BadRequestError);
    expect((e as APIError).param).toBe(param);
    expect((e as APIError).message).toMatch(message);
  };

  test("400 for wrong types and ranges, unknown fields, n > 1, tools, a bad kvslim.attention — naming the field", async () => {
    await bad({ temperature: 3 }, "temperature", /temperature must be a number from 0 to 2, found number 3/);
    await bad({ temperature: "hot" }, "temperature", /found the string "hot"/);
    await bad({ max_tokens: 0 }, "max_tokens", /max_tokens must be an integer from 1/);
    await bad({ n: 2 }, "n", /n must be 1/);
    await bad({ tempurature: 0.5 }, "tempurature", /Unrecognized request argument supplied: tempurature/);
    await bad(
      { tools: [{ type: "function", function: { name: "f" } }] },
      "tools",
      /not supported by kvslim \(tool calls\)/,
    );
    await bad({ stop: ["a", "b", "c", "d", "e"] }, "stop", /up to 4/);
    await bad(
      { kvslim: { attention: { method: "sparq" } } },
      "kvslim.attention.compression",
      /needs compression, or both r and k/,
    );
    await bad(
      { kvslim: { attention: { method: "dense", compression: 8 } } },
      "kvslim.attention.compression",
      /does not apply to method dense/,
    );
    await bad(
      { kvslim: { attention: { method: "sparq", compression: 8, group_ranking: "probs" } } },
      "kvslim.attention.group_ranking",
      /must be one of logits, probabilities, found the string "probs"/,
    );
    await bad(
      { kvslim: { attention: { method: "h2o", compression: 8, group_ranking: "logits" } } },
      "kvslim.attention.group_ranking",
      /does not apply to method h2o/,
    );
    await bad({ kvslim: { kv_dtype: "f8" } }, "kvslim.kv_dtype", /must be one of f32, bf16, q8_0, q4_0/);
    await bad(
      { messages: [{ role: "robot", content: "hi" }] },
      "messages[0].role",
      /must be one of system, developer, user, assistant/,
    );
    await bad({ max_tokens: 100 }, "max_tokens", /at most 64 \(--max-tokens\)/);
  });

  test("a prompt longer than the context: 400 naming both lengths, never truncated", async () => {
    const big = await start({ maxBodyBytes: 1 << 22, maxTokens: 4096 });
    const e = await big.client.completions
      .create({ model: "kvslim-tiny", prompt: "word ".repeat(3000), max_tokens: 4 })
      .catch((x) => x);
    expect(e).toBeInstanceOf(BadRequestError);
    expect(e.message).toMatch(/the prompt is \d{4} tokens and the model's context is 2048/);
    expect(e.code).toBe("context_length_exceeded");
    const e2 = await big.client.completions
      .create({ model: "kvslim-tiny", prompt: "word ".repeat(1000), max_tokens: 2000 })
      .catch((x) => x);
    expect(e2.message).toMatch(
      /the prompt is \d+ tokens and max_tokens 2000: together \d+, more than the model's context of 2048/,
    );
  });

  test("413 for a body over --max-body; 404 for an unknown model and route; 405 for a wrong method; malformed JSON is a 400", async () => {
    const e = await s.client.completions.create({ model: "kvslim-tiny", prompt: "x".repeat(5000) }).catch((x) => x);
    expect(e).toBeInstanceOf(APIError);
    expect(e.status).toBe(413);
    expect(e.message).toMatch(/at most 4096 \(--max-body\)/);
    const m = await s.client.chat.completions.create({ model: "llama-3", messages: QUESTION }).catch((x) => x);
    expect(m).toBeInstanceOf(NotFoundError);
    expect(m.code).toBe("model_not_found");
    await expect(s.client.get("/embeddings")).rejects.toBeInstanceOf(NotFoundError);
    const wrong = await fetch(`${s.url}/v1/completions`);
    expect(wrong.status).toBe(405);
    expect(wrong.headers.get("allow")).toBe("POST");
    const json = await fetch(`${s.url}/v1/completions`, {
      method: "POST",
      body: '{"model": "kvslim-tiny", "prompt": ',
    });
    expect(json.status).toBe(400);
    expect((await json.json()).error.message).toMatch(/not valid JSON/);
  });

  test("401 AuthenticationError for a wrong or missing key (/health stays open); the right key works", async () => {
    const locked = await start({ apiKeys: ["s3cret", "other"] });
    const wrong = new OpenAI({ baseURL: `${locked.url}/v1`, apiKey: "guess", maxRetries: 0 });
    await expect(wrong.models.list()).rejects.toBeInstanceOf(AuthenticationError);
    expect((await fetch(`${locked.url}/v1/models`)).status).toBe(401);
    expect((await fetch(`${locked.url}/health`)).status).toBe(200);
    expect((await locked.client.models.list()).data).toHaveLength(1);
    const second = new OpenAI({ baseURL: `${locked.url}/v1`, apiKey: "other", maxRetries: 0 });
    expect((await second.models.list()).data).toHaveLength(1);
  });

  test("503 with Retry-After when one request runs and the queue (0) is full; InternalServerError to the client", async () => {
    const full = await start({ parallel: 1, queue: 0 });
    const first = await full.client.completions.create({
      model: "kvslim-tiny",
      prompt: "the act of",
      max_tokens: 200,
      temperature: 0,
      stream: true,
    });
    const reader = first[Symbol.asyncIterator]();
    await reader.next(); // running now
    const e = await full.client.completions
      .create({ model: "kvslim-tiny", prompt: "hello", max_tokens: 2 })
      .catch((x) => x);
    expect(e).toBeInstanceOf(InternalServerError);
    expect(e.status).toBe(503);
    expect(e.headers.get("retry-after")).toBe("1");
    let finish = null;
    for (let r = await reader.next(); !r.done; r = await reader.next())
      finish = r.value.choices[0].finish_reason ?? finish;
    expect(["stop", "length"]).toContain(finish); // it ran to its end
  });

  test("a failure inside a stream arrives as a data event that the client raises as an APIError", async () => {
    const failing = await start();
    const model = failing.model;
    const real = model.decodeBatch.bind(model);
    let steps = 0;
    model.decodeBatch = (steps_) => {
      if (++steps === 4) throw new Error("injected fault");
      return real(steps_);
    };
    const stream = await failing.client.completions.create({
      model: "kvslim-tiny",
      prompt: "the act of",
      max_tokens: 20,
      temperature: 0,
      stream: true,
    });
    let text = "";
    const e = await (async () => {
      for await (const c of stream) text += c.choices[0].text;
    })().catch((x) => x);
    expect(e).toBeInstanceOf(APIError);
    expect(e.message).toMatch(/internal error: injected fault/);
    expect(text.length).toBeGreaterThan(0);
    model.decodeBatch = real;
  });

  test("/health is 503 with the error envelope while the model loads, 200 once ready", async () => {
    const server = new KvslimServer({ ...DEFAULTS });
    const address = await server.listen();
    const r = await fetch(`http://127.0.0.1:${address.port}/health`);
    expect(r.status).toBe(503);
    expect((await r.json()).error.code).toBe("loading");
    const model = await loadModel(SHIPPED, { threads: 1, cacheBytes: 8 << 20 });
    server.ready(model);
    expect((await fetch(`http://127.0.0.1:${address.port}/health`)).status).toBe(200);
    running.push({ server, model, url: "", client: null as never });
  });

  test("CORS: no headers by default; with --cors-origin the allowed origin gets them and a preflight is 204", async () => {
    expect(
      (await fetch(`${s.url}/v1/models`, { headers: { origin: "https://a.example" } })).headers.get(
        "access-control-allow-origin",
      ),
    ).toBeNull();
    const cors = await start({ corsOrigin: "https://a.example" });
    const ok = await fetch(`${cors.url}/v1/models`, { headers: { origin: "https://a.example" } });
    expect(ok.headers.get("access-control-allow-origin")).toBe("https://a.example");
    const other = await fetch(`${cors.url}/v1/models`, { headers: { origin: "https://b.example" } });
    expect(other.headers.get("access-control-allow-origin")).toBeNull();
    const pre = await fetch(`${cors.url}/v1/chat/completions`, {
      method: "OPTIONS",
      headers: { origin: "https://a.example" },
    });
    expect(pre.status).toBe(204);
    expect(pre.headers.get("access-control-allow-headers")).toMatch(/authorization/);
  });
});

describe("any JSON body", () => {
  test("300 random bodies (the API's keys with random JSON values, and random keys): 200, 400 or 404 with the error envelope, never 500", async () => {
    const fc = (await import("fast-check")).default;
    const s = await start({ maxTokens: 4 });
    const keys = [
      "model",
      "messages",
      "prompt",
      "max_tokens",
      "max_completion_tokens",
      "temperature",
      "top_p",
      "seed",
      "n",
      "stop",
      "stream",
      "stream_options",
      "logprobs",
      "top_logprobs",
      "tools",
      "response_format",
      "kvslim",
      "user",
      "echo",
    ];
    const value = fc.oneof(
      fc.jsonValue({ maxDepth: 3 }),
      fc.constantFrom(
        "kvslim-tiny",
        [{ role: "user", content: "hi" }],
        { attention: { method: "sparq", compression: 2 } },
        2,
        0.5,
        true,
      ),
    );
    const body = fc.dictionary(fc.oneof(fc.constantFrom(...keys), fc.string({ maxLength: 8 })), value, { maxKeys: 6 });
    await fc.assert(
      fc.asyncProperty(body, fc.constantFrom("/v1/chat/completions", "/v1/completions"), async (b, route) => {
        const r = await fetch(`${s.url}${route}`, { method: "POST", body: JSON.stringify(b) });
        const text = await r.text();
        expect([200, 400, 404], text).toContain(r.status);
        if (r.status !== 200) {
          const e = JSON.parse(text).error;
          expect(typeof e.message).toBe("string");
          expect(e.message).not.toMatch(/undefined|NaN|\[object Object\]|internal error/);
          expect(e.type).toBe("invalid_request_error");
        }
      }),
      { numRuns: 300, seed: 7 },
    );
  }, 120_000);
});

describe("under load", () => {
  test("300 requests at concurrency 16 (random lengths, every 10th aborted mid-stream; a 503 retried after 10 ms): 270 complete, 30 aborted, nothing else; afterwards nothing runs or waits and the KV pool is back to 0 bytes", async () => {
    const s = await start({ parallel: 8, queue: 4, prefixCache: false, maxTokens: 64 }, 32 << 20);
    const rssBefore = process.memoryUsage().rss;
    let seed = 12345;
    const rand = (n: number) => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return seed % n;
    };
    const outcomes = { ok: 0, busy: 0, aborted: 0 };
    let next = 0;
    const worker = async () => {
      let retry: number | null = null;
      while (retry !== null || next < 300) {
        const i = retry ?? next++;
        retry = null;
        const maxTokens = 1 + rand(24);
        const prompt = "the act of ".repeat(1 + rand(30));
        const abort = i % 10 === 9;
        const controller = new AbortController();
        try {
          const stream = await s.client.completions.create(
            {
              model: "kvslim-tiny",
              prompt,
              max_tokens: maxTokens,
              temperature: 0.7,
              seed: i,
              stream: true,
              stream_options: { include_usage: true },
            },
            { signal: controller.signal },
          );
          let finish = null;
          let usage = null;
          for await (const c of stream) {
            if (abort) {
              controller.abort();
              break;
            }
            finish = c.choices[0]?.finish_reason ?? finish;
            usage = c.usage ?? usage;
          }
          if (abort) outcomes.aborted++;
          else {
            expect(["stop", "length"]).toContain(finish);
            expect(usage!.completion_tokens).toBeLessThanOrEqual(maxTokens);
            outcomes.ok++;
          }
        } catch (e) {
          if (e instanceof APIError && e.status === 503) {
            outcomes.busy++;
            retry = i; // the same request again, as a client does
            await new Promise((r) => setTimeout(r, 10)); // after backing off (Retry-After says 1 s; shortened here)
          } else if (abort) outcomes.aborted++;
          else throw e;
        }
      }
    };
    await Promise.all(Array.from({ length: 16 }, worker));
    expect(outcomes.ok + outcomes.aborted).toBe(300);
    expect(outcomes.aborted).toBe(30);
    for (let i = 0; i < 100 && (await metric(s.url, "kvslim_running_requests")) > 0; i++)
      await new Promise((r) => setTimeout(r, 20));
    expect(await metric(s.url, "kvslim_running_requests")).toBe(0);
    expect(await metric(s.url, "kvslim_queued_requests")).toBe(0);
    expect(await metric(s.url, "kvslim_kv_bytes_in_use")).toBe(0);
    expect(s.model.pool.inUse).toBe(0);
    const rssAfter = process.memoryUsage().rss;
    console.log(
      `load: ${outcomes.ok} completed, ${outcomes.busy} refused with 503, ${outcomes.aborted} aborted; ` +
        `KV pool in use 0 of ${s.model.pool.size} bytes after; RSS ${(rssBefore / 2 ** 20).toFixed(0)} → ${(rssAfter / 2 ** 20).toFixed(0)} MiB`,
    );
  }, 120_000);
});

describe("kvslim serve, the command", () => {
  test("SIGTERM: the running stream finishes, new requests get 503 or a refused connection, the process exits 0", async () => {
    const { spawn } = await import("node:child_process");
    const bin = path.resolve(import.meta.dirname, "..", "bin", "kvslim.js");
    const child = spawn(process.execPath, [bin, "serve", "--port", "0", "--threads", "1", "--max-tokens", "400"], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let err = "";
    child.stderr.on("data", (d) => (err += d));
    const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
    for (let i = 0; i < 300 && !/ready at/.test(err); i++) await new Promise((r) => setTimeout(r, 50));
    const url = /ready at (http:\/\/[^\s]+)\/v1/.exec(err)![1];
    expect(err).toMatch(
      /kvslim-tiny ready at http:\/\/127\.0\.0\.1:\d+\/v1 \(weights .*; context 2048; up to 8 requests at once\)/,
    );
    const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: "none", maxRetries: 0 });
    const stream = await client.completions.create({
      model: "kvslim-tiny",
      prompt: "the act of",
      max_tokens: 300,
      temperature: 1,
      seed: 3,
      stream: true,
    });
    const it = stream[Symbol.asyncIterator]();
    let text = (await it.next()).value!.choices[0].text;
    child.kill("SIGTERM");
    for (let i = 0; i < 100 && !/SIGTERM/.test(err); i++) await new Promise((r) => setTimeout(r, 10));
    const late = await fetch(`${url}/v1/models`).then(
      (r) => r.status,
      () => "refused",
    );
    expect([503, "refused"]).toContain(late);
    let finish = null;
    for (let r = await it.next(); !r.done; r = await it.next()) {
      text += r.value.choices[0].text;
      finish = r.value.choices[0].finish_reason ?? finish;
    }
    expect(["stop", "length"]).toContain(finish);
    expect(await exited).toBe(0);
    // (1 request, unless it already ended: the model may stop early at temperature 1)
    expect(err).toMatch(/SIGTERM: finishing [01] requests, taking no new ones\nkvslim serve: stopped\n$/);
  }, 60_000);
});
