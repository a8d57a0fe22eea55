/**
 * The access log: nginx field names, one JSON object per request, every attempt in
 * upstream_addr, `accessLog: false` writes nothing, stdout by default from the CLI,
 * human-readable lines with --pretty. Real backends; the CLI tests run dist/cli.js.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';
import { beforeAll, describe, expect, it } from 'vitest';
import { freePort, request } from './helpers/net.js';
import { useScope } from './helpers/scope.js';
import { waitFor } from './helpers/capture-log.js';

const FIELDS = [
  'time', 'remote_addr', 'request_method', 'request_uri', 'server_protocol', 'status', 'body_bytes_sent',
  'http_referer', 'http_user_agent', 'request_time', 'upstream_addr', 'upstream_status', 'upstream_response_time',
  'upstream_name', 'sticky', 'ssl_protocol', 'ssl_cipher', 'ssl_session_reused',
];

const { cleanup, backend, lb } = useScope();

let dir = '';
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sessionlb-access-'));
  return () => rm(dir, { recursive: true, force: true });
});


/** Reads JSON lines from `file` until there are at least `n` (the log is written asynchronously). */
async function lines(file: string, n: number, timeoutMs = 5000): Promise<Array<Record<string, unknown>>> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const text = existsSync(file) ? await readFile(file, 'utf8') : '';
    const out = text.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Record<string, unknown>);
    if (out.length >= n || Date.now() > until) return out;
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('access log', () => {
  it('writes one JSON object per proxied request with nginx field names', async () => {
    const a = await backend('alpha', (req, res) => {
      req.resume();
      const body = 'x'.repeat(1234);
      res.writeHead(201, { 'Content-Type': 'text/plain', 'Content-Length': body.length });
      res.end(body);
    });
    const file = join(dir, 'one.log');
    const r = await lb({ upstreams: { backend: { servers: [{ address: a.address }] } }, accessLog: { path: file } });
    const res = await request(`${r.url}/shop/cart?item=42&x=%20y`, {
      headers: { Referer: 'http://ref.example/page', 'User-Agent': 'curl/8.0 "quoted"' },
    });
    expect(res.status).toBe(201);
    const [entry] = await lines(file, 1);
    expect(entry).toBeDefined();
    expect(Object.keys(entry!).sort()).toEqual([...FIELDS].sort());
    expect(entry).toMatchObject({
      remote_addr: '127.0.0.1',
      request_method: 'GET',
      request_uri: '/shop/cart?item=42&x=%20y',
      server_protocol: 'HTTP/1.1',
      status: 201,
      body_bytes_sent: 1234,
      http_referer: 'http://ref.example/page',
      http_user_agent: 'curl/8.0 "quoted"',
      upstream_addr: a.address,
      upstream_status: '201',
      upstream_name: 'backend',
      sticky: 'none',
      ssl_protocol: '', ssl_cipher: '', ssl_session_reused: '', // plain HTTP
    });
    expect(typeof entry!.request_time).toBe('number');
    expect(entry!.request_time as number).toBeGreaterThanOrEqual(0);
    expect(entry!.request_time as number).toBeLessThan(5);
    expect(entry!.upstream_response_time).toMatch(/^\d+\.\d{3}$/);
    expect(Date.now() - Date.parse(entry!.time as string)).toBeLessThan(60_000);
    expect(entry!.time).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  });

  it('lists every attempt of a retried request, like nginx "a, b"', async () => {
    const refusedPort = await freePort();
    const good = await backend('good');
    const file = join(dir, 'retry.log');
    const r = await lb({
      // Equal weights: smooth round robin tries the first server first.
      upstreams: { backend: { servers: [{ address: `127.0.0.1:${refusedPort}` }, { address: good.address }] } },
      accessLog: { path: file },
    });
    const res = await request(r.url + '/retry');
    expect(res.status).toBe(200);
    const [entry] = await lines(file, 1);
    expect(entry).toMatchObject({
      status: 200,
      body_bytes_sent: 4,
      upstream_addr: `127.0.0.1:${refusedPort}, ${good.address}`,
      upstream_status: '502, 200',
      upstream_name: 'backend',
    });
    expect(entry!.upstream_response_time).toMatch(/^\d+\.\d{3}, \d+\.\d{3}$/);
  });

  it('logs requests sessionlb answers itself, and clients that leave early as 499', async () => {
    const release: Array<() => void> = [];
    const slow = await backend('slow', (req, res) => {
      req.resume();
      release.push(() => { if (!res.destroyed) res.end('late'); });
    });
    cleanup.push(async () => { for (const f of release) f(); });
    const port = await freePort();
    const file = join(dir, 'local.log');
    await lb({
      servers: [{ listen: [`127.0.0.1:${port}`], serverName: ['app.test'], locations: [{ path: '/app/', proxyPass: 'http://backend' }] }],
      upstreams: { backend: { servers: [{ address: slow.address }] } },
      accessLog: { path: file },
    });
    const notFound = await request(`http://127.0.0.1:${port}/nothing-here`, { method: 'HEAD' });
    expect(notFound.status).toBe(404);
    // A client that gives up before the upstream answers.
    await new Promise<void>((resolve) => {
      const sock = net.connect(port, '127.0.0.1', () => {
        sock.write('GET /app/slow HTTP/1.1\r\nHost: app.test\r\n\r\n');
        const wait = setInterval(() => {
          if (release.length > 0) {
            clearInterval(wait);
            sock.destroy();
            resolve();
          }
        }, 10);
      });
    });
    const entries = await lines(file, 2);
    const local = entries.find((e) => e.request_uri === '/nothing-here');
    expect(local).toMatchObject({ request_method: 'HEAD', status: 404, body_bytes_sent: 0, upstream_addr: '', upstream_status: '', upstream_name: '' });
    const left = entries.find((e) => e.request_uri === '/app/slow');
    expect(left).toMatchObject({ status: 499, body_bytes_sent: 0, upstream_addr: slow.address, upstream_name: 'backend' });
  });

  it('logs the error page size for a 502 when no server is left', async () => {
    const refusedPort = await freePort();
    const file = join(dir, 'err.log');
    const r = await lb({ upstreams: { backend: { servers: [{ address: `127.0.0.1:${refusedPort}` }] } }, accessLog: { path: file } });
    const res = await request(r.url + '/');
    expect(res.status).toBe(502);
    const [entry] = await lines(file, 1);
    expect(entry).toMatchObject({ status: 502, body_bytes_sent: Buffer.byteLength(res.body), upstream_addr: `127.0.0.1:${refusedPort}`, upstream_status: '502' });
  });

  it('reopens its file after rotation (SIGUSR1 in the CLI, like nginx -s reopen)', async () => {
    const a = await backend('a');
    const file = join(dir, 'rotate.log');
    const r = await lb({ upstreams: { backend: { servers: [{ address: a.address }] } }, accessLog: { path: file } });
    await request(r.url + '/before');
    expect((await lines(file, 1)).map((e) => e.request_uri)).toEqual(['/before']);
    await rename(file, file + '.1');
    expect(r.lb.observability.reopenAccessLog()).toBe(true);
    await request(r.url + '/after');
    expect((await lines(file, 1)).map((e) => e.request_uri)).toEqual(['/after']);
    expect((await lines(file + '.1', 1)).map((e) => e.request_uri)).toEqual(['/before']);
  });

  it('accepts false or {path}, and refuses anything else with a clear message', async () => {
    const { loadConfig } = await import('../src/config/load.js');
    const base = { servers: [{ listen: ['127.0.0.1:1'], locations: [{ path: '/', proxyPass: 'http://127.0.0.1:2' }] }] };
    expect((await loadConfig({ ...base, accessLog: false })).accessLog).toBe(false);
    expect((await loadConfig({ ...base })).accessLog).toEqual({ path: null });
    expect((await loadConfig({ ...base, accessLog: { path: '/tmp/x.log' } })).accessLog).toEqual({ path: '/tmp/x.log' });
    await expect(loadConfig({ ...base, accessLog: true })).rejects.toThrow(/\$\.accessLog: must be false or an object/);
    await expect(loadConfig({ ...base, accessLog: { file: 'x' } })).rejects.toThrow(/accessLog/);
  });
});

/** Runs `node dist/cli.js run --config FILE [args]`, collecting stdout. */
function runCli(config: string, args: string[] = []): { child: ChildProcess; out: () => string; exited: Promise<number | null> } {
  const child = spawn(process.execPath, ['dist/cli.js', 'run', '--config', config, ...args], {
    cwd: join(import.meta.dirname, '..'),
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, SESSIONLB_LOG_LEVEL: 'warn', NO_COLOR: '1' },
  });
  let out = '';
  child.stdout!.on('data', (c: Buffer) => { out += c.toString(); });
  child.stderr!.resume();
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  cleanup.push(async () => { if (child.exitCode === null) child.kill('SIGKILL'); });
  return { child, out: () => out, exited };
}

describe('access log from the CLI (dist/cli.js)', () => {
  const cli = join(import.meta.dirname, '..', 'dist', 'cli.js');

  it('writes JSON lines to stdout by default, nothing with accessLog: false, readable lines with --pretty', async () => {
    if (!existsSync(cli)) throw new Error('dist/cli.js is missing: run `npm run build` (npm test builds first)');
    const a = await backend('a');
    const results: Record<string, string> = {};
    for (const mode of ['default', 'off', 'pretty'] as const) {
      const port = await freePort();
      const file = join(dir, `cli-${mode}.json`);
      await writeFile(file, JSON.stringify({
        servers: [{ listen: [`127.0.0.1:${port}`], locations: [{ path: '/', proxyPass: 'http://backend' }] }],
        upstreams: { backend: { servers: [{ address: a.address }] } },
        ...(mode === 'off' ? { accessLog: false } : {}),
      }));
      const run = runCli(file, mode === 'pretty' ? ['--pretty'] : []);
      const up = await waitFor(async () => (await request(`http://127.0.0.1:${port}/cli-${mode}?n=1`).catch(() => null))?.status === 200);
      expect(up).toBe(true);
      for (let i = 2; i <= 3; i++) expect((await request(`http://127.0.0.1:${port}/cli-${mode}?n=${i}`)).status).toBe(200);
      if (mode !== 'off') await waitFor(() => run.out().includes(`/cli-${mode}?n=3`));
      run.child.kill('SIGTERM');
      expect(await run.exited).toBe(0);
      results[mode] = run.out();
    }
    const json = results.default!.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(json.filter((e) => String(e.request_uri).startsWith('/cli-default')).map((e) => e.request_uri))
      .toEqual(expect.arrayContaining(['/cli-default?n=2', '/cli-default?n=3']));
    for (const e of json) expect(Object.keys(e).sort()).toEqual([...FIELDS].sort());
    expect(results.off).not.toContain('/cli-off');
    expect(results.off).not.toContain('{');
    expect(results.pretty).toMatch(/127\.0\.0\.1 "GET \/cli-pretty\?n=3 HTTP\/1\.1" 200 1 /);
    expect(results.pretty).not.toMatch(/^\{/m);
  });
});
