/**
 * The PROXY protocol on real sockets (issue 18): accepted on HTTP, ssl and stream listen
 * addresses from `proxyProtocolFrom` only (127.0.0.1 allowed; 127.0.0.2 as the client's own
 * address is not), its source address in X-Forwarded-For and the access log, malformed and
 * missing headers closed and counted; sent to stream servers (`proxyProtocol`, v1) and HTTP
 * servers (`sendProxy` v1/v2), checked byte for byte by raw TCP backends.
 */
import net from 'node:net';
import tls from 'node:tls';
import http from 'node:http';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { buildProxyV1, buildProxyV2 } from '../src/net/proxy-protocol.js';
import { loadConfig } from '../src/config/load.js';
import { ConfigError } from '../src/config/model.js';
import { freePort, type Backend } from './helpers/net.js';
import { useScope } from './helpers/scope.js';
import { scrapeUntil, sum } from './helpers/prom.js';
import { waitFor } from './helpers/capture-log.js';
import { TestPki } from './helpers/tls-certs.js';

const scope = useScope();
const pki = new TestPki();
afterAll(() => pki.remove());

/** An HTTP backend that answers with the X-Forwarded-For and X-Real-IP it got. */
function echoForwarded(req: http.IncomingMessage, res: http.ServerResponse, b: Backend): void {
  req.resume();
  req.on('end', () => {
    const body = JSON.stringify({ xff: req.headers['x-forwarded-for'] ?? null, realIp: req.headers['x-real-ip'] ?? null, backend: b.name });
    res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
    res.end(body);
  });
}

/** Writes `first` then `rest` on a new connection (from `localAddress`), reads until the server closes. */
function exchange(port: number, bytes: Buffer | string, opts: { localAddress?: string; end?: boolean } = {}): Promise<{ data: string; closed: 'end' | 'reset' }> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port, localAddress: opts.localAddress });
    const chunks: Buffer[] = [];
    s.on('data', (d: Buffer) => chunks.push(d));
    s.on('error', () => undefined);
    s.on('close', (hadError) => resolve({ data: Buffer.concat(chunks).toString('latin1'), closed: hadError ? 'reset' : 'end' }));
    s.write(bytes);
    if (opts.end === true) s.end();
  });
}

const GET = 'GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n';

async function httpLB(extra: Record<string, unknown> = {}, listenParams = 'proxy_protocol') {
  const b = await scope.backend('b1', echoForwarded);
  const port = await freePort();
  const dir = await mkdtemp(join(tmpdir(), 'sessionlb-pp-'));
  scope.cleanup.push(() => rm(dir, { recursive: true, force: true }));
  const logFile = join(dir, 'access.log');
  const r = await scope.lb({
    servers: [{ listen: [`127.0.0.1:${port} ${listenParams}`], locations: [{ path: '/', proxyPass: 'http://backend' }] }],
    upstreams: { backend: { servers: [{ address: b.address }] } },
    proxyProtocolFrom: ['127.0.0.1/32'],
    accessLog: { path: logFile },
    ...extra,
  });
  return { port, logFile, adminPort: r.adminPort };
}

describe('accepting the PROXY protocol', () => {
  it('HTTP: a v1 header from an allowed address gives its source to X-Forwarded-For, X-Real-IP and the access log', async () => {
    const { port, logFile } = await httpLB();
    const v1 = await exchange(port, `PROXY TCP4 203.0.113.7 127.0.0.1 40000 ${port}\r\n${GET}`);
    expect(v1.data).toMatch(/^HTTP\/1\.1 200/);
    expect(JSON.parse(v1.data.slice(v1.data.indexOf('\r\n\r\n') + 4))).toMatchObject({ xff: '203.0.113.7', realIp: '203.0.113.7' });
    // v2, split across two writes, IPv6 source.
    const header = buildProxyV2({ address: '2001:db8::42', port: 1234 }, { address: '::1', port });
    const v2 = await new Promise<string>((resolve) => {
      const s = net.connect({ host: '127.0.0.1', port });
      const chunks: Buffer[] = [];
      s.on('data', (d: Buffer) => chunks.push(d));
      s.on('close', () => resolve(Buffer.concat(chunks).toString()));
      s.write(header.subarray(0, 10));
      setTimeout(() => s.write(Buffer.concat([header.subarray(10), Buffer.from(GET)])), 50);
    });
    expect(JSON.parse(v2.slice(v2.indexOf('\r\n\r\n') + 4))).toMatchObject({ xff: '2001:db8::42' });
    // LOCAL: the connection's own address.
    const local = await exchange(port, Buffer.concat([Buffer.from('0d0a0d0a000d0a515549540a20000000', 'hex'), Buffer.from(GET)]));
    expect(JSON.parse(local.data.slice(local.data.indexOf('\r\n\r\n') + 4))).toMatchObject({ xff: '127.0.0.1' });
    expect(await waitFor(async () => (await readFile(logFile, 'utf8').catch(() => '')).split('\n').filter(Boolean).length >= 3)).toBe(true);
    const lines = (await readFile(logFile, 'utf8')).split('\n').filter(Boolean).map((l) => JSON.parse(l) as { remote_addr: string });
    expect(lines.map((l) => l.remote_addr).sort()).toEqual(['127.0.0.1', '2001:db8::42', '203.0.113.7']);
  });

  it('HTTP: refuses a client outside proxyProtocolFrom, a malformed header and a missing one; counts each', async () => {
    const { port, adminPort } = await httpLB();
    const header = `PROXY TCP4 203.0.113.7 127.0.0.1 40000 ${port}\r\n`;
    const refused = await exchange(port, `${header}${GET}`, { localAddress: '127.0.0.2' });
    expect(refused.data).toBe('');
    const malformed = await exchange(port, `PROXY TCP4 203.0.113.07 127.0.0.1 40000 ${port}\r\n${GET}`);
    expect(malformed.data).toBe('');
    const missing = await exchange(port, GET);
    expect(missing.data).toBe('');
    const samples = await scrapeUntil(adminPort, (s) => sum(s, 'sessionlb_proxy_protocol_errors_total') >= 3);
    expect(sum(samples, 'sessionlb_proxy_protocol_errors_total', { reason: 'not_allowed' })).toBe(1);
    expect(sum(samples, 'sessionlb_proxy_protocol_errors_total', { reason: 'malformed' })).toBe(1);
    expect(sum(samples, 'sessionlb_proxy_protocol_errors_total', { reason: 'missing' })).toBe(1);
  });

  it('ssl proxy_protocol: the header, then the TLS handshake; the header\'s address is the client\'s', async () => {
    const leaf = pki.issue('pp.test');
    const port = await freePort();
    const b = await scope.backend('b1', echoForwarded);
    await scope.lb({
      servers: [{
        listen: [`127.0.0.1:${port} ssl proxy_protocol`], serverName: ['pp.test'],
        ssl: { certificate: leaf.cert, certificateKey: leaf.key }, locations: [{ path: '/', proxyPass: 'http://backend' }],
      }],
      upstreams: { backend: { servers: [{ address: b.address }] } },
      proxyProtocolFrom: ['127.0.0.1'],
    });
    const body = await new Promise<string>((resolve, reject) => {
      const raw = net.connect({ host: '127.0.0.1', port }, () => {
        raw.write(buildProxyV1({ address: '198.51.100.9', port: 5555 }, { address: '127.0.0.1', port }));
        const t = tls.connect({ socket: raw, servername: 'pp.test', rejectUnauthorized: false }, () => t.write(GET));
        const chunks: Buffer[] = [];
        t.on('data', (d: Buffer) => chunks.push(d));
        t.on('end', () => resolve(Buffer.concat(chunks).toString()));
        t.on('error', reject);
      });
    });
    expect(JSON.parse(body.slice(body.indexOf('\r\n\r\n') + 4))).toMatchObject({ xff: '198.51.100.9' });
  });

  it('stream: the header\'s source is the session\'s client (access log); a missing header closes the connection', async () => {
    const echo = net.createServer((s) => s.pipe(s));
    await new Promise<void>((resolve) => echo.listen(0, '127.0.0.1', resolve));
    scope.cleanup.push(() => new Promise((resolve) => echo.close(() => resolve())));
    const port = await freePort();
    const dir = await mkdtemp(join(tmpdir(), 'sessionlb-pp-'));
    scope.cleanup.push(() => rm(dir, { recursive: true, force: true }));
    const logFile = join(dir, 'access.log');
    const { adminPort } = await scope.lb({
      servers: undefined,
      streams: [{ listen: [`127.0.0.1:${port} proxy_protocol`], proxyPass: `127.0.0.1:${(echo.address() as net.AddressInfo).port}`, proxyProtocolFrom: ['127.0.0.0/30'] }],
      accessLog: { path: logFile },
    });
    const ok = await exchange(port, `PROXY TCP4 192.0.2.5 127.0.0.1 4242 ${port}\r\nhello`, { end: true });
    expect(ok.data).toBe('hello');
    const missing = await exchange(port, 'hello', { end: true });
    expect(missing.data).toBe('');
    expect(await waitFor(async () => (await readFile(logFile, 'utf8').catch(() => '')).includes('192.0.2.5'))).toBe(true);
    const line = JSON.parse((await readFile(logFile, 'utf8')).split('\n').find((l) => l.includes('192.0.2.5'))!) as Record<string, unknown>;
    expect(line).toMatchObject({ remote_addr: '192.0.2.5', remote_port: 4242 });
    const samples = await scrapeUntil(adminPort, (s) => sum(s, 'sessionlb_proxy_protocol_errors_total') >= 1);
    expect(sum(samples, 'sessionlb_proxy_protocol_errors_total', { reason: 'missing' })).toBe(1);
  });

  it('check refuses proxy_protocol without a proxyProtocolFrom list, naming the entry', async () => {
    const err = await loadConfig({
      servers: [{ listen: ['127.0.0.1:8080 proxy_protocol'], locations: [{ path: '/', proxyPass: 'http://127.0.0.1:9' }] }],
      streams: [{ listen: ['3306 proxy_protocol'], proxyPass: '127.0.0.1:3307' }],
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    const paths = (err as ConfigError).problems.map((p) => p.path);
    expect(paths).toEqual(expect.arrayContaining(['$.servers[0].listen[0]', '$.streams[0].listen[0]']));
    expect((err as ConfigError).message).toMatch(/proxyProtocolFrom/);
  });
});

/** A raw TCP backend: records every connection's bytes; answers each HTTP request head with a keep-alive 200 (`http`) or echoes (`echo`). */
async function rawBackend(mode: 'http' | 'echo'): Promise<{ port: number; received: Buffer[] }> {
  const received: Buffer[] = [];
  const server = net.createServer((s) => {
    const i = received.push(Buffer.alloc(0)) - 1;
    s.on('error', () => undefined);
    s.on('data', (d: Buffer) => {
      received[i] = Buffer.concat([received[i]!, d]);
      if (mode === 'echo') s.write(d);
      else if (received[i]!.toString('latin1').endsWith('\r\n\r\n')) s.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  scope.cleanup.push(() => new Promise((resolve) => { server.close(() => resolve()); }));
  return { port: (server.address() as net.AddressInfo).port, received };
}

/** Sends `requests` GETs on one keep-alive connection from `localAddress`; resolves with its local port. */
function keepAliveGets(port: number, requests: number, localAddress = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port, localAddress }, () => {
      let left = requests;
      let seen = '';
      s.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
      s.on('data', (d: Buffer) => {
        seen += d.toString('latin1');
        const done = seen.split('\r\n\r\nok').length - 1;
        if (done === requests - left + 1) {
          left--;
          if (left === 0) { const p = s.localPort!; s.destroy(); resolve(p); return; }
          s.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
        }
      });
    });
    s.on('error', reject);
  });
}

describe('sending the PROXY protocol', () => {
  it('stream proxyProtocol: the server reads a v1 header, byte for byte, then the client\'s bytes', async () => {
    const b = await rawBackend('echo');
    const port = await freePort();
    await scope.lb({ servers: undefined, streams: [{ listen: [`127.0.0.1:${port}`], proxyPass: `127.0.0.1:${b.port}`, proxyProtocol: true }] });
    const r = await new Promise<{ data: string; localPort: number }>((resolve) => {
      let localPort = 0;
      const s = net.connect({ host: '127.0.0.1', port }, () => { localPort = s.localPort!; s.end('ping'); });
      const chunks: Buffer[] = [];
      s.on('data', (d: Buffer) => chunks.push(d));
      s.on('close', () => resolve({ data: Buffer.concat(chunks).toString('latin1'), localPort }));
    });
    const expected = `PROXY TCP4 127.0.0.1 127.0.0.1 ${r.localPort} ${port}\r\nping`;
    expect(await waitFor(() => b.received[0]?.toString('latin1') === expected)).toBe(true);
    expect(r.data).toBe(expected); // the echo backend sends it all back
  });

  it('stream: a received header is relayed (the client\'s address and destination as the proxy in front said)', async () => {
    const b = await rawBackend('echo');
    const port = await freePort();
    await scope.lb({
      servers: undefined, proxyProtocolFrom: ['127.0.0.1'],
      streams: [{ listen: [`127.0.0.1:${port} proxy_protocol`], proxyPass: `127.0.0.1:${b.port}`, proxyProtocol: true }],
    });
    await exchange(port, Buffer.concat([buildProxyV2({ address: '203.0.113.1', port: 7 }, { address: '198.51.100.2', port: 3306 }), Buffer.from('x')]), { end: true });
    expect(await waitFor(() => b.received[0]?.toString('latin1') === 'PROXY TCP4 203.0.113.1 198.51.100.2 7 3306\r\nx')).toBe(true);
  });

  it('stream to a server with sendProxy v2: the server reads a v2 header, byte for byte, then the client\'s bytes (HAProxy send-proxy-v2 in TCP mode)', async () => {
    const b = await rawBackend('echo');
    const port = await freePort();
    await scope.lb({
      servers: undefined,
      streams: [{ listen: [`127.0.0.1:${port}`], proxyPass: 'db' }],
      upstreams: { db: { servers: [{ address: `127.0.0.1:${b.port}`, sendProxy: 'v2' }] } },
    });
    const localPort = await new Promise<number>((resolve) => {
      let lp = 0;
      const s = net.connect({ host: '127.0.0.1', port }, () => { lp = s.localPort!; s.end('ping'); });
      s.resume();
      s.on('close', () => resolve(lp));
    });
    const expected = Buffer.concat([buildProxyV2({ address: '127.0.0.1', port: localPort }, { address: '127.0.0.1', port }), Buffer.from('ping')]);
    expect(await waitFor(() => b.received[0]?.equals(expected) === true)).toBe(true);
  });

  it.each(['v1', 'v2'] as const)('HTTP sendProxy %s: each connection starts with its client\'s header; keep-alive only for that client', async (version) => {
    const b = await rawBackend('http');
    const port = await freePort();
    await scope.lb({
      servers: [{ listen: [`127.0.0.1:${port}`], locations: [{ path: '/', proxyPass: 'http://backend' }] }],
      upstreams: { backend: { servers: [{ address: `127.0.0.1:${b.port}`, sendProxy: version }], keepalive: 8 } },
    });
    const p1 = await keepAliveGets(port, 3, '127.0.0.1');
    const p2 = await keepAliveGets(port, 2, '127.0.0.2');
    // Two client connections: two upstream connections, each with its own header, reused for its client's requests only.
    expect(b.received.length).toBe(2);
    const header = (src: string, sport: number): Buffer => (version === 'v1' ? buildProxyV1 : buildProxyV2)({ address: src, port: sport }, { address: '127.0.0.1', port });
    const h1 = header('127.0.0.1', p1);
    const h2 = header('127.0.0.2', p2);
    expect(b.received[0]!.subarray(0, h1.length)).toEqual(h1);
    expect(b.received[1]!.subarray(0, h2.length)).toEqual(h2);
    expect(b.received[0]!.subarray(h1.length).toString('latin1').match(/GET \/ HTTP\/1\.1/g)).toHaveLength(3);
    expect(b.received[1]!.subarray(h2.length).toString('latin1').match(/GET \/ HTTP\/1\.1/g)).toHaveLength(2);
    // Exactly one header per connection.
    expect(b.received[0]!.subarray(h1.length).includes(h1.subarray(0, 5))).toBe(false);
  });

  it('check refuses sendProxy on an upstream used by an https:// location', async () => {
    const err = await loadConfig({
      servers: [{ listen: ['127.0.0.1:8080'], locations: [{ path: '/', proxyPass: 'https://backend' }] }],
      upstreams: { backend: { servers: [{ address: '127.0.0.1:9443', sendProxy: 'v2' }] } },
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).message).toMatch(/servers\[0\]\.locations\[0\]\.proxyPass.*sendProxy/);
  });
});
