/**
 * The CA certificates that "https://" upstreams are verified against (proxySslTrustedCertificate),
 * read once per config (start, reload, `check`) like nginx reads proxy_ssl_trusted_certificate at
 * load: every file a location with `proxySslVerify` names must be readable and hold PEM
 * certificates that parse. As nginx, a file is read only where verification is on.
 */
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { Config } from '../config/model.js';
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
