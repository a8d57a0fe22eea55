/**
 * A bounded TLS ClientHello reader: the server name (SNI) and ALPN protocols of a connection read
 * before node's TLS stack sees it (virtual server by SNI; stream routing by SNI/ALPN as nginx's
 * ssl_preread). Imports only node built-ins.
 *
 * `parseClientHello(buf, maxBytes)` looks at the bytes a client sent first: TLS records of content
 * type 22 (record versions 0x0301..0x0304, length 1..2^14+256), whose payloads are joined into the
 * one handshake message that must come first, a ClientHello (type 1), which may span several records
 * (a record of another type before it is complete: `malformed`; so is a record that goes on after
 * it). The ClientHello is then read per RFC 8446/5246: legacy_version (major 3), random, session id
 * (<= 32), cipher suites (even length, >= 2), compression methods (>= 1), and the extensions if any
 * (their block exactly fills the message; each length checked against what is left; a type twice is
 * `malformed`). server_name (0): a non-empty list of (type, length, name); the first host_name (type
 * 0) is taken, one trailing dot stripped, checked to be a plausible DNS name (letters, digits, '-',
 * '_', '.'; 1..255 bytes; no empty label, labels <= 63) and lowercased; anything else there is
 * `malformed`. ALPN (16): a non-empty list of non-empty names (<= 255 bytes each, by their length
 * byte), read as latin1.
 *
 * It answers as soon as the bytes decide: `not_tls` on a first byte other than 22 (an HTTP request,
 * an SSLv2 hello), `malformed` on the first wrong field seen, `too_large` as soon as the lengths
 * seen say the hello cannot be complete within `maxBytes` bytes of input (records and headers
 * included), and `null` (more bytes needed) otherwise. The decision is stable: once a prefix of the
 * input gives a result, any longer input gives the same one. Every loop walks bytes that are in the
 * buffer, and nothing is allocated by a claimed length: a hello in several records is joined once,
 * when all of it is in.
 *
 * `readClientHello(socket, {maxBytes, timeoutMs}, done)` reads a just-accepted socket (flowing or
 * paused) until `parseClientHello` decides, `timeoutMs` passes (`timeout`, counted from the call),
 * or the socket ends, closes or errors (`closed`). It parses only when the bytes it last asked for
 * are in, joining the chunks at most once per 'data' event. Then it removes every listener and
 * timer it added, pauses the socket and calls `done(result, bytes)` once, `bytes` being all it read
 * (the hello and anything after it). To hand the connection to node's TLS server:
 *
 *   socket.unshift(bytes); tlsServer.emit('connection', socket);
 *
 * node's TLSSocket replays the socket's buffered data (`initRead` in lib/_tls_wrap.js). Between
 * `done` and that, the socket has no 'error' listener of ours: the caller adds its own (or
 * destroys the socket on a failure). Do not `setEncoding` the socket first.
 */
import type net from 'node:net';

export interface ClientHello {
  serverName: string | undefined;
  alpn: string[] | undefined;
}
export type HelloFailure = 'not_tls' | 'malformed' | 'too_large' | 'timeout' | 'closed';
export type HelloResult = { ok: true; hello: ClientHello } | { ok: false; reason: HelloFailure };

const CONTENT_HANDSHAKE = 22;
const HANDSHAKE_CLIENT_HELLO = 1;
const RECORD_HEADER = 5;
const HANDSHAKE_HEADER = 4;
/** TLSCiphertext may be 2^14 + 256 (RFC 8446 5.2); a plaintext hello record is within that too. */
const MAX_RECORD = 16384 + 256;
/** version 2, random 32, session id length 1, cipher suites 2 + 2, compression 1 + 1. */
const MIN_HELLO_BODY = 41;
const EXT_SERVER_NAME = 0;
const EXT_ALPN = 16;
const MAX_TIMER_MS = 2 ** 31 - 1;

function fail(reason: HelloFailure): HelloResult {
  return { ok: false, reason };
}

/** null: need more bytes. Never throws on any input. */
export function parseClientHello(buf: Buffer, maxBytes: number): HelloResult | null {
  const r = scan(buf, maxBytes);
  return typeof r === 'number' ? null : r;
}

/**
 * The result, or the least total input length (a number) at which scanning can go further.
 * Walks the records from the start: cheap (a hello is usually one record), and stateless.
 */
function scan(buf: Buffer, maxBytes: number): HelloResult | number {
  if (buf.length === 0) return 1;
  if (buf[0] !== CONTENT_HANDSHAKE) return fail('not_tls');
  const fragments: Buffer[] = [];
  let have = 0; // handshake bytes in the records read so far (the last one maybe partly)
  let total = -1; // the whole handshake message, header included, once its header is in
  let pos = 0; // where the current record starts
  for (;;) {
    // At a record boundary, with more handshake bytes needed.
    const stillNeeded = (total < 0 ? HANDSHAKE_HEADER + MIN_HELLO_BODY : total) - have;
    if (pos + RECORD_HEADER + stillNeeded > maxBytes) return fail('too_large');
    const avail = buf.length - pos;
    if (avail >= 1 && buf[pos] !== CONTENT_HANDSHAKE) return fail('malformed');
    if (avail >= 2 && buf[pos + 1] !== 3) return fail('malformed');
    if (avail >= 3 && (buf[pos + 2]! < 1 || buf[pos + 2]! > 4)) return fail('malformed');
    if (avail < RECORD_HEADER) return pos + RECORD_HEADER;
    const len = (buf[pos + 3]! << 8) | buf[pos + 4]!;
    if (len === 0 || len > MAX_RECORD) return fail('malformed');
    const start = pos + RECORD_HEADER;
    const end = start + len;
    if (end > maxBytes) return fail('too_large');
    const got = Math.min(len, buf.length - start);
    const haveBefore = have;
    if (got > 0) {
      fragments.push(buf.subarray(start, start + got));
      have += got;
    }
    if (have >= 1 && byteAt(fragments, 0) !== HANDSHAKE_CLIENT_HELLO) return fail('malformed');
    if (total < 0 && have >= HANDSHAKE_HEADER) {
      const bodyLength = (byteAt(fragments, 1) << 16) | (byteAt(fragments, 2) << 8) | byteAt(fragments, 3);
      if (bodyLength < MIN_HELLO_BODY) return fail('malformed');
      total = HANDSHAKE_HEADER + bodyLength;
    }
    if (total >= 0) {
      const afterRecord = haveBefore + len;
      if (afterRecord > total) return fail('malformed'); // this record goes on after the hello
      if (afterRecord < total && end + RECORD_HEADER + (total - afterRecord) > maxBytes) return fail('too_large');
    }
    if (got < len) return end;
    pos = end;
    if (total >= 0 && have === total) {
      return parseHello(fragments.length === 1 ? fragments[0]! : Buffer.concat(fragments, total));
    }
  }
}

/** Byte `i` of the handshake bytes gathered in `fragments` (i < their total length). */
function byteAt(fragments: Buffer[], i: number): number {
  for (const f of fragments) {
    if (i < f.length) return f[i]!;
    i -= f.length;
  }
  return 0;
}

const u16 = (b: Buffer, p: number): number => (b[p]! << 8) | b[p + 1]!;

/** The whole ClientHello message, its 4-byte handshake header included. */
function parseHello(b: Buffer): HelloResult {
  const end = b.length;
  let p = HANDSHAKE_HEADER;
  if (end - p < 2 + 32 + 1) return fail('malformed');
  if (b[p] !== 3) return fail('malformed'); // legacy_version major
  p += 2 + 32;
  const sessionId = b[p++]!;
  if (sessionId > 32 || end - p < sessionId) return fail('malformed');
  p += sessionId;
  if (end - p < 2) return fail('malformed');
  const suites = u16(b, p);
  p += 2;
  if (suites < 2 || suites % 2 !== 0 || end - p < suites) return fail('malformed');
  p += suites;
  if (end - p < 1) return fail('malformed');
  const compressions = b[p++]!;
  if (compressions < 1 || end - p < compressions) return fail('malformed');
  p += compressions;
  const hello: ClientHello = { serverName: undefined, alpn: undefined };
  if (p === end) return { ok: true, hello }; // no extensions (allowed before TLS 1.3)
  if (end - p < 2) return fail('malformed');
  const extensionsLength = u16(b, p);
  p += 2;
  if (extensionsLength !== end - p) return fail('malformed');
  const seen = new Set<number>();
  while (p < end) {
    if (end - p < 4) return fail('malformed');
    const type = u16(b, p);
    const len = u16(b, p + 2);
    p += 4;
    if (len > end - p) return fail('malformed');
    if (seen.has(type)) return fail('malformed');
    seen.add(type);
    if (type === EXT_SERVER_NAME) {
      const name = serverName(b, p, p + len);
      if (name === null) return fail('malformed');
      hello.serverName = name;
    } else if (type === EXT_ALPN) {
      const alpn = protocols(b, p, p + len);
      if (alpn === null) return fail('malformed');
      hello.alpn = alpn;
    }
    p += len;
  }
  return { ok: true, hello };
}

/** server_name's ServerNameList: the first host_name, undefined if none, null if malformed. */
function serverName(b: Buffer, start: number, end: number): string | undefined | null {
  if (end - start < 2) return null;
  const listLength = u16(b, start);
  let p = start + 2;
  if (listLength === 0 || listLength !== end - p) return null;
  let name: string | undefined;
  while (p < end) {
    if (end - p < 3) return null;
    const nameType = b[p]!;
    const len = u16(b, p + 1);
    p += 3;
    if (len > end - p) return null;
    if (nameType === 0) {
      if (len === 0) return null;
      if (name === undefined) {
        const host = hostName(b, p, p + len);
        if (host === null) return null;
        name = host;
      }
    }
    p += len;
  }
  return name;
}

/** A plausible DNS name, one trailing dot stripped, lowercased; null if not. */
function hostName(b: Buffer, start: number, end: number): string | null {
  if (end > start && b[end - 1] === 0x2e) end--;
  if (end - start < 1 || end - start > 255) return null;
  let label = 0;
  for (let i = start; i < end; i++) {
    const c = b[i]!;
    if (c === 0x2e) {
      if (label === 0) return null;
      label = 0;
      continue;
    }
    const ok = (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) || (c >= 0x30 && c <= 0x39) || c === 0x2d || c === 0x5f;
    if (!ok || ++label > 63) return null;
  }
  if (label === 0) return null;
  return b.toString('latin1', start, end).toLowerCase();
}

/** ALPN's ProtocolNameList; null if malformed. */
function protocols(b: Buffer, start: number, end: number): string[] | null {
  if (end - start < 2) return null;
  const listLength = u16(b, start);
  let p = start + 2;
  if (listLength < 2 || listLength !== end - p) return null;
  const out: string[] = [];
  while (p < end) {
    const len = b[p++]!;
    if (len === 0 || len > end - p) return null;
    out.push(b.toString('latin1', p, p + len));
    p += len;
  }
  return out;
}

/**
 * Reads `socket` until its ClientHello is in or reading it failed, then calls `done` once with
 * everything read (see the file's comment).
 */
export function readClientHello(
  socket: net.Socket,
  options: { maxBytes: number; timeoutMs: number },
  done: (result: HelloResult, bytes: Buffer) => void,
): void {
  const { maxBytes } = options;
  let chunks: Buffer[] = [];
  let length = 0;
  let need = 1; // scan again once this many bytes are in
  let finished = false;

  const finish = (result: HelloResult): void => {
    if (finished) return;
    finished = true;
    socket.removeListener('data', onData);
    socket.removeListener('end', onClosed);
    socket.removeListener('close', onClosed);
    socket.removeListener('error', onClosed);
    clearTimeout(timer);
    socket.pause();
    const bytes = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, length);
    chunks = [];
    done(result, bytes);
  };
  const onData = (chunk: Buffer | string): void => {
    if (finished) return;
    const b = typeof chunk === 'string' ? Buffer.from(chunk, 'latin1') : chunk;
    chunks.push(b);
    length += b.length;
    if (length < need) return;
    const all = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, length);
    chunks = [all];
    const r = scan(all, maxBytes);
    if (typeof r === 'number') need = r;
    else finish(r);
  };
  const onClosed = (): void => finish(fail('closed'));
  const onTimeout = (): void => finish(fail('timeout'));

  const ms = Number.isFinite(options.timeoutMs) ? Math.min(Math.max(options.timeoutMs, 0), MAX_TIMER_MS) : MAX_TIMER_MS;
  const timer = setTimeout(onTimeout, ms);
  socket.on('data', onData);
  socket.on('end', onClosed);
  socket.on('close', onClosed);
  socket.on('error', onClosed);
  if (socket.destroyed || socket.readableEnded) {
    process.nextTick(onClosed);
    return;
  }
  socket.resume();
}
