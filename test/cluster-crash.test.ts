/**
 * The cluster primary survives workers dying while it talks to them. A message written to a
 * worker that was just killed fails with EPIPE after `isConnected()` still said yes; node
 * reports that as an 'error' event on the worker, and unhandled it killed the primary (and with
 * it every listener). Found by a CI run of cluster.test.ts; reproduced here by killing workers
 * and asking the primary for /status and /metrics (which message every worker) right away.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { freePort, request, startBackend, type Backend } from './helpers/net.js';
import { CLI, canConnect, writeConfig } from './helpers/child.js';
import { waitFor } from './helpers/capture-log.js';

let proc: ChildProcess | undefined;
let backend: Backend | undefined;

afterAll(async () => {
  if (proc !== undefined && proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL'); // the process this file started
  await backend?.close();
});

describe('cluster primary', () => {
  it('stays up when workers die while it is messaging them (status and metrics right after each kill)', async () => {
    expect(existsSync(CLI)).toBe(true);
    backend = await startBackend('b');
    const port = await freePort();
    const adminPort = await freePort();
    const admin = `http://127.0.0.1:${adminPort}`;
    const file = writeConfig({
      workers: 2,
      servers: [{ listen: [`127.0.0.1:${port}`], locations: [{ path: '/', proxyPass: 'http://backend' }] }],
      upstreams: { backend: { servers: [{ address: backend.address }] } },
      admin: { listen: `127.0.0.1:${adminPort}` },
      accessLog: false,
    });
    proc = spawn(process.execPath, [CLI, 'run', '--config', file], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    proc.stderr!.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
    type Doc = { pid: number; workers: Array<{ pid: number; answered: boolean }> };
    const status = async (): Promise<Doc | null> => {
      const r = await request(`${admin}/status`).catch(() => null);
      return r?.status === 200 ? JSON.parse(r.body) as Doc : null;
    };
    const twoAnswering = async (): Promise<boolean> => ((await status())?.workers.filter((w) => w.answered).length ?? 0) === 2;
    expect(await waitFor(async () => (await canConnect(port)) && twoAnswering(), 15_000)).toBe(true);

    for (let i = 0; i < 6; i++) {
      const doc = await status();
      const victim = doc!.workers.find((w) => w.answered)!;
      process.kill(victim.pid, 'SIGKILL'); // a worker of the primary this test started, by its pid
      // At once: the primary writes to every worker it still believes connected.
      await Promise.all(Array.from({ length: 4 }, (_, k) => request(`${admin}/${k % 2 === 0 ? 'status' : 'metrics'}`).catch(() => null)));
      expect(proc.exitCode, `primary exited after kill ${i + 1}: ${stderr.slice(-500)}`).toBeNull();
      expect(await waitFor(twoAnswering, 15_000), stderr.slice(-500)).toBe(true);
    }
    expect(stderr).not.toMatch(/EPIPE/);
    expect((await request(`http://127.0.0.1:${port}/`)).status).toBe(200);
    proc.kill('SIGTERM');
    const code = await new Promise<number | null>((resolve) => proc!.once('exit', (c) => resolve(c)));
    expect(code).toBe(0);
  }, 60_000);
});
