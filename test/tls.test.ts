/**
 * TLS termination end to end (issue 16): real certificates made with openssl in the test
 * (test/helpers/tls-certs.ts), sessionlb in-process, node's https/tls clients.
 * - two servers on one `ssl` address chosen by SNI, no SNI gets the default server's certificate;
 *   servers of several key types on one address; a plain HTTP request to the address;
 * - a request over TLS reaches the backend with X-Forwarded-Proto: https, and the cookie-insert
 *   mode's cookie gets Secure; TLS 1.1 is refused by default;
 * - handshake metrics and the certificate expiry gauge;
 * - reload: new certificate files are served to new connections while an open keep-alive
 *   connection goes on; a key that does not match fails the reload and the old certificate stays;
 * - the certificates in use in /status (expiry, state; never a key), in one process and through
 *   a 2-worker cluster's primary, before and after a reload.
 */
import https from 'node:https';
import tls from 'node:tls';
import { copyFileSync, readFileSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/load.js';
import { freePort, request } from './helpers/net.js';
import { useScope } from './helpers/scope.js';
import { TestPki, type Issued } from './helpers/tls-certs.js';
import { until } from './helpers/faults.js';
import { startProxyProcess, writeConfig } from './helpers/child.js';

const scope = useScope();
const pki = new TestPki();
afterAll(() => pki.remove());

/** The leaf certificate a TLS handshake with `servername` (undefined: no SNI) gets. */
function peerCertificate(port: number, servername: string | undefined, extra: tls.ConnectionOptions = {}): Promise<X509Certificate> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, servername, rejectUnauthorized: false, ...extra }, () => {
      const raw = socket.getPeerX509Certificate();
      socket.resume(); // read what the server sends (TLS 1.3 session tickets) so that closing sends no reset
      socket.end();
      socket.once('close', () => {
        if (raw === undefined) reject(new Error('no peer certificate'));
        else resolve(raw);
      });
    });
    socket.on('error', reject);
  });
}

interface Reply { status: number; headers: Record<string, string | string[] | undefined>; body: string }

function httpsGet(port: number, servername: string, path = '/', agent?: https.Agent): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = https.request({
      host: '127.0.0.1', port, path, servername, headers: { host: servername }, rejectUnauthorized: false, agent: agent ?? false,
    }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString() }));
    });
    req.on('error', reject);
    req.end();
  });
}

async function setup(): Promise<{ port: number; adminPort: number; shopCert: string; shopKey: string; raw: Record<string, unknown>; reload: () => Promise<void> }> {
  // The backend answers with the X-Forwarded-Proto it got.
  const be = await scope.backend('a', (req, res) => {
    res.writeHead(200, { 'Content-Type': 'text/plain' });
    res.end(`proto=${req.headers['x-forwarded-proto'] ?? ''}`);
  });
  const shop = pki.issue('shop.test');
  const api = pki.issue('api.test');
  // The files the config names; a reload test replaces them in place.
  const shopCert = pki.concat(`shop-${Date.now()}.pem`, shop.cert, pki.intermediate.cert);
  const shopKey = pki.concat(`shop-${Date.now()}.key`, shop.key);
  const port = await freePort();
  const listen = [`127.0.0.1:${port} ssl`];
  const raw = {
    servers: [
      { listen, serverName: ['shop.test'], ssl: { certificate: shopCert, certificateKey: shopKey }, locations: [{ path: '/', proxyPass: 'http://backend' }] },
      { listen, serverName: ['api.test'], ssl: { certificate: pki.concat(`api-${Date.now()}.pem`, api.cert, pki.intermediate.cert), certificateKey: api.key }, locations: [{ path: '/', proxyPass: 'http://backend' }] },
    ],
    upstreams: { backend: { sticky: { mode: 'cookie', cookieKey: 'k'.repeat(24) }, servers: [{ address: be.address }] } },
  };
  const lb = await scope.lb(raw);
  return {
    port, adminPort: lb.adminPort, shopCert, shopKey, raw,
    reload: async () => lb.lb.reload(await loadConfig({ ...raw, admin: { listen: `127.0.0.1:${lb.adminPort}` } }, '<test>')),
  };
}

describe('TLS termination', () => {
  it('SNI chooses the server (and its certificate); no SNI gets the default server; over TLS the backend sees https and the cookie is Secure', async () => {
    const { port, adminPort } = await setup();
    expect((await peerCertificate(port, 'shop.test')).subject).toBe('CN=shop.test');
    expect((await peerCertificate(port, 'api.test')).subject).toBe('CN=api.test');
    expect((await peerCertificate(port, undefined)).subject).toBe('CN=shop.test'); // the first server is the default
    expect((await peerCertificate(port, 'other.test')).subject).toBe('CN=shop.test');

    const res = await httpsGet(port, 'shop.test');
    expect(res.status).toBe(200);
    expect(res.body).toBe('proto=https');
    const cookie = ([] as string[]).concat(res.headers['set-cookie'] ?? []).find((c) => c.startsWith('SESSIONLB='));
    expect(cookie).toMatch(/; Secure$/);

    const metrics = (await request(`http://127.0.0.1:${adminPort}/metrics`)).body;
    expect(metrics).toMatch(/sessionlb_tls_handshakes_total\{server="shop\.test",protocol="TLSv1\.3",resumed="false"\} [1-9]/);
    expect(metrics).toMatch(/sessionlb_tls_handshakes_total\{server="api\.test",protocol="TLSv1\.3",resumed="false"\} [1-9]/);
  });

  it('servers sharing an ssl address each hand out their own certificates, whatever their key types (ECDSA beside RSA, or both for one server)', async () => {
    const port = await freePort();
    const listen = [`127.0.0.1:${port} ssl`];
    const ec = pki.issue('ec.test');
    const rsa = pki.issue('rsa.test', { kind: 'rsa' });
    const bothEc = pki.issue('both-ec.test', { names: ['both.test'] });
    const bothRsa = pki.issue('both-rsa.test', { kind: 'rsa', names: ['both.test'] });
    await scope.lb({
      servers: [
        { listen, serverName: ['ec.test'], ssl: { certificate: ec.cert, certificateKey: ec.key }, locations: [{ path: '/', proxyPass: 'http://backend' }] },
        { listen, serverName: ['rsa.test'], ssl: { certificate: rsa.cert, certificateKey: rsa.key }, locations: [{ path: '/', proxyPass: 'http://backend' }] },
        { listen, serverName: ['both.test'], ssl: { certificate: [bothEc.cert, bothRsa.cert], certificateKey: [bothEc.key, bothRsa.key] }, locations: [{ path: '/', proxyPass: 'http://backend' }] },
      ],
      upstreams: { backend: { servers: [{ address: '127.0.0.1:1' }] } },
    });
    expect((await peerCertificate(port, 'rsa.test')).subject).toBe('CN=rsa.test');
    expect((await peerCertificate(port, 'ec.test')).subject).toBe('CN=ec.test');
    expect((await peerCertificate(port, undefined)).subject).toBe('CN=ec.test');
    expect((await peerCertificate(port, 'both.test', { sigalgs: 'ECDSA+SHA256' })).subject).toBe('CN=both-ec.test');
    expect((await peerCertificate(port, 'both.test', { sigalgs: 'RSA-PSS+SHA256:RSA+SHA256' })).subject).toBe('CN=both-rsa.test');
  });

  it('a plain HTTP request to an ssl address gets nginx\'s 400 "plain HTTP request was sent to HTTPS port", counted as not_tls', async () => {
    const { port, adminPort } = await setup();
    const res = await request(`http://127.0.0.1:${port}/`);
    expect(res.status).toBe(400);
    expect(res.body).toContain('The plain HTTP request was sent to HTTPS port');
    const metrics = (await request(`http://127.0.0.1:${adminPort}/metrics`)).body;
    expect(metrics).toMatch(/sessionlb_tls_handshake_errors_total\{reason="not_tls"\} 1/);
  });

  it('TLS 1.1 is refused by default (nginx ssl_protocols TLSv1.2 TLSv1.3), counted as a protocol error; TLS 1.2 works', async () => {
    const { port, adminPort } = await setup();
    await expect(peerCertificate(port, 'shop.test', { maxVersion: 'TLSv1.1', minVersion: 'TLSv1.1', ciphers: 'DEFAULT:@SECLEVEL=0' })).rejects.toThrow();
    expect((await peerCertificate(port, 'shop.test', { maxVersion: 'TLSv1.2' })).subject).toBe('CN=shop.test');
    const metrics = (await request(`http://127.0.0.1:${adminPort}/metrics`)).body;
    expect(metrics).toMatch(/sessionlb_tls_handshake_errors_total\{reason="protocol"\} [1-9]/);
    expect(metrics).toMatch(/sessionlb_tls_handshakes_total\{server="shop\.test",protocol="TLSv1\.2",resumed="false"\} 1/);
  });

  it('the expiry of every certificate in use is a gauge (Unix time of notAfter)', async () => {
    const { adminPort, shopCert } = await setup();
    const notAfter = Math.floor(Date.parse(new X509Certificate(readFileSync(shopCert)).validTo) / 1000);
    const metrics = (await request(`http://127.0.0.1:${adminPort}/metrics`)).body;
    const line = metrics.split('\n').find((l) => l.startsWith('sessionlb_tls_certificate_expiry_timestamp_seconds{server="shop.test"'));
    expect(line).toBe(`sessionlb_tls_certificate_expiry_timestamp_seconds{server="shop.test",certificate="${shopCert}"} ${notAfter}`);
  });

  it('reload with renewed files: new connections get the new certificate, an open keep-alive connection goes on; a key that does not match fails the reload and the old certificate stays', async () => {
    const { port, shopCert, shopKey, reload } = await setup();
    const before = await peerCertificate(port, 'shop.test');
    const agent = new https.Agent({ keepAlive: true, maxSockets: 1 });
    scope.cleanup.push(async () => agent.destroy());
    expect((await httpsGet(port, 'shop.test', '/', agent)).status).toBe(200);

    // A renewal, as certbot does it: new files under the same names.
    const renewed = pki.issue('shop.test');
    copyFileSync(pki.concat('renewed.pem', renewed.cert, pki.intermediate.cert), shopCert);
    copyFileSync(renewed.key, shopKey);
    await reload();
    const after = await peerCertificate(port, 'shop.test');
    expect(after.serialNumber).not.toBe(before.serialNumber);
    expect(after.serialNumber).toBe(new X509Certificate(readFileSync(renewed.cert)).serialNumber);
    const open = await httpsGet(port, 'shop.test', '/', agent); // the connection opened before the reload
    expect(open.status).toBe(200);

    // A key that belongs to another certificate: the reload fails, naming the file; the renewed certificate stays.
    copyFileSync(pki.issue('other.test').key, shopKey);
    await expect(reload()).rejects.toThrow(new RegExp(shopKey.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')));
    expect((await peerCertificate(port, 'shop.test')).serialNumber).toBe(after.serialNumber);
  });
});

/** A 2-worker sessionlb process with one ssl server (shop.test), once both workers answer the primary. */
async function twoWorkerTlsCluster(name: string): Promise<{ port: number; adminPort: number; shop: Issued }> {
  const be = await scope.backend('a');
  const shop = pki.issue('shop.test');
  const port = await freePort();
  const adminPort = await freePort();
  const file = writeConfig({
    workers: 2,
    accessLog: false,
    admin: { listen: `127.0.0.1:${adminPort}` },
    servers: [{ listen: [`127.0.0.1:${port} ssl`], serverName: ['shop.test'], ssl: { certificate: shop.cert, certificateKey: shop.key }, locations: [{ path: '/', proxyPass: 'http://backend' }] }],
    upstreams: { backend: { servers: [{ address: be.address }] } },
  }, name);
  const proc = await startProxyProcess(file, port);
  scope.cleanup.push(() => proc.kill());
  // The port answers once one worker listens: wait until both answer the primary.
  expect(await until(async () => {
    const status = JSON.parse((await request(`http://127.0.0.1:${adminPort}/status`)).body) as { workers: { answered: boolean }[] };
    return status.workers.filter((w) => w.answered).length === 2;
  })).toBe(true);
  return { port, adminPort, shop };
}

describe('TLS session resumption with workers', () => {
  it('a session ticket from one connection resumes on every later connection, whichever of 2 workers accepts it', async () => {
    const { port, adminPort } = await twoWorkerTlsCluster('tls-resume-workers.json');
    // A TLS 1.3 ticket arrives after the handshake ('session' event).
    const ticket = await new Promise<Buffer>((resolve, reject) => {
      const socket = tls.connect({ host: '127.0.0.1', port, servername: 'shop.test', rejectUnauthorized: false });
      socket.once('session', (session: Buffer) => { resolve(session); socket.destroy(); });
      socket.on('error', reject);
    });
    let reused = 0;
    for (let i = 0; i < 20; i++) {
      // The cluster hands new connections to the workers in turn: about half go to each.
      reused += await new Promise<number>((resolve, reject) => {
        const socket = tls.connect({ host: '127.0.0.1', port, servername: 'shop.test', rejectUnauthorized: false, session: ticket }, () => {
          const r = socket.isSessionReused() ? 1 : 0;
          // A request and its answer, so that the server saw the whole handshake too.
          socket.write('GET / HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n');
          socket.resume();
          socket.once('end', () => { socket.destroy(); resolve(r); });
        });
        socket.on('error', reject);
      });
    }
    expect(reused).toBe(20);
    const metrics = (await request(`http://127.0.0.1:${adminPort}/metrics`)).body;
    expect(metrics).toMatch(/sessionlb_tls_handshakes_total\{server="shop\.test",protocol="TLSv1\.3",resumed="true"\} 20/);
  });
});

describe('TLS metrics with workers', () => {
  it('the certificate expiry gauge of a 2-worker cluster is the certificate\'s notAfter, not the sum of the workers\' reports', async () => {
    const { adminPort, shop } = await twoWorkerTlsCluster('tls-workers.json');
    const notAfter = Math.floor(Date.parse(new X509Certificate(readFileSync(shop.cert)).validTo) / 1000);
    const metrics = (await request(`http://127.0.0.1:${adminPort}/metrics`)).body;
    const line = metrics.split('\n').find((l) => l.startsWith('sessionlb_tls_certificate_expiry_timestamp_seconds{'));
    expect(line).toBe(`sessionlb_tls_certificate_expiry_timestamp_seconds{server="shop.test",certificate="${shop.cert}"} ${notAfter}`);
  });
});

const DAY = 24 * 3600 * 1000;

interface CertificateDoc {
  server: string; address: string; file: string; commonName: string | null; names: string[]; keyType: string;
  notBefore: string; notAfter: string; daysLeft: number; state: string;
}

/** notAfter of a certificate file's leaf, ISO, as /status gives it. */
function notAfterOf(file: string): string {
  return new Date(Date.parse(new X509Certificate(readFileSync(file)).validTo)).toISOString();
}

async function statusText(adminPort: number): Promise<string> {
  const res = await request(`http://127.0.0.1:${adminPort}/status`);
  expect(res.status).toBe(200);
  return res.body;
}

async function certificatesOf(adminPort: number): Promise<CertificateDoc[]> {
  return (JSON.parse(await statusText(adminPort)) as { certificates: CertificateDoc[] }).certificates;
}

function sslServer(listen: string[], name: string, cert: { cert: string; key: string }): Record<string, unknown> {
  return { listen, serverName: [name], ssl: { certificate: cert.cert, certificateKey: cert.key }, locations: [{ path: '/', proxyPass: 'http://backend' }] };
}

describe('certificates in /status', () => {
  it('lists every certificate in use: server, address, file, names, notAfter, days left and ok / expiring (14 days) / expired; never a key', async () => {
    const now = Date.now();
    const shop = pki.issue('shop.test', { names: ['shop.test', 'www.shop.test'] });
    const soon = pki.issue('soon.test', { notAfter: now + 5 * DAY });
    const old = pki.issue('old.test', { notBefore: now - 30 * DAY, notAfter: now - DAY });
    const port = await freePort();
    const listen = [`127.0.0.1:${port} ssl`];
    const { adminPort } = await scope.lb({
      servers: [sslServer(listen, 'shop.test', shop), sslServer(listen, 'soon.test', soon), sslServer(listen, 'old.test', old)],
      upstreams: { backend: { servers: [{ address: '127.0.0.1:1' }] } },
    });
    const text = await statusText(adminPort);
    const certs = (JSON.parse(text) as { certificates: CertificateDoc[] }).certificates;
    const address = `127.0.0.1:${port}`;
    expect(certs).toEqual([
      { server: 'shop.test', address, file: shop.cert, commonName: 'shop.test', names: ['shop.test', 'www.shop.test'], keyType: 'EC',
        notBefore: expect.any(String), notAfter: notAfterOf(shop.cert), daysLeft: 89, state: 'ok' },
      { server: 'soon.test', address, file: soon.cert, commonName: 'soon.test', names: ['soon.test'], keyType: 'EC',
        notBefore: expect.any(String), notAfter: notAfterOf(soon.cert), daysLeft: 4, state: 'expiring' },
      { server: 'old.test', address, file: old.cert, commonName: 'old.test', names: ['old.test'], keyType: 'EC',
        notBefore: expect.any(String), notAfter: notAfterOf(old.cert), daysLeft: -1, state: 'expired' },
    ]);
    // Nothing of a key: neither its content nor its file.
    expect(text).not.toMatch(/PRIVATE KEY|keyFile/);
    for (const c of [shop, soon, old]) expect(text).not.toContain(c.key);
  });

  it('is empty without an ssl server', async () => {
    const be = await scope.backend('a');
    const { adminPort } = await scope.lb({ upstreams: { backend: { servers: [{ address: be.address }] } } });
    expect(await certificatesOf(adminPort)).toEqual([]);
  });

  it('after a reload that renews the certificate file, lists the new certificate', async () => {
    const soon = pki.issue('shop.test', { notAfter: Date.now() + 5 * DAY });
    const cert = pki.concat(`status-shop-${Date.now()}.pem`, soon.cert);
    const key = pki.concat(`status-shop-${Date.now()}.key`, soon.key);
    const port = await freePort();
    const raw = {
      servers: [sslServer([`127.0.0.1:${port} ssl`], 'shop.test', { cert, key })],
      upstreams: { backend: { servers: [{ address: '127.0.0.1:1' }] } },
    };
    const lb = await scope.lb(raw);
    const before = await certificatesOf(lb.adminPort);
    expect(before.map((c) => [c.file, c.notAfter, c.state])).toEqual([[cert, notAfterOf(soon.cert), 'expiring']]);

    const renewed = pki.issue('shop.test');
    copyFileSync(renewed.cert, cert);
    copyFileSync(renewed.key, key);
    await lb.lb.reload(await loadConfig({ ...raw, admin: { listen: `127.0.0.1:${lb.adminPort}` } }, '<test>'));
    const after = await certificatesOf(lb.adminPort);
    expect(after.map((c) => [c.file, c.notAfter, c.state, c.daysLeft])).toEqual([[cert, notAfterOf(renewed.cert), 'ok', 89]]);
  });

  it('a 2-worker cluster lists them through the primary (from the workers, each certificate once), and the new one after SIGHUP', async () => {
    const be = await scope.backend('a');
    const shop = pki.issue('shop.test');
    const soon = pki.issue('soon.test', { notAfter: Date.now() + 5 * DAY });
    const soonCert = pki.concat(`cluster-soon-${Date.now()}.pem`, soon.cert);
    const soonKey = pki.concat(`cluster-soon-${Date.now()}.key`, soon.key);
    const port = await freePort();
    const adminPort = await freePort();
    const listen = [`127.0.0.1:${port} ssl`];
    const file = writeConfig({
      workers: 2,
      accessLog: false,
      admin: { listen: `127.0.0.1:${adminPort}` },
      servers: [sslServer(listen, 'shop.test', shop), sslServer(listen, 'soon.test', { cert: soonCert, key: soonKey })],
      upstreams: { backend: { servers: [{ address: be.address }] } },
    }, 'tls-status-workers.json');
    const proc = await startProxyProcess(file, port);
    scope.cleanup.push(() => proc.kill());
    type Doc = { pid: number; workers: Array<{ answered: boolean }>; certificates: CertificateDoc[] };
    const status = async (): Promise<Doc> => JSON.parse(await statusText(adminPort)) as Doc;
    await expect.poll(async () => (await status()).workers.filter((w) => w.answered).length, { timeout: 10_000 }).toBe(2);
    const doc = await status();
    expect(doc.pid).toBe(proc.pid);
    expect(doc.certificates.map((c) => [c.server, c.address, c.file, c.notAfter, c.state])).toEqual([
      ['shop.test', `127.0.0.1:${port}`, shop.cert, notAfterOf(shop.cert), 'ok'],
      ['soon.test', `127.0.0.1:${port}`, soonCert, notAfterOf(soon.cert), 'expiring'],
    ]);

    // Renewed in place, then SIGHUP to the primary: every worker reloads and reports the new one.
    const renewed = pki.issue('soon.test');
    copyFileSync(renewed.cert, soonCert);
    copyFileSync(renewed.key, soonKey);
    proc.child.kill('SIGHUP');
    await expect.poll(async () => (await status()).certificates.map((c) => [c.server, c.notAfter, c.state]), { timeout: 10_000 }).toEqual([
      ['shop.test', notAfterOf(shop.cert), 'ok'],
      ['soon.test', notAfterOf(renewed.cert), 'ok'],
    ]);
  });
});
