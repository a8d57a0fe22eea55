/**
 * A `proxy_protocol` listener's first step on each accepted connection, before TLS or HTTP or a
 * stream session sees it: a peer outside `proxyProtocolFrom` is closed at once; otherwise the
 * PROXY header (v1 or v2, proxy-protocol.ts) is read, bounded in size by the codec and in time by
 * `timeoutMs`. A header is required (nginx): a connection that sends anything else, a malformed
 * header, or nothing within the time is closed. The header's source becomes the connection's
 * client address (setProxiedClient, read through socketClientAddress); a LOCAL command, UNKNOWN
 * or an address family other than IPv4/IPv6 keeps the connection's own. The bytes after the
 * header are put back (`unshift`) and the socket is left paused for the next reader.
 */
import type { BlockList, Socket } from 'node:net';
import { addressIn, clientAddressString, setProxiedClient } from './client-address.js';
import { parseProxyHeader, type ProxyParseFailure } from './proxy-protocol.js';

/** Why a connection on a proxy_protocol listener was closed (the `reason` label of sessionlb_proxy_protocol_errors_total): a bounded set. */
export const PROXY_PROTOCOL_ERROR_REASONS = ['not_allowed', 'missing', 'malformed', 'timeout', 'closed'] as const;
export type ProxyProtocolErrorReason = typeof PROXY_PROTOCOL_ERROR_REASONS[number];

/** What a proxy_protocol listener needs to read headers. */
export interface AcceptProxyOptions {
  /** Peers allowed to send a header (`proxyProtocolFrom`). */
  readonly from: BlockList;
  /** Longest wait for the whole header. */
  readonly timeoutMs: number;
}

function reasonOf(failure: ProxyParseFailure): ProxyProtocolErrorReason {
  return failure === 'not_proxy' ? 'missing' : 'malformed';
}

function ignore(): void { /* the socket is being destroyed */ }

/**
 * Reads the PROXY header of `socket`; `done(null)` once it is read (the socket paused, what
 * followed the header unshifted), or `done(reason)` after closing the socket.
 */
export function acceptProxyHeader(socket: Socket, options: AcceptProxyOptions, done: (failure: ProxyProtocolErrorReason | null) => void): void {
  if (!addressIn(options.from, socket.remoteAddress)) {
    socket.on('error', ignore);
    socket.destroy();
    done('not_allowed');
    return;
  }
  let buffered: Buffer | null = null;
  let finished = false;
  const finish = (failure: ProxyProtocolErrorReason | null, rest: Buffer | null): void => {
    if (finished) return;
    finished = true;
    clearTimeout(timer);
    socket.removeListener('data', onData);
    socket.removeListener('end', onClosed);
    socket.removeListener('close', onClosed);
    socket.removeListener('error', onClosed);
    socket.pause();
    if (failure !== null) {
      socket.on('error', ignore);
      socket.destroy();
    } else if (rest !== null && rest.length > 0) {
      socket.unshift(rest);
    }
    done(failure);
  };
  const onData = (chunk: Buffer): void => {
    const all: Buffer = buffered === null ? chunk : Buffer.concat([buffered, chunk]);
    const r = parseProxyHeader(all);
    if (r === null) {
      buffered = all;
      return;
    }
    if (!r.ok) {
      finish(reasonOf(r.reason), null);
      return;
    }
    const h = r.header;
    if (h.command === 'proxy' && h.source !== null && h.destination !== null && (h.family === 'inet' || h.family === 'inet6')) {
      setProxiedClient(socket, {
        address: clientAddressString(h.source.address), port: h.source.port,
        localAddress: clientAddressString(h.destination.address), localPort: h.destination.port,
      });
    }
    finish(null, all.subarray(r.consumed));
  };
  const onClosed = (): void => finish('closed', null);
  const timer = setTimeout(() => finish('timeout', null), options.timeoutMs);
  socket.on('data', onData);
  socket.on('end', onClosed);
  socket.on('close', onClosed);
  socket.on('error', onClosed);
  if (socket.destroyed || socket.readableEnded) process.nextTick(onClosed);
}
