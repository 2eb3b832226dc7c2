/**
 * The scale-out example (examples/deploy/haproxy.cfg, docs/deploy.md): two `kvslim serve` replicas behind
 * HAProxy, health-checked on /health. Requests through the balancer reach both replicas; with one replica
 * stopped, every request still succeeds through the other. Needs the haproxy binary (Debian package haproxy,
 * which .ci/run installs); without it the test says so and is skipped.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import net from "node:net";
import path from "node:path";
import OpenAI from "openai";
import { afterAll, describe, expect, test } from "vitest";

const ROOT = path.resolve(import.meta.dirname, "..");
const haveHaproxy = spawnSync("haproxy", ["-v"]).status === 0;
const children: ChildProcess[] = [];

afterAll(() => {
  for (const c of children) c.kill("SIGKILL");
});

/** A port that was free a moment ago. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

function start(
  command: string,
  args: string[],
  env: Record<string, string> = {},
): { child: ChildProcess; err: () => string } {
  const child = spawn(command, args, { cwd: ROOT, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let err = "";
  child.stderr!.on("data", (d) => (err += d));
  child.stdout!.on("data", (d) => (err += d));
  children.push(child);
  return { child, err: () => err };
}

async function until(what: string, ok: () => Promise<boolean>, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await ok().catch(() => false)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}`);
}

async function servedBy(port: number): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const line = text
    .split("\n")
    .find((l) => l.startsWith('kvslim_requests_total{endpoint="/v1/completions",status="200"}'));
  return line === undefined ? 0 : Number(line.split(" ").pop());
}

describe("two replicas behind HAProxy", () => {
  test.skipIf(!haveHaproxy)(
    "requests through the balancer reach both replicas; with one stopped, all still succeed (haproxy's health check takes it out)",
    async () => {
      const [lb, a, b] = [await freePort(), await freePort(), await freePort()];
      const bin = path.join(ROOT, "bin", "kvslim.js");
      const replicas = [a, b].map((port) =>
        start(process.execPath, [bin, "serve", "--port", String(port), "--threads", "1"]),
      );
      const proxy = start("haproxy", ["-db", "-f", "examples/deploy/haproxy.cfg"], {
        LB_PORT: String(lb),
        PORT_A: String(a),
        PORT_B: String(b),
      });
      for (const port of [a, b])
        await until(`replica ${port}`, async () => (await fetch(`http://127.0.0.1:${port}/health`)).status === 200);
      await until("haproxy", async () => (await fetch(`http://127.0.0.1:${lb}/health`)).status === 200);

      const client = new OpenAI({ baseURL: `http://127.0.0.1:${lb}/v1`, apiKey: "none", maxRetries: 0 });
      const ask = async (i: number) => {
        const stream = await client.completions.create({
          model: "kvslim-tiny",
          prompt: `the act of ${i}`,
          max_tokens: 8,
          temperature: 0,
          stream: true,
        });
        let finish = null;
        for await (const c of stream) finish = c.choices[0].finish_reason ?? finish;
        return finish;
      };
      // Rounds of 12 concurrent requests until both replicas have served some: a replica that became healthy
      // after HAProxy started is taken in by the next check (500 ms apart).
      let rounds = 0;
      let counts = [0, 0];
      while (rounds < 10 && (rounds === 0 || Math.min(...counts) === 0)) {
        if (rounds > 0) await new Promise((r) => setTimeout(r, 300));
        const finishes = await Promise.all(Array.from({ length: 12 }, (_, i) => ask(12 * rounds + i)));
        for (const f of finishes) expect(["stop", "length"]).toContain(f);
        rounds++;
        counts = [await servedBy(a), await servedBy(b)];
      }
      expect(counts[0] + counts[1]).toBe(12 * rounds);
      expect(Math.min(...counts), `replicas served ${counts.join(" and ")}`).toBeGreaterThan(0);

      // Stop replica b (SIGTERM: it drains and exits); haproxy's checks take it out of rotation.
      replicas[1].child.kill("SIGTERM");
      await new Promise((resolve) => replicas[1].child.once("exit", resolve));
      await new Promise((r) => setTimeout(r, 1500)); // two failed checks, 500 ms apart
      const second = await Promise.all(Array.from({ length: 8 }, (_, i) => ask(100 + i)));
      for (const f of second) expect(["stop", "length"]).toContain(f);
      expect(await servedBy(a)).toBe(counts[0] + 8);
      // HAProxy's own log: b came up by its health check, and went down by it once stopped.
      expect(proxy.err()).toMatch(
        /Server replicas\/b is UP, reason: Layer7 check passed, code: 200[\s\S]*Server replicas\/b is DOWN/,
      );
    },
    90_000,
  );
});
