/**
 * nginx's ssl_* and http2 directives (TLS termination; inherited http -> server, as nginx does)
 * and proxy_ssl_* (TLS to "https://" upstreams; written at the level they are in, where sessionlb
 * takes the nearest as nginx does). What sessionlb does instead of a directive it has no key for
 * is a note or a warning, never silence.
 */
import { isAbsolute, resolve } from 'node:path';
import { TLS_PROTOCOLS, type RawSsl, type RawUpstreamTls } from '../../config/schema.js';
import type { NginxDirective } from './tokenizer.js';
import type { Conversion, Mutable, Sourced } from './conversion.js';
import { nginxDuration } from './values.js';

type TlsProtocol = (typeof TLS_PROTOCOLS)[number];

/** The ssl_* settings and http2 of one level (http or server); a server's own override http's. */
export interface SslScope {
  /** nginx: a level with any ssl_certificate replaces the inherited list (likewise the keys). */
  certificates?: Sourced<string[]>;
  keys?: Sourced<string[]>;
  protocols?: Sourced<TlsProtocol[]>;
  ciphers?: Sourced<string>;
  sessionTickets?: Sourced<boolean>;
  sessionTimeout?: Sourced<string>;
  http2?: Sourced<boolean>;
}

const SESSION_CACHE_NOTE = 'sessionlb resumes TLS sessions with session tickets shared by every worker (and, with the memcached session store, every instance); no session cache is needed';
const TICKET_KEY_NOTE = 'sessionlb generates the session ticket keys, rotates them daily and shares them between workers (and instances) itself; key files are not used';

/** ssl_* directives sessionlb has no key for: what it does instead (a warning unless marked as a note). */
const NO_KEY = new Map<string, string>([
  ['ssl_prefer_server_ciphers', 'sessionlb has no setting for the cipher preference order'],
  ['ssl_dhparam', 'sessionlb takes no DH parameters file (ECDHE key exchange is used; DHE cipher suites are not offered)'],
  ['ssl_stapling', 'OCSP stapling is not supported by sessionlb (clients check revocation themselves)'],
  ['ssl_stapling_verify', 'OCSP stapling is not supported by sessionlb'],
  ['ssl_stapling_file', 'OCSP stapling is not supported by sessionlb'],
  ['ssl_stapling_responder', 'OCSP stapling is not supported by sessionlb'],
  ['ssl_ecdh_curve', 'sessionlb has no setting for it: the curves are those of Node.js\'s default ("auto")'],
  ['ssl_buffer_size', 'sessionlb has no setting for the TLS record size'],
  ['ssl_early_data', 'TLS 1.3 early data (0-RTT) is not supported by sessionlb (clients send the request after the handshake)'],
  ['ssl_client_certificate', 'client certificates are not supported by sessionlb: clients are not asked for one'],
  ['ssl_verify_client', 'client certificates are not supported by sessionlb: clients are not asked for one'],
  ['ssl_verify_depth', 'client certificates are not supported by sessionlb'],
  ['ssl_trusted_certificate', 'client certificates and OCSP stapling are not supported by sessionlb'],
  ['ssl_crl', 'client certificates are not supported by sessionlb'],
  ['ssl_password_file', 'sessionlb reads unencrypted key files only'],
  ['ssl_conf_command', 'sessionlb takes no OpenSSL commands'],
  ['ssl_reject_handshake', 'sessionlb has no setting for it (a client whose SNI name matches no server gets the default server\'s certificate)'],
  ['ssl_ocsp', 'client certificates are not supported by sessionlb'],
  ['ssl_ocsp_cache', 'client certificates are not supported by sessionlb'],
  ['ssl_ocsp_responder', 'client certificates are not supported by sessionlb'],
]);

/** `ssl_early_data off`, `ssl_stapling off`: nginx's default, which is what sessionlb does. */
const OFF_IS_SESSIONLB = new Set(['ssl_early_data', 'ssl_stapling', 'ssl_stapling_verify']);

export function isSslDirective(d: NginxDirective): boolean {
  return d.block === null && (d.name.startsWith('ssl_') || d.name === 'ssl' || d.name === 'http2');
}

export function isProxySslDirective(d: NginxDirective): boolean {
  return d.block === null && d.name.startsWith('proxy_ssl_');
}

/** on|off; null (and an error) otherwise. */
function flag(c: Conversion, d: NginxDirective): boolean | null {
  const a = c.oneArg(d);
  if (a === null) return null;
  if (a === 'on' || a === 'off') return a === 'on';
  c.error(d.line, `"${d.name}": "${a}" is not "on" or "off"`);
  return null;
}

/** ssl_protocols / proxy_ssl_protocols: the TLS versions sessionlb takes (SSLv2/SSLv3 are dropped with a warning). */
function protocols(c: Conversion, d: NginxDirective): TlsProtocol[] | null {
  if (d.args.length === 0) {
    c.error(d.line, `invalid number of arguments in "${d.name}" directive`);
    return null;
  }
  const out: TlsProtocol[] = [];
  for (const p of d.args) {
    if ((TLS_PROTOCOLS as readonly string[]).includes(p)) {
      if (!out.includes(p as TlsProtocol)) out.push(p as TlsProtocol);
    } else if (p === 'SSLv2' || p === 'SSLv3') {
      c.warn(d.line, `"${d.name} ${p}": sessionlb does not offer ${p} (TLSv1 and later only); left out`);
    } else {
      c.error(d.line, `"${d.name}": unknown protocol "${p}" (expected TLSv1, TLSv1.1, TLSv1.2, TLSv1.3)`);
    }
  }
  if (out.length === 0) {
    c.warn(d.line, `"${d.name}": no TLS version sessionlb offers is left; not converted (sessionlb's default TLSv1.2 TLSv1.3 applies)`);
    return null;
  }
  return out;
}

/**
 * A file path of ssl_certificate & co. nginx reads relative paths from its configuration
 * directory, sessionlb from the JSON file's: they are made absolute (from the directory of the
 * converted file), with a note.
 */
function filePath(c: Conversion, d: NginxDirective): string | null {
  const a = c.oneArg(d);
  if (a === null) return null;
  if (a.includes('$')) {
    c.warn(d.line, `"${d.name} ${a}": variables are not supported by sessionlb (one file per server, loaded at start and reload); not converted`);
    return null;
  }
  if (a.startsWith('data:') || a.startsWith('engine:') || a.startsWith('store:')) {
    c.warn(d.line, `"${d.name} ${a}": sessionlb reads PEM files only; not converted`);
    return null;
  }
  if (isAbsolute(a)) return a;
  const abs = resolve(c.configDir(), a);
  c.notes.push({ line: d.line, message: `"${d.name} ${a}": nginx reads relative paths from its configuration directory, sessionlb from the JSON file's; written as ${abs}` });
  return abs;
}

/**
 * Records an ssl_* or http2 directive of http or a server into `scope` (that level's own
 * settings), or says what sessionlb does instead of it.
 */
export function sslDirective(c: Conversion, d: NginxDirective, scope: SslScope): void {
  if (!isSslDirective(d)) return;
  const set = <K extends keyof SslScope>(key: K, value: NonNullable<SslScope[K]>['value'] | null): void => {
    if (value !== null) scope[key] = { value, line: d.line } as SslScope[K];
  };
  switch (d.name) {
    case 'ssl_certificate':
    case 'ssl_certificate_key': {
      const file = filePath(c, d);
      if (file === null) return;
      const key = d.name === 'ssl_certificate' ? 'certificates' : 'keys';
      const list = scope[key]?.value ?? [];
      list.push(file);
      scope[key] = { value: list, line: scope[key]?.line ?? d.line };
      return;
    }
    case 'ssl_protocols': set('protocols', protocols(c, d)); return;
    case 'ssl_ciphers': set('ciphers', c.oneArg(d)); return;
    case 'ssl_session_tickets': set('sessionTickets', flag(c, d)); return;
    case 'ssl_session_timeout': {
      const a = c.oneArg(d);
      if (a === null) return;
      const v = nginxDuration(a);
      if (v === null) c.error(d.line, `"ssl_session_timeout": "${a}" is not a time such as "5m"`);
      else set('sessionTimeout', v);
      return;
    }
    case 'http2': set('http2', flag(c, d)); return;
    case 'ssl_session_cache':
      c.notes.push({ line: d.line, message: `"ssl_session_cache ${d.args.join(' ')}" is not converted: ${SESSION_CACHE_NOTE}` });
      return;
    case 'ssl_session_ticket_key':
      c.notes.push({ line: d.line, message: `"ssl_session_ticket_key" is not used: ${TICKET_KEY_NOTE}` });
      return;
    case 'ssl':
      c.warn(d.line, `"ssl ${d.args.join(' ')}" (removed in nginx 1.25.1) is not converted: write "listen ... ssl" on the addresses that use TLS`);
      return;
    default: {
      const what = NO_KEY.get(d.name);
      if (what === undefined) {
        c.warn(d.line, `"${d.name}" is not supported by sessionlb; ignored`);
      } else if (OFF_IS_SESSIONLB.has(d.name) && d.args[0] === 'off') {
        c.notes.push({ line: d.line, message: `"${d.name} off" is what sessionlb does: ${what}` });
      } else {
        c.warn(d.line, `"${d.name}" is not converted: ${what}; ignored`);
      }
    }
  }
}

/** The settings of a block: its parent's, overridden by its own ssl_* directives (`own`). */
export function childSslScope(parent: SslScope, own: SslScope): SslScope {
  return { ...parent, ...own };
}

/**
 * A server's `ssl` block from its scope, for a server with a `listen ... ssl`; null (with an
 * error, as nginx refuses such a server) without certificates.
 */
export function sslBlock(c: Conversion, scope: SslScope, own: SslScope, serverLine: number, label: string): RawSsl | null {
  // nginx inherits the two lists separately: a server's own certificates can end up with http's keys.
  const mixed = own.certificates ?? own.keys;
  if (mixed !== undefined && (own.certificates === undefined || own.keys === undefined) && (scope.certificates ?? scope.keys) !== undefined) {
    const [here, there] = own.certificates !== undefined ? ['ssl_certificate', 'ssl_certificate_key'] : ['ssl_certificate_key', 'ssl_certificate'];
    c.warn(mixed.line, `"${here}" in ${label} is paired with the "${there}" it inherits from http, as nginx does: check that they belong together`);
  }
  const certs = scope.certificates?.value ?? [];
  const keys = scope.keys?.value ?? [];
  if (certs.length === 0) {
    c.error(serverLine, `${label} listens with "ssl" but has no "ssl_certificate" (nor does http): nginx refuses this too`);
    return null;
  }
  if (keys.length !== certs.length) {
    c.error(serverLine, `${label}: ${certs.length} "ssl_certificate" but ${keys.length} "ssl_certificate_key": each certificate needs its key`);
    return null;
  }
  const one = (list: string[]): string | string[] => (list.length === 1 ? list[0]! : list);
  const out: Mutable<RawSsl> = { certificate: one(certs), certificateKey: one(keys) };
  if (scope.protocols !== undefined) out.protocols = scope.protocols.value;
  if (scope.ciphers !== undefined) out.ciphers = scope.ciphers.value;
  if (scope.sessionTickets !== undefined) out.sessionTickets = scope.sessionTickets.value;
  if (scope.sessionTimeout !== undefined) out.sessionTimeout = scope.sessionTimeout.value;
  return out;
}

/** proxy_ssl_* sessionlb has no key for: what it does instead. */
const PROXY_SSL_NO_KEY = new Map<string, string>([
  ['proxy_ssl_certificate', 'client certificates to upstreams are not supported by sessionlb: the upstream gets none'],
  ['proxy_ssl_certificate_key', 'client certificates to upstreams are not supported by sessionlb: the upstream gets none'],
  ['proxy_ssl_password_file', 'client certificates to upstreams are not supported by sessionlb'],
  ['proxy_ssl_session_reuse', 'sessionlb has no setting for TLS session reuse to upstreams'],
  ['proxy_ssl_ciphers', 'sessionlb has no setting for the ciphers offered to upstreams (OpenSSL\'s defaults are offered)'],
  ['proxy_ssl_verify_depth', 'sessionlb has no setting for the verification depth'],
  ['proxy_ssl_crl', 'sessionlb does not check upstream certificates against a CRL'],
  ['proxy_ssl_conf_command', 'sessionlb takes no OpenSSL commands'],
]);

/** Sets a proxy_ssl_* directive as a proxySsl* key of `out` (the top level, a server or a location), or warns. */
export function proxySslDirective(c: Conversion, d: NginxDirective, out: Mutable<RawUpstreamTls>): void {
  switch (d.name) {
    case 'proxy_ssl_verify': {
      const v = flag(c, d);
      if (v !== null) out.proxySslVerify = v;
      return;
    }
    case 'proxy_ssl_server_name': {
      const v = flag(c, d);
      if (v !== null) out.proxySslServerName = v;
      return;
    }
    case 'proxy_ssl_trusted_certificate': {
      const f = filePath(c, d);
      if (f !== null) out.proxySslTrustedCertificate = f;
      return;
    }
    case 'proxy_ssl_name': {
      const a = c.oneArg(d);
      if (a === null) return;
      if (a.includes('$')) {
        c.warn(d.line, `"proxy_ssl_name ${a}": variables are not supported by sessionlb; not converted (the host of proxy_pass is verified and sent, as nginx's default $proxy_host)`);
      } else if (!/^[^\s/]+$/.test(a)) {
        c.error(d.line, `"proxy_ssl_name": "${a}" is not a host name`);
      } else {
        out.proxySslName = a;
      }
      return;
    }
    case 'proxy_ssl_protocols': {
      const v = protocols(c, d);
      if (v !== null) out.proxySslProtocols = v;
      return;
    }
    default: {
      const what = PROXY_SSL_NO_KEY.get(d.name);
      c.warn(d.line, what === undefined ? `"${d.name}" is not supported by sessionlb; ignored` : `"${d.name}" is not converted: ${what}; ignored`);
    }
  }
}
