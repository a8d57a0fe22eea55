/**
 * A virtual server's certificate and key files, loaded and checked as `nginx -t` does: each file
 * readable, the key matching the first (leaf) certificate, the chain in order (each certificate
 * issued by the next). Warnings, not errors: expired, expiring within 14 days, not valid yet, a
 * server name the certificate does not cover.
 *
 * Secrets: the private key's content stays inside `ServerCertificates` (a private field, so
 * neither JSON nor util.inspect shows it) and goes only to tls.createSecureContext. Messages name
 * the key FILE and an error code, never OpenSSL's text about the key or the key itself.
 */
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import type { SslConfig } from '../config/model.js';

/** The public key's kind, for reports and for the metrics' `certificate` label. */
export type CertificateKeyType = 'EC' | 'RSA' | 'Ed25519' | 'Ed448' | 'DSA' | 'other';

/** One certificate/key pair as loaded: what reports, `check` and metrics show (no key material). */
export interface CertificateInfo {
  certificateFile: string;
  keyFile: string;
  /** The leaf certificate's subject and issuer, as node prints them (`CN=www.example.com`, one RDN a line). */
  subject: string;
  issuer: string;
  /** Hex, as node prints it. */
  serial: string;
  /** Validity, ms since the epoch. */
  notBefore: number;
  notAfter: number;
  keyType: CertificateKeyType;
  /** The leaf's DNS subjectAltNames (lower case), in order. */
  sanNames: string[];
  /** Certificates in the file: the leaf and its chain. */
  chainLength: number;
}

/** A problem (the pair is unusable) or a warning, about one file. */
export interface CertificateMessage {
  file: string;
  message: string;
}

/** Key and chain of one pair, PEM, for tls.createSecureContext. */
interface PairMaterial {
  cert: Buffer;
  key: Buffer;
}

/**
 * The pairs of one virtual server: `pairs` for reports, `problems` (any: the server's TLS cannot
 * be set up), `warnings`. `secureContextKeys()` gives the PEM arrays for tls.createSecureContext.
 */
export class ServerCertificates {
  readonly #material: PairMaterial[];

  constructor(
    readonly pairs: readonly CertificateInfo[],
    readonly problems: readonly CertificateMessage[],
    readonly warnings: readonly CertificateMessage[],
    material: PairMaterial[],
  ) {
    this.#material = material;
  }

  get ok(): boolean {
    return this.problems.length === 0 && this.pairs.length > 0;
  }

  /** `cert` and `key` arrays (pair i with pair i) for tls.createSecureContext; OpenSSL picks by what the client supports. */
  secureContextKeys(): { cert: Buffer[]; key: Buffer[] } {
    return { cert: this.#material.map((m) => m.cert), key: this.#material.map((m) => m.key) };
  }
}

export interface LoadCertificatesOptions {
  /** The clock, ms (tests). */
  now?: number;
  /** Warn when a certificate expires within this many ms (default 14 days). */
  expiryWarningMs?: number;
}

export const EXPIRY_WARNING_MS = 14 * 24 * 3600 * 1000;
const DAY_MS = 24 * 3600 * 1000;

/** Loads and checks every pair of a server's `ssl` block; `serverNames` are checked against the certificates. */
export async function loadServerCertificates(ssl: SslConfig, serverNames: readonly string[], options: LoadCertificatesOptions = {}): Promise<ServerCertificates> {
  const now = options.now ?? Date.now();
  const warnWithin = options.expiryWarningMs ?? EXPIRY_WARNING_MS;
  const pairs: CertificateInfo[] = [];
  const problems: CertificateMessage[] = [];
  const warnings: CertificateMessage[] = [];
  const material: PairMaterial[] = [];
  if (ssl.certificates.length === 0) {
    problems.push({ file: '', message: 'no certificate: an "ssl" block needs "certificate" and "certificateKey"' });
  }
  const loaded = await Promise.all(ssl.certificates.map((p) => loadPair(p.certificate, p.key)));
  for (const result of loaded) {
    problems.push(...result.problems);
    if (result.info === null || result.material === null) continue;
    pairs.push(result.info);
    material.push(result.material);
    warnings.push(...validityWarnings(result.info, now, warnWithin));
    warnings.push(...nameWarnings(result.info, result.leaf!, serverNames));
  }
  return new ServerCertificates(pairs, problems, warnings, material);
}

interface PairResult {
  info: CertificateInfo | null;
  leaf: X509Certificate | null;
  material: PairMaterial | null;
  problems: CertificateMessage[];
}

async function loadPair(certificateFile: string, keyFile: string): Promise<PairResult> {
  const problems: CertificateMessage[] = [];
  const failed = (): PairResult => ({ info: null, leaf: null, material: null, problems });
  const [certPem, keyPem] = await Promise.all([
    readFile(certificateFile).catch((err: unknown) => {
      problems.push({ file: certificateFile, message: `cannot read the certificate file: ${errnoText(err)}` });
      return null;
    }),
    readFile(keyFile).catch((err: unknown) => {
      problems.push({ file: keyFile, message: `cannot read the key file: ${errnoText(err)}` });
      return null;
    }),
  ]);
  if (certPem === null || keyPem === null) return failed();

  const blocks = certPem.toString('latin1').match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length === 0) {
    problems.push({ file: certificateFile, message: 'no PEM certificate ("-----BEGIN CERTIFICATE-----") in the file' });
    return failed();
  }
  const chain: X509Certificate[] = [];
  for (let i = 0; i < blocks.length; i++) {
    try {
      chain.push(new X509Certificate(blocks[i]!));
    } catch (err) {
      problems.push({ file: certificateFile, message: `certificate ${i + 1} of ${blocks.length} cannot be parsed: ${codeOf(err)}` });
    }
  }
  if (chain.length !== blocks.length) return failed();
  const leaf = chain[0]!;

  let key;
  try {
    key = createPrivateKey(keyPem);
  } catch (err) {
    // OpenSSL's message is not passed on: only the file and the error code.
    const code = codeOf(err);
    const hint = code === 'ERR_MISSING_PASSPHRASE' ? ' (an encrypted key: sessionlb reads unencrypted keys only)' : '';
    problems.push({ file: keyFile, message: `not a readable private key: ${code}${hint}` });
    return failed();
  }
  if (!leaf.checkPrivateKey(key)) {
    problems.push({ file: keyFile, message: `the key does not match the certificate ${certificateFile} (${oneLine(leaf.subject)})` });
  }
  for (let i = 0; i + 1 < chain.length; i++) {
    const cert = chain[i]!;
    const issuer = chain[i + 1]!;
    if (!cert.checkIssued(issuer) || !cert.verify(issuer.publicKey)) {
      const reversed = issuer.checkIssued(cert);
      problems.push({
        file: certificateFile,
        message: `chain order: certificate ${i + 1} (${oneLine(cert.subject)}) is not issued by certificate ${i + 2} (${oneLine(issuer.subject)})`
          + (reversed ? '; the chain is reversed: the server certificate comes first, then the certificate that issued it, and so on' : ''),
      });
      break;
    }
  }
  if (problems.length > 0) return failed();

  const info: CertificateInfo = {
    certificateFile,
    keyFile,
    subject: leaf.subject,
    issuer: leaf.issuer,
    serial: leaf.serialNumber,
    notBefore: Date.parse(leaf.validFrom),
    notAfter: Date.parse(leaf.validTo),
    keyType: keyTypeOf(leaf.publicKey.asymmetricKeyType),
    sanNames: dnsNames(leaf.subjectAltName),
    chainLength: chain.length,
  };
  return { info, leaf, material: { cert: certPem, key: keyPem }, problems };
}

function validityWarnings(info: CertificateInfo, now: number, warnWithin: number): CertificateMessage[] {
  const file = info.certificateFile;
  const until = new Date(info.notAfter).toISOString();
  if (info.notAfter <= now) return [{ file, message: `the certificate expired on ${until}` }];
  const out: CertificateMessage[] = [];
  if (info.notAfter - now <= warnWithin) {
    const days = Math.floor((info.notAfter - now) / DAY_MS);
    out.push({ file, message: `the certificate expires on ${until}, in ${days} day${days === 1 ? '' : 's'}` });
  }
  if (info.notBefore > now) out.push({ file, message: `the certificate is not valid before ${new Date(info.notBefore).toISOString()}` });
  return out;
}

/**
 * Server names the certificate does not cover. Exact names through X509Certificate.checkHost
 * (SANs, else the CN); `*.example.com` (and `.example.com`) are covered by a certificate for the
 * same wildcard (`.example.com` also needs `example.com`). nginx's wildcards also match deeper
 * names (a.b.example.com), which no certificate wildcard covers: not warned about. Names that
 * cannot be checked are skipped: "", "_", `www.example.*`, regular expressions (`~...`).
 */
function nameWarnings(info: CertificateInfo, leaf: X509Certificate, serverNames: readonly string[]): CertificateMessage[] {
  const out: CertificateMessage[] = [];
  const wildcards = new Set(info.sanNames.length > 0 ? info.sanNames : cnNames(leaf.subject));
  for (const raw of serverNames) {
    const name = raw.toLowerCase();
    if (name === '' || name === '_' || name.startsWith('~') || name.endsWith('.*')) continue;
    let covered: boolean;
    if (name.startsWith('*.')) {
      covered = wildcards.has(name);
    } else if (name.startsWith('.')) {
      covered = wildcards.has('*' + name) && leaf.checkHost(name.slice(1)) !== undefined;
    } else if (name.includes('*')) {
      continue; // a wildcard in the middle: not nginx syntax the checks understand
    } else if (isIP(name) !== 0) {
      covered = leaf.checkIP(name) !== undefined;
    } else {
      covered = leaf.checkHost(name) !== undefined;
    }
    if (!covered) out.push({ file: info.certificateFile, message: `the certificate does not cover the server name "${raw}"` });
  }
  return out;
}

function keyTypeOf(type: string | undefined): CertificateKeyType {
  switch (type) {
    case 'ec': return 'EC';
    case 'rsa':
    case 'rsa-pss': return 'RSA';
    case 'ed25519': return 'Ed25519';
    case 'ed448': return 'Ed448';
    case 'dsa': return 'DSA';
    default: return 'other';
  }
}

/** The DNS names of node's subjectAltName text (`DNS:a.example, DNS:*.b.example, IP Address:...`). */
function dnsNames(subjectAltName: string | undefined): string[] {
  if (subjectAltName === undefined) return [];
  const out: string[] = [];
  for (const m of subjectAltName.matchAll(/(?:^|, )DNS:("(?:[^"\\]|\\.)*"|[^,]*)/g)) {
    let v = m[1]!;
    if (v.startsWith('"')) v = v.slice(1, -1).replace(/\\(.)/g, '$1');
    out.push(v.toLowerCase());
  }
  return out;
}

function cnNames(subject: string): string[] {
  return subject.split('\n').filter((l) => l.startsWith('CN=')).map((l) => l.slice(3).toLowerCase());
}

function oneLine(dn: string): string {
  return dn.split('\n').join(', ');
}

/** `ENOENT (no such file or directory)`: the code and the system's words, without the path (the message names the file). */
export function errnoText(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  if (typeof e?.code === 'string') {
    const words = typeof e.message === 'string' ? /^[A-Z]+: ([^,]+)/.exec(e.message)?.[1] : undefined;
    return words !== undefined ? `${e.code} (${words})` : e.code;
  }
  return 'unknown error';
}

/** An error's code, or "invalid". */
export function codeOf(err: unknown): string {
  const code = (err as { code?: unknown })?.code;
  return typeof code === 'string' ? code : 'invalid';
}
