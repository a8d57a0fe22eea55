/**
 * Real certificates for the TLS tests, made with the `openssl` CLI in a temp directory (no key is
 * checked in). A root CA and an intermediate sign the leaves through `openssl ca`, which takes
 * -startdate/-enddate (OpenSSL 3.0's `x509` has no -not_before), so expired certificates are easy.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface Issued {
  cert: string;
  key: string;
}

export type KeyKind = 'ec' | 'rsa';

const DAY = 24 * 3600 * 1000;

export class TestPki {
  readonly dir = mkdtempSync(join(tmpdir(), 'sessionlb-tls-'));
  private readonly cnf = join(this.dir, 'ca.cnf');
  private n = 0;
  readonly root: Issued;
  readonly intermediate: Issued;

  constructor() {
    mkdirSync(join(this.dir, 'newcerts'));
    writeFileSync(join(this.dir, 'index.txt'), '');
    writeFileSync(join(this.dir, 'serial'), '1000\n');
    writeFileSync(this.cnf, [
      '[ ca ]', 'default_ca = test_ca',
      '[ test_ca ]',
      `database = ${join(this.dir, 'index.txt')}`,
      `new_certs_dir = ${join(this.dir, 'newcerts')}`,
      `serial = ${join(this.dir, 'serial')}`,
      'default_md = sha256', 'policy = policy_any', 'copy_extensions = copy', 'unique_subject = no',
      '[ policy_any ]', 'commonName = supplied',
      '[ ca_ext ]', 'basicConstraints = critical,CA:TRUE', 'keyUsage = critical,keyCertSign,cRLSign',
      'subjectKeyIdentifier = hash', 'authorityKeyIdentifier = keyid',
      '[ leaf_ext ]', 'basicConstraints = CA:FALSE', 'keyUsage = critical,digitalSignature,keyEncipherment',
      'extendedKeyUsage = serverAuth', 'authorityKeyIdentifier = keyid',
      '',
    ].join('\n'));
    const rootKey = join(this.dir, 'root.key');
    const rootCert = join(this.dir, 'root.crt');
    this.openssl('req', '-x509', ...newKey('ec'), '-nodes', '-keyout', rootKey, '-out', rootCert, '-subj', '/CN=Test Root',
      '-days', '30', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
    this.root = { cert: rootCert, key: rootKey };
    this.intermediate = this.issue('Test Intermediate', { ca: true });
  }

  /** A certificate for `cn` (SANs `names`, default [cn]) issued by the intermediate (or `issuer`). */
  issue(cn: string, opts: { kind?: KeyKind; names?: string[]; issuer?: Issued; ca?: boolean; notBefore?: number; notAfter?: number } = {}): Issued {
    const base = join(this.dir, `c${++this.n}`);
    const key = `${base}.key`;
    const csr = `${base}.csr`;
    const cert = `${base}.crt`;
    const issuer = opts.issuer ?? (opts.ca ? this.root : this.intermediate);
    const san = opts.ca ? [] : ['-addext', `subjectAltName=${(opts.names ?? [cn]).map((n) => `DNS:${n}`).join(',')}`];
    this.openssl('req', '-new', ...newKey(opts.kind ?? 'ec'), '-nodes', '-keyout', key, '-out', csr, '-subj', `/CN=${cn}`, ...san);
    const now = Date.now();
    this.openssl('ca', '-config', this.cnf, '-batch', '-notext', '-in', csr, '-out', cert, '-cert', issuer.cert, '-keyfile', issuer.key,
      '-extensions', opts.ca ? 'ca_ext' : 'leaf_ext',
      '-startdate', asn1Time(opts.notBefore ?? now - DAY), '-enddate', asn1Time(opts.notAfter ?? now + 90 * DAY));
    return { cert, key };
  }

  /** A file with these PEM files one after the other (a chain). */
  concat(name: string, ...files: string[]): string {
    const out = join(this.dir, name);
    writeFileSync(out, files.map((f) => readFileSync(f, 'utf8')).join(''));
    return out;
  }

  /** A file with this text. */
  write(name: string, text: string): string {
    const out = join(this.dir, name);
    writeFileSync(out, text);
    return out;
  }

  remove(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }

  private openssl(...args: string[]): void {
    execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  }
}

function newKey(kind: KeyKind): string[] {
  return kind === 'ec' ? ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256'] : ['-newkey', 'rsa:2048'];
}

/** YYYYMMDDHHMMSSZ, as `openssl ca -startdate` takes it. */
function asn1Time(ms: number): string {
  return new Date(ms).toISOString().replace(/[-:T]/g, '').replace(/\.\d+Z$/, 'Z');
}
