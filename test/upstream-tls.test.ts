/**
 * TLS to upstreams end to end (issue 16, nginx proxy_ssl_*): a real https backend on 127.0.0.1 with
 * certificates made by openssl (test/helpers/tls-certs.ts), sessionlb in-process.
 * - GET, POST with a body, a large streamed response and a websocket upgrade through `https://backend`;
 * - keep-alive: 20 requests over one TLS connection; without keep-alive, reconnects resume the session;
 * - proxySslVerify with the right CA passes, with another CA or another name is a 502 counted
 *   against the server; two locations with different settings to one upstream get their own pools;
 * - SNI only with proxySslServerName, and never for an IP address;
 * - proxySslProtocols ["TLSv1.3"] against a TLS 1.2-only backend fails;
 * - a trusted certificate file that does not load fails the start, a reload (nothing changes) and
 *   `check`, naming the file; a reload to another CA is verified with the new one.
 */
import https from 'node:https';
import http from 'node:http';
import type net from 'node:net';
import type tls from 'node:tls';
import { readFileSync } from 'node:fs';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { loadConfig } from '../src/config/load.js';
import { checkCommand } from '../src/tools/offline-commands.js';
import { freePort, request } from './helpers/net.js';
import { useScope } from './helpers/scope.js';
import { TestPki } from './helpers/tls-certs.js';

const scope = useScope();
const pki = new TestPki();
const otherPki = new TestPki();
afterAll(() => {
  pki.remove();
  otherPki.remove();
});

const leaf = pki.issue('backend', { names: ['backend', 'app.internal'] });
const chain = pki.concat('backend-chain.pem', leaf.cert, pki.intermediate.cert);
const rightCa = pki.root.cert;
const wrongCa = otherPki.root.cert;

interface TlsBackend {
  port: number;
  address: string;
  /** TLS connections accepted, with the SNI each sent (null: none) and whether it resumed a session. */
  connections: { servername: string | null; resumed: boolean }[];
  server: https.Server;
}

async function tlsBackend(options: https.ServerOptions = {}): Promise<TlsBackend> {
  const server = https.createServer({ key: readFileSync(leaf.key), cert: readFileSync(chain), ...options }, (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (req.url === '/big') {
        res.writeHead(200, { 'Content-Type': 'application/octet-stream' });
        const block = Buffer.alloc(64 * 1024, 'x');
        for (let i = 0; i < 32; i++) res.write(block);
        res.end();
        return;
      }
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ method: req.method, url: req.url, body: Buffer.concat(chunks).toString(), alpn: (req.socket as tls.TLSSocket).alpnProtocol }));
    });
  });
  const b: TlsBackend = { port: 0, address: '', connections: [], server };
  server.on('secureConnection', (s: tls.TLSSocket) => {
    const sni = (s as tls.TLSSocket & { servername?: string | false }).servername;
    b.connections.push({ servername: typeof sni === 'string' ? sni : null, resumed: s.isSessionReused() });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  b.port = (server.address() as net.AddressInfo).port;
  b.address = `127.0.0.1:${b.port}`;
  scope.cleanup.push(() => new Promise<void>((resolve) => {
    server.closeAllConnections();
    server.close(() => resolve());
  }));
  return b;
}

/** sessionlb with upstream "backend" = `be`, and these locations (default: / to https://backend). */
async function lbTo(be: TlsBackend, locations: Record<string, unknown>[] = [{ path: '/', proxyPass: 'https://backend' }], upstream: Record<string, unknown> = {}) {
  const port = await freePort();
  // maxFails 0: a failure is counted but does not take the one server out for the next request.
  const lb = await scope.lb({
    servers: [{ listen: [`127.0.0.1:${port}`], locations }],
    upstreams: { backend: { servers: [{ address: be.address, maxFails: 0 }], ...upstream } },
  });
  return { lb: lb.lb, url: `http://127.0.0.1:${port}` };
}

function json(body: string): Record<string, unknown> {
  return JSON.parse(body) as Record<string, unknown>;
}

describe('proxyPass https://', () => {
  it('forwards a GET and a POST with a body over TLS (ALPN http/1.1)', async () => {
    const be = await tlsBackend();
    const lb = await lbTo(be);
    const get = await request(`${lb.url}/hello?x=1`);
    expect(get.status).toBe(200);
    expect(json(get.body)).toMatchObject({ method: 'GET', url: '/hello?x=1', body: '', alpn: 'http/1.1' });
    const post = await request(`${lb.url}/submit`, { method: 'POST', body: 'a=1&b=two', headers: { 'Content-Type': 'application/x-www-form-urlencoded' } });
    expect(post.status).toBe(200);
    expect(json(post.body)).toMatchObject({ method: 'POST', url: '/submit', body: 'a=1&b=two' });
  });

  it('streams a large response (2 MiB) through the TLS connection', async () => {
    const be = await tlsBackend();
    const lb = await lbTo(be, [{ path: '/', proxyPass: 'https://backend', proxyBuffering: false }]);
    const r = await request(`${lb.url}/big`);
    expect(r.status).toBe(200);
    expect(r.body.length).toBe(32 * 64 * 1024);
  });

  it('keeps the TLS connection alive: 20 sequential requests, one handshake', async () => {
    const be = await tlsBackend();
    const lb = await lbTo(be);
    for (let i = 0; i < 20; i++) expect((await request(`${lb.url}/r${i}`)).status).toBe(200);
    expect(be.connections.length).toBe(1);
  });

  it('offers the last TLS session when it reconnects (keepalive 0: a connection per request)', async () => {
    const be = await tlsBackend();
    const lb = await lbTo(be, undefined, { keepalive: 0 });
    for (let i = 0; i < 4; i++) expect((await request(`${lb.url}/r${i}`)).status).toBe(200);
    expect(be.connections.length).toBe(4);
    expect(be.connections[0]!.resumed).toBe(false);
    expect(be.connections.slice(1).some((c) => c.resumed)).toBe(true);
  });

  it('passes a websocket upgrade through the TLS connection', async () => {
    const be = await tlsBackend();
    be.server.on('upgrade', (_req: http.IncomingMessage, socket: net.Socket) => {
      socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n');
      socket.pipe(socket);
    });
    const lb = await lbTo(be);
    const socket = await new Promise<net.Socket>((resolve, reject) => {
      const req = http.request(`${lb.url}/chat`, {
        agent: false,
        headers: { Connection: 'Upgrade', Upgrade: 'websocket', 'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==', 'Sec-WebSocket-Version': '13' },
      });
      req.on('upgrade', (_r, s: net.Socket) => resolve(s));
      req.on('response', (r) => reject(new Error(`no upgrade: ${r.statusCode}`)));
      req.on('error', reject);
      req.end();
    });
    const echoed = await new Promise<string>((resolve) => {
      let text = '';
      socket.on('data', (d: Buffer) => {
        text += d.toString();
        if (text.length >= 5) resolve(text);
      });
      socket.write('hello');
    });
    socket.destroy();
    expect(echoed).toBe('hello');
  });
});

describe('proxySslVerify', () => {
  const peerState = (lb: Awaited<ReturnType<typeof lbTo>>, be: TlsBackend) => lb.lb.upstreams.get('backend')!.find(be.address)!.state;

  it('passes with the CA that issued the chain', async () => {
    const be = await tlsBackend();
    const lb = await lbTo(be, [{ path: '/', proxyPass: 'https://backend', proxySslVerify: true, proxySslTrustedCertificate: rightCa }]);
    expect((await request(`${lb.url}/`)).status).toBe(200);
    expect(peerState(lb, be).failedRequests).toBe(0);
  });

  it('fails with another CA: 502, counted against the server', async () => {
    const be = await tlsBackend();
    const lb = await lbTo(be, [{ path: '/', proxyPass: 'https://backend', proxySslVerify: true, proxySslTrustedCertificate: wrongCa }]);
    expect((await request(`${lb.url}/`)).status).toBe(502);
    expect(peerState(lb, be).failedRequests).toBe(1);
  });

  it('fails with a name the certificate does not have, per location on one upstream', async () => {
    const be = await tlsBackend();
    const lb = await lbTo(be, [
      { path: '/', proxyPass: 'https://backend', proxySslVerify: true, proxySslTrustedCertificate: rightCa },
      { path: '/app/', proxyPass: 'https://backend', proxySslVerify: true, proxySslTrustedCertificate: rightCa, proxySslName: 'app.internal' },
      { path: '/wrong/', proxyPass: 'https://backend', proxySslVerify: true, proxySslTrustedCertificate: rightCa, proxySslName: 'other.internal' },
    ]);
    expect((await request(`${lb.url}/`)).status).toBe(200);
    expect((await request(`${lb.url}/app/`)).status).toBe(200);
    expect((await request(`${lb.url}/wrong/`)).status).toBe(502);
    expect(peerState(lb, be).failedRequests).toBe(1);
    // One pool per setting: / and /app/ each opened a connection (/wrong/ never completed its
    // handshake), and / goes on over its own kept-alive one.
    expect((await request(`${lb.url}/again`)).status).toBe(200);
    expect(be.connections.length).toBe(2);
  });

  it('is off by default: another CA and name pass unverified', async () => {
    const be = await tlsBackend();
    const lb = await lbTo(be, [{ path: '/', proxyPass: 'https://backend', proxySslTrustedCertificate: wrongCa, proxySslName: 'other.internal' }]);
    expect((await request(`${lb.url}/`)).status).toBe(200);
  });

  it('a trusted certificate file that does not load fails the start, naming the file', async () => {
    const be = await tlsBackend();
    const missing = `${pki.dir}/no-such-ca.pem`;
    await expect(lbTo(be, [{ path: '/', proxyPass: 'https://backend', proxySslVerify: true, proxySslTrustedCertificate: missing }]))
      .rejects.toThrow(`${missing}: cannot read the trusted certificate file: ENOENT`);
    const notPem = pki.write('not-a-ca.pem', 'hello\n');
    await expect(lbTo(be, [{ path: '/', proxyPass: 'https://backend', proxySslVerify: true, proxySslTrustedCertificate: notPem }]))
      .rejects.toThrow(`${notPem}: no PEM certificate`);
  });
});

describe('trusted certificates on reload and check', () => {
  it('a reload re-reads the file: another CA fails verification, an unreadable file fails the reload and nothing changes', async () => {
    const be = await tlsBackend();
    const port = await freePort();
    const raw = (ca: string): Record<string, unknown> => ({
      servers: [{ listen: [`127.0.0.1:${port}`], locations: [{ path: '/', proxyPass: 'https://backend', proxySslVerify: true, proxySslTrustedCertificate: ca }] }],
      upstreams: { backend: { servers: [{ address: be.address, maxFails: 0 }] } },
    });
    const { lb } = await scope.lb(raw(rightCa));
    const url = `http://127.0.0.1:${port}/`;
    expect((await request(url)).status).toBe(200);
    const missing = `${pki.dir}/gone-ca.pem`;
    await expect(lb.reload(await loadConfig(raw(missing), '<test>'))).rejects.toThrow(`${missing}: cannot read the trusted certificate file`);
    expect((await request(url)).status).toBe(200);
    await lb.reload(await loadConfig(raw(wrongCa), '<test>'));
    expect((await request(url)).status).toBe(502);
    await lb.reload(await loadConfig(raw(rightCa), '<test>'));
    expect((await request(url)).status).toBe(200);
  });

  it('check reports a trusted certificate file that does not load', async () => {
    const file = pki.write('lb.json', JSON.stringify({
      servers: [{ listen: ['127.0.0.1:8080'], locations: [{ path: '/', proxyPass: 'https://backend', proxySslVerify: true, proxySslTrustedCertificate: 'missing-ca.pem' }] }],
      upstreams: { backend: { servers: [{ address: '127.0.0.1:8443' }] } },
    }));
    const good = pki.write('lb-good.json', readFileSync(file, 'utf8').replace('missing-ca.pem', rightCa));
    const stderr: string[] = [];
    const spyErr = vi.spyOn(process.stderr, 'write').mockImplementation((chunk) => { stderr.push(String(chunk)); return true; });
    const spyOut = vi.spyOn(process.stdout, 'write').mockImplementation(() => true);
    try {
      expect(await checkCommand(file)).toBe(1);
      expect(await checkCommand(good)).toBe(0);
    } finally {
      spyErr.mockRestore();
      spyOut.mockRestore();
    }
    expect(stderr.join('')).toContain(`${pki.dir}/missing-ca.pem: cannot read the trusted certificate file: ENOENT`);
  });
});

describe('proxySslServerName', () => {
  it('sends no SNI by default, the proxySslName with proxySslServerName, none for an IP address', async () => {
    const be = await tlsBackend();
    const lb = await lbTo(be, [
      { path: '/', proxyPass: 'https://backend' },
      { path: '/sni/', proxyPass: 'https://backend', proxySslServerName: true },
      { path: '/named/', proxyPass: 'https://backend', proxySslServerName: true, proxySslName: 'app.internal' },
      { path: '/ip/', proxyPass: `https://${be.address}`, proxySslServerName: true },
    ]);
    for (const path of ['/', '/sni/', '/named/', '/ip/']) expect((await request(`${lb.url}${path}`)).status).toBe(200);
    expect(be.connections.map((c) => c.servername)).toEqual([null, 'backend', 'app.internal', null]);
  });
});

describe('proxySslProtocols', () => {
  it('["TLSv1.3"] against a TLS 1.2-only backend fails with 502; the default passes', async () => {
    const be = await tlsBackend({ maxVersion: 'TLSv1.2' });
    const lb = await lbTo(be, [
      { path: '/', proxyPass: 'https://backend' },
      { path: '/13/', proxyPass: 'https://backend', proxySslProtocols: ['TLSv1.3'] },
    ]);
    expect((await request(`${lb.url}/`)).status).toBe(200);
    expect((await request(`${lb.url}/13/`)).status).toBe(502);
    expect(lb.lb.upstreams.get('backend')!.find(be.address)!.state.failedRequests).toBe(1);
  });
});
