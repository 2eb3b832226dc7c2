import { defineConfig } from "vitest/config";

// The kernels come in two builds (portable SIMD and relaxed SIMD). Every test runs on the build a user
// gets by default (relaxed where the runtime has it); the tests that check kernels and model outputs
// against their references run once more on the portable build.
const portableChecks = [
  "test/kernels*.test.ts",
  "test/attention*.test.ts",
  "test/threads.test.ts",
  "test/batch.test.ts",
  "test/model.test.ts",
  "test/llama-cpp.test.ts",
  "test/train-model.test.ts",
];

const shared = {
  testTimeout: 120_000,
  hookTimeout: 120_000,
  // Tests share one machine with 2 cores; llama.cpp tests are heavy, keep workers modest.
  pool: "forks" as const,
  poolOptions: { forks: { maxForks: 2, minForks: 1 } },
};

export default defineConfig({
  test: {
    ...shared,
    projects: [
      { test: { ...shared, name: "default", include: ["test/**/*.test.ts"] } },
      { test: { ...shared, name: "portable", include: portableChecks, env: { KVSLIM_KERNELS: "portable" } } },
    ],
  },
});
