/**
 * The CA certificates that "https://" upstreams are verified against (proxySslTrustedCertificate),
 * read once per config (start, reload, `check`) like nginx reads proxy_ssl_trusted_certificate at
 * load: every file a location with `proxySslVerify` names must be readable and hold PEM
 * certificates that parse. As nginx, a file is read only where verification is on.
 *
 * Also the one rule for how a connection to an "https://" upstream is opened from a location's
 * proxySsl* settings (SNI, verification, protocols, ALPN): the request pools (proxy/upstream) and
 * the active health probes (health/) both open theirs with `upstreamConnectOptions`.
 */
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import {
  checkServerIdentity, createSecureContext, type ConnectionOptions, type SecureContext, type SecureVersion,
} from 'node:tls';
import type { Config, UpstreamTlsConfig } from '../config/model.js';
import { codeOf, errnoText, type CertificateMessage } from './certificates.js';

export interface TrustedCertificates {
  /** Resolved path -> its content, for every file read. */
  files: Map<string, Buffer>;
  problems: CertificateMessage[];
}

/** Reads the trusted-certificate files of `config`'s verifying "https://" locations (synchronously: a handful of small files at load). */
export function readTrustedCertificates(config: Config): TrustedCertificates {
  const out: TrustedCertificates = { files: new Map(), problems: [] };
  const seen = new Set<string>();
  for (const vs of config.servers) {
    for (const loc of vs.locations) {
      const file = loc.upstreamTls?.verify === true ? loc.upstreamTls.trustedCertificate : null;
      if (file === null || seen.has(file)) continue;
      seen.add(file);
      const problem = (message: string): void => { out.problems.push({ file, message }); };
      let pem: Buffer;
      try {
        pem = readFileSync(file);
      } catch (err) {
        problem(`cannot read the trusted certificate file: ${errnoText(err)}`);
        continue;
      }
      const blocks = pem.toString('latin1').match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
      if (blocks.length === 0) {
        problem('no PEM certificate ("-----BEGIN CERTIFICATE-----") in the trusted certificate file');
        continue;
      }
      let ok = true;
      blocks.forEach((block, i) => {
        try {
          new X509Certificate(block);
        } catch (err) {
          ok = false;
          problem(`certificate ${i + 1} of ${blocks.length} cannot be parsed: ${codeOf(err)}`);
        }
      });
      if (ok) out.files.set(file, pem);
    }
  }
  return out;
}

/**
 * TLS to an upstream server (an "https://" proxyPass, nginx proxy_ssl_*), resolved when the config
 * was loaded (`upstreamTlsOptions`).
 */
export interface UpstreamTlsOptions {
  /** proxy_ssl_verify: reject a chain `ca` does not trust, or a certificate not for `name`. */
  verify: boolean;
  /** The trusted CA certificates (PEM, the proxySslTrustedCertificate file as read at load); null = none. */
  ca: Buffer | null;
  /** The name checked against the certificate when `verify`. */
  name: string;
  /** The SNI sent; null = none (proxySslServerName off, or `name` is an IP address). */
  servername: string | null;
  /** proxy_ssl_protocols as a range. */
  minVersion: SecureVersion;
  maxVersion: SecureVersion;
}

/** The TLS options of a location's settings `tls`; `trusted`: the trusted certificate files as read (readTrustedCertificates). */
export function upstreamTlsOptions(tls: UpstreamTlsConfig, trusted: ReadonlyMap<string, Buffer>): UpstreamTlsOptions {
  const ca = tls.verify && tls.trustedCertificate !== null ? trusted.get(tls.trustedCertificate) ?? null : null;
  // Never verify against node's default roots: the file is read at load, a missing one is a config problem.
  if (tls.verify && ca === null) throw new Error(`${tls.trustedCertificate ?? 'proxySslTrustedCertificate'}: the trusted certificate file was not read`);
  return {
    verify: tls.verify,
    ca,
    name: tls.name,
    servername: tls.serverName && isIP(tls.name) === 0 ? tls.name : null,
    minVersion: tls.protocols[0] ?? 'TLSv1.2',
    maxVersion: tls.protocols[tls.protocols.length - 1] ?? 'TLSv1.3',
  };
}

/** The secure context of `o` (its CA and protocol range), made once and shared by the connections opened with it. */
export function upstreamSecureContext(o: UpstreamTlsOptions): SecureContext {
  return createSecureContext({ ca: o.ca ?? undefined, minVersion: o.minVersion, maxVersion: o.maxVersion });
}

/**
 * What `tls.connect` needs, besides host, port and a session to resume, to open a connection with
 * `o`: SNI only when `o.servername`, the chain checked against `o.ca` and the certificate against
 * `o.name` when `o.verify`, ALPN http/1.1.
 */
export function upstreamConnectOptions(o: UpstreamTlsOptions, secureContext: SecureContext): ConnectionOptions {
  const name = o.name;
  return {
    secureContext,
    ...(o.servername === null ? {} : { servername: o.servername }),
    rejectUnauthorized: o.verify,
    checkServerIdentity: (_host, cert) => checkServerIdentity(name, cert),
    ALPNProtocols: ['http/1.1'],
  };
}
