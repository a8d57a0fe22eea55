/**
 * TLS termination end to end (issue 16): real certificates made with openssl in the test
 * (test/helpers/tls-certs.ts), sessionlb in-process, node's https/tls clients.
 * - two servers on one `ssl` address chosen by SNI, no SNI gets the default server's certificate;
 *   servers of several key types on one address; a plain HTTP request to the address;
 * - a request over TLS reaches the backend with X-Forwarded-Proto: https, and the cookie-insert
 *   mode's cookie gets Secure; TLS 1.1 is refused by default;
 * - handshake metrics and the certificate expiry gauge;
 * - reload: new certificate files are served to new connections while an open keep-alive
 *   connection goes on; a key that does not match fails the reload and the old certificate stays.
 */
import https from 'node:https';
import tls from 'node:tls';
import { copyFileSync, readFileSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/load.js';
import { freePort, request } from './helpers/net.js';
import { useScope } from './helpers/scope.js';
import { TestPki } from './helpers/tls-certs.js';
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

describe('TLS metrics with workers', () => {
  it('the certificate expiry gauge of a 2-worker cluster is the certificate\'s notAfter, not the sum of the workers\' reports', async () => {
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
    }, 'tls-workers.json');
    const proc = await startProxyProcess(file, port);
    scope.cleanup.push(() => proc.kill());
    const notAfter = Math.floor(Date.parse(new X509Certificate(readFileSync(shop.cert)).validTo) / 1000);
    const metrics = (await request(`http://127.0.0.1:${adminPort}/metrics`)).body;
    const line = metrics.split('\n').find((l) => l.startsWith('sessionlb_tls_certificate_expiry_timestamp_seconds{'));
    expect(line).toBe(`sessionlb_tls_certificate_expiry_timestamp_seconds{server="shop.test",certificate="${shop.cert}"} ${notAfter}`);
  });
});
