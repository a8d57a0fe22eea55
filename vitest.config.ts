import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Integration tests start real processes and servers on loopback; keep
    // parallelism modest on a 2-core machine so timing-sensitive tests stay stable.
    pool: 'forks',
    maxWorkers: 2,
    reporters: ['default'],
  },
});
