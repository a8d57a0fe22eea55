/**
 * Active health checks of upstreams reached over "https://": real https-only backends on 127.0.0.1
 * with certificates made by openssl in the test (test/helpers/tls-certs.ts), sessionlb in-process.
 * - an https-only backend with an http check is probed over TLS, found healthy, and serves;
 * - a /health that answers 500 over TLS makes the server unhealthy ("status 500");
 * - proxySslVerify with a backend certificate from another CA fails the probe, "certificate verify failed: ...";
 * - a `tcp` check completes the TLS handshake, verification included;
 * - an upstream reached over http:// and https:// is probed with the first https location's settings (its SNI);
 * - a reload from http:// to https:// switches the probes to TLS.
 */
import https from 'node:https';
import type net from 'node:net';
import type tls from 'node:tls';
import { readFileSync } from 'node:fs';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/load.js';
import { freePort, request } from './helpers/net.js';
import { startLBWithLog, waitFor } from './helpers/capture-log.js';
import { TestPki } from './helpers/tls-certs.js';

const pki = new TestPki();
const otherPki = new TestPki();
afterAll(() => {
  pki.remove();
  otherPki.remove();
});

const leaf = pki.issue('backend', { names: ['backend', 'app.internal'] });
const chain = pki.concat('backend-chain.pem', leaf.cert, pki.intermediate.cert);
const otherLeaf = otherPki.issue('backend', { names: ['backend', 'app.internal'] });
const otherChain = otherPki.concat('backend-chain.pem', otherLeaf.cert, otherPki.intermediate.cert);
const rightCa = pki.root.cert;

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!().catch(() => undefined);
});

interface TlsHealthBackend {
  address: string;
  /** What /health answers now. */
  health: { status: number };
  /** /health requests received (over TLS), and the SNI of each TLS connection (null: none). */
  probes: number;
  servernames: (string | null)[];
}

/** An https-only backend: /health answers `health.status`, anything else 200 "served". */
async function tlsHealthBackend(certChain = chain, key = leaf.key): Promise<TlsHealthBackend> {
  const b: TlsHealthBackend = { address: '', health: { status: 200 }, probes: 0, servernames: [] };
  const server = https.createServer({ key: readFileSync(key), cert: readFileSync(certChain) }, (req, res) => {
    req.resume();
    if (req.url === '/health') {
      b.probes++;
      res.writeHead(b.health.status, { 'Content-Type': 'text/plain' });
      res.end(b.health.status === 200 ? 'ok' : 'failing');
      return;
    }
    res.writeHead(200, { 'Content-Type': 'text/plain' });
    res.end('served');
  });
  server.on('secureConnection', (s: tls.TLSSocket) => {
    const sni = (s as tls.TLSSocket & { servername?: string | false }).servername;
    b.servernames.push(typeof sni === 'string' ? sni : null);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  b.address = `127.0.0.1:${(server.address() as net.AddressInfo).port}`;
  cleanups.push(() => new Promise<void>((resolve) => {
    server.closeAllConnections();
    server.close(() => resolve());
  }));
  return b;
}

const CHECK = { path: '/health', interval: '100ms', timeout: '1s', fails: 1, passes: 1 };

/** sessionlb with upstream "backend" = `be` (checked with `check`), and these locations. */
async function lbTo(be: TlsHealthBackend, locations: Record<string, unknown>[], check: Record<string, unknown> = CHECK) {
  const port = await freePort();
  const run = await startLBWithLog({
    servers: [{ listen: [`127.0.0.1:${port}`], locations }],
    upstreams: { backend: { servers: [{ address: be.address }], healthCheck: check } },
  });
  cleanups.push(() => run.stop());
  return { ...run, url: `http://127.0.0.1:${port}` };
}

describe('health checks of https:// upstreams', () => {
  it('an https-only backend with an http check is probed over TLS, healthy, and serves', async () => {
    const be = await tlsHealthBackend();
    const run = await lbTo(be, [{ path: '/', proxyPass: 'https://backend' }], { ...CHECK, mandatory: true });
    const peer = () => run.lb.upstreams.get('backend')!.find(be.address)!;
    expect(await waitFor(() => peer().state.lastProbe !== null)).toBe(true);
    expect(peer().state.lastProbe).toMatchObject({ ok: true, detail: '200' });
    expect(peer().state.healthy).toBe(true);
    expect(be.probes).toBeGreaterThan(0);
    const r = await request(`${run.url}/page`);
    expect(r.status).toBe(200);
    expect(r.body).toBe('served');
  });

  it('a /health that answers 500 over TLS marks the server unhealthy', async () => {
    const be = await tlsHealthBackend();
    be.health.status = 500;
    const run = await lbTo(be, [{ path: '/', proxyPass: 'https://backend' }]);
    const peer = () => run.lb.upstreams.get('backend')!.find(be.address)!;
    expect(await waitFor(() => !peer().state.healthy)).toBe(true);
    expect(peer().state.lastProbe).toMatchObject({ ok: false, detail: 'status 500' });
    expect(be.probes).toBeGreaterThan(0);
    expect(run.records.some((r) => r.msg === `upstream server ${be.address} is unhealthy: health check failed 1 time (status 500)`)).toBe(true);
    // And back once it answers 200 over TLS again.
    be.health.status = 200;
    expect(await waitFor(() => peer().state.healthy)).toBe(true);
  });

  it('proxySslVerify: a backend certificate from another CA fails the probe with "certificate verify failed"', async () => {
    const be = await tlsHealthBackend(otherChain, otherLeaf.key);
    const run = await lbTo(be, [{ path: '/', proxyPass: 'https://backend', proxySslVerify: true, proxySslTrustedCertificate: rightCa }]);
    const peer = () => run.lb.upstreams.get('backend')!.find(be.address)!;
    expect(await waitFor(() => !peer().state.healthy)).toBe(true);
    const detail = peer().state.lastProbe!.detail;
    expect(detail).toMatch(/^certificate verify failed: /);
    expect(detail).toContain('unable to get local issuer certificate');
    expect(be.probes).toBe(0); // no request is sent to a server that failed verification
    expect(run.records.some((r) => r.msg.startsWith(`upstream server ${be.address} is unhealthy`) && r.msg.includes('(certificate verify failed: '))).toBe(true);
  });

  it('proxySslVerify with the right CA and name passes', async () => {
    const be = await tlsHealthBackend();
    const run = await lbTo(be, [{ path: '/', proxyPass: 'https://backend', proxySslVerify: true, proxySslTrustedCertificate: rightCa }],
      { ...CHECK, mandatory: true });
    const peer = () => run.lb.upstreams.get('backend')!.find(be.address)!;
    expect(await waitFor(() => be.probes >= 2)).toBe(true);
    expect(peer().state.lastProbe).toMatchObject({ ok: true, detail: '200' });
    expect(peer().state.healthy).toBe(true);
  });

  it('a tcp check completes the TLS handshake: another CA fails it, the right one passes', async () => {
    const wrong = await tlsHealthBackend(otherChain, otherLeaf.key);
    const tcp = { type: 'tcp', interval: '100ms', timeout: '1s', fails: 1, passes: 1 };
    const locations = [{ path: '/', proxyPass: 'https://backend', proxySslVerify: true, proxySslTrustedCertificate: rightCa }];
    const run = await lbTo(wrong, locations, tcp);
    const peer = () => run.lb.upstreams.get('backend')!.find(wrong.address)!;
    expect(await waitFor(() => !peer().state.healthy)).toBe(true);
    expect(peer().state.lastProbe!.detail).toMatch(/^certificate verify failed: /);

    const right = await tlsHealthBackend();
    const run2 = await lbTo(right, locations, { ...tcp, mandatory: true });
    const peer2 = () => run2.lb.upstreams.get('backend')!.find(right.address)!;
    expect(await waitFor(() => peer2().state.lastProbe !== null)).toBe(true);
    expect(peer2().state.lastProbe).toMatchObject({ ok: true });
    expect(peer2().state.lastProbe!.detail).toMatch(/^connected, TLSv1\.[23]$/);
  });

  it('reached over http:// and https://: probed with the first https location\'s settings (its SNI)', async () => {
    const be = await tlsHealthBackend();
    const run = await lbTo(be, [
      { path: '/plain', proxyPass: 'http://backend' },
      { path: '/a', proxyPass: 'https://backend', proxySslServerName: true, proxySslName: 'app.internal' },
      { path: '/', proxyPass: 'https://backend', proxySslServerName: true },
    ]);
    const peer = () => run.lb.upstreams.get('backend')!.find(be.address)!;
    expect(await waitFor(() => be.probes >= 2)).toBe(true);
    expect(peer().state.lastProbe).toMatchObject({ ok: true, detail: '200' });
    // Every TLS connection so far is a probe's (no request was proxied): each sent the first https location's name.
    expect(be.servernames.length).toBeGreaterThanOrEqual(2);
    expect(new Set(be.servernames)).toEqual(new Set(['app.internal']));
  });

  it('a reload from http:// to https:// switches the probes to TLS', async () => {
    const be = await tlsHealthBackend();
    // Started with the default location, "/" to http://backend: plain probes of a TLS server fail.
    const run = await startLBWithLog({ upstreams: { backend: { servers: [{ address: be.address }], healthCheck: CHECK } } });
    cleanups.push(() => run.stop());
    const peer = () => run.lb.upstreams.get('backend')!.find(be.address)!;
    expect(await waitFor(() => !peer().state.healthy)).toBe(true);
    expect(be.probes).toBe(0);
    const raw = run.configFor({ upstreams: { backend: { servers: [{ address: be.address }], healthCheck: CHECK } } });
    const servers = raw.servers as Array<Record<string, unknown>>;
    await run.lb.reload(await loadConfig({ ...raw, servers: [{ ...servers[0], locations: [{ path: '/', proxyPass: 'https://backend' }] }] }, '<test>'));
    expect(await waitFor(() => peer().state.healthy)).toBe(true);
    expect(be.probes).toBeGreaterThan(0);
    expect(peer().state.lastProbe).toMatchObject({ ok: true, detail: '200' });
  });
});
