/**
 * The TLS side of each `ssl` listen address: one secure context per virtual server (all of its
 * certificate/key pairs in one context, so OpenSSL picks ECDSA or RSA by what the client
 * supports), chosen by SNI with nginx's server name rules (nginx-language/server-names.ts); a
 * client without SNI gets the default server's. tls/acceptor.ts reads the ClientHello and hands
 * each connection to its server's context.
 *
 * `TlsSites` holds the current set across reloads: `load` builds a whole new set and swaps it in
 * only when every file loaded; on any problem the old set stays and the problems are returned.
 * Open connections keep the context they started with.
 *
 * TLS 1.0 and 1.1 are refused unless `protocols` lists them; when it does, `@SECLEVEL=0` is added
 * to the ciphers, as OpenSSL 3 (Debian 12) refuses their SHA-1 signatures at the default level 1.
 */
import { constants as cryptoConstants } from 'node:crypto';
import tls from 'node:tls';
import type { SslConfig, TlsProtocol, VirtualServerConfig } from '../config/model.js';
import { ServerNames } from '../nginx-language/server-names.js';
import { loadServerCertificates, type CertificateInfo, type CertificateMessage, type LoadCertificatesOptions, type ServerCertificates } from './certificates.js';
import type { TicketKeys } from './ticket-keys.js';

/** A problem or warning of one server on one address. */
export interface TlsMessage extends CertificateMessage {
  /** The listen address (`host:port`). */
  address: string;
  /** The server's first name ("_" when none), as the metrics' `server` label. */
  server: string;
}

/** One virtual server on one `ssl` address. */
export interface TlsServerEntry {
  /** The server's first name ("_" when none). */
  readonly name: string;
  readonly index: number;
  readonly serverNames: readonly string[];
  /** `default_server` on this address (or the server's `default`). */
  readonly isDefault: boolean;
  /** nginx `http2 on`: ALPN offers h2. */
  readonly http2: boolean;
  readonly certificates: ServerCertificates;
  /** What tls.createSecureContext got (the key material inside; never log it). */
  readonly options: tls.SecureContextOptions;
  readonly context: tls.SecureContext;
}

/** The servers of one `ssl` listen address. */
export class TlsSite {
  private readonly names = new ServerNames<TlsServerEntry>();

  /** `servers` in config order; the first is the default unless one `isDefault` (nginx's rule). */
  constructor(readonly address: string, readonly servers: readonly TlsServerEntry[]) {
    for (const s of servers) this.names.add(s.serverNames, s, s.isDefault);
  }

  /** The server for an SNI name (undefined or "": none), else the default server. */
  serverFor(servername: string | undefined): TlsServerEntry {
    return this.names.lookup(servername)!;
  }

  get defaultServer(): TlsServerEntry {
    return this.names.default!;
  }
}

export interface TlsBuild {
  /** By listen address key; empty when there are problems. */
  sites: Map<string, TlsSite>;
  problems: TlsMessage[];
  warnings: TlsMessage[];
}

/** Builds the sites of every `ssl` address of a config; certificate files are read once per server. */
export async function buildTlsSites(servers: readonly VirtualServerConfig[], ticketKeys: TicketKeys, options: LoadCertificatesOptions = {}): Promise<TlsBuild> {
  const problems: TlsMessage[] = [];
  const warnings: TlsMessage[] = [];
  const byAddress = new Map<string, { vs: VirtualServerConfig; isDefault: boolean }[]>();
  for (const vs of servers) {
    for (const l of vs.listen) {
      if (!l.ssl) continue;
      let list = byAddress.get(l.key);
      if (list === undefined) byAddress.set(l.key, (list = []));
      list.push({ vs, isDefault: l.defaultServer || vs.isDefault });
    }
  }
  const loaded = new Map<VirtualServerConfig, ServerCertificates>();
  await Promise.all([...new Set([...byAddress.values()].flat().map((e) => e.vs))].map(async (vs) => {
    if (vs.ssl !== null) loaded.set(vs, await loadServerCertificates(vs.ssl, vs.serverNames, options));
  }));

  // Per server, once (a server on 0.0.0.0 and [::] reports its files once and shares one context).
  const contexts = new Map<VirtualServerConfig, { options: tls.SecureContextOptions; context: tls.SecureContext } | null>();
  const contextOf = (vs: VirtualServerConfig, address: string): { options: tls.SecureContextOptions; context: tls.SecureContext } | null => {
    if (contexts.has(vs)) return contexts.get(vs)!;
    const name = vs.serverNames[0] ?? '_';
    const certs = loaded.get(vs)!;
    for (const p of certs.problems) problems.push({ address, server: name, ...p });
    for (const w of certs.warnings) warnings.push({ address, server: name, ...w });
    let made: { options: tls.SecureContextOptions; context: tls.SecureContext } | null = null;
    if (certs.ok) {
      const options = secureContextOptions(vs.ssl!, certs, ticketKeys);
      try {
        made = { options, context: tls.createSecureContext(options) };
      } catch (err) {
        // OpenSSL's message here is about ciphers or protocols, not key content (keys were parsed above).
        problems.push({ address, server: name, file: '', message: `cannot set up TLS: ${(err as Error).message}` });
      }
    }
    contexts.set(vs, made);
    return made;
  };

  const sites = new Map<string, TlsSite>();
  for (const [address, list] of byAddress) {
    const entries: TlsServerEntry[] = [];
    for (const { vs, isDefault } of list) {
      const name = vs.serverNames[0] ?? '_';
      if (vs.ssl === null || !loaded.has(vs)) {
        problems.push({ address, server: name, file: '', message: `no "ssl" block (certificate and key) for a server listening with ssl on ${address}` });
        continue;
      }
      const made = contextOf(vs, address);
      if (made === null) continue;
      entries.push({ name, index: vs.index, serverNames: vs.serverNames, isDefault, http2: vs.http2, certificates: loaded.get(vs)!, options: made.options, context: made.context });
    }
    if (entries.length !== list.length) continue;
    sites.set(address, new TlsSite(address, entries));
  }
  return { sites: problems.length === 0 ? sites : new Map(), problems, warnings };
}

/** Why a built set cannot be served, one line each (what check prints and a start or reload fails with). */
export function tlsBuildProblems(built: TlsBuild): string[] {
  return built.problems.map((p) => `${p.file}: ${p.message} (server ${p.server})`);
}

const PROTOCOL_ORDER: readonly TlsProtocol[] = ['TLSv1', 'TLSv1.1', 'TLSv1.2', 'TLSv1.3'];
const NO_PROTOCOL: Record<TlsProtocol, number> = {
  TLSv1: cryptoConstants.SSL_OP_NO_TLSv1,
  'TLSv1.1': cryptoConstants.SSL_OP_NO_TLSv1_1,
  'TLSv1.2': cryptoConstants.SSL_OP_NO_TLSv1_2,
  'TLSv1.3': cryptoConstants.SSL_OP_NO_TLSv1_3,
};

/** tls.createSecureContext options for one server's `ssl` block and loaded pairs. */
export function secureContextOptions(ssl: SslConfig, certs: ServerCertificates, ticketKeys: TicketKeys): tls.SecureContextOptions {
  const listed = PROTOCOL_ORDER.filter((p) => ssl.protocols.includes(p));
  const min = listed[0] ?? 'TLSv1.2';
  const max = listed[listed.length - 1] ?? 'TLSv1.3';
  let secureOptions = 0;
  // A gap between min and max (TLSv1 and TLSv1.2 without 1.1) is closed with SSL_OP_NO_*.
  for (const p of PROTOCOL_ORDER.slice(PROTOCOL_ORDER.indexOf(min), PROTOCOL_ORDER.indexOf(max) + 1)) {
    if (!listed.includes(p)) secureOptions |= NO_PROTOCOL[p];
  }
  const legacy = listed.includes('TLSv1') || listed.includes('TLSv1.1');
  const ciphers = legacy && !/@SECLEVEL=/i.test(ssl.ciphers) ? `${ssl.ciphers}:@SECLEVEL=0` : ssl.ciphers;
  const options: tls.SecureContextOptions = {
    ...certs.secureContextKeys(),
    minVersion: min,
    maxVersion: max,
    ciphers,
    honorCipherOrder: false,
    sessionTimeout: Math.max(1, Math.round(ssl.sessionTimeoutMs / 1000)),
  };
  if (ssl.sessionTickets) options.ticketKeys = ticketKeys.current;
  else secureOptions |= cryptoConstants.SSL_OP_NO_TICKET;
  if (secureOptions !== 0) options.secureOptions = secureOptions;
  return options;
}

export interface TlsLoadResult {
  /** True when the new set is in use; false: the old one stays. */
  ok: boolean;
  problems: TlsMessage[];
  warnings: TlsMessage[];
}

/** One certificate in use, for metrics (`sessionlb_tls_certificate_expiry_timestamp_seconds{server,certificate}`) and `check`. */
export interface CertificateInUse extends CertificateInfo {
  address: string;
  server: string;
}

/** The current sites of every `ssl` address, across reloads (what each address's TlsAcceptor reads). */
export class TlsSites {
  private current = new Map<string, TlsSite>();

  constructor(readonly ticketKeys: TicketKeys) {}

  /** Loads the config's certificates and builds a new set; in use only if there is no problem, else the old set stays. */
  async load(servers: readonly VirtualServerConfig[], options: LoadCertificatesOptions = {}): Promise<TlsLoadResult> {
    const built = await buildTlsSites(servers, this.ticketKeys, options);
    if (built.problems.length > 0) return { ok: false, problems: built.problems, warnings: built.warnings };
    this.swap(built.sites);
    return { ok: true, problems: [], warnings: built.warnings };
  }

  /** Puts a built set in use: new handshakes use it; open connections keep what they have. */
  swap(sites: Map<string, TlsSite>): void {
    this.current = sites;
  }

  /** The set in use (to put back when a reload that swapped it early is abandoned). */
  inUse(): Map<string, TlsSite> {
    return this.current;
  }

  site(address: string): TlsSite | undefined {
    return this.current.get(address);
  }

  /** The addresses with TLS in the current set. */
  addresses(): string[] {
    return [...this.current.keys()];
  }

  /** Every certificate in use: address, server, file, notAfter and the rest of its report. */
  certificates(): CertificateInUse[] {
    const out: CertificateInUse[] = [];
    for (const [address, site] of this.current) {
      for (const s of site.servers) {
        for (const p of s.certificates.pairs) out.push({ address, server: s.name, ...p });
      }
    }
    return out;
  }
}
