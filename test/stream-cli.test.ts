/**
 * `streams` through the built CLI: `check` messages, and `"workers": 2` (node:cluster) where
 * the workers share the stream listener and the primary binds none.
 */
import net from 'node:net';
import { existsSync } from 'node:fs';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { CLI, runCli, startProxyProcess, writeConfig, type RunningChild } from './helpers/child.js';
import { freePort, tally } from './helpers/net.js';

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

beforeAll(() => {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run "npm run build" first (npm test builds)`);
});

async function nameServer(name: string): Promise<number> {
  const port = await freePort();
  const server = net.createServer((s) => {
    s.on('error', () => undefined);
    s.end(`${name}\n`);
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return port;
}

function readAll(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    let out = '';
    s.setEncoding('utf8');
    s.on('data', (d: string) => { out += d; });
    s.on('end', () => resolve(out.trim()));
    s.on('error', reject);
  });
}

describe('sessionlb check with streams', () => {
  it('prints every problem as FILE: $.path: message and exits 1; a valid streams-only file is OK', async () => {
    const bad = writeConfig({
      streams: [
        { listen: ['127.0.0.1:5433'], proxyPass: 'pg' },
        { listen: ['127.0.0.1:5434'], proxyPass: 'http://pg', proxyTimeout: 'soon' },
      ],
      upstreams: { pg: { balance: 'ip_hash', servers: [{ address: '127.0.0.1:5432' }] } },
    });
    const r = await runCli(['check', '--config', bad]);
    expect(r.code).toBe(1);
    const out = r.stdout + r.stderr;
    expect(out).toContain(`${bad}: $.streams[1].proxyTimeout: must be a duration such as "500ms", "10s" or "1m"`);
    expect(out).toContain(`${bad}: $.streams[1].proxyPass: a stream passes bytes, not HTTP`);
    expect(out).toContain(`${bad}: $.upstreams.pg.balance: "ip_hash" cannot be used by a stream ($.streams[0] uses this upstream`);

    const good = writeConfig({ streams: [{ listen: ['127.0.0.1:5433'], proxyPass: '127.0.0.1:5432' }] });
    const ok = await runCli(['check', '--config', good]);
    expect(ok.stdout + ok.stderr).toContain('configuration OK');
    expect(ok.code).toBe(0);
  });
});

describe('streams with "workers": 2', () => {
  it('the workers share the stream listener; SIGTERM stops everything', async () => {
    const a = await nameServer('a');
    const b = await nameServer('b');
    const port = await freePort();
    const file = writeConfig({
      workers: 2,
      shutdownTimeout: '2s',
      accessLog: false,
      streams: [{ listen: [`127.0.0.1:${port}`], proxyPass: 'pool' }],
      upstreams: { pool: { servers: [{ address: `127.0.0.1:${a}` }, { address: `127.0.0.1:${b}` }] } },
    });
    const proc: RunningChild = await startProxyProcess(file, port);
    cleanups.push(() => proc.kill());
    const seen: string[] = [];
    for (let i = 0; i < 40; i++) seen.push(await readAll(port));
    const counts = tally(seen);
    expect(Object.keys(counts).sort()).toEqual(['a', 'b']);
    expect(counts.a! + counts.b!).toBe(40);
    proc.child.kill('SIGTERM'); // by pid: the primary this test started
    const exit = await proc.exited;
    expect(exit.code).toBe(0);
  }, 30_000);
});
