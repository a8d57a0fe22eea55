/**
 * HTTP/2 from clients (issue 16): sessionlb in-process on an `ssl` address with `http2`, real
 * certificates made in the test (test/helpers/tls-certs.ts), real HTTP/1.1 backends on loopback,
 * node's http2 client (several streams on one connection) and https/tls clients for HTTP/1.1.
 */
import http from 'node:http';
import http2 from 'node:http2';
import https from 'node:https';
import type net from 'node:net';
import tls from 'node:tls';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { freePort, type Backend } from './helpers/net.js';
import { useScope } from './helpers/scope.js';
import { TestPki } from './helpers/tls-certs.js';
import { until } from './helpers/faults.js';
import { SessionLB } from '../src/runtime/sessionlb.js';
import { loadConfig } from '../src/config/load.js';
import { silentLog } from '../src/observability/log.js';

const scope = useScope();
const pki = new TestPki();
const dir = mkdtempSync(join(tmpdir(), 'sessionlb-h2-'));
afterAll(() => {
  pki.remove();
  rmSync(dir, { recursive: true, force: true });
});

const shop = pki.issue('shop.test');
const plain = pki.issue('plain.test');

/** A backend that answers with what it received, as JSON. */
const echo = (req: http.IncomingMessage, res: http.ServerResponse, b: Backend): void => {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    const body = JSON.stringify({
      backend: b.name, method: req.method, url: req.url, version: req.httpVersion, headers: req.headers,
      rawNames: req.rawHeaders.filter((_, i) => i % 2 === 0), body: Buffer.concat(chunks).toString(),
    });
    res.writeHead(200, { 'Content-Type': 'application/json', 'X-Backend': b.name });
    res.end(body);
  });
};

interface Echo { backend: string; method: string; url: string; version: string; headers: http.IncomingHttpHeaders; rawNames: string[]; body: string }

interface H2Reply { status: number; headers: http2.IncomingHttpHeaders; body: string }

/** One request on an HTTP/2 session. */
function h2request(session: http2.ClientHttp2Session, headers: http2.OutgoingHttpHeaders, body?: string | Buffer): Promise<H2Reply> {
  return new Promise((resolve, reject) => {
    const stream = session.request(headers, { endStream: body === undefined });
    let head: http2.IncomingHttpHeaders = {};
    const chunks: Buffer[] = [];
    stream.on('response', (h) => { head = h; });
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => resolve({ status: Number(head[':status']), headers: head, body: Buffer.concat(chunks).toString() }));
    stream.on('error', reject);
    if (body !== undefined) stream.end(body);
  });
}

function h2connect(port: number, servername = 'shop.test'): Promise<http2.ClientHttp2Session> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`https://${servername}:${port}`, {
      createConnection: () => tls.connect({ host: '127.0.0.1', port, servername, ALPNProtocols: ['h2'], ca: readFileSync(pki.root.cert) }),
    });
    scope.cleanup.push(async () => { session.destroy(); });
    session.once('connect', () => resolve(session));
    session.once('error', reject);
  });
}

/** The protocol ALPN settles on when the client offers h2 and http/1.1. */
function alpn(port: number, servername: string): Promise<string | false> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, servername, ALPNProtocols: ['h2', 'http/1.1'], rejectUnauthorized: false }, () => {
      const chosen = socket.alpnProtocol;
      socket.destroy();
      resolve(chosen ?? false);
    });
    socket.on('error', reject);
  });
}

function httpsGet(port: number, servername: string, path: string, headers: http.OutgoingHttpHeaders = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = https.request({ host: '127.0.0.1', port, path, servername, headers: { host: servername, ...headers }, ca: readFileSync(pki.root.cert), agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
    });
    req.on('error', reject);
    req.end();
  });
}

function ssl(cert: { cert: string; key: string }): Record<string, unknown> {
  return { certificate: pki.concat(`${cert.cert.replace(/\W/g, '')}-chain.pem`, cert.cert, pki.intermediate.cert), certificateKey: cert.key };
}

async function setup(upstream: Record<string, unknown>, more: Record<string, unknown> = {}, location: Record<string, unknown> = {}): Promise<{ port: number; adminPort: number }> {
  const port = await freePort();
  const listen = [`127.0.0.1:${port} ssl`];
  const lb = await scope.lb({
    servers: [
      { listen, serverName: ['shop.test'], http2: true, ssl: ssl(shop), locations: [{ path: '/', proxyPass: 'http://backend', ...location }] },
      { listen, serverName: ['plain.test'], ssl: ssl(plain), locations: [{ path: '/', proxyPass: 'http://backend' }] },
    ],
    upstreams: { backend: upstream },
    ...more,
  });
  return { port, adminPort: lb.adminPort };
}

describe('HTTP/2 (ALPN h2 on ssl addresses)', () => {
  it('ALPN: a server with http2 speaks h2 and HTTP/1.1 on one address; a server without it on the same address offers only http/1.1', async () => {
    const [a] = await scope.backends(['a'], echo);
    const { port } = await setup({ servers: [{ address: a!.address }] });
    expect(await alpn(port, 'shop.test')).toBe('h2');
    expect(await alpn(port, 'plain.test')).toBe('http/1.1');
    const session = await h2connect(port);
    const r = await h2request(session, { ':path': '/over-h2' });
    expect(r.status).toBe(200);
    expect((JSON.parse(r.body) as Echo).url).toBe('/over-h2');
    const h1 = await httpsGet(port, 'shop.test', '/over-h1');
    expect(h1.status).toBe(200);
    expect((JSON.parse(h1.body) as Echo).url).toBe('/over-h1');
  });

  it('the backend gets the HTTP/1.1 request the HTTP/2 one stands for: Host from :authority, one Cookie, X-Forwarded-Proto https, no pseudo-header', async () => {
    const [a] = await scope.backends(['a'], echo);
    const { port } = await setup({ servers: [{ address: a!.address }] });
    const session = await h2connect(port);
    const r = await h2request(session, { ':path': '/p?q=1', ':authority': 'shop.test', cookie: ['a=1', 'b=2'], 'x-custom': 'v' });
    const got = JSON.parse(r.body) as Echo;
    expect(got.version).toBe('1.1');
    expect(got.url).toBe('/p?q=1');
    expect(got.headers.host).toBe('shop.test');
    expect(got.headers.cookie).toBe('a=1; b=2');
    expect(got.rawNames.filter((n) => n.toLowerCase() === 'cookie')).toHaveLength(1);
    expect(got.headers['x-forwarded-proto']).toBe('https');
    expect(got.headers['x-custom']).toBe('v');
    expect(got.rawNames.some((n) => n.startsWith(':'))).toBe(false);
    // The response's headers come back over HTTP/2 (no connection-specific ones: node would refuse to send them).
    expect(r.headers['x-backend']).toBe('a');
  });

  it('a POST body arrives whole: with its Content-Length; without one, buffered and sent with its length (nginx proxy_request_buffering on) or streamed chunked (off)', async () => {
    const [a] = await scope.backends(['a'], echo);
    const buffered = await setup({ servers: [{ address: a!.address }] });
    const session = await h2connect(buffered.port);
    const body = 'x'.repeat(100_000);
    const withLength = JSON.parse((await h2request(session, { ':method': 'POST', ':path': '/len', 'content-length': String(body.length) }, body)).body) as Echo;
    expect(withLength.body).toBe(body);
    expect(withLength.headers['content-length']).toBe(String(body.length));
    const noLength = JSON.parse((await h2request(session, { ':method': 'POST', ':path': '/nolen' }, body)).body) as Echo;
    expect(noLength.body).toBe(body);
    expect(noLength.headers['content-length']).toBe(String(body.length));
    const get = JSON.parse((await h2request(session, { ':path': '/get' })).body) as Echo;
    expect(get.headers['transfer-encoding']).toBeUndefined();
    expect(get.headers['content-length']).toBeUndefined();

    const streamed = await setup({ servers: [{ address: a!.address }] }, {}, { proxyRequestBuffering: false });
    const s2 = await h2connect(streamed.port);
    for (const sent of ['hello', body]) {
      const got = JSON.parse((await h2request(s2, { ':method': 'POST', ':path': '/nolen' }, sent)).body) as Echo;
      expect(got.body).toBe(sent);
      expect(got.headers['transfer-encoding']).toBe('chunked');
    }
  });

  for (const mode of ['cookie', 'learn'] as const) {
    it(`sticky ${mode} over HTTP/2: the streams of one connection carrying the session reach its backend`, async () => {
      const bs = await scope.backends(['a', 'b', 'c'], (req, res, b) => {
        req.resume();
        const headers: http.OutgoingHttpHeaders = { 'X-Backend': b.name };
        if (mode === 'learn' && !(req.headers.cookie ?? '').includes('PHPSESSID=')) headers['Set-Cookie'] = `PHPSESSID=sess${b.name}${'0'.repeat(20)}; path=/`;
        res.writeHead(200, headers);
        res.end(b.name);
      });
      const sticky = mode === 'cookie' ? { mode, cookieKey: 'k'.repeat(32) } : { mode, cookie: 'PHPSESSID' };
      const { port } = await setup({ sticky, servers: bs.map((b) => ({ address: b.address })) });
      const session = await h2connect(port);
      const first = await h2request(session, { ':path': '/' });
      const setCookie = ([] as string[]).concat(first.headers['set-cookie'] ?? []);
      const cookie = setCookie.map((c) => c.split(';')[0]!).join('; ');
      expect(cookie).not.toBe('');
      if (mode === 'cookie') expect(setCookie[0]).toMatch(/; Secure/);
      // 12 streams at once on the same connection.
      const replies = await Promise.all(Array.from({ length: 12 }, () => h2request(session, { ':path': '/', cookie })));
      expect(new Set(replies.map((r) => r.body))).toEqual(new Set([first.body]));
    });
  }

  it('retries on the next server, and the access log says HTTP/2.0 with the TLS facts', async () => {
    const [a] = await scope.backends(['a'], echo);
    const down = await freePort();
    const file = join(dir, 'access.log');
    const { port } = await setup({ servers: [{ address: `127.0.0.1:${down}` }, { address: a!.address }] }, { accessLog: { path: file } });
    const session = await h2connect(port);
    const replies = await Promise.all(Array.from({ length: 4 }, (_, i) => h2request(session, { ':path': `/r${i}` })));
    expect(replies.map((r) => r.status)).toEqual([200, 200, 200, 200]);
    let entries: Record<string, unknown>[] = [];
    expect(await until(() => {
      try {
        entries = readFileSync(file, 'utf8').trim().split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Record<string, unknown>);
      } catch { return false; }
      return entries.length >= 4;
    })).toBe(true);
    for (const e of entries) {
      expect(e).toMatchObject({ server_protocol: 'HTTP/2.0', status: 200, remote_addr: '127.0.0.1', ssl_protocol: 'TLSv1.3', ssl_session_reused: '.' });
    }
    expect(entries.some((e) => String(e.upstream_addr).includes(`127.0.0.1:${down}, `))).toBe(true);
  });

  it('a 413 ends its stream, not the connection: the next request on it is served', async () => {
    const [a] = await scope.backends(['a'], echo);
    const { port } = await setup({ servers: [{ address: a!.address }] }, {}, { clientMaxBodySize: '1k' });
    const session = await h2connect(port);
    const big = await h2request(session, { ':method': 'POST', ':path': '/up', 'content-length': '5000' }, 'y'.repeat(5000)).catch((e: Error) => e);
    if (big instanceof Error) throw big;
    expect(big.status).toBe(413);
    const next = await h2request(session, { ':path': '/after' });
    expect(next.status).toBe(200);
    expect(a!.hits).toBe(1);
  });

  it('CONNECT over HTTP/2 is answered 405 and never forwarded', async () => {
    const [a] = await scope.backends(['a'], echo);
    const { port } = await setup({ servers: [{ address: a!.address }] });
    const session = await h2connect(port);
    const r = await h2request(session, { ':method': 'CONNECT', ':authority': 'elsewhere.test:443' });
    expect(r.status).toBe(405);
    expect(a!.hits).toBe(0);
  });

  it('a websocket over HTTP/1.1 on the TLS port of an http2 server; an Upgrade: h2c is never passed upstream', async () => {
    const seen: http.IncomingHttpHeaders[] = [];
    const [ws] = await scope.backends(['ws'], (req, res) => {
      seen.push(req.headers);
      req.resume();
      res.end('plain');
    });
    ws!.server.on('upgrade', (req: http.IncomingMessage, socket: net.Socket) => {
      seen.push(req.headers);
      socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n');
      socket.pipe(socket);
    });
    const { port } = await setup({ servers: [{ address: ws!.address }] });
    const socket = tls.connect({ host: '127.0.0.1', port, servername: 'shop.test', ALPNProtocols: ['http/1.1'], ca: readFileSync(pki.root.cert) });
    scope.cleanup.push(async () => { socket.destroy(); });
    const echoed = await new Promise<string>((resolve, reject) => {
      let text = '';
      socket.on('error', reject);
      socket.on('data', (d: Buffer) => {
        text += d.toString('latin1');
        const end = text.indexOf('\r\n\r\n');
        if (end >= 0 && text.startsWith('HTTP/1.1 101') && !text.includes('ping')) socket.write('ping');
        if (text.endsWith('ping')) resolve(text);
      });
      socket.write('GET /chat HTTP/1.1\r\nHost: shop.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n');
    });
    expect(echoed.startsWith('HTTP/1.1 101')).toBe(true);
    expect(seen[0]!.upgrade).toBe('websocket');

    const h2c = await httpsGet(port, 'shop.test', '/h2c', { Connection: 'Upgrade, HTTP2-Settings', Upgrade: 'h2c', 'HTTP2-Settings': 'AAMAAABkAAQAAP__' });
    expect(h2c.status).toBe(200);
    expect(seen[1]!.upgrade).toBeUndefined();
    expect(seen[1]!['http2-settings']).toBeUndefined();
  });

  it('an idle HTTP/2 connection is closed after keepaliveTimeout; one with a stream open is not', async () => {
    let release: (() => void) | null = null;
    const [a] = await scope.backends(['a'], (req, res) => {
      req.resume();
      if (req.url === '/slow') release = () => res.end('slow');
      else res.end('fast');
    });
    const { port } = await setup({ servers: [{ address: a!.address }] }, { keepaliveTimeout: '1s' });
    const idle = await h2connect(port);
    expect((await h2request(idle, { ':path': '/' })).status).toBe(200);
    const busy = await h2connect(port);
    const slow = h2request(busy, { ':path': '/slow' });
    let idleClosed = false;
    let busyClosed = false;
    idle.once('close', () => { idleClosed = true; });
    busy.once('close', () => { busyClosed = true; });
    expect(await until(() => idleClosed, 5000)).toBe(true);
    expect(busyClosed).toBe(false);
    expect(release).not.toBeNull();
    release!();
    expect((await slow).body).toBe('slow');
  });

  it('at shutdown each HTTP/2 connection gets a GOAWAY and its stream in flight completes', async () => {
    let release: (() => void) | null = null;
    const [a] = await scope.backends(['a'], (req, res) => {
      req.resume();
      release = () => res.end('done');
    });
    const port = await freePort();
    const lb = new SessionLB(await loadConfig({
      servers: [{ listen: [`127.0.0.1:${port} ssl`], serverName: ['shop.test'], http2: true, ssl: ssl(shop), locations: [{ path: '/', proxyPass: 'http://backend' }] }],
      upstreams: { backend: { servers: [{ address: a!.address }] } },
    }, '<test>'), { log: silentLog() });
    await lb.start();
    const session = await h2connect(port);
    let goaway = false;
    session.once('goaway', () => { goaway = true; });
    const inFlight = h2request(session, { ':path': '/' });
    expect(await until(() => release !== null, 5000)).toBe(true);
    const stopped = lb.stop(10_000);
    expect(await until(() => goaway, 5000)).toBe(true);
    release!();
    const r = await inFlight;
    expect(r.status).toBe(200);
    expect(r.body).toBe('done');
    await stopped;
  });
});

describe('HTTP/2 and limits', () => {
  it('a stream reset while its limits are decided is not forwarded, and its limit_conn count is released', async () => {
    let hits = 0;
    const backend = await scope.backend('b', (req, res) => { hits++; req.resume(); res.end('ok'); });
    const port = await freePort();
    const config = await loadConfig({
      upstreams: { backend: { servers: [{ address: backend.address }] } },
      limitConnZones: { addr: { key: '$binary_remote_addr' } },
      servers: [{
        listen: [`127.0.0.1:${port} ssl`], serverName: ['shop.test'], http2: true, ssl: ssl(shop),
        locations: [{ path: '/', proxyPass: 'http://backend', limitConn: { zone: 'addr', conn: 1 } }],
      }],
    }, '<test>');
    const lb = new SessionLB(config, { log: silentLog() });
    // Decisions that take 100 ms, as a cluster worker's (IPC) or a shared zone's (memcached) may.
    const local = lb.localLimits;
    lb.limitDecider = {
      request: (rules, keys) => new Promise((r) => setTimeout(() => r(local.request(rules, keys)), 100)),
      connection: (rules, keys, dry) => new Promise((r) => setTimeout(() => r(local.connection(rules, keys, dry)), 100)),
    };
    await lb.start();
    scope.cleanup.push(() => lb.stop(2000));
    const session = await h2connect(port);
    const left = session.request({ ':method': 'GET', ':path': '/left', ':authority': 'shop.test' });
    left.on('error', () => undefined);
    setTimeout(() => left.close(http2.constants.NGHTTP2_CANCEL), 20);
    await new Promise((r) => setTimeout(r, 300));
    expect(hits).toBe(0);
    expect(lb.limitZones.connection('addr')!.size).toBe(0);
    const next = await h2request(session, { ':method': 'GET', ':path': '/next', ':authority': 'shop.test' });
    expect(next.status).toBe(200);
    expect(hits).toBe(1);
  });
});

