/**
 * realIp against real nginx (issue 17): the same realip settings in nginx (set_real_ip_from,
 * real_ip_header, real_ip_recursive, with `proxy_set_header X-Real-IP $remote_addr` and
 * `X-Forwarded-For $proxy_add_x_forwarded_for`, what sessionlb sends by default) and in sessionlb,
 * both in front of the same two backends (`ip_hash` on /, `hash $remote_addr` on /h/) that echo
 * the X-Forwarded-For and X-Real-IP they got. Requests come from a trusted peer (127.0.0.1) and an untrusted one (127.0.0.2) with
 * spoofed chains: recursive on and off, trusted hops inside the chain, garbage, several headers,
 * ports, IPv6. What each backend saw, and which backend it was, must be the same. Then, on
 * sessionlb alone: the access log's remote_addr, X-Forwarded-Proto kept only from a trusted peer,
 * and the real address on a websocket upgrade.
 */
import net from 'node:net';
import http from 'node:http';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { freePort, type Backend } from './helpers/net.js';
import { useScope } from './helpers/scope.js';
import { NGINX, startNginx } from './helpers/nginx.js';
import { waitFor } from './helpers/capture-log.js';

const scope = useScope();
const skip = NGINX === null && process.env.CI !== 'true';

function echo(req: http.IncomingMessage, res: http.ServerResponse, b: Backend): void {
  req.resume();
  req.on('end', () => {
    const body = JSON.stringify({
      backend: b.name, xff: req.headers['x-forwarded-for'] ?? null, realIp: req.headers['x-real-ip'] ?? null,
      proto: req.headers['x-forwarded-proto'] ?? null,
    });
    res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
    res.end(body);
  });
}

/** One request with exactly these header lines, from `localAddress`; the backend's JSON. */
function ask(port: number, localAddress: string, headers: Array<[string, string]>, path = '/'): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port, localAddress });
    const chunks: Buffer[] = [];
    s.on('data', (d: Buffer) => chunks.push(d));
    s.on('error', reject);
    s.on('close', () => {
      const text = Buffer.concat(chunks).toString();
      const at = text.indexOf('\r\n\r\n');
      if (!text.startsWith('HTTP/1.1 200')) reject(new Error(`unexpected response: ${text.slice(0, 200)}`));
      else resolve(JSON.parse(text.slice(at + 4)) as Record<string, unknown>);
    });
    s.write(`GET ${path} HTTP/1.1\r\nHost: x\r\n${headers.map(([n, v]) => `${n}: ${v}\r\n`).join('')}Connection: close\r\n\r\n`);
  });
}

const XFF = 'X-Forwarded-For';
const CASES: Array<Array<[string, string]>> = [
  [],
  [[XFF, '203.0.113.1']],
  [[XFF, '198.51.100.1, 203.0.113.1, 10.0.0.2']],
  [[XFF, '203.0.113.1, 10.0.0.2']],
  [[XFF, '10.9.9.9, 10.0.0.2']],
  [[XFF, 'garbage']],
  [[XFF, '203.0.113.1, junk, 10.0.0.2']],
  [[XFF, '198.51.100.1'], [XFF, '10.0.0.3, 10.0.0.2']],
  [[XFF, 'junk'], [XFF, '10.0.0.2']],
  [[XFF, '198.51.100.1, 203.0.113.1'], [XFF, 'unknown']],
  [[XFF, '[2001:db8::7]:80']],
  [[XFF, '203.0.113.1:4444']],
  [[XFF, '203.0.113.1 ,, ']],
  [[XFF, '::ffff:203.0.113.5']],
  [[XFF, '2001:DB8:0:0::1, 10.0.0.2']],
  [[XFF, '1.2.3.']],
  [[XFF, '192.0.2.44, 127.0.0.1']],
  [['X-Real-IP', '203.0.113.9'], [XFF, '203.0.113.1']],
  [['X-Real-IP', '2001:DB8::1']],
  [['X-Real-IP', '203.0.113.9, 10.0.0.2']],
  [['X-Real-IP', 'bogus']],
];

/** The three realip settings compared: header and recursive. */
const MODES = [
  { header: 'X-Forwarded-For', recursive: false },
  { header: 'X-Forwarded-For', recursive: true },
  { header: 'X-Real-IP', recursive: false },
  { header: 'X-Real-IP', recursive: true },
];
const FROM = ['127.0.0.1', '10.0.0.0/8'];

describe.skipIf(skip)('realIp matches nginx realip', () => {
  it('what the backend sees (X-Forwarded-For, X-Real-IP) and which ip_hash and hash $remote_addr backend, trusted and untrusted peers', async () => {
    const [a, b] = await scope.backends(['a', 'b'], echo);
    const nginxPorts = await Promise.all(MODES.map(() => freePort()));
    const lbPorts = await Promise.all(MODES.map(() => freePort()));
    const servers = MODES.map((m, i) => `
      server {
        listen 127.0.0.1:${nginxPorts[i]};
        ${FROM.map((f) => `set_real_ip_from ${f};`).join(' ')}
        real_ip_header ${m.header};
        real_ip_recursive ${m.recursive ? 'on' : 'off'};
        location / {
          proxy_pass http://b;
          proxy_set_header X-Real-IP $remote_addr;
          proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }
        location /h/ {
          proxy_pass http://h;
          proxy_set_header X-Real-IP $remote_addr;
          proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }
      }`).join('\n');
    const nginx = await startNginx(nginxPorts[MODES.length - 1]!, `
      upstream b { ip_hash; server ${a!.address}; server ${b!.address}; }
      upstream h { hash $remote_addr; server ${a!.address}; server ${b!.address}; }
      ${servers}`);
    scope.cleanup.push(() => nginx.stop());
    await scope.lb({
      servers: MODES.map((m, i) => ({
        listen: [`127.0.0.1:${lbPorts[i]}`],
        realIp: { from: FROM, header: m.header, recursive: m.recursive },
        locations: [{ path: '/', proxyPass: 'http://b' }, { path: '/h/', proxyPass: 'http://h' }],
      })),
      upstreams: {
        b: { balance: 'ip_hash', servers: [{ address: a!.address }, { address: b!.address }] },
        h: { balance: { hash: '$remote_addr' }, servers: [{ address: a!.address }, { address: b!.address }] },
      },
    });
    const mismatches: string[] = [];
    const byRealIp = new Map<string, Set<unknown>>();
    for (let i = 0; i < MODES.length; i++) {
      for (const peer of ['127.0.0.1', '127.0.0.2']) {
        for (const headers of CASES) {
          const ours = await ask(lbPorts[i]!, peer, headers);
          const theirs = await ask(nginxPorts[i]!, peer, headers);
          delete ours.proto;
          delete theirs.proto;
          // A documented difference: ip_hash and hash read an IPv4-mapped address as its IPv4 one
          // (nginx hashes all 16 bytes); the headers are the same.
          if (JSON.stringify(headers).includes('::ffff:')) { delete ours.backend; delete theirs.backend; }
          if (JSON.stringify(ours) !== JSON.stringify(theirs)) {
            mismatches.push(`${JSON.stringify(MODES[i])} from ${peer} with ${JSON.stringify(headers)}: sessionlb ${JSON.stringify(ours)}, nginx ${JSON.stringify(theirs)}`);
          }
          const real = String(ours.realIp);
          // hash $remote_addr: the same server as nginx's for the same real address.
          const hashed = await ask(lbPorts[i]!, peer, headers, '/h/');
          const nginxHashed = await ask(nginxPorts[i]!, peer, headers, '/h/');
          if (hashed.backend !== nginxHashed.backend && !JSON.stringify(headers).includes('::ffff:')) {
            mismatches.push(`hash $remote_addr ${JSON.stringify(MODES[i])} from ${peer} with ${JSON.stringify(headers)}: sessionlb ${String(hashed.backend)}, nginx ${String(nginxHashed.backend)}`);
          }
          if (ours.backend === undefined) continue;
          if (!byRealIp.has(real)) byRealIp.set(real, new Set());
          byRealIp.get(real)!.add(ours.backend);
        }
      }
    }
    expect(mismatches).toEqual([]);
    // ip_hash pins by the real address: one backend per real address, and real addresses behind
    // the one trusted peer spread over both backends.
    for (const [real, backends] of byRealIp) expect(backends.size, real).toBe(1);
    expect(new Set([...byRealIp.values()].map((s) => [...s][0])).size).toBe(2);
  });
});

describe('realIp on sessionlb', () => {
  it('the access log has the real address; X-Forwarded-Proto is kept from a trusted peer only', async () => {
    const backend = await scope.backend('a', echo);
    const port = await freePort();
    const dir = await mkdtemp(join(tmpdir(), 'sessionlb-realip-'));
    scope.cleanup.push(() => rm(dir, { recursive: true, force: true }));
    const logFile = join(dir, 'access.log');
    await scope.lb({
      servers: [{ listen: [`127.0.0.1:${port}`], locations: [{ path: '/', proxyPass: 'http://backend' }] }],
      upstreams: { backend: { servers: [{ address: backend.address }] } },
      realIp: { from: ['127.0.0.1'], header: 'X-Forwarded-For', recursive: true },
      accessLog: { path: logFile },
    });
    const trusted = await ask(port, '127.0.0.1', [[XFF, '203.0.113.7'], ['X-Forwarded-Proto', 'https']]);
    expect(trusted).toMatchObject({ xff: '203.0.113.7, 203.0.113.7', realIp: '203.0.113.7', proto: 'https' });
    const untrusted = await ask(port, '127.0.0.2', [[XFF, '203.0.113.7'], ['X-Forwarded-Proto', 'https']]);
    expect(untrusted).toMatchObject({ xff: '203.0.113.7, 127.0.0.2', realIp: '127.0.0.2', proto: 'http' });
    const plain = await ask(port, '127.0.0.1', []);
    expect(plain).toMatchObject({ xff: '127.0.0.1', realIp: '127.0.0.1', proto: 'http' });
    expect(await waitFor(async () => (await readFile(logFile, 'utf8').catch(() => '')).split('\n').filter(Boolean).length >= 3)).toBe(true);
    const lines = (await readFile(logFile, 'utf8')).split('\n').filter(Boolean).map((l) => JSON.parse(l) as { remote_addr: string });
    expect(lines.map((l) => l.remote_addr)).toEqual(['203.0.113.7', '127.0.0.2', '127.0.0.1']);
  });

  it('an upgrade (websocket) request carries the real address upstream', async () => {
    const backend = await scope.backend('a', echo);
    backend.server.on('upgrade', (req: http.IncomingMessage, socket: net.Socket) => {
      socket.end(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Seen-For: ${String(req.headers['x-forwarded-for'])}\r\nX-Seen-Real-IP: ${String(req.headers['x-real-ip'])}\r\n\r\n`);
    });
    const port = await freePort();
    await scope.lb({
      servers: [{ listen: [`127.0.0.1:${port}`], realIp: { from: ['127.0.0.1'], header: 'X-Forwarded-For' }, locations: [{ path: '/', proxyPass: 'http://backend' }] }],
      upstreams: { backend: { servers: [{ address: backend.address }] } },
    });
    const head = await new Promise<string>((resolve) => {
      const s = net.connect({ host: '127.0.0.1', port });
      let text = '';
      s.on('data', (d: Buffer) => { text += d.toString(); });
      s.on('error', () => undefined);
      s.on('close', () => resolve(text));
      s.write('GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Forwarded-For: 198.51.100.3\r\n\r\n');
    });
    expect(head).toMatch(/^HTTP\/1\.1 101/);
    expect(head).toMatch(/X-Seen-For: 198\.51\.100\.3, 198\.51\.100\.3\r\n/i);
    expect(head).toMatch(/X-Seen-Real-IP: 198\.51\.100\.3\r\n/i);
  });

  it('a 404 (no location) is logged with the real address too', async () => {
    const backend = await scope.backend('a', echo);
    const port = await freePort();
    const dir = await mkdtemp(join(tmpdir(), 'sessionlb-realip-'));
    scope.cleanup.push(() => rm(dir, { recursive: true, force: true }));
    const logFile = join(dir, 'access.log');
    await scope.lb({
      servers: [{ listen: [`127.0.0.1:${port}`], realIp: { from: ['127.0.0.0/8'] }, locations: [{ path: '/app/', proxyPass: 'http://backend' }] }],
      upstreams: { backend: { servers: [{ address: backend.address }] } },
      accessLog: { path: logFile },
    });
    await new Promise<void>((resolve) => {
      const s = net.connect({ host: '127.0.0.1', port });
      s.on('data', () => undefined);
      s.on('close', () => resolve());
      s.end('GET /nope HTTP/1.1\r\nHost: x\r\nX-Real-IP: 198.51.100.4\r\nConnection: close\r\n\r\n');
    });
    expect(await waitFor(async () => (await readFile(logFile, 'utf8').catch(() => '')).includes('remote_addr'))).toBe(true);
    expect(JSON.parse((await readFile(logFile, 'utf8')).split('\n')[0]!)).toMatchObject({ remote_addr: '198.51.100.4', status: 404 });
  });
});

describe.skipIf(skip)('realIp "proxy_protocol" matches nginx', () => {
  it('the PROXY header\'s source from a trusted peer, without proxyProtocolFrom; sessionlb closes other peers', async () => {
    const backend = await scope.backend('a', echo);
    const nginxPort = await freePort();
    const lbPort = await freePort();
    const nginx = await startNginx(nginxPort, `
      server {
        listen 127.0.0.1:${nginxPort} proxy_protocol;
        set_real_ip_from 127.0.0.1;
        real_ip_header proxy_protocol;
        location / {
          proxy_pass http://${backend.address};
          proxy_set_header X-Real-IP $remote_addr;
          proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }
      }`);
    scope.cleanup.push(() => nginx.stop());
    await scope.lb({
      servers: [{
        listen: [`127.0.0.1:${lbPort} proxy_protocol`], realIp: { from: ['127.0.0.1'], header: 'proxy_protocol' },
        locations: [{ path: '/', proxyPass: 'http://backend' }],
      }],
      upstreams: { backend: { servers: [{ address: backend.address }] } },
    });
    const send = (port: number, localAddress: string, proxy: string, xff: string): Promise<string> => new Promise((resolve) => {
      const s = net.connect({ host: '127.0.0.1', port, localAddress });
      const chunks: Buffer[] = [];
      s.on('data', (d: Buffer) => chunks.push(d));
      s.on('error', () => undefined);
      s.on('close', () => {
        const text = Buffer.concat(chunks).toString();
        resolve(text.startsWith('HTTP/1.1 200') ? text.slice(text.indexOf('\r\n\r\n') + 4) : `closed: ${text.slice(0, 40)}`);
      });
      s.write(`${proxy}GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: ${xff}\r\nConnection: close\r\n\r\n`);
    });
    for (const [src, xff] of [['203.0.113.7', '198.51.100.1'], ['2001:db8::9', '10.0.0.1, 192.0.2.1']] as const) {
      const header = `PROXY ${src.includes(':') ? 'TCP6' : 'TCP4'} ${src} ${src.includes(':') ? '::1' : '127.0.0.1'} 40000 80\r\n`;
      const ours = JSON.parse(await send(lbPort, '127.0.0.1', header, xff)) as Record<string, unknown>;
      const theirs = JSON.parse(await send(nginxPort, '127.0.0.1', header, xff)) as Record<string, unknown>;
      delete ours.proto; // nginx sends none unless told
      delete theirs.proto;
      expect(ours).toEqual(theirs);
      expect(ours).toMatchObject({ realIp: src, xff: `${xff}, ${src}` });
    }
    // nginx keeps 127.0.0.2 as the client; sessionlb does not let it send a PROXY header at all.
    expect(await send(lbPort, '127.0.0.2', 'PROXY TCP4 203.0.113.7 127.0.0.1 40000 80\r\n', '1.1.1.1')).toBe('closed: ');
  });
});
