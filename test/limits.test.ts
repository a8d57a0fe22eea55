/**
 * limit_req and limit_conn end to end (issue 17): the same zones and limits in real nginx and in
 * sessionlb, in front of the same backend, with the same request schedule; the statuses must be
 * the same. Then sessionlb alone: delays (lower bounds only: a delay is the feature), dry run and
 * the metrics, limit_conn held by a WebSocket-style upgrade until it closes, zones held across
 * cluster workers, and `"shared": true` across two instances through a real memcached, and with
 * memcached killed (each instance limits alone, no request fails).
 */
import http from 'node:http';
import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { freePort, type Backend } from './helpers/net.js';
import { useScope } from './helpers/scope.js';
import { NGINX, startNginx } from './helpers/nginx.js';
import { memcachedAvailable, startMemcached } from './helpers/memcached.js';
import { scrape, sum } from './helpers/prom.js';
import { startProxyProcess, writeConfig } from './helpers/child.js';
import { loadConfigText } from '../src/config/load.js';

const scope = useScope();
const skipNginx = NGINX === null && process.env.CI !== 'true';
const skipMemcached = !memcachedAvailable() && process.env.CI !== 'true';

function hello(req: http.IncomingMessage, res: http.ServerResponse, b: Backend): void {
  req.resume();
  req.on('end', () => res.end(b.name));
}

/** One GET on a fresh connection: status and how long it took. */
function get(port: number, path: string, localAddress = '127.0.0.1'): Promise<{ status: number; ms: number }> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path, localAddress, agent: false, headers: { Host: 'x' } }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, ms: performance.now() - t0 }));
    }).on('error', reject);
  });
}

/** Batches of requests sent one after another, `pauses[i]` ms after batch i: the statuses, batch by batch. */
async function schedule(port: number, path: string, batches: number[], pauses: number[]): Promise<number[][]> {
  const out: number[][] = [];
  for (let i = 0; i < batches.length; i++) {
    const statuses: number[] = [];
    for (let k = 0; k < batches[i]!; k++) statuses.push((await get(port, path)).status);
    out.push(statuses);
    if (pauses[i] !== undefined) await new Promise((r) => setTimeout(r, pauses[i]));
  }
  return out;
}

describe.skipIf(skipNginx)('limit_req and limit_conn match nginx', () => {
  it('limit_req burst/nodelay sequences, limit_req_status, and limit_conn with a request in progress', async () => {
    let release: () => void = () => undefined;
    let held = 0;
    const backend = await scope.backend('b', (req, res, b) => {
      req.resume();
      if (req.url === '/conn/slow') {
        held++;
        release = () => res.end('slow');
        return;
      }
      req.on('end', () => res.end(b.name));
    });
    const [nginxPort, lbPort] = await Promise.all([freePort(), freePort()]);
    const nginx = await startNginx(nginxPort, `
      limit_req_zone $binary_remote_addr zone=one:1m rate=1r/s;
      limit_req_zone $binary_remote_addr zone=two:1m rate=1r/s;
      limit_req_zone $server_name zone=slow:1m rate=30r/m;
      limit_conn_zone $binary_remote_addr zone=addr:1m;
      upstream b { server ${backend.address}; }
      server {
        listen 127.0.0.1:${nginxPort};
        server_name x;
        location /nodelay/ { limit_req zone=one burst=2 nodelay; proxy_pass http://b; }
        location /status/ { limit_req zone=two nodelay; limit_req_status 429; proxy_pass http://b; }
        location /minute/ { limit_req zone=slow burst=1 nodelay; proxy_pass http://b; }
        location /conn/ { limit_conn addr 1; proxy_pass http://b; }
      }`);
    scope.cleanup.push(() => nginx.stop());
    await scope.lb({
      servers: [{
        listen: [`127.0.0.1:${lbPort}`], serverName: ['x'],
        locations: [
          { path: '/nodelay/', proxyPass: 'http://b', limitReq: { zone: 'one', burst: 2, nodelay: true } },
          { path: '/status/', proxyPass: 'http://b', limitReq: { zone: 'two', nodelay: true }, limitReqStatus: 429 },
          { path: '/minute/', proxyPass: 'http://b', limitReq: { zone: 'slow', burst: 1, nodelay: true } },
          { path: '/conn/', proxyPass: 'http://b', limitConn: { zone: 'addr', conn: 1 } },
        ],
      }],
      upstreams: { b: { servers: [{ address: backend.address }] } },
      limitReqZones: {
        one: { key: '$binary_remote_addr', rate: '1r/s', size: '1m' },
        two: { key: '$binary_remote_addr', rate: '1r/s', size: '1m' },
        slow: { key: '$server_name', rate: '30r/m', size: '1m' },
      },
      limitConnZones: { addr: { key: '$binary_remote_addr', size: '1m' } },
    });
    // Rates of 1r/s and 30r/m: a batch decides the same whether it takes 5 ms or 500 (a busy CI
    // machine), and each pause either drains a bucket completely or not at all.
    for (const [path, batches, pauses] of [
      ['/nodelay/', [6, 4, 1], [2500, 1500]],
      ['/status/', [3, 2], [1500]],
      ['/minute/', [4], []],
    ] as Array<[string, number[], number[]]>) {
      const theirs = await schedule(nginxPort, path, batches, pauses);
      const ours = await schedule(lbPort, path, batches, pauses);
      expect(ours, `${path}: nginx ${JSON.stringify(theirs)}`).toEqual(theirs);
    }
    // limit_conn: one request in progress per address; a second is refused until it ends.
    for (const port of [nginxPort, lbPort]) {
      const before = held;
      const slow = get(port, '/conn/slow');
      while (held === before) await new Promise((r) => setTimeout(r, 5));
      expect((await get(port, '/conn/fast')).status).toBe(503);
      expect((await get(port, '/conn/fast', '127.0.0.2')).status).toBe(200); // another address
      release();
      expect((await slow).status).toBe(200);
      expect((await get(port, '/conn/fast')).status).toBe(200);
    }
  });
});

describe('limits in sessionlb', () => {
  it('delays the burst (delay=N lets the first N through at once), refuses beyond it; dry run only counts; metrics by zone and status', async () => {
    const backend = await scope.backend('b', hello);
    const lb = await scope.lb({
      upstreams: { backend: { servers: [{ address: backend.address }] } },
      limitReqZones: { one: { key: '$binary_remote_addr', rate: '2r/s' }, dry: { key: '$remote_addr', rate: '1r/m' } },
      servers: [{
        listen: [`127.0.0.1:${await freePort()}`],
        locations: [
          { path: '/', proxyPass: 'http://backend', limitReq: { zone: 'one', burst: 3, delay: 1 } },
          { path: '/dry/', proxyPass: 'http://backend', limitReq: { zone: 'dry' }, limitReqDryRun: true },
        ],
      }],
    });
    const port = lb.lb.addresses().values().next().value!;
    // Sent together: 1 passes, 1 more within delay=1 passes at once, 2 wait (about 500 and 1000 ms), 1 is refused.
    const results = await Promise.all([0, 1, 2, 3, 4].map(() => get(port, '/')));
    const statuses = results.map((r) => r.status).sort();
    expect(statuses).toEqual([200, 200, 200, 200, 503]);
    const times = results.filter((r) => r.status === 200).map((r) => r.ms).sort((a, b) => a - b);
    expect(times[2]).toBeGreaterThanOrEqual(400);
    expect(times[3]).toBeGreaterThanOrEqual(900);
    // Dry run: nothing refused, the refusals counted.
    const dry = await Promise.all([0, 1, 2].map(() => get(port, '/dry/x')));
    expect(dry.map((r) => r.status)).toEqual([200, 200, 200]);
    const m = await scrape(lb.adminPort);
    expect(sum(m, 'sessionlb_limit_req_total', { zone: 'one', status: 'passed' })).toBe(2);
    expect(sum(m, 'sessionlb_limit_req_total', { zone: 'one', status: 'delayed' })).toBe(2);
    expect(sum(m, 'sessionlb_limit_req_total', { zone: 'one', status: 'rejected' })).toBe(1);
    expect(sum(m, 'sessionlb_limit_req_total', { zone: 'dry', status: 'passed' })).toBe(1);
    expect(sum(m, 'sessionlb_limit_req_total', { zone: 'dry', status: 'rejected_dry_run' })).toBe(2);
    expect(sum(m, 'sessionlb_limit_zone_keys', { zone: 'one', type: 'req' })).toBe(1);
  });

  it('a client that leaves while its request waits is never forwarded', async () => {
    let hits = 0;
    const backend = await scope.backend('b', (req, res) => { hits++; req.resume(); res.end('x'); });
    const lb = await scope.lb({
      upstreams: { backend: { servers: [{ address: backend.address }] } },
      limitReqZones: { one: { key: '$binary_remote_addr', rate: '1r/s' } },
      servers: [{ listen: [`127.0.0.1:${await freePort()}`], locations: [{ path: '/', proxyPass: 'http://backend', limitReq: { zone: 'one', burst: 5 } }] }],
    });
    const port = lb.lb.addresses().values().next().value!;
    expect((await get(port, '/')).status).toBe(200);
    // The next one waits about a second: the client gives up after 100 ms.
    await new Promise<void>((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => s.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
      setTimeout(() => { s.destroy(); resolve(); }, 100);
    });
    await new Promise((r) => setTimeout(r, 1300));
    expect(hits).toBe(1);
  });

  it('limit_conn counts an upgraded connection until it closes; the count is released', async () => {
    const backend = await scope.backend('b', hello);
    backend.server.on('upgrade', (_req: http.IncomingMessage, socket: net.Socket) => {
      socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n');
      socket.on('data', (d) => socket.write(d));
      socket.on('end', () => socket.end());
      socket.on('error', () => socket.destroy());
    });
    const lb = await scope.lb({
      upstreams: { backend: { servers: [{ address: backend.address }] } },
      limitConnZones: { addr: { key: '$binary_remote_addr' } },
      servers: [{ listen: [`127.0.0.1:${await freePort()}`], locations: [{ path: '/', proxyPass: 'http://backend', limitConn: { zone: 'addr', conn: 1 } }] }],
    });
    const port = lb.lb.addresses().values().next().value!;
    const upgrade = (): Promise<{ socket: net.Socket; head: string }> => new Promise((resolve, reject) => {
      const socket = net.connect(port, '127.0.0.1', () => socket.write('GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n'));
      socket.once('data', (d: Buffer) => resolve({ socket, head: d.toString() }));
      socket.on('error', reject);
    });
    const first = await upgrade();
    expect(first.head).toMatch(/^HTTP\/1\.1 101/);
    expect((await get(port, '/')).status).toBe(503);
    const second = await upgrade();
    expect(second.head).toMatch(/^HTTP\/1\.1 503/);
    second.socket.destroy();
    first.socket.destroy();
    const deadline = Date.now() + 5000;
    let status = 0;
    while (Date.now() < deadline && (status = (await get(port, '/')).status) !== 200) await new Promise((r) => setTimeout(r, 20));
    expect(status).toBe(200);
  });

  it('limit_conn: a keep-alive connection\'s next request is not counted against its finished one', async () => {
    const backend = await scope.backend('b', hello);
    const lb = await scope.lb({
      upstreams: { backend: { servers: [{ address: backend.address }] } },
      limitConnZones: { addr: { key: '$binary_remote_addr' } },
      servers: [{ listen: [`127.0.0.1:${await freePort()}`], locations: [{ path: '/', proxyPass: 'http://backend', limitConn: { zone: 'addr', conn: 1 } }] }],
    });
    const port = lb.lb.addresses().values().next().value!;
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    scope.cleanup.push(async () => agent.destroy());
    const sockets = new Set<net.Socket>();
    const statuses: number[] = [];
    for (let i = 0; i < 5; i++) {
      statuses.push(await new Promise<number>((resolve, reject) => {
        http.get({ host: '127.0.0.1', port, path: '/', agent }, (res) => {
          sockets.add(res.socket as net.Socket);
          res.resume();
          res.on('end', () => resolve(res.statusCode ?? 0));
        }).on('error', reject);
      }));
    }
    expect(statuses).toEqual([200, 200, 200, 200, 200]);
    expect(sockets.size).toBe(1);
  });

  it('check refuses an unknown zone, a zone twice, nodelay with delay, a small zone, and shared without memcached', async () => {
    const text = JSON.stringify({
      upstreams: { b: { servers: [{ address: '127.0.0.1:9' }] } },
      limitReqZones: { one: { key: '$binary_remote_addr', rate: '1r/s', size: '16k', shared: true }, bad: { key: '$nope', rate: '1r/s' } },
      servers: [{
        listen: ['127.0.0.1:1'],
        locations: [
          { path: '/a/', proxyPass: 'http://b', limitReq: [{ zone: 'one' }, { zone: 'one' }] },
          { path: '/b/', proxyPass: 'http://b', limitReq: { zone: 'none' }, limitConn: { zone: 'none', conn: 1 } },
          { path: '/c/', proxyPass: 'http://b', limitReq: { zone: 'one', nodelay: true, delay: 2 } },
        ],
      }],
    });
    const err = await loadConfigText(text, '/etc/sessionlb.json').then(() => null, (e: Error) => e.message);
    expect(err).toContain('$.limitReqZones.one.size: is too small');
    expect(err).toContain('$.limitReqZones.one.shared: needs a memcached sessionStore');
    expect(err).toContain('$.limitReqZones.bad.key: unknown variable "$nope"');
    expect(err).toContain('$.servers[0].locations[0].limitReq[1].zone: zone "one" is used twice');
    expect(err).toContain('$.servers[0].locations[1].limitReq.zone: no limitReqZones entry named "none"');
    expect(err).toContain('$.servers[0].locations[1].limitConn.zone: no limitConnZones entry named "none"');
    expect(err).toContain('$.servers[0].locations[2].limitReq: "nodelay" and "delay" do not go together');
  });
});

describe('limits across processes', () => {
  it('workers: 2 — one zone for both workers: a burst of 2 lets exactly 3 requests through in all', async () => {
    const backend = await scope.backend('b', hello);
    const port = await freePort();
    const adminPort = await freePort();
    const file = writeConfig({
      workers: 2,
      admin: { listen: `127.0.0.1:${adminPort}` },
      upstreams: { b: { servers: [{ address: backend.address }] } },
      limitReqZones: { one: { key: '$binary_remote_addr', rate: '1r/m' } },
      servers: [{ listen: [`127.0.0.1:${port}`], locations: [{ path: '/', proxyPass: 'http://b', limitReq: { zone: 'one', burst: 2, nodelay: true } }] }],
    });
    const proxy = await startProxyProcess(file, port);
    scope.cleanup.push(() => proxy.kill());
    // Until both workers have taken requests (bounded): each on a new connection.
    const statuses: number[] = [];
    for (let i = 0; i < 200; i++) {
      statuses.push((await get(port, '/')).status);
      if (i < 10) continue;
      const status = await new Promise<{ workers: Array<{ requests: number }> }>((resolve, reject) => {
        http.get(`http://127.0.0.1:${adminPort}/status`, (res) => {
          let body = '';
          res.on('data', (d: Buffer) => { body += d.toString(); });
          res.on('end', () => resolve(JSON.parse(body) as { workers: Array<{ requests: number }> }));
        }).on('error', reject);
      });
      if (status.workers.length === 2 && status.workers.every((w) => w.requests > 0)) break;
    }
    expect(statuses.filter((s) => s === 200)).toHaveLength(3);
    expect(statuses.filter((s) => s !== 200 && s !== 503)).toEqual([]);
  });

  describe.skipIf(skipMemcached)('"shared": true through memcached', () => {
    it('two instances count in one bucket; memcached killed: each limits alone, nothing fails, the fallback is counted', async () => {
      const memcached = await startMemcached();
      scope.cleanup.push(() => memcached.kill());
      const backend = await scope.backend('b', hello);
      const config = {
        upstreams: { backend: { servers: [{ address: backend.address }] } },
        // A generous timeout: on a loaded machine a slow answer must not count as memcached failing.
        sessionStore: { type: 'memcached', servers: [memcached.address], hashKey: 'a-shared-test-secret-0123456789', timeout: '2s' },
        limitReqZones: { one: { key: '$binary_remote_addr', rate: '1r/m', shared: true } },
      };
      const location = { path: '/', proxyPass: 'http://backend', limitReq: { zone: 'one', burst: 3, nodelay: true } };
      const a = await scope.lb({ ...config, servers: [{ listen: [`127.0.0.1:${await freePort()}`], locations: [location] }] });
      const b = await scope.lb({ ...config, servers: [{ listen: [`127.0.0.1:${await freePort()}`], locations: [location] }] });
      const portA = a.lb.addresses().values().next().value!;
      const portB = b.lb.addresses().values().next().value!;
      const statuses: number[] = [];
      for (let i = 0; i < 10; i++) statuses.push((await get(i % 2 === 0 ? portA : portB, '/')).status);
      // burst 3: 4 in all, whichever instance took them (every decision made in memcached).
      const fallbacks = async (): Promise<number> => sum(await scrape(a.adminPort), 'sessionlb_limit_req_shared_fallbacks_total')
        + sum(await scrape(b.adminPort), 'sessionlb_limit_req_shared_fallbacks_total');
      expect(await fallbacks()).toBe(0);
      expect(statuses.filter((s) => s === 200)).toHaveLength(4);
      expect(statuses.filter((s) => s !== 200 && s !== 503)).toEqual([]);
      // The bucket is in memcached under a digest: no client address in clear.
      const keys = await memcached.keys();
      expect(keys.some((k) => k.includes('lr:'))).toBe(true);
      expect(keys.join(' ')).not.toContain('127.0.0.1');
      // memcached gone: the requests keep flowing, each instance limits on its own (its own zone is fresh).
      await memcached.kill();
      const after: number[] = [];
      for (let i = 0; i < 12; i++) after.push((await get(i % 2 === 0 ? portA : portB, '/')).status);
      expect(after.filter((s) => s !== 200 && s !== 503)).toEqual([]);
      expect(after.filter((s) => s === 200)).toHaveLength(8); // 4 per instance
      const unavailable = sum(await scrape(a.adminPort), 'sessionlb_limit_req_shared_fallbacks_total', { zone: 'one', reason: 'unavailable' })
        + sum(await scrape(b.adminPort), 'sessionlb_limit_req_shared_fallbacks_total', { zone: 'one', reason: 'unavailable' });
      expect(unavailable).toBeGreaterThanOrEqual(12);
    });
  });
});
