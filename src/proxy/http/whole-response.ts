/**
 * Ends a client response whose whole body is at hand (the common small response) with ONE
 * write: head and body as one latin1 string, i.e. one `write` system call.
 *
 * `res.end(body)` after `writeHead` makes node cork the socket and queue three pieces (head,
 * body, an empty end marker), then flush them through the writev path, which costs ~1-2 us of
 * JavaScript and allocation per request. Node has no public way to send head and body as one
 * piece, so this uses three ServerResponse fields node has had since 0.x: `_header` (the
 * serialised head, set by `writeHead`), `_headerSent` and `chunkedEncoding`, plus the socket's
 * `_httpMessage` (the response that currently owns the connection). Every one is checked
 * before use; when anything is not exactly as expected (an older/newer node, a HEAD or 304
 * response, chunked framing, a response queued behind a pipelined one, a socket no longer
 * writable) it falls back to `res.end(body)`. After the write, `res.end()` runs node's normal
 * ending (finish events, keep-alive, the next pipelined request) and writes nothing more.
 * test/proxy-whole-response.test.ts checks that the fast path is taken on the node in use and
 * that responses stay byte-exact either way.
 */
import type { ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

interface ResponseInternals {
  _header: unknown;
  _headerSent: unknown;
  _hasBody: unknown;
  chunkedEncoding: unknown;
  outputData: unknown;
  socket: (Socket & { _httpMessage?: unknown }) | null;
}

/** Bodies up to this size go with the head as one string (larger ones are rare here: the body came in one read). */
const MAX_WHOLE_BODY = 64 * 1024;

/** Responses ended by the single-write path (for tests). */
export const wholeResponseStats = { single: 0, fallback: 0 };

/** `res.end(body)` after `res.writeHead(...)`, in one write when node's state allows it. */
export function endWithBody(res: ServerResponse, body: Buffer): void {
  const r = res as unknown as ResponseInternals;
  const socket = r.socket;
  if (
    typeof r._header === 'string' && r._headerSent === false && r._hasBody === true && r.chunkedEncoding === false &&
    Array.isArray(r.outputData) && r.outputData.length === 0 && body.length <= MAX_WHOLE_BODY &&
    socket !== null && socket._httpMessage === res && socket.writable && !res.writableEnded
  ) {
    socket.write(body.length === 0 ? r._header : r._header + body.toString('latin1'), 'latin1');
    r._headerSent = true;
    wholeResponseStats.single++;
    res.end();
    return;
  }
  wholeResponseStats.fallback++;
  res.end(body);
}
