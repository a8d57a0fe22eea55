/**
 * src/tls/certificates.ts with real certificates made by `openssl` (test/helpers/tls-certs.ts):
 * readable files, key matches certificate, chain order, key types, expiry and name warnings, and
 * no key content in any message or in the result's JSON.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { inspect } from 'node:util';
import { join } from 'node:path';
import type { SslConfig } from '../src/config/model.js';
import { loadServerCertificates, type ServerCertificates } from '../src/tls/certificates.js';
import { TestPki, type Issued } from './helpers/tls-certs.js';

const DAY = 24 * 3600 * 1000;

function ssl(...pairs: Array<{ certificate: string; key: string }>): SslConfig {
  return { certificates: pairs, protocols: ['TLSv1.2', 'TLSv1.3'], ciphers: 'HIGH:!aNULL:!MD5', sessionTickets: true, sessionTimeoutMs: 300_000 };
}
const pair = (i: Issued, certificate = i.cert) => ({ certificate, key: i.key });

describe('loadServerCertificates', () => {
  let pki: TestPki;
  let ec: Issued;
  let rsa: Issued;
  beforeAll(() => {
    pki = new TestPki();
    ec = pki.issue('www.example.com', { kind: 'ec', names: ['www.example.com', 'example.com', '*.api.example.com'] });
    rsa = pki.issue('www.example.com', { kind: 'rsa', names: ['www.example.com', 'example.com'] });
  });
  afterAll(() => pki.remove());

  /** Every key file's content must be absent from the messages and the result (JSON and inspect). */
  function expectNoKeyContent(result: ServerCertificates, keyFiles: string[]): void {
    const shown = JSON.stringify(result) + inspect(result, { depth: 10, showHidden: true });
    for (const f of keyFiles) {
      const body = readFileSync(f, 'utf8').split('\n').filter((l) => l !== '' && !l.startsWith('-----'));
      for (const line of body) expect(shown).not.toContain(line);
    }
  }

  it('loads an ECDSA and an RSA pair side by side, with subject, issuer, serial, notAfter, key type and SANs', async () => {
    const r = await loadServerCertificates(ssl(pair(ec), pair(rsa)), ['www.example.com', 'example.com']);
    expect(r.problems).toEqual([]);
    expect(r.warnings).toEqual([]);
    expect(r.ok).toBe(true);
    expect(r.pairs.map((p) => p.keyType)).toEqual(['EC', 'RSA']);
    const p = r.pairs[0]!;
    expect(p).toMatchObject({ certificateFile: ec.cert, keyFile: ec.key, subject: 'CN=www.example.com', issuer: 'CN=Test Intermediate', chainLength: 1 });
    expect(p.sanNames).toEqual(['www.example.com', 'example.com', '*.api.example.com']);
    expect(p.serial).toMatch(/^[0-9A-F]+$/);
    expect(p.notAfter).toBeGreaterThan(Date.now() + 80 * DAY);
    expect(r.secureContextKeys().cert).toHaveLength(2);
    expectNoKeyContent(r, [ec.key, rsa.key]);
  });

  it('an unreadable file is a problem naming the file and the errno', async () => {
    const missing = join(pki.dir, 'missing.crt');
    const r = await loadServerCertificates(ssl({ certificate: missing, key: ec.key }), ['www.example.com']);
    expect(r.ok).toBe(false);
    expect(r.problems).toEqual([{ file: missing, message: 'cannot read the certificate file: ENOENT (no such file or directory)' }]);
    const r2 = await loadServerCertificates(ssl({ certificate: ec.cert, key: pki.dir }), ['www.example.com']);
    expect(r2.problems).toEqual([{ file: pki.dir, message: expect.stringMatching(/^cannot read the key file: EISDIR/) }]);
  });

  it('a key that does not match the certificate is a problem naming the key file, not its content', async () => {
    const r = await loadServerCertificates(ssl({ certificate: ec.cert, key: rsa.key }), ['www.example.com']);
    expect(r.ok).toBe(false);
    expect(r.problems).toEqual([{ file: rsa.key, message: `the key does not match the certificate ${ec.cert} (CN=www.example.com)` }]);
    expect(r.pairs).toEqual([]);
    expectNoKeyContent(r, [rsa.key, ec.key]);
  });

  it('a file that is not a key or not a certificate is a problem without OpenSSL text about the key', async () => {
    const notKey = pki.write('not-a-key.pem', '-----BEGIN PRIVATE KEY-----\nc2VjcmV0IGJ5dGVz\n-----END PRIVATE KEY-----\n');
    const r = await loadServerCertificates(ssl({ certificate: ec.cert, key: notKey }), []);
    expect(r.problems).toHaveLength(1);
    expect(r.problems[0]!.file).toBe(notKey);
    expect(r.problems[0]!.message).toMatch(/^not a readable private key: [A-Z_]+/);
    expect(r.problems[0]!.message).not.toContain('c2VjcmV0');
    const r2 = await loadServerCertificates(ssl({ certificate: ec.key, key: ec.key }), []);
    expect(r2.problems).toEqual([{ file: ec.key, message: 'no PEM certificate ("-----BEGIN CERTIFICATE-----") in the file' }]);
    expectNoKeyContent(r2, [ec.key]);
  });

  it('a chain in order (leaf, intermediate, root) loads; reversed, it is a problem that says so', async () => {
    const good = pki.concat('good-chain.crt', ec.cert, pki.intermediate.cert, pki.root.cert);
    const r = await loadServerCertificates(ssl({ certificate: good, key: ec.key }), ['www.example.com']);
    expect(r.problems).toEqual([]);
    expect(r.pairs[0]!.chainLength).toBe(3);

    const reversed = pki.concat('reversed-chain.crt', ec.cert, pki.root.cert, pki.intermediate.cert);
    const r2 = await loadServerCertificates(ssl({ certificate: reversed, key: ec.key }), ['www.example.com']);
    expect(r2.ok).toBe(false);
    expect(r2.problems).toHaveLength(1);
    expect(r2.problems[0]).toMatchObject({ file: reversed });
    expect(r2.problems[0]!.message).toMatch(/^chain order: certificate 1 \(CN=www.example.com\) is not issued by certificate 2 \(CN=Test Root\)/);

    // A leaf-last file (intermediate first): the key matches no first certificate, and the order is reversed.
    const leafLast = pki.concat('leaf-last.crt', pki.intermediate.cert, ec.cert);
    const r3 = await loadServerCertificates(ssl({ certificate: leafLast, key: ec.key }), []);
    expect(r3.problems.map((p) => p.message)).toEqual([
      expect.stringMatching(/^the key does not match the certificate/),
      expect.stringMatching(/the chain is reversed/),
    ]);
  });

  it('warns (does not fail) for an expired certificate and one expiring within 14 days', async () => {
    const expired = pki.issue('old.example.com', { notBefore: Date.now() - 30 * DAY, notAfter: Date.now() - DAY });
    const soon = pki.issue('soon.example.com', { notAfter: Date.now() + 5 * DAY + 3600_000 });
    const r = await loadServerCertificates(ssl(pair(expired)), ['old.example.com']);
    expect(r.ok).toBe(true);
    expect(r.warnings).toEqual([{ file: expired.cert, message: expect.stringMatching(/^the certificate expired on \d{4}-\d\d-\d\dT/) }]);
    const r2 = await loadServerCertificates(ssl(pair(soon)), ['soon.example.com']);
    expect(r2.ok).toBe(true);
    expect(r2.warnings).toEqual([{ file: soon.cert, message: expect.stringMatching(/^the certificate expires on .*, in 5 days$/) }]);
    expect(r2.pairs[0]!.notAfter).toBeLessThan(Date.now() + 6 * DAY);
  });

  it('warns for server names the certificate does not cover; wildcards by the same wildcard; "_" and "name.*" skipped', async () => {
    const r = await loadServerCertificates(ssl(pair(ec)), [
      'www.example.com', 'EXAMPLE.com', 'x.api.example.com', '*.api.example.com', // covered
      '_', '', 'www.example.*', '~^w+\\.example\\.com$', // not checkable: skipped
      'other.example.net', '*.example.com', '.api.example.com', // not covered (.api.example.com needs api.example.com too)
    ]);
    expect(r.ok).toBe(true);
    expect(r.warnings.map((w) => w.message)).toEqual([
      'the certificate does not cover the server name "other.example.net"',
      'the certificate does not cover the server name "*.example.com"',
      'the certificate does not cover the server name ".api.example.com"',
    ]);
    const wild = pki.issue('*.example.org', { names: ['*.example.org', 'example.org'] });
    const r2 = await loadServerCertificates(ssl(pair(wild)), ['.example.org', '*.example.org', 'a.example.org']);
    expect(r2.warnings).toEqual([]);
  });

  it('no pair at all is a problem', async () => {
    const r = await loadServerCertificates(ssl(), ['a']);
    expect(r.ok).toBe(false);
    expect(r.problems[0]!.message).toMatch(/^no certificate/);
  });
});
