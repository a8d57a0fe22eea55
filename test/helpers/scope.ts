/** Per-file test resources that are torn down after each test (backends, balancers, anything pushed on `cleanup`). */
import { afterEach } from 'vitest';
import { startBackend, startLB, type Backend, type BackendHandler, type RunningLB } from './net.js';

export interface Scope {
  /** Teardown tasks run in reverse order after each test; push your own. */
  cleanup: (() => Promise<void>)[];
  backend(name: string, handler?: BackendHandler): Promise<Backend>;
  backends(names: string[], handler?: BackendHandler): Promise<Backend[]>;
  lb(raw: Record<string, unknown>, opts?: { admin?: boolean }): Promise<RunningLB>;
}

/** Call once at the top level of a test file. */
export function useScope(): Scope {
  const cleanup: (() => Promise<void>)[] = [];
  afterEach(async () => {
    while (cleanup.length > 0) await cleanup.pop()!().catch(() => undefined);
  });
  const backend = async (name: string, handler?: BackendHandler): Promise<Backend> => {
    const b = await startBackend(name, handler);
    cleanup.push(() => b.close());
    return b;
  };
  return {
    cleanup,
    backend,
    backends: (names, handler) => Promise.all(names.map((n) => backend(n, handler))),
    lb: async (raw, opts) => {
      const r = await startLB(raw, opts);
      cleanup.push(() => r.stop());
      return r;
    },
  };
}
