/**
 * The TLS side of one `ssl` listen address: every accepted connection's ClientHello is read
 * first (client-hello.ts, bounded in size and time), its SNI name picks the virtual server by
 * nginx's name rules (TlsSite.serverFor: exact, wildcards, regex; no SNI or an unknown name: the
 * default server), and the connection is handed, with the hello bytes put back, to that server's
 * own tls.Server (never listening). So each server hands out its whole certificate set (ECDSA and
 * RSA side by side, OpenSSL picks by what the client supports), its protocols, ciphers, session
 * tickets and timeout, and offers ALPN `h2` only when it has `http2`: what nginx 1.25 does,
 * where node's SNICallback would apply only the last certificate of a server's context.
 *
 * A tls.Server per server is made when a connection first reaches it and kept until the set in
 * use changes (a reload swapped certificates: connections already open keep their context).
 *
 * A first byte that cannot start a TLS record is a plain HTTP request to the HTTPS port: it gets
 * nginx's "400 The plain HTTP request was sent to HTTPS port" and the connection closes.
 */
import type { Socket } from 'node:net';
import tls from 'node:tls';
import type { TlsServerEntry, TlsSite } from './contexts.js';
import { readClientHello, type HelloFailure, type HelloResult } from './client-hello.js';
import type { TicketKeys } from './ticket-keys.js';

/** Why a TLS handshake failed (the `reason` label of sessionlb_tls_handshake_errors_total): a bounded set. */
export const TLS_ERROR_REASONS = ['protocol', 'cipher', 'not_tls', 'certificate', 'reset', 'timeout', 'other'] as const;
export type TlsErrorReason = typeof TLS_ERROR_REASONS[number];

/** The bounded reason of a tls.Server 'tlsClientError'. */
export function tlsErrorReason(err: NodeJS.ErrnoException): TlsErrorReason {
  const code = err.code ?? '';
  if (code === 'ECONNRESET' || code === 'EPIPE') return 'reset';
  if (code === 'ERR_TLS_HANDSHAKE_TIMEOUT') return 'timeout';
  if (code === 'ERR_SSL_HTTP_REQUEST' || code === 'ERR_SSL_WRONG_VERSION_NUMBER' || code === 'ERR_SSL_PACKET_LENGTH_TOO_LONG') return 'not_tls';
  if (/PROTOCOL|VERSION/.test(code)) return 'protocol';
  if (/CIPHER|SIGALG|GROUP|CURVE/.test(code)) return 'cipher';
  if (/CERT/.test(code)) return 'certificate';
  return 'other';
}

const HELLO_FAILURE_REASON: Record<HelloFailure, TlsErrorReason> = {
  not_tls: 'not_tls', malformed: 'protocol', too_large: 'protocol', timeout: 'timeout', closed: 'reset',
};

/**
 * A ClientHello larger than this is refused (nginx reads it into one 16 KiB buffer too). Real
 * hellos are 0.2-2 KiB; post-quantum key shares push them past 1.5 KiB.
 */
export const MAX_CLIENT_HELLO_BYTES = 16 * 1024;

const ALPN_H2 = ['h2', 'http/1.1'];
const ALPN_HTTP1 = ['http/1.1'];

/** nginx's answer to a plain HTTP request on an ssl address. */
const PLAIN_HTTP_BODY = '<html>\r\n<head><title>400 The plain HTTP request was sent to HTTPS port</title></head>\r\n<body>\r\n'
  + '<center><h1>400 Bad Request</h1></center>\r\n<center>The plain HTTP request was sent to HTTPS port</center>\r\n<hr><center>sessionlb</center>\r\n</body>\r\n</html>\r\n';
const PLAIN_HTTP_RESPONSE = `HTTP/1.1 400 Bad Request\r\nContent-Type: text/html\r\nContent-Length: ${Buffer.byteLength(PLAIN_HTTP_BODY)}\r\nConnection: close\r\n\r\n${PLAIN_HTTP_BODY}`;
/** How long a plain HTTP client's request is read and dropped after the 400 (so that it reads the answer, not a reset). */
const PLAIN_HTTP_LINGER_MS = 2000;

/** Where an accepted connection goes once its handshake is done (or failed). */
export interface TlsAcceptorOwner {
  /** The handshake with `server` completed; the socket's `alpnProtocol` says what it speaks. */
  secure(socket: tls.TLSSocket, server: TlsServerEntry): void;
  /** A handshake failed (the socket is closed). */
  failed(reason: TlsErrorReason): void;
}

/** The TLS set in use for this address (follows reloads). */
export interface TlsSiteSource {
  site(address: string): TlsSite | undefined;
  readonly ticketKeys: TicketKeys;
}

export class TlsAcceptor {
  /** The site the servers below were made for; replaced as a whole when the set in use changes. */
  private site: TlsSite | undefined;
  private servers = new Map<TlsServerEntry, tls.Server>();
  private readonly unsubscribe: () => void;
  /** Bound on reading the ClientHello and on the handshake (nginx client_header_timeout / ssl_handshake_timeout). */
  private timeoutMs = 60_000;

  constructor(private readonly sites: TlsSiteSource, readonly address: string, private readonly owner: TlsAcceptorOwner) {
    this.unsubscribe = sites.ticketKeys.onChange((key) => {
      for (const [entry, server] of this.servers) if (entry.options.ticketKeys !== undefined) server.setTicketKeys(key);
    });
  }

  /** The handshake bound (at start and on reload). */
  setTimeout(ms: number): void {
    this.timeoutMs = ms;
  }

  /** A connection accepted on the address: read its hello, then hand it to its server's TLS. */
  accept(socket: Socket): void {
    readClientHello(socket, { maxBytes: MAX_CLIENT_HELLO_BYTES, timeoutMs: this.timeoutMs }, (result, bytes) => this.onHello(socket, result, bytes));
  }

  private onHello(socket: Socket, result: HelloResult, bytes: Buffer): void {
    if (!result.ok) {
      this.owner.failed(HELLO_FAILURE_REASON[result.reason]);
      if (result.reason === 'not_tls') answerPlainHttp(socket);
      else socket.destroy();
      return;
    }
    const site = this.sites.site(this.address);
    if (site === undefined) {
      socket.destroy(); // the address is going away (reload removed it)
      return;
    }
    const entry = site.serverFor(result.hello.serverName);
    const server = this.serverFor(site, entry);
    if (bytes.length > 0) socket.unshift(bytes);
    // node's TLSSocket replays what the socket has buffered (the hello) before reading more.
    server.emit('connection', socket);
  }

  private serverFor(site: TlsSite, entry: TlsServerEntry): tls.Server {
    if (site !== this.site) {
      // A reload swapped the set: new handshakes get the new servers' contexts.
      this.site = site;
      this.servers = new Map();
    }
    let server = this.servers.get(entry);
    if (server === undefined) {
      const options = entry.options.ticketKeys === undefined ? entry.options : { ...entry.options, ticketKeys: this.sites.ticketKeys.current };
      server = tls.createServer({ ...options, ALPNProtocols: entry.http2 ? ALPN_H2 : ALPN_HTTP1, handshakeTimeout: this.timeoutMs });
      server.on('secureConnection', (s: tls.TLSSocket) => this.owner.secure(s, entry));
      server.on('tlsClientError', this.onTlsClientError);
      this.servers.set(entry, server);
    }
    return server;
  }

  private readonly onTlsClientError = (err: NodeJS.ErrnoException, socket: tls.TLSSocket): void => {
    this.owner.failed(tlsErrorReason(err));
    socket.destroy();
  };

  /** Stops following ticket key rotations (the listener closed). */
  close(): void {
    this.unsubscribe();
    this.servers.clear();
  }
}

function answerPlainHttp(socket: Socket): void {
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  socket.on('error', ignore);
  socket.resume(); // the rest of the request is read and dropped
  socket.setTimeout(PLAIN_HTTP_LINGER_MS, () => socket.destroy());
  socket.end(PLAIN_HTTP_RESPONSE);
  socket.once('end', () => socket.destroy());
}

function ignore(): void { /* a reset while answering a plain HTTP client: nothing to do */ }
