/**
 * Source affinity (`sticky: {"mode": "source"}`) on streams and HTTP: the client address (cut
 * to `mask`) bound to a server in the session store, shared by two sessionlb instances through
 * one real memcached process, with real TCP backends on loopback that answer with their name.
 * Clients connect from several loopback addresses (127.0.0.2, 127.0.0.3, ...: `localAddress`).
 */
import net from 'node:net';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/load.js';
import { SessionLB } from '../src/runtime/sessionlb.js';
import { silentLog } from '../src/observability/log.js';
import { sourceSessionId } from '../src/sessions/session-id.js';
import { freePort, request, startBackend, startDelayRelay, startTcpBackend, type Backend, type TcpBackend } from './helpers/net.js';
import { memcachedAvailable, memcachedCommand, startMemcached, type MemcachedProcess } from './helpers/memcached.js';
import { parseMetrics, sum } from './helpers/prom.js';
import { startProxyProcess, writeConfig } from './helpers/child.js';
import { configProblems } from './helpers/config.js';

const HAVE_MEMCACHED = memcachedAvailable();
if (!HAVE_MEMCACHED) console.warn('memcached is not installed: skipping the shared source affinity tests (.ci/run installs it)');

const KEY_PATTERN = /^sessionlb:[A-Za-z0-9_-]{43}$/;

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

/** A TCP backend that writes its name and a newline, then echoes; closed after each test. */
async function tcpBackend(name: string): Promise<TcpBackend> {
  const backend = await startTcpBackend(name);
  cleanups.push(backend.kill);
  return backend;
}

async function memcached(): Promise<MemcachedProcess> {
  const m = await startMemcached();
  cleanups.push(() => m.kill());
  return m;
}

interface StreamLB {
  lb: SessionLB;
  port: number;
  adminPort: number;
  logFile: string;
}

/** One sessionlb with one stream listener to upstream "pool" (source affinity), access log in a file. */
async function startStreamLB(servers: TcpBackend[], sticky: Record<string, unknown>, sessionStore?: Record<string, unknown>, proxyProtocol = false): Promise<StreamLB> {
  const port = await freePort();
  const adminPort = await freePort();
  const dir = await mkdtemp(join(tmpdir(), 'sessionlb-source-'));
  const logFile = join(dir, 'access.log');
  const lb = new SessionLB(await loadConfig({
    admin: { listen: `127.0.0.1:${adminPort}` },
    accessLog: { path: logFile },
    ...(sessionStore === undefined ? {} : { sessionStore }),
    streams: [{
      listen: [`127.0.0.1:${port}${proxyProtocol ? ' proxy_protocol' : ''}`], proxyPass: 'pool', proxyConnectTimeout: '2s',
      ...(proxyProtocol ? { proxyProtocolFrom: ['127.0.0.1'] } : {}),
    }],
    upstreams: { pool: { sticky, servers: servers.map((b) => ({ address: b.address })) } },
  }, '<test>'), { log: silentLog() });
  await lb.start();
  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    await lb.stop(2000);
  };
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  cleanups.push(stop);
  return { lb, port, adminPort, logFile };
}

/** Access log lines of a stopped instance. */
async function logLines(s: StreamLB): Promise<Record<string, unknown>[]> {
  await s.lb.stop(2000);
  const text = await readFile(s.logFile, 'utf8').catch(() => '');
  return text.trim().split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Record<string, unknown>);
}

/** Connects from `from` (a loopback address), reads the backend's name, closes; '<closed>' when the proxy closed first. */
function nameFrom(port: number, from: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ port, host: '127.0.0.1', localAddress: from });
    let buf = '';
    const timer = setTimeout(() => { s.destroy(); reject(new Error(`no answer through ${port} from ${from} in 5s`)); }, 5000);
    s.setEncoding('utf8');
    s.on('data', (d: string) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl >= 0) {
        clearTimeout(timer);
        s.end();
        resolve(buf.slice(0, nl));
      }
    });
    s.on('error', (err) => { clearTimeout(timer); reject(err); });
    s.on('close', () => { clearTimeout(timer); resolve(buf === '' ? '<closed>' : buf); });
  });
}

/** `n` connections of one client, alternating between the instances' ports (sequential). */
async function connections(ports: number[], from: string, n: number): Promise<string[]> {
  const out: string[] = [];
  for (let i = 0; i < n; i++) out.push(await nameFrom(ports[i % ports.length]!, from));
  return out;
}

const CLIENTS = ['127.0.0.2', '127.0.0.3', '127.0.0.4', '127.0.0.5', '127.0.0.6', '127.0.0.7'];
const STORE = { type: 'memcached', timeout: '1s', hashKey: 'shared-secret-for-source-tests' };
const STICKY = { mode: 'source', ttl: '30m' };

describe('sourceSessionId (the key of a source binding)', () => {
  const full = { ipv4: 32, ipv6: 128 };
  it('cuts IPv4 and IPv6 addresses to the mask and writes them one way', () => {
    expect(sourceSessionId('192.0.2.77', full)).toBe('192.0.2.77/32');
    expect(sourceSessionId('192.0.2.77', { ipv4: 24, ipv6: 64 })).toBe('192.0.2.0/24');
    expect(sourceSessionId('192.0.2.77', { ipv4: 1, ipv6: 64 })).toBe('128.0.0.0/1');
    expect(sourceSessionId('10.255.255.255', { ipv4: 9, ipv6: 64 })).toBe('10.128.0.0/9');
    const forms = ['2001:db8::1:2', '2001:0DB8:0:0:0:0:1:2', '2001:db8:0::1:2%eth0'];
    for (const f of forms) expect(sourceSessionId(f, full)).toBe('2001:db8:0:0:0:0:1:2/128');
    expect(sourceSessionId('2001:db8:aaaa:bbbb:1:2:3:4', { ipv4: 32, ipv6: 64 })).toBe('2001:db8:aaaa:bbbb:0:0:0:0/64');
    expect(sourceSessionId('2001:db8:aaaa:bbbb:1:2:3:4', { ipv4: 32, ipv6: 56 })).toBe('2001:db8:aaaa:bb00:0:0:0:0/56');
    expect(sourceSessionId('::', full)).toBe('0:0:0:0:0:0:0:0/128');
    expect(sourceSessionId('64:ff9b::192.0.2.1', full)).toBe('64:ff9b:0:0:0:0:c000:201/128');
  });

  it('is null for what is not an IP address', () => {
    for (const bad of ['', 'localhost', '1.2.3', '1.2.3.4.5', '256.1.1.1', '1..2.3', '2001:db8::1::2', '1:2:3:4:5:6:7:8:9', 'g::1', '1.2.3.4::', ':::']) {
      expect(sourceSessionId(bad, full), bad).toBeNull();
    }
  });
});

describe('source affinity: config', () => {
  const problems = (raw: Record<string, unknown>): Promise<string[]> => configProblems(raw, 'f.json');
  const servers = [{ address: '127.0.0.1:5432' }];
  const stream = (sticky: unknown): Record<string, unknown> => ({ streams: [{ listen: ['127.0.0.1:5433'], proxyPass: 'pg' }], upstreams: { pg: { sticky, servers } } });

  it('accepts "source" on a stream\'s upstream, with a mask, and refuses the cookie modes there', async () => {
    expect(await problems(stream({ mode: 'source', ttl: '30m' }))).toEqual([]);
    expect(await problems(stream({ mode: 'source', mask: { ipv4: 24, ipv6: 64 } }))).toEqual([]);
    expect(await problems(stream({ mode: 'hash' }))).toEqual([
      '$.upstreams.pg.sticky.mode: "hash" reads HTTP cookies, but $.streams[0] uses this upstream: use "source" (the client address bound to a server in the session store), or give the stream an upstream of its own (same servers)',
    ]);
    const config = await loadConfig(stream({ mode: 'source', mask: { ipv4: 24 } }), 'f.json');
    expect(config.upstreams.get('pg')!.sticky).toMatchObject({ mode: 'source', ttlMs: 24 * 60_000, mask: { ipv4: 24, ipv6: 128 } });
  });

  it('reports a bad mask, and keys that do not apply, by their JSON path', async () => {
    expect(await problems(stream({ mode: 'source', mask: { ipv4: 33, ipv6: 0 } }))).toEqual([
      '$.upstreams.pg.sticky.mask.ipv4: must be an integer from 1 to 32',
      '$.upstreams.pg.sticky.mask.ipv6: must be an integer from 1 to 128',
    ]);
    expect(await problems(stream({ mode: 'source', mask: 24 }))).toEqual(['$.upstreams.pg.sticky.mask: must be an object such as {"ipv4": 24, "ipv6": 64}']);
    expect(await problems(stream({ mode: 'source', mask: { v4: 24 } }))).toHaveLength(1);
    expect(await problems(stream({ mode: 'source', cookie: 'PHPSESSID', maxIdLength: 64 }))).toEqual([
      '$.upstreams.pg.sticky.cookie: "mode": "source" reads no cookie: the client address is the key',
      '$.upstreams.pg.sticky.maxIdLength: "mode": "source" reads no cookie: the client address is the key',
    ]);
    expect(await problems({
      servers: [{ listen: ['127.0.0.1:8080'], locations: [{ path: '/', proxyPass: 'http://b' }] }],
      upstreams: { b: { sticky: { mode: 'learn', mask: { ipv4: 24 } }, servers } },
    })).toEqual(['$.upstreams.b.sticky.mask: applies only to "mode": "source"']);
  });
});

describe('source affinity on a stream, one instance (memory store)', () => {
  it('mask 24: two addresses of one /24 share a server; without it they are balanced apart', async () => {
    const bs = await Promise.all(['b1', 'b2', 'b3'].map((n) => tcpBackend(n)));
    const masked = await startStreamLB(bs, { ...STICKY, mask: { ipv4: 24 } });
    const whole = await startStreamLB(bs, STICKY);
    for (const net24 of ['127.0.1', '127.0.2', '127.0.3']) {
      const a = await connections([masked.port], `${net24}.2`, 5);
      const b = await connections([masked.port], `${net24}.3`, 5);
      expect(new Set([...a, ...b]).size, `${net24}.0/24: ${[...a, ...b].join(' ')}`).toBe(1);
    }
    expect(masked.lb.sessions.stats('pool').learned).toBe(3);
    // Whole addresses: round robin gives the second client the next server, and each keeps its own.
    const a = await connections([whole.port], '127.0.1.2', 5);
    const b = await connections([whole.port], '127.0.1.3', 5);
    expect(new Set(a).size).toBe(1);
    expect(new Set(b).size).toBe(1);
    expect(a[0]).not.toBe(b[0]);
    const lines = await logLines(masked);
    expect(lines.filter((l) => l.sticky === 'learned')).toHaveLength(3);
    expect(lines.filter((l) => l.sticky === 'bound')).toHaveLength(27);
  });
});

describe('HTTP location on a source upstream', () => {
  it('binds by the client address ($remote_addr)', async () => {
    const bs: Backend[] = await Promise.all(['h1', 'h2', 'h3'].map((n) => startBackend(n)));
    cleanups.push(() => Promise.all(bs.map((b) => b.close().catch(() => undefined))).then(() => undefined));
    const port = await freePort();
    const lb = new SessionLB(await loadConfig({
      servers: [{ listen: [`127.0.0.1:${port}`], locations: [{ path: '/', proxyPass: 'http://web' }] }],
      upstreams: { web: { sticky: STICKY, servers: bs.map((b) => ({ address: b.address })) } },
    }, '<test>'), { log: silentLog() });
    await lb.start();
    cleanups.push(() => lb.stop(2000));
    const homes = new Set<string>();
    for (const from of ['127.0.0.2', '127.0.0.3', '127.0.0.4']) {
      const seen = new Set<string>();
      for (let i = 0; i < 6; i++) {
        const r = await request(`http://127.0.0.1:${port}/`, { localAddress: from });
        expect(r.status).toBe(200);
        seen.add(String(r.headers['x-backend']));
      }
      expect(seen.size, `${from}: ${[...seen].join(' ')}`).toBe(1);
      homes.add([...seen][0]!);
    }
    expect(homes.size).toBe(3); // round robin for new clients
    expect(lb.sessions.stats('web').learned).toBe(3);
  });
});

describe.skipIf(!HAVE_MEMCACHED)('source affinity shared through memcached', () => {
  it('two instances: each client address keeps its backend over 20 connections split between them; memcached holds no address in clear', async () => {
    const m = await memcached();
    const bs = await Promise.all(['b1', 'b2', 'b3'].map((n) => tcpBackend(n)));
    const store = { ...STORE, servers: [m.address] };
    const a = await startStreamLB(bs, STICKY, store);
    const b = await startStreamLB(bs, STICKY, store);
    const ports = [a.port, b.port];
    const seen = await Promise.all(CLIENTS.map((from, i) => connections(i % 2 === 0 ? ports : [b.port, a.port], from, 20)));
    seen.forEach((names, i) => {
      expect(names, CLIENTS[i]).toHaveLength(20);
      expect(new Set(names).size, `${CLIENTS[i]}: ${names.join(' ')}`).toBe(1);
    });
    expect(new Set(seen.map((n) => n[0])).size).toBeGreaterThan(1);
    // Learned once each (by whichever instance saw it first); the other found it in memcached.
    const sa = a.lb.sessions.stats('pool');
    const sb = b.lb.sessions.stats('pool');
    expect(sa.learned + sb.learned).toBe(CLIENTS.length);
    expect(sa.lookups.store_hit + sb.lookups.store_hit).toBeGreaterThanOrEqual(CLIENTS.length);
    expect(Object.values(sa.rebinds).reduce((x, y) => x + y) + Object.values(sb.rebinds).reduce((x, y) => x + y)).toBe(0);

    // Raw contents: one item per client, keyed by the keyed hash; values are server addresses only.
    const keys = await m.keys();
    expect(keys).toHaveLength(CLIENTS.length);
    const names = new Map(bs.map((x) => [x.address, x.name]));
    const raw: string[] = [await memcachedCommand(m.port, 'lru_crawler metadump all')];
    for (const k of keys) {
      expect(k).toMatch(KEY_PATTERN);
      const got = await memcachedCommand(m.port, `get ${k}`);
      raw.push(got);
      const value = /^VALUE \S+ \d+ \d+\r\n([^\r]*)\r\n/.exec(got)![1]!;
      expect(names.has(value), value).toBe(true);
    }
    const slabs = await memcachedCommand(m.port, 'stats items');
    for (const id of new Set([...slabs.matchAll(/STAT items:(\d+):/g)].map((x) => x[1]))) {
      raw.push(await memcachedCommand(m.port, `stats cachedump ${id} 0`));
    }
    const dump = raw.join('\n');
    for (const from of CLIENTS) {
      expect(dump).not.toContain(from);
      expect(dump).not.toContain(from.split('.').map((x) => x.padStart(3, '0')).join('.'));
      expect(dump).not.toContain(Buffer.from(from).toString('base64'));
    }

    // Metrics and access log say learned / bound.
    const metrics = parseMetrics((await request(`http://127.0.0.1:${a.adminPort}/metrics`)).body);
    expect(sum(metrics, 'sessionlb_sticky_lookups_total', { upstream: 'pool' })).toBe(60);
    const lines = [...await logLines(a), ...await logLines(b)];
    expect(lines).toHaveLength(120);
    expect(lines.filter((l) => l.sticky === 'learned')).toHaveLength(CLIENTS.length);
    expect(lines.filter((l) => l.sticky === 'bound')).toHaveLength(120 - CLIENTS.length);
  });

  it('two sessionlb processes (one with two workers): each client address keeps its backend over 20 connections split between them', async () => {
    const m = await memcached();
    const bs = await Promise.all(['b1', 'b2', 'b3'].map((n) => tcpBackend(n)));
    const ports = [await freePort(), await freePort()];
    for (const [i, port] of ports.entries()) {
      const file = writeConfig({
        workers: i === 0 ? 1 : 2,
        sessionStore: { ...STORE, servers: [m.address] },
        streams: [{ listen: [`127.0.0.1:${port}`], proxyPass: 'pool' }],
        upstreams: { pool: { sticky: STICKY, servers: bs.map((b) => ({ address: b.address })) } },
      });
      const child = await startProxyProcess(file, port);
      cleanups.push(() => child.kill());
    }
    const seen = await Promise.all(CLIENTS.map((from, i) => connections(i % 2 === 0 ? ports : [...ports].reverse(), from, 20)));
    seen.forEach((names, i) => expect(new Set(names).size, `${CLIENTS[i]}: ${names.join(' ')}`).toBe(1));
    expect(new Set(seen.map((n) => n[0])).size).toBeGreaterThan(1);
    for (const k of await m.keys()) expect(k).toMatch(KEY_PATTERN);
    // The clients', and 127.0.0.1's (startProxyProcess's readiness probes). Counted by `stats`: the
    // LRU crawler's metadump may leave out items while the machine is busy.
    const items = Number((await m.stats()).curr_items);
    expect(items).toBeGreaterThanOrEqual(CLIENTS.length);
    expect(items).toBeLessThanOrEqual(CLIENTS.length + 1);
  });

  it('a new binding is in memcached before the first byte passes: another instance finds it at once, even over a slow path', async () => {
    const m = await memcached();
    // Instance A reaches memcached through a relay that holds every command for 150 ms; B reaches it directly.
    const slow = await startDelayRelay(m.port, 150);
    cleanups.push(() => slow.close());
    const bs = await Promise.all(['b1', 'b2'].map((n) => tcpBackend(n)));
    const a = await startStreamLB(bs, STICKY, { ...STORE, timeout: '2s', servers: [slow.address] });
    const b = await startStreamLB(bs, STICKY, { ...STORE, timeout: '2s', servers: [m.address] });
    // B's round robin is one step ahead of A's: a client B does not find goes to the other backend.
    await nameFrom(b.port, '127.0.0.9');
    for (const from of CLIENTS) {
      const started = performance.now();
      const first = await nameFrom(a.port, from);
      expect(performance.now() - started).toBeGreaterThanOrEqual(280); // the lookup, then the write, each through the relay
      expect(await nameFrom(b.port, from), from).toBe(first);
    }
    expect(b.lb.sessions.stats('pool').lookups.store_hit).toBe(CLIENTS.length);
  });

  /**
   * Three backends behind two instances sharing one memcached; every client's server (the same
   * through both), and the server with the most clients.
   */
  async function twoInstancesWithHomes() {
    const m = await memcached();
    const bs = await Promise.all(['b1', 'b2', 'b3'].map((n) => tcpBackend(n)));
    const store = { ...STORE, servers: [m.address] };
    const a = await startStreamLB(bs, STICKY, store);
    const b = await startStreamLB(bs, STICKY, store);
    const ports = [a.port, b.port];
    const home = new Map<string, string>();
    for (const from of CLIENTS) {
      const names = await connections(ports, from, 2);
      expect(new Set(names).size).toBe(1);
      home.set(from, names[0]!);
    }
    const counts = new Map<string, number>();
    for (const n of home.values()) counts.set(n, (counts.get(n) ?? 0) + 1);
    const busiest = [...counts].sort((x, y) => y[1] - x[1])[0]![0];
    return { bs, a, b, ports, home, busiest };
  }

  it('a killed backend: its clients move to one new server and stay there on both instances; the others do not move', async () => {
    const { bs, a, b, ports, home, busiest: victim } = await twoInstancesWithHomes();
    // The server with the most clients goes.
    await bs.find((x) => x.name === victim)!.kill();
    const moved = CLIENTS.filter((c) => home.get(c) === victim);
    expect(moved.length).toBeGreaterThan(0);

    const after = await Promise.all(CLIENTS.map((from, i) => connections(i % 2 === 0 ? ports : [b.port, a.port], from, 20)));
    after.forEach((names, i) => {
      const from = CLIENTS[i]!;
      expect(names, `${from}: ${names.join(' ')}`).not.toContain('<closed>');
      expect(new Set(names).size, `${from}: ${names.join(' ')}`).toBe(1);
      if (moved.includes(from)) expect(names[0]).not.toBe(victim);
      else expect(names[0], `${from} must not move`).toBe(home.get(from));
    });
    const rebinds = a.lb.sessions.stats('pool').rebinds.failed + b.lb.sessions.stats('pool').rebinds.failed;
    expect(rebinds).toBeGreaterThanOrEqual(moved.length);
    expect(rebinds).toBeLessThanOrEqual(moved.length * 2); // at most once per client per instance
    const metrics = parseMetrics((await request(`http://127.0.0.1:${a.adminPort}/metrics`)).body);
    expect(sum(metrics, 'sessionlb_sticky_rebinds_total', { upstream: 'pool', reason: 'failed' })).toBe(a.lb.sessions.stats('pool').rebinds.failed);
    const lines = [...await logLines(a), ...await logLines(b)];
    expect(lines.filter((l) => l.sticky === 'rebound:failed')).toHaveLength(rebinds);
  });

  it('a drained backend: its clients move to one new server on both instances (L4: a client address has no session to finish); the others do not move', async () => {
    const { bs, a, b, ports, home, busiest: drained } = await twoInstancesWithHomes();
    const address = bs.find((x) => x.name === drained)!.address;
    for (const lb of [a, b]) {
      const r = await request(`http://127.0.0.1:${lb.adminPort}/upstreams/pool/servers/${encodeURIComponent(address)}`, { method: 'PUT', body: '{"state": "drain"}' });
      expect(r.status).toBe(200);
    }
    const moved = CLIENTS.filter((c) => home.get(c) === drained);
    expect(moved.length).toBeGreaterThan(0);
    const after = await Promise.all(CLIENTS.map((from) => connections(ports, from, 10)));
    after.forEach((names, i) => {
      const from = CLIENTS[i]!;
      expect(new Set(names).size, `${from}: ${names.join(' ')}`).toBe(1);
      if (moved.includes(from)) expect(names[0]).not.toBe(drained);
      else expect(names[0], `${from} must not move`).toBe(home.get(from));
    });
    expect(a.lb.sessions.stats('pool').rebinds.drain + b.lb.sessions.stats('pool').rebinds.drain).toBeGreaterThanOrEqual(moved.length);
  });

  it('mask 24 in memcached: two addresses of one /24 are one item and one server on both instances', async () => {
    const m = await memcached();
    const bs = await Promise.all(['b1', 'b2', 'b3'].map((n) => tcpBackend(n)));
    const store = { ...STORE, servers: [m.address] };
    const sticky = { ...STICKY, mask: { ipv4: 24 } };
    const a = await startStreamLB(bs, sticky, store);
    const b = await startStreamLB(bs, sticky, store);
    const first = await connections([a.port, b.port], '127.0.1.2', 10);
    const second = await connections([b.port, a.port], '127.0.1.3', 10);
    expect(new Set([...first, ...second]).size).toBe(1);
    expect(await m.keys()).toHaveLength(1);
  });

  it('memcached stopped: connections keep flowing, known clients keep their server, new ones are balanced', async () => {
    const m = await memcached();
    const bs = await Promise.all(['b1', 'b2', 'b3'].map((n) => tcpBackend(n)));
    const a = await startStreamLB(bs, STICKY, { ...STORE, servers: [m.address], timeout: '100ms', maxFails: 2, failTimeout: '10s' });
    const known = CLIENTS.slice(0, 3);
    const home = new Map<string, string>();
    for (const from of known) home.set(from, (await connections([a.port], from, 1))[0]!);
    await m.kill();
    const started = performance.now();
    for (const from of known) {
      const names = await connections([a.port], from, 10);
      expect(new Set(names), from).toEqual(new Set([home.get(from)]));
    }
    // Unknown clients: the lookup fails (at most `timeout`, then the breaker answers at once) and the policy picks.
    const fresh = await Promise.all(CLIENTS.slice(3).map((from) => connections([a.port], from, 5)));
    for (const names of fresh) {
      expect(names).not.toContain('<closed>');
      expect(new Set(names).size).toBe(1); // bound in the local cache meanwhile
    }
    expect(performance.now() - started).toBeLessThan(5000);
    const stats = a.lb.sessions.stats('pool');
    expect(stats.lookups.store_error).toBeGreaterThan(0);
    expect(a.lb.sessions.store.circuitOpen()).toBe(1);
  });
});

describe('source affinity behind a PROXY protocol peer', () => {
  it('keys on the address the PROXY header carries (the real client), not the proxy\'s', async () => {
    const bs = await Promise.all(['b1', 'b2', 'b3'].map((n) => tcpBackend(n)));
    const lb = await startStreamLB(bs, STICKY, undefined, true);
    /** One connection from 127.0.0.1 announcing `client`: the backend's name. */
    const via = (client: string): Promise<string> => new Promise((resolve, reject) => {
      const s = net.connect({ port: lb.port, host: '127.0.0.1' }, () => s.write(`PROXY TCP4 ${client} 127.0.0.1 40000 ${lb.port}\r\n`));
      let buf = '';
      s.setEncoding('utf8');
      s.on('data', (d: string) => {
        buf += d;
        const nl = buf.indexOf('\n');
        if (nl >= 0) { s.end(); resolve(buf.slice(0, nl)); }
      });
      s.on('error', reject);
    });
    const clients = ['198.51.100.1', '198.51.100.2', '198.51.100.3', '198.51.100.4', '198.51.100.5', '198.51.100.6'];
    const homes = new Map<string, Set<string>>();
    for (let round = 0; round < 5; round++) {
      for (const c of clients) {
        const set = homes.get(c) ?? new Set<string>();
        set.add(await via(c));
        homes.set(c, set);
      }
    }
    // Each announced client keeps one server; together they are spread (all from the one proxy address).
    for (const [c, set] of homes) expect(set.size, c).toBe(1);
    expect(new Set([...homes.values()].map((s) => [...s][0])).size).toBeGreaterThan(1);
    const lines = await logLines(lb);
    expect(lines.filter((l) => l.remote_addr === '198.51.100.1').map((l) => l.sticky)).toEqual(['learned', 'bound', 'bound', 'bound', 'bound']);
  });
});
