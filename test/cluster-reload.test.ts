/**
 * Reloads with `"workers": 2` (issue 14, defect 2): the real CLI as a child process (a primary
 * and two node:cluster workers) on loopback.
 *
 * - A reload whose new config listens on an address another process holds must be rejected
 *   (the primary binds the new addresses before it commits), counted once as a failure, and
 *   leave every worker on the config in use. Workers that die afterwards are replaced from the
 *   config that bound: the cluster serves again on the old addresses. Before the fix the
 *   reload counted as a success, replacements got the new config and none could ever start.
 * - `sessionlb_config_reloads_total` counts every reload of the cluster exactly once, by result.
 */
import net from 'node:net';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { freePort, request, startBackend, type Backend } from './helpers/net.js';
import { CLI, canConnect, writeConfig } from './helpers/child.js';

interface StatusDoc {
  pid: number;
  workers: Array<{ id: number; pid: number; answered: boolean }>;
  reloads: { success: number; failure: number };
}

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

/** Is `pid` alive and one of ours (node running dist/cli.js)? Guards the cleanup's kills against a reused pid. */
function isOurCli(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(CLI);
  } catch {
    return false;
  }
}

interface Cluster {
  proc: ChildProcess;
  stderr(): string;
  admin: string;
  status(): Promise<StatusDoc | null>;
  reloads(): Promise<{ success: number; failure: number } | null>;
  /** Waits until `n` workers answer /status, none of them in `not`; returns their pids. */
  workersUp(n: number, not?: readonly number[], timeoutMs?: number): Promise<number[]>;
}

/** Starts `sessionlb run --config FILE` (workers: 2 in FILE); killed by pid (and its workers by theirs) after the test. */
async function startCluster(file: string, adminPort: number): Promise<Cluster> {
  const proc = spawn(process.execPath, [CLI, 'run', '--config', file], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  proc.stderr!.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  const workerPids = new Set<number>();
  cleanups.push(async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill('SIGKILL'); // the primary this test started, by its pid
      await exited;
    }
    // Its workers exit when the primary's channel closes; any left over are ours too (seen in its /status).
    for (const pid of workerPids) if (isOurCli(pid)) process.kill(pid, 'SIGKILL');
  });
  const admin = `http://127.0.0.1:${adminPort}`;
  const status = async (): Promise<StatusDoc | null> => {
    const r = await request(`${admin}/status`).catch(() => null);
    if (r?.status !== 200) return null;
    const doc = JSON.parse(r.body) as StatusDoc;
    for (const w of doc.workers) workerPids.add(w.pid);
    return doc;
  };
  const reloads = async (): Promise<{ success: number; failure: number } | null> => {
    const r = await request(`${admin}/metrics`).catch(() => null);
    if (r?.status !== 200) return null;
    const value = (result: string): number => {
      const line = r.body.split('\n').find((l) => l.startsWith(`sessionlb_config_reloads_total{result="${result}"}`));
      return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(' ') + 1));
    };
    return { success: value('success'), failure: value('failure') };
  };
  const cluster: Cluster = {
    proc,
    stderr: () => stderr,
    admin,
    status,
    reloads,
    workersUp: async (n, not = [], timeoutMs = 20_000) => {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const doc = await status();
        const up = doc?.workers.filter((w) => w.answered && !not.includes(w.pid)) ?? [];
        if (up.length === n) return up.map((w) => w.pid);
        if (Date.now() > deadline || proc.exitCode !== null) {
          throw new Error(`${n} workers did not answer within ${timeoutMs} ms (${up.length} did); stderr:\n${stderr.slice(-3000)}`);
        }
        await new Promise((r) => setTimeout(r, 50));
      }
    },
  };
  await cluster.workersUp(2);
  return cluster;
}

/** Polls `check` every 50 ms until it holds or `timeoutMs` passed. */
async function until(check: () => Promise<boolean>, timeoutMs = 15_000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return check();
}

/** A server the test holds an address with (what "another process" would do). */
async function holdPort(): Promise<{ port: number }> {
  const port = await freePort();
  const server = net.createServer((s) => s.destroy());
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve());
  });
  cleanups.push(() => new Promise((resolve) => server.close(() => resolve())));
  return { port };
}

async function backend(name: string): Promise<Backend> {
  const b = await startBackend(name);
  cleanups.push(() => b.close());
  return b;
}

/** `count` GETs, each on a new connection (spread over both workers); the X-Backend of each 200, or `status N`. */
async function spread(url: string, count: number): Promise<string[]> {
  const out: string[] = [];
  for (let i = 0; i < count; i++) {
    const r = await request(url).catch((err: Error) => err);
    out.push(r instanceof Error ? r.message : r.status === 200 ? String(r.headers['x-backend']) : `status ${r.status}`);
  }
  return out;
}

describe('reload with workers: 2', () => {
  it('a reload onto an address in use is rejected and counted as a failure; workers killed afterwards come back on the old config', async () => {
    expect(existsSync(CLI)).toBe(true);
    const a = await backend('a');
    const port = await freePort();
    const adminPort = await freePort();
    const busy = await holdPort();
    const config = (extra: Record<string, unknown> = {}, listen: string[] = []): Record<string, unknown> => ({
      workers: 2,
      servers: [{ listen: [`127.0.0.1:${port}`, ...listen], locations: [{ path: '/', proxyPass: 'http://backend' }] }],
      upstreams: { backend: { servers: [{ address: a.address }] } },
      admin: { listen: `127.0.0.1:${adminPort}` },
      accessLog: false,
      shutdownTimeout: '2s',
      ...extra,
    });
    const file = writeConfig(config());
    const lb = await startCluster(file, adminPort);
    const url = `http://127.0.0.1:${port}/`;
    expect(await spread(url, 4)).toEqual(['a', 'a', 'a', 'a']);

    // 1. An HTTP listen address another process holds.
    writeFileSync(file, JSON.stringify(config({}, [`127.0.0.1:${busy.port}`])));
    lb.proc.kill('SIGHUP'); // the primary this test started
    expect(await until(async () => {
      const r = await lb.reloads();
      return r !== null && r.success + r.failure >= 1;
    }), lb.stderr().slice(-3000)).toBe(true);
    expect(await lb.reloads()).toEqual({ success: 0, failure: 1 });
    expect((await lb.status())?.reloads).toMatchObject({ success: 0, failure: 1 });
    // Logged with the address and why.
    expect(lb.stderr()).toContain(`127.0.0.1:${busy.port}`);
    expect(lb.stderr()).toMatch(/EADDRINUSE|address already in use/);
    expect(lb.stderr()).toMatch(/reload failed; still serving the previous configuration/);
    expect(await spread(url, 6)).toEqual(Array(6).fill('a'));

    // 2. A stream listen address another process holds.
    writeFileSync(file, JSON.stringify(config({ streams: [{ listen: [`127.0.0.1:${busy.port}`], proxyPass: a.address }] })));
    lb.proc.kill('SIGHUP');
    expect(await until(async () => {
      const r = await lb.reloads();
      return r !== null && r.success + r.failure >= 2;
    }), lb.stderr().slice(-3000)).toBe(true);
    expect(await lb.reloads()).toEqual({ success: 0, failure: 2 });

    // 3. Every worker dies (as after an OOM kill): the replacements start from the config that bound.
    const before = await lb.workersUp(2);
    for (const pid of before) process.kill(pid, 'SIGKILL'); // the workers of the primary this test started, by pid
    const after = await lb.workersUp(2, before);
    expect(after.some((pid) => before.includes(pid))).toBe(false);
    expect(await spread(url, 6)).toEqual(Array(6).fill('a'));
    expect((await request(`${lb.admin}/healthz`)).status).toBe(200);
    expect(lb.proc.exitCode).toBeNull();
    // The rejected files were never handed to a worker: none reloaded, no replacement failed to bind.
    expect(lb.stderr()).not.toMatch(/"worker":\d+[^\n]*configuration reloaded/);
    expect(lb.stderr()).not.toMatch(/sessionlb: cannot listen on/);

    lb.proc.kill('SIGTERM');
    const code = await new Promise<number | null>((resolve) => lb.proc.once('exit', (c) => resolve(c)));
    expect(code).toBe(0);
  }, 60_000);

  it('N valid and M rejected reloads (SIGHUP) count exactly N successes and M failures, and both workers run the last valid config', async () => {
    const a = await backend('a');
    const b = await backend('b');
    const port = await freePort();
    const extraPort = await freePort();
    const adminPort = await freePort();
    const busy = await holdPort();
    const config = (servers: Backend[], listen: number[] = [], streams: number[] = []): string => JSON.stringify({
      workers: 2,
      servers: [{ listen: [port, ...listen].map((p) => `127.0.0.1:${p}`), locations: [{ path: '/', proxyPass: 'http://backend' }] }],
      upstreams: { backend: { servers: servers.map((s) => ({ address: s.address })) } },
      ...(streams.length > 0 ? { streams: [{ listen: streams.map((p) => `127.0.0.1:${p}`), proxyPass: a.address }] } : {}),
      admin: { listen: `127.0.0.1:${adminPort}` },
      accessLog: false,
      shutdownTimeout: '2s',
    });
    const file = writeConfig(config([a]));
    const lb = await startCluster(file, adminPort);

    const steps: Array<{ text: string; valid: boolean }> = [
      { text: config([a, b]), valid: true },
      { text: '{"servers": [', valid: false }, // not JSON
      { text: config([a, b], [extraPort]), valid: true }, // a new address, free: bound
      { text: config([a], [extraPort, busy.port]), valid: false }, // a new address in use
      { text: JSON.stringify({ ...JSON.parse(config([a])) as Record<string, unknown>, workers: 0 }), valid: false }, // schema
      { text: config([b], [extraPort]), valid: true },
      { text: config([b], [extraPort], [busy.port]), valid: false }, // a stream address in use
      { text: config([b]), valid: true }, // extraPort removed
      { text: config([b], [], [busy.port]), valid: false },
      { text: config([b], [], [extraPort]), valid: true }, // the address just released, again (as a stream)
      { text: config([b]), valid: true },
      { text: config([b]), valid: true }, // unchanged
    ];
    let done = 0;
    for (const step of steps) {
      writeFileSync(file, step.text);
      lb.proc.kill('SIGHUP'); // the primary this test started; one at a time (signals of one kind coalesce)
      done++;
      expect(await until(async () => {
        const r = await lb.reloads();
        return r !== null && r.success + r.failure >= done;
      }), `reload ${done}: ${lb.stderr().slice(-3000)}`).toBe(true);
    }
    const valid = steps.filter((s) => s.valid).length;
    // A moment for any late (wrong) count to land.
    await new Promise((r) => setTimeout(r, 300));
    expect(await lb.reloads()).toEqual({ success: valid, failure: steps.length - valid });
    expect((await lb.status())?.reloads).toMatchObject({ success: valid, failure: steps.length - valid });

    // Both workers run the last valid config: only b, and extraPort closed.
    expect(await spread(`http://127.0.0.1:${port}/`, 12)).toEqual(Array(12).fill('b'));
    expect(await canConnect(extraPort)).toBe(false);
    // And so do replacements.
    const before = await lb.workersUp(2);
    for (const pid of before) process.kill(pid, 'SIGKILL'); // the workers of the primary this test started, by pid
    await lb.workersUp(2, before);
    expect(await spread(`http://127.0.0.1:${port}/`, 12)).toEqual(Array(12).fill('b'));
    expect(await canConnect(extraPort)).toBe(false);
  }, 90_000);

  it('a worker that does not confirm a reload: rejected, counted as a failure, and every worker ends on the config in use', async () => {
    const a = await backend('a');
    const b = await backend('b');
    const port = await freePort();
    const adminPort = await freePort();
    const config = (server: Backend): string => JSON.stringify({
      workers: 2,
      servers: [{ listen: [`127.0.0.1:${port}`], locations: [{ path: '/', proxyPass: 'http://backend' }] }],
      upstreams: { backend: { servers: [{ address: server.address }] } },
      admin: { listen: `127.0.0.1:${adminPort}` },
      accessLog: false,
      shutdownTimeout: '2s',
    });
    const file = writeConfig(config(a));
    const lb = await startCluster(file, adminPort);
    const url = `http://127.0.0.1:${port}/`;
    const [stalled] = await lb.workersUp(2);
    // A worker that cannot answer (stopped, as a stuck event loop would be) while the others switch.
    process.kill(stalled!, 'SIGSTOP'); // a worker of the primary this test started, by pid
    writeFileSync(file, config(b));
    lb.proc.kill('SIGHUP');
    // The primary waits 10 s for every worker's answer (RELOAD_WAIT_MS), then undoes the reload.
    await new Promise((r) => setTimeout(r, 10_500));
    process.kill(stalled!, 'SIGCONT');
    expect(await until(async () => {
      const r = await lb.reloads();
      return r !== null && r.success + r.failure >= 1;
    }, 20_000), lb.stderr().slice(-3000)).toBe(true);
    expect(await lb.reloads()).toEqual({ success: 0, failure: 1 });
    expect(lb.stderr()).toMatch(/no answer within 10000 ms/);
    // Every worker (the one that switched, the late one, or a replacement) serves the config in use.
    await lb.workersUp(2);
    expect(await spread(url, 12)).toEqual(Array(12).fill('a'));
    // And the next reload works.
    lb.proc.kill('SIGHUP');
    expect(await until(async () => ((await lb.reloads())?.success ?? 0) >= 1, 15_000), lb.stderr().slice(-3000)).toBe(true);
    expect(await lb.reloads()).toEqual({ success: 1, failure: 1 });
    expect(await spread(url, 12)).toEqual(Array(12).fill('b'));
  }, 60_000);

  it('replacements that cannot bind (another process took the address after every worker died) are retried with back-off; the primary stays up and serves again once the address is free', async () => {
    const a = await backend('a');
    const port = await freePort();
    const adminPort = await freePort();
    const file = writeConfig({
      workers: 2,
      servers: [{ listen: [`127.0.0.1:${port}`], locations: [{ path: '/', proxyPass: 'http://backend' }] }],
      upstreams: { backend: { servers: [{ address: a.address }] } },
      admin: { listen: `127.0.0.1:${adminPort}` },
      accessLog: false,
      shutdownTimeout: '2s',
    });
    const lb = await startCluster(file, adminPort);
    const before = await lb.workersUp(2);
    for (const pid of before) process.kill(pid, 'SIGKILL'); // the workers of the primary this test started, by pid
    // The listening socket goes with the last worker; take the address before a replacement binds it.
    const thief = net.createServer((s) => s.destroy());
    const took = await until(() => new Promise<boolean>((resolve) => {
      thief.once('error', () => resolve(false));
      thief.listen(port, '127.0.0.1', () => { thief.removeAllListeners('error'); resolve(true); });
    }), 5_000);
    cleanups.push(() => new Promise((resolve) => { if (thief.listening) thief.close(() => resolve()); else resolve(); }));
    expect(took, lb.stderr().slice(-2000)).toBe(true);
    // Replacements fail to bind, again and again, each after a longer wait; the primary stays up.
    expect(await until(async () => (lb.stderr().match(/sessionlb: cannot listen on/g)?.length ?? 0) >= 4, 15_000), lb.stderr().slice(-3000)).toBe(true);
    expect(lb.proc.exitCode).toBeNull();
    expect((await request(`${lb.admin}/healthz`)).status).toBe(503);
    const delays = [...lb.stderr().matchAll(/starting a new one in (\d+) ms/g)].map((m) => Number(m[1]));
    expect(delays.length).toBeGreaterThanOrEqual(3);
    for (let i = 1; i < delays.length; i++) expect(delays[i]!).toBeGreaterThan(delays[i - 1]!);
    // The address is free again: the next replacements bind it and serve.
    await new Promise<void>((resolve) => thief.close(() => resolve()));
    await lb.workersUp(2, before, 20_000);
    expect(await spread(`http://127.0.0.1:${port}/`, 6)).toEqual(Array(6).fill('a'));
    expect((await request(`${lb.admin}/healthz`)).status).toBe(200);
  }, 60_000);
});
