/**
 * `"workers": 2`: the real CLI (`node dist/cli.js run`) as a child process — a primary and two
 * node:cluster workers — in front of real loopback backends. Every load is bounded.
 */
import http from 'node:http';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, request, startBackend, type Backend, type BackendHandler } from './helpers/net.js';
import { phpHandler } from './helpers/php.js';
import { CLI, canConnect, runCli, writeConfig } from './helpers/child.js';
import { YOUNG_GENERATION_FLAG } from '../src/process/heap-tuning.js';
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

interface WorkerInfo { id: number; pid: number; answered: boolean; requests: number }
interface ServerInfo { address: string; healthy: boolean; state: string; requests: number; sessions: number | null }
interface StatusDoc {
  pid: number;
  workers: WorkerInfo[];
  upstreams: Record<string, { servers: ServerInfo[]; sticky: { learned: number; lookups: number; hits: number } | null }>;
}

const backends: Backend[] = [];
let proc: ChildProcess;
let exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
let stderr = '';
let port = 0;
let adminPort = 0;
let url = '';
let admin = '';

/** Requests a backend got on paths other than /health (health probes are counted apart). */
const traffic = new Map<string, number>();
const healthOk = new Map<string, boolean>();

const countingHandler = (inner: BackendHandler): BackendHandler => (req, res, b) => {
  if (req.url === '/health') {
    req.resume();
    const ok = healthOk.get(b.name) !== false;
    res.writeHead(ok ? 200 : 503, { 'Content-Length': 2 });
    res.end(ok ? 'ok' : 'no');
    return;
  }
  traffic.set(b.name, (traffic.get(b.name) ?? 0) + 1);
  inner(req, res, b);
};

const nameOnly: BackendHandler = (req, res, b) => {
  req.resume();
  req.on('end', () => {
    res.writeHead(200, { 'Content-Type': 'text/plain', 'X-Backend': b.name, 'Content-Length': Buffer.byteLength(b.name) });
    res.end(b.name);
  });
};

async function backend(name: string, handler: BackendHandler): Promise<Backend> {
  const b = await startBackend(name, countingHandler(handler));
  backends.push(b);
  return b;
}

async function status(): Promise<StatusDoc> {
  const r = await request(`${admin}/status`);
  expect(r.status).toBe(200);
  return JSON.parse(r.body) as StatusDoc;
}

async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; stderr:\n${stderr.slice(-3000)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** `count` GETs, each on a new connection (so the cluster spreads them over workers), `concurrency` at a time. */
async function spread(path: string, count: number, concurrency = 8, headers: Record<string, string> = {}): Promise<Array<{ status: number; backend: string }>> {
  const out: Array<{ status: number; backend: string }> = [];
  let next = 0;
  const run = async (): Promise<void> => {
    while (next < count) {
      next++;
      const r = await request(`${url}${path}`, { headers });
      out.push({ status: r.status, backend: String(r.headers['x-backend'] ?? '') });
    }
  };
  await Promise.all(Array.from({ length: concurrency }, run));
  return out;
}

/** The sum of a counter's series matching `filter` (a label substring) in /metrics text. */
function metricSum(text: string, name: string, filter: string): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) || !line.includes(filter)) continue;
    sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}

let configFile = '';
let configObject: Record<string, unknown> = {};
let plain: Backend[] = [];
let php: Backend[] = [];
let hc: Backend[] = [];

beforeAll(async () => {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run "npm run build" first (npm test builds)`);
  plain = [await backend('plain-1', nameOnly), await backend('plain-2', nameOnly)];
  php = [await backend('php-1', phpHandler), await backend('php-2', phpHandler), await backend('php-3', phpHandler)];
  hc = [await backend('hc-1', nameOnly), await backend('hc-2', nameOnly)];
  port = await freePort();
  adminPort = await freePort();
  url = `http://127.0.0.1:${port}`;
  admin = `http://127.0.0.1:${adminPort}`;
  configObject = {
    workers: 2,
    servers: [{
      listen: [`127.0.0.1:${port}`],
      locations: [
        { path: '/', proxyPass: 'http://plain' },
        { path: '/s/', proxyPass: 'http://sticky' },
        { path: '/hc/', proxyPass: 'http://hc' },
      ],
    }],
    upstreams: {
      plain: { servers: plain.map((b) => ({ address: b.address })) },
      sticky: { sticky: { mode: 'learn', cookie: 'PHPSESSID' }, servers: php.map((b) => ({ address: b.address })) },
      hc: {
        healthCheck: { path: '/health', interval: '100ms', timeout: '1s', fails: 1, passes: 1 },
        servers: hc.map((b) => ({ address: b.address })),
      },
    },
    // A generous store timeout: this machine is shared, and a lookup that times out would rebalance.
    sessionStore: { type: 'memory', timeout: '2s' },
    admin: { listen: `127.0.0.1:${adminPort}` },
    accessLog: false,
    shutdownTimeout: '5s',
    pidFile: 'sessionlb.pid',
  };
  configFile = writeConfig(configObject);
  const file = configFile;
  proc = spawn(process.execPath, [CLI, 'run', '--config', file], { stdio: ['ignore', 'ignore', 'pipe'] });
  proc.stderr!.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
  exited = new Promise((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })));
  await waitFor('the listener and the admin listener', async () => (await canConnect(port)) && (await canConnect(adminPort)), 20_000);
  await waitFor('two workers', async () => (await status()).workers.filter((w) => w.answered).length === 2);
}, 40_000);

afterAll(async () => {
  if (proc !== undefined && proc.exitCode === null && proc.signalCode === null) {
    proc.kill('SIGKILL'); // by pid: the process this file started (its workers exit when the primary's channel closes)
    await exited;
  }
  for (const b of backends) await b.close();
});

describe('workers: 2', () => {
  it('a primary and two workers with their own pids serve requests', async () => {
    const before = await status();
    expect(before.workers.map((w) => w.pid)).not.toContain(before.pid);
    expect(new Set(before.workers.map((w) => w.pid)).size).toBe(2);
    const res = await spread('/', 40);
    expect(res.every((r) => r.status === 200)).toBe(true);
    const after = await status();
    // New connections are handed to the workers in turn: both served some.
    for (const w of after.workers) {
      const prev = before.workers.find((x) => x.id === w.id)!;
      expect(w.requests - prev.requests).toBeGreaterThan(0);
    }
    // /status sums the workers' counters: 40 more requests over the two plain servers.
    const sum = (d: StatusDoc): number => d.upstreams.plain!.servers.reduce((a, s) => a + s.requests, 0);
    expect(sum(after) - sum(before)).toBe(40);
  });

  it('workers run with the bounded young generation (src/process/heap-tuning.ts) the primary was started without', async () => {
    const d = await status();
    const args = (pid: number): string[] => readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    expect(args(d.pid)).not.toContain(YOUNG_GENERATION_FLAG);
    for (const w of d.workers) expect(args(w.pid)).toContain(YOUNG_GENERATION_FLAG);
  });

  it('sticky learn with the memory store: 50 sessions x 10 requests stay on the creating backend across workers', async () => {
    const created: string[] = [];
    let moved = 0;
    let failures = 0;
    let next = 0;
    const session = async (i: number): Promise<void> => {
      let cookie = '';
      for (let r = 0; r < 10; r++) {
        // A new connection per request: the requests of one session reach both workers.
        const res = await request(`${url}/s/page`, { headers: cookie === '' ? {} : { Cookie: cookie } });
        if (res.status !== 200) failures++;
        const b = String(res.headers['x-backend']);
        if (r === 0) {
          created[i] = b;
          const set = res.headers['set-cookie']?.[0] ?? '';
          cookie = set.split(';')[0]!;
        } else if (b !== created[i]) {
          moved++;
        }
      }
    };
    await Promise.all(Array.from({ length: 8 }, async () => {
      while (next < 50) await session(next++);
    }));
    expect(failures).toBe(0);
    expect(created.every((c) => c.startsWith('php-'))).toBe(true);
    expect(moved).toBe(0);
    expect(new Set(created).size).toBe(3);
    const doc = await status();
    // The primary owns the bindings: "sessions bound" per server, as created.
    for (const s of doc.upstreams.sticky!.servers) {
      const name = php.find((b) => b.address === s.address)!.name;
      expect(s.sessions).toBe(created.filter((c) => c === name).length);
    }
    expect(doc.upstreams.sticky!.sticky!.learned).toBe(50);
  }, 60_000);

  it('/metrics aggregates every worker: N requests count N', async () => {
    const scrape = async (): Promise<number> => {
      const r = await request(`${admin}/metrics`);
      expect(r.status).toBe(200);
      return metricSum(r.body, 'sessionlb_http_requests_total', 'upstream="plain"');
    };
    const before = await scrape();
    const res = await spread('/', 60);
    expect(res.every((r) => r.status === 200)).toBe(true);
    // The counters move when a response is done; give the workers a moment, then expect exactly 60 more.
    await waitFor('60 more requests in /metrics', async () => (await scrape()) - before >= 60);
    await new Promise((r) => setTimeout(r, 200));
    expect((await scrape()) - before).toBe(60);
    const text = (await request(`${admin}/metrics`)).body;
    // Server state comes from the primary once, not summed over workers.
    expect(metricSum(text, 'sessionlb_upstream_server_up', 'upstream="plain"')).toBe(2);
  });

  it('a health check marking a server down reaches every worker: no traffic goes to it', async () => {
    healthOk.set('hc-2', false);
    await waitFor('hc-2 unhealthy in /status', async () => {
      const s = (await status()).upstreams.hc!.servers.find((x) => x.address === hc[1]!.address)!;
      return !s.healthy && s.state === 'unhealthy';
    });
    // The probe result is sent to the workers right after the probe; allow the message to land.
    await new Promise((r) => setTimeout(r, 100));
    const before = traffic.get('hc-2') ?? 0;
    const res = await spread('/hc/x', 40);
    expect(res.every((r) => r.status === 200 && r.backend === 'hc-1')).toBe(true);
    expect((traffic.get('hc-2') ?? 0) - before).toBe(0);
    healthOk.set('hc-2', true);
    await waitFor('hc-2 healthy again', async () => (await status()).upstreams.hc!.servers.every((x) => x.healthy));
    await new Promise((r) => setTimeout(r, 100));
    const back = await spread('/hc/x', 40);
    expect(new Set(back.map((r) => r.backend))).toEqual(new Set(['hc-1', 'hc-2']));
  });

  it('admin drain (PUT) reaches every worker', async () => {
    const put = (state: string): Promise<{ status: number; body: string }> => new Promise((resolve, reject) => {
      const body = JSON.stringify({ state });
      const req = http.request(`${admin}/upstreams/plain/servers/${encodeURIComponent(plain[1]!.address)}`, {
        method: 'PUT', agent: false, headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) },
      }, (res) => {
        let text = '';
        res.setEncoding('utf8').on('data', (d: string) => { text += d; });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
      });
      req.on('error', reject);
      req.end(body);
    });
    expect((await put('drain')).status).toBe(200);
    await new Promise((r) => setTimeout(r, 100));
    const before = traffic.get('plain-2') ?? 0;
    const res = await spread('/', 40);
    expect(res.every((r) => r.status === 200 && r.backend === 'plain-1')).toBe(true);
    expect((traffic.get('plain-2') ?? 0) - before).toBe(0);
    expect((await status()).upstreams.plain!.servers.find((s) => s.address === plain[1]!.address)!.state).toBe('drain');
    expect((await put('ready')).status).toBe(200);
    await new Promise((r) => setTimeout(r, 100));
    const back = await spread('/', 40);
    expect(new Set(back.map((r) => r.backend))).toEqual(new Set(['plain-1', 'plain-2']));
  });

  it('admin maintenance of a virtual server (PUT /servers/_/maintenance) reaches every worker', async () => {
    const put = (on: boolean): Promise<number> => new Promise((resolve, reject) => {
      const body = JSON.stringify({ on });
      const req = http.request(`${admin}/servers/_/maintenance`, {
        method: 'PUT', agent: false, headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) },
      }, (res) => { res.resume(); res.on('end', () => resolve(res.statusCode ?? 0)); });
      req.on('error', reject);
      req.end(body);
    });
    expect(await put(true)).toBe(200);
    await new Promise((r) => setTimeout(r, 100));
    const before = (traffic.get('plain-1') ?? 0) + (traffic.get('plain-2') ?? 0);
    const res = await spread('/', 40);
    expect(res.every((r) => r.status === 503)).toBe(true);
    expect((traffic.get('plain-1') ?? 0) + (traffic.get('plain-2') ?? 0)).toBe(before);
    expect(await put(false)).toBe(200);
    await new Promise((r) => setTimeout(r, 100));
    expect((await spread('/', 20)).every((r) => r.status === 200)).toBe(true);
  });

  it('a killed worker is replaced and requests keep flowing; the replacement runs the primary\'s config, not the file\'s', async () => {
    const before = await status();
    const victim = before.workers[0]!;
    // The file changed since the primary loaded it, and was not reloaded (here: a broken edit).
    // nginx's master forks workers with the configuration it runs; so does ours.
    writeFileSync(configFile, '{"servers": [');
    process.kill(victim.pid, 'SIGKILL'); // a worker of the primary this file started, by its pid
    await waitFor('a replacement worker', async () => {
      const d = await status();
      return d.workers.length === 2 && d.workers.every((w) => w.answered) && !d.workers.some((w) => w.pid === victim.pid);
    });
    expect(stderr).toMatch(new RegExp(`worker ${victim.id} \\(pid ${victim.pid}\\) exited`));
    const res = await spread('/', 40);
    expect(res.every((r) => r.status === 200)).toBe(true);
    const after = await status();
    expect(after.pid).toBe(before.pid);
    expect(after.workers.every((w) => w.requests > 0)).toBe(true);
    expect(stderr).not.toMatch(/invalid JSON/);
    writeFileSync(configFile, JSON.stringify(configObject));
  });

  it('workers that keep dying young are replaced with a growing delay (crash-loop back-off), then serve again', async () => {
    // The previous test's replacement is seconds old: each death of a young worker doubles the wait.
    const delays: string[] = [];
    for (let i = 0; i < 2; i++) {
      const d = await status();
      const youngest = d.workers.reduce((a, b) => (b.id > a.id ? b : a));
      process.kill(youngest.pid, 'SIGKILL'); // a worker of the primary this file started, by its pid
      await waitFor(`worker ${youngest.id} replaced`, async () => {
        const now = await status();
        return now.workers.length === 2 && now.workers.every((w) => w.answered) && !now.workers.some((w) => w.pid === youngest.pid);
      });
      const line = new RegExp(`worker ${youngest.id} \\(pid ${youngest.pid}\\) exited \\([^)]*\\); starting a new one( in (\\d+) ms)?`).exec(stderr);
      expect(line, `the log line for worker ${youngest.id}`).not.toBeNull();
      delays.push(line![2] ?? '0');
    }
    expect(delays.map(Number)).toEqual([100, 200]);
    const res = await spread('/', 20);
    expect(res.every((r) => r.status === 200)).toBe(true);
  });

  it('`sessionlb reload` (pidFile = the primary): the primary validates, then every worker reloads', async () => {
    const pidFile = join(dirname(configFile), 'sessionlb.pid');
    expect(Number(readFileSync(pidFile, 'utf8').trim())).toBe(proc.pid);
    // An invalid file: refused by `reload` itself, nothing signalled.
    writeFileSync(configFile, JSON.stringify({ ...configObject, workers: 0 }));
    const bad = await runCli(['reload', '--config', configFile]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain('$.workers: must be "auto" or an integer >= 1');
    // plain-2 removed: a worker that kept the old config would still send it requests.
    const upstreams = configObject.upstreams as Record<string, unknown>;
    writeFileSync(configFile, JSON.stringify({ ...configObject, upstreams: { ...upstreams, plain: { servers: [{ address: plain[0]!.address }] } } }));
    const ok = await runCli(['reload', '--config', configFile]);
    expect(ok.code).toBe(0);
    await waitFor('the reload', async () => (await status()).upstreams.plain!.servers.length === 1);
    await waitFor('the workers\' reload', async () => stderr.split('\n').filter((l) => l.includes('"worker"') && l.includes('configuration reloaded')).length === 2);
    const before = traffic.get('plain-2') ?? 0;
    const res = await spread('/', 40);
    expect(res.every((r) => r.status === 200 && r.backend === 'plain-1')).toBe(true);
    expect((traffic.get('plain-2') ?? 0) - before).toBe(0);
  });

  it('SIGTERM: the workers drain and the primary exits 0', async () => {
    const pids = (await status()).workers.map((w) => w.pid);
    proc.kill('SIGTERM');
    const { code, signal } = await exited;
    expect(signal).toBeNull();
    expect(code).toBe(0);
    // The workers are gone too.
    for (const pid of pids) expect(() => process.kill(pid, 0)).toThrow();
    expect(await canConnect(port)).toBe(false);
    expect(() => readFileSync(join(dirname(configFile), 'sessionlb.pid'))).toThrow(); // removed at stop
  });
});

describe('check', () => {
  it('accepts workers with the memory store (the primary owns the bindings) and names a bad value', async () => {
    const base = {
      servers: [{ listen: ['127.0.0.1:8080'], locations: [{ path: '/', proxyPass: 'http://b' }] }],
      upstreams: { b: { sticky: { mode: 'learn' }, servers: [{ address: '127.0.0.1:8081' }] } },
      sessionStore: { type: 'memory' },
    };
    for (const workers of ['auto', 4]) {
      const r = await runCli(['check', '--config', writeConfig({ ...base, workers })]);
      expect(r.code).toBe(0);
    }
    const bad = await runCli(['check', '--config', writeConfig({ ...base, workers: 'many' })]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain('$.workers: must be "auto" or an integer >= 1');
  });
});
