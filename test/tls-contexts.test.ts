/**
 * src/tls/contexts.ts and ticket-keys.ts against a real tls.Server on loopback, with certificates
 * made by `openssl` (test/helpers/tls-certs.ts): SNI by nginx's name rules, the default server
 * without SNI, ECDSA or RSA by what the client supports, TLS 1.1 refused unless listed, a swap
 * that keeps open connections, a failed load that keeps the old set, session tickets.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import tls from 'node:tls';
import net, { type AddressInfo } from 'node:net';
import { inspect } from 'node:util';
import type { SslConfig, TlsProtocol, VirtualServerConfig } from '../src/config/model.js';
import { TlsSites, buildTlsSites } from '../src/tls/contexts.js';
import { TICKET_KEY_BYTES, TicketKeys } from '../src/tls/ticket-keys.js';
import { TlsAcceptor } from '../src/tls/acceptor.js';
import { TestPki, type Issued } from './helpers/tls-certs.js';

const ADDRESS = '127.0.0.1:8443';

function ssl(pairs: Issued[], more: Partial<SslConfig> = {}): SslConfig {
  return {
    certificates: pairs.map((p) => ({ certificate: p.cert, key: p.key })),
    protocols: ['TLSv1.2', 'TLSv1.3'], ciphers: 'HIGH:!aNULL:!MD5', sessionTickets: true, sessionTimeoutMs: 300_000,
    ...more,
  };
}

function vs(index: number, serverNames: string[], sslConfig: SslConfig | null, isDefault = false): VirtualServerConfig {
  return {
    index, serverNames, isDefault, ssl: sslConfig, http2: false, proxyProtocolFrom: [], return: null, addHeaders: [], locations: [],
    listen: [{ host: '127.0.0.1', port: 8443, key: ADDRESS, ssl: true, defaultServer: isDefault, proxyProtocol: false }],
  };
}

interface Hello { cn: string | undefined; socket: tls.TLSSocket }

function connect(port: number, opts: tls.ConnectionOptions = {}): Promise<Hello> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false, ...opts }, () => {
      const cn = socket.getPeerCertificate().subject?.CN;
      resolve({ cn: Array.isArray(cn) ? cn.join(',') : cn, socket });
    });
    socket.once('error', reject);
  });
}

async function cnOf(port: number, opts: tls.ConnectionOptions = {}): Promise<string | undefined> {
  const { cn, socket } = await connect(port, opts);
  socket.destroy();
  return cn;
}

const ECDSA_ONLY = { sigalgs: 'ECDSA+SHA256:ECDSA+SHA384', maxVersion: 'TLSv1.3' as const };
const RSA_ONLY = { sigalgs: 'RSA-PSS+SHA256:RSA+SHA256', maxVersion: 'TLSv1.3' as const };
// TLS 1.2 with cipher suites of one key type only.
const ECDSA_TLS12 = { maxVersion: 'TLSv1.2' as const, ciphers: 'ECDHE-ECDSA-AES128-GCM-SHA256' };
const RSA_TLS12 = { maxVersion: 'TLSv1.2' as const, ciphers: 'ECDHE-RSA-AES128-GCM-SHA256' };

describe('TlsSites', () => {
  let pki: TestPki;
  let aEc: Issued, aRsa: Issued, b: Issued, wild: Issued, a2: Issued;
  const servers: net.Server[] = [];

  beforeAll(() => {
    pki = new TestPki();
    aEc = pki.issue('a-ec', { kind: 'ec', names: ['a.test'] });
    aRsa = pki.issue('a-rsa', { kind: 'rsa', names: ['a.test'] });
    b = pki.issue('b', { names: ['b.test'] });
    wild = pki.issue('wild', { names: ['*.wild.test'] });
    a2 = pki.issue('a-ec-2', { names: ['a.test'] });
  });
  afterAll(() => pki.remove());
  afterEach(() => {
    for (const s of servers.splice(0)) s.close();
  });

  async function listen(sites: TlsSites): Promise<{ port: number; server: net.Server }> {
    // As a listener does: each accepted socket goes through the acceptor (hello, SNI, the server's own TLS).
    const acceptor = new TlsAcceptor(sites, ADDRESS, { secure: (s) => s.pipe(s), failed: () => undefined });
    const server = net.createServer((socket) => acceptor.accept(socket));
    server.once('close', () => acceptor.close());
    servers.push(server);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    return { port: (server.address() as AddressInfo).port, server };
  }

  const threeServers = () => [
    vs(0, ['a.test'], ssl([aEc, aRsa])),
    vs(1, ['b.test'], ssl([b])),
    vs(2, ['*.wild.test'], ssl([wild])),
  ];

  it('SNI picks the server by name rules; no SNI or an unknown name gets the default server', async () => {
    const sites = new TlsSites(new TicketKeys());
    const r = await sites.load(threeServers());
    expect(r).toEqual({ ok: true, problems: [], warnings: [] });
    const { port } = await listen(sites);
    expect(await cnOf(port, { servername: 'b.test', ...ECDSA_ONLY })).toBe('b');
    expect(await cnOf(port, { servername: 'x.wild.test', ...ECDSA_ONLY })).toBe('wild');
    expect(await cnOf(port, { servername: 'a.test', ...ECDSA_ONLY })).toBe('a-ec');
    expect(await cnOf(port, { servername: 'unknown.test', ...ECDSA_ONLY })).toBe('a-ec');
    expect(await cnOf(port, { ...ECDSA_ONLY })).toBe('a-ec');

    // `default` moves the default server.
    const sites2 = new TlsSites(new TicketKeys());
    await sites2.load([vs(0, ['a.test'], ssl([aEc])), vs(1, ['b.test'], ssl([b]), true)]);
    const l2 = await listen(sites2);
    expect(await cnOf(l2.port)).toBe('b');
    expect(await cnOf(l2.port, { servername: 'nope.test' })).toBe('b');
    expect(await cnOf(l2.port, { servername: 'a.test' })).toBe('a-ec');
  });

  it('ECDSA and RSA side by side: the client gets the one it supports (TLS 1.3 sigalgs, TLS 1.2 cipher suites)', async () => {
    const sites = new TlsSites(new TicketKeys());
    await sites.load(threeServers());
    const { port } = await listen(sites);
    for (const servername of ['a.test', undefined]) {
      expect(await cnOf(port, { servername, ...ECDSA_ONLY })).toBe('a-ec');
      expect(await cnOf(port, { servername, ...RSA_ONLY })).toBe('a-rsa');
      expect(await cnOf(port, { servername, ...ECDSA_TLS12 })).toBe('a-ec');
      expect(await cnOf(port, { servername, ...RSA_TLS12 })).toBe('a-rsa');
    }
  });

  it('a server reached by SNI that is not the default hands out its whole set (ECDSA and RSA), never the default server\'s', async () => {
    // node's SNICallback would apply only the last pair of the chosen context (and the default
    // server's pair of the other type): the acceptor gives each server its own context instead.
    const sites = new TlsSites(new TicketKeys());
    await sites.load([vs(0, ['b.test'], ssl([b])), vs(1, ['a.test'], ssl([aEc, aRsa]))]);
    const { port } = await listen(sites);
    expect(await cnOf(port, { servername: 'a.test', ...RSA_ONLY })).toBe('a-rsa');
    expect(await cnOf(port, { servername: 'a.test', ...ECDSA_ONLY })).toBe('a-ec');
    expect(await cnOf(port, { servername: 'a.test', ...ECDSA_TLS12 })).toBe('a-ec');
    expect(await cnOf(port, { servername: 'a.test', ...RSA_TLS12 })).toBe('a-rsa');
    expect(await cnOf(port, { ...ECDSA_ONLY })).toBe('b');
  });

  it('refuses TLS 1.1 unless protocols list it (then with @SECLEVEL=0)', async () => {
    const tls11 = { minVersion: 'TLSv1.1' as const, maxVersion: 'TLSv1.1' as const, ciphers: 'DEFAULT:@SECLEVEL=0' };
    const sites = new TlsSites(new TicketKeys());
    await sites.load([vs(0, ['a.test'], ssl([aRsa]))]);
    const { port } = await listen(sites);
    await expect(cnOf(port, { servername: 'a.test', ...tls11 })).rejects.toThrow();
    expect(await cnOf(port, { servername: 'a.test', maxVersion: 'TLSv1.2' })).toBe('a-rsa');

    const legacy = new TlsSites(new TicketKeys());
    const protocols: TlsProtocol[] = ['TLSv1.1', 'TLSv1.2'];
    await legacy.load([vs(0, ['a.test'], ssl([aRsa], { protocols }))]);
    expect(legacy.site(ADDRESS)!.defaultServer.options).toMatchObject({ minVersion: 'TLSv1.1', maxVersion: 'TLSv1.2', ciphers: 'HIGH:!aNULL:!MD5:@SECLEVEL=0' });
    const l2 = await listen(legacy);
    const { socket } = await connect(l2.port, { servername: 'a.test', ...tls11 });
    expect(socket.getProtocol()).toBe('TLSv1.1');
    socket.destroy();
    // TLS 1.3 is not listed: refused.
    await expect(cnOf(l2.port, { minVersion: 'TLSv1.3' })).rejects.toThrow();
  });

  it('a swap serves the new certificate to new handshakes; an open connection keeps working', async () => {
    const sites = new TlsSites(new TicketKeys());
    await sites.load(threeServers());
    const { port } = await listen(sites);
    const open = await connect(port, { servername: 'a.test', ...ECDSA_ONLY });
    expect(open.cn).toBe('a-ec');
    const openNoSni = await connect(port, ECDSA_ONLY);

    const r = await sites.load([vs(0, ['a.test'], ssl([a2])), vs(1, ['b.test'], ssl([b]))]);
    expect(r.ok).toBe(true);
    expect(await cnOf(port, { servername: 'a.test' })).toBe('a-ec-2');
    expect(await cnOf(port)).toBe('a-ec-2'); // no SNI: the server's own context was replaced too
    expect(await cnOf(port, { servername: 'x.wild.test' })).toBe('a-ec-2'); // gone from the config: default

    for (const c of [open, openNoSni]) {
      const echoed = new Promise<string>((resolve) => c.socket.once('data', (d: Buffer) => resolve(d.toString())));
      c.socket.write('still here');
      expect(await echoed).toBe('still here');
      c.socket.destroy();
    }
  });

  it('a load with a bad file keeps the old set and reports the file and the reason', async () => {
    const sites = new TlsSites(new TicketKeys());
    await sites.load(threeServers());
    const { port } = await listen(sites);
    const missing = `${pki.dir}/missing.crt`;
    const bad = threeServers();
    bad[1] = vs(1, ['b.test'], { ...ssl([b]), certificates: [{ certificate: missing, key: b.key }] });
    bad[0] = vs(0, ['a.test'], ssl([a2]));
    const r = await sites.load(bad);
    expect(r.ok).toBe(false);
    expect(r.problems).toEqual([{ address: ADDRESS, server: 'b.test', file: missing, message: 'cannot read the certificate file: ENOENT (no such file or directory)' }]);
    expect(await cnOf(port, { servername: 'a.test', ...ECDSA_ONLY })).toBe('a-ec');
    expect(await cnOf(port, { servername: 'b.test' })).toBe('b');

    // A server listening with ssl but without an ssl block is a problem too.
    const r2 = await sites.load([vs(0, ['a.test'], null)]);
    expect(r2.ok).toBe(false);
    expect(r2.problems[0]!.message).toMatch(/^no "ssl" block/);
  });

  it('certificates(): address, server, file and notAfter of every certificate in use, for metrics', async () => {
    const sites = new TlsSites(new TicketKeys());
    await sites.load(threeServers());
    const list = sites.certificates();
    expect(list.map((c) => [c.address, c.server, c.certificateFile, c.keyType])).toEqual([
      [ADDRESS, 'a.test', aEc.cert, 'EC'],
      [ADDRESS, 'a.test', aRsa.cert, 'RSA'],
      [ADDRESS, 'b.test', b.cert, 'EC'],
      [ADDRESS, '*.wild.test', wild.cert, 'EC'],
    ]);
    for (const c of list) expect(c.notAfter).toBeGreaterThan(Date.now());
    expect(JSON.stringify(list)).not.toMatch(/PRIVATE KEY/);
  });

  describe('session tickets', () => {
    /** Connects twice over TLS 1.2, the second time with the first session; returns whether it resumed. */
    async function resumes(port: number, session: Buffer | undefined): Promise<{ reused: boolean; session: Buffer | undefined; ticket: boolean }> {
      const { socket } = await connect(port, { servername: 'a.test', maxVersion: 'TLSv1.2', session });
      const out = { reused: socket.isSessionReused(), session: socket.getSession(), ticket: socket.getTLSTicket() !== undefined };
      socket.destroy();
      return out;
    }

    it('on: a ticket resumes the session; after a key rotation it does not (node keeps one key)', async () => {
      const keys = new TicketKeys();
      const sites = new TlsSites(keys);
      await sites.load([vs(0, ['a.test'], ssl([aEc]))]);
      const { port } = await listen(sites);
      const first = await resumes(port, undefined);
      expect(first.ticket).toBe(true);
      expect((await resumes(port, first.session)).reused).toBe(true);
      keys.rotate();
      expect(keys.previous).not.toBeNull();
      expect((await resumes(port, first.session)).reused).toBe(false);

      // A set built before a rotation and swapped in after it keeps the rotated key.
      const built = await buildTlsSites([vs(0, ['a.test'], ssl([a2]))], keys);
      keys.rotate();
      const second = await resumes(port, undefined);
      sites.swap(built.sites);
      expect(await resumes(port, second.session)).toMatchObject({ reused: true });
    });

    it('off: no ticket (SSL_OP_NO_TICKET)', async () => {
      const sites = new TlsSites(new TicketKeys());
      await sites.load([vs(0, ['a.test'], ssl([aEc], { sessionTickets: false }))]);
      const { port } = await listen(sites);
      expect((await resumes(port, undefined)).ticket).toBe(false);
    });

    it('TicketKeys: 48-byte keys, set from outside, never printed', () => {
      const keys = new TicketKeys();
      expect(keys.current).toHaveLength(TICKET_KEY_BYTES);
      const seen: Buffer[] = [];
      keys.onChange((k) => seen.push(k));
      const a = Buffer.alloc(48, 1);
      const bKey = Buffer.alloc(48, 2);
      keys.set([a, bKey]);
      expect(keys.keys()).toEqual([a, bKey]);
      expect(seen).toEqual([a]);
      expect(() => keys.set([Buffer.alloc(47)])).toThrow(RangeError);
      expect(() => keys.set([])).toThrow(RangeError);
      expect(JSON.stringify({ keys })).toBe('{"keys":"[TicketKeys]"}');
      expect(inspect({ keys })).not.toMatch(/01 01|<Buffer/);
    });
  });
});
