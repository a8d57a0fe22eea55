/**
 * TLS passthrough routed by the ClientHello (a stream's `route`, nginx ssl_preread + map): real TLS
 * backends on loopback (node tls servers with certificates made here, see helpers/tls-certs.ts) that
 * answer with their own name, clients that verify the backend's certificate against the test root
 * and the name they asked for (node tls.connect and `openssl s_client`), so each session is proved
 * end to end with the right backend; sessionlb never holds a key.
 */
import net from 'node:net';
import tls from 'node:tls';
import { Duplex } from 'node:stream';
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/load.js';
import { SessionLB } from '../src/runtime/sessionlb.js';
import { silentLog } from '../src/observability/log.js';
import { importNginx } from '../src/tools/import-nginx/import-nginx.js';
import { freePort, startTcpBackend } from './helpers/net.js';
import { scrape, sum } from './helpers/prom.js';
import { TestPki } from './helpers/tls-certs.js';
import { waitFor } from './helpers/capture-log.js';
import { configProblems } from './helpers/config.js';

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

let pki: TestPki;
let rootCa: Buffer;
beforeAll(() => {
  pki = new TestPki();
  rootCa = readFileSync(pki.root.cert);
});
afterAll(() => pki.remove());

/** A TLS server for `names` that writes `answer` and a newline once the handshake is done, then echoes. */
async function tlsBackend(answer: string, names: string[]): Promise<{ address: string; connections: () => number }> {
  const leaf = pki.issue(names[0]!, { names });
  const chain = pki.concat(`${answer}-chain.pem`, leaf.cert, pki.intermediate.cert);
  let n = 0;
  const sockets = new Set<net.Socket>();
  const server = tls.createServer({ cert: readFileSync(chain), key: readFileSync(leaf.key), ALPNProtocols: ['h2', 'http/1.1', 'imap'] }, (s) => {
    s.on('error', () => undefined);
    s.write(`${answer}\n`);
    s.pipe(s);
  });
  server.on('connection', (s: net.Socket) => {
    n++;
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  server.on('tlsClientError', () => undefined);
  const port = await freePort();
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  cleanups.push(() => new Promise<void>((resolve) => {
    for (const s of sockets) s.destroy();
    server.close(() => resolve());
  }));
  return { address: `127.0.0.1:${port}`, connections: () => n };
}

/** A plain TCP backend that writes `answer` and a newline, then echoes: its address. */
async function tcpBackend(answer: string): Promise<string> {
  const backend = await startTcpBackend(answer);
  cleanups.push(backend.kill);
  return backend.address;
}

async function startLB(raw: Record<string, unknown>): Promise<{ lb: SessionLB; adminPort: number }> {
  const adminPort = await freePort();
  const lb = new SessionLB(await loadConfig({ admin: { listen: `127.0.0.1:${adminPort}` }, ...raw }, '<test>'), { log: silentLog() });
  await lb.start();
  cleanups.push(() => lb.stop(2000));
  return { lb, adminPort };
}

/** The first line read from `socket`, or the error/close that came first. */
function firstLine(socket: net.Socket | tls.TLSSocket): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = '';
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl >= 0) {
        socket.destroy();
        resolve(buf.slice(0, nl));
      }
    });
    socket.on('error', reject);
    socket.on('close', () => reject(new Error(`closed before a line (got ${JSON.stringify(buf)})`)));
  });
}

/** A verified TLS session through `port` with SNI `servername` (and ALPN `alpn`): the backend's first line. */
function tlsLine(port: number, servername: string | undefined, opts: { alpn?: string[]; socket?: Duplex; verify?: boolean } = {}): Promise<string> {
  const verify = opts.verify ?? true;
  const s = tls.connect({
    ...(opts.socket === undefined ? { host: '127.0.0.1', port } : { socket: opts.socket }),
    ...(servername === undefined ? {} : { servername }),
    ca: rootCa,
    rejectUnauthorized: verify,
    ...(verify ? {} : { checkServerIdentity: () => undefined }),
    ALPNProtocols: opts.alpn,
  });
  return firstLine(s);
}

/** `openssl s_client -servername NAME`, verifying against the test root: the backend's first line. */
function opensslLine(port: number, servername: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, '-servername', servername, '-CAfile', pki.root.cert,
      '-verify_return_error', '-verify_hostname', servername, '-quiet'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    const timer = setTimeout(() => child.kill(), 10_000);
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (d: string) => {
      out += d;
      const nl = out.indexOf('\n');
      if (nl >= 0) {
        clearTimeout(timer);
        child.kill();
        resolve(out.slice(0, nl));
      }
    });
    child.stderr.on('data', (d: Buffer) => { err += d.toString(); });
    child.on('exit', () => {
      clearTimeout(timer);
      reject(new Error(`openssl s_client ended without a line: ${err}`));
    });
  });
}

/** A socket that writes everything in `size`-byte pieces, `delayMs` apart (so the ClientHello arrives in several packets). */
function choppy(port: number, size: number, delayMs: number): Duplex {
  const raw = net.connect({ port, host: '127.0.0.1', noDelay: true });
  const d = new Duplex({
    write(chunk: Buffer, _enc, cb): void {
      let off = 0;
      const step = (): void => {
        if (off >= chunk.length) return cb();
        raw.write(chunk.subarray(off, off + size));
        off += size;
        setTimeout(step, delayMs);
      };
      step();
    },
    read(): void { raw.resume(); },
    final(cb): void { raw.end(); cb(); },
    destroy(err, cb): void { raw.destroy(); cb(err); },
  });
  raw.on('data', (b: Buffer) => { if (!d.push(b)) raw.pause(); });
  raw.on('end', () => d.push(null));
  raw.on('error', (e) => d.destroy(e));
  return d;
}

/** A plain TCP client: what it reads before the connection closes (or its first line). */
function plainExchange(port: number, send: string): Promise<{ line: string | null; closed: boolean }> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => s.write(send));
    let buf = '';
    s.setEncoding('utf8');
    s.on('data', (d: string) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl >= 0) {
        s.destroy();
        resolve({ line: buf.slice(0, nl), closed: false });
      }
    });
    s.on('error', () => undefined);
    s.on('close', () => resolve({ line: null, closed: true }));
  });
}

describe('streams route by SNI (TLS passthrough)', () => {
  it('routes three names, a wildcard and unknown names to their own TLS backends, end to end (node and openssl s_client); plain TCP per onNonTls', async () => {
    const shop = await tlsBackend('shop', ['shop.example.com']);
    const api = await tlsBackend('api', ['*.api.example.com']);
    const mail = await tlsBackend('mail', ['mail.example.com', 'example.com']);
    const other = await tlsBackend('other', ['unknown.test', 'other.test']);
    const plain = await tcpBackend('plain');
    const [p1, p2, p3] = [await freePort(), await freePort(), await freePort()];
    const dir = await mkdtemp(join(tmpdir(), 'sessionlb-sni-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const logFile = join(dir, 'access.log');
    const map = { 'shop.example.com': 'shop', '*.api.example.com': 'api', '.example.com': 'mail' };
    const { adminPort } = await startLB({
      accessLog: { path: logFile },
      streams: [
        { listen: [`127.0.0.1:${p1}`], route: { by: 'sni', map, default: 'other' } },
        { listen: [`127.0.0.1:${p2}`], route: { by: 'sni', map, default: plain } },
        { listen: [`127.0.0.1:${p3}`], route: { by: 'sni', map: { 'Shop.Example.COM': 'shop' }, default: plain, onNonTls: 'close' } },
      ],
      upstreams: {
        shop: { servers: [{ address: shop.address }] },
        api: { servers: [{ address: api.address }] },
        mail: { servers: [{ address: mail.address }] },
        other: { servers: [{ address: other.address }] },
      },
    });

    // Three names, each verified by the client against the certificate of the backend it reached.
    expect(await tlsLine(p1, 'shop.example.com')).toBe('shop');
    expect(await tlsLine(p1, 'mail.example.com')).toBe('mail'); // ".example.com"
    expect(await tlsLine(p1, 'example.com')).toBe('mail'); // ".example.com" matches the bare name too
    expect(await tlsLine(p1, 'v2.api.example.com')).toBe('api'); // wildcard, longer than ".example.com"
    expect(await tlsLine(p1, 'SHOP.example.com')).toBe('shop'); // case-insensitive
    expect(await opensslLine(p1, 'shop.example.com')).toBe('shop');
    expect(await opensslLine(p1, 'x.api.example.com')).toBe('api');
    expect(await opensslLine(p1, 'mail.example.com')).toBe('mail');
    // Unknown name, and no SNI at all: the default.
    expect(await tlsLine(p1, 'unknown.test')).toBe('other');
    expect(await tlsLine(p1, undefined, { verify: false })).toBe('other');
    // A map key is case-insensitive.
    expect(await tlsLine(p3, 'shop.example.com')).toBe('shop');

    // Plain TCP: onNonTls "default" (the default) passes it to the default with its bytes; "close" closes it.
    expect(await plainExchange(p2, 'PING\r\n')).toEqual({ line: 'plain', closed: false });
    expect(await plainExchange(p3, 'PING\r\n')).toEqual({ line: null, closed: true });
    // The bytes read for the hello reach the server first, unchanged (the plain backend echoes them).
    const echoed = await new Promise<string>((resolve) => {
      const s = net.connect(p2, '127.0.0.1', () => s.write('GET / HTTP/1.0\r\n\r\n'));
      let buf = '';
      s.setEncoding('utf8');
      s.on('data', (d: string) => {
        buf += d;
        if (buf.includes('\r\n\r\n')) {
          s.destroy();
          resolve(buf);
        }
      });
    });
    expect(echoed).toBe('plain\nGET / HTTP/1.0\r\n\r\n');

    const m = await scrape(adminPort);
    expect(sum(m, 'sessionlb_stream_preread_total', { listen: `127.0.0.1:${p1}`, result: 'matched' })).toBe(8);
    expect(sum(m, 'sessionlb_stream_preread_total', { listen: `127.0.0.1:${p1}`, result: 'default' })).toBe(2);
    expect(sum(m, 'sessionlb_stream_preread_total', { listen: `127.0.0.1:${p2}`, result: 'not_tls' })).toBe(2);
    expect(sum(m, 'sessionlb_stream_preread_total', { listen: `127.0.0.1:${p3}`, result: 'not_tls' })).toBe(1);
    expect(sum(m, 'sessionlb_stream_sessions_total', { listen: `127.0.0.1:${p1}`, upstream: 'shop', status: '200' })).toBeGreaterThanOrEqual(1);

    // The access log has the server name (nginx $ssl_preread_server_name); a closed connection is a 400 without upstream.
    let lines: Record<string, unknown>[] = [];
    await waitFor(async () => {
      const text = await readFile(logFile, 'utf8').catch(() => '');
      lines = text.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Record<string, unknown>);
      return lines.length >= 14;
    });
    expect(lines).toContainEqual(expect.objectContaining({ server_port: p1, status: 200, upstream_name: 'api', ssl_preread_server_name: 'v2.api.example.com' }));
    expect(lines).toContainEqual(expect.objectContaining({ server_port: p1, status: 200, upstream_name: 'other', ssl_preread_server_name: '' }));
    expect(lines).toContainEqual(expect.objectContaining({ server_port: p3, status: 400, upstream_name: '', upstream_addr: '', bytes_received: 6 }));
  }, 30_000);

  it('routes a ClientHello that arrives in many small packets', async () => {
    const shop = await tlsBackend('shop', ['shop.example.com']);
    const other = await tlsBackend('other', ['other.test']);
    const port = await freePort();
    await startLB({
      streams: [{ listen: [`127.0.0.1:${port}`], route: { by: 'sni', map: { 'shop.example.com': 'shop' }, default: 'other' } }],
      upstreams: { shop: { servers: [{ address: shop.address }] }, other: { servers: [{ address: other.address }] } },
    });
    // 40-byte pieces 10 ms apart: a ~300-byte hello in 8 or more packets, over ~80 ms.
    expect(await tlsLine(port, 'shop.example.com', { socket: choppy(port, 40, 10) })).toBe('shop');
    expect(shop.connections()).toBe(1);
    expect(other.connections()).toBe(0);
  });

  it('closes a connection whose hello does not come within prereadTimeout', async () => {
    const shop = await tlsBackend('shop', ['shop.example.com']);
    const port = await freePort();
    const { adminPort } = await startLB({
      streams: [{ listen: [`127.0.0.1:${port}`], route: { by: 'sni', map: { 'shop.example.com': 'shop' }, default: 'shop', prereadTimeout: '200ms' } }],
      upstreams: { shop: { servers: [{ address: shop.address }] } },
    });
    const started = Date.now();
    const closed = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => s.write(Buffer.from([22, 3, 1]))); // a record header begun, never finished
      s.on('error', () => undefined);
      s.on('close', () => resolve(true));
    });
    expect(closed).toBe(true);
    expect(Date.now() - started).toBeGreaterThanOrEqual(150);
    expect(shop.connections()).toBe(0);
    expect(sum(await scrape(adminPort), 'sessionlb_stream_preread_total', { result: 'timeout' })).toBe(1);
  });

  it('routes by ALPN: the first protocol the client offers that the map has', async () => {
    const h2 = await tlsBackend('h2-backend', ['h2.test']);
    const h1 = await tlsBackend('h1-backend', ['h1.test']);
    const other = await tlsBackend('other', ['other.test']);
    const port = await freePort();
    const { adminPort } = await startLB({
      streams: [{ listen: [`127.0.0.1:${port}`], route: { by: 'alpn', map: { h2: 'h2', 'http/1.1': 'h1' }, default: 'other' } }],
      upstreams: { h2: { servers: [{ address: h2.address }] }, h1: { servers: [{ address: h1.address }] }, other: { servers: [{ address: other.address }] } },
    });
    expect(await tlsLine(port, 'h2.test', { alpn: ['h2', 'http/1.1'] })).toBe('h2-backend');
    expect(await tlsLine(port, 'h1.test', { alpn: ['http/1.1', 'h2'] })).toBe('h1-backend');
    expect(await tlsLine(port, 'h1.test', { alpn: ['imap', 'http/1.1'] })).toBe('h1-backend');
    expect(await tlsLine(port, 'other.test', { alpn: ['imap'] })).toBe('other');
    expect(await tlsLine(port, 'other.test')).toBe('other');
    const m = await scrape(adminPort);
    expect(sum(m, 'sessionlb_stream_preread_total', { result: 'matched' })).toBe(3);
    expect(sum(m, 'sessionlb_stream_preread_total', { result: 'default' })).toBe(2);
  });
});

describe('streams route: configuration', () => {
  const servers = [{ address: '127.0.0.1:9' }];
  const problems = (raw: Record<string, unknown>): Promise<string[]> => configProblems(raw, '<test>');

  it('normalises a route: lower-cased names, implicit host:port upstreams, defaults', async () => {
    const config = await loadConfig({
      streams: [{ listen: ['127.0.0.1:8443'], route: { by: 'sni', map: { 'Shop.Example.com': 'shop', '*.api.example.com': '10.0.0.2:443' } } }],
      upstreams: { shop: { servers } },
    }, '<test>');
    const st = config.streams[0]!;
    expect(st.upstream).toBeNull();
    expect(st.route).toEqual({
      by: 'sni', map: new Map([['shop.example.com', 'shop'], ['*.api.example.com', '10.0.0.2:443']]), default: null,
      onNonTls: 'default', prereadTimeoutMs: 30_000, prereadBufferSize: 16384,
    });
    expect(config.upstreams.get('10.0.0.2:443')!.implicit).toBe(true);
  });

  it('reports every problem of a route with its JSON path', async () => {
    expect(await problems({
      streams: [{ listen: ['127.0.0.1:8443'], route: { by: 'sni', map: { 'shop.example.com': 'nope', '~^www': 'shop', 'a.*.b': 'shop', 'SHOP.example.com': 'shop' }, default: 'gone' } }],
      upstreams: { shop: { servers } },
    })).toEqual([
      '$.streams[0].route.map["~^www"]: regular expressions are not supported: write the names, or wildcards ("*.example.com", ".example.com", "www.example.*")',
      '$.streams[0].route.map["a.*.b"]: must be a server name: "shop.example.com", "*.example.com", ".example.com" or "www.example.*" (letters, digits, "-", "_"; a "*" only as a whole first or last label)',
      '$.streams[0].route.map["SHOP.example.com"]: is the key "shop.example.com" again (server names are case-insensitive)',
      '$.streams[0].route.default: no upstream named "gone" (define it under $.upstreams, or use "host:port")',
      '$.streams[0].route.map["shop.example.com"]: no upstream named "nope" (define it under $.upstreams, or use "host:port")',
    ]);
    expect(await problems({ streams: [{ listen: ['127.0.0.1:8443'], proxyPass: 'shop', route: { by: 'sni', map: {}, default: 'shop' } }], upstreams: { shop: { servers } } }))
      .toEqual(['$.streams[0].route: a stream has "proxyPass" or "route", not both (the route\'s "default" takes the place of proxyPass)']);
    expect(await problems({ streams: [{ listen: ['127.0.0.1:8443'] }] })).toEqual(['$.streams[0].proxyPass: is required (or "route")']);
    expect(await problems({ streams: [{ listen: ['127.0.0.1:8443'], route: { by: 'alpn', map: { '': 'shop', 'h 2': 'shop' }, onNonTls: 'drop', prereadTimeout: '0s', prereadBufferSize: '100' } }], upstreams: { shop: { servers } } }))
      .toEqual([
        '$.streams[0].route.onNonTls: must be "default" or "close"',
        '$.streams[0].route.prereadTimeout: must be at least "1ms"',
        '$.streams[0].route.prereadBufferSize: must be between "512" and "1m" (a ClientHello is rarely over 2k; nginx\'s default is "16k")',
        '$.streams[0].route.map[""]: must be an ALPN protocol name such as "h2" or "http/1.1" (1 to 255 visible ASCII characters)',
        '$.streams[0].route.map["h 2"]: must be an ALPN protocol name such as "h2" or "http/1.1" (1 to 255 visible ASCII characters)',
      ]);
    expect(await problems({ streams: [{ listen: ['127.0.0.1:8443'], route: { by: 'sni', map: { 'a.test': 'pg' } } }], upstreams: { pg: { balance: 'ip_hash', servers } } }))
      .toEqual(['$.upstreams.pg.balance: "ip_hash" cannot be used by a stream ($.streams[0] uses this upstream; nginx\'s stream module has no ip_hash): use {"hash": "$remote_addr"}']);
  });
});

describe('import-nginx: ssl_preread with a map', () => {
  it('converts ssl_preread + map $ssl_preread_server_name (hostnames) into a route that loads', async () => {
    const text = [
      'events {}', // 1
      'stream {', // 2
      '  map $ssl_preread_server_name $backend {', // 3
      '    hostnames;', // 4
      '    shop.example.com    shop;', // 5
      '    *.api.example.com   api;', // 6
      '    .mail.example.com   10.0.0.9:993;', // 7
      '    default             other;', // 8
      '  }', // 9
      '  map $ssl_preread_alpn_protocols $by_alpn { h2 shop; default other; }', // 10
      '  map $ssl_preread_server_name $rx { ~^www shop; default other; }', // 11
      '  upstream shop { server 10.0.0.1:443; }', // 12
      '  upstream api { server 10.0.0.2:443; }', // 13
      '  upstream other { server 10.0.0.3:443; }', // 14
      '  server { listen 443; ssl_preread on; proxy_pass $backend; preread_timeout 10s; preread_buffer_size 32k; }', // 15
      '  server { listen 8443; ssl_preread on; proxy_pass $by_alpn; }', // 16
      '  server { listen 9443; ssl_preread on; proxy_pass $rx; }', // 17
      '  server { listen 10443; proxy_pass $backend; }', // 18
      '}',
    ].join('\n');
    const r = importNginx(text, 'nginx.conf');
    expect(r.config.streams).toEqual([
      { listen: ['443'], route: { by: 'sni', map: { 'shop.example.com': 'shop', '*.api.example.com': 'api', '.mail.example.com': '10.0.0.9:993' }, default: 'other', prereadTimeout: '10s', prereadBufferSize: '32k' } },
      { listen: ['8443'], route: { by: 'alpn', map: { h2: 'shop' }, default: 'other' } },
    ]);
    expect(r.warnings.map((w) => `${w.line}: ${w.message}`)).toContainEqual(
      '10: map $ssl_preread_alpn_protocols $by_alpn: a key is compared with each protocol the client offers (the first offered that is a key wins), nginx compares the whole comma-separated list');
    expect(r.errors.map((e) => `${e.line}: ${e.message}`)).toEqual([
      '11: map $ssl_preread_server_name $rx: "~^www": regular expressions are not supported: write the names, or wildcards ("*.example.com", ".example.com", "www.example.*")',
      '17: stream server: "proxy_pass $rx" uses a map that was not converted: not converted',
      '18: stream server: "proxy_pass $backend" without "ssl_preread on": $ssl_preread_server_name would be empty: not converted',
    ]);
    const config = await loadConfig(r.config as Record<string, unknown>, 'imported.json');
    expect(config.streams.map((s) => [s.listen[0]!.key, s.route?.by, s.route?.default])).toEqual([['0.0.0.0:443', 'sni', 'other'], ['0.0.0.0:8443', 'alpn', 'other']]);
  });
});
